"""Differential tests: tinygrad_bn against PyTorch (the oracle), method by method.

Every row of ``CASES`` (one section per op family below) names

* the expression, written once for both libraries as ``expr(M, *args, **params)``: ``M`` is the
  module (``tinygrad_bn`` or ``torch``), ``args`` are Tensors of that library, ``params`` the drawn
  arguments (dims, sizes, scalars). ``texpr`` is given only where torch spells the call
  differently (NumPy extensions of tinygrad_bn: negative slice steps, ``transpose()``, ``ddof=``);
* ``draw``: how the inputs are drawn -- shapes (0-d, empty axes, size-1 axes, broadcasting across
  ranks), dtypes (float16/32/64, and int32/int64/bool for promotion), the value domain (``ANY``
  includes 0.0 and -0.0; every array is sometimes all small integers -- ties -- or one constant --
  zero variance) and the memory layout of the ndarray handed to ``Tensor`` (transposed,
  strided, reversed, zero-stride broadcast views);
* ``grad``: whether ``.grad`` is compared for a random upstream gradient; ``grad2``: whether the
  second derivative is compared (``tinygrad_bn.grad(..., create_graph=True)`` then the gradient
  of a random projection of that, against ``torch.autograd.grad``).

Rules: same output structure, shapes, dtypes (numpy dtype <-> torch dtype exactly),
``requires_grad``; values within a tolerance by dtype (NaN positions and infinities must agree);
where torch raises, tinygrad_bn must raise (any exception); where tinygrad_bn raises and torch
does not, the test fails. Torch runs with its real default dtype float32 here (so that
``int_tensor / int_tensor`` and ``int_tensor + 2.5`` are float32, as the spec asks). Torch gets
``torch.tensor(ndarray)``, whose memory layout (a Fortran-order one kept) ``view`` depends on.

Not compared (see "accepted torch quirks"): a few torch quirks and singular points, each
excluded per case for exactly the inputs that hit it -- ``quirk`` (rejected), ``values_only``
(values compared, gradients not: var/std with correction >= N) and ``singular2`` (rejected by
the second-derivative test only).

Examples: the default run draws 20 valid examples per case for the first-derivative test and
15 per case for the second-derivative one: 122 cases, 44 of them with second derivatives, so
about 3,100 examples (plus about 500 rejected draws; a failing test stops at its first
failure), in about 20-30 s. To run more, set TINYGRAD_BN_FUZZ_EXAMPLES (the number of examples
of every test), e.g.

    TINYGRAD_BN_FUZZ_EXAMPLES=300 .venv/bin/python -m pytest -q tests/test_differential.py

(300: about 46,000 examples in about 3-4 minutes; ``--hypothesis-show-statistics`` counts them).
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_bn as tg


def _examples(default: int) -> int:
    return int(os.environ.get("TINYGRAD_BN_FUZZ_EXAMPLES", default))


F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
I32, I64, BOOL = np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.bool_)
FLOATS = (F64, F32, F16)
ALL_DTYPES = FLOATS + (I64, I32, BOOL)
TOL = {F64: 1e-10, F32: 1e-5, F16: 1e-2}
TOL2 = {F64: 1e-8, F32: 1e-4}  # second derivatives: a longer chain of rounding


# ================================================================================== domains
@dataclass(frozen=True)
class Domain:
    """Floats in [lo, hi] (given a random sign when ``signed``) mixed with edge values.

    ``specials`` are exact in float16; the "ties" and "const" array modes use only them.
    ``ints`` bounds the values of integer arrays.
    """

    name: str
    specials: tuple
    lo: float
    hi: float
    ints: tuple = (-3, 3)
    signed: bool = False


ANY = Domain("any", (0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 3.0), -4.0, 4.0)
WIDE = Domain("wide", ANY.specials + (30.0, -30.0, 100.0, -100.0), -4.0, 4.0)  # exp overflow
POS = Domain("pos", (1.0, 2.0, 0.5, 3.0), 0.25, 4.0, ints=(1, 3))
NONNEG = Domain("nonneg", (0.0, -0.0) + POS.specials, 0.25, 4.0, ints=(0, 3))
NONZERO = Domain("nonzero", (1.0, -1.0, 2.0, -2.0, 0.5, -0.5), 0.25, 4.0, ints=(1, 3),
                 signed=True)


def _float_elements(dom: Domain, dtype):
    real = st.floats(dom.lo, dom.hi, width=np.finfo(dtype).bits, allow_subnormal=False)
    if dom.signed:
        real = st.tuples(real, st.booleans()).map(lambda t: -t[0] if t[1] else t[0])
    return st.one_of(real, st.sampled_from(dom.specials))


def draw_array(data, shape, dtype, dom: Domain = ANY, label="x") -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype == BOOL:
        elements = st.booleans()
    elif dtype.kind in "iu":
        elements = st.integers(*dom.ints)
    else:
        mode = data.draw(st.sampled_from(["values", "ties", "const"]), label=f"{label} values")
        if mode == "const":
            return np.full(shape, data.draw(st.sampled_from(dom.specials)), dtype)
        elements = st.sampled_from(dom.specials) if mode == "ties" else _float_elements(dom, dtype)
    return data.draw(hnp.arrays(dtype, shape, elements=elements), label=label)


LAYOUTS = ("C", "transposed", "strided", "reversed", "broadcast")


def with_layout(data, a: np.ndarray, label="x") -> np.ndarray:
    """The same values (for "broadcast": the first row repeated) in a non-contiguous ndarray."""
    if a.ndim == 0:
        return a
    kind = data.draw(st.sampled_from(LAYOUTS), label=f"{label} layout")
    if kind == "transposed":  # Fortran order: a transposed view
        buf = np.empty(a.shape[::-1], a.dtype).T
    elif kind == "strided":
        buf = np.empty(a.shape + (2,), a.dtype)[..., 0]
    elif kind == "reversed":
        buf = np.empty(a.shape, a.dtype)[::-1]
    elif kind == "broadcast":  # read-only, stride 0 along axis 0
        return np.broadcast_to(a[:1], a.shape)
    else:
        return a
    buf[...] = a
    return buf


# =================================================================================== shapes
def draw_shape(data, min_dims=0, max_dims=3, max_side=3, empty=True, label="shape") -> tuple:
    """Sides 1..max_side; sometimes one side 0 (an empty tensor)."""
    nd = data.draw(st.integers(min_dims, max_dims), label=f"{label} ndim")
    shape = [data.draw(st.integers(1, max_side)) for _ in range(nd)]
    if empty and nd and data.draw(st.integers(0, 7), label=f"{label} empty?") == 7:
        shape[data.draw(st.integers(0, nd - 1))] = 0
    return tuple(shape)


def draw_bshapes(data, n: int, max_dims=3) -> list:
    """``n`` mutually broadcastable shapes of different ranks (0-d, size-1 axes, empty)."""
    base = draw_shape(data, max_dims=max_dims, label="broadcast shape")
    shapes = []
    for _ in range(n):
        r = data.draw(st.integers(0, len(base)), label="rank")
        dims = base[len(base) - r:]
        shapes.append(tuple(d if data.draw(st.booleans()) else 1 for d in dims))
    return shapes


def draw_dim(data, ndim: int, extra: int = 0, bad=True) -> int:
    """A dim valid for ``ndim`` (+``extra``, e.g. 1 for unsqueeze/stack); rarely out of range."""
    n = max(ndim, 1) + extra
    if bad and data.draw(st.integers(0, 15), label="dim out of range?") == 15:
        return data.draw(st.sampled_from([n, -n - 1]), label="bad dim")
    return data.draw(st.integers(-n, n - 1), label="dim")


def draw_dims(data, ndim: int):
    """A non-empty tuple of dims (rarely a repeat: torch raises). The empty tuple, which torch
    reads as every dim, has its own case (``reduce_empty_dims``)."""
    n = max(ndim, 1)
    dims = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True),
                     label="dims")
    dims = [d - n if data.draw(st.booleans()) else d for d in dims]
    if dims and data.draw(st.integers(0, 15), label="repeat a dim?") == 15:
        dims.append(dims[0])
    return tuple(dims)


# ==================================================================================== cases
@dataclass
class Arg:
    """One input: a Tensor (requires grad if floating) or, with ``tensor=False``, a raw
    ndarray given to tinygrad_bn as is and to torch as a tensor (operands, masks, indices)."""

    array: np.ndarray
    tensor: bool = True


@dataclass(frozen=True)
class Case:
    name: str
    expr: Callable  # expr(M, *args, **params), M = tinygrad_bn or torch
    draw: Callable  # draw(data, floats) -> (list[Arg], params)
    texpr: Callable | None = None  # torch spelling, where it differs
    grad: bool = True
    grad2: bool = False
    # Accepted torch quirks / singular points, each a predicate ``(args, params) -> bool`` on
    # the drawn inputs (see "quirks" below): ``quirk`` rejects the example in both tests,
    # ``values_only`` compares the values but not the gradients, ``singular2`` rejects the
    # example in the second-derivative test only.
    quirk: Callable | None = None
    values_only: Callable | None = None
    singular2: Callable | None = None


def _tensor(data, shape, dtype, dom=ANY, label="x", layout=True) -> Arg:
    a = draw_array(data, shape, dtype, dom, label)
    return Arg(with_layout(data, a, label) if layout else a)


def _array(data, shape, dtype, dom=ANY, label="a") -> Arg:
    return Arg(draw_array(data, shape, dtype, dom, label), tensor=False)


def _dtype(data, dtypes, label="dtype"):
    return np.dtype(data.draw(st.sampled_from(dtypes), label=label))


def unary(dom=ANY, dtypes=None, min_dims=0, max_dims=3, empty=True, **param_strategies):
    def draw(data, floats):
        dt = _dtype(data, dtypes or floats)
        shape = draw_shape(data, min_dims, max_dims, empty=empty)
        params = {k: data.draw(s, label=k) for k, s in param_strategies.items()}
        return [_tensor(data, shape, dt, dom)], params
    return draw


def binary(da=ANY, db=ANY, dtypes=None, mixed=False, tensors=(True, True), **param_strategies):
    """Two broadcastable operands; ``mixed``: each its own dtype; ``tensors``: False -> ndarray."""
    def draw(data, floats):
        sa, sb = draw_bshapes(data, 2)
        da_t = _dtype(data, dtypes or floats, "dtype a")
        db_t = _dtype(data, dtypes or floats, "dtype b") if mixed else da_t
        params = {k: data.draw(s, label=k) for k, s in param_strategies.items()}
        args = [_tensor(data, sa, da_t, da, "a") if tensors[0] else _array(data, sa, da_t, da, "a"),
                _tensor(data, sb, db_t, db, "b") if tensors[1] else _array(data, sb, db_t, db, "b")]
        return args, params
    return draw


def reduction(dom=ANY, dims="int", keepdim=True, dtypes=None, min_dims=0, **param_strategies):
    """``x`` plus ``dim`` ("int", "tuple" or "any" of the two) and maybe ``keepdim``."""
    def draw(data, floats):
        dt = _dtype(data, dtypes or floats)
        shape = draw_shape(data, min_dims)
        kind = dims if dims != "any" else data.draw(st.sampled_from(["int", "tuple"]))
        params = {"dim": draw_dim(data, len(shape)) if kind == "int" else
                  draw_dims(data, len(shape))}
        if keepdim:
            params["keepdim"] = data.draw(st.booleans(), label="keepdim")
        params.update({k: data.draw(s, label=k) for k, s in param_strategies.items()})
        return [_tensor(data, shape, dt, dom)], params
    return draw


def matmul_operands(dtypes=None, mixed=False, tensors=(True, True)):
    """1-D @ 1-D, 1-D @ 2-D, 2-D @ 1-D, 2-D @ 2-D and batched (batch dims broadcast); sizes
    0..3 (an empty inner dim gives zeros); rarely a 0-d operand or mismatched sizes (raise)."""
    def draw(data, floats):
        kind = data.draw(st.sampled_from(["mm", "mv", "vm", "vv", "batched", "0-d"]), label="kind")
        n, k, m = (data.draw(st.integers(0, 3), label=s) for s in "nkm")
        k2 = k if data.draw(st.integers(0, 15)) < 15 else k + 1
        if kind == "batched":
            ba, bb = draw_bshapes(data, 2, max_dims=2)
            sa = ba + (n, k) if data.draw(st.booleans()) else (k,)
            sb = bb + (k2, m) if sa == (k,) or data.draw(st.booleans()) else (k2,)
        else:
            sa = {"mm": (n, k), "mv": (n, k), "vm": (k,), "vv": (k,), "0-d": ()}[kind]
            sb = {"mm": (k2, m), "mv": (k2,), "vm": (k2, m), "vv": (k2,), "0-d": (k2,)}[kind]
            if kind == "0-d" and data.draw(st.booleans()):
                sa, sb = sb, sa
        da_t = _dtype(data, dtypes or floats, "dtype a")
        db_t = _dtype(data, dtypes or floats, "dtype b") if mixed else da_t
        if (da_t != db_t or BOOL in (da_t, db_t)) and 0 in sa + sb:
            reject()  # torch skips its dtype check (mixed, bool) for some empty products: a quirk
        make = [_tensor if t else _array for t in tensors]
        return [make[0](data, sa, da_t, ANY, "a"), make[1](data, sb, db_t, ANY, "b")], {}
    return draw


CASES: dict = {}


def add(*cases: Case) -> None:
    for c in cases:
        assert c.name not in CASES, c.name
        CASES[c.name] = c


# ------------------------------------------------------------------------ accepted torch quirks
# Regions where torch is not the oracle we follow; each predicate marks exactly those inputs
# (everything else at the edges -- 0 and -0.0, ties, empty, size 1, float16 -- stays in).
def _neg_zero(a) -> np.ndarray:
    a = np.asarray(a)
    return (a == 0) & np.signbit(a) if a.dtype.kind == "f" else np.zeros(a.shape, bool)


def neg_zero_fractional_pow(base, exp) -> bool:
    """``(-0.0) ** p``, p fractional: torch computes ``x ** ±0.5`` (also inside the gradients'
    ``x ** (p - 1)``, ``x ** (p - 2)``) as sqrt/rsqrt, whose infinities keep the sign of -0.0."""
    try:
        b, e = np.broadcast_arrays(np.asarray(base), np.asarray(exp, dtype=np.float64))
    except ValueError:
        return False
    return bool(np.any(_neg_zero(b) & (e != np.round(e))))


def bool_exponent_with_grad(base, exp) -> bool:
    """``x ** False``, float ** bool tensor with x requiring grad: torch's backward raises (or
    gives nan)."""
    return _is_float(np.asarray(base).dtype) and np.asarray(exp).dtype == BOOL


def _reduced_count(shape, dim):
    """Values per output entry of a reduction over ``dim`` (None or (): all dims); None if a
    dim is out of range (torch raises)."""
    if dim is None or dim == ():
        return int(np.prod(shape))
    n = max(len(shape), 1)
    dims = dim if isinstance(dim, tuple) else (dim,)
    if not all(-n <= d < n for d in dims):
        return None
    return int(np.prod([shape[d % n] for d in set(d % n for d in dims) if len(shape)]))


def no_dof(shape, dim, correction) -> bool:
    """var/std with ``correction >= N``: torch's gradients there are not replicated."""
    n = _reduced_count(shape, dim)
    return n is not None and n - correction <= 0


def zero_variance(x, dim) -> bool:
    """Some reduced slice of std holds a single value or (numerically) constant values: the
    second derivative is singular there. Numerically: a spread below eps^(1/3) (6e-6 in
    float64), where std's second derivative (~1/std, over two values exactly 0 as a difference
    of ~1/std³ terms) is rounding noise above the tolerance."""
    x = np.asarray(x)
    if _reduced_count(x.shape, dim) in (None, 0) or x.size == 0:
        return False
    axes = None if dim is None or dim == () or x.ndim == 0 else \
        tuple(sorted(set(d % x.ndim for d in (dim if isinstance(dim, tuple) else (dim,)))))
    spread = np.max(x, axis=axes) - np.min(x, axis=axes)
    return bool(np.any(spread < np.cbrt(np.finfo(x.dtype).eps)))


def constant_low_precision_slice(x, dim) -> bool:
    """A slice of two or more equal values: torch's variance there is not 0 but its
    summation's rounding (1.5e-7 for three float32 copies of 1.6924341; in float64 too, e.g.
    27 copies of 2.5020077), with gradients to match; ours is exactly 0. Not replicated."""
    x = np.asarray(x)
    if x.size == 0 or (_reduced_count(x.shape, dim) or 0) < 2:
        return False
    axes = None if dim is None or dim == () or x.ndim == 0 else \
        tuple(sorted(set(d % x.ndim for d in (dim if isinstance(dim, tuple) else (dim,)))))
    return bool(np.any(np.max(x, axis=axes) == np.min(x, axis=axes)))


def _has_zero(a) -> bool:
    return bool(np.any(np.asarray(a) == 0))


def _square_underflows(a) -> bool:
    """Some nonzero value's square is below the smallest normal number."""
    a = np.asarray(a)
    return _is_float(a.dtype) and bool(np.any((a != 0) & (np.abs(a) < np.sqrt(
        np.finfo(a.dtype).tiny))))


def _has_numerical_zero(a) -> bool:
    """Some value is 0 or so small that its cube underflows (e.g. the smallest normal float):
    at such y the second derivative ``2x / y³`` of ``x / y`` is the same singular point."""
    a = np.asarray(a)
    return bool(np.any(np.abs(a) < np.cbrt(np.finfo(a.dtype).tiny))) if _is_float(a.dtype) \
        else _has_zero(a)


BINOPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
          "/": lambda a, b: a / b, "**": lambda a, b: a ** b}
CMPOPS = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
          ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}
SCALARS = [2, 0, -1, 3, 0.5, -0.0, 0.0, 2.5, -1.5, True, False]

# ----------------------------------------------------------------------- arithmetic (+ - * / **)
add(
    Case("add", lambda M, x, y: x + y, binary(), grad2=True),
    Case("sub", lambda M, x, y: x - y, binary(), grad2=True),
    Case("mul", lambda M, x, y: x * y, binary(), grad2=True),
    Case("div", lambda M, x, y: x / y, binary(), grad2=True,  # x/0, 0/0, x/-0.0
         singular2=lambda args, p: _has_numerical_zero(args[1].array)),  # d2 of x/y at y=0
    Case("div_nonzero", lambda M, x, y: x / y, binary(ANY, NONZERO), grad2=True),
    Case("pow", lambda M, x, y: x ** y, binary(POS, ANY), grad2=True),
    Case("pow_any_base", lambda M, x, y: x ** y, binary(ANY, ANY), grad2=True,  # 0**y, (-2)**y
         singular2=lambda args, p: _has_zero(args[0].array)),  # d2/dy2 of 0 ** y
    Case("neg", lambda M, x: -x, unary(), grad2=True),
    Case("pos", lambda M, x: +x, unary()),
    Case("scalar_right", lambda M, x, op, s: BINOPS[op](x, s),
         unary(op=st.sampled_from(sorted(BINOPS)), s=st.sampled_from(SCALARS)), grad2=True,
         quirk=lambda args, p: p["op"] == "**" and (
             neg_zero_fractional_pow(args[0].array, p["s"]) or  # (-0.0) ** 0.5: sqrt's sign
             bool_exponent_with_grad(args[0].array, p["s"]))),  # x ** True: backward raises
    Case("scalar_left", lambda M, x, op, s: BINOPS[op](s, x),
         unary(op=st.sampled_from(sorted(BINOPS)), s=st.sampled_from(SCALARS)), grad2=True,
         # 0 / y with y² subnormal: y is 0 to torch's gradient, 0 / y² = 0/0 = nan there
         quirk=lambda args, p: p["op"] == "/" and p["s"] == 0 and
         _square_underflows(args[0].array),
         singular2=lambda args, p: (p["op"] == "**" and p["s"] == 0) or  # d2/dy2 of 0 ** y
         (p["op"] == "/" and _has_numerical_zero(args[0].array))),  # d2 of s / y at y = 0
    Case("pow_scalar_exponent", lambda M, x, p: x ** p,
         unary(p=st.sampled_from([2, 3, 1, 0, -1, -2, 0.5, 1.5, -0.5, 2.0, 0.0, 3.5])),
         grad2=True,
         quirk=lambda args, p: neg_zero_fractional_pow(args[0].array, p["p"])),  # sqrt's sign
    Case("pow_scalar_base", lambda M, x, b: b ** x,
         unary(b=st.sampled_from([2, 2.0, 0.5, 1, 0, 0.0, -2.0, -1, 3])), grad2=True,
         singular2=lambda args, p: p["b"] == 0),  # d2/dy2 of 0 ** y
    Case("ndarray_right", lambda M, x, a, op: BINOPS[op](x, a),
         binary(ANY, POS, tensors=(True, False), op=st.sampled_from(sorted(BINOPS)))),
    Case("ndarray_left", lambda M, a, x, op: BINOPS[op](a, x),
         binary(POS, NONZERO, tensors=(False, True), op=st.sampled_from(sorted(BINOPS)))),
)

# --------------------------------------------------------------------------- unary elementwise
add(
    Case("exp", lambda M, x: x.exp(), unary(WIDE), grad2=True),
    Case("log", lambda M, x: x.log(), unary(NONNEG), grad2=True),  # log(0), log(-0.0)
    Case("log_any", lambda M, x: x.log(), unary(ANY), grad2=True),  # negative -> nan
    Case("sqrt", lambda M, x: x.sqrt(), unary(NONNEG), grad2=True),
    Case("sqrt_any", lambda M, x: x.sqrt(), unary(ANY), grad2=True),
    Case("tanh", lambda M, x: x.tanh(), unary(WIDE), grad2=True),
    Case("sigmoid", lambda M, x: x.sigmoid(), unary(WIDE), grad2=True),
    Case("relu", lambda M, x: x.relu(), unary(ANY), grad2=True),  # gradient 0 at 0
    Case("abs", lambda M, x: x.abs(), unary(ANY), grad2=True),  # gradient 0 at 0 and -0.0
    Case("clone", lambda M, x: x.clone(), unary(), grad2=True),
)

# -------------------------------------------------------------------------------------- matmul
add(
    Case("matmul", lambda M, x, y: x @ y, matmul_operands(), grad2=True),
    Case("matmul_ndarray_right", lambda M, x, a: x @ a, matmul_operands(tensors=(True, False))),
    Case("matmul_ndarray_left", lambda M, a, x: a @ x, matmul_operands(tensors=(False, True))),
    Case("matmul_mixed_dtypes", lambda M, x, y: x @ y,
         matmul_operands(dtypes=ALL_DTYPES[:-1], mixed=True)),  # different dtypes raise
)

# ---------------------------------------------------------------------------------- reductions
add(
    Case("sum", lambda M, x: x.sum(), unary(), grad2=True),
    Case("sum_dim", lambda M, x, dim, keepdim: x.sum(dim, keepdim=keepdim),
         reduction(dims="any"), grad2=True),
    Case("sum_axis_keepdims", lambda M, x, dim, keepdim: x.sum(axis=dim, keepdims=keepdim),
         reduction(dims="any")),
    Case("sum_dim_and_axis", lambda M, x, dim: x.sum(dim=dim, axis=dim),  # both: TypeError
         reduction(keepdim=False)),
    Case("mean", lambda M, x: x.mean(), unary(), grad2=True),  # empty -> nan
    Case("mean_dim", lambda M, x, dim, keepdim: x.mean(dim, keepdim=keepdim),
         reduction(dims="any"), grad2=True),
    Case("amax", lambda M, x: x.amax(), unary()),
    Case("amax_dim", lambda M, x, dim, keepdim: x.amax(dim, keepdim=keepdim),
         reduction(dims="any")),  # ties share the gradient
    Case("amin_dim", lambda M, x, dim, keepdim: x.amin(dim=dim, keepdim=keepdim),
         reduction(dims="any")),
    Case("max", lambda M, x: x.max(), unary()),  # ties share evenly; empty raises
    Case("min", lambda M, x: x.min(), unary()),
    Case("max_dim", lambda M, x, dim, keepdim: x.max(dim, keepdim=keepdim), reduction()),
    Case("min_dim", lambda M, x, dim, keepdim: x.min(dim, keepdim), reduction()),
    Case("max_dim_values", lambda M, x, dim: x.max(dim).values, reduction(keepdim=False)),
    Case("max_dim_indices", lambda M, x, dim: x.max(dim=dim).indices, reduction(keepdim=False)),
    Case("min_dim_fields", lambda M, x, dim, keepdim: (lambda r: (r.values, r.indices))(
        x.min(axis=dim, keepdims=keepdim)), reduction()),
    Case("reduce_empty_dims", lambda M, x, op: getattr(x, op)(()),  # torch: every dim
         unary(op=st.sampled_from(["sum", "mean", "amax", "amin", "var", "std"])),
         # torch's backward of var/std(dim=()) reads () as no dim (N = 1: ±inf gradients, a
         # torch bug); its forward equals var()/std(), which is the oracle here
         texpr=lambda M, x, op: getattr(x, op)() if op in ("var", "std") else
         getattr(x, op)(()),
         values_only=lambda args, p: p["op"] in ("var", "std") and
         no_dof(args[0].array.shape, None, 1)),
    Case("argmax", lambda M, x: x.argmax(), unary()),
    Case("argmin", lambda M, x: x.argmin(), unary()),
    Case("argmax_dim", lambda M, x, dim, keepdim: x.argmax(dim, keepdim=keepdim), reduction()),
    Case("argmin_dim", lambda M, x, dim, keepdim: x.argmin(dim=dim, keepdim=keepdim),
         reduction()),
)

# ------------------------------------------------------------------------------------ var, std
CORRECTIONS = st.integers(0, 3)


def var_quirks(dim=lambda p: None, c=lambda p: 1, std=False) -> dict:
    """``values_only`` where correction >= N (torch's gradients there are not replicated);
    ``singular2`` there too and, for std, where a reduced slice has zero variance."""
    def dof(args, p):
        return no_dof(args[0].array.shape, dim(p), c(p))

    def sing2(args, p):
        return dof(args, p) or (std and zero_variance(args[0].array, dim(p)))

    def quirk(args, p):
        return constant_low_precision_slice(args[0].array, dim(p))
    return {"values_only": dof, "singular2": sing2, "quirk": quirk}


def _dim(p):
    return p["dim"]


def _unbiased(p):
    return int(p["unbiased"])


def _c(p):
    return p["c"]


for _f in ("var", "std"):
    _s = _f == "std"
    add(
        Case(f"{_f}", lambda M, x, f=_f: getattr(x, f)(), unary(), grad2=True,
             **var_quirks(std=_s)),
        Case(f"{_f}_dim", lambda M, x, dim, f=_f: getattr(x, f)(dim),
             reduction(dims="any", keepdim=False), grad2=True, **var_quirks(_dim, std=_s)),
        Case(f"{_f}_dim_keepdim", lambda M, x, dim, keepdim, f=_f: getattr(x, f)(
            dim, keepdim=keepdim), reduction(dims="any"), grad2=True,
            **var_quirks(_dim, std=_s)),
        Case(f"{_f}_dim_unbiased_positional", lambda M, x, dim, unbiased, keepdim, f=_f:
             getattr(x, f)(dim, unbiased, keepdim), reduction(unbiased=st.booleans()),
             grad2=True, **var_quirks(_dim, _unbiased, std=_s)),
        Case(f"{_f}_unbiased_only", lambda M, x, unbiased, f=_f: getattr(x, f)(unbiased),
             unary(unbiased=st.booleans()), grad2=True, **var_quirks(c=_unbiased, std=_s)),
        Case(f"{_f}_unbiased_kw", lambda M, x, dim, unbiased, f=_f: getattr(x, f)(
            dim, unbiased=unbiased), reduction(dims="any", keepdim=False,
                                               unbiased=st.booleans()),
            **var_quirks(_dim, _unbiased, std=_s)),
        Case(f"{_f}_correction", lambda M, x, dim, keepdim, c, f=_f: getattr(x, f)(
            dim, correction=c, keepdim=keepdim), reduction(dims="any", c=CORRECTIONS),
            grad2=True, **var_quirks(_dim, _c, std=_s)),
        Case(f"{_f}_correction_all", lambda M, x, c, f=_f: getattr(x, f)(correction=c),
             unary(c=CORRECTIONS), **var_quirks(c=_c, std=_s)),
        Case(f"{_f}_axis_ddof", lambda M, x, dim, keepdim, c, f=_f: getattr(x, f)(
            axis=dim, keepdims=keepdim, ddof=c), reduction(dims="any", c=CORRECTIONS),
            texpr=lambda M, x, dim, keepdim, c, f=_f: getattr(x, f)(
                dim, correction=c, keepdim=keepdim),  # NumPy's ddof= (an extension)
            **var_quirks(_dim, _c, std=_s)),
    )

# ---------------------------------------------------------------------- softmax, log_softmax
add(
    Case("softmax", lambda M, x, dim: x.softmax(dim), reduction(WIDE, keepdim=False),
         grad2=True),
    Case("log_softmax", lambda M, x, dim: x.log_softmax(dim), reduction(WIDE, keepdim=False),
         grad2=True),
)


# ------------------------------------------------------------------------------------- shapes
def _reshape_target(data, shape, bad=True):
    n = int(np.prod(shape))
    targets = [(-1,), (n,), (1, -1), (n, 1, 1), (1, -1, 1)]
    targets += [(d, n // d) for d in range(2, n) if n % d == 0]
    targets += [(-1, d) for d in range(2, n) if n % d == 0]
    if n == 1:
        targets += [(), (1, 1)]
    if n == 0:
        targets += [(0,), (0, 3), (2, 0, 1)]
    if bad:
        targets += [(n + 1,), (-1, -1)] + ([(0, -1)] if n == 0 else [])
    return data.draw(st.sampled_from(targets), label="target")


def reshape_draw(varargs=False):
    """A target shape (-1, size-1 axes, () for one element; rarely invalid: torch raises).
    With ``varargs`` never (): torch's ``x.reshape()`` without arguments is a TypeError."""
    def draw(data, floats):
        shape = draw_shape(data, max_dims=3)
        x = _tensor(data, shape, _dtype(data, floats))
        target = _reshape_target(data, shape)
        return [x], {"target": (1,) if varargs and target == () else target}
    return draw


def transposed_reshape_draw(data, floats):
    shape = draw_shape(data, min_dims=2, max_dims=3)
    x = _tensor(data, shape, _dtype(data, floats))
    tshape = (shape[1], shape[0]) + shape[2:]
    return [x], {"target": _reshape_target(data, tshape, bad=False)}


def two_dims_draw(extra=0, min_dims=0):
    def draw(data, floats):
        shape = draw_shape(data, min_dims=min_dims, max_dims=4)
        x = _tensor(data, shape, _dtype(data, floats))
        return [x], {"d0": draw_dim(data, len(shape), extra), "d1": draw_dim(data, len(shape),
                                                                               extra)}
    return draw


def perm_draw(varargs=False):
    """A permutation (entries maybe negative; rarely a repeat: torch raises). With ``varargs``
    the tensor has at least one dim: torch's ``x.permute()`` without arguments is a TypeError."""
    def draw(data, floats):
        shape = draw_shape(data, min_dims=int(varargs), max_dims=4)
        nd = len(shape)
        perm = list(data.draw(st.permutations(range(nd)), label="perm"))
        perm = [p - nd if data.draw(st.booleans()) else p for p in perm]
        if nd and data.draw(st.integers(0, 15)) == 15:
            perm[-1] = perm[0]
        return [_tensor(data, shape, _dtype(data, floats))], {"perm": tuple(perm)}
    return draw


def full_perm_draw(data, floats):  # three or more dims given to transpose: NumPy's extension
    shape = draw_shape(data, min_dims=3, max_dims=4)
    perm = tuple(data.draw(st.permutations(range(len(shape))), label="perm"))
    return [_tensor(data, shape, _dtype(data, floats))], {"perm": perm}


def squeeze_dims_draw(data, floats):
    shape = tuple(s if data.draw(st.booleans()) else 1 for s in draw_shape(data, max_dims=4))
    return [_tensor(data, shape, _dtype(data, floats))], {"dims": draw_dims(data, len(shape))}


def squeeze_draw(data, floats):
    shape = tuple(s if data.draw(st.booleans()) else 1 for s in draw_shape(data, max_dims=4))
    return [_tensor(data, shape, _dtype(data, floats))], {"dim": draw_dim(data, len(shape))}


def flatten_draw(data, floats):
    shape = draw_shape(data, max_dims=4)
    return [_tensor(data, shape, _dtype(data, floats))], {
        "start": draw_dim(data, len(shape)), "end": draw_dim(data, len(shape))}


def expand_draw(varargs=False):
    """New leading sizes, -1 (keep), 1 -> n; rarely a non-1 size changed (torch raises).
    With ``varargs`` at least one size: torch's ``x.expand()`` is a TypeError."""
    def draw(data, floats):
        shape = draw_shape(data, min_dims=int(varargs), max_dims=3)
        return [_tensor(data, shape, _dtype(data, floats))], {"sizes": _expand_sizes(data, shape)}
    return draw


def _expand_sizes(data, shape):
    lead = tuple(data.draw(st.integers(0, 3)) for _ in range(data.draw(st.integers(0, 2))))
    sizes = []
    for s in shape:
        choice = data.draw(st.sampled_from(["same", "-1", "grow"]))
        if choice == "grow" and s == 1:
            sizes.append(data.draw(st.integers(0, 3)))
        elif choice == "grow" and data.draw(st.integers(0, 7)) == 7:
            sizes.append(s + 1)  # expanding a non-1 size: torch raises
        else:
            sizes.append(-1 if choice == "-1" else s)
    return lead + tuple(sizes)


add(
    Case("reshape", lambda M, x, target: x.reshape(target), reshape_draw()),
    Case("reshape_varargs", lambda M, x, target: x.reshape(*target), reshape_draw(True)),
    Case("view", lambda M, x, target: x.view(*target), reshape_draw(True)),
    Case("view_tuple", lambda M, x, target: x.view(target), reshape_draw()),
    Case("transpose", lambda M, x, d0, d1: x.transpose(d0, d1), two_dims_draw()),
    Case("transpose_no_args", lambda M, x: x.transpose(), unary(max_dims=4),
         texpr=lambda M, x: x.permute(tuple(range(x.ndim - 1, -1, -1)))),  # NumPy's extension
    Case("transpose_full_permutation", lambda M, x, perm: x.transpose(*perm), full_perm_draw,
         texpr=lambda M, x, perm: x.permute(*perm)),  # NumPy's extension
    Case("permute", lambda M, x, perm: x.permute(*perm), perm_draw(varargs=True)),
    Case("permute_tuple", lambda M, x, perm: x.permute(perm), perm_draw()),
    Case("T", lambda M, x: x.T, unary(max_dims=4)),
    Case("swapaxes", lambda M, x, d0, d1: x.swapaxes(d0, d1), two_dims_draw()),
    Case("unsqueeze", lambda M, x, d0, d1: x.unsqueeze(d0), two_dims_draw(extra=1)),
    Case("squeeze", lambda M, x: x.squeeze(), squeeze_dims_draw),
    Case("squeeze_dim", lambda M, x, dim: x.squeeze(dim), squeeze_draw),
    Case("squeeze_dims", lambda M, x, dims: x.squeeze(dims), squeeze_dims_draw),
    Case("flatten", lambda M, x: x.flatten(), unary(max_dims=4)),  # 0-d -> (1,)
    Case("flatten_start", lambda M, x, start, end: x.flatten(start), flatten_draw),
    Case("flatten_start_end", lambda M, x, start, end: x.flatten(start, end), flatten_draw),
    Case("expand", lambda M, x, sizes: x.expand(*sizes), expand_draw(varargs=True)),
    Case("expand_tuple", lambda M, x, sizes: x.expand(sizes), expand_draw()),
)


# ----------------------------------------------------------------------------------- indexing
def _sides(data):
    return tuple(data.draw(st.integers(1, 4), label="side") for _ in range(3))


def getitem_basic_draw(data, floats):
    """Ints (negative, rarely out of range), slices with steps, None, Ellipsis."""
    shape = a, b, c = _sides(data)
    i = data.draw(st.integers(-a, a - 1)) if data.draw(st.integers(0, 15)) < 15 else a
    j = data.draw(st.integers(-c, c - 1))
    lo, hi = data.draw(st.integers(-5, 5)), data.draw(st.integers(-5, 5))
    step = data.draw(st.integers(1, 3))
    idx = data.draw(st.sampled_from([
        i, (i,), (slice(lo, hi, step),), (i, slice(None, -1), None),
        (slice(lo, None), slice(None), slice(None, None, step)), (Ellipsis, j),
        (None, slice(None), None, j), (slice(1, None), None, Ellipsis), (i, Ellipsis, None, j),
        (Ellipsis,), (None,), (slice(hi, lo),), (i, j, i),
    ]), label="index")
    return [_tensor(data, shape, _dtype(data, floats))], {"idx": idx}


def getitem_negative_step_draw(data, floats):
    shape = _sides(data)
    s0, s2 = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    return [_tensor(data, shape, _dtype(data, floats))], {"s0": s0, "s2": s2}


def getitem_0d_draw(data, floats):
    idx = data.draw(st.sampled_from([(), None, Ellipsis, (None, None), (Ellipsis, None)]))
    return [_tensor(data, (), _dtype(data, floats))], {"idx": idx}


def mask_draw(data, floats):
    shape = a, b, c = _sides(data)
    kind = data.draw(st.sampled_from(["full", "axis0", "axis01"]), label="mask")
    mshape = {"full": shape, "axis0": (a,), "axis01": (a, b)}[kind]
    return [_tensor(data, shape, _dtype(data, floats)), _array(data, mshape, BOOL)], {}


def int_array_draw(data, floats):
    """Integer arrays with a repeated index (the gradient adds up there), maybe negative."""
    shape = a, b, c = _sides(data)
    kind = data.draw(st.sampled_from(["1d", "2d", "apart", "adjacent", "ellipsis"]))

    def rep(n, size):
        i = data.draw(hnp.arrays(np.int64, size, elements=st.integers(-n, n - 1)))
        i.flat[-1] = i.flat[0]
        return Arg(i, tensor=False)

    if kind == "1d":
        return [_tensor(data, shape, _dtype(data, floats)), rep(a, 5)], {"kind": kind}
    if kind == "2d":
        return [_tensor(data, shape, _dtype(data, floats)), rep(b, (2, 2))], {"kind": kind}
    if kind == "apart":
        return [_tensor(data, shape, _dtype(data, floats)), rep(a, 3), rep(c, 3)], {"kind": kind}
    if kind == "adjacent":
        return [_tensor(data, shape, _dtype(data, floats)), rep(a, (3, 1)), rep(b, 2)], \
            {"kind": kind}
    return [_tensor(data, shape, _dtype(data, floats)), rep(c, 4)], {"kind": kind}


def _int_index(x, *i, kind):
    return {"1d": lambda: x[i[0]], "2d": lambda: x[:, i[0]], "apart": lambda: x[i[0], :, i[1]],
            "adjacent": lambda: x[i[0], i[1]], "ellipsis": lambda: x[..., i[0]]}[kind]()


def list_index_draw(data, floats):
    shape = a, b, c = _sides(data)
    lst = data.draw(st.lists(st.integers(-a, a - 1), max_size=4), label="list")
    if lst and data.draw(st.integers(0, 15)) == 15:
        lst.append(a)  # out of range
    return [_tensor(data, shape, _dtype(data, floats))], {"lst": lst}


add(
    Case("getitem_basic", lambda M, x, idx: x[idx], getitem_basic_draw),
    Case("getitem_negative_step", lambda M, x, s0, s2: x[::-s0, :, ::-s2],
         getitem_negative_step_draw,  # NumPy's extension; torch: flip then step
         texpr=lambda M, x, s0, s2: x.flip(0).flip(2)[::s0, :, ::s2]),
    Case("getitem_0d", lambda M, x, idx: x[idx], getitem_0d_draw),
    Case("getitem_bool_mask", lambda M, x, m: x[m], mask_draw),
    Case("getitem_bool_tensor", lambda M, x: x[x > 0], unary()),
    Case("getitem_int_arrays", lambda M, x, *i, kind: _int_index(x, *i, kind=kind),
         int_array_draw),
    Case("getitem_list", lambda M, x, lst: x[lst], list_index_draw),  # [] -> empty result
    Case("getitem_empty_list", lambda M, x: x[[]], unary(min_dims=1)),
)


# -------------------------------------------------------------------- cat, stack, split, where
def cat_draw(n_max=3, same_shape=False):
    def draw(data, floats):
        shape = draw_shape(data, min_dims=1, max_dims=3)
        nd = len(shape)
        dim = draw_dim(data, nd, extra=1 if same_shape else 0)
        n = data.draw(st.integers(1, n_max), label="n")
        args = []
        for i in range(n):
            s = list(shape)
            if not same_shape and -nd <= dim < nd:
                s[dim] = data.draw(st.integers(0, 3))
            if data.draw(st.integers(0, 15)) == 15:  # a mismatch: torch raises
                s[0] += 1
            same = i > 0 and data.draw(st.booleans(), label="same dtype")
            dt = args[0].array.dtype if same else _dtype(data, floats)
            args.append(_tensor(data, tuple(s), dt, label=f"x{i}"))
        return args, {"dim": dim}
    return draw


def split_draw(sections):
    def draw(data, floats):
        shape = draw_shape(data, min_dims=1, max_dims=3)
        dim = draw_dim(data, len(shape))
        size = shape[dim] if -len(shape) <= dim < len(shape) else 2
        if sections:
            cuts = sorted(data.draw(st.lists(st.integers(0, size), max_size=3), label="cuts"))
            sp = [b - a for a, b in zip([0] + cuts, cuts + [size])]
            if data.draw(st.integers(0, 15)) == 15:
                sp[-1] += 1  # does not sum to the size: torch raises
        else:
            sp = data.draw(st.integers(0 if size == 0 or data.draw(st.integers(0, 15)) == 15
                                       else 1, 4), label="split_size")
        return [_tensor(data, shape, _dtype(data, floats))], {"sp": sp, "dim": dim}
    return draw


def where_draw(scalar=False, mixed=False):
    def draw(data, floats):
        sc, sa, sb = draw_bshapes(data, 3)
        dta = _dtype(data, floats, "dtype a")
        dtb = _dtype(data, floats, "dtype b") if mixed else dta
        args = [_array(data, sc, BOOL, label="cond"), _tensor(data, sa, dta, label="a")]
        if scalar:
            return args, {"s": data.draw(st.sampled_from([0.0, 0, 1.5, -2]), label="s")}
        return args + [_tensor(data, sb, dtb, label="b")], {}
    return draw


add(
    # torch's legacy rule skips 1-D (0,) tensors in cat whatever the dim: not replicated
    Case("cat", lambda M, *xs, dim: M.cat(list(xs), dim), cat_draw(),
         quirk=lambda args, p: any(a.array.shape == (0,) for a in args)),
    Case("cat_kw", lambda M, *xs, dim: M.cat(xs, dim=dim), cat_draw(n_max=2),
         quirk=lambda args, p: any(a.array.shape == (0,) for a in args)),
    Case("stack", lambda M, *xs, dim: M.stack(list(xs), dim), cat_draw(same_shape=True)),
    Case("split_size", lambda M, x, sp, dim: x.split(sp, dim), split_draw(False)),
    Case("split_sections", lambda M, x, sp, dim: x.split(sp, dim=dim), split_draw(True)),
    Case("where", lambda M, c, x, y: M.where(c, x, y), where_draw(), grad2=True),
    Case("where_mixed_dtypes", lambda M, c, x, y: M.where(c, x, y), where_draw(mixed=True)),
    Case("where_scalar", lambda M, c, x, s: M.where(c, x, s), where_draw(scalar=True)),
    Case("where_cond_tensor", lambda M, x, y: M.where(x > y, x, y), binary(), grad2=True),
)

# --------------------------------------------------------------------------------- comparisons
add(
    Case("compare", lambda M, x, y, op: CMPOPS[op](x, y),
         binary(mixed=True, dtypes=ALL_DTYPES, op=st.sampled_from(sorted(CMPOPS)))),
    Case("compare_scalar_right", lambda M, x, op, s: CMPOPS[op](x, s),
         unary(op=st.sampled_from(sorted(CMPOPS)), s=st.sampled_from(SCALARS))),
    Case("compare_scalar_left", lambda M, x, op, s: CMPOPS[op](s, x),
         unary(op=st.sampled_from(sorted(CMPOPS)), s=st.sampled_from(SCALARS))),
)

# ---------------------------------------------------------------------------- type promotion
UNARY = {"exp": lambda x: x.exp(), "log": lambda x: x.log(), "sqrt": lambda x: x.sqrt(),
         "tanh": lambda x: x.tanh(), "sigmoid": lambda x: x.sigmoid(),
         "relu": lambda x: x.relu(), "abs": lambda x: x.abs(), "neg": lambda x: -x,
         "clone": lambda x: x.clone()}
REDUCE = {"sum": lambda x: x.sum(), "sum0": lambda x: x.sum(0), "mean": lambda x: x.mean(),
          "var": lambda x: x.var(), "std": lambda x: x.std(0), "amax": lambda x: x.amax(),
          "max": lambda x: x.max(), "max0": lambda x: x.max(0), "argmax": lambda x: x.argmax(),
          "softmax": lambda x: x.softmax(0)}
add(
    Case("promote_binary", lambda M, x, y, op: BINOPS[op](x, y),
         binary(mixed=True, dtypes=ALL_DTYPES, op=st.sampled_from(sorted(BINOPS))),
         quirk=lambda args, p: p["op"] == "**" and  # float ** bool tensor: backward raises
         bool_exponent_with_grad(args[0].array, args[1].array)),
    Case("promote_ndarray", lambda M, x, a, op: BINOPS[op](x, a),
         binary(mixed=True, dtypes=ALL_DTYPES, tensors=(True, False),
                op=st.sampled_from(sorted(BINOPS))),
         quirk=lambda args, p: p["op"] == "**" and  # float ** bool array: backward raises
         bool_exponent_with_grad(args[0].array, args[1].array)),
    Case("promote_scalar_right", lambda M, x, op, s: BINOPS[op](x, s),
         unary(dtypes=ALL_DTYPES, op=st.sampled_from(sorted(BINOPS)),
               s=st.sampled_from(SCALARS + [7, -2, 2.5])),
         quirk=lambda args, p: p["op"] == "**" and (
             neg_zero_fractional_pow(args[0].array, p["s"]) or  # (-0.0) ** 0.5: sqrt's sign
             bool_exponent_with_grad(args[0].array, p["s"]))),  # x ** True: backward raises
    Case("promote_scalar_left", lambda M, x, op, s: BINOPS[op](s, x),
         unary(dtypes=ALL_DTYPES, op=st.sampled_from(sorted(BINOPS)),
               s=st.sampled_from(SCALARS + [7, -2, 2.5])),
         # 0 / y with y² subnormal: y is 0 to torch's gradient, 0 / y² = 0/0 = nan there
         quirk=lambda args, p: p["op"] == "/" and p["s"] == 0 and
         _square_underflows(args[0].array)),
    Case("promote_unary", lambda M, x, op: UNARY[op](x),
         unary(dtypes=ALL_DTYPES, op=st.sampled_from(sorted(UNARY)))),
    Case("promote_reduce", lambda M, x, op: REDUCE[op](x),
         unary(dtypes=ALL_DTYPES, min_dims=1, op=st.sampled_from(sorted(REDUCE))),
         values_only=lambda args, p: p["op"] in ("var", "std") and
         no_dof(args[0].array.shape, None if p["op"] == "var" else 0, 1),
         quirk=lambda args, p: p["op"] in ("var", "std") and constant_low_precision_slice(
             args[0].array, None if p["op"] == "var" else 0)),
    Case("promote_matmul", lambda M, x, y: x @ y, matmul_operands(dtypes=ALL_DTYPES, mixed=True)),
)

# -------------------------------------------------------- non-contiguous intermediate results
CHAIN = {  # a transposed (non-contiguous) Tensor flowing into a later op
    "exp": lambda M, t: t.exp(), "mul_row": lambda M, t: t * t[:1], "reshape": lambda M, t:
    t.reshape(-1), "flatten": lambda M, t: t.flatten(), "sum0": lambda M, t: t.sum(0),
    "var0": lambda M, t: t.var(0), "max1": lambda M, t: t.max(1)[0], "softmax": lambda M, t:
    t.softmax(-1), "slice": lambda M, t: t[1:, ::2], "cat": lambda M, t: M.cat([t, t], 0),
    "matmul": lambda M, t: t @ t.transpose(0, 1), "unsqueeze": lambda M, t: t.unsqueeze(1),
    "expand": lambda M, t: t.unsqueeze(0).expand(2, -1, -1), "clone": lambda M, t: t.clone(),
    "where": lambda M, t: M.where(t > 0, t, 0.0 * t), "split": lambda M, t: t.split(1, 1),
}
add(
    Case("noncontiguous_transpose_then", lambda M, x, op: CHAIN[op](M, x.transpose(0, 1)),
         unary(min_dims=2, max_dims=3, op=st.sampled_from(sorted(CHAIN))), grad2=True,
         values_only=lambda args, p: p["op"] == "var0" and no_dof(args[0].array.shape, 1, 1),
         quirk=lambda args, p: p["op"] == "var0" and
         constant_low_precision_slice(args[0].array, 1)),
    Case("noncontiguous_permute_then", lambda M, x, op: CHAIN[op](M, x.permute(2, 0, 1)),
         unary(min_dims=3, max_dims=3, op=st.sampled_from(sorted(CHAIN))),
         values_only=lambda args, p: p["op"] == "var0" and no_dof(args[0].array.shape, 2, 1),
         quirk=lambda args, p: p["op"] == "var0" and
         constant_low_precision_slice(args[0].array, 2)),
    Case("noncontiguous_expand_then", lambda M, x, op: CHAIN[op](M, x.expand(2, 3, 1)[:, :, 0]
                                                                  .transpose(0, 1)),
         unary(min_dims=1, max_dims=1, op=st.sampled_from(sorted(CHAIN))),
         quirk=lambda args, p: p["op"] == "var0" and args[0].array.dtype != np.float64),
    Case("transpose_then_reshape", lambda M, x, target: x.transpose(0, 1).reshape(target),
         transposed_reshape_draw),
    Case("transpose_then_view", lambda M, x, target: x.transpose(0, 1).view(target),
         transposed_reshape_draw),  # torch raises unless the strides allow a view
)


# ================================================================================== runner
_NP_OF_TORCH: dict = {}


def _np_dtype(torch, tdtype) -> np.dtype:
    if tdtype not in _NP_OF_TORCH:
        _NP_OF_TORCH[tdtype] = torch.empty((), dtype=tdtype).numpy().dtype
    return _NP_OF_TORCH[tdtype]


@contextlib.contextmanager
def quiet():
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def torch_default_float32(torch):
    """Torch's real default dtype (the fixture sets float64) for scalar promotion."""
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(prev)


def _is_float(dtype) -> bool:
    return np.dtype(dtype).kind == "f"


def _tg_args(args):
    return [tg.Tensor(a.array, requires_grad=_is_float(a.array.dtype)) if a.tensor else a.array
            for a in args]


def _torch_args(torch, args):
    out = []
    for a in args:
        try:  # torch.tensor's own copy: it keeps a Fortran-order layout, as Tensor() does
            t = torch.tensor(a.array)  # (view() depends on it)
        except ValueError:  # negative strides, which torch refuses: a C-order copy
            t = torch.from_numpy(np.array(a.array, order="C", copy=True))
        if a.tensor and _is_float(a.array.dtype):
            t.requires_grad_(True)
        out.append(t)
    return out


def _outputs(out) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def working_dtype(dtypes) -> np.dtype:
    """The least precise floating dtype taking part (float64 if none): it sets the tolerance."""
    floats = [np.dtype(d) for d in dtypes if _is_float(d)]
    return min(floats, key=lambda d: d.itemsize) if floats else F64


def assert_close(actual, expected, dtype, what: str, work=None, table=None):
    """Within the tolerance of the working precision ``work`` (default: ``dtype``); NaN
    positions and infinities agree; integers and bools exactly."""
    actual = np.asarray(actual)
    if not _is_float(dtype):
        np.testing.assert_array_equal(actual, expected, err_msg=what)
        return
    tol = (table or TOL)[np.dtype(work or dtype)]
    finite = np.abs(expected[np.isfinite(expected)]).astype(np.float64)
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64), rtol=tol,
                               atol=tol * scale, equal_nan=True, err_msg=what)


def _describe(case, args, params) -> str:
    return (f"{case.name}: params={params!r}, inputs=" +
            ", ".join(f"{'Tensor' if a.tensor else 'ndarray'}({a.array.tolist()!r}, "
                      f"dtype={a.array.dtype})" for a in args))


def compare_outputs(torch, outs, touts, what, work):
    assert len(outs) == len(touts), f"{what}: {len(outs)} outputs, torch gives {len(touts)}"
    for i, (o, t) in enumerate(zip(outs, touts)):
        w = f"{what}, output {i}"
        assert isinstance(o, tg.Tensor), f"{w}: a {type(o).__name__}, not a Tensor"
        assert o.shape == tuple(t.shape), f"{w}: shape {o.shape}, torch {tuple(t.shape)}"
        tdt = _np_dtype(torch, t.dtype)
        assert o.dtype == tdt, f"{w}: dtype {o.dtype}, torch {tdt}"
        assert bool(o.requires_grad) == t.requires_grad, \
            f"{w}: requires_grad {o.requires_grad}, torch {t.requires_grad}"
        assert_close(o.data, t.detach().numpy(force=True), tdt, w, work)


def _upstream(data, shape, dtype, label="upstream"):
    seed = data.draw(st.integers(0, 2**32 - 1), label=f"{label} seed")
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _forward(torch, case, args, params):
    """(tinygrad_bn outputs, torch outputs, tg inputs, torch inputs); None if torch raises
    (after checking that tinygrad_bn raises too)."""
    what = _describe(case, args, params)
    xs, txs = _tg_args(args), _torch_args(torch, args)
    texpr = case.texpr or case.expr
    try:
        with quiet(), torch_default_float32(torch):
            tout = texpr(torch, *txs, **params)
    except Exception as e:  # noqa: BLE001 -- torch refuses: tinygrad_bn must refuse too
        _reject_torch_bug(e)
        with quiet(), pytest.raises(Exception):
            case.expr(tg, *xs, **params)
            pytest.fail(f"{what}: torch raises {type(e).__name__}: {e}; tinygrad_bn does not")
        return None
    with quiet():
        out = case.expr(tg, *xs, **params)
    assert isinstance(out, (tuple, list)) == isinstance(tout, (tuple, list)), \
        f"{what}: returns {type(out).__name__}, torch {type(tout).__name__}"
    touts = _outputs(tout)
    work = working_dtype([a.array.dtype for a in args] +
                         [_np_dtype(torch, t.dtype) for t in touts])
    return _outputs(out), touts, xs, txs, what, work


def _reject_torch_bug(e):
    if "INTERNAL ASSERT" in str(e):  # e.g. torch's backward of `True ** x`: not an oracle
        reject()


def _ids():
    return sorted(CASES)


@pytest.mark.parametrize("name", _ids())
@settings(max_examples=_examples(20))
@given(data=st.data())
def test_matches_torch(torch, name, data):
    with quiet():
        check_matches_torch(torch, name, data)


def check_matches_torch(torch, name, data):
    case = CASES[name]
    args, params = case.draw(data, FLOATS)
    if case.quirk and case.quirk(args, params):
        reject()  # an accepted torch quirk (see the case)
    res = _forward(torch, case, args, params)
    if res is None:
        return
    outs, touts, xs, txs, what, work = res
    compare_outputs(torch, outs, touts, what, work)
    if not case.grad or (case.values_only and case.values_only(args, params)):
        return
    diff = [(o, t) for o, t in zip(outs, touts) if t.requires_grad]
    if not diff:
        return
    ups = [_upstream(data, tuple(t.shape), _np_dtype(torch, t.dtype)) for _, t in diff]
    try:
        with quiet():
            for (_, t), up in zip(diff, ups):
                t.backward(torch.from_numpy(up), retain_graph=True)
    except Exception as e:  # noqa: BLE001
        _reject_torch_bug(e)
        with quiet(), pytest.raises(Exception):
            for (o, _), up in zip(diff, ups):
                o.backward(up, retain_graph=True)
            pytest.fail(f"{what}: torch's backward raises {type(e).__name__}: {e}")
        return
    with quiet():
        for (o, _), up in zip(diff, ups):
            o.backward(up, retain_graph=True)
    for i, (a, x, tx) in enumerate(zip(args, xs, txs)):
        if not (a.tensor and _is_float(a.array.dtype)):
            continue
        w = f"{what}: .grad of input {i}"
        if tx.grad is None:
            assert x.grad is None, f"{w}: torch leaves it None, tinygrad_bn gives {x.grad!r}"
            continue
        assert isinstance(x.grad, np.ndarray), f"{w}: a {type(x.grad).__name__}, not an ndarray"
        assert x.grad.shape == x.shape, f"{w}: shape {x.grad.shape}, input {x.shape}"
        assert x.grad.dtype == x.dtype, f"{w}: dtype {x.grad.dtype}, input {x.dtype}"
        assert_close(x.grad, tx.grad.numpy(force=True), x.dtype, w, work)


GRAD2_CASES = sorted(n for n, c in CASES.items() if c.grad2)


def _zeros_if_none(g, shape, dtype):
    if g is None:
        return np.zeros(shape, dtype)
    return np.asarray(g.data if isinstance(g, tg.Tensor) else g.detach().numpy(force=True))


@pytest.mark.parametrize("name", GRAD2_CASES)
# the singular points rejected above (std of size-1 or constant slices above all) are common
@settings(max_examples=_examples(15),
          suppress_health_check=list(settings.default.suppress_health_check) +
          [HealthCheck.filter_too_much])
@given(data=st.data())
def test_second_derivative(torch, name, data):
    with quiet():
        check_second_derivative(torch, name, data)


def check_second_derivative(torch, name, data):
    """tinygrad_bn.grad(out, xs, up, create_graph=True) and the gradient of
    sum(g_i * w_i) with respect to xs, against torch.autograd.grad, in float64 (in float32 the
    second derivative of std near zero variance is rounding noise)."""
    case = CASES[name]
    args, params = case.draw(data, (F64,))
    if any(f and f(args, params) for f in (case.quirk, case.values_only, case.singular2)):
        reject()  # an accepted torch quirk or a singular point (see the case)
    res = _forward(torch, case, args, params)
    if res is None:
        return
    outs, touts, xs, txs, what, work = res
    compare_outputs(torch, outs, touts, what, work)
    assert len(outs) == 1 or name.startswith("noncontiguous"), name
    out, tout = outs[0], touts[0]
    idx = [i for i, a in enumerate(args) if a.tensor and _is_float(a.array.dtype)]
    if not tout.requires_grad or not idx:
        return
    tin = [txs[i] for i in idx]
    tin_tg = [xs[i] for i in idx]
    up = _upstream(data, tuple(tout.shape), _np_dtype(torch, tout.dtype))
    try:
        with quiet():
            tg1 = torch.autograd.grad(tout, tin, grad_outputs=torch.from_numpy(up),
                                      create_graph=True, allow_unused=True)
    except Exception as e:  # noqa: BLE001
        _reject_torch_bug(e)
        raise
    with quiet():
        g1 = tg.grad(out, tin_tg, grad_outputs=up, create_graph=True, allow_unused=True)
    assert len(g1) == len(tin)
    ws = [_upstream(data, t.shape, _np_dtype(torch, t.dtype), "w") for t in tin]
    for k, (g, tgk, x) in enumerate(zip(g1, tg1, tin_tg)):
        w = f"{what}: first derivative of input {idx[k]}"
        if tgk is None:
            assert g is None or not np.any(np.asarray(g.data)), f"{w}: torch gives None"
            continue
        assert g is not None, f"{w}: None, torch gives a gradient"
        assert isinstance(g, tg.Tensor) and g.shape == x.shape and g.dtype == x.dtype, \
            f"{w}: {g!r}"
        assert_close(g.data, tgk.detach().numpy(force=True), x.dtype, w, work)
    # d/dx sum_k (g_k * w_k): a Hessian-vector product of the projected output
    t_terms = [(g * torch.from_numpy(w)).sum() for g, w in zip(tg1, ws)
               if g is not None and g.requires_grad]
    terms = [(g * w).sum() for g, w in zip(g1, ws) if g is not None and g.requires_grad]
    try:
        with quiet():
            t2 = (torch.autograd.grad(sum(t_terms), tin, allow_unused=True) if t_terms
                  else [None] * len(tin))
    except Exception as e:  # noqa: BLE001
        _reject_torch_bug(e)
        raise
    with quiet():
        g2 = (tg.grad(sum(terms[1:], terms[0]), tin_tg, allow_unused=True) if terms
              else [None] * len(tin))
    for k, (g, tgk, x) in enumerate(zip(g2, t2, tin_tg)):
        expected = _zeros_if_none(tgk, x.shape, x.dtype)
        actual = _zeros_if_none(g, x.shape, x.dtype)
        assert actual.shape == x.shape, f"{what}: second derivative of input {idx[k]}: shape"
        assert_close(actual, expected, x.dtype, f"{what}: second derivative of input {idx[k]}",
                     work, TOL2)


def test_every_case_runs_somewhere():
    """The table is well-formed: names unique (checked by add) and a grad2 subset exists."""
    for fam in ("exp", "log", "sqrt", "tanh", "sigmoid", "relu", "abs", "mul", "div", "pow",
                "sum", "mean", "matmul", "softmax", "log_softmax", "var", "std"):
        assert fam in GRAD2_CASES, fam
