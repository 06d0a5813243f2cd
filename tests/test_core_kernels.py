"""The engine's compiled loops (``core/_kernels.py``, the ``fast`` extra) against the NumPy
lines beside them in ``core/ops.py``: every elementwise loop bit for bit (nan, infinities,
-0, subnormals, division by 0), the sums of products within float rounding of the exact
sums, the in-place variants, the cases that stay on NumPy (small, mixed dtypes, non-contiguous,
not a row), and whole graphs (composed BatchNorm, LayerNorm, a ReLU network with
cross-entropy) with the loops on and off, checking that the loops did run."""
import math
import operator
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_bn as tg
from tinygrad_bn import Tensor
from tinygrad_bn.core import ops
from tinygrad_bn.nn import functional as F

from conftest import STRICT

FLOATS = [np.float32, np.float64]
EDGES = [np.nan, np.inf, -np.inf, -0.0, 0.0, 5e-324, 1e-45, -1e-40, 1.0, -1.0]


@pytest.fixture
def loops(monkeypatch):
    """The compiled loops, switched on, with a count of the calls of each."""
    monkeypatch.setattr(ops, "_KERNELS", None)
    k = ops._loops()
    if k is None:
        if STRICT:
            pytest.fail("numba (the fast extra) is required when TINYGRAD_BN_STRICT=1",
                        pytrace=False)
        pytest.skip("numba is not installed")
    calls = Counter()
    for name in [n for n in dir(k) if not n.startswith("_") and callable(getattr(k, n))
                 and n not in ("numba", "available")]:
        real = getattr(k, name)

        def counted(*args, _real=real, _name=name):
            calls[_name] += 1
            return _real(*args)
        monkeypatch.setattr(k, name, counted)
    return calls


@pytest.fixture
def numpy_only(monkeypatch):
    monkeypatch.setattr(ops, "_KERNELS", False)


def _values(rng, shape, dtype, edges: bool):
    a = rng.standard_normal(shape).astype(dtype)
    if edges and a.size:
        flat = a.reshape(-1)
        for v in EDGES:
            flat[rng.integers(0, a.size, max(1, a.size // 20))] = v
    return a


def _bits(a):
    a = np.ascontiguousarray(a)
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def _same_bits(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(_bits(got), _bits(want))


shapes = st.sampled_from([(1, 7), (3, 1), (5, 8), (33, 17), (128, 64), (2, 3, 40)])


# ------------------------------------------------------------------- the loops themselves
@settings(max_examples=40, deadline=None)
@given(st.sampled_from(FLOATS), shapes, st.booleans(), st.integers(0, 2**31))
def test_each_row_loop_is_numpy_bit_for_bit(dtype, shape, edges, seed):
    """a ± × ÷ row, (a + a) × row, in a new array and in place, as NumPy's broadcasting
    computes them: the same bits, nan, infinities, -0, subnormals and x / 0 included."""
    k = ops._loops()
    if k is None:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(seed)
    a = _values(rng, shape, dtype, edges).reshape(-1, shape[-1])
    r = _values(rng, shape[-1:], dtype, edges)
    with np.errstate(all="ignore"):
        for name, want in (("add_row", a + r), ("sub_row", a - r), ("mul_row", a * r),
                           ("div_row", a / r), ("double_mul_row", (a + a) * r)):
            out = np.full_like(a, 7.0)
            getattr(k, name)(a, r, out)
            _same_bits(out, want)
            if hasattr(k, name + "_"):
                b = a.copy()
                getattr(k, name + "_")(b, r)
                _same_bits(b, want)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(FLOATS), shapes, st.integers(0, 2**31))
def test_the_product_and_sum_loops(dtype, shape, seed):
    """``g·r`` and ``g/r`` come out bit for bit; the column sums of products (float64) are
    within float64 rounding of the exact sums (accumulated here in extended steps)."""
    k = ops._loops()
    if k is None:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(seed)
    g, a = (_values(rng, shape, dtype, False).reshape(-1, shape[-1]) for _ in range(2))
    r = _values(rng, shape[-1:], dtype, False) + dtype(3)  # (away from 0: a finite quotient)
    m = g.shape[0]

    def close(got, terms):
        exact = [math.fsum(col) for col in terms.T]  # (float64 products are exact)
        bound = (m + 1) * np.finfo(np.float64).eps * np.abs(terms).sum(axis=0)
        assert got.dtype == np.float64
        assert np.all(np.abs(got - exact) <= bound + 1e-300)

    wide = a.astype(np.float64)
    close(k.row_sums_of_products(g, a), g.astype(np.float64) * wide)
    # (×: out = g·r and Σ g·a; ÷: out = g/r and Σ (g/r)·a)
    for name, first, summed in (("mul_row_and_sum", g * r, g), ("div_row_and_sum", g / r, g / r)):
        terms = summed.astype(np.float64) * wide
        out = np.empty_like(g)
        gg = g.copy()
        close(getattr(k, name)(gg, r, a, out), terms)
        _same_bits(out, first)
        _same_bits(gg, g)  # (read, not written)
        close(getattr(k, name + "_")(gg, r, a), terms)
        _same_bits(gg, first)


@pytest.mark.parametrize("dtype", FLOATS)
def test_the_relu_loop_is_torchs_threshold_backward(dtype):
    k = ops._loops()
    if k is None:
        pytest.skip("numba is not installed")
    y = np.array([np.nan, -1.0, -0.0, 0.0, 2.0, np.inf, 1e-45, -np.inf] * 3, dtype)
    g = np.array([5.0, np.nan, -3.0, np.inf, -2.0, np.nan, -0.0, 1.0] * 3, dtype)
    want = np.where(y <= 0, dtype(0), g)  # nan output: the gradient flows (as torch)
    _both_ways(k, "relu_grad", g, y, want)


def _both_ways(k, name, g, y, want):
    """Loop ``name`` into a new array and its in-place twin into a copy of ``g``: both give
    ``want``'s bits."""
    out = np.empty_like(g)
    getattr(k, name)(g, y, out)
    _same_bits(out, want)
    gg = g.copy()
    getattr(k, name + "_")(gg, y)
    _same_bits(gg, want)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(FLOATS), st.sampled_from([(7,), (32, 16), (3, 4, 5), (1, 1), (0, 3)]),
       st.booleans(), st.integers(0, 2**31))
def test_the_tanh_gradient_loop_is_numpy_bit_for_bit(dtype, shape, edges, seed):
    k = ops._loops()
    if k is None:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(seed)
    g, y = _values(rng, shape, dtype, edges), _values(rng, shape, dtype, edges)
    with np.errstate(all="ignore"):
        want = g * (dtype(1) - y * y)
    _both_ways(k, "tanh_grad", g, y, want)


@pytest.mark.parametrize("case", ["lent", "owned", "not contiguous", "float16", "mixed",
                                  "graph mode", "no loops"])
def test_tanh_backward_with_and_without_the_loop(loops, monkeypatch, case):
    """A small gradient goes through the loop once the loops are loaded (into g when the
    engine owns it); what does not fit stays on NumPy's three calls, with the same bits."""
    rng = np.random.default_rng(4)
    dtype = np.float16 if case == "float16" else np.float32
    x = Tensor(rng.standard_normal((32, 16)).astype(dtype), requires_grad=True)
    up = rng.standard_normal((32, 16)).astype(np.float64 if case == "mixed" else dtype)
    if case == "not contiguous":
        up = np.asfortranarray(up)
    if case == "no loops":
        monkeypatch.setattr(ops, "_KERNELS", False)
    y = x.tanh()
    yd = y.data.copy()
    if case == "owned":  # a gradient the engine made: the loop writes into it
        (y * Tensor(up)).sum().backward()
    elif case == "graph mode":
        (gx,) = tg.grad(y, x, Tensor(up), create_graph=True)
        assert gx.requires_grad
        x.grad = gx.data
    else:  # the user's array: lent read-only, so the loop writes a new one
        y.backward(up)
    with np.errstate(all="ignore"):
        want = (up.astype(dtype) if case == "mixed" else up) * (dtype(1) - yd * yd)
    _same_bits(x.grad, want)  # (a float64 gradient is cast to the output's dtype first)
    # (in place, new array): the cast of a float64 gradient is an array the engine owns
    expected = {"lent": (0, 1), "owned": (1, 0), "mixed": (1, 0)}.get(case, (0, 0))
    assert (loops["tanh_grad_"], loops["tanh_grad"]) == expected


def test_tanh_gradient_with_the_loop_matches_torch(loops, torch):
    rng = np.random.default_rng(5)
    a = rng.standard_normal((8, 5))
    up = rng.standard_normal((8, 5))
    tx = torch.tensor(a, requires_grad=True)
    torch.tanh(tx).backward(torch.tensor(up))
    t = Tensor(a, requires_grad=True)
    t.tanh().backward(up)
    assert loops["tanh_grad"] == 1
    np.testing.assert_allclose(t.grad, tx.grad.numpy(), rtol=1e-14, atol=0)


# -------------------------------------------------------------- the ops that call them
def _binary_case(rng, dtype, shape, row_shape):
    a = _values(rng, shape, dtype, True)
    r = _values(rng, row_shape, dtype, True)
    return a, r


@pytest.mark.parametrize("op", ["+", "-", "*", "/"])
@pytest.mark.parametrize("row_shape", [(256,), (1, 256), (1, 1, 256)])
def test_forward_of_a_large_array_and_a_row(loops, op, row_shape):
    rng = np.random.default_rng(1)
    for dtype in FLOATS:
        a, r = _binary_case(rng, dtype, (4, 32, 256), row_shape)
        fn = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}[op]
        with np.errstate(all="ignore"):
            want = fn(a, r)
            got = fn(Tensor(a, requires_grad=True), Tensor(r, requires_grad=True))
        _same_bits(got.data, want)
    assert sum(loops.values()) == 2


@pytest.mark.parametrize("case", ["small", "not contiguous", "not a row", "row first",
                                  "float16"])
def test_what_stays_on_numpy(loops, case):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((128, 256)).astype(np.float32)
    r = rng.standard_normal(256).astype(np.float32)
    if case == "small":
        a = a[:8].copy()
    elif case == "not contiguous":
        a = np.asfortranarray(a)
    elif case == "not a row":
        r = rng.standard_normal((128, 1)).astype(np.float32)
    elif case == "float16":
        a, r = a.astype(np.float16), r.astype(np.float16)
    x, w = Tensor(a, requires_grad=True), Tensor(r, requires_grad=True)
    got = (w - x) if case == "row first" else (x - w)
    np.testing.assert_array_equal(got.data, (r - a) if case == "row first" else (a - r))
    assert loops["sub_row"] == 0


def test_a_row_of_another_dtype_is_not_a_row():
    """(Tensors promote first; a backward rule may meet two dtypes.)"""
    a = np.ones((128, 256), np.float32)
    assert ops._row_pair(a, np.ones(256, np.float64)) is None
    assert ops._row_pair(a, np.ones(256, np.float32)) is not None


def _graph(kind, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "batch_norm":
        x = rng.standard_normal((64, 300)) * 3 + 1
        params = [np.ones(300) * 1.5, np.zeros(300) + 0.25]
        run = lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True)
    elif kind == "layer_norm":
        x = rng.standard_normal((64, 300))
        params = [rng.standard_normal(300), rng.standard_normal(300)]
        run = lambda x, w, b: F.layer_norm(x, (300,), w, b)
    else:  # a ReLU network with a bias and cross-entropy
        x = rng.standard_normal((128, 40))
        params = [rng.standard_normal((200, 40)) * 0.3, rng.standard_normal(200),
                  rng.standard_normal((10, 200)) * 0.3]
        y = rng.integers(0, 10, 128)

        def run(x, w1, b1, w2):
            h = F.relu(F.linear(x, w1, b1))
            return tg.nn.losses.cross_entropy(h @ w2.T, y)
    tensors = [Tensor(v.astype(dtype), requires_grad=True) for v in [x] + params]
    return run, tensors, rng


@pytest.mark.parametrize("kind", ["batch_norm", "layer_norm", "network"])
@pytest.mark.parametrize("dtype", FLOATS)
def test_graphs_with_the_loops_match_numpy(loops, monkeypatch, kind, dtype):
    """The same graph with the loops and without: the same forward bits, gradients equal
    within float rounding (the loops sum in float64), and the loops did run. The gradient
    a user passes comes out unchanged."""
    results = []
    for on in (True, False):
        monkeypatch.setattr(ops, "_KERNELS", None if on else False)
        run, ts, rng = _graph(kind, dtype)
        out = run(*ts)
        up = rng.standard_normal(out.shape).astype(dtype)
        up.flags.writeable = bool(on)  # a read-only gradient, and a writable one
        kept = up.copy()
        out.backward(up if out.shape else None)
        np.testing.assert_array_equal(up, kept)
        results.append((out.data, [t.grad for t in ts]))
        if on:
            assert sum(loops.values()) >= {"batch_norm": 8, "layer_norm": 2, "network": 2}[kind]
            loops.clear()
    (y1, g1), (y0, g0) = results
    _same_bits(y1, y0) if kind != "network" else np.testing.assert_allclose(y1, y0, rtol=1e-6)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    for a, b in zip(g1, g0):
        scale = max(float(np.abs(b).max()), 1e-30)
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale)


def test_composed_batchnorm_runs_every_loop_it_can(loops):
    """One composed BatchNorm forward+backward over (N, C): x − μ, ÷ σ, × γ, + β forward;
    × γ and ÷ σ backward with their sums, each written into the gradient it received (+ β
    passes its own on), the gradient of d² added into the one d has from ÷ σ, and the mean's
    broadcast gradient added into x's, in place."""
    x = Tensor(np.random.default_rng(3).standard_normal((128, 256)).astype(np.float32),
               requires_grad=True)
    w = Tensor(np.ones(256, np.float32), requires_grad=True)
    b = Tensor(np.zeros(256, np.float32), requires_grad=True)
    # (through a ReLU, as in a network: the gradient reaching + β is the engine's own)
    F.batch_norm(x, None, None, w, b, training=True).relu().backward(
        np.ones((128, 256), np.float32))
    for name in ("sub_row", "div_row", "mul_row", "add_row", "mul_row_and_sum_",
                 "div_row_and_sum_", "double_mul_row_add_", "add_row_"):
        assert loops[name] == 1, (name, loops)


@pytest.mark.parametrize("dtype", FLOATS)
def test_the_relu_forward_loop_is_the_numpy_path(loops, monkeypatch, dtype):
    x = _values(np.random.default_rng(4), (40, 500), dtype, True)
    got = ops.ReLU.forward(None, x)
    assert loops["relu"] == 1
    monkeypatch.setattr(ops, "_KERNELS", False)
    _same_bits(got, ops.ReLU.forward(None, x))


def test_relu_gradient_with_the_loop_matches_torch(loops, torch):
    x = np.array([np.nan, -1.0, 0.0, 2.0, -0.0, np.inf] * 4000, np.float32)
    up = np.array([5.0, np.nan, -3.0, -2.0, np.inf, 1.0] * 4000, np.float32)
    tx = torch.tensor(x, requires_grad=True)
    torch.relu(tx).backward(torch.tensor(up))
    t = Tensor(x, requires_grad=True)
    t.relu().backward(up)
    assert loops["relu_grad_"] + loops["relu_grad"] == 1
    _same_bits(t.grad, tx.grad.numpy())


def test_numpy_setting_keeps_numba_out():
    """TINYGRAD_BN_KERNELS=numpy (``_jit.kernels_wanted``, the one switch): neither the fused
    norms nor the engine load their compiled loops, and numba is not even imported."""
    code = ("import sys, numpy as np, tinygrad_bn as tg\n"
            "from tinygrad_bn.core import ops\n"
            "from tinygrad_bn.norms import fused\n"
            "fused.batch_norm(tg.Tensor(np.ones((4, 3))), None, None, training=True)\n"
            "x = tg.Tensor(np.ones((128, 256), np.float32), requires_grad=True)\n"
            "(x - tg.Tensor(np.ones(256, np.float32))).relu().sum().backward()\n"
            "print(fused._USE_KERNELS, ops._loops(), 'numba' in sys.modules)")
    env = dict(os.environ, TINYGRAD_BN_KERNELS="numpy")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["False", "None", "False"]


def test_big_endian_arrays_stay_on_numpy(loops):
    """The loops take native float32/float64 only; other byte orders go through NumPy
    (Tensors store native arrays; a primitive may still be handed another byte order)."""
    a = np.arange(128 * 256, dtype=">f4").reshape(128, 256)
    r = np.arange(256, dtype=">f4")
    assert ops._row_pair(a, r) is None
    np.testing.assert_array_equal(ops.Sub.forward(None, a, r), a - r)
    assert ops._flat_grad_loop("relu_grad", a.reshape(-1).copy(), a.reshape(-1)) is None
    assert ops._flat_grad_loop("tanh_grad", a.copy(), a) is None
    assert sum(loops.values()) == 0


def test_once_loaded_the_elementwise_loops_serve_small_arrays(loops):
    """The loops load on the first large array; from then on ReLU and tanh take them for any
    size (one call costs less than NumPy's several), with NumPy's bits."""
    rng = np.random.default_rng(6)
    a = rng.standard_normal((4, 5)).astype(np.float32)
    up = rng.standard_normal((4, 5)).astype(np.float32)
    t = Tensor(a, requires_grad=True)
    t.relu().backward(up)
    np.testing.assert_array_equal(t.grad, np.where(a > 0, up, np.float32(0)))
    assert loops["relu"] == 1 and loops["relu_grad"] == 1
    _same_bits(ops.ReLU.forward(None, a), np.maximum(a, 0))


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(FLOATS), st.sampled_from(FLOATS), st.integers(1, 300),
       st.sampled_from([0.0, 0.1, 1 / 3, 0.9, 1.0]), st.integers(0, 2**31))
def test_the_running_statistic_loop_is_the_numpy_path(adtype, bdtype, c, momentum, seed):
    """``running_value`` (BatchNorm's running statistics) by the loop and by NumPy: the same
    bits for float32/float64 statistics and batch values, infinities and -0 included; nan
    where NumPy gives nan."""
    from tinygrad_bn.norms import checks

    k = ops._loops()
    if k is None:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(seed)
    arr = _values(rng, (c,), adtype, True)
    batch = _values(rng, (c,), bdtype, True)
    got = k.momentum_average(arr, batch, momentum, 1.0 - momentum)
    saved = ops._KERNELS
    ops._KERNELS = False
    try:
        with np.errstate(all="ignore"):  # (inf · 0 for momentum 0 or 1)
            want = checks.running_value(arr, batch, momentum)
    finally:
        ops._KERNELS = saved
    # the same bits, but for the sign of a nan made from two nans (inf·0 + nan: which one
    # an addition passes on is the compiler's choice, and no value of it)
    for out in (got, checks.running_value(arr, batch, momentum)):  # (the loop, once loaded)
        assert out.dtype == want.dtype
        np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
        real = ~np.isnan(want)
        _same_bits(out[real], want[real])


# ---------------------------------------------------------------- loops outside the graph
def test_loops_for_loads_the_loops_only_for_a_large_array(monkeypatch):
    """Running statistics and optimizer steps use the loops once loaded, for any size; an
    array of ``_LARGE`` elements loads them, a small one does not."""
    if ops._loops() is None:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(ops, "_KERNELS", None)
    assert ops.loops_for(ops._LARGE - 1) is None and ops._KERNELS is None
    k = ops.loops_for(ops._LARGE)
    assert k is not None and ops._KERNELS is k
    assert ops.loops_for(3) is k
    monkeypatch.setattr(ops, "_KERNELS", False)  # TINYGRAD_BN_KERNELS=numpy, or no numba
    assert ops.loops_for(10 * ops._LARGE) is None


def _sgd_steps(dtype, shapes, seed, edges, steps=3, params=None, grad=None, **kw):
    """Parameters and momentum buffers after ``steps`` SGD steps with random gradients."""
    rng = np.random.default_rng(seed)
    ps = params or [Tensor(_values(rng, s, dtype, edges), requires_grad=True) for s in shapes]
    opt = tg.optim.SGD(ps, **kw)
    with np.errstate(all="ignore"):
        for _ in range(steps):
            for p in ps:
                p.grad = grad(p) if grad else _values(rng, p.shape, dtype, edges)
            opt.step()
    return [p.data.copy() for p in ps] + [opt.state[id(p)]["momentum_buffer"].copy()
                                         for p in ps]


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(FLOATS), st.booleans(), st.sampled_from([0.01, 0.1, 1, 3, 0]),
       st.sampled_from([0.1, 0.5, 0.9, 1, 1.5]), st.integers(0, 2**31))
def test_the_sgd_momentum_loop_is_the_numpy_step(dtype, edges, lr, momentum, seed):
    """SGD with momentum by the loop and by NumPy's three in-place lines: the same bits in
    the parameters and the momentum buffers after three steps (nan where NumPy gives nan),
    for a parameter too small to load the loops and one large enough to."""
    if ops._loops() is None:
        pytest.skip("numba is not installed")
    shapes = [(7,), (3, 5), (ops._LARGE + 3,)]
    saved = ops._KERNELS
    calls = Counter()
    real = saved.sgd_momentum_

    def counted(*args):
        calls["sgd"] += 1
        return real(*args)
    try:
        saved.sgd_momentum_ = counted
        got = _sgd_steps(dtype, shapes, seed, edges, lr=lr, momentum=momentum)
        ops._KERNELS = False
        want = _sgd_steps(dtype, shapes, seed, edges, lr=lr, momentum=momentum)
    finally:
        saved.sgd_momentum_ = real
        ops._KERNELS = saved
    assert calls["sgd"] == 2 * len(shapes)  # every step after the first, which makes buffers
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        _same_bits(g[~np.isnan(w)], w[~np.isnan(w)])


def _overlapping_grad():
    base = np.arange(ops._LARGE + 1, dtype=np.float32) / ops._LARGE
    p = Tensor(np.zeros(1, np.float32), requires_grad=True)
    p.data = base[:-1]
    return [p], lambda p: base[1:]  # shares all but one value with the parameter


@pytest.mark.parametrize("case", ["plain", "weight_decay", "dampening", "nesterov", "maximize",
                                  "NumPy float64 lr", "float16", "float64 grad",
                                  "not contiguous", "grad is the parameter", "grad overlaps"])
def test_what_stays_on_numpy_in_an_sgd_step(loops, monkeypatch, case):
    """Every SGD case but the plain momentum step (one dtype, contiguous arrays that do not
    overlap, Python-number settings) goes through NumPy, with NumPy's results; the plain
    one takes the loop."""
    kw = dict(lr=0.1, momentum=0.9)
    dtype, params, grad = np.float32, None, None
    n = ops._LARGE + 5
    if case in ("weight_decay", "dampening"):
        kw[case] = 0.25
    elif case in ("nesterov", "maximize"):
        kw[case] = True
    elif case == "NumPy float64 lr":
        kw["lr"] = np.float64(0.1)  # NumPy then computes lr·buf in float64
    elif case == "float16":
        dtype = np.float16
    elif case == "float64 grad":
        grad = lambda p: np.full(p.shape, 0.3, np.float64)  # noqa: E731
    elif case == "not contiguous":
        def params_():
            p = Tensor(np.zeros((2, 2), np.float32), requires_grad=True)
            p.data = np.linspace(-1, 1, 2 * n, dtype=np.float32).reshape(n, 2).T
            return [p]
    elif case == "grad is the parameter":
        grad = lambda p: p.data  # noqa: E731
    results = []
    for mode in ("loops", "numpy"):
        if mode == "numpy":
            monkeypatch.setattr(ops, "_KERNELS", False)
        if case == "grad overlaps":
            params, grad = _overlapping_grad()
        elif case == "not contiguous":
            params = params_()
        results.append(_sgd_steps(dtype, [(n,)], 0, False, params=params, grad=grad, **kw))
    assert loops["sgd_momentum_"] == (2 if case == "plain" else 0)  # (steps 2 and 3)
    for g, w in zip(*results):
        _same_bits(g, w) if g.dtype != np.float16 else np.testing.assert_array_equal(g, w)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(FLOATS), st.sampled_from(FLOATS), st.integers(1, 300),
       st.sampled_from([0.0, 0.1, 1 / 3, 0.9, 1.0]), st.sampled_from([2, 3, 7, 1000]),
       st.integers(0, 2**31))
def test_the_running_statistics_loop_is_the_commit_path(sdtype, bdtype, c, momentum, m, seed):
    """``update_running`` by the one-call loop and by ``commit`` of two ``running_value``
    arrays: the same bits in both statistics (nan where NumPy gives nan), Bessel's factor
    applied in the batch variance's dtype."""
    from tinygrad_bn.norms import checks

    if ops._loops() is None:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(seed)
    rm, rv = _values(rng, (c,), sdtype, True), _values(rng, (c,), sdtype, True)
    mean, var = _values(rng, (c,), bdtype, True), np.abs(_values(rng, (c,), bdtype, True))
    got = [rm.copy(), rv.copy()]
    want = [rm.copy(), rv.copy()]
    calls = Counter()
    k = ops._KERNELS
    real = k.running_stats_
    try:
        k.running_stats_ = lambda *a: (calls.update(["loop"]), real(*a))
        with np.errstate(all="ignore"):
            checks.update_running(*got, mean, var, m, momentum)
            ops._KERNELS = False
            checks.update_running(*want, mean, var, m, momentum)
    finally:
        ops._KERNELS = k
        k.running_stats_ = real
    assert calls["loop"] == 1
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        _same_bits(g[~np.isnan(w)], w[~np.isnan(w)])


@pytest.mark.parametrize("case", ["overlapping", "not contiguous", "float16"])
def test_running_statistics_that_stay_on_commit(loops, monkeypatch, case):
    """Statistics that overlap, are strided or float16 are written by ``commit``, with its
    results."""
    from tinygrad_bn.norms import checks

    rng = np.random.default_rng(0)
    mean, var = rng.standard_normal(6).astype(np.float32), rng.uniform(1, 2, 6).astype(np.float32)
    results = []
    for mode in ("loops", "numpy"):
        if mode == "numpy":
            monkeypatch.setattr(ops, "_KERNELS", False)
        if case == "overlapping":  # (both new values come from the old ones, then are written)
            both = np.linspace(0, 1, 9, dtype=np.float32)
            rm, rv = both[:6], both[3:]
        elif case == "not contiguous":
            rm, rv = np.zeros(12, np.float32)[::2], np.ones(6, np.float32)
        else:
            rm, rv = np.zeros(6, np.float16), np.ones(6, np.float16)
        checks.update_running(rm, rv, mean, var, 10, 0.1)
        results.append((rm.copy(), rv.copy()))
    assert loops["running_stats_"] == 0
    for g, w in zip(*results):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("case", ["plain", "hook", "retain_grad", "d² alone"])
def test_the_square_adds_into_the_gradient_its_input_holds(loops, monkeypatch, case):
    """d = x − μ feeds ÷ σ and d² (σ²'s): d²'s gradient is added into the one d already holds
    from ÷ σ (one pass), with the bits of the product written out and then added; a hook on
    d and d's retained gradient see the whole sum. A d with no other gradient gets the
    product written out."""
    rng = np.random.default_rng(5)
    x0 = rng.standard_normal((128, 256)).astype(np.float32)

    def grads(adds_into: bool):
        monkeypatch.setattr(ops.Pow, "_adds_into", adds_into)
        x = Tensor(x0, requires_grad=True)
        d = x - x.mean(axis=0, keepdims=True)
        seen = []
        if case == "hook":
            d.register_hook(lambda g: seen.append(g.data.copy()))
        elif case == "retain_grad":
            d.retain_grad()
        var = (d ** 2).mean(axis=0, keepdims=True)
        y = var.sum() if case == "d² alone" else (d / (var + 1e-5).sqrt()).relu().sum() + \
            var.sum()
        y.backward()
        return [x.grad] + seen + ([d.grad] if case == "retain_grad" else [])

    got = grads(True)
    fused = loops["double_mul_row_add_"]
    want = grads(False)
    assert fused == (0 if case == "d² alone" else 1)
    assert loops["double_mul_row"] == (1 if case == "d² alone" else 0) + 1
    assert len(got) == len(want) == (1 if case in ("plain", "d² alone") else 2)
    for g, w in zip(got, want):
        _same_bits(g, w)
