"""Compiled loops for the engine's commonest large elementwise cases (numba, the ``fast``
extra), each beside the NumPy line it replaces in ``ops.py``, and tested against it.

Two costs of NumPy that these loops avoid:

* **A broadcast row.** ``x - μ`` with x (N, C) and μ (1, C) makes NumPy run its inner loop
  once per row of C values; on a 128×256 float32 array that costs 1.7 times ``x - y`` of one
  shape (6.5 µs against 3.9). Every composed norm, bias and affine parameter is such a row.
* **Two results, two passes.** The gradients of ``a · r`` are ``g · r`` and ``Σ g · a`` over
  the rows: NumPy writes one and then reads everything again for the other (``np.einsum``).
  ReLU's gradient took four passes (a mask, its bits, a product); ``np.maximum(a, 0)`` takes
  three times as long as a product (and gives +0 for -0, where torch keeps -0).

A loop here makes one pass and writes each result once. Elementwise results are bit for bit
NumPy's (the same IEEE operation on the same two values; no fast-math). Sums over the rows
are taken in float64 (products of two float32 values are exact in float64) and rounded once
to the input's dtype: at least as close to the exact sum as NumPy's.

Conventions: ``a``, ``g``, ``y`` are C-contiguous (M, C) arrays (the caller views (..., C)
as (M, C)), ``r`` is a contiguous (C,) row of the same dtype, ``out`` a new (M, C) array.
``ops`` imports this module on the first large op that fits (``ops._loops``); with
``TINYGRAD_BN_KERNELS=numpy`` or without numba it never does. Once imported, the flat
elementwise loops (ReLU, tanh's gradient) serve small arrays too: one call costs less than
NumPy's two or three.
"""
from __future__ import annotations

import numpy as np

try:  # the optional "fast" extra
    import numba
except ImportError:
    numba = None

available = numba is not None


def _compiled(fn):
    """``fn`` compiled without the GIL, cached on disk, with IEEE arithmetic: no fast-math,
    and NumPy's error model (x / 0 is inf or nan, not an exception). The loops vectorize
    along the contiguous axis as written."""
    if numba is None:
        return fn
    return numba.njit(nogil=True, cache=True, error_model="numpy")(fn)


# Each kernel that may write where it reads comes twice: into ``out``, and in place (``_``
# at the end of its name, into its first argument). One loop for both would not vectorize,
# its output possibly overlapping its input.

# ------------------------------------------------------------- a (M, C) array and a row
@_compiled
def add_row(a, r, out):
    """``out = a + r``."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = a[i, j] + r[j]


@_compiled
def add_row_(a, r):
    """``a += r``."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            a[i, j] += r[j]


@_compiled
def sub_row(a, r, out):
    """``out = a - r``."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = a[i, j] - r[j]


@_compiled
def mul_row(a, r, out):
    """``out = a * r``."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = a[i, j] * r[j]


@_compiled
def mul_row_(a, r):
    """``a *= r``."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            a[i, j] *= r[j]


@_compiled
def div_row(a, r, out):
    """``out = a / r``."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = a[i, j] / r[j]


@_compiled
def div_row_(a, r):
    """``a /= r``."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            a[i, j] /= r[j]


@_compiled
def double_mul_row(a, r, out):
    """``out = (a + a) * r``: the gradient of ``a ** 2`` for an upstream gradient that is a
    broadcast row (a mean's)."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = (a[i, j] + a[i, j]) * r[j]


@_compiled
def double_mul_row_add_(a, r, acc):
    """``acc += (a + a) * r``: ``double_mul_row`` added into a gradient ``acc`` already holds
    (the same two roundings as the product written out and then added)."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            acc[i, j] = acc[i, j] + (a[i, j] + a[i, j]) * r[j]


# ------------------------------------------------- backward: a product and a sum at once
@_compiled
def row_sums_of_products(g, a):
    """The column sums ``Σ_i g[i] * a[i]`` (float64)."""
    c = g.shape[1]
    acc = np.zeros(c, np.float64)
    for i in range(g.shape[0]):
        for j in range(c):
            acc[j] += np.float64(g[i, j]) * np.float64(a[i, j])
    return acc


@_compiled
def mul_row_and_sum(g, r, a, out):
    """``out = g * r`` and the column sums ``Σ_i g[i] * a[i]`` (returned, float64): both
    gradients of ``a * r`` in one pass."""
    c = g.shape[1]
    acc = np.zeros(c, np.float64)
    for i in range(g.shape[0]):
        for j in range(c):
            t = g[i, j]
            acc[j] += np.float64(t) * np.float64(a[i, j])
            out[i, j] = t * r[j]
    return acc


@_compiled
def mul_row_and_sum_(g, r, a):
    """``mul_row_and_sum`` writing ``g * r`` into ``g``."""
    c = g.shape[1]
    acc = np.zeros(c, np.float64)
    for i in range(g.shape[0]):
        for j in range(c):
            t = g[i, j]
            acc[j] += np.float64(t) * np.float64(a[i, j])
            g[i, j] = t * r[j]
    return acc


@_compiled
def div_row_and_sum(g, r, y, out):
    """``out = g / r`` and the column sums ``Σ_i out[i] * y[i]`` (returned, float64): the
    two gradients of ``y = a / r`` (d/dr is minus that sum) in one pass."""
    c = g.shape[1]
    acc = np.zeros(c, np.float64)
    for i in range(g.shape[0]):
        for j in range(c):
            t = g[i, j] / r[j]
            out[i, j] = t
            acc[j] += np.float64(t) * np.float64(y[i, j])
    return acc


@_compiled
def div_row_and_sum_(g, r, y):
    """``div_row_and_sum`` writing ``g / r`` into ``g``."""
    c = g.shape[1]
    acc = np.zeros(c, np.float64)
    for i in range(g.shape[0]):
        for j in range(c):
            t = g[i, j] / r[j]
            g[i, j] = t
            acc[j] += np.float64(t) * np.float64(y[i, j])
    return acc


# ------------------------------------------------------------------------ flat arrays
# C-contiguous arrays of one shape, any number of axes, taken flat (a view made inside the
# loop costs nothing; one made by the caller costs a Python call per array).
@_compiled
def relu(a, out):
    """``out = 0 if a < 0 else a`` (torch's relu: nan stays nan, -0 stays -0)."""
    a1, out1 = a.reshape(-1), out.reshape(-1)
    for i in range(a1.shape[0]):
        v = a1[i]
        if v < 0:
            out1[i] = 0
        else:
            out1[i] = v


@_compiled
def relu_grad(g, y, out):
    """``out = g`` where ``y > 0``, +0 elsewhere (torch's ``threshold_backward``: a nan or
    negative gradient where nothing flows back gives +0; where y is nan, g flows)."""
    g1, y1, out1 = g.reshape(-1), y.reshape(-1), out.reshape(-1)
    for i in range(g1.shape[0]):
        if y1[i] <= 0:
            out1[i] = 0
        else:
            out1[i] = g1[i]


@_compiled
def relu_grad_(g, y):
    """``relu_grad`` into ``g``."""
    g1, y1 = g.reshape(-1), y.reshape(-1)
    for i in range(g1.shape[0]):
        if y1[i] <= 0:
            g1[i] = 0


@_compiled
def tanh_grad(g, y, out):
    """``out = g · (1 − y·y)`` (tanh's gradient): NumPy's three operations in its order, bit
    for bit."""
    one = y.dtype.type(1)
    g1, y1, out1 = g.reshape(-1), y.reshape(-1), out.reshape(-1)
    for i in range(g1.shape[0]):
        out1[i] = g1[i] * (one - y1[i] * y1[i])


@_compiled
def tanh_grad_(g, y):
    """``tanh_grad`` into ``g``."""
    one = y.dtype.type(1)
    g1, y1 = g.reshape(-1), y.reshape(-1)
    for i in range(g1.shape[0]):
        g1[i] = g1[i] * (one - y1[i] * y1[i])


@_compiled
def momentum_average(arr, batch, momentum, rest):
    """``momentum · batch + rest · arr`` in float64 (rest = 1 − momentum), rounded once to
    ``arr``'s dtype: a running statistic's new value, torch's formula. 1-d arrays."""
    out = np.empty_like(arr)
    for i in range(arr.shape[0]):
        out[i] = momentum * np.float64(batch[i]) + rest * np.float64(arr[i])
    return out


@_compiled
def running_stats_(rm, rv, mean, var, factor, momentum, rest):
    """BatchNorm's running statistics written in place by one call (no signal handler runs
    between the two writes): ``rm = momentum · mean + rest · rm`` and
    ``rv = momentum · (var · factor) + rest · rv``, ``momentum_average``'s arithmetic, with
    ``var · factor`` (Bessel's m/(m − 1)) first rounded to var's dtype as NumPy's product.
    1-d arrays of one length; ``factor`` a scalar of var's dtype."""
    for i in range(rm.shape[0]):
        rm[i] = momentum * np.float64(mean[i]) + rest * np.float64(rm[i])
    for i in range(rv.shape[0]):
        rv[i] = momentum * np.float64(var[i] * factor) + rest * np.float64(rv[i])


# ------------------------------------------------------------------- optimizer updates
@_compiled
def sgd_momentum_(p, g, buf, momentum, lr):
    """SGD's step with momentum, in place and in one pass: ``buf = buf · momentum + g``, then
    ``p = p − lr · buf`` — the float operations of ``buf *= momentum; buf += g;
    p -= lr * buf``, in that order (NumPy makes three passes and a temporary array). 1-d
    arrays of one length and dtype that do not overlap; ``momentum`` and ``lr`` scalars of
    that dtype."""
    for i in range(p.shape[0]):
        v = buf[i] * momentum + g[i]
        buf[i] = v
        p[i] = p[i] - lr * v
