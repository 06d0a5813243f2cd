r"""BatchNorm, read top to bottom: the math, the composed function, the hand-derived op, the layers.

**Forward.** For each channel c, over the m = N·L values of that channel (L = 1 for (N, C)
inputs, H·W for images)::

    μ = Σx / m,   σ² = Σ(x − μ)² / m,   σ = √(σ² + ε),   x̂ = (x − μ) / σ,   y = γ·x̂ + β

σ² is the **biased** variance, computed in two passes (the mean first, then the mean of the
squared deviations, never E[x²] − E[x]², which cancels catastrophically).

**Backward: three paths.** With g = ∂L/∂y and dx̂ = γ·g, x reaches the loss through x̂
directly, through σ² and through μ; the chain rule sums the three (``grad_paths`` splits them)::

    ∂L/∂x = dx̂/σ                               (through x̂)
          + dσ² · 2(x − μ)/m                   (through σ²,  dσ² = Σ dx̂·(x − μ)·(−½)σ⁻³)
          + dμ / m                             (through μ,   dμ = −Σ dx̂/σ)

Written with x̂, the three terms collapse into the boxed formula::

    ∂L/∂x = γ / (m·σ) · (m·g − Σg − x̂·Σ(g·x̂)),   ∂L/∂γ = Σ g·x̂,   ∂L/∂β = Σ g

(Σ over the batch and spatial axes). The tutorial's box prints √m where m belongs; the
``TutorialBoxedBatchNormOp`` below keeps that mistake visible, and ``compare`` catches it.

**Running statistics.** In training the layer also tracks ``running_mean`` and
``running_var`` for evaluation, moving by ``r ← (1 − momentum)·r + momentum·batch``.
The variance it stores is the **unbiased** σ²·m/(m − 1): the running statistics estimate
the population's variance, and the m values of a batch scatter less around their own mean μ
than around the true one (Bessel's correction); the normalization itself uses the biased σ²,
as torch does.

Contents: ``batch_norm`` (composed from primitives; the steps ``normalize`` and ``affine``
are shared with the other families), ``BatchNormOp`` / ``batch_norm_derived`` (one node, the
hand-derived backward in NumPy), ``TutorialBoxedBatchNormOp`` (wrong on purpose),
``BatchNorm1d`` / ``BatchNorm2d``. The fused fast kernel (``tinygrad_bn.analytic.batch_norm``)
is in ``fused.py``, tested equal to ``BatchNormOp``. Argument checks: ``checks.py``.
"""
from __future__ import annotations

import math

import numpy as np

from ..core.node import scope
from ..core.ops import Primitive
from ..core.tensor import Tensor
from . import fused, registry
from .checks import (as_input, check_batch_norm, compute_dtype, stat_array,
                     update_running)
from .modules import ChannelNormLayer

__all__ = ["batch_norm", "batch_norm_derived", "BatchNormOp", "TutorialBoxedBatchNormOp",
           "tutorial_boxed_batch_norm_derived", "BatchNorm1d", "BatchNorm2d"]


# ------------------------------------------------------- composed from primitives
def upcast(t, dtype):
    """``t`` (Tensor, ndarray or None) in the computation dtype ``dtype`` (a Cast node)."""
    return t if t is None or t.dtype == dtype else t.astype(dtype)


def param_view(p, ndim: int):
    """A per-channel parameter (C,) viewed as (C, 1, ..., 1) against an (N, C, *) input."""
    if p is None or ndim <= 2:
        return p
    return p.reshape((p.shape[0],) + (1,) * (ndim - 2))


def normalize(x: Tensor, axes: tuple, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """The composed statistics over ``axes`` (kept): returns (x̂, μ, σ²).

    μ = mean(x), σ² = mean((x - μ)²) (biased, two passes), σ = √(σ² + ε), x̂ = (x - μ) / σ.
    """
    mu = x.mean(axis=axes, keepdims=True).named("μ")
    d = (x - mu).named("x - μ")
    var = (d ** 2).mean(axis=axes, keepdims=True).named("σ²")
    sigma = (var + eps).sqrt().named("σ")
    xhat = (d / sigma).named("x̂")
    return xhat, mu, var


def normalize_with(x: Tensor, mean: np.ndarray, var: np.ndarray, eps: float) -> Tensor:
    """x̂ = (x - μ) / √(σ² + ε) with constant (running) statistics, broadcast against x."""
    d = (x - mean.astype(x.dtype, copy=False)).named("x - μ")
    sigma = np.sqrt(var.astype(x.dtype, copy=False) + x.dtype.type(eps))
    return (d / sigma).named("x̂")


def affine(xhat: Tensor, weight, bias, out_dtype=None) -> Tensor:
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
    the running statistics alone; float16 is normalized in float32 (see ``norms.checks``).
    """
    x = as_input(x, "batch_norm")
    c, m = check_batch_norm(x, running_mean, running_var, weight, bias, training, momentum,
                            eps)
    rm, rv = stat_array(running_mean), stat_array(running_var)
    nd = x.ndim
    out = x.dtype
    cd = compute_dtype(out)
    with scope("batch_norm", kind="norm"):
        xc = upcast(x, cd)
        if training:
            axes = (0,) + tuple(range(2, nd))
            xhat, mu, var = normalize(xc, axes, eps)
        else:
            shape = (c,) + (1,) * (nd - 2)
            xhat = normalize_with(xc, rm.reshape(shape), rv.reshape(shape), eps)
        y = affine(xhat, param_view(upcast(weight, cd), nd), param_view(upcast(bias, cd), nd),
                   out)
    if training and rm is not None and x.data.size:  # (torch leaves them alone for an empty
        # batch) last: a call that fails changes nothing
        update_running(rm, rv, mu.data.reshape(c), var.data.reshape(c), m, momentum)
    return y


# ------------------------------------------------- hand-derived: one node, plain NumPy
class BatchNormOp(Primitive):
    """BatchNorm as one node. Inputs (x, γ, β) (γ, β may be None); ``mean``, ``var``: the
    statistics per channel (the batch's, or the running ones with ``batch=False``).

    Backward: ``dx = γ·rstd/m · (m·g − Σg − x̂·Σ(g·x̂))``, ``dγ = Σ g·x̂``, ``dβ = Σ g``;
    with constant (running) statistics x̂ is an affine map of x and ``dx = γ·rstd·g``.
    First derivatives only; ``analytic.batch_norm`` (fused) also gives second ones.
    """

    op_name = "batch_norm"
    save_inputs = (0, 1)  # x (for its dtype) and γ

    @staticmethod
    def forward(ctx, x, weight, bias, mean, var, batch: bool, eps: float):
        cd = compute_dtype(x.dtype)
        shape = (-1,) + (1,) * (x.ndim - 2)  # per-channel values against (N, C, *)
        rstd = 1.0 / np.sqrt(np.asarray(var, cd).reshape(shape) + eps)
        xhat = (x.astype(cd) - np.asarray(mean, cd).reshape(shape)) * rstd
        ctx.xhat, ctx.rstd, ctx.batch = xhat, rstd, batch
        ctx.axes = (0,) + tuple(range(2, x.ndim))
        y = xhat if weight is None else xhat * weight.astype(cd).reshape(shape)
        y = y if bias is None else y + bias.astype(cd).reshape(shape)
        return y.astype(x.dtype, copy=False)

    @classmethod
    def backward(cls, ctx, g):
        if ctx._graph_mode:
            raise NotImplementedError("BatchNormOp gives first derivatives only; use "
                                      "tinygrad_bn.analytic.batch_norm for create_graph=True")
        x, w = ctx.inputs()
        xhat, rstd, axes = ctx.xhat, ctx.rstd, ctx.axes
        g = g.astype(xhat.dtype, copy=False)
        sum_g = g.sum(axis=axes, keepdims=True)  # = dβ
        sum_gx = (g * xhat).sum(axis=axes, keepdims=True)  # = dγ
        scale = rstd if w is None else rstd * w.astype(xhat.dtype).reshape(rstd.shape)
        m = xhat.size // max(rstd.size, 1)
        dxhat = cls.correct(g, xhat, sum_g, sum_gx, m) if ctx.batch else g
        dx = (scale * dxhat).astype(x.dtype, copy=False)
        dw = None if w is None else sum_gx.reshape(-1).astype(w.dtype)
        return dx, dw, sum_g.reshape(-1).astype(g.dtype if w is None else w.dtype)

    @staticmethod
    def correct(g, xhat, sum_g, sum_gx, m):
        """``(m·g − Σg − x̂·Σ(g·x̂)) / m``: g less its share in μ and in σ² (m = 0: empty)."""
        return (m * g - sum_g - xhat * sum_gx) / m if m else g


class TutorialBoxedBatchNormOp(BatchNormOp):
    """WRONG ON PURPOSE: the tutorial's boxed formula, √m where m belongs.

    ``dx = γ·rstd/√m · (√m·g − Σg − x̂·Σ(g·x̂))``: the two correction terms come out √m times
    too large (the derivation's 1/m from ∂μ/∂x and ∂σ²/∂x was written as 1/√m).
    """

    op_name = "batch_norm (tutorial's boxed formula)"

    @staticmethod
    def correct(g, xhat, sum_g, sum_gx, m):
        k = math.sqrt(m)  # WRONG: m belongs here
        return (k * g - sum_g - xhat * sum_gx) / k if m else g


def batch_norm_derived(x: Tensor, running_mean, running_var, weight=None, bias=None,
                       training: bool = False, momentum: float = 0.1, eps: float = 1e-5,
                       op=BatchNormOp) -> Tensor:
    """``batch_norm`` (same signature, checks and running statistics) as one ``op`` node with
    the hand-derived backward: the readable reference of the fused ``analytic.batch_norm``."""
    x = as_input(x, "batch_norm")
    c, m = check_batch_norm(x, running_mean, running_var, weight, bias, training, momentum,
                            eps)
    rm, rv = stat_array(running_mean), stat_array(running_var)
    mean, var = rm, rv
    if training:
        axes = (0,) + tuple(range(2, x.ndim))
        xc = x.data.astype(compute_dtype(x.dtype))
        with np.errstate(invalid="ignore", divide="ignore"):  # only for empty inputs
            mean = xc.sum(axis=axes) / m
            var = ((xc - mean.reshape((c,) + (1,) * (x.ndim - 2))) ** 2).sum(axis=axes) / m
    y = op.apply(x, weight, bias, mean=mean, var=var, batch=training, eps=float(eps))
    if training and rm is not None and x.data.size:  # last: a call that fails changes nothing
        update_running(rm, rv, mean, var, m, momentum)
    return y.named("y")


def tutorial_boxed_batch_norm_derived(*args, **kwargs) -> Tensor:
    """``batch_norm_derived`` with the tutorial's boxed backward — WRONG ON PURPOSE."""
    return batch_norm_derived(*args, op=TutorialBoxedBatchNormOp, **kwargs)


# ------------------------------------------------------------------------- the layers
class _BatchNorm(ChannelNormLayer):
    _function = "batch_norm"
    _ndims: tuple = ()
    _shapes = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *, bias: bool = True,
                 dtype=np.float32, analytic: bool = False):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, bias, dtype,
                         analytic)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim not in self._ndims:
            raise ValueError(f"{type(self).__name__}: expected input of shape {self._shapes}, "
                             f"got {x.ndim}-D input of shape {tuple(x.shape)}")
        nbt = self.num_batches_tracked
        count = self.training and self.track_running_stats and nbt is not None
        if self.momentum is not None:
            factor = self.momentum
        elif count:  # cumulative moving average over the batches seen so far
            factor = 1.0 / float(nbt.data + 1)
        else:
            factor = 0.0
        use_batch_stats = self.training or (self.running_mean is None
                                            and self.running_var is None)
        if self.training and not self.track_running_stats:
            return self._norm(x, None, None, self.weight, self.bias, use_batch_stats, factor,
                              self.eps)
        return self._call_updating(x, use_batch_stats, factor, count)


class BatchNorm1d(_BatchNorm):
    """Batch normalization over a batch of vectors or sequences.

    Input (N, C) or (N, C, L); output the same shape. Per channel c, in training:
    ``y = (x - μ_c) / √(σ²_c + eps) · weight_c + bias_c`` with μ_c and the **biased**
    variance σ²_c over N (and L); the running statistics move by
    ``r ← (1 - momentum)·r + momentum·batch`` using the **unbiased** variance
    (``momentum=None``: a cumulative average, factor 1 / num_batches_tracked). In eval mode
    (with ``track_running_stats``) the running statistics replace the batch ones.

    Parameters ``weight``, ``bias`` (C,) when ``affine`` (``bias=False`` drops the shift, as
    in torch 2.13); buffers ``running_mean``, ``running_var`` (C,) and ``num_batches_tracked``
    (int64 scalar) when ``track_running_stats``. A batch of one in training raises ValueError.
    """

    _ndims = (2, 3)
    _shapes = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalization over images: input (N, C, H, W), output the same shape.

    Per channel c the statistics are taken over N, H and W: normalization uses the
    **biased** variance, the running variance is updated with the **unbiased** one
    (see ``BatchNorm1d`` for the formulas, momentum and eval mode).
    """

    _ndims = (4,)
    _shapes = "(N, C, H, W)"


# ---------------------------------------------------------------------- registration
def _call(fn, x, weight, bias, training=True, running=None, eps=1e-5):
    rm, rv = running if running is not None and not training else (None, None)
    return fn(x, rm, rv, weight, bias, training=training, eps=eps)


def _mode(training: bool) -> str:
    return "train" if training else "eval"


registry.register(
    "batch_norm", short="batch", composed=batch_norm, derived=fused.batch_norm, call=_call,
    param_shape=lambda shape, s: (shape[1],), example=lambda rng: ((8, 4), {}),
    label=lambda shape, training, s: f"batch_norm ({_mode(training)})", running=True,
    module=lambda features, dtype=np.float32, analytic=False: BatchNorm1d(
        features, dtype=dtype, analytic=analytic))
registry.register(  # the hand-derived side is the plain op's one-line wrong variant
    "tutorial_boxed_batch_norm", composed=batch_norm,
    derived=tutorial_boxed_batch_norm_derived,
    call=_call, param_shape=lambda shape, s: (shape[1],), example=lambda rng: ((8, 4), {}),
    label=lambda shape, training, s: f"tutorial's boxed BN ({_mode(training)})",
    running=True, variant=True, wrong_dx=True)
