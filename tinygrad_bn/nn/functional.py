"""Functional ops shaped like ``torch.nn.functional`` (import as ``F``).

The norms here are *composed*: built only from graph primitives (mean, sub, pow, add, sqrt,
div, mul, reshape), so their gradients emerge from the recorded graph. The intermediates are
named as in the derivation, ``x → μ → x - μ → σ² → σ → x̂ → y``, and each call's nodes are
grouped in a ``scope`` (kind ``"norm"``) so a drawn graph reads like the tutorial's.
``tinygrad_bn.analytic`` has the same functions as single nodes with hand-derived backwards.

Normalization uses the **biased** variance ``σ² = mean((x - μ)²)`` (two passes: the mean first,
then the mean of squared deviations, never ``E[x²] - E[x]²``); running statistics track the
**unbiased** one, ``σ²·m/(m-1)``, as torch does::

    running_mean ← (1 - momentum)·running_mean + momentum·μ
    running_var  ← (1 - momentum)·running_var  + momentum·σ²·m/(m-1)

Running statistics are Tensors (or ndarrays) updated in place, outside the graph. Arguments are
checked before anything is computed or updated: a call that raises changes nothing.
"""
from __future__ import annotations

import numpy as np

from ..core import ops
from .._norms import (as_input, check_batch_norm, check_group_norm, check_instance_norm,
                      check_layer_norm, commit, compute_dtype, instance_running, rms_eps,
                      running_value, stat_array)
from ..core.node import scope
from ..core.tensor import Tensor
from .losses import (binary_cross_entropy_with_logits, cross_entropy, log_softmax, mse_loss,
                     softmax)

__all__ = [
    "batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm",
    "linear", "relu", "tanh", "sigmoid",
    "cross_entropy", "mse_loss", "binary_cross_entropy_with_logits", "log_softmax", "softmax",
]


# ---------------------------------------------------------------------------- helpers
def _param_view(p, ndim: int):
    """A per-channel parameter (C,) viewed as (C, 1, ..., 1) against an (N, C, *) input."""
    if p is None or ndim <= 2:
        return p
    return p.reshape((p.shape[0],) + (1,) * (ndim - 2))


def _upcast(t, dtype):
    """``t`` (Tensor, ndarray or None) in the computation dtype ``dtype`` (a Cast node)."""
    return t if t is None or t.dtype == dtype else t.astype(dtype)


def _affine(xhat: Tensor, weight, bias, out_dtype=None) -> Tensor:
    """``y = γ·x̂ + β`` (either part optional), rounded to ``out_dtype`` (float16 inputs are
    normalized in float32 and rounded once, as torch); ``xhat`` when there is nothing to do."""
    y = xhat
    if weight is not None:
        y = y * weight
        if bias is not None:
            y.name = "γ·x̂"
    if bias is not None:
        y = y + bias
    if out_dtype is not None and y.dtype != out_dtype:
        y = y.astype(out_dtype)
    return y if y is xhat else y.named("y")


def _normalize(x: Tensor, axes: tuple, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """The composed statistics over ``axes`` (kept): returns (x̂, μ, σ²).

    μ = mean(x), σ² = mean((x - μ)²) (biased, two passes), σ = √(σ² + ε), x̂ = (x - μ) / σ.
    """
    mu = x.mean(axis=axes, keepdims=True).named("μ")
    d = (x - mu).named("x - μ")
    var = (d ** 2).mean(axis=axes, keepdims=True).named("σ²")
    sigma = (var + eps).sqrt().named("σ")
    xhat = (d / sigma).named("x̂")
    return xhat, mu, var


def _normalize_with(x: Tensor, mean: np.ndarray, var: np.ndarray, eps: float) -> Tensor:
    """x̂ = (x - μ) / √(σ² + ε) with constant (running) statistics, broadcast against x."""
    d = (x - mean.astype(x.dtype, copy=False)).named("x - μ")
    sigma = np.sqrt(var.astype(x.dtype, copy=False) + x.dtype.type(eps))
    return (d / sigma).named("x̂")


# ------------------------------------------------------------------------------ norms
def batch_norm(x: Tensor, running_mean, running_var, weight=None, bias=None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Batch normalization over (N, C), (N, C, L) or (N, C, H, W), composed from primitives.

    For each channel c the statistics run over the m = N·L (or N·H·W) values of that channel::

        μ = Σx / m,  σ² = Σ(x - μ)² / m,  x̂ = (x - μ) / √(σ² + ε),  y = γ·x̂ + β

    ``training=True`` uses the batch statistics (biased σ² for normalization) and, when
    ``running_mean`` / ``running_var`` (shape (C,)) are given, updates them in place with the
    unbiased variance σ²·m/(m-1). ``training=False`` normalizes with the running statistics.
    ``weight`` (γ) and ``bias`` (β) have shape (C,). Raises ValueError for a batch with one
    value per channel in training, eps ≤ 0 in training, a wrong ndim, or statistics/parameters
    not of shape (C,); mixed dtypes as torch. An empty batch gives an empty output and leaves
    the running statistics alone; float16 is normalized in float32 (see ``tinygrad_bn._norms``).
    """
    x = as_input(x, "batch_norm")
    c, m = check_batch_norm(x, running_mean, running_var, weight, bias, training, momentum,
                            eps)
    rm, rv = stat_array(running_mean), stat_array(running_var)
    nd = x.ndim
    out = x.dtype
    cd = compute_dtype(out)
    new = None
    with scope("batch_norm", kind="norm"):
        xc = _upcast(x, cd)
        if training:
            axes = (0,) + tuple(range(2, nd))
            xhat, mu, var = _normalize(xc, axes, eps)
            if rm is not None and x.size:  # torch leaves them alone for an empty batch
                new = ((rm, running_value(rm, mu.data.reshape(c), momentum)),
                       (rv, running_value(rv, var.data.reshape(c) * (m / (m - 1)), momentum)))
        else:
            shape = (c,) + (1,) * (nd - 2)
            xhat = _normalize_with(xc, rm.reshape(shape), rv.reshape(shape), eps)
        y = _affine(xhat, _param_view(_upcast(weight, cd), nd),
                    _param_view(_upcast(bias, cd), nd), out)
    if new is not None:  # last: a call that fails changes nothing
        commit(*new)
    return y


def layer_norm(x: Tensor, normalized_shape, weight=None, bias=None,
               eps: float = 1e-5) -> Tensor:
    """Layer normalization over the trailing ``normalized_shape`` of each sample, composed.

    With S the last ``len(normalized_shape)`` axes: μ = mean_S(x), σ² = mean_S((x - μ)²)
    (biased), x̂ = (x - μ) / √(σ² + ε), y = γ·x̂ + β; γ and β have shape ``normalized_shape``.
    The same computation in training and evaluation (no running statistics).
    """
    x = as_input(x, "layer_norm")
    ns = check_layer_norm("layer_norm", x, normalized_shape, weight, bias, eps)
    cd = compute_dtype(x.dtype)
    with scope("layer_norm", kind="norm"):
        axes = tuple(range(x.ndim - len(ns), x.ndim))
        xhat, _, _ = _normalize(_upcast(x, cd), axes, eps)
        return _affine(xhat, _upcast(weight, cd), _upcast(bias, cd), x.dtype)


def rms_norm(x: Tensor, normalized_shape, weight=None, eps: float | None = None) -> Tensor:
    """RMS normalization over the trailing ``normalized_shape``, composed (no centring).

    r = √(mean_S(x²) + ε), x̂ = x / r, y = γ·x̂; ``eps=None`` means the machine epsilon of
    the input's dtype (torch's default). γ has shape ``normalized_shape`` and may have another
    dtype (as torch: the output keeps the input's dtype).
    """
    x = as_input(x, "rms_norm")
    ns = check_layer_norm("rms_norm", x, normalized_shape, weight, None, eps)
    eps = rms_eps(eps, x.dtype)
    cd = compute_dtype(x.dtype)
    with scope("rms_norm", kind="norm"):
        xc = _upcast(x, cd)
        axes = tuple(range(x.ndim - len(ns), x.ndim))
        ms = (xc ** 2).mean(axis=axes, keepdims=True).named("mean(x²)")
        r = (ms + eps).sqrt().named("rms")
        xhat = (xc / r).named("x̂")
        if weight is not None and weight.dtype not in (x.dtype, cd):
            xhat = xhat.astype(x.dtype)  # torch's mixed-dtype path: x̂ in x's dtype, then γ·x̂
        else:
            weight = _upcast(weight, cd)
        return _affine(xhat, weight, None, x.dtype)


def group_norm(x: Tensor, num_groups: int, weight=None, bias=None,
               eps: float = 1e-5) -> Tensor:
    """Group normalization of (N, C, *): statistics per (sample, group of C/G channels), composed.

    x is viewed as (N, G, C/G·L); over the last axis μ, σ² (biased), x̂ = (x - μ)/√(σ² + ε);
    then x̂ takes x's shape and y = γ·x̂ + β with γ, β of shape (C,). Raises ValueError when
    ``num_groups`` does not divide C. A group of one value (e.g. (2, 4) with 4 groups) gives
    x̂ = 0, y = β, as torch.
    """
    x = as_input(x, "group_norm")
    c, g = check_group_norm(x, num_groups, weight, bias, eps)
    nd = x.ndim
    cd = compute_dtype(x.dtype)
    with scope("group_norm", kind="norm"):
        n = x.shape[0]
        xg = _upcast(x, cd).reshape(n, g, (c // g) * int(np.prod(x.shape[2:], dtype=np.int64)))
        xhat_g, _, _ = _normalize(xg, (2,), eps)
        xhat_g.name = "x̂ (per group)"
        xhat = xhat_g.reshape(x.shape).named("x̂")
        return _affine(xhat, _param_view(_upcast(weight, cd), nd),
                       _param_view(_upcast(bias, cd), nd), x.dtype)


def instance_norm(x: Tensor, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats: bool = True, momentum: float = 0.1,
                  eps: float = 1e-5) -> Tensor:
    """Instance normalization of (N, C, L) or (N, C, H, W): statistics per (sample, channel).

    Over the L (or H·W) positions of each (n, c): μ, σ² (biased), x̂ = (x - μ)/√(σ² + ε),
    y = γ·x̂ + β (γ, β of shape (C,)). With ``use_input_stats`` and running statistics given,
    they are updated as torch does, with the batch averages of the per-instance statistics:
    ``running_var ← (1 - momentum)·running_var + momentum·mean_n(σ²_{n,c}·L/(L-1))``
    (nan for an empty batch, as torch; unchanged when L = 0).
    ``use_input_stats=False`` normalizes with the running statistics instead.
    """
    x = as_input(x, "instance_norm")
    c, spatial = check_instance_norm(x, running_mean, running_var, weight, bias,
                                     use_input_stats, momentum, eps)
    rm, rv = stat_array(running_mean), stat_array(running_var)
    nd = x.ndim
    cd = compute_dtype(x.dtype)
    new = None
    with scope("instance_norm", kind="norm"):
        xc = _upcast(x, cd)
        if use_input_stats:
            xhat, mu, var = _normalize(xc, tuple(range(2, nd)), eps)
            if rm is not None:
                new = instance_running(rm, rv, mu.data, var.data, x.shape, momentum)
        else:
            shape = (c,) + (1,) * (nd - 2)
            xhat = _normalize_with(xc, rm.reshape(shape), rv.reshape(shape), eps)
        y = _affine(xhat, _param_view(_upcast(weight, cd), nd),
                    _param_view(_upcast(bias, cd), nd), x.dtype)
    if new:
        commit(*new)
    return y


# --------------------------------------------------------------------- thin wrappers
def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Affine map ``y = x @ Wᵀ + b`` (one fused node); x (..., in), W (out, in), b (out,)."""
    return ops.Linear.apply(x, weight, bias)


def relu(x: Tensor) -> Tensor:
    """``max(x, 0)`` elementwise."""
    return x.relu()


def tanh(x: Tensor) -> Tensor:
    """Hyperbolic tangent elementwise."""
    return x.tanh()


def sigmoid(x: Tensor) -> Tensor:
    """Logistic function ``1 / (1 + e^-x)`` elementwise."""
    return x.sigmoid()
