"""Every primitive, checked two ways on shapes drawn by hypothesis.

* ``test_gradcheck``: the full Jacobian by autograd against central differences (float64).
* ``test_matches_torch``: the value and the vector-Jacobian product for a random upstream
  gradient against PyTorch, to 1e-10 in float64.

Shapes cover broadcasting across different ranks, size-1 axes and 0-d tensors. Each case
is a function ``case(data) -> Case`` registered in ``CASES``; the same case feeds both tests.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinygrad_bn as tg
from tinygrad_bn import Tensor
from tinygrad_bn.core import ops
from tinygrad_bn.core.tensor import normalize_axis

MAX_SIDE = 3
TOL = dict(rtol=1e-10, atol=1e-10)


@dataclass
class Case:
    """Input arrays (all differentiated), the tinygrad_bn function and the torch one."""

    arrays: list
    f: Callable
    tf: Callable  # tf(torch, *torch_tensors)
    gc: dict = field(default_factory=dict)  # extra gradcheck arguments


CASES: dict = {}
TORCH_ONLY = set()  # cases at non-differentiable points (ties of max): torch decides


def case(fn=None, *, torch_only=False):
    def register(f):
        name = f.__name__.removeprefix("case_")
        CASES[name] = f
        if torch_only:
            TORCH_ONLY.add(name)
        return f

    return register(fn) if fn is not None else register


# ------------------------------------------------------------------------------ drawing
def _rng(data) -> np.random.Generator:
    return np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))


def _shape(data, min_dims=0, max_dims=3, max_side=MAX_SIDE) -> tuple:
    return data.draw(hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1,
                                      max_side=max_side), label="shape")


def _bshapes(data, n: int) -> tuple:
    """``n`` mutually broadcastable shapes (different ranks, size-1 axes, 0-d)."""
    return data.draw(hnp.mutually_broadcastable_shapes(num_shapes=n, min_dims=0, max_dims=3,
                                                       max_side=MAX_SIDE),
                     label="shapes").input_shapes


def normal(rng, shape):
    return rng.standard_normal(shape)


def positive(rng, shape):
    return rng.uniform(0.5, 2.0, shape)


def away_from_zero(rng, shape):
    """Values with |x| >= 0.2 (relu, abs: no kink within reach of finite differences)."""
    return rng.uniform(0.2, 2.0, shape) * rng.choice([-1.0, 1.0], shape)


def distinct(rng, shape):
    """All values at least 0.4 apart (max without ties; std with a spread)."""
    n = int(np.prod(shape))
    return (rng.permutation(n) * 0.5 + rng.uniform(0.0, 0.1, n) - n / 4).reshape(shape)


def ties(rng, shape):
    """Small integers: many ties."""
    return rng.integers(-1, 2, shape).astype(np.float64)


def _axis(data, ndim: int):
    """None, an int (maybe negative) or a tuple of distinct axes (some negative)."""
    if ndim == 0:
        return data.draw(st.sampled_from([None, 0, -1, (0,), (-1,)]), label="axis")
    kind = data.draw(st.sampled_from(["none", "int", "tuple"]), label="axis kind")
    if kind == "none":
        return None
    if kind == "int":
        return data.draw(st.integers(-ndim, ndim - 1), label="axis")
    axes = data.draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim,
                              unique=True), label="axes")
    flips = data.draw(st.lists(st.booleans(), min_size=len(axes), max_size=len(axes)))
    return tuple(a - ndim if f else a for a, f in zip(axes, flips))


def _tdim(axis, ndim: int):
    """torch's ``dim`` for a NumPy ``axis`` (None: every axis)."""
    return tuple(range(ndim)) if axis is None else axis


def _count(shape, axis) -> int:
    axes = normalize_axis(axis, len(shape), shape)
    return int(np.prod([shape[i] for i in axes])) if axes else 1


# ------------------------------------------------------------------------ elementwise
def _binary(data, va, vb, f, tf):
    rng = _rng(data)
    sa, sb = _bshapes(data, 2)
    return Case([va(rng, sa), vb(rng, sb)], f, tf)


@case
def case_add(data):
    return _binary(data, normal, normal, lambda a, b: a + b, lambda torch, a, b: a + b)


@case
def case_sub(data):
    return _binary(data, normal, normal, lambda a, b: a - b, lambda torch, a, b: a - b)


@case
def case_mul(data):
    return _binary(data, normal, normal, lambda a, b: a * b, lambda torch, a, b: a * b)


@case
def case_div(data):
    return _binary(data, normal, away_from_zero, lambda a, b: a / b, lambda torch, a, b: a / b)


@case
def case_pow_tensor_exponent(data):
    return _binary(data, positive, normal, lambda a, b: a ** b, lambda torch, a, b: a ** b)


@case
def case_pow_scalar_exponent(data):
    rng = _rng(data)
    p = data.draw(st.sampled_from([2, 3, 2.0, 0.5, -1, -1.0, 1.5, -2]), label="exponent")
    vals = normal if p in (2, 3) else positive if p in (0.5, 1.5) else away_from_zero
    return Case([vals(rng, _shape(data))], lambda a: a ** p, lambda torch, a: a ** p)


def _unary(data, vals, f, tf):
    return Case([vals(_rng(data), _shape(data))], f, tf)


@case
def case_neg(data):
    return _unary(data, normal, lambda a: -a, lambda torch, a: -a)


@case
def case_exp(data):
    return _unary(data, normal, lambda a: a.exp(), lambda torch, a: a.exp())


@case
def case_log(data):
    return _unary(data, positive, lambda a: a.log(), lambda torch, a: a.log())


@case
def case_sqrt(data):
    return _unary(data, positive, lambda a: a.sqrt(), lambda torch, a: a.sqrt())


@case
def case_tanh(data):
    return _unary(data, normal, lambda a: a.tanh(), lambda torch, a: a.tanh())


@case
def case_sigmoid(data):
    # both branches of the overflow-safe formula, and far into the tails
    return _unary(data, lambda r, s: 4 * normal(r, s), lambda a: a.sigmoid(),
                  lambda torch, a: a.sigmoid())


@case
def case_relu(data):
    return _unary(data, away_from_zero, lambda a: a.relu(), lambda torch, a: a.relu())


@case
def case_abs(data):
    return _unary(data, away_from_zero, lambda a: a.abs(), lambda torch, a: a.abs())


@case
def case_astype(data):
    # through float32 and back: finite differences need a step float32 can resolve
    return Case([normal(_rng(data), _shape(data))],
                lambda a: a.astype(np.float32).astype(np.float64),
                lambda torch, a: a.to(torch.float32).to(torch.float64),
                gc=dict(eps=1e-3, atol=1e-3, rtol=1e-3))


@case
def case_where(data):
    rng = _rng(data)
    sc, sa, sb = _bshapes(data, 3)
    cond = np.asarray(rng.random(sc) < 0.5)
    return Case([normal(rng, sa), normal(rng, sb)], lambda a, b: tg.where(cond, a, b),
                lambda torch, a, b: torch.where(torch.from_numpy(cond), a, b))


# ---------------------------------------------------------------- reflected operators
_REFLECTED = {
    "+": (lambda s, x: s + x),
    "-": (lambda s, x: s - x),
    "*": (lambda s, x: s * x),
    "/": (lambda s, x: s / x),
    "**": (lambda s, x: s ** x),
}


@case
def case_reflected_python_scalar(data):
    rng = _rng(data)
    op = data.draw(st.sampled_from(sorted(_REFLECTED)), label="op")
    s = data.draw(st.sampled_from([2, 0.5, 3.25, -1.5]), label="scalar")
    if op == "**":
        s = 1.5 if s < 0 else s  # positive base
    fn = _REFLECTED[op]
    return Case([away_from_zero(rng, _shape(data))], lambda x: fn(s, x),
                lambda torch, x: fn(s, x))


@case
def case_reflected_ndarray_left(data):
    rng = _rng(data)
    op = data.draw(st.sampled_from(sorted(_REFLECTED)), label="op")
    sa, sx = _bshapes(data, 2)
    arr = positive(rng, sa) if op == "**" else normal(rng, sa)
    fn = _REFLECTED[op]
    return Case([away_from_zero(rng, sx)], lambda x: fn(arr, x),
                lambda torch, x: fn(torch.from_numpy(arr), x))


@case
def case_reflected_ndarray_matmul(data):
    rng = _rng(data)
    n, k, m = (data.draw(st.integers(1, 3)) for _ in range(3))
    arr = normal(rng, (n, k))
    return Case([normal(rng, (k, m))], lambda x: arr @ x,
                lambda torch, x: torch.from_numpy(arr) @ x)


# ----------------------------------------------------------------------- reductions
def _reduction(data, vals, method, tmethod):
    rng = _rng(data)
    shape = _shape(data)
    axis = _axis(data, len(shape))
    kd = data.draw(st.booleans(), label="keepdims")
    return Case([vals(rng, shape)],
                lambda a: getattr(a, method)(axis=axis, keepdims=kd),
                lambda torch, a: tmethod(torch, a, _tdim(axis, len(shape)), kd))


@case
def case_sum(data):
    return _reduction(data, normal, "sum", lambda torch, a, d, k: a.sum(dim=d, keepdim=k))


@case
def case_mean(data):
    return _reduction(data, normal, "mean", lambda torch, a, d, k: a.mean(dim=d, keepdim=k))


@case
def case_max(data):
    return _reduction(data, distinct, "amax",
                      lambda torch, a, d, k: torch.amax(a, dim=d, keepdim=k))


@case(torch_only=True)
def case_max_ties(data):
    return _reduction(data, ties, "amax",
                      lambda torch, a, d, k: torch.amax(a, dim=d, keepdim=k))


@case
def case_min(data):
    return _reduction(data, distinct, "amin",
                      lambda torch, a, d, k: torch.amin(a, dim=d, keepdim=k))


@case
def case_clone(data):
    rng = _rng(data)
    return Case([normal(rng, _shape(data))], lambda a: a.clone() * 2,
                lambda torch, a: a.clone() * 2)


@case
def case_cat(data):
    rng = _rng(data)
    shape = _shape(data, min_dims=1)
    ax = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
    other = list(shape)
    other[ax] = data.draw(st.integers(1, 3), label="size")
    return Case([normal(rng, shape), normal(rng, tuple(other))],
                lambda a, b: tg.cat([a, b, a], ax), lambda torch, a, b: torch.cat([a, b, a], ax))


def _var_case(data, method):
    rng = _rng(data)
    shape = _shape(data)
    axis = _axis(data, len(shape))
    kd = data.draw(st.booleans(), label="keepdims")
    ddof = data.draw(st.sampled_from([0, 1]), label="ddof")
    n = _count(shape, axis)
    assume(n > ddof and (method == "var" or n >= 2))
    vals = normal if method == "var" else distinct
    return Case([vals(rng, shape)],
                lambda a: getattr(a, method)(axis=axis, keepdims=kd, ddof=ddof),
                lambda torch, a: getattr(torch, method)(a, dim=_tdim(axis, len(shape)),
                                                        correction=ddof, keepdim=kd))


@case
def case_var(data):
    return _var_case(data, "var")


@case
def case_std(data):
    return _var_case(data, "std")


# --------------------------------------------------------------------------- linear
@case
def case_matmul(data):
    """1-D and n-D operands on either side; batch dims broadcast as in NumPy."""
    rng = _rng(data)
    ba, bb = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2,
                                                         max_side=MAX_SIDE)).input_shapes
    n, k, m = (data.draw(st.integers(1, 3)) for _ in range(3))
    a_vec, b_vec = data.draw(st.booleans()), data.draw(st.booleans())
    sa = (k,) if a_vec else ba + (n, k)
    sb = (k,) if b_vec else bb + (k, m)
    return Case([normal(rng, sa), normal(rng, sb)], lambda a, b: a @ b,
                lambda torch, a, b: a @ b)


@case
def case_linear(data):
    """``ops.Linear``: x @ W.T + b, x with any number of leading (batch) axes."""
    rng = _rng(data)
    batch = _shape(data, max_dims=2)
    n_in, n_out = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    arrays = [normal(rng, batch + (n_in,)), normal(rng, (n_out, n_in))]
    if data.draw(st.booleans(), label="bias"):
        arrays.append(normal(rng, (n_out,)))
    return Case(arrays, lambda *t: ops.Linear.apply(*t),
                lambda torch, *t: torch.nn.functional.linear(*t))


# ------------------------------------------------------------------------- movement
@case
def case_reshape(data):
    rng = _rng(data)
    shape = _shape(data)
    n = int(np.prod(shape))
    targets = [(n,), (-1,), (1, n), (n, 1, 1), (1, -1, 1)]
    targets += [(d, n // d) for d in range(2, n) if n % d == 0]
    targets += [(-1, d) for d in range(2, n) if n % d == 0]
    if n == 1:
        targets.append(())
    target = data.draw(st.sampled_from(targets), label="target")
    return Case([normal(rng, shape)], lambda a: a.reshape(target),
                lambda torch, a: a.reshape(target))


@case
def case_transpose(data):
    """permute (entries may be negative), torch's transpose(dim0, dim1), and NumPy's
    extensions: transpose() reverses, transpose with 3+ axes permutes."""
    rng = _rng(data)
    shape = _shape(data, max_dims=4)
    nd = len(shape)
    kind = data.draw(st.sampled_from(["perm", "swap", "none", "T"]), label="kind")
    if kind == "perm":
        perm = data.draw(st.permutations(range(nd)), label="perm")
        flips = data.draw(st.lists(st.booleans(), min_size=nd, max_size=nd))
        perm = tuple(p - nd if f else p for p, f in zip(perm, flips))
        f = (lambda a: a.transpose(*perm)) if nd >= 3 else (lambda a: a.permute(*perm))
    elif kind == "swap" and nd:
        d0 = data.draw(st.integers(-nd, nd - 1), label="dim0")
        d1 = data.draw(st.integers(-nd, nd - 1), label="dim1")
        perm = list(range(nd))
        perm[d0 % nd], perm[d1 % nd] = perm[d1 % nd], perm[d0 % nd]
        perm = tuple(perm)
        f = lambda a: a.transpose(d0, d1)  # noqa: E731
    elif kind in ("none", "swap"):
        perm = tuple(range(nd))[::-1]
        f = lambda a: a.transpose()  # noqa: E731
    else:
        perm = tuple(range(nd))[::-1]
        f = lambda a: a.T  # noqa: E731
    return Case([normal(rng, shape)], f, lambda torch, a: a.permute(perm))


@case
def case_swapaxes(data):
    rng = _rng(data)
    shape = _shape(data, max_dims=4)
    nd = max(len(shape), 1)  # a 0-d tensor takes axes 0 and -1, as in torch
    i, j = data.draw(st.integers(-nd, nd - 1)), data.draw(st.integers(-nd, nd - 1))
    return Case([normal(rng, shape)], lambda a: a.swapaxes(i, j),
                lambda torch, a: torch.swapaxes(a, i, j))


@case
def case_expand(data):
    rng = _rng(data)
    shape = _shape(data)
    lead = _shape(data, max_dims=2)
    target = lead + tuple(data.draw(st.integers(1, 3)) if s == 1 else s for s in shape)
    return Case([normal(rng, shape)], lambda a: a.expand(target),
                lambda torch, a: a.expand(target))


def _t_index(torch, idx):
    """The same index for torch (integer and boolean arrays as torch tensors)."""
    def conv(i):
        return torch.from_numpy(np.array(i)) if isinstance(i, np.ndarray) else i

    return tuple(conv(i) for i in idx) if isinstance(idx, tuple) else conv(idx)


def _getitem_case(rng, shape, idx, tf=None):
    if tf is None:
        def tf(torch, a):
            return a[_t_index(torch, idx)]
    return Case([normal(rng, shape)], lambda a: a[idx], tf)


def _dims(data):
    return tuple(data.draw(st.integers(2, 4), label="side") for _ in range(3))


@case
def case_getitem_basic(data):
    """Ints (maybe negative), slices, None and Ellipsis."""
    rng = _rng(data)
    shape = a, b, c = _dims(data)
    i = data.draw(st.integers(-a, a - 1))
    j = data.draw(st.integers(-c, c - 1))
    k = data.draw(st.integers(-b, b - 1))
    lo = data.draw(st.integers(0, a - 1))
    choices = [
        i,
        (i, slice(None, -1), None),
        (slice(lo, None), slice(None), slice(None, None, 2)),
        (Ellipsis, j),
        (None, slice(None), None, k),
        (slice(1, None), None, Ellipsis),
        (i, Ellipsis, None, j),
    ]
    idx = data.draw(st.sampled_from(choices), label="index")
    return _getitem_case(rng, shape, idx)


@case
def case_getitem_negative_step(data):
    rng = _rng(data)
    shape = _dims(data)
    return _getitem_case(rng, shape, (slice(None, None, -1), slice(None), slice(None, None, -2)),
                         lambda torch, a: a.flip(0).flip(2)[:, :, ::2])


@case
def case_getitem_0d(data):
    rng = _rng(data)
    idx = data.draw(st.sampled_from([(), None, Ellipsis, (None, None), (Ellipsis, None)]))
    return _getitem_case(rng, (), idx)


@case
def case_getitem_bool_mask(data):
    rng = _rng(data)
    shape = a, b, c = _dims(data)
    kind = data.draw(st.sampled_from(["full", "axis0", "axis1"]), label="mask")
    if kind == "full":
        idx = rng.random(shape) < 0.5
    elif kind == "axis0":
        idx = rng.random(a) < 0.5
    else:
        idx = (slice(None), rng.random(b) < 0.5)
    return _getitem_case(rng, shape, idx)


@case
def case_getitem_int_array(data):
    """Integer arrays, always with a repeated index (the gradient adds up there)."""
    rng = _rng(data)
    shape = a, b, c = _dims(data)

    def rep(n, size):
        i = rng.integers(-n, n, size)
        i.flat[-1] = i.flat[0]  # a repeat
        return i

    kind = data.draw(st.sampled_from(["1d", "2d", "apart", "adjacent", "ellipsis"]))
    if kind == "1d":
        idx = rep(a, 5)
    elif kind == "2d":
        idx = (slice(None), rep(b, (2, 2)))
    elif kind == "apart":  # advanced indices separated by a slice: broadcast dims go first
        idx = (rep(a, 3), slice(None), rep(c, 3))
    elif kind == "adjacent":
        idx = (rep(a, (3, 1)), rep(b, 2))
    else:
        idx = (Ellipsis, rep(c, 4))
    return _getitem_case(rng, shape, idx)


# ---------------------------------------------------------------------------- tests
GRADCHECK_CASES = sorted(n for n in CASES if n not in TORCH_ONLY)


@pytest.mark.parametrize("name", GRADCHECK_CASES)
@given(data=st.data())
def test_gradcheck(name, data):
    c = CASES[name](data)
    inputs = [Tensor(a, requires_grad=True) for a in c.arrays]
    assert tg.gradcheck(c.f, inputs, **c.gc) is True


@pytest.mark.parametrize("name", sorted(CASES))
@given(data=st.data())
def test_matches_torch(torch, name, data):
    c = CASES[name](data)
    xs = [Tensor(a, requires_grad=True) for a in c.arrays]
    txs = [torch.tensor(a, requires_grad=True) for a in c.arrays]
    out = c.f(*xs)
    tout = c.tf(torch, *txs)
    assert isinstance(out, Tensor)
    assert out.shape == tuple(tout.shape)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out.data, tout.detach().numpy(), **TOL)
    up = np.random.default_rng(1).standard_normal(out.shape)
    out.backward(up)
    tout.backward(torch.tensor(up))
    for i, (x, tx) in enumerate(zip(xs, txs)):
        assert x.grad is not None and x.grad.shape == x.shape and x.grad.dtype == np.float64
        np.testing.assert_allclose(x.grad, tx.grad.numpy(), **TOL, err_msg=f"input {i}")


def test_every_primitive_has_a_case():
    """Every primitive class in ops.py appears in some case above."""
    covered = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow_tensor_exponent",
               "Neg": "neg", "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Tanh": "tanh",
               "Sigmoid": "sigmoid", "ReLU": "relu", "Cast": "astype", "Sum": "sum",
               "Mean": "mean", "Max": "max", "Min": "min", "Expand": "expand",
               "MatMul": "matmul", "Abs": "abs", "Var": "var", "Std": "std", "Clone": "clone",
               "Cat": "cat",
               "Linear": "linear", "Reshape": "reshape", "Transpose": "transpose",
               "GetItem": "getitem_int_array", "Scatter": "getitem_int_array",
               "Where": "where"}
    prims = {n for n, v in vars(ops).items()
             if isinstance(v, type) and issubclass(v, ops.Primitive) and v is not ops.Primitive}
    assert prims <= set(covered), f"primitives without a test case: {prims - set(covered)}"
    assert set(covered.values()) <= set(CASES)


# ------------------------------------------------------------------------ specifics
def test_max_ties_share_the_gradient_evenly():
    x = Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]]), requires_grad=True)
    x.amax(axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    y = Tensor(np.full((2, 2), 7.0), requires_grad=True)
    y.max().backward()
    np.testing.assert_array_equal(y.grad, np.full((2, 2), 0.25))


@pytest.mark.parametrize("perm", [(1, 2, 0), (2, 0, 1), (-1, 0, 1), (3, 0, 2, 1), (1, 3, 0, -2)])
def test_transpose_by_a_cycle(perm):
    """Permutations that are not their own inverse: the gradient needs the inverse one."""
    shape = (2, 3, 4, 5)[:len(perm)]
    x = Tensor(np.random.default_rng(0).standard_normal(shape), requires_grad=True)
    np.testing.assert_array_equal(x.transpose(*perm).data, np.transpose(x.data, perm))
    np.testing.assert_array_equal(x.transpose(perm).data, np.transpose(x.data, perm))
    assert tg.gradcheck(lambda t: t.transpose(*perm) * np.arange(t.size).reshape(
        np.transpose(t.data, perm).shape), [x])


def test_getitem_repeated_indices_accumulate():
    x = Tensor(np.arange(4.0), requires_grad=True)
    x[np.array([1, 1, 3, 1])].sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 3, 0, 1])
    y = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    y[[0, 0], [2, 2]].sum().backward()  # lists work like arrays
    np.testing.assert_array_equal(y.grad, [[0, 0, 2], [0, 0, 0]])


def test_pow_zero_exponent_has_zero_gradient_everywhere():
    x = Tensor(np.array([0.0, 1.5, -2.0]), requires_grad=True)
    y = x ** 0
    np.testing.assert_array_equal(y.data, [1, 1, 1])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 0, 0])


@pytest.mark.parametrize("op", sorted(_REFLECTED) + ["@"])
def test_ndarray_on_the_left_returns_a_tensor(op):
    rng = np.random.default_rng(3)
    arr = rng.uniform(0.5, 2.0, (3, 3))
    x = Tensor(rng.uniform(0.5, 2.0, (3, 3)), requires_grad=True)
    fn = (lambda s, t: s @ t) if op == "@" else _REFLECTED[op]
    out = fn(arr, x)
    assert isinstance(out, Tensor) and out.requires_grad
    np.testing.assert_allclose(out.data, fn(arr, x.data), rtol=1e-15)
    # and a NumPy scalar on the left too
    out2 = fn(np.float64(2.0), x) if op != "@" else fn(arr[0], x)
    assert isinstance(out2, Tensor)


@pytest.mark.parametrize("s", [2, 2.5, -1, True])
def test_python_scalars_on_either_side(s):
    x = Tensor(np.array([0.5, 1.5, 2.5]))
    pairs = [(x + s, x.data + s), (s + x, s + x.data), (x * s, x.data * s),
             (s * x, s * x.data), (s / x, s / x.data), (x ** 2, x.data ** 2),
             (2 ** x, 2 ** x.data)]
    if s is True:  # torch refuses subtraction with a bool, and says to use ~
        for f in (lambda: x - s, lambda: s - x):
            with pytest.raises(RuntimeError, match="bool"):
                f()
    else:
        pairs += [(x - s, x.data - s), (s - x, s - x.data)]
    for a, b in pairs:
        assert isinstance(a, Tensor)
        np.testing.assert_array_equal(a.data, b)


# ------------------------------------------------------------------------- dtypes
def test_python_data_becomes_float32():
    assert Tensor([1.5, 2.0]).dtype == np.float32
    assert Tensor([[1, 2], [3, 4]]).dtype == np.float32
    assert Tensor(2.5).dtype == np.float32
    assert Tensor(3).dtype == np.float32
    assert Tensor([1, 2], dtype=np.int64).dtype == np.int64


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int32, np.int64,
                                   np.bool_])
def test_ndarray_keeps_its_dtype(dtype):
    arr = np.arange(6).reshape(2, 3).astype(dtype)
    t = Tensor(arr)
    assert t.dtype == dtype
    np.testing.assert_array_equal(t.data, arr)
    assert Tensor(arr[0, 0]).dtype == dtype  # a NumPy scalar too


def test_data_is_copied_on_construction():
    arr = np.ones((2, 2))
    t = Tensor(arr)
    arr[0, 0] = 5.0
    assert t.data[0, 0] == 1.0
    t.data[1, 1] = 9.0
    assert arr[1, 1] == 1.0
    lst = [1.0, 2.0]
    u = Tensor(lst)
    lst[0] = 7.0
    assert u.data[0] == 1.0
    v = Tensor(t)  # from a Tensor: a copy as well
    v.data[0, 1] = -3.0
    assert t.data[0, 1] == 1.0
    view = np.arange(6.0)[::2]
    w = Tensor(view)
    assert not np.shares_memory(w.data, view)


def test_float32_chain_stays_float32_with_python_scalars():
    rng = np.random.default_rng(0)
    x = Tensor(rng.uniform(0.5, 2.0, (3, 4)).astype(np.float32), requires_grad=True)
    y = x * 1.00001
    np.testing.assert_array_equal(y.data, x.data * np.float32(1.00001))  # no float64 detour
    chain = [y, y + 2, 2 - y, y / 3, 3 / y, y ** 2, y ** 0.5, 2.0 ** y, -y, y.exp(), y.log(),
             y.sqrt(), y.tanh(), y.sigmoid(), y.relu(), y.abs(), y.sum(axis=0), y.mean(),
             y.amax(axis=1), y.var(axis=0, ddof=1), y.std(), y.T @ y, y.reshape(-1),
             y[1:, np.array([0, 0])], tg.where(y.data > 1, y, 0.5 * y),
             ops.Linear.apply(y, Tensor(np.ones((2, 4), np.float32)),
                              Tensor(np.ones(2, np.float32)))]
    total = chain[0].sum()
    for i, t in enumerate(chain):
        assert t.dtype == np.float32, f"chain[{i}] is {t.dtype}"
        total = total + t.sum() * 0.5
    assert total.dtype == np.float32
    total.backward()
    assert x.grad.dtype == np.float32


def test_float64_stays_float64_and_ndarray_operand_promotes_like_numpy():
    x = Tensor(np.ones(3), requires_grad=True)
    assert (x * 0.5 + 1).dtype == np.float64
    x32 = Tensor(np.ones(3, np.float32), requires_grad=True)
    y = np.ones(3) + x32  # a float64 ndarray promotes, as in NumPy
    assert y.dtype == np.float64
    y.sum().backward()
    assert x32.grad.dtype == np.float32  # .grad keeps its Tensor's dtype
    np.testing.assert_array_equal(x32.grad, [1, 1, 1])


def test_astype_gradient_is_cast_back():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x.astype(np.float32)
    assert y.dtype == np.float32 and y.requires_grad
    (y * 3).sum().backward()
    assert x.grad.dtype == np.float64
    np.testing.assert_array_equal(x.grad, [3, 3])
    assert x.astype(np.float64) is x  # same dtype: no node
