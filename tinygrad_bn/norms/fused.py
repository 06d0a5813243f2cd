"""Fused normalization layers: one graph node each, with the hand-derived backward.

Same functions and signatures as the composed ones in ``tinygrad_bn.nn.functional``::

    batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5)
    layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5)
    rms_norm(x, normalized_shape, weight=None, eps=None)
    group_norm(x, num_groups, weight=None, bias=None, eps=1e-5)
    instance_norm(x, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5)

Every norm normalizes over a set S of n positions and then applies a per-feature affine map::

    μ = mean_S(x),  σ² = mean_S((x - μ)²),  rstd = 1/√(σ² + ε),  x̂ = (x - μ)·rstd,
    y = γ·x̂ + β

σ² is the **biased** variance (two passes: the mean, then the mean of squared deviations);
running statistics track the **unbiased** one, σ²·n/(n-1), as torch does. With g = ∂L/∂y and
dx̂ = γ·g, the backward is::

    ∂L/∂x = rstd/n · (n·dx̂ − Σ_S dx̂ − x̂·Σ_S(dx̂·x̂))
    ∂L/∂γ = Σ g·x̂,   ∂L/∂β = Σ g        (summed over every axis but the feature axes)

For BatchNorm (and InstanceNorm) γ is constant over S and factors out:
``dx = γ·rstd/m · (m·dy − Σdy − x̂·Σ(dy·x̂))``, and Σdy, Σ(dy·x̂) are also dβ and dγ. RMSNorm
has no centring (r = √(mean_S(x²) + ε), x̂ = x/r) and loses the Σ_S dx̂ term:
``dx = (dx̂ − x̂·mean_S(dx̂·x̂)) / r``.

The forward pass is vectorized NumPy over a few passes of memory: it writes x̂ into a buffer it
owns and saves x̂ and rstd (per statistic), which is all the raw backward reads. Under
``grad(..., create_graph=True)`` the backward recomputes the same formula with Tensor ops from
the node's graph-connected inputs, so second derivatives (Hessian-vector products) are right.

In training mode, float32 and float64 inputs run the compiled loop kernels of ``_kernels.py``
when numba is installed (the ``fast`` extra): each array is read once per phase, and the node
saves μ and rstd instead of x̂ (the backward recomputes x̂ from the saved input). Without
numba, large inputs (at least ``_MIN_BLOCKED`` elements) go through a blocked version of the
NumPy kernels. Both cut the leading axis into blocks run on a small thread pool
(``_threads.py``; ``TINYGRAD_BN_THREADS`` or ``OMP_NUM_THREADS`` set the thread count), with
results that do not depend on the number of threads. See "the compiled fast path" and "the
blocked fast path" below.

These are the fast path. The readable versions — including the tutorial's boxed formula, wrong
on purpose — are in ``batch_norm.py`` and the other family files, tested equal to these.
"""
from __future__ import annotations

import functools

import numpy as np

from .._commit import commit
from .._jit import LOOP_DTYPES, kernels_wanted
from . import _threads
from .checks import (as_input, check_batch_norm, check_group_norm, check_instance_norm,
                     check_layer_norm, compute_dtype, instance_running, rms_eps,
                     stat_array, update_running)
from ..core.ops import Primitive
from ..core.tensor import Tensor

__all__ = ["batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm",
           "BatchNormOp", "LayerNormOp", "GroupNormOp", "InstanceNormOp", "RMSNormOp"]

_LETTERS = "abcdefgh"


class _Plan:
    """How x is viewed for one norm: ``vshape`` (x reshaped), ``raxes`` (the set S of one
    statistic, ``n`` values), ``ashape`` (γ/β viewed against ``vshape``), ``paxes`` (axes
    summed for dγ, dβ), ``pshape`` (γ's own shape), ``gamma_const`` (γ constant over S, so
    it factors out of the sums) and ``centred`` (False for RMSNorm)."""

    __slots__ = ("xshape", "vshape", "raxes", "sshape", "n", "ashape", "paxes", "pshape",
                 "gamma_const", "centred", "eps", "sub_r", "sub_p", "pextra",
                 "kshape", "kernel")

    def __init__(self, xshape, vshape, raxes, ashape, paxes, pshape, gamma_const, centred,
                 eps):
        self.xshape = tuple(xshape)
        self.vshape = tuple(vshape)
        self.raxes = tuple(raxes)
        self.sshape = tuple(1 if i in raxes else s for i, s in enumerate(vshape))
        n = 1
        for i in raxes:
            n *= vshape[i]
        self.n = n
        self.ashape = tuple(ashape)
        self.paxes = tuple(paxes)
        self.pshape = tuple(pshape)
        self.gamma_const = gamma_const
        self.centred = centred
        self.eps = eps
        letters = _LETTERS[:len(vshape)]
        self.sub_r = _einsum_sub(letters, raxes)
        self.sub_p = _einsum_sub(letters, paxes)
        # a per-statistic sum (raxes reduced away) summed over these axes gives dγ / dβ
        # when γ is constant over S (paxes ⊇ raxes)
        kept = [i for i in range(len(vshape)) if i not in raxes]
        self.pextra = tuple(j for j, i in enumerate(kept) if i in paxes)
        # the shape per-statistic sums are used in: when S is the leading axes, the reduced
        # result already broadcasts against vshape and needs no reshape
        lead = self.raxes == tuple(range(len(self.raxes)))
        self.kshape = tuple(vshape[i] for i in kept) if lead else self.sshape
        self.kernel = _kernel_layout(self.vshape, self.raxes)


def _kernel_layout(vshape: tuple, raxes: tuple) -> tuple:
    """How the compiled kernels (``_kernels.py``) see x: ``(kind, view, period, d, l)``.

    ``"columns"``: BatchNorm of (N, C); ``"channels"``: BatchNorm of (N, C, L) as (N·C, L);
    ``"rows"``: one statistic per row of ``view``, γ as (P, d) (P = ``period``), each value
    for l consecutive positions. ``None`` for a layout they do not cover."""
    if raxes == (0,) and len(vshape) == 2:  # BatchNorm (N, C)
        return "columns", vshape, 0, 1, 1
    if raxes == (0, 2) and len(vshape) == 3:  # BatchNorm (N, C, L)
        return "channels", (vshape[0] * vshape[1], vshape[2]), 0, 1, 1
    if raxes == (1,) and len(vshape) == 2:  # LayerNorm, RMSNorm: (outer, features)
        return "rows", vshape, 1, vshape[1], 1
    if raxes == (2, 3) and len(vshape) == 4:  # GroupNorm: (N, G, C/G, L)
        return "rows", (vshape[0] * vshape[1], vshape[2] * vshape[3]), vshape[1], vshape[2], \
            vshape[3]
    if raxes == (2,) and len(vshape) == 3:  # InstanceNorm: (N, C, L)
        return "rows", (vshape[0] * vshape[1], vshape[2]), vshape[1], 1, vshape[2]
    return None


def _einsum_sub(letters: str, axes: tuple) -> str:
    """``'abc,abc->b'``: Σ a·b over ``axes``."""
    keep = "".join(c for i, c in enumerate(letters) if i not in axes)
    return f"{letters},{letters}->{keep}"


@functools.lru_cache(maxsize=256)
def _channel_plan(xshape: tuple, eps: float, per_instance: bool) -> _Plan:
    """BatchNorm (statistics per channel) or InstanceNorm (per sample and channel)."""
    n, c = xshape[0], xshape[1]
    if len(xshape) == 2 and not per_instance:
        plan = _Plan(xshape, (n, c), (0,), (c,), (0,), (c,), True, True, eps)
    else:
        l = 1
        for s in xshape[2:]:
            l *= s
        raxes = (2,) if per_instance else (0, 2)
        plan = _Plan(xshape, (n, c, l), raxes, (c, 1), (0, 2), (c,), True, True, eps)
    return plan


@functools.lru_cache(maxsize=256)
def _trailing_plan(xshape: tuple, k: int, eps: float, centred: bool) -> _Plan:
    """LayerNorm / RMSNorm over the last ``k`` axes."""
    ns = xshape[len(xshape) - k:]
    inner = 1
    for s in ns:
        inner *= s
    outer = 1
    for s in xshape[:len(xshape) - k]:
        outer *= s
    return _Plan(xshape, (outer, inner), (1,), (inner,), (0,), ns, False, centred, eps)


@functools.lru_cache(maxsize=256)
def _group_plan(xshape: tuple, groups: int, eps: float) -> _Plan:
    n, c = xshape[0], xshape[1]
    l = 1
    for s in xshape[2:]:
        l *= s
    d = c // groups
    return _Plan(xshape, (n, groups, d, l), (2, 3), (groups, d, 1), (0, 3), (c,), False,
                 True, eps)


# ------------------------------------------------------------------------- the node
def _view(a, shape: tuple):
    """``a.reshape(shape)``, skipped when ``a`` already has that shape."""
    return a if a.shape == shape else a.reshape(shape)


_F16 = np.dtype(np.float16)


def _up(a):
    """float16 → float32 (torch's accumulation type); other arrays (and None) unchanged."""
    return a.astype(np.float32) if a is not None and a.dtype is _F16 else a


def _statistics(xv, plan: _Plan, stats):
    """``(mean, var, x - mean, rstd)`` of the view ``xv``: two passes over the batch, or the
    given constant (running) statistics."""
    n = plan.n
    if stats is None:  # batch statistics, two passes
        if plan.centred:
            mean = np.add.reduce(xv, axis=plan.raxes, keepdims=True)
            mean /= n
            xh = np.subtract(xv, mean)
            var = _view(np.einsum(plan.sub_r, xh, xh), plan.kshape)
        else:
            mean = xh = None
            var = _view(np.einsum(plan.sub_r, xv, xv), plan.kshape)
        var /= n
    else:  # constant (running) statistics
        mean, var = stats
        xh = np.subtract(xv, mean)
    rstd = var + plan.eps
    np.sqrt(rstd, out=rstd)
    np.divide(1.0, rstd, out=rstd)
    return mean, var, xh, rstd


def _forward(ctx, x, w, b, plan: _Plan, stats=None, running=None):
    """Fused forward on ndarrays; saves x̂ (a buffer it owns) and rstd.

    A float16 input is normalized in float32 and the output rounded once (as torch); an
    empty input gives an empty output (its statistics are nan, no warning)."""
    vshape = plan.vshape
    out_dtype = x.dtype
    xv = _view(x, vshape)
    if stats is None and _USE_KERNELS and _kernel_fits(xv, w, b, plan):  # compiled loops
        kernels = _load_kernels()
        if kernels is not None:
            return _kernel_forward(ctx, xv, w, b, plan, running, kernels)
    if stats is None and xv.size >= _MIN_BLOCKED and _blockable(plan):  # blocks, threads
        return _blocked_forward(ctx, xv, w, b, plan, running, out_dtype)
    if x.dtype is _F16:  # computed in float32, rounded once at the end (as torch)
        xv, w, b = _up(xv), _up(w), _up(b)
    if xv.size:
        mean, var, xh, rstd = _statistics(xv, plan, stats)
    else:  # an empty input: nan statistics, quietly (as torch)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean, var, xh, rstd = _statistics(xv, plan, stats)
    if xh is None:
        xh = np.multiply(xv, rstd)
    else:
        np.multiply(xh, rstd, out=xh)
    if running is not None:
        running(mean, var)
    if w is None and b is None:
        y = _view(xh, plan.xshape)
        if y.dtype != out_dtype:
            y = y.astype(out_dtype)
    else:
        ydt = np.result_type(xh, *(p for p in (w, b) if p is not None))
        y = np.empty(plan.xshape, dtype=out_dtype)
        _affine(xh, None if w is None else _view(w, plan.ashape),
                None if b is None else _view(b, plan.ashape), _view(y, vshape),
                None if ydt == out_dtype else np.empty(vshape, ydt), ydt, out_dtype)
    ctx.save_for_backward(xh, rstd)
    ctx.plan = plan
    ctx.stats = stats
    ctx.blocked = False
    return y


def _backward(ctx, g):
    """dx, dγ, dβ: fused NumPy in raw mode, Tensor ops from the inputs in graph mode."""
    plan = ctx.plan
    need = ctx.needs_input_grad
    if ctx._graph_mode:
        x, w, b = ctx.inputs()
        return _graph_backward(x, w, b, g, plan, ctx.stats, need)
    if getattr(ctx, "kernel", False):  # x̂ is recomputed from x inside the loops
        mean, rstd = ctx.saved_tensors
        x, w, _ = ctx.inputs()
        return _kernel_backward(plan, need, x, w, mean, rstd, g, _load_kernels())
    xh, rstd = ctx.saved_tensors
    x, w, b = ctx.inputs()
    gv = _view(g, plan.vshape)
    if getattr(ctx, "blocked", False):  # float16 blocks are widened one at a time inside
        dx, dw, db = _blocked_backward(plan, need, xh, rstd, _up(w), gv)
        return (_cast(dx, x), _cast(dw, w), _cast(db, b))
    if x.dtype is not _F16:
        return _raw_backward(plan, need, ctx.stats is None, xh, rstd, w, gv)
    dx, dw, db = _raw_backward(plan, need, ctx.stats is None, xh, rstd, _up(w), _up(gv))
    # float16 inputs were computed in float32: each gradient in its input's dtype
    return (_cast(dx, x), _cast(dw, w), _cast(db, b))


def _cast(grad, inp):
    """``grad`` (ndarray or Tensor) in ``inp``'s dtype."""
    if grad is None or inp is None or grad.dtype is inp.dtype or grad.dtype == inp.dtype:
        return grad
    return grad.astype(inp.dtype)


def _raw_backward(plan: _Plan, need, batch: bool, xh, rstd, w, gv):
    """The fused backward on ndarrays (``gv``: the output gradient viewed as ``vshape``)."""
    wa = None if w is None else _view(w, plan.ashape)
    factored = plan.gamma_const  # γ constant over S: keep it out of the sums
    h = gv if (factored or wa is None) else gv * wa  # dx̂ (up to a factored γ)
    sh = shx = None
    if need[0] and batch:
        shx = np.einsum(plan.sub_r, h, xh)  # Σ_S dx̂·x̂, one value per statistic
        if plan.centred:
            sh = np.add.reduce(h, axis=plan.raxes)  # Σ_S dx̂
    dx = dw = db = None
    if need[1]:
        if factored and shx is not None:
            dw = np.add.reduce(shx, axis=plan.pextra) if plan.pextra else shx
        else:
            dw = np.einsum(plan.sub_p, gv, xh)
        if dw.shape != plan.pshape:
            dw = dw.reshape(plan.pshape)
    if need[2]:
        if factored and sh is not None:
            db = np.add.reduce(sh, axis=plan.pextra) if plan.pextra else sh
        else:
            db = np.add.reduce(gv, axis=plan.paxes)
        if db.shape != plan.pshape:
            db = db.reshape(plan.pshape)
    if need[0]:
        scale = rstd * wa if (factored and wa is not None) else rstd
        dx = np.empty(plan.xshape, dtype=xh.dtype)
        dxv = _view(dx, plan.vshape)
        if batch:  # scale · (dx̂ − Σ_S dx̂ / n − x̂ · Σ_S(dx̂·x̂) / n)
            k = 1.0 / plan.n if plan.n else 0.0  # n = 0: dx is empty
            np.multiply(xh, _view(shx * -k, plan.kshape), out=dxv)
            np.add(dxv, h, out=dxv)
            if sh is not None:
                np.subtract(dxv, _view(sh * k, plan.kshape), out=dxv)
            np.multiply(dxv, scale, out=dxv)
        else:  # constant statistics: an affine map of x
            np.multiply(h, scale, out=dxv)
    return dx, dw, db


# ------------------------------------------------------------ the blocked fast path
# A large input is cut into blocks of its leading axis (contiguous, each small enough to stay
# in cache), so that a block is read from memory once per phase and every operation on it
# after the first runs in cache, instead of one pass over the whole array per operation.
#
# * LayerNorm, GroupNorm, InstanceNorm, RMSNorm: a block of samples holds whole statistics;
#   mean, variance, x̂ and y (in backward Σdx̂, Σdx̂·x̂ and dx) are computed block by block.
# * BatchNorm: the statistics run across the blocks. Phase 1 sums d = x − K and d² per block,
#   with K the mean of the first block (a shift that keeps the sums well conditioned:
#   (μ − K)² ≤ σ²·blocks, so the variance E[d²] − E[d]² loses at most a few bits for the
#   block count); the per-block sums are added in float64. Phase 2 writes x̂ and y. Backward:
#   phase 1 sums dy and dy·x̂ per block, phase 2 writes dx.
# * Operands that are the same for every block (γ, β, and BatchNorm's statistics) are tiled
#   to a whole block once: NumPy's loops run about 2.5x faster on operands of one shape than
#   on a broadcast row.
#
# Blocks run on the thread pool of ``_threads``. Their boundaries depend only on the shape,
# and partial results are combined in block order, so the result does not depend on the
# number of threads.

_MIN_BLOCKED = 1 << 20  # elements (4 MB of float32): smaller inputs fit in cache and take
                        # the plain path, single-threaded (no thread overhead)
_BLOCK_ELEMS = 1 << 18  # elements per block at most (1 MB of float32; measured best here)
_MIN_BLOCKS = 4  # at least this many blocks (when axis 0 allows): work for every thread


def _blocks(plan: _Plan) -> tuple:
    """``(length, count)``: blocks of ``length`` along axis 0 (the last one shorter)."""
    vshape = plan.vshape
    unit = 1
    for s in vshape[1:]:
        unit *= s
    length = min(max(1, _BLOCK_ELEMS // max(unit, 1)), -(-vshape[0] // _MIN_BLOCKS))
    return length, -(-vshape[0] // length)


def _full_rank(a, plan: _Plan):
    """γ or β viewed with as many axes as ``vshape`` (None stays None)."""
    if a is None:
        return None
    a = _view(a, plan.ashape)
    return a.reshape((1,) * (len(plan.vshape) - a.ndim) + a.shape)


def _cut(a, lo: int, hi: int):
    """``a[lo:hi]`` (an array of size 1 on axis 0 is shared by every block)."""
    return a if a is None or a.shape[0] == 1 else a[lo:hi]


def _tile(v, bshape: tuple):
    """``v`` (size 1 on axis 0) repeated to a contiguous block: NumPy's loops run about 2.5x
    faster on operands of one shape than on a broadcast row."""
    return np.ascontiguousarray(np.broadcast_to(v, bshape))


def _tile_shared(v, bshape: tuple):
    """γ or β (full rank) as a block: tiled when it is shared by every block (size 1 on
    axis 0); None stays None."""
    if v is None:
        return None
    return _tile(v, bshape) if v.shape[0] == 1 else v


def _blockable(plan: _Plan) -> bool:
    """Blocks along axis 0 work when it is not reduced, or for BatchNorm (γ constant over S,
    centred) when it is."""
    return 0 not in plan.raxes or (plan.gamma_const and plan.centred)


def _affine(xhb, wb, bb, yb, tmp, ydt, out_dtype):
    """``yb = xhb·wb + bb``; a float16 output is computed in float32 and rounded once."""
    t = yb if ydt == out_dtype else tmp
    if wb is not None:
        np.multiply(xhb, wb, out=t)
    else:
        np.copyto(t, xhb)
    if bb is not None:
        np.add(t, bb, out=t)
    if t is not yb:
        np.copyto(yb, t, casting="unsafe")


def _blocked_forward(ctx, xv, w, b, plan: _Plan, running, out_dtype):
    """The forward of ``_forward`` (batch statistics), block by block."""
    f16 = xv.dtype is _F16
    cdt = np.dtype(np.float32) if f16 else xv.dtype  # x̂ and the statistics' dtype
    w, b = _full_rank(_up(w), plan), _full_rank(_up(b), plan)
    length, count = _blocks(plan)
    rows = plan.vshape[0]
    xh = np.empty(plan.vshape, cdt)
    affine = w is not None or b is not None
    ydt = np.result_type(cdt, *(p for p in (w, b) if p is not None))
    y = np.empty(plan.vshape, out_dtype) if affine else None
    raxes, n, eps = plan.raxes, plan.n, plan.eps

    def rstd_of(v):
        r = v + eps
        np.sqrt(r, out=r)
        return np.divide(1.0, r, out=r)

    if 0 in raxes:  # BatchNorm: statistics across blocks
        bshape = (length,) + plan.vshape[1:]
        x0 = _up(xv[:length])
        pivot = _tile(np.add.reduce(x0, axis=raxes, keepdims=True) / (plan.n * length // rows),
                      bshape)

        def phase1(i):  # Σ d and Σ d² of d = x − K, K the first block's mean
            lo, hi = i * length, min(i * length + length, rows)
            xb = _cut(xv, lo, hi)
            d = np.subtract(xb, pivot[:hi - lo], dtype=cdt)
            s1 = np.add.reduce(d, axis=raxes, keepdims=True)
            return s1, np.einsum(plan.sub_r, d, d).reshape(s1.shape)

        parts = _threads.run_blocks(phase1, count)
        s1 = _sum_blocks([p[0].astype(np.float64) for p in parts]) / n  # E[x − K]
        s2 = _sum_blocks([p[1].astype(np.float64) for p in parts]) / n  # E[(x − K)²]
        mean = (pivot[:1] + s1).astype(cdt)
        var = np.maximum(s2 - s1 * s1, 0.0).astype(cdt)
        rstd = rstd_of(var)
        t_mean, t_rstd = _tile(mean, bshape), _tile(rstd, bshape)
        t_w = None if w is None else _tile(w, bshape)
        t_b = None if b is None else _tile(b, bshape)

        def phase2(i):
            lo, hi = i * length, min(i * length + length, rows)
            xb = _cut(xv, lo, hi)
            xhb = xh[lo:hi]
            r = hi - lo
            np.subtract(xb, t_mean[:r], out=xhb, dtype=cdt)
            np.multiply(xhb, t_rstd[:r], out=xhb)
            if affine:
                _affine(xhb, None if t_w is None else t_w[:r], None if t_b is None else t_b[:r],
                        y[lo:hi], np.empty(xhb.shape, cdt) if f16 else None, ydt, out_dtype)

        _threads.run_blocks(phase2, count)
    else:  # each block holds whole statistics
        mean = np.empty(plan.sshape, cdt) if plan.centred else None
        var = np.empty(plan.sshape, cdt)
        rstd = np.empty(plan.sshape, cdt)
        bshape = (length,) + plan.vshape[1:]
        w, b = _tile_shared(w, bshape), _tile_shared(b, bshape)

        def block(i):
            lo, hi = i * length, min(i * length + length, rows)
            xb = _cut(xv, lo, hi)
            if f16:
                xb = xb.astype(np.float32)
            xhb = xh[lo:hi]
            if plan.centred:
                m = np.add.reduce(xb, axis=raxes, keepdims=True)
                m /= n
                np.subtract(xb, m, out=xhb)
                mean[lo:hi] = m
                v = np.einsum(plan.sub_r, xhb, xhb)
            else:
                v = np.einsum(plan.sub_r, xb, xb)
            v = v.reshape(var[lo:hi].shape)
            v /= n
            sq = np.empty(xhb.shape, cdt) if (affine and ydt != out_dtype) else None
            var[lo:hi] = v
            r = rstd_of(v)
            rstd[lo:hi] = r
            np.multiply(xhb if plan.centred else xb, r, out=xhb)
            if affine:
                r = hi - lo
                _affine(xhb, None if w is None else w[:r], None if b is None else b[:r],
                        y[lo:hi], sq, ydt, out_dtype)

        _threads.run_blocks(block, count)
    if running is not None:
        running(mean, var)
    if not affine:
        y = xh if xh.dtype == out_dtype else xh.astype(out_dtype)
    ctx.save_for_backward(xh, rstd)
    ctx.plan = plan
    ctx.stats = None
    ctx.blocked = True
    return _view(y, plan.xshape)


def _sum_blocks(parts: list):
    """The sum of equally shaped partial sums, added in block order."""
    total = parts[0].copy()
    for p in parts[1:]:
        total += p
    return total


def _blocked_backward(plan: _Plan, need, xh, rstd, w, gv):
    """``_raw_backward`` (batch statistics), block by block; ``w`` in the compute dtype."""
    wa = _full_rank(w, plan)
    factored = plan.gamma_const
    raxes, paxes = plan.raxes, plan.paxes
    length, count = _blocks(plan)
    rows = plan.vshape[0]
    k = 1.0 / plan.n
    dx = np.empty(plan.vshape, xh.dtype) if need[0] else None

    def grad_block(i):
        lo, hi = i * length, min(i * length + length, rows)
        gb = _cut(gv, lo, hi)
        return (gb.astype(np.float32) if gb.dtype is _F16 else gb), xh[lo:hi], lo, hi

    def write_dx(xhb, h, shx, sh, scale, dxb):
        """dxb = scale · (dx̂ − Σ_S dx̂ / n − x̂ · Σ_S(dx̂·x̂) / n)."""
        np.multiply(xhb, shx * -k, out=dxb)
        np.add(dxb, h, out=dxb)
        if sh is not None:
            np.subtract(dxb, sh * k, out=dxb)
        np.multiply(dxb, scale, out=dxb)

    if 0 in raxes:  # BatchNorm: Σdy, Σdy·x̂ across blocks, then dx
        def phase1(i):
            gb, xhb, _, _ = grad_block(i)
            s1 = np.add.reduce(gb, axis=raxes, keepdims=True)
            return s1, np.einsum(plan.sub_r, gb, xhb).reshape(s1.shape)

        parts = _threads.run_blocks(phase1, count)
        sh = _sum_blocks([p[0] for p in parts])  # Σ dy = dβ
        shx = _sum_blocks([p[1] for p in parts])  # Σ dy·x̂ = dγ
        dw = shx.reshape(plan.pshape) if need[1] else None
        db = sh.reshape(plan.pshape) if need[2] else None
        if need[0]:  # dx = scale · (dy − Σdy / n − x̂ · Σdy·x̂ / n)
            bshape = (length,) + plan.vshape[1:]
            scale = rstd if wa is None else rstd * wa
            t_a = _tile(shx * -k, bshape)
            t_c = _tile(sh * k, bshape)
            t_s = _tile(scale, bshape)

            def phase2(i):
                gb, xhb, lo, hi = grad_block(i)
                r = hi - lo
                dxb = dx[lo:hi]
                np.multiply(xhb, t_a[:r], out=dxb)
                np.add(dxb, gb, out=dxb)
                np.subtract(dxb, t_c[:r], out=dxb)
                np.multiply(dxb, t_s[:r], out=dxb)

            _threads.run_blocks(phase2, count)
        return (None if dx is None else dx.reshape(plan.xshape)), dw, db

    wa = _tile_shared(wa, (length,) + plan.vshape[1:])

    def block(i):  # whole statistics per block
        gb, xhb, lo, hi = grad_block(i)
        wb = None if wa is None else wa[:hi - lo]
        h = gb if (factored or wb is None) else np.multiply(gb, wb)  # dx̂ (γ factored out)
        dwp = dbp = None
        if need[1]:
            dwp = np.einsum(plan.sub_p, gb, xhb)  # Σ_paxes dy·x̂ of this block
        if need[2]:
            dbp = np.add.reduce(gb, axis=paxes)
        if need[0]:
            rb = rstd[lo:hi]
            shx = np.einsum(plan.sub_r, h, xhb).reshape(rb.shape)  # Σ_S dx̂·x̂
            sh = np.add.reduce(h, axis=raxes, keepdims=True) if plan.centred else None
            write_dx(xhb, h, shx, sh, rb * wb if (factored and wb is not None) else rb,
                     dx[lo:hi])
        return dwp, dbp

    parts = _threads.run_blocks(block, count)
    dw = _sum_blocks([p[0] for p in parts]).reshape(plan.pshape) if need[1] else None
    db = _sum_blocks([p[1] for p in parts]).reshape(plan.pshape) if need[2] else None
    return (None if dx is None else dx.reshape(plan.xshape)), dw, db


# ---------------------------------------------------------- the compiled fast path
# With numba installed (the "fast" extra), training-mode norms of float32/float64 inputs run
# the loop kernels of ``_kernels.py``: each array is read once per phase (twice in all for a
# BatchNorm, whose statistics span the blocks) instead of once per NumPy operation, and the
# node keeps μ and rstd instead of an x̂ array. Blocks of the leading axis run on the thread
# pool; block boundaries depend only on the shape and partial sums are added in block order,
# so results do not depend on the number of threads.

def _load_kernels():
    """The kernel module, imported on first use; None (and the NumPy kernels from then on)
    when numba fails to import."""
    global _USE_KERNELS, _KERNELS
    if _KERNELS is None:
        try:
            from . import _kernels
        except ImportError:  # pragma: no cover - a broken numba installation
            _kernels = None
        if _kernels is None or not _kernels.available:
            _USE_KERNELS = False
            return None
        _KERNELS = _kernels
    return _KERNELS


_KERNELS = None
_USE_KERNELS = kernels_wanted()


def _kernel_fits(xv, w, b, plan: _Plan) -> bool:
    """The compiled kernels cover this call: a layout they know, a non-empty float32/float64
    input, and γ, β (when given) of the same dtype."""
    dt = xv.dtype
    return (plan.kernel is not None and xv.size > 0 and dt in LOOP_DTYPES
            and (w is None or w.dtype == dt) and (b is None or b.dtype == dt))


def _kernel_bounds(plan: _Plan):
    """``(count, bounds)``: the blocks of ``_blocks`` (a single one when the input fits in
    cache), and ``bounds(i)``, block i's rows of the kernel's view (a sample of the leading
    axis is several rows of it for "channels" and GroupNorm, InstanceNorm)."""
    view = plan.kernel[1]
    rows = view[0]
    if rows * view[1] < _MIN_BLOCKED:  # one block, on the calling thread
        return 1, lambda i: (0, rows)
    length, count = _blocks(plan)
    scale = rows // plan.vshape[0]

    def bounds(i):
        return i * length * scale, min(rows, (i * length + length) * scale)

    return count, bounds


def _kernel_params(a, plan: _Plan, fill: float, dt):
    """γ or β for the "rows" kernels as (P, d); ``fill`` everywhere when absent."""
    _, _, period, d, _ = plan.kernel
    if a is None:
        return np.full((period, d), fill, dt)
    return np.ascontiguousarray(a, dtype=dt).reshape(period, d)


def _kernel_forward(ctx, xv, w, b, plan: _Plan, running, kern):
    """The forward of ``_forward`` (batch statistics) with the compiled kernels."""
    kind, view, _, _, _ = plan.kernel
    dt = xv.dtype
    x2 = np.ascontiguousarray(xv).reshape(view)
    out = np.empty(plan.xshape, dt)
    y = out.reshape(view)
    count, bounds = _kernel_bounds(plan)
    if kind == "rows":  # one statistic per row
        rows = view[0]
        mean, var, rstd = np.empty(rows), np.empty(rows), np.empty(rows)
        wk, bk = _kernel_params(w, plan, 1.0, dt), _kernel_params(b, plan, 0.0, dt)
        seg = plan.kernel[4]
        _threads.run_blocks(lambda i: kern.rows_forward(
            x2, wk, bk, seg, plan.eps, plan.centred, *bounds(i), y, mean, var, rstd), count)
    else:  # BatchNorm ("columns" or "channels"): per-channel sums across blocks, then y
        k = getattr(kern, kind + "_sums")
        c = plan.vshape[1]
        pivot = np.array(xv[0] if kind == "columns" else xv[0, :, 0], dtype=dt)

        def sums(i):
            s1, s2 = np.zeros(c), np.zeros(c)
            k(x2, pivot, *bounds(i), s1, s2)
            return s1, s2

        parts = _threads.run_blocks(sums, count)
        s1 = _sum_blocks([p[0] for p in parts]) / plan.n  # E[x − K]
        s2 = _sum_blocks([p[1] for p in parts]) / plan.n  # E[(x − K)²]
        var = np.maximum(s2 - s1 * s1, 0.0)
        mean = (pivot + s1).astype(dt)
        rstd = (1.0 / np.sqrt(var + plan.eps)).astype(dt)
        scale = rstd if w is None else rstd * w.reshape(c)
        shift = np.zeros(c, dt) if b is None else b.reshape(c)
        k = getattr(kern, kind + "_apply")
        _threads.run_blocks(lambda i: k(x2, mean, scale, shift, *bounds(i), y), count)
    if running is not None:
        running(_view(mean.astype(dt, copy=False), plan.sshape) if plan.centred else None,
                _view(var.astype(dt), plan.sshape))
    ctx.save_for_backward(mean, rstd)
    ctx.plan = plan
    ctx.stats = None
    ctx.kernel = True
    return out


def _kernel_backward(plan: _Plan, need, x, w, mean, rstd, g, kern) -> tuple:
    """dx, dγ, dβ with the compiled kernels, reading the saved input x."""
    kind, view, period, d, l = plan.kernel
    dt = x.dtype
    x2 = np.ascontiguousarray(x).reshape(view)
    g2 = np.ascontiguousarray(g, dtype=dt).reshape(view)
    count, bounds = _kernel_bounds(plan)
    # dx is allocated in x's shape (an array of its own, which the engine can hand to x.grad
    # without a copy) and written through the kernel's view of it
    out = np.empty(plan.xshape, dt) if need[0] else None
    dx = out.reshape(view) if need[0] else np.empty((0, 0), dt)
    if kind == "rows":
        wk = _kernel_params(w, plan, 1.0, dt)

        def block(i):
            dwp, dbp = np.zeros(wk.shape), np.zeros(wk.shape)
            kern.rows_backward(x2, g2, wk, mean, rstd, l, plan.centred, need[0], *bounds(i),
                               dx, dwp, dbp)
            return dwp, dbp

        parts = _threads.run_blocks(block, count)
        dw = _sum_blocks([p[0] for p in parts])
        db = _sum_blocks([p[1] for p in parts])
    else:  # BatchNorm: Σg and Σg·x̂ across blocks, then dx
        c = plan.vshape[1]
        k = getattr(kern, kind + "_grad_sums")

        def sums(i):
            sg, sgd = np.zeros(c), np.zeros(c)
            k(x2, g2, mean, *bounds(i), sg, sgd)
            return sg, sgd

        parts = _threads.run_blocks(sums, count)
        db = _sum_blocks([p[0] for p in parts])  # Σ dy = dβ
        dw = _sum_blocks([p[1] for p in parts]) * rstd  # Σ dy·(x − μ)·rstd = Σ dy·x̂ = dγ
        if need[0]:
            scale = rstd if w is None else rstd * w.reshape(c)
            cg, kx = (db / plan.n).astype(dt), (dw * rstd / plan.n).astype(dt)
            k = getattr(kern, kind + "_dx")
            _threads.run_blocks(lambda i: k(x2, g2, mean, scale, cg, kx, *bounds(i), dx),
                                count)
    dw = dw.astype(dt).reshape(plan.pshape) if need[1] else None
    db = db.astype(dt).reshape(plan.pshape) if need[2] else None
    return out, dw, db


def backward_formula(x, w, g, plan: _Plan, stats=None, need=(True, True, True)) -> tuple:
    """The hand-derived backward written with operations ndarrays and Tensors share.

    Recomputes x̂ and rstd from ``x`` so that, on Tensors, the result is differentiable again
    (``create_graph=True``); on ndarrays it is a plain (unfused) reference implementation.
    """
    xv = _up(x.reshape(plan.vshape))
    gv = _up(g.reshape(plan.vshape))
    w = _up(w)
    r = plan.raxes
    if stats is None:
        xc = xv - xv.mean(axis=r, keepdims=True) if plan.centred else xv
        var = (xc * xc).mean(axis=r, keepdims=True)
    else:
        mean, var = stats
        xc = xv - mean
    rstd = (var + plan.eps) ** -0.5
    xh = xc * rstd
    h = gv * w.reshape(plan.ashape) if w is not None else gv
    dx = dw = db = None
    if need[0]:
        if stats is None:
            k = 1.0 / plan.n if plan.n else 0.0  # n = 0: dx is empty
            t = h - xh * ((h * xh).sum(axis=r, keepdims=True) * k)
            if plan.centred:
                t = t - h.sum(axis=r, keepdims=True) * k
            dx = (t * rstd).reshape(plan.xshape)
        else:
            dx = (h * rstd).reshape(plan.xshape)
    if need[1]:
        dw = (gv * xh).sum(axis=plan.paxes).reshape(plan.pshape)
    if need[2]:
        db = gv.sum(axis=plan.paxes).reshape(plan.pshape)
    return dx, dw, db


def _graph_backward(x, w, b, g, plan: _Plan, stats, need) -> tuple:
    """``backward_formula`` on Tensors, each gradient cast to its input's dtype."""
    dx, dw, db = backward_formula(x, w, g, plan, stats, need)
    return (_cast(dx, x), _cast(dw, w), _cast(db, b))


class _FusedNorm(Primitive):
    """A normalization as one node: inputs (x, weight, bias), weight/bias may be None."""

    save_inputs = (0, 1, 2)
    forward = staticmethod(_forward)
    backward = staticmethod(_backward)


class BatchNormOp(_FusedNorm):
    """BatchNorm node; statistics per channel over m = N·L values.

    dx = γ·rstd/m · (m·dy − Σdy − x̂·Σ(dy·x̂)),  dγ = Σ dy·x̂,  dβ = Σ dy  (sums over N, L).
    """

    op_name = "batch_norm"


class InstanceNormOp(_FusedNorm):
    """InstanceNorm node; statistics per (sample, channel) over the L positions.

    dx = γ·rstd/L · (L·dy − Σ_L dy − x̂·Σ_L(dy·x̂)),  dγ = Σ_{N,L} dy·x̂,  dβ = Σ_{N,L} dy.
    """

    op_name = "instance_norm"


class LayerNormOp(_FusedNorm):
    """LayerNorm node; statistics per sample over the n values of ``normalized_shape``.

    dx̂ = γ·dy;  dx = rstd/n · (n·dx̂ − Σ dx̂ − x̂·Σ(dx̂·x̂));
    dγ = Σ_batch dy·x̂,  dβ = Σ_batch dy.
    """

    op_name = "layer_norm"


class GroupNormOp(_FusedNorm):
    """GroupNorm node; statistics per (sample, group) over the n = (C/G)·L values.

    dx̂ = γ·dy;  dx = rstd/n · (n·dx̂ − Σ dx̂ − x̂·Σ(dx̂·x̂));
    dγ = Σ_{N,L} dy·x̂,  dβ = Σ_{N,L} dy.
    """

    op_name = "group_norm"


class RMSNormOp(_FusedNorm):
    """RMSNorm node; x̂ = x/r with r = √(mean(x²) + ε) over ``normalized_shape``.

    dx̂ = γ·dy;  dx = (dx̂ − x̂·mean(dx̂·x̂)) / r;  dγ = Σ_batch dy·x̂.
    """

    op_name = "rms_norm"


# ----------------------------------------------------------------------- public API
def _const_stats(rm, rv, dtype, shape) -> tuple:
    """Snapshot of running statistics, cast to the dtype the input is normalized in (float32
    for float16) and shaped to broadcast."""
    dtype = compute_dtype(dtype)
    return (np.array(rm, dtype=dtype).reshape(shape), np.array(rv, dtype=dtype).reshape(shape))


class _Pending:
    """New running statistics computed inside the forward, written after the node exists:
    BatchNorm's batch statistics (``update``, for ``update_running``: the forward hands over
    its mean and variance arrays and changes them no more) or InstanceNorm's ``commit``
    pairs."""

    __slots__ = ("pairs", "update")

    def __init__(self):
        self.pairs = self.update = None

    def commit(self) -> None:
        if self.update:
            update_running(*self.update)
        elif self.pairs:
            commit(*self.pairs)


def _named(y: Tensor) -> Tensor:
    y.name = "y"
    return y


def _batch_norm(op, x, running_mean, running_var, weight, bias, training, momentum,
                eps) -> Tensor:
    x = as_input(x, "batch_norm")
    c, m = check_batch_norm(x, running_mean, running_var, weight, bias, training, momentum,
                            eps)
    rm, rv = stat_array(running_mean), stat_array(running_var)
    plan = _channel_plan(x.shape, float(eps), False)
    stats = running = None
    pending = _Pending()
    if not training:
        stats = _const_stats(rm, rv, x.dtype, (c,) + (1,) * (len(plan.vshape) - 2))
    elif rm is not None and x.data.size:  # torch leaves them alone for an empty batch
        def running(mean, var):
            pending.update = (rm, rv, mean.reshape(c), var.reshape(c), m, momentum)
    y = _named(op.apply(x, weight, bias, plan=plan, stats=stats, running=running))
    pending.commit()  # last: a call that fails changes nothing
    return y


def batch_norm(x: Tensor, running_mean, running_var, weight=None, bias=None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Batch normalization of (N, C), (N, C, L) or (N, C, H, W) as one node.

    Per channel, over m = N·L values: μ, σ² (biased), x̂ = (x - μ)/√(σ² + ε), y = γ·x̂ + β.
    Training with ``running_mean`` / ``running_var`` (C,) updates them in place with the
    unbiased variance σ²·m/(m-1); ``training=False`` normalizes with them. Backward:
    ``dx = γ·rstd/m · (m·dy − Σdy − x̂·Σ(dy·x̂))``, ``dγ = Σ dy·x̂``, ``dβ = Σ dy``.
    """
    return _batch_norm(BatchNormOp, x, running_mean, running_var, weight, bias, training,
                       momentum, eps)


def layer_norm(x: Tensor, normalized_shape, weight=None, bias=None,
               eps: float = 1e-5) -> Tensor:
    """Layer normalization over the trailing ``normalized_shape`` as one node.

    Over the n values of each sample: μ, σ² (biased), x̂ = (x - μ)/√(σ² + ε), y = γ·x̂ + β.
    Backward with dx̂ = γ·dy: ``dx = rstd/n · (n·dx̂ − Σdx̂ − x̂·Σ(dx̂·x̂))``.
    """
    x = as_input(x, "layer_norm")
    ns = check_layer_norm("layer_norm", x, normalized_shape, weight, bias, eps)
    plan = _trailing_plan(x.shape, len(ns), float(eps), True)
    return _named(LayerNormOp.apply(x, weight, bias, plan=plan))


def rms_norm(x: Tensor, normalized_shape, weight=None, eps: float | None = None) -> Tensor:
    """RMS normalization over the trailing ``normalized_shape`` as one node (no centring).

    r = √(mean(x²) + ε) (ε = machine epsilon of the dtype when None), x̂ = x/r, y = γ·x̂.
    Backward with dx̂ = γ·dy: ``dx = (dx̂ − x̂·mean(dx̂·x̂)) / r``.
    """
    x = as_input(x, "rms_norm")
    ns = check_layer_norm("rms_norm", x, normalized_shape, weight, None, eps)
    plan = _trailing_plan(x.shape, len(ns), float(rms_eps(eps, x.dtype)), False)
    return _named(RMSNormOp.apply(x, weight, None, plan=plan))


def group_norm(x: Tensor, num_groups: int, weight=None, bias=None,
               eps: float = 1e-5) -> Tensor:
    """Group normalization of (N, C, *) as one node: statistics per (sample, group).

    Over the n = (C/G)·L values of a group: μ, σ² (biased), x̂, then y = γ·x̂ + β with
    per-channel γ, β. Backward with dx̂ = γ·dy: ``dx = rstd/n · (n·dx̂ − Σdx̂ − x̂·Σ(dx̂·x̂))``.
    """
    x = as_input(x, "group_norm")
    _, g = check_group_norm(x, num_groups, weight, bias, eps)
    plan = _group_plan(x.shape, g, float(eps))
    return _named(GroupNormOp.apply(x, weight, bias, plan=plan))


def instance_norm(x: Tensor, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats: bool = True, momentum: float = 0.1,
                  eps: float = 1e-5) -> Tensor:
    """Instance normalization of (N, C, L) or (N, C, H, W) as one node.

    Per (sample, channel), over the L positions: μ, σ² (biased), x̂, y = γ·x̂ + β. Running
    statistics, when given, are updated with the batch means of the per-instance mean and
    unbiased variance σ²·L/(L-1); ``use_input_stats=False`` normalizes with them. Backward:
    ``dx = γ·rstd/L · (L·dy − Σ_L dy − x̂·Σ_L(dy·x̂))``.
    """
    x = as_input(x, "instance_norm")
    c, spatial = check_instance_norm(x, running_mean, running_var, weight, bias,
                                     use_input_stats, momentum, eps)
    rm, rv = stat_array(running_mean), stat_array(running_var)
    plan = _channel_plan(x.shape, float(eps), True)
    stats = running = None
    pending = _Pending()
    if not use_input_stats:
        stats = _const_stats(rm, rv, x.dtype, (c, 1))
    elif rm is not None:
        def running(mean, var):
            pending.pairs = instance_running(rm, rv, mean, var, x.shape, momentum)
    y = _named(InstanceNormOp.apply(x, weight, bias, plan=plan, stats=stats,
                                    running=running))
    pending.commit()  # last: a call that fails changes nothing
    return y
