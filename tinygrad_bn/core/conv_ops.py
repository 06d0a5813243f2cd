"""Convolution, pooling and embedding primitives: one graph node per layer call.

Everything rests on sliding windows over the spatial axes of ``x`` (N, C, *S), zero-padded
by ``pads`` (lo, hi) per axis, with kernel ``k``, ``stride`` s and ``dilation`` d:

    unfold(x)[n, c, *o, *j] = x_pad[n, c, o·s + j·d]      (N, C, *S) -> (N, C, *O, *K)
    fold(u)                 = Σ_{o,j} u[n, c, o, j] at x_pad[n, c, o·s + j·d], padding cut off

``fold`` is the adjoint (the transpose) of ``unfold``: each is the other's backward. With
``O = ⌊(S + lo + hi − d·(k−1) − 1) / s⌋ + 1`` windows per axis (pools may add to ``hi`` for
``ceil_mode``). Then, with G groups of Cg = C/G input and Og = O/G output channels:

    conv:   y[n, g·Og+o, p] = Σ_{c,j} W[g·Og+o, c, j] · unfold(x)[n, g·Cg+c, p, j] + b
            dW = Σ_{n,p} gy ⊗ unfold(x)       dx = fold(Σ_o gy · W)       db = Σ_{n,p} gy
    max:    y = max over each window; dx: gy goes to the window's first maximum (as torch)
    avg:    y = Σ window / divisor;   dx = fold(gy / divisor)
    adaptive avg: y = A_h x A_wᵀ (A: averaging matrices of the bins); dx = A_hᵀ gy A_w
    embedding: y = W[idx];            dW = Σ gy rows added at idx (0 for padding_idx)

Forward passes are raw NumPy (window views, one im2col copy, matmul). Each backward is
written once with operations that ndarrays and Tensors share (see ``ops``), calling
``unfold`` / ``fold`` / ``Scatter``, which are primitives themselves: so
``grad(create_graph=True)`` differentiates through these ops again. The convolution's
backward of ndarrays (the usual, first-order case) has its own faster route beside that one:
the window copies go straight into the matmul's layout, and for stride 1 dx is computed on
the flattened padded grid, where the fold is ∏K contiguous adds (``_conv_grads_array``;
tests/test_conv_fast.py holds it to the shared definition). Inputs may be unbatched,
(C, *S), as in torch: the op adds and removes the batch axis itself (still one node).
Arguments are checked with torch's rules; errors name the shapes.
"""
from __future__ import annotations

import itertools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .ops import Primitive, Scatter, _expand, _is_tensor
from .tensor import compute_dtype


class LayerInputError(ValueError, RuntimeError):
    """An input or argument a layer cannot take. torch raises RuntimeError for these; a
    ValueError as elsewhere in tinygrad_bn, so either ``except`` works."""


class LayerIndexError(ValueError, IndexError):
    """An embedding index out of range (torch raises IndexError)."""


# --------------------------------------------------------------------------- windows
class Geometry:
    """The windows over the spatial axes: ``kernel``, ``stride``, ``dilation``, ``pads``
    ((lo, hi) per axis), the unpadded ``in_size`` and the number of windows ``out_size``."""

    __slots__ = ("kernel", "stride", "dilation", "pads", "in_size", "out_size")

    def __init__(self, kernel, stride, dilation, pads, in_size, out_size):
        self.kernel, self.stride, self.dilation = kernel, stride, dilation
        self.pads, self.in_size, self.out_size = pads, in_size, out_size

    @property
    def nd(self) -> int:
        return len(self.kernel)

    def padded_size(self) -> tuple:
        """The padded input's size per axis: ``S + lo + hi``."""
        return tuple(s + lo + hi for s, (lo, hi) in zip(self.in_size, self.pads))

    def span(self) -> tuple:
        """The extent of one (dilated) window per axis: ``d·(k−1) + 1``."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))

    def describe(self, padding=None) -> str:
        """``3×3, stride 2, padding 1, dilation 2`` (only what differs from the defaults)."""
        k = self.kernel
        parts = ["×".join(map(str, k)) if len(k) > 1 else f"kernel {k[0]}"]
        for name, v, default in (("stride", self.stride, 1), ("padding", padding, 0),
                                 ("dilation", self.dilation, 1)):
            if isinstance(v, str):
                parts.append(f"{name} {v}")
            elif v is not None and any(e != default for e in v):
                parts.append(f"{name} {_short(v)}")
        return ", ".join(parts)


def _short(v: tuple) -> str:
    return str(v[0]) if len(set(v)) == 1 else "×".join(map(str, v))


def _window_slices(geo: Geometry) -> tuple:
    """Slices picking the windows (every stride-th start, every dilation-th element)."""
    starts = tuple(slice(0, (o - 1) * s + 1, s) if o > 0 else slice(0, 0)
                   for o, s in zip(geo.out_size, geo.stride))
    inner = tuple(slice(None, None, d) for d in geo.dilation)
    return starts + inner


def _offsets(geo: Geometry):
    """For each kernel offset (row-major): the offset, and the slices of the padded input
    that hold that element of every window (strided by the stride)."""
    for offs in itertools.product(*[range(k) for k in geo.kernel]):
        yield offs, tuple(slice(j * d, j * d + (o - 1) * s + 1, s) for j, d, o, s in
                          zip(offs, geo.dilation, geo.out_size, geo.stride))


def pad_array(x: np.ndarray, geo: Geometry, value=0) -> np.ndarray:
    """``x`` padded with ``value`` by ``geo.pads`` on its last axes (itself if no padding)."""
    if not any(lo or hi for lo, hi in geo.pads):
        return x
    lead = x.ndim - geo.nd
    size = x.shape[lead:]
    out = np.full(x.shape[:lead] + tuple(s + lo + hi for s, (lo, hi) in zip(size, geo.pads)),
                  value, dtype=x.dtype)
    out[(Ellipsis,) + tuple(slice(lo, lo + s) for s, (lo, _) in zip(size, geo.pads))] = x
    return out


def unfold_array(x: np.ndarray, geo: Geometry, value=0) -> np.ndarray:
    """``(..., *S) -> (..., *O, *K)``: the windows of ``x`` padded with ``value`` (a
    read-only strided view of the padded array; no copy of the windows)."""
    lead = x.ndim - geo.nd
    x = pad_array(x, geo, value)
    span = geo.span()
    if any(o == 0 for o in geo.out_size) or any(s < w for s, w in zip(x.shape[lead:], span)):
        return np.zeros(x.shape[:lead] + tuple(geo.out_size) + tuple(geo.kernel), x.dtype)
    win = sliding_window_view(x, span, axis=tuple(range(lead, x.ndim)))
    return win[(Ellipsis,) + _window_slices(geo)]


def fold_array(u: np.ndarray, geo: Geometry) -> np.ndarray:
    """``(..., *O, *K) -> (..., *S)``: the adjoint of ``unfold_array``; every window is
    added back where it came from (a loop over the kernel's offsets only), padding cut off."""
    nd = geo.nd
    lead = u.shape[:u.ndim - 2 * nd]
    out = np.zeros(lead + geo.padded_size(), dtype=u.dtype)
    if all(o > 0 for o in geo.out_size):
        for offs, dst in _offsets(geo):
            out[(Ellipsis,) + dst] += u[(Ellipsis,) + offs]
    crop = tuple(slice(lo, lo + s) for (lo, _), s in zip(geo.pads, geo.in_size))
    return out[(Ellipsis,) + crop]


class Unfold(Primitive):
    """Sliding windows (im2col): (..., *S) -> (..., *O, *K); the gradient is ``fold``."""

    @staticmethod
    def forward(ctx, x, geo):
        ctx.geo = geo
        return unfold_array(x, geo)

    def describe(self) -> str:
        return self.geo.describe()

    @staticmethod
    def backward(ctx, g):
        return (fold(g, ctx.geo),)


class Fold(Primitive):
    """Windows added back (col2im): (..., *O, *K) -> (..., *S); the gradient is ``unfold``."""

    @staticmethod
    def forward(ctx, u, geo):
        ctx.geo = geo
        return fold_array(u, geo)

    def describe(self) -> str:
        return self.geo.describe()

    @staticmethod
    def backward(ctx, g):
        return (unfold(g, ctx.geo),)


def unfold(x, geo: Geometry):
    """``unfold_array`` for an ndarray, an ``Unfold`` node for a Tensor (graph mode)."""
    return Unfold.apply(x, geo=geo) if _is_tensor(x) else unfold_array(x, geo)


def fold(u, geo: Geometry):
    """``fold_array`` for an ndarray, a ``Fold`` node for a Tensor (graph mode)."""
    return Fold.apply(u, geo=geo) if _is_tensor(u) else fold_array(u, geo)


# ------------------------------------------------------------------------ arguments
def _tuple_arg(v, nd: int, name: str, fn: str) -> tuple:
    """An int or a sequence of 1 or ``nd`` ints as a tuple of ``nd`` ints (torch's rule)."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return (int(v),) * nd
    if isinstance(v, (tuple, list)) and all(
            isinstance(e, (int, np.integer)) and not isinstance(e, bool) for e in v):
        if len(v) == nd:
            return tuple(int(e) for e in v)
        if len(v) == 1:
            return (int(v[0]),) * nd
        raise LayerInputError(
            f"expected {name} to be a single integer value or a list of {nd} values to match "
            f"the {fn} dimensions, but got {name}={list(v)}")
    raise TypeError(f"{fn}: {name} must be an int or a tuple of {nd} ints, got {v!r}")


def _check_array(x, fn: str, name: str = "input") -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{fn}(): argument '{name}' must be a Tensor, not {type(x).__name__}")
    return x


def _check_spatial(x, nd: int, fn: str, what: str) -> bool:
    """True if ``x`` is batched (nd + 2 axes), False if unbatched (nd + 1); else raise."""
    if x.ndim == nd + 2:
        return True
    if x.ndim == nd + 1:
        return False
    raise LayerInputError(
        f"Expected {nd + 1}D (unbatched) or {nd + 2}D (batched) input to {fn}, but got "
        f"input of shape {x.shape} ({what})")


def _prod(t: tuple) -> int:
    n = 1
    for e in t:
        n *= int(e)
    return n


def _batch(x, batched: bool):
    return x if batched else x.reshape((1,) + tuple(x.shape))


# ----------------------------------------------------------------------- convolution
def conv_geometry(x, w, stride, padding, dilation, groups, nd: int, fn: str):
    """Check a convolution's arguments as torch does; returns (geometry, padding label)."""
    stride = _tuple_arg(stride, nd, "stride", "convolution")
    dilation = _tuple_arg(dilation, nd, "dilation", "convolution")
    if any(s <= 0 for s in stride):
        raise LayerInputError(f"{fn}: non-positive stride is not supported, got stride="
                              f"{stride}")
    if any(d <= 0 for d in dilation):
        raise LayerInputError(f"{fn}: dilation should be greater than zero, but got "
                              f"dilation={dilation}")
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)):
        raise TypeError(f"{fn}: groups must be an int, got {groups!r}")
    if groups <= 0:
        raise LayerInputError(f"{fn}: non-positive groups is not supported, got groups={groups}")
    kernel = tuple(int(k) for k in w.shape[2:])
    if isinstance(padding, str):
        if padding == "valid":
            pads = ((0, 0),) * nd
        elif padding == "same":
            if any(s != 1 for s in stride):
                raise LayerInputError("padding='same' is not supported for strided "
                                      f"convolutions (stride={stride})")
            pads = tuple((d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2)
                         for k, d in zip(kernel, dilation))
        else:
            raise ValueError(f"Invalid padding string {padding!r}, should be one of "
                             "{'valid', 'same'}")
        label = padding
    else:
        p = _tuple_arg(padding, nd, "padding", "convolution")
        if any(e < 0 for e in p):
            raise LayerInputError(f"{fn}: negative padding is not supported, got padding={p}")
        pads = tuple((e, e) for e in p)
        label = p
    in_size = tuple(int(s) for s in x.shape[-nd:])
    padded = tuple(s + lo + hi for s, (lo, hi) in zip(in_size, pads))
    span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    if any(k <= 0 for k in kernel):
        raise LayerInputError(f"{fn}: kernel size should be greater than zero, but got weight "
                              f"of shape {w.shape}")
    if any(p < s for p, s in zip(padded, span)):
        raise LayerInputError(
            f"{fn}: Calculated padded input size per channel: ({' x '.join(map(str, padded))})."
            f" Kernel size: ({' x '.join(map(str, span))}). Kernel size can't be greater than "
            f"actual input size (input of shape {x.shape}, weight of shape {w.shape}, "
            f"dilation {dilation})")
    out = tuple((p - s) // st + 1 for p, s, st in zip(padded, span, stride))
    return Geometry(kernel, stride, dilation, pads, in_size, out), label


def _check_conv(x, w, b, groups, nd: int, fn: str) -> bool:
    """torch's shape and dtype checks of a convolution; returns whether ``x`` is batched."""
    _check_array(x, fn)
    _check_array(w, fn, "weight")
    if w.ndim != nd + 2:
        kernel = "kW" if nd == 1 else "kH, kW"
        raise LayerInputError(f"{fn}: weight of shape {w.shape} must be {nd + 2}-D "
                              f"(out_channels, in_channels / groups, {kernel})")
    batched = _check_spatial(x, nd, fn, f"weight of shape {w.shape}")
    if isinstance(groups, (int, np.integer)) and not isinstance(groups, bool) and groups > 0:
        o = w.shape[0]
        if o == 0 or o % groups:
            raise LayerInputError(
                f"Given groups={groups}, expected weight to be "
                + ("at least 1" if o == 0 else f"divisible by {groups}")
                + f" at dimension 0, but got weight of shape {w.shape} instead")
        c = x.shape[1 if batched else 0]
        if c != w.shape[1] * groups:
            raise LayerInputError(
                f"Given groups={groups}, weight of shape {w.shape}, expected input of shape "
                f"{x.shape} to have {w.shape[1] * groups} channels, but got {c} channels instead")
    if b is not None:
        _check_array(b, fn, "bias")
        if b.shape != (w.shape[0],):
            raise LayerInputError(
                f"Given weight of shape {w.shape}, expected bias to be 1-dimensional with "
                f"{w.shape[0]} elements, but got bias of shape {b.shape} instead")
    return batched


def _check_conv_dtypes(x, w, b, fn: str) -> None:
    for what, a in (("weight", w), ("bias", b)):
        if a is not None and a.dtype != x.dtype:
            raise LayerInputError(
                f"{fn}: input ({x.dtype}) and {what} ({a.dtype}) must have the same dtype "
                f"(torch: \"Input type and {what} type should be the same\"); cast one of them, "
                "e.g. x.float() or x.double()")
    if x.dtype == np.bool_ or x.dtype.kind not in "iuf":
        raise NotImplementedError(f'"{fn}" is not implemented for dtype {x.dtype}')


def _im2col(x, geo: Geometry, groups: int):
    """(N, C, *S) -> (G, Cg·K, N·P): per group, one row per (input channel, kernel offset),
    one column per output position (P per sample). A copy of the windows whose inner
    loops run along the output positions (contiguous for stride 1); ndarray or Tensor."""
    nd = geo.nd
    n, c = x.shape[:2]
    u = unfold(x, geo)  # (N, C, *O, *K)
    u = u.reshape((n, groups, c // groups) + tuple(geo.out_size) + tuple(geo.kernel))
    perm = (1, 2) + tuple(range(3 + nd, 3 + 2 * nd)) + (0,) + tuple(range(3, 3 + nd))
    return u.transpose(perm).reshape((groups, c // groups * _prod(geo.kernel),
                                      n * _prod(geo.out_size)))


def _conv_grads(x, w, g, geo: Geometry, groups: int, need: tuple):
    """The gradients (dx, dW, db) of a batched convolution from gy (N, O, *O), by the
    definition: gy as (G, Og, N·P), dW = gy·colsᵀ with ``_im2col``, and dx = fold(Wᵀ·gy)
    with the columns laid out as ``fold`` reads them. Tensors (graph mode: ``unfold`` and
    ``fold`` are nodes, so this differentiates again) or ndarrays, all of one dtype."""
    nd = geo.nd
    n, o = g.shape[:2]
    gm = _columns(g, groups)
    gx = gw = gb = None
    if need[0]:
        cg = w.shape[1]
        cols = _weight_columns(w, geo, groups) @ gm
        # (G, Cg·K, N·P) -> (N, C, *O, *K), the layout fold reads
        cols = cols.reshape((groups, cg) + tuple(geo.kernel) + (n,) + tuple(geo.out_size))
        perm = (2 + nd, 0, 1) + tuple(range(3 + nd, 3 + 2 * nd)) + tuple(range(2, 2 + nd))
        cols = cols.transpose(perm).reshape((n, groups * cg) + tuple(geo.out_size)
                                            + tuple(geo.kernel))
        gx = fold(cols, geo)
    if need[1]:
        gw = (gm @ _im2col(x, geo, groups).swapaxes(1, 2)).reshape(
            (o, x.shape[1] // groups) + tuple(geo.kernel))
    if len(need) > 2 and need[2]:
        gb = g.sum(axis=(0,) + tuple(range(2, 2 + nd)))
    return gx, gw, gb


# The same convolution for ndarrays, written for speed: the window copies go straight into
# the layout the matmul reads, each of the three products is one matmul over the whole batch
# (few BLAS calls: a busy machine stalls each threaded call), and dx avoids the many short
# strided adds of ``fold``. The results equal ``_im2col`` / ``_conv_grads`` up to rounding
# (tests/test_conv_fast.py).
def _im2col_array(x: np.ndarray, geo: Geometry, groups: int) -> np.ndarray:
    """``_im2col`` of an ndarray: one strided slice copy per kernel offset j (all channels
    and samples at once) into a (C, *K, N, *O) buffer, which is (G, Cg·K, N·P) in memory:

        cols[c, j, n, o] = x_pad[n, c, o·s + j·d]
    """
    n, c = x.shape[:2]
    every = (slice(None),)
    xp = pad_array(x, geo).swapaxes(0, 1)  # (C, N, *S_pad), a view
    cols = np.empty((c,) + tuple(geo.kernel) + (n,) + tuple(geo.out_size), dtype=x.dtype)
    for offs, src in _offsets(geo):
        cols[every + offs] = xp[every * 2 + src]
    return cols.reshape((groups, c // groups * _prod(geo.kernel), n * _prod(geo.out_size)))


def _columns(g, groups: int):
    """gy (N, O, *O) as (G, Og, N·P), the layout of the matmuls (a copy of an ndarray; a
    node for a Tensor)."""
    n, o = g.shape[:2]
    p = _prod(g.shape[2:])
    return g.reshape((n, groups, o // groups, p)).transpose((1, 2, 0, 3)).reshape(
        (groups, o // groups, n * p))


def _weight_columns(w, geo: Geometry, groups: int):
    """W (O, Cg, *K) as (G, Cg·K, Og): each group's Wᵀ, the left factor of dx = Wᵀ·gy
    (ndarray or Tensor)."""
    return w.reshape((groups, w.shape[0] // groups, w.shape[1] * _prod(geo.kernel))).swapaxes(
        1, 2)


def _conv_array(x: np.ndarray, w: np.ndarray, b, geo: Geometry, groups: int) -> np.ndarray:
    """y = W·cols + b for ndarrays of one dtype: (N, C, *S) -> (N, O, *O). One matmul
    (G, Og, Cg·K)·(G, Cg·K, N·P), the bias added to its rows, then (O, N·P) copied out as
    (N, O, P)."""
    n, o = x.shape[0], w.shape[0]
    p = _prod(geo.out_size)
    cols = _im2col_array(x, geo, groups)
    y = np.matmul(w.reshape((groups, o // groups, cols.shape[1])), cols)  # (G, Og, N·P)
    if b is not None:
        y += b.reshape((groups, o // groups, 1))
    out = np.empty((n, o) + tuple(geo.out_size), dtype=y.dtype)
    np.copyto(out.reshape((n, o, p)), y.reshape((o, n, p)).swapaxes(0, 1))
    return out


def _flat_shifts(geo: Geometry) -> list:
    """Stride 1: how far each kernel offset j (row-major) lies from a window's start in the
    flattened padded grid (N, *S_pad), i.e. Σ_a j_a·d_a·(row length of axis a)."""
    padded = geo.padded_size()
    steps = [_prod(padded[a + 1:]) for a in range(geo.nd)]
    return [sum(j * d * st for j, d, st in zip(offs, geo.dilation, steps))
            for offs in itertools.product(*[range(k) for k in geo.kernel])]


def _dx_on_grid_pays(geo: Geometry, w: np.ndarray) -> bool:
    """Whether ``_conv_dx_grid`` applies: stride 1, a padded grid at most twice the output
    positions (its matmul runs over the whole grid), and a finite W (W·0 must be 0)."""
    return (all(s == 1 for s in geo.stride)
            and _prod(geo.padded_size()) <= 2 * _prod(geo.out_size)
            and bool(np.isfinite(w).all()))


def _conv_dx_grid(g: np.ndarray, w: np.ndarray, geo: Geometry, groups: int) -> np.ndarray:
    """dx for stride 1, on the flattened padded grid (N, *S_pad) of M positions: gy is put
    at the window starts of a zero grid (O, M); u = Wᵀ·grid (C·K rows, as (C, K, M)); then

        acc[c, q + shift_j] += u[c, j, q]      (one contiguous add per kernel offset j)

    with ``_flat_shifts``, and the padding is cut off. The windows that would wrap across a
    row or a sample start where the grid is zero, so they add nothing. A (N, C, *S) view."""
    n, o = g.shape[:2]
    og, c = o // groups, w.shape[1] * groups
    padded = geo.padded_size()
    m = n * _prod(padded)
    grid = np.zeros((o, n) + padded, dtype=g.dtype)
    grid[(slice(None),) * 2 + tuple(slice(0, e) for e in geo.out_size)] = g.swapaxes(0, 1)
    u = np.matmul(_weight_columns(w, geo, groups), grid.reshape((groups, og, m))).reshape(
        (c, _prod(geo.kernel), m))
    shifts = _flat_shifts(geo)
    acc = np.zeros((c, m + shifts[-1]), dtype=g.dtype)
    for j, t in enumerate(shifts):
        acc[:, t:t + m] += u[:, j]
    crop = tuple(slice(lo, lo + s) for (lo, _), s in zip(geo.pads, geo.in_size))
    return acc[:, :m].reshape((c, n) + padded)[(slice(None),) * 2 + crop].swapaxes(0, 1)


def _conv_dx_folded(gm: np.ndarray, w: np.ndarray, geo: Geometry, groups: int,
                    n: int) -> np.ndarray:
    """dx for any stride: u = Wᵀ·gy, one column per output position, from gy as
    (G, Og, N·P) (``_columns``); then ``fold_array`` on u viewed as (C, N, *O, *K).
    A (N, C, *S) view."""
    nd, c = geo.nd, w.shape[1] * groups
    u = np.matmul(_weight_columns(w, geo, groups), gm).reshape(
        (c,) + tuple(geo.kernel) + (n,) + tuple(geo.out_size))
    perm = (0, 1 + nd) + tuple(range(2 + nd, 2 + 2 * nd)) + tuple(range(1, 1 + nd))
    return fold_array(u.transpose(perm), geo).swapaxes(0, 1)


def _conv_grads_array(x, w, g, geo: Geometry, groups: int, need: tuple):
    """``_conv_grads`` for ndarrays of one dtype, the same values up to rounding, with gy
    as (G, Og, N·P) (``_columns``):

        dx: ``_conv_dx_grid`` when ``_dx_on_grid_pays``, else ``_conv_dx_folded``
        dW = (cols·gyᵀ)ᵀ with ``_im2col_array``      db = Σ_{n,p} gy

    (cols·gyᵀ rather than gy·colsᵀ: BLAS shares the long N·P axis better between threads
    this way round.) dx is a (N, C, *S) view."""
    n, o = g.shape[:2]
    gm = _columns(g, groups)
    gx = gw = gb = None
    if need[0]:
        gx = (_conv_dx_grid(g, w, geo, groups) if _dx_on_grid_pays(geo, w)
              else _conv_dx_folded(gm, w, geo, groups, n))
    if need[1]:
        gw = np.matmul(_im2col_array(x, geo, groups), gm.swapaxes(1, 2)).swapaxes(1, 2)
        gw = gw.reshape((o, x.shape[1] // groups) + tuple(geo.kernel))
    if len(need) > 2 and need[2]:
        gb = gm.sum(axis=2).reshape((o,))
    return gx, gw, gb


class ConvNd(Primitive):
    """Convolution (cross-correlation, as torch) of x (N, C, *S) with W (O, C/G, *K), plus
    b (O,): y (N, O, *O_S). See the module docstring for the formulas.

    The forward and the backward of ndarrays run ``_conv_array`` / ``_conv_grads_array``;
    the backward of Tensors (graph mode) runs ``_conv_grads``. x is read only for dW, W
    only for dx.
    """

    nd = 2
    save_inputs = (0, 1)
    save_for = ((1,), (0,))

    @classmethod
    def forward(cls, ctx, x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
        nd, fn = cls.nd, cls.op_name
        batched = _check_conv(x, w, b, groups, nd, fn)
        geo, label = conv_geometry(x, w, stride, padding, dilation, groups, nd, fn)
        _check_conv_dtypes(x, w, b, fn)
        ctx.geo, ctx.groups, ctx.batched, ctx.padding = geo, int(groups), batched, label
        cd = compute_dtype(x.dtype)
        y = _conv_array(_batch(x, batched).astype(cd, copy=False), w.astype(cd, copy=False),
                        None if b is None else b.astype(cd, copy=False), geo, int(groups))
        y = y.astype(x.dtype, copy=False)
        return y if batched else y[0]

    def describe(self) -> str:
        d = self.geo.describe(self.padding)
        return d + (f", groups {self.groups}" if self.groups != 1 else "")

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.inputs()
        batched, need = ctx.batched, ctx.needs_input_grad
        g = _batch(g, batched)
        xb = None if x is None else _batch(x, batched)
        if _is_tensor(g):
            gx, gw, gb = _conv_grads(xb, w, g, ctx.geo, ctx.groups, need)
        else:
            dtype, cd = g.dtype, compute_dtype(g.dtype)
            gx, gw, gb = _conv_grads_array(
                None if xb is None else xb.astype(cd, copy=False),
                None if w is None else w.astype(cd, copy=False),
                g.astype(cd, copy=False), ctx.geo, ctx.groups, need)
            gx, gw, gb = (None if a is None else np.ascontiguousarray(a, dtype=dtype)
                          for a in (gx, gw, gb))
        if gx is not None and not batched:
            gx = gx.reshape(gx.shape[1:])
        return (gx, gw, gb)[:len(need)]


class Conv1d(ConvNd):
    """1-D convolution: x (N, C, L) or (C, L), W (O, C/G, k) -> (N, O, L_out)."""

    op_name = "conv1d"
    nd = 1


class Conv2d(ConvNd):
    """2-D convolution: x (N, C, H, W) or (C, H, W), W (O, C/G, kH, kW) -> (N, O, H', W')."""

    op_name = "conv2d"
    nd = 2


# --------------------------------------------------------------------------- pooling
def pool_output_size(size: int, k: int, pad: int, stride: int, dilation: int,
                     ceil_mode: bool) -> int:
    """torch's ``pooling_output_shape``: the last window must start inside the input or
    its left padding (``ceil_mode``)."""
    num = size + 2 * pad - dilation * (k - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = num // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode, fn: str):
    """Check a 2-D pool's arguments as torch does; returns (geometry, batched)."""
    def pair(v, name):
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            return (int(v),) * 2
        if isinstance(v, (tuple, list)) and len(v) in (1, 2) and all(
                isinstance(e, (int, np.integer)) and not isinstance(e, bool) for e in v):
            return tuple(int(e) for e in v) * (3 - len(v))
        raise LayerInputError(f"{fn}: {name} must either be a single int, or a tuple of two "
                              f"ints, got {name}={v!r}")

    _check_array(x, fn)
    k = pair(kernel_size, "kernel_size")
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) \
        else pair(stride, "stride")
    p = pair(padding, "padding")
    d = pair(dilation, "dilation")
    if any(e <= 0 for e in k):
        raise LayerInputError(f"{fn}: kernel_size should be greater than zero, but got "
                              f"kernel_size={k}")
    if any(e <= 0 for e in s):
        raise LayerInputError(f"{fn}: stride should be greater than zero, but got stride={s}")
    if any(e <= 0 for e in d):
        raise LayerInputError(f"{fn}: dilation should be greater than zero, but got "
                              f"dilation={d}")
    if any(e < 0 for e in p):
        raise LayerInputError(f"{fn}: pad must be non-negative, but got padding={p}")
    for pe, ke, de in zip(p, k, d):
        if pe > (de * (ke - 1) + 1) // 2:
            raise LayerInputError(
                f"{fn}: pad should be at most half of effective kernel size, but got pad={pe}, "
                f"kernel_size={ke} and dilation={de}")
    if any(pe > ke // 2 for pe, ke in zip(p, k)):
        raise LayerInputError(
            f"{fn}: pad should be smaller than or equal to half of kernel size, but got "
            f"padding={p}, kernel_size={k}")
    if x.ndim not in (3, 4):
        raise LayerInputError(f"{fn}: expected a 3D (C, H, W) or 4D (N, C, H, W) input, but "
                              f"got input of shape {x.shape}")
    batched = x.ndim == 4
    if any(e == 0 for e in x.shape[1 if batched else 0:]):
        raise LayerInputError(
            f"{fn}: expected an input with non-zero sizes except the batch, but got input of "
            f"shape {x.shape}")
    h, w = x.shape[-2:]
    out = tuple(pool_output_size(i, ke, pe, se, de, ceil_mode)
                for i, ke, pe, se, de in zip((h, w), k, p, s, d))
    if any(o < 1 for o in out):
        c = x.shape[-3]
        raise LayerInputError(
            f"{fn}: Given input size: ({c}x{h}x{w}). Calculated output size: "
            f"({c}x{out[0]}x{out[1]}). Output size is too small (input of shape {x.shape}, "
            f"kernel_size={k}, stride={s}, padding={p}, dilation={d})")
    # the right padding that the last window (ceil_mode) may need beyond ``padding``
    pads = tuple((pe, max(pe, (o - 1) * se + de * (ke - 1) + 1 - i - pe))
                 for i, o, ke, pe, se, de in zip((h, w), out, k, p, s, d))
    return Geometry(k, s, d, pads, (int(h), int(w)), out), batched


class MaxPool2d(Primitive):
    """Maximum over each window of x (N, C, H, W) or (C, H, W); padding counts as -inf.

    The gradient goes to one element per window, as torch: the first maximum in row-major
    order (ties), the last NaN if the window has one, and the window's first element inside
    the input if the maximum is the lowest value. A window wholly in the padding (possible
    with dilation) gives the lowest value and no gradient (torch's index for it names
    another element, which torch then gives the gradient). ``indices`` (a list) receives the flat
    index (h·W + w) of each chosen element (``return_indices``).
    """

    op_name = "max_pool2d"

    @staticmethod
    def forward(ctx, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                indices=None):
        geo, batched = pool_geometry(x, kernel_size, stride, padding, dilation, ceil_mode,
                                     "max_pool2d")
        if x.dtype == np.bool_ or x.dtype.kind not in "iuf":
            raise NotImplementedError(f'"max_pool2d" is not implemented for dtype {x.dtype}')
        xb = _batch(x, batched)
        is_float = x.dtype.kind == "f"
        lowest = -np.inf if is_float else np.iinfo(x.dtype).min
        xp = pad_array(xb, geo, lowest)
        # torch's scan picks the first maximum, the last NaN, and when nothing beats the
        # lowest value the window's first element inside the input
        vs = [xp[(Ellipsis,) + src] for _, src in _offsets(geo)]
        y = vs[0].copy()
        for v in vs[1:]:
            np.maximum(y, v, out=y)  # NaN propagates, as in torch
        j = np.full(y.shape, -1, dtype=np.int32)  # the winning kernel offset
        for k in range(len(vs) - 1, -1, -1):  # backwards: the first maximum is set last
            np.copyto(j, k, where=vs[k] == y)
        if is_float and np.isnan(y).any():
            for k, v in enumerate(vs):  # forwards: the last NaN is set last
                np.copyto(j, k, where=np.isnan(v))
        j[y == lowest] = -1
        shape = y.shape
        kw = geo.kernel[1]
        (sh, sw), (dh, dw) = geo.stride, geo.dilation
        (ph, _), (pw, _) = geo.pads
        h, w = geo.in_size
        top = (np.arange(shape[2]) * sh - ph)[:, None]
        left = (np.arange(shape[3]) * sw - pw)[None, :]
        r = top + (j // kw) * dh
        q = left + (j % kw) * dw
        ctx.empty = None
        none = j < 0
        if none.any():  # all values "lowest": torch names the window's first element inside
            r = np.where(none, top + np.maximum(0, -(top // dh)) * dh, r)
            q = np.where(none, left + np.maximum(0, -(left // dw)) * dw, q)
            # a window wholly in the padding (dilation allows it) has no element: torch's
            # index names another one; here it gets no gradient
            empty = (r >= h) | (q >= w)
            ctx.empty = empty if empty.any() else None
        idx = r.astype(np.int64) * w + q
        ctx.idx, ctx.in_shape, ctx.geo = idx, x.shape, geo
        ctx.ceil_mode = ceil_mode
        if indices is not None:
            indices.append(idx if batched else idx[0])
        return y if batched else y[0]

    def describe(self) -> str:
        p = tuple(lo for lo, _ in self.geo.pads)
        return self.geo.describe(p) + (", ceil_mode" if self.ceil_mode else "")

    @staticmethod
    def backward(ctx, g):
        shape = ctx.in_shape
        idx = ctx.idx
        nc = idx.shape[0] * idx.shape[1]
        hw = shape[-1] * shape[-2]
        where = idx.reshape((nc, -1)) + (np.arange(nc) * hw)[:, None]
        size = nc * hw
        if ctx.empty is not None:  # windows without an element send their gradient nowhere
            where = np.where(ctx.empty.reshape((nc, -1)), size, where)
            size += 1
        where = where.reshape(-1)
        gf = g.reshape((-1,))
        if _is_tensor(gf):
            gx = Scatter.apply(gf, shape=(size,), idx=where)
        else:
            gx = np.bincount(where, weights=gf, minlength=size).astype(g.dtype, copy=False)
        if size != nc * hw:
            gx = gx[:nc * hw]
        return (gx.reshape(shape),)


def _avg_divisor(geo: Geometry, count_include_pad: bool) -> np.ndarray:
    """torch's divisor per output position (Ho, Wo): the window clipped to input + padding
    (count_include_pad) or to the input alone."""
    sizes = []
    for i, o, k, s, (p, _) in zip(geo.in_size, geo.out_size, geo.kernel, geo.stride,
                                  geo.pads):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, i + p)
        if count_include_pad:
            sizes.append(end - start)
        else:
            sizes.append(np.minimum(end, i) - np.maximum(start, 0))
    return sizes[0][:, None] * sizes[1][None, :]


class AvgPool2d(Primitive):
    """Mean over each window of x (N, C, H, W) or (C, H, W), divided as torch divides:
    by the window's size within input + padding (``count_include_pad``), or within the
    input alone, or by ``divisor_override``. dx = fold(gy / divisor)."""

    op_name = "avg_pool2d"

    @staticmethod
    def forward(ctx, x, kernel_size, stride=None, padding=0, ceil_mode=False,
                count_include_pad=True, divisor_override=None):
        geo, batched = pool_geometry(x, kernel_size, stride, padding, 1, ceil_mode,
                                     "avg_pool2d")
        if divisor_override is not None:
            if isinstance(divisor_override, bool) or not isinstance(
                    divisor_override, (int, np.integer)) or divisor_override == 0:
                raise LayerInputError(f"avg_pool2d: divisor must be not zero (an int), got "
                                      f"divisor_override={divisor_override!r}")
        if x.dtype.kind not in "fi" or (x.dtype.kind == "i" and x.dtype != np.int64):
            raise NotImplementedError(f'"avg_pool2d" is not implemented for dtype {x.dtype} '
                                      "(torch: floating point and int64 only)")
        cd = compute_dtype(x.dtype)
        xp = pad_array(_batch(x, batched).astype(cd, copy=False), geo)
        s = np.zeros(xp.shape[:2] + tuple(geo.out_size), dtype=cd)
        for _, src in _offsets(geo):  # the window sums, one kernel offset at a time
            s += xp[(Ellipsis,) + src]
        if divisor_override is not None:
            div = np.asarray(int(divisor_override))
        else:
            div = _avg_divisor(geo, count_include_pad)
        if x.dtype.kind == "i":  # C++ integer division: truncated toward zero
            y = np.sign(s) * np.sign(div) * (np.abs(s) // np.abs(div))
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                y = (s / div.astype(cd)).astype(x.dtype, copy=False)
        ctx.geo, ctx.batched, ctx.div = geo, batched, div
        ctx.ceil_mode, ctx.count_include_pad = ceil_mode, count_include_pad
        return y if batched else y[0]

    def describe(self) -> str:
        p = tuple(lo for lo, _ in self.geo.pads)
        d = self.geo.describe(p) + (", ceil_mode" if self.ceil_mode else "")
        return d + ("" if self.count_include_pad else ", count_include_pad=False")

    @staticmethod
    def backward(ctx, g):
        geo = ctx.geo
        g = _batch(g, ctx.batched)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = (1.0 / ctx.div).astype(g.dtype)
        gs = g * scale
        u = _expand(gs.reshape(tuple(gs.shape) + (1, 1)), tuple(gs.shape) + geo.kernel)
        gx = fold(u, geo)
        return (gx if ctx.batched else gx.reshape(gx.shape[1:]),)


def _bins(size: int, out: int, dtype) -> tuple:
    """torch's adaptive bins: bin i covers [⌊i·size/out⌋, ⌈(i+1)·size/out⌉); returns the
    0/1 membership matrix (out, size) and the bin sizes (out,)."""
    i = np.arange(out)
    start = (i * size) // out
    end = -((-(i + 1) * size) // out)
    cols = np.arange(size)
    m = ((cols[None, :] >= start[:, None]) & (cols[None, :] < end[:, None])).astype(dtype)
    return m, (end - start).astype(dtype)


class AdaptiveAvgPool2d(Primitive):
    """Mean over torch's adaptive bins: y = (A_h x A_wᵀ) / (n_h n_wᵀ), A the 0/1 bin
    matrices, n the bin sizes; dx = A_hᵀ (gy / (n_h n_wᵀ)) A_w. Bins may overlap (sizes
    that do not divide)."""

    op_name = "adaptive_avg_pool2d"

    @staticmethod
    def forward(ctx, x, output_size):
        fn = "adaptive_avg_pool2d"
        _check_array(x, fn)
        if x.ndim not in (3, 4):
            raise LayerInputError(f"{fn}(): Expected 3D or 4D tensor, but got input of shape "
                                  f"{x.shape}")
        batched = x.ndim == 4
        if any(e == 0 for e in x.shape[-3:] if batched) or (not batched and 0 in x.shape[1:]):
            raise LayerInputError(
                f"{fn}(): Expected input to have non-zero size for non-batch dimensions, but "
                f"input has shape {x.shape}")
        h, w = x.shape[-2:]
        out = adaptive_output_size(output_size, (h, w), fn)
        if x.dtype.kind != "f":
            raise NotImplementedError(f'"{fn}" is not implemented for dtype {x.dtype}')
        cd = compute_dtype(x.dtype)
        mh, nh = _bins(h, out[0], cd)
        mw, nw = _bins(w, out[1], cd)
        count = nh[:, None] * nw[None, :]
        y = np.matmul(np.matmul(mh, x.astype(cd, copy=False)), mw.T) / count
        ctx.mh, ctx.mw, ctx.count, ctx.out = mh, mw, count, out
        return y.astype(x.dtype, copy=False)

    def describe(self) -> str:
        return f"→ {self.out[0]}×{self.out[1]}"

    @staticmethod
    def backward(ctx, g):
        if _is_tensor(g):
            t = (g / ctx.count.astype(g.dtype)) @ ctx.mw.astype(g.dtype)
            return (ctx.mh.T.astype(g.dtype) @ t,)
        cd = ctx.count.dtype
        t = np.matmul(g.astype(cd, copy=False) / ctx.count, ctx.mw)
        return (np.matmul(ctx.mh.T, t).astype(g.dtype, copy=False),)


def adaptive_output_size(output_size, in_size: tuple, fn: str) -> tuple:
    """An int, or a pair of ints / None (None: the input's size), as a pair of ints."""
    def ok(e):
        return e is None or (isinstance(e, (int, np.integer)) and not isinstance(e, bool))

    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 2 or not all(ok(e) for e in output_size):
            raise LayerInputError(f"{fn}: output_size must be 2 (an int or a pair of ints or "
                                  f"None), got output_size={output_size!r}")
        pair = tuple(output_size)
    elif ok(output_size) and output_size is not None:
        pair = (output_size, output_size)
    else:
        raise LayerInputError(f"{fn}: output_size must be an int or a pair of ints or None, "
                              f"got {output_size!r}")
    out = tuple(int(i if e is None else e) for e, i in zip(pair, in_size))
    if any(e < 0 for e in out):
        raise LayerInputError(f"{fn}: elements of output_size must be greater than or equal "
                              f"to 0 but received {out}")
    return out


# --------------------------------------------------------------------------- embedding
class Embedding(Primitive):
    """Rows of ``weight`` (num_embeddings, D) picked by integer ``indices`` (any shape):
    y = W[idx], shape idx.shape + (D,). dW: the rows of gy added at their indices (repeated
    indices accumulate), 0 for ``padding_idx``; with ``scale_grad_by_freq`` each row's
    gradient is divided by how often its index occurs in ``indices``."""

    op_name = "embedding"

    @staticmethod
    def forward(ctx, weight, indices, padding_idx=None, scale_grad_by_freq=False):
        if not isinstance(weight, np.ndarray) or weight.ndim != 2:
            raise LayerInputError(f"embedding: 'weight' must be 2-D (num_embeddings, "
                                  f"embedding_dim), got shape {np.shape(weight)}")
        if not isinstance(indices, np.ndarray) or indices.dtype.kind not in "iu":
            dt = indices.dtype if isinstance(indices, np.ndarray) else type(indices).__name__
            raise LayerInputError(f"embedding: expected integer indices (int64 or int32), "
                                  f"but got {dt}")
        n = weight.shape[0]
        if indices.size and (indices.min() < 0 or indices.max() >= n):
            bad = indices[(indices < 0) | (indices >= n)].reshape(-1)[0]
            raise LayerIndexError(f"embedding: index {bad} is out of range for an embedding "
                                  f"of {n} rows (weight of shape {weight.shape}); indices "
                                  f"of shape {indices.shape}")
        ctx.indices, ctx.rows = indices, weight.shape
        ctx.padding_idx, ctx.scale_grad_by_freq = padding_idx, scale_grad_by_freq
        return np.take(weight, indices, axis=0)

    def describe(self) -> str:
        d = f"{self.rows[0]} rows"
        return d + (f", padding_idx {self.padding_idx}" if self.padding_idx is not None else "")

    @staticmethod
    def backward(ctx, g):
        n, dim = ctx.rows
        idx = ctx.indices.reshape(-1)
        g2 = g.reshape((-1, dim))
        scale = None
        if ctx.scale_grad_by_freq:
            scale = (1.0 / np.bincount(idx, minlength=n)[idx]).astype(g.dtype)[:, None]
        if _is_tensor(g2):
            if scale is None:
                gw = Scatter.apply(g2, shape=(n, dim), idx=idx)
            else:
                gw = _FreqScatter.apply(g2, shape=(n, dim), idx=idx, scale=scale)
            if ctx.padding_idx is not None:
                keep = np.ones((n, 1), dtype=g.dtype)
                keep[ctx.padding_idx] = 0
                gw = gw * keep
            return (gw,)
        gw = np.zeros((n, dim), dtype=g.dtype)
        np.add.at(gw, idx, g2 if scale is None else g2 * scale)
        if ctx.padding_idx is not None:
            gw[ctx.padding_idx] = 0
        return (gw,)


class _FreqScatter(Primitive):
    """The gradient of ``Embedding`` with ``scale_grad_by_freq``: rows ``g · scale`` added at
    ``idx``. Its own gradient is the plain gather ``g[idx]``, without the scale, as torch's
    ``embedding_dense_double_backward`` (the scale is a training heuristic, not part of the
    forward map; with it unscaled here second derivatives match finite differences of the
    scaled first derivative)."""

    op_name = "embedding_backward"

    @staticmethod
    def forward(ctx, g, shape, idx, scale):
        ctx.idx = idx
        out = np.zeros(shape, dtype=g.dtype)
        np.add.at(out, idx, g * scale)
        return out

    @staticmethod
    def backward(ctx, g):
        return (g[ctx.idx],)
