"""Checkpoints as ``.npz`` files that load without pickle: loading a file never runs code."""
from __future__ import annotations

import os
import tempfile
import zipfile
from collections import OrderedDict

import numpy as np

_FORMAT_KEY = "__tinygrad_bn_checkpoint__"
_FORMAT = "tinygrad_bn checkpoint v1"


def save(obj, path) -> str:
    """Write a module's ``state_dict()`` (or a dict of arrays) to ``path`` atomically.

    The file is written next to ``path`` under a temporary name and renamed into place, so a
    crash never leaves a half-written checkpoint. Returns the path written (``.npz`` added
    if missing).
    """
    state = obj.state_dict() if hasattr(obj, "state_dict") else obj
    if not isinstance(state, dict):
        raise TypeError(f"save() takes a Module or a dict of arrays, got {type(obj).__name__}")
    arrays = OrderedDict()
    for k, v in state.items():
        if not isinstance(k, str) or k == _FORMAT_KEY:
            raise ValueError(f"invalid checkpoint key {k!r}")
        a = np.asarray(getattr(v, "data", v))
        if a.dtype == object:
            raise ValueError(f"checkpoint entry {k!r} is not a numeric array")
        arrays[k] = a
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{_FORMAT_KEY: np.array(_FORMAT)}, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load(path) -> "OrderedDict[str, np.ndarray]":
    """Read a checkpoint written by ``save`` into an ordered dict of arrays.

    Refuses, with a ValueError, files that are truncated, not ``.npz``, carry pickled objects
    or were not written by ``save``. Nothing is modified: pass the result to
    ``model.load_state_dict`` (which checks keys and shapes before assigning).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        f = np.load(path, allow_pickle=False)
        if not hasattr(f, "files"):  # a .npy file: np.load returned the array itself
            raise ValueError("it holds a single array, not a checkpoint")
        with f:
            names = list(f.files)
            if _FORMAT_KEY not in names or str(f[_FORMAT_KEY]) != _FORMAT:
                raise ValueError("it was not written by tinygrad_bn.save")
            out = OrderedDict((k, f[k]) for k in names if k != _FORMAT_KEY)
        for k, v in out.items():
            if not isinstance(v, np.ndarray):  # a zip member that is not a .npy array
                raise ValueError(f"its entry {k!r} is not an array")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        why = str(e)
        if "pickle" in why.lower() or "object arrays" in why.lower():
            why = "it contains pickled objects, which are never loaded (unpickling can run code)"
        raise ValueError(f"cannot load checkpoint {path}: {why}") from None
    return out
