"""Losses with torch's reductions: ``cross_entropy``, ``mse_loss``,
``binary_cross_entropy_with_logits``, plus ``log_softmax`` and ``softmax``."""
from __future__ import annotations

import warnings

import numpy as np

from ..core.node import NO_CTX, scope
from ..core.ops import Primitive, Sigmoid
from ..core.tensor import Tensor

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(np.asarray(x))


def _softmax_dim(x: Tensor, dim, axis, name: str) -> int:
    if dim is not None and axis is not None:
        raise TypeError(f"{name}: got both dim= and axis=; pass one of them")
    d = dim if dim is not None else axis
    if d is None:  # torch's legacy implicit choice, with its warning
        d = 0 if x.ndim in (0, 1, 3) else 1
        warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the "
                      "call to include dim=X as an argument.", UserWarning, stacklevel=3)
    return d


def log_softmax(input: Tensor, dim=None, *, axis=None) -> Tensor:
    """``x - logsumexp(x, dim)`` (``Tensor.log_softmax``), as ``torch.nn.functional``."""
    x = _as_tensor(input)
    return x.log_softmax(_softmax_dim(x, dim, axis, "log_softmax"))


def softmax(input: Tensor, dim=None, *, axis=None) -> Tensor:
    """``exp(x) / Σ exp(x)`` along ``dim`` (``Tensor.softmax``), as ``torch.nn.functional``."""
    x = _as_tensor(input)
    return x.softmax(_softmax_dim(x, dim, axis, "softmax"))


def _class_targets(target, n: int, c: int) -> np.ndarray:
    t = np.asarray(target.data if isinstance(target, Tensor) else target)
    if t.shape != (n,):
        raise ValueError(f"cross_entropy: target of shape {t.shape} does not match logits with "
                         f"{n} rows (expected shape ({n},))")
    if t.dtype.kind == "f":
        if not np.all(t == np.round(t)):
            raise ValueError("cross_entropy: targets must be integer class indices")
        t = t.astype(np.int64)
    elif t.dtype.kind not in "iu":
        raise ValueError(f"cross_entropy: targets must be integer class indices, got {t.dtype}")
    if n and (t.min() < 0 or t.max() >= c):
        bad = t[(t < 0) | (t >= c)][0]
        raise ValueError(f"cross_entropy: target {bad} is out of range for {c} classes")
    return t


class CrossEntropy(Primitive):
    """Softmax cross-entropy of logits (N, C) and class indices (N,), one fused node.

    ``loss_i = logsumexp(z_i) - z_i[t_i]``; d loss_i / d z_i = softmax(z_i) - onehot(t_i).
    """

    op_name = "cross_entropy"
    save_inputs = (0,)

    @staticmethod
    def forward(ctx, logits, target, reduction="mean"):
        n, c = logits.shape
        # worked on as (C, N), one class per row: NumPy reduces over the classes in runs of N
        # (for a few classes, over a transposed copy: a reduction along short rows pays per
        # row, 20 µs against 10 for 128×10); with many classes the transposed view is as fast
        zt = np.ascontiguousarray(logits.T) if c < 64 else logits.T
        zt = zt - zt.max(axis=0)
        e = np.exp(zt)
        s = e.sum(axis=0)
        nll = np.log(s) - zt[target, np.arange(n)]
        e /= s  # softmax
        ctx.target = target
        ctx.reduction = reduction
        ctx.save_for_backward(e.T)
        if reduction == "mean":  # (Σ / n in the logits' dtype: what nll.mean() gives)
            return np.asarray(np.add.reduce(nll) / n, dtype=logits.dtype)
        if reduction == "sum":
            return np.asarray(np.add.reduce(nll), dtype=logits.dtype)
        return nll

    @staticmethod
    def backward(ctx, g):
        t = ctx.target
        if ctx._graph_mode:  # recompute softmax from the graph so higher derivatives flow
            (logits,) = ctx.inputs()
            p = logits.softmax(1)
        else:
            (p,) = ctx.saved_tensors
        n = p.shape[0]
        if ctx.reduction == "mean":
            scale = g * (1.0 / n)
        elif ctx.reduction == "sum":
            scale = g
        else:
            scale = g.reshape((n, 1))
        if ctx._graph_mode:
            onehot = np.zeros(p.shape, dtype=p.dtype)
            onehot[np.arange(n), t] = 1.0
            return ((p - onehot) * scale,)
        d = p.copy()  # p − onehot: 1 taken off each row's target (the rest is p itself)
        d[np.arange(n), t] -= 1.0
        d *= scale
        return (d,)


def cross_entropy(logits: Tensor, target, reduction: str = "mean") -> Tensor:
    """Cross-entropy of ``logits`` (N, C) against integer class ``target`` (N,).

    Log-sum-exp stable (logits of 1e4 are fine). ``reduction``: "mean" (default), "sum" or
    "none" (a loss per row).
    """
    _check_reduction(reduction)
    logits = _as_tensor(logits)
    if logits.ndim != 2:
        raise ValueError(f"cross_entropy expects logits of shape (N, C), got {logits.shape}")
    n, c = logits.shape
    if n == 0:
        raise ValueError("cross_entropy of an empty batch")
    t = _class_targets(target, n, c)
    return CrossEntropy.apply(logits, target=t, reduction=reduction)


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def mse_loss(input: Tensor, target, reduction: str = "mean") -> Tensor:
    """Mean squared error ``(input - target)²`` reduced by ``reduction``; shapes must match."""
    _check_reduction(reduction)
    input = _as_tensor(input)
    tshape = np.shape(target.data if isinstance(target, Tensor) else target)
    if tshape != input.shape:
        raise ValueError(f"mse_loss: input of shape {input.shape} and target of shape {tshape} "
                         "differ (reshape one of them; broadcasting here is usually a bug)")
    with scope("mse_loss", kind="loss"):
        d = input - target
        return _reduce(d * d, reduction)


class BCEWithLogits(Primitive):
    """Elementwise ``ℓ = max(x, 0) - x·t + log(1 + e^{-|x|})`` of logits x and targets t.

    dℓ/dx = σ(x) - t (exact at x = 0, where a composition of relu and abs would give -t),
    dℓ/dt = -x.
    """

    op_name = "bce_with_logits"
    save_inputs = (0, 1)

    @staticmethod
    def forward(ctx, x, t):
        return np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))

    @staticmethod
    def backward(ctx, g):
        x, t = ctx.inputs()
        need = ctx.needs_input_grad
        gx = gt = None
        if need[0]:
            sx = x.sigmoid() if isinstance(x, Tensor) else Sigmoid.forward(NO_CTX, x)
            gx = g * (sx - t)
        if need[1]:
            gt = g * -x
        return gx, gt


def binary_cross_entropy_with_logits(input: Tensor, target, weight=None,
                                     reduction: str = "mean") -> Tensor:
    """Binary cross-entropy of logits ``x`` and targets ``t`` in [0, 1], computed stably as
    ``max(x, 0) - x·t + log(1 + exp(-|x|))``; optional elementwise ``weight``."""
    _check_reduction(reduction)
    input = _as_tensor(input)
    tshape = np.shape(target.data if isinstance(target, Tensor) else target)
    if tshape != input.shape:
        raise ValueError(f"binary_cross_entropy_with_logits: input of shape {input.shape} and "
                         f"target of shape {tshape} differ")
    if isinstance(target, Tensor):
        target = target.astype(input.dtype) if target.dtype != input.dtype else target
    else:
        target = np.asarray(target, dtype=input.dtype)
    with scope("binary_cross_entropy_with_logits", kind="loss"):
        loss = BCEWithLogits.apply(input, target)
        if weight is not None:
            loss = loss * weight
        return _reduce(loss, reduction)
