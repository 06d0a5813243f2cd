"""Toy datasets made with NumPy and a seed, the 8×8 digits, MNIST-1D, splits and minibatches.

Every generator returns ``(X, y)``: X float32 of shape (n, features), y int64 of shape (n,).
Image-like sets also come with a channel axis for CNNs: ``load("digits", images=True)`` gives
X of shape (n, 1, 8, 8), ``load("mnist1d", images=True)`` (n, 1, 40).
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Iterator

import numpy as np


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _check_n(n: int, minimum: int = 2) -> int:
    if not isinstance(n, (int, np.integer)) or n < minimum:
        raise ValueError(f"n must be an integer >= {minimum}, got {n!r}")
    return int(n)


def make_moons(n: int = 512, noise: float = 0.1, seed=0):
    """Two interleaving half circles; X (n, 2), y in {0, 1}."""
    n = _check_n(n)
    rng = _rng(seed)
    n0 = n // 2
    n1 = n - n0
    t0 = np.linspace(0, np.pi, n0)
    t1 = np.linspace(0, np.pi, n1)
    X = np.concatenate([
        np.stack([np.cos(t0), np.sin(t0)], 1),
        np.stack([1 - np.cos(t1), 0.5 - np.sin(t1)], 1),
    ])
    y = np.concatenate([np.zeros(n0, np.int64), np.ones(n1, np.int64)])
    X = X + noise * rng.standard_normal(X.shape)
    return _shuffle(X, y, rng)


def make_circles(n: int = 512, noise: float = 0.05, factor: float = 0.5, seed=0):
    """A small circle inside a large one (radius ratio ``factor``); X (n, 2), y in {0, 1}."""
    n = _check_n(n)
    if not 0 < factor < 1:
        raise ValueError(f"factor must be in (0, 1), got {factor}")
    rng = _rng(seed)
    n0 = n // 2
    n1 = n - n0
    t0 = np.linspace(0, 2 * np.pi, n0, endpoint=False)
    t1 = np.linspace(0, 2 * np.pi, n1, endpoint=False)
    X = np.concatenate([np.stack([np.cos(t0), np.sin(t0)], 1),
                        factor * np.stack([np.cos(t1), np.sin(t1)], 1)])
    y = np.concatenate([np.zeros(n0, np.int64), np.ones(n1, np.int64)])
    X = X + noise * rng.standard_normal(X.shape)
    return _shuffle(X, y, rng)


def make_spirals(n: int = 600, classes: int = 3, noise: float = 0.2, turns: float = 1.0,
                 seed=0):
    """``classes`` interleaved spiral arms (CS231n style); X (n, 2), y in {0..classes-1}."""
    n = _check_n(n, classes)
    if classes < 2:
        raise ValueError(f"classes must be >= 2, got {classes}")
    rng = _rng(seed)
    per = [n // classes + (1 if k < n % classes else 0) for k in range(classes)]
    Xs, ys = [], []
    for k, m in enumerate(per):
        r = np.linspace(0.0, 1.0, m)
        t = np.linspace(k * 2 * np.pi / classes, k * 2 * np.pi / classes + turns * 2 * np.pi, m)
        t = t + noise * rng.standard_normal(m)
        Xs.append(np.stack([r * np.sin(t), r * np.cos(t)], 1))
        ys.append(np.full(m, k, np.int64))
    return _shuffle(np.concatenate(Xs), np.concatenate(ys), rng)


def make_blobs(n: int = 512, centers: int = 3, std: float = 1.0, dim: int = 2,
               box: float = 10.0, seed=0):
    """Isotropic Gaussian blobs around ``centers`` random centres in [-box, box]^dim."""
    if centers < 1 or dim < 1:
        raise ValueError(f"centers and dim must be >= 1, got centers={centers}, dim={dim}")
    n = _check_n(n, centers)
    rng = _rng(seed)
    C = rng.uniform(-box, box, size=(centers, dim))
    y = np.arange(n) % centers
    X = C[y] + std * rng.standard_normal((n, dim))
    return _shuffle(X, y.astype(np.int64), rng)


def load_digits():
    """scikit-learn's bundled 8×8 digits (1,797 images, no download): X (1797, 64) in [0, 1],
    y in {0..9}. Needs the ``digits`` extra (``pip install scikit-learn``)."""
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError:
        raise ImportError("the digits dataset needs scikit-learn: pip install "
                          "'tinygrad-bn[digits]' (or scikit-learn)") from None
    d = _load()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


def load_mnist1d(num_samples: int = 5000, seed: int = 42):
    """MNIST-1D (Greydanus & Kobak, 2020): ten 1-D "digit" templates, each padded, scaled,
    sheared, shifted and noised into a length-40 signal. Generated here by the ``mnist1d``
    package (offline, seconds); with the defaults it is the published dataset (4,000 train,
    1,000 test, the package's own split). Returns ``(X, y, X_test, y_test)``, X float32 of
    shape (n, 40). Needs the ``mnist1d`` extra (``pip install 'tinygrad-bn[mnist1d]'``)."""
    return tuple(a.copy() for a in _mnist1d(int(num_samples), int(seed)))


@functools.lru_cache(maxsize=4)
def _mnist1d(num_samples: int, seed: int):
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise ImportError("the mnist1d dataset needs the mnist1d package: pip install "
                          "'tinygrad-bn[mnist1d]' (or mnist1d)") from None
    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    np_state, py_state = np.random.get_state(), random.getstate()
    try:  # the package seeds NumPy's and Python's global generators: leave them as they were
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    out = (d["x"].astype(np.float32), d["y"].astype(np.int64),
           d["x_test"].astype(np.float32), d["y_test"].astype(np.int64))
    for a in out:
        a.flags.writeable = False  # cached: callers get copies
    return out


def _shuffle(X, y, rng):
    p = rng.permutation(len(y))
    return X[p].astype(np.float32), y[p]


def train_test_split(X, y, test_size: float = 0.25, seed=0):
    """Shuffle and split into ``(X_train, X_test, y_train, y_test)``."""
    X = np.asarray(X)
    y = np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    n_test = max(1, int(round(len(y) * test_size)))
    if n_test >= len(y):
        raise ValueError(f"test_size={test_size} leaves no training data for {len(y)} samples")
    p = _rng(seed).permutation(len(y))
    te, tr = p[:n_test], p[n_test:]
    return X[tr], X[te], y[tr], y[te]


def batches(X, y, batch_size: int = 32, shuffle: bool = True, seed=0,
            drop_last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Minibatches ``(X_batch, y_batch)`` of one pass over the data."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(y)
    if len(X) != n:
        raise ValueError(f"X has {len(X)} rows but y has {n}")
    order = _rng(seed).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        j = order[i:i + batch_size]
        yield X[j], y[j]


@dataclass
class Dataset:
    """A named classification dataset with a train/test split."""

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_features(self) -> int:
        """Inputs per sample: the columns of X, or (images) channels × height × width."""
        return int(np.prod(self.X_train.shape[1:]))

    @property
    def input_shape(self) -> tuple:
        """The shape of one sample: ``(features,)``, or ``(C, H, W)`` / ``(C, L)`` for images."""
        return tuple(self.X_train.shape[1:])

    @property
    def n_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train {self.X_train.shape}, test {self.X_test.shape}, "
                f"{self.n_classes} classes)")


DATASETS = ("moons", "circles", "spirals", "blobs", "digits", "mnist1d")


def load(name: str, n: int | None = None, seed=0, test_size: float = 0.25,
         images: bool = False, **kwargs) -> Dataset:
    """One of ``DATASETS`` by name, split into train and test; inputs standardized by the
    training statistics for the toy sets.

    ``images=True`` (digits, mnist1d) keeps the spatial layout with one channel: X of shape
    (n, 1, 8, 8) or (n, 1, 40), for convolutional networks. MNIST-1D keeps its published
    split (4,000 / 1,000; ``n`` sets the total, ``seed`` is the generator's, 42 by default
    there) and is already standardized.
    """
    makers = {"moons": make_moons, "circles": make_circles, "spirals": make_spirals,
              "blobs": make_blobs}
    if images and name not in ("digits", "mnist1d"):
        raise ValueError(f"images=True applies to digits and mnist1d, not {name!r}")
    if name == "mnist1d":
        if kwargs:
            raise ValueError(f"mnist1d takes no options {sorted(kwargs)}")
        Xtr, ytr, Xte, yte = load_mnist1d(5000 if n is None else n,
                                          42 if seed == 0 else seed)
        if images:
            Xtr, Xte = Xtr[:, None, :], Xte[:, None, :]
        return Dataset(name, Xtr, ytr, Xte, yte)
    if name == "digits":
        X, y = load_digits()
    elif name in makers:
        X, y = makers[name](**({"n": n} if n is not None else {}), seed=seed, **kwargs)
    else:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_size, seed=seed)
    if name != "digits":
        mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-8
        Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
    elif images:
        Xtr, Xte = Xtr.reshape(-1, 1, 8, 8), Xte.reshape(-1, 1, 8, 8)
    return Dataset(name, Xtr.astype(np.float32), ytr, Xte.astype(np.float32), yte)


def batch_stream(n: int, batch_size: int, seed=0) -> Iterator[np.ndarray]:
    """Endless minibatch indices into ``range(n)``: reshuffled passes, the last partial batch
    of each pass dropped. With the same ``seed`` these are the batches that
    ``batches(..., drop_last=True)`` gives pass after pass, which is the order in which
    ``train.fit`` draws them."""
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be between 1 and n = {n}, got {batch_size}")
    rng = _rng(seed)
    while True:
        order = rng.permutation(n)
        for i in range(0, n - batch_size + 1, batch_size):
            yield order[i:i + batch_size]
