"""Compiled loop kernels for the fused norms: one read of each array per phase.

The NumPy kernels of ``fused.py`` make one pass over memory per operation (about a dozen for
a BatchNorm forward+backward). These loops do the same arithmetic element by element, so each
array is read once per phase and every intermediate stays in a register. They are compiled
by numba (the optional ``fast`` extra: ``pip install "tinygrad-bn[fast]"``). ``fused.py``
imports this module on first use (importing numba takes a while); without numba, or with
``TINYGRAD_BN_KERNELS=numpy`` in the environment, it uses its NumPy kernels. The kernels
release the GIL, so ``_threads.run_blocks`` runs blocks of the leading axis on several cores
at once.

Every kernel sees x as a 2-d array and works on its rows ``[lo, hi)``; the innermost loop
always runs along the contiguous axis, so the compiler vectorizes it. Arithmetic is in the
input's dtype, as in the NumPy kernels; sums are taken in that dtype over runs of at most
``RUN`` values (or ``ROWS`` rows) and the runs are added in float64. Three families:

* **rows** — LayerNorm, RMSNorm, GroupNorm, InstanceNorm: x as (S, n), one statistic per
  row over its n values. γ and β come as (P, D): row s uses ``γ[s % P]``, each value for a
  segment of n/D positions (P = 1, D = n for LayerNorm; P = groups and D = channels per group
  for GroupNorm; P = channels, D = 1 for InstanceNorm).
* **columns** — BatchNorm of (N, C): one statistic per column c over the N rows.
* **channels** — BatchNorm of (N, C, L): x as (N·C, L), row r belongs to channel r % C.

Statistics come from one pass over d = x − K and d², K a value of the data (the row's first
for the rows, the first sample's for BatchNorm): μ = K + E[d], σ² = E[d²] − E[d]², well
conditioned because K lies among the values. BatchNorm's statistics span every block: phase
1 sums d and d² per block, the blocks' sums are added in block order, and phase 2 writes y.
The backward kernels read x (the node's saved input) and recompute x̂ = (x − μ)·rstd in a
register instead of keeping an x̂ array: a subtraction and a product per element instead of
a whole array of memory and its traffic.
"""
from __future__ import annotations

import numpy as np

try:  # the optional "fast" extra
    import numba
except ImportError:
    numba = None

__all__ = ["available", "rows_forward", "rows_backward", "columns_sums", "columns_apply",
           "columns_grad_sums", "columns_dx", "channels_sums", "channels_apply",
           "channels_grad_sums", "channels_dx"]

available = numba is not None


RUN = 2048  # values summed in the input's dtype before the run is added to a float64 total
ROWS = 64  # rows of per-column sums in the input's dtype before they are added in float64


def _compiled(fn):
    """``fn`` compiled without the GIL, cached on disk. Sums may be reassociated (so they
    vectorize) and products fused; NaN and inf propagate as in IEEE arithmetic."""
    if numba is None:
        return fn
    return numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})(fn)


# ------------------------------------------------------------------------------- helpers
# Each sum is a plain loop in the input's dtype over one run (so it vectorizes), called on
# successive slices whose results are added in float64.
@_compiled
def _run_shifted(xs, k):
    p1 = xs.dtype.type(0)
    p2 = xs.dtype.type(0)
    for j in range(xs.shape[0]):
        t = xs[j] - k
        p1 += t
        p2 += t * t
    return p1, p2


@_compiled
def _shifted_sums(xs, k):
    """(Σ (xs − k), Σ (xs − k)²) in one pass: runs of ``RUN`` values in the input's dtype,
    added in float64."""
    s1 = 0.0
    s2 = 0.0
    for j0 in range(0, xs.shape[0], RUN):
        p1, p2 = _run_shifted(xs[j0:j0 + RUN], k)
        s1 += p1
        s2 += p2
    return s1, s2


@_compiled
def _run_grad_sums(xs, gs, ws, m, r, dws, dbs):
    ph = xs.dtype.type(0)
    phx = xs.dtype.type(0)
    for j in range(xs.shape[0]):
        gj = gs[j]
        xh = (xs[j] - m) * r
        h = ws[j] * gj
        ph += h
        phx += h * xh
        dws[j] += gj * xh
        dbs[j] += gj
    return ph, phx


@_compiled
def _grad_sums(xs, gs, ws, m, r, dws, dbs):
    """(Σ h, Σ h·x̂) of one row, h = γ·g, x̂ = (x − m)·r, summed as ``_shifted_sums``; adds
    g·x̂ and g to the per-element dγ, dβ sums ``dws``, ``dbs``."""
    sh = 0.0
    shx = 0.0
    for j0 in range(0, xs.shape[0], RUN):
        j1 = j0 + RUN
        ph, phx = _run_grad_sums(xs[j0:j1], gs[j0:j1], ws[j0:j1], m, r, dws[j0:j1],
                                 dbs[j0:j1])
        sh += ph
        shx += phx
    return sh, shx


@_compiled
def _run_seg_sums(xs, gs, m, r):
    a1 = xs.dtype.type(0)
    a2 = xs.dtype.type(0)
    for l in range(xs.shape[0]):
        a1 += gs[l]
        a2 += gs[l] * ((xs[l] - m) * r)
    return a1, a2


@_compiled
def _seg_sums(xs, gs, m, r):
    """(Σ g, Σ g·x̂) over one segment, x̂ = (x − m)·r, as ``_shifted_sums``."""
    sg = 0.0
    sgx = 0.0
    for j0 in range(0, xs.shape[0], RUN):
        a1, a2 = _run_seg_sums(xs[j0:j0 + RUN], gs[j0:j0 + RUN], m, r)
        sg += a1
        sgx += a2
    return sg, sgx


@_compiled
def _affine_run(xs, m, r, w, b, ys):
    """ys = (xs − m)·r·w + b (one segment, scalar γ and β)."""
    for j in range(xs.shape[0]):
        ys[j] = (xs[j] - m) * r * w + b


@_compiled
def _dx_run(xs, gs, m, r, w, c1, c2, dxs):
    """dxs = r·(w·g − c1 − x̂·c2), x̂ = (x − m)·r (one segment, scalar γ)."""
    for j in range(xs.shape[0]):
        dxs[j] = r * (w * gs[j] - c1 - (xs[j] - m) * r * c2)


@_compiled
def _columns_run(x, pivot, a1, a2):
    C = x.shape[1]
    for i in range(x.shape[0]):
        xi = x[i]
        for c in range(C):
            t = xi[c] - pivot[c]
            a1[c] += t
            a2[c] += t * t


@_compiled
def _columns_grad_run(x, g, mean, a1, a2):
    C = x.shape[1]
    for i in range(x.shape[0]):
        xi, gi = x[i], g[i]
        for c in range(C):
            a1[c] += gi[c]
            a2[c] += gi[c] * (xi[c] - mean[c])


# ---------------------------------------------------------------------------------- rows
@_compiled
def rows_forward(x, w, b, seg, eps, centred, lo, hi, y, mean, var, rstd):
    """For each row s in [lo, hi): μ = mean(x_s) (0 when not centred), σ² = mean((x_s − μ)²),
    r = 1/√(σ² + ε), y_s = (x_s − μ)·r·γ + β; μ, σ² and r go to ``mean``, ``var``, ``rstd``.
    γ, β: (P, D), row s uses ``γ[s % P]``, each value for ``seg`` consecutive positions."""
    period, D = w.shape
    n = x.shape[1]
    cast = x.dtype.type
    for s in range(lo, hi):
        xs = x[s]
        if centred:  # one pass, shifted by the row's first value (K): μ = K + E[x − K],
            k = xs[0]  # σ² = E[(x − K)²] − E[x − K]², well conditioned as K is a sample
            s1, s2 = _shifted_sums(xs, k)
            d = s1 / n
            m = cast(k + d)
            v = max(s2 / n - d * d, 0.0)
        else:
            m = cast(0)
            v = _shifted_sums(xs, m)[1] / n
        r = 1.0 / np.sqrt(v + eps)
        mean[s] = m
        var[s] = v
        rstd[s] = r
        rc = cast(r)
        ws, bs, ys = w[s % period], b[s % period], y[s]
        if seg == 1:  # one γ per position (LayerNorm, RMSNorm)
            for j in range(n):
                ys[j] = (xs[j] - m) * rc * ws[j] + bs[j]
        else:  # one γ per segment of positions (GroupNorm, InstanceNorm)
            for d in range(D):
                _affine_run(xs[d * seg:d * seg + seg], m, rc, ws[d], bs[d],
                            ys[d * seg:d * seg + seg])


@_compiled
def rows_backward(x, g, w, mean, rstd, seg, centred, want_dx, lo, hi, dx, dw, db):
    """dx for rows [lo, hi), and this block's dγ = Σ g·x̂, dβ = Σ g (added into ``dw``,
    ``db``, float64, shaped like γ: (P, D)). With h = γ·g:
    ``dx = r·(h − Σh/n − x̂·Σ(h·x̂)/n)`` (no Σh/n term when not centred)."""
    period, D = w.shape
    n = x.shape[1]
    cast = x.dtype.type
    shape = w.shape if seg == 1 else (0, 0)  # seg = 1: dγ, dβ of the last ROWS rows
    pw = np.zeros(shape, x.dtype)
    pb = np.zeros(shape, x.dtype)
    for s in range(lo, hi):
        m = cast(mean[s])
        r = cast(rstd[s])
        p = s % period
        xs, gs, ws = x[s], g[s], w[p]
        if seg == 1:
            sh, shx = _grad_sums(xs, gs, ws, m, r, pw[p], pb[p])
        else:  # per segment: Σg and Σg·x̂ once, then γ times those
            sh = 0.0
            shx = 0.0
            for d in range(D):
                sg, sgx = _seg_sums(xs[d * seg:d * seg + seg], gs[d * seg:d * seg + seg], m, r)
                dw[p, d] += sgx
                db[p, d] += sg
                sh += ws[d] * sg
                shx += ws[d] * sgx
        if want_dx:
            c1 = cast(sh / n) if centred else cast(0)
            c2 = cast(shx / n)
            dxs = dx[s]
            if seg == 1:
                for j in range(n):
                    dxs[j] = r * (ws[j] * gs[j] - c1 - (xs[j] - m) * r * c2)
            else:
                for d in range(D):
                    o = d * seg
                    _dx_run(xs[o:o + seg], gs[o:o + seg], m, r, ws[d], c1, c2,
                            dxs[o:o + seg])
        if seg == 1 and ((s - lo + 1) % ROWS == 0 or s == hi - 1):  # the last rows' dγ, dβ
            dw += pw
            db += pb
            pw[:] = 0
            pb[:] = 0


# ------------------------------------------------------------------------------- columns
@_compiled
def columns_sums(x, pivot, lo, hi, s1, s2):
    """Σ d and Σ d² of d = x − K per column, over rows [lo, hi) (added into s1, s2); runs of
    ``ROWS`` rows are summed in the input's dtype."""
    a1 = np.zeros(x.shape[1], x.dtype)
    a2 = np.zeros(x.shape[1], x.dtype)
    for i0 in range(lo, hi, ROWS):
        a1[:] = 0
        a2[:] = 0
        _columns_run(x[i0:min(hi, i0 + ROWS)], pivot, a1, a2)
        s1 += a1
        s2 += a2


@_compiled
def columns_apply(x, mean, scale, shift, lo, hi, y):
    """y = (x − μ_c)·scale_c + shift_c for rows [lo, hi) (scale = γ·rstd, shift = β)."""
    C = x.shape[1]
    for i in range(lo, hi):
        xi, yi = x[i], y[i]
        for c in range(C):
            yi[c] = (xi[c] - mean[c]) * scale[c] + shift[c]


@_compiled
def columns_grad_sums(x, g, mean, lo, hi, sg, sgd):
    """Σ g and Σ g·(x − μ) per column over rows [lo, hi) (added into sg, sgd; times rstd the
    latter is Σ g·x̂), as ``columns_sums``."""
    a1 = np.zeros(x.shape[1], x.dtype)
    a2 = np.zeros(x.shape[1], x.dtype)
    for i0 in range(lo, hi, ROWS):
        a1[:] = 0
        a2[:] = 0
        i1 = min(hi, i0 + ROWS)
        _columns_grad_run(x[i0:i1], g[i0:i1], mean, a1, a2)
        sg += a1
        sgd += a2


@_compiled
def columns_dx(x, g, mean, scale, cg, k, lo, hi, dx):
    """dx = scale_c·(g − cg_c − (x − μ_c)·k_c) for rows [lo, hi): scale = γ·rstd,
    cg = Σg/m, k = rstd·Σ(g·x̂)/m, so that (x − μ)·k = x̂·Σ(g·x̂)/m."""
    C = x.shape[1]
    for i in range(lo, hi):
        xi, gi, di = x[i], g[i], dx[i]
        for c in range(C):
            di[c] = scale[c] * (gi[c] - cg[c] - (xi[c] - mean[c]) * k[c])


# ------------------------------------------------------------------------------ channels
@_compiled
def channels_sums(x, pivot, lo, hi, s1, s2):
    """As ``columns_sums`` for x as (N·C, L): row r adds to channel r % C."""
    C = s1.shape[0]
    for r in range(lo, hi):
        c = r % C
        xr = x[r]
        k = pivot[c]
        a1, a2 = _shifted_sums(xr, k)
        s1[c] += a1
        s2[c] += a2


@_compiled
def channels_apply(x, mean, scale, shift, lo, hi, y):
    """As ``columns_apply`` for x as (N·C, L)."""
    C = mean.shape[0]
    one = x.dtype.type(1)
    for r in range(lo, hi):
        c = r % C
        _affine_run(x[r], mean[c], scale[c], one, shift[c], y[r])


@_compiled
def channels_grad_sums(x, g, mean, lo, hi, sg, sgd):
    """As ``columns_grad_sums`` for x as (N·C, L)."""
    C = mean.shape[0]
    one = x.dtype.type(1)
    for r in range(lo, hi):
        c = r % C
        a1, a2 = _seg_sums(x[r], g[r], mean[c], one)
        sg[c] += a1
        sgd[c] += a2


@_compiled
def channels_dx(x, g, mean, scale, cg, k, lo, hi, dx):
    """As ``columns_dx`` for x as (N·C, L)."""
    C = mean.shape[0]
    L = x.shape[1]
    for r in range(lo, hi):
        c = r % C
        m, a, k1, k2 = mean[c], scale[c], cg[c], k[c]
        xr, gr, dr = x[r], g[r], dx[r]
        for l in range(L):
            dr[l] = a * (gr[l] - k1 - (xr[l] - m) * k2)
