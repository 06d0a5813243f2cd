"""Checkpoints: round trips, refusing unsafe or foreign files, atomic saves."""
import os
import pickle
import zipfile

import numpy as np
import pytest

from tinygrad_bn import Tensor, checkpoint, data, nn, optim
from tinygrad_bn.models import mlp
from tinygrad_bn.train import fit, predict


def _trained(norm="batch", seed=0):
    ds = data.load("moons", n=256, seed=0)
    model = mlp(2, (16, 8), 2, norm=norm, rng=seed)
    fit(model, ds, optim.SGD(model.parameters(), lr=0.1, momentum=0.9), epochs=2,
        batch_size=32, progress=False)
    return model, ds


def test_round_trip_into_a_fresh_model_gives_identical_outputs(tmp_path):
    model, ds = _trained()
    path = checkpoint.save(model, tmp_path / "m.npz")
    assert path == str(tmp_path / "m.npz")
    fresh = mlp(2, (16, 8), 2, norm="batch", rng=123)
    assert not np.array_equal(predict(fresh, ds.X_test), predict(model, ds.X_test))
    state = checkpoint.load(path)
    assert list(state) == list(model.state_dict())
    for k, v in model.state_dict().items():
        assert state[k].dtype == v.dtype and np.array_equal(state[k], v), k
    assert int(state["1.num_batches_tracked"]) == int(model[1].num_batches_tracked.data) > 0
    fresh.load_state_dict(state)
    assert np.array_equal(predict(fresh, ds.X_test), predict(model, ds.X_test))
    fresh.train()
    model.train()
    x = Tensor(ds.X_test[:32])
    assert np.array_equal(fresh(x).data, model(x).data)


def test_save_adds_the_suffix_makes_folders_and_takes_dicts(tmp_path):
    path = checkpoint.save({"a": np.arange(3), "b": Tensor(np.ones((2, 2)))},
                           tmp_path / "new" / "folder" / "ck")
    assert path.endswith("ck.npz") and os.path.isfile(path)
    got = checkpoint.load(path)
    assert list(got) == ["a", "b"]
    assert np.array_equal(got["a"], np.arange(3)) and np.array_equal(got["b"], np.ones((2, 2)))


def test_save_rejects_what_it_cannot_store(tmp_path):
    for kind in (TypeError, ValueError):  # a ValueError, as every error of save/load
        with pytest.raises(kind, match="Module or a dict"):
            checkpoint.save([1, 2], tmp_path / "x.npz")
    with pytest.raises(ValueError, match="'bad'"):
        checkpoint.save({"bad": np.array([{"a": 1}], dtype=object)}, tmp_path / "x.npz")
    with pytest.raises(ValueError):
        checkpoint.save({3: np.ones(2)}, tmp_path / "x.npz")
    assert os.listdir(tmp_path) == []


# -- refusing files that are not our checkpoints ---------------------------------------------

def _pickle_file(path):
    with open(path, "wb") as f:
        pickle.dump({"0.weight": np.ones((2, 2))}, f)


def _object_array(path):
    np.savez(path, **{checkpoint._FORMAT_KEY: np.array(checkpoint._FORMAT)},
             w=np.array([np.ones(2), "x"], dtype=object))


def _truncated(path):
    checkpoint.save({"w": np.arange(1000.0)}, path)
    raw = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(raw[:len(raw) // 2])


def _foreign_npz(path):
    np.savez(path, w=np.ones(3))


def _single_npy(path):
    with open(path, "wb") as f:
        np.save(f, np.ones(3))


def _text(path):
    with open(path, "w") as f:
        f.write("0.weight = [[1, 2], [3, 4]]\n")


def _empty(path):
    open(path, "wb").close()


def _extra_zip_member(path):
    checkpoint.save({"w": np.ones(2)}, path)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("notes.txt", b"not an array")


def _garbage_npy_member(path):
    checkpoint.save({"w": np.ones(2)}, path)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("v.npy", b"\x93NUMPY garbage")


def _wrong_format_tag(path):
    np.savez(path, **{checkpoint._FORMAT_KEY: np.array("something else v9")}, w=np.ones(3))


@pytest.mark.parametrize("make,why", [
    (_pickle_file, "pickle"),
    (_object_array, "pickle"),
    (_truncated, ""),
    (_foreign_npz, "not written by"),
    (_single_npy, ""),
    (_text, ""),
    (_empty, ""),
    (_wrong_format_tag, "not written by"),
    (_extra_zip_member, "'notes.txt' is not an array"),
    (_garbage_npy_member, ""),
])
def test_unsafe_or_foreign_files_are_refused(tmp_path, make, why):
    path = tmp_path / "ck.npz"
    make(path)
    with pytest.raises(ValueError, match="cannot load checkpoint") as info:
        checkpoint.load(path)
    assert str(path) in str(info.value)
    assert why in str(info.value)


def test_loading_a_pickle_never_runs_code(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.npz"
    with open(path, "wb") as f:
        pickle.dump(Evil(), f)
    with pytest.raises(ValueError):
        checkpoint.load(path)
    # an npz whose entry is a pickled object array
    np.savez(tmp_path / "evil2.npz", **{checkpoint._FORMAT_KEY: np.array(checkpoint._FORMAT)},
             w=np.array([Evil()], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        checkpoint.load(tmp_path / "evil2.npz")
    assert not marker.exists()


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        checkpoint.load(tmp_path / "nope.npz")


def test_a_model_whose_load_fails_is_left_untouched(tmp_path):
    model, ds = _trained()
    before = model.state_dict()
    out_before = predict(model, ds.X_test)

    other, _ = _trained(seed=1)  # same architecture, other weights
    good = checkpoint.save(other, tmp_path / "good.npz")
    # wrong widths: shape mismatches after some keys that would fit
    wide = checkpoint.save(mlp(2, (16, 9), 2, norm="batch"), tmp_path / "wide.npz")
    no_bn = checkpoint.save(mlp(2, (16, 8), 2, norm="none"), tmp_path / "nobn.npz")
    partial = dict(checkpoint.load(good))
    del partial["4.running_var"]
    bad_path = tmp_path / "bad.npz"
    _truncated(bad_path)

    for attempt in (lambda: model.load_state_dict(checkpoint.load(wide)),
                    lambda: model.load_state_dict(checkpoint.load(no_bn)),
                    lambda: model.load_state_dict(partial),
                    lambda: model.load_state_dict(checkpoint.load(bad_path))):
        with pytest.raises(ValueError):
            attempt()
        after = model.state_dict()
        for k, v in before.items():
            assert np.array_equal(after[k], v), k
    assert np.array_equal(predict(model, ds.X_test), out_before)
    # and a good load does change it
    model.load_state_dict(checkpoint.load(good))
    assert not np.array_equal(predict(model, ds.X_test), out_before)


def test_load_returns_arrays_not_views_into_the_file(tmp_path):
    path = checkpoint.save({"w": np.arange(4.0)}, tmp_path / "ck.npz")
    got = checkpoint.load(path)
    os.unlink(path)  # the file is closed and nothing refers to it
    assert np.array_equal(got["w"], np.arange(4.0))


# -- atomic saves -----------------------------------------------------------------------------

def test_save_leaves_no_temporary_files_and_replaces_whole(tmp_path):
    path = checkpoint.save({"a": np.ones(3), "b": np.zeros(2)}, tmp_path / "ck.npz")
    assert os.listdir(tmp_path) == ["ck.npz"]
    checkpoint.save({"c": np.full(4, 7.0)}, path)
    assert os.listdir(tmp_path) == ["ck.npz"]
    got = checkpoint.load(path)
    assert list(got) == ["c"]  # nothing of the old checkpoint survives
    assert np.array_equal(got["c"], np.full(4, 7.0))
    with zipfile.ZipFile(path) as z:
        assert z.namelist() == [checkpoint._FORMAT_KEY + ".npy", checkpoint._INDEX_KEY + ".npy",
                                "arr_0.npy"]


def test_a_failed_save_keeps_the_old_checkpoint_and_cleans_up(tmp_path, monkeypatch):
    path = checkpoint.save({"a": np.arange(5.0)}, tmp_path / "ck.npz")
    old_bytes = open(path, "rb").read()

    def crash(f, arrays):  # writes half a file, then dies
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "_write_archive", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save({"a": np.zeros(5)}, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ck.npz"]
    assert open(path, "rb").read() == old_bytes
    assert np.array_equal(checkpoint.load(path)["a"], np.arange(5.0))


def test_state_dict_round_trip_with_every_norm(tmp_path):
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((6, 3)).astype(np.float32))
    for norm in ("batch", "layer", "group", "rms"):
        model = mlp(3, (8,), 2, norm=norm, rng=0)
        for p in model.parameters():
            p.data += rng.standard_normal(p.shape).astype(p.dtype) * 0.1
        model(x)  # moves the running statistics of BatchNorm
        fresh = mlp(3, (8,), 2, norm=norm, rng=5)
        fresh.load_state_dict(checkpoint.load(checkpoint.save(model, tmp_path / norm)))
        model.eval()
        fresh.eval()
        assert np.array_equal(fresh(x).data, model(x).data), norm
    assert isinstance(fresh[1], nn.RMSNorm)
