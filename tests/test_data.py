"""Datasets: deterministic generators, shapes and dtypes, splits, minibatches, the digits."""
import numpy as np
import pytest

from tinygrad_bn import data

GENERATORS = {
    "moons": (data.make_moons, 2),
    "circles": (data.make_circles, 2),
    "spirals": (data.make_spirals, 3),
    "blobs": (data.make_blobs, 3),
}


@pytest.mark.parametrize("name", GENERATORS)
def test_generators_are_deterministic_per_seed(name):
    make, _ = GENERATORS[name]
    X1, y1 = make(n=200, seed=3)
    X2, y2 = make(n=200, seed=3)
    assert np.array_equal(X1, X2) and np.array_equal(y1, y2)
    X3, _ = make(n=200, seed=4)
    assert not np.allclose(X1, X3)
    # a Generator works as the seed too
    X4, y4 = make(n=200, seed=np.random.default_rng(3))
    assert X4.shape == X1.shape and y4.shape == y1.shape


@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.parametrize("n", [7, 100, 301])
def test_generators_shapes_dtypes_and_class_balance(name, n):
    make, k = GENERATORS[name]
    X, y = make(n=n, seed=0)
    assert X.shape == (n, 2) and X.dtype == np.float32
    assert y.shape == (n,) and y.dtype == np.int64
    assert np.all(np.isfinite(X))
    counts = np.bincount(y, minlength=k)
    assert len(counts) == k and set(np.unique(y)) == set(range(k))
    assert counts.max() - counts.min() <= 1  # as balanced as n allows
    # shuffled: the labels do not come in blocks
    if n >= 100:
        assert np.count_nonzero(np.diff(y)) > n // 4


def test_generator_options():
    X, y = data.make_spirals(n=500, classes=5, seed=0)
    assert np.array_equal(np.bincount(y), [100] * 5)
    X, y = data.make_blobs(n=60, centers=4, dim=5, seed=0)
    assert X.shape == (60, 5) and X.dtype == np.float32 and np.bincount(y).tolist() == [15] * 4
    X, y = data.make_circles(n=400, noise=0.0, factor=0.3, seed=0)
    r = np.linalg.norm(X, axis=1)
    np.testing.assert_allclose(r[y == 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(r[y == 1], 0.3, atol=1e-6)
    X0, _ = data.make_moons(n=100, noise=0.0, seed=0)
    X1, _ = data.make_moons(n=100, noise=0.0, seed=1)
    # without noise the seed only shuffles
    assert np.array_equal(np.sort(X0, axis=0), np.sort(X1, axis=0))


@pytest.mark.parametrize("call", [
    lambda: data.make_moons(n=1),
    lambda: data.make_moons(n=2.5),
    lambda: data.make_circles(n=100, factor=1.0),
    lambda: data.make_circles(n=100, factor=0.0),
    lambda: data.make_spirals(n=100, classes=1),
    lambda: data.make_spirals(n=2, classes=3),
    lambda: data.make_blobs(n=2, centers=3),
    lambda: data.make_blobs(n=10, centers=0),
    lambda: data.make_blobs(n=10, dim=0),
    lambda: data.train_test_split(np.zeros((4, 2)), np.zeros(5)),
    lambda: data.train_test_split(np.zeros((4, 2)), np.zeros(4), test_size=0),
    lambda: data.train_test_split(np.zeros((4, 2)), np.zeros(4), test_size=1.0),
    lambda: data.train_test_split(np.zeros((2, 2)), np.zeros(2), test_size=0.9),
    lambda: list(data.batches(np.zeros((4, 2)), np.zeros(4), batch_size=0)),
    lambda: list(data.batches(np.zeros((5, 2)), np.zeros(4))),  # not a silent drop
    lambda: data.load("mnist"),
    lambda: data.load("moons", n=0),  # not a silent fallback to the default size
])
def test_bad_arguments_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(ValueError, match="mnist.*moons.*digits"):
        data.load("mnist")


@pytest.mark.parametrize("n,test_size", [(100, 0.25), (101, 0.3), (10, 0.01), (50, 0.5)])
def test_train_test_split_sizes_and_disjointness(n, test_size):
    X = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    y = np.arange(n)  # each label names its row
    Xtr, Xte, ytr, yte = data.train_test_split(X, y, test_size=test_size, seed=1)
    n_test = max(1, round(n * test_size))
    assert len(yte) == len(Xte) == n_test and len(ytr) == len(Xtr) == n - n_test
    assert set(ytr).isdisjoint(yte)
    assert sorted(np.concatenate([ytr, yte])) == list(range(n))
    # rows stay paired with their labels
    assert np.array_equal(Xtr[:, 0], 2 * ytr) and np.array_equal(Xte[:, 0], 2 * yte)
    again = data.train_test_split(X, y, test_size=test_size, seed=1)
    assert np.array_equal(again[3], yte)
    other = data.train_test_split(X, y, test_size=test_size, seed=2)
    assert n_test < 2 or not np.array_equal(other[3], yte)


@pytest.mark.parametrize("n,bs", [(100, 32), (96, 32), (5, 8), (33, 1)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_cover_every_row_once_per_epoch(n, bs, shuffle):
    X = np.arange(n * 3).reshape(n, 3)
    y = np.arange(n)
    got = list(data.batches(X, y, batch_size=bs, shuffle=shuffle, seed=0))
    seen = np.concatenate([yb for _, yb in got])
    assert sorted(seen) == list(range(n))
    assert all(len(yb) == bs for _, yb in got[:-1]) and 0 < len(got[-1][1]) <= bs
    assert len(got) == -(-n // bs)
    for Xb, yb in got:
        assert np.array_equal(Xb[:, 0], 3 * yb)
    if shuffle and n >= 32:
        assert not np.array_equal(seen, np.arange(n))
    if not shuffle:
        assert np.array_equal(seen, np.arange(n))


@pytest.mark.parametrize("n,bs", [(100, 32), (96, 32), (5, 8)])
def test_batches_drop_last(n, bs):
    y = np.arange(n)
    got = list(data.batches(np.zeros((n, 2)), y, batch_size=bs, seed=0, drop_last=True))
    assert len(got) == n // bs
    assert all(len(yb) == bs for _, yb in got)
    seen = np.concatenate([yb for _, yb in got]) if got else np.zeros(0, int)
    assert len(set(seen)) == len(seen) == (n // bs) * bs


def test_batches_reshuffle_each_epoch_with_a_shared_generator():
    rng = np.random.default_rng(0)
    y = np.arange(64)
    e1 = np.concatenate([b for _, b in data.batches(y[:, None], y, 16, seed=rng)])
    e2 = np.concatenate([b for _, b in data.batches(y[:, None], y, 16, seed=rng)])
    assert sorted(e1) == sorted(e2) == list(range(64))
    assert not np.array_equal(e1, e2)


def test_load_digits():
    pytest.importorskip("sklearn")
    X, y = data.load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    assert set(np.unique(y)) == set(range(10))


@pytest.mark.parametrize("name", ["moons", "circles", "spirals", "blobs"])
def test_load_splits_and_standardizes(name):
    ds = data.load(name, n=400, seed=0)
    assert isinstance(ds, data.Dataset) and ds.name == name
    assert len(ds.y_train) == 300 and len(ds.y_test) == 100
    assert ds.X_train.dtype == ds.X_test.dtype == np.float32
    assert ds.n_features == 2
    assert ds.n_classes == GENERATORS[name][1]
    np.testing.assert_allclose(ds.X_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.X_train.std(0), 1, atol=1e-4)
    assert name in repr(ds)
    again = data.load(name, n=400, seed=0)
    assert np.array_equal(again.X_test, ds.X_test)


def test_load_digits_dataset():
    pytest.importorskip("sklearn")
    ds = data.load("digits", seed=0)
    assert ds.n_features == 64 and ds.n_classes == 10
    assert len(ds.y_train) + len(ds.y_test) == 1797
    assert ds.X_train.min() >= 0 and ds.X_train.max() <= 1  # not re-standardized
