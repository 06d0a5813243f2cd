"""Making Tensors, as torch's factory functions: ``tensor``, ``zeros``, ``ones``, ``full``,
``arange``, ``randn``, ``rand``, ``zeros_like``, ``ones_like``, ``cat``, ``stack``, and
``manual_seed`` for the default random generator (used by ``randn``, ``rand`` and
``nn.init``)."""
from __future__ import annotations

import numpy as np

from . import ops
from .tensor import AxisError, Tensor, _norm_axis, _shape_arg, apply_op, result_type

_generator = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Seed the default generator (``randn``, ``rand``, ``nn.init``); returns it."""
    global _generator
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"manual_seed needs an int, got {type(seed).__name__}")
    _generator = np.random.default_rng(int(seed))
    return _generator


def generator() -> np.random.Generator:
    """The default generator (fresh entropy until ``manual_seed`` is called)."""
    return _generator


def _finish(arr: np.ndarray, requires_grad: bool) -> Tensor:
    t = Tensor._wrap(arr, None)
    if requires_grad:
        t.requires_grad_(True)
    return t


def tensor(data, dtype=None, requires_grad: bool = False) -> Tensor:
    """A new Tensor from ``data``, as ``torch.tensor``: Python ints become int64, floats
    float32, bools bool; an ndarray keeps its dtype. The data is copied."""
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        arr = np.array(data, dtype=np.dtype(dtype))
    elif isinstance(data, (np.ndarray, np.generic)):
        arr = np.array(data, copy=True)
    else:
        arr = np.array(data)
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float32)
        elif arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)
        elif arr.dtype == object:
            raise TypeError(f"cannot make a Tensor from {type(data).__name__} data "
                            "(ragged lists or non-numeric objects)")
    return _finish(arr, requires_grad)


def zeros(*size, dtype=np.float32, requires_grad: bool = False) -> Tensor:
    """Zeros of ``size`` (ints or one tuple)."""
    return _finish(np.zeros(_shape_arg(size), dtype=dtype), requires_grad)


def ones(*size, dtype=np.float32, requires_grad: bool = False) -> Tensor:
    """Ones of ``size`` (ints or one tuple)."""
    return _finish(np.ones(_shape_arg(size), dtype=dtype), requires_grad)


def _scalar_dtype(value):
    if isinstance(value, (bool, np.bool_)):
        return np.bool_
    if isinstance(value, (int, np.integer)):
        return np.int64
    return np.float32


def full(size, fill_value, dtype=None, requires_grad: bool = False) -> Tensor:
    """``size`` filled with ``fill_value``; the dtype follows the value as in torch (int →
    int64, float → float32, bool → bool)."""
    if isinstance(size, (int, np.integer)):
        size = (size,)
    dt = np.dtype(dtype) if dtype is not None else np.dtype(_scalar_dtype(fill_value))
    return _finish(np.full(tuple(int(s) for s in size), fill_value, dtype=dt), requires_grad)


def arange(start, end=None, step=1, dtype=None, requires_grad: bool = False) -> Tensor:
    """``start, start + step, …`` up to ``end`` (exclusive), as ``torch.arange``: int64 when
    every argument is an int, else float32."""
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("arange: step must be nonzero")
    if (end - start) * step < 0:
        raise ValueError(f"arange: upper bound and larger bound inconsistent with step sign "
                         f"(start {start}, end {end}, step {step})")
    ints = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
               for v in (start, end, step))
    dt = np.dtype(dtype) if dtype is not None else np.dtype(np.int64 if ints else np.float32)
    n = int(np.ceil((end - start) / step))
    arr = (start + np.arange(max(n, 0), dtype=np.float64) * step) if not ints else \
        np.arange(start, end, step, dtype=np.int64)
    return _finish(arr.astype(dt), requires_grad)


def _random(fn, size, dtype, requires_grad, generator):
    g = _generator if generator is None else generator
    return _finish(fn(g, _shape_arg(size)).astype(dtype), requires_grad)


def randn(*size, dtype=np.float32, requires_grad: bool = False, generator=None) -> Tensor:
    """Standard-normal samples of ``size`` from the default generator (see ``manual_seed``)."""
    return _random(lambda g, s: g.standard_normal(s), size, dtype, requires_grad, generator)


def rand(*size, dtype=np.float32, requires_grad: bool = False, generator=None) -> Tensor:
    """Uniform samples in [0, 1) of ``size`` from the default generator."""
    return _random(lambda g, s: g.random(s), size, dtype, requires_grad, generator)


def zeros_like(t: Tensor, dtype=None, requires_grad: bool = False) -> Tensor:
    """Zeros of ``t``'s shape and dtype."""
    return zeros(*t.shape, dtype=t.dtype if dtype is None else dtype,
                 requires_grad=requires_grad)


def ones_like(t: Tensor, dtype=None, requires_grad: bool = False) -> Tensor:
    """Ones of ``t``'s shape and dtype."""
    return ones(*t.shape, dtype=t.dtype if dtype is None else dtype,
                requires_grad=requires_grad)


def _tensors_and_dim(name: str, tensors, dim, axis) -> tuple:
    """The inputs of ``cat``/``stack`` as Tensors, and the dim (``axis`` is NumPy's name)."""
    if axis is not None:
        if dim != 0:
            raise TypeError("got both dim= and axis=; pass one of them")
        dim = axis
    ts = [t if isinstance(t, Tensor) else Tensor._wrap(np.asarray(t), None) for t in tensors]
    if not ts:
        raise ValueError(f"{name}: expected a non-empty list of Tensors")
    return ts, dim


def cat(tensors, dim: int = 0, *, axis=None) -> Tensor:
    """Concatenate along ``dim`` (shapes equal elsewhere), with torch's type promotion;
    differentiable."""
    ts, dim = _tensors_and_dim("cat", tensors, dim, axis)
    ref = ts[0]
    ax = _norm_axis(dim, ref.ndim, ref.shape)
    if ref.ndim == 0:
        raise ValueError("cat: zero-dimensional tensors cannot be concatenated (use stack)")
    for i, t in enumerate(ts):
        if t.ndim != ref.ndim or any(a != b for j, (a, b) in enumerate(zip(t.shape, ref.shape))
                                     if j != ax):
            raise ValueError(f"cat: sizes of tensors must match except in dim {ax}: tensor 0 "
                             f"has shape {ref.shape}, tensor {i} has shape {t.shape}")
    rt = result_type(*[t.data for t in ts])
    datas = [t.data if t.dtype == rt else t.data.astype(rt) for t in ts]
    out = apply_op(ops.Cat, tuple(ts), {"axis": ax}, datas)
    if out._ctx is not None and any(t.dtype != rt for t in ts):
        out._ctx._mixed = True  # backward casts each gradient to its input's dtype
    return out


def stack(tensors, dim: int = 0, *, axis=None) -> Tensor:
    """Stack equal-shaped Tensors along a new axis ``dim``; differentiable."""
    ts, dim = _tensors_and_dim("stack", tensors, dim, axis)
    for i, t in enumerate(ts):
        if t.shape != ts[0].shape:
            raise ValueError(f"stack expects each tensor to be equal size, but got "
                             f"{ts[0].shape} at entry 0 and {t.shape} at entry {i}")
    ax = _norm_axis(dim, ts[0].ndim, ts[0].shape, extra=1)
    return cat([t.unsqueeze(ax) for t in ts], ax)


__all__ = ["tensor", "zeros", "ones", "full", "arange", "randn", "rand", "zeros_like",
           "ones_like", "cat", "stack", "manual_seed", "generator", "AxisError"]
