"""The backward engine: higher derivatives, deep graphs, accumulation, graph freeing, grad
modes, grad(), custom Functions and the errors of the contract."""
from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn import Function, Tensor
from tinygrad_bn.core import ops

TOL = dict(rtol=1e-10, atol=1e-10)


def _t(arr, requires_grad=True):
    return Tensor(np.array(arr, dtype=np.float64), requires_grad=requires_grad)


# ------------------------------------------------------------ Hessian-vector products
# Each function takes (x, w) and works on tinygrad_bn and torch Tensors alike; ``mx``
# is the max over an axis (``.max`` here, ``torch.amax`` there).
def _f_mlp(x, w, mx):
    h = (x @ w).tanh()
    return (h * h).sum() + (x.sigmoid() * w.sum()).mean()


def _f_exp_div(x, w, mx):
    return ((x * 0.5).exp() / (1.0 + (w @ w.T).sum() + x ** 2)).sum() + (x * x + 1.0).sqrt().sum()


def _f_pow_max(x, w, mx):
    return (mx(x * x, 1) ** 3).mean() + ((w * w + 0.5) ** (x.mean() * 0.5)).sum()


def _f_mixed(x, w, mx):
    z = x @ w  # (3, 2)
    return ((z - z.mean()) ** 2).sum() / (w ** 2).sum().sqrt() + mx(z.sigmoid(), 0).sum()


HVP_FUNCS = [_f_mlp, _f_exp_div, _f_pow_max, _f_mixed]


@pytest.mark.parametrize("f", HVP_FUNCS, ids=lambda f: f.__name__)
def test_hessian_vector_products_match_torch(torch, f):
    rng = np.random.default_rng(0)
    x0, w0 = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    vx, vw = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))

    x, w = _t(x0), _t(w0)
    gx, gw = tg.grad(f(x, w, lambda a, ax: a.amax(axis=ax)), [x, w], create_graph=True)
    assert gx.requires_grad and gw.requires_grad
    hx, hw = tg.grad((gx * vx).sum() + (gw * vw).sum(), [x, w])

    tx, tw = torch.tensor(x0, requires_grad=True), torch.tensor(w0, requires_grad=True)
    tgx, tgw = torch.autograd.grad(f(tx, tw, lambda a, ax: torch.amax(a, dim=ax)), [tx, tw],
                                   create_graph=True)
    thx, thw = torch.autograd.grad((tgx * torch.tensor(vx)).sum() + (tgw * torch.tensor(vw)).sum(),
                                   [tx, tw])
    np.testing.assert_allclose(gx.data, tgx.detach().numpy(), **TOL)
    np.testing.assert_allclose(gw.data, tgw.detach().numpy(), **TOL)
    np.testing.assert_allclose(hx.data, thx.numpy(), **TOL)
    np.testing.assert_allclose(hw.data, thw.numpy(), **TOL)
    assert np.abs(hx.data).max() > 1e-3  # a real second-order term, not zeros


def test_hvp_through_linear_and_var(torch):
    rng = np.random.default_rng(1)
    x0, w0, b0 = rng.standard_normal((5, 3)), rng.standard_normal((4, 3)), rng.standard_normal(4)
    v = rng.standard_normal((5, 3))

    def f(x, w, b, lin, var):
        return (lin(x, w, b).tanh() ** 2).sum() * var(x)

    x, w, b = _t(x0), _t(w0), _t(b0)
    (gx,) = tg.grad(f(x, w, b, ops.Linear.apply, lambda a: a.var(axis=0, ddof=1).sum()), [x],
                    create_graph=True)
    hx, hw, hb = tg.grad((gx * v).sum(), [x, w, b])
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x0, w0, b0))
    (tgx,) = torch.autograd.grad(
        f(tx, tw, tb, torch.nn.functional.linear, lambda a: a.var(dim=0, correction=1).sum()),
        [tx], create_graph=True)
    thx, thw, thb = torch.autograd.grad((tgx * torch.tensor(v)).sum(), [tx, tw, tb])
    for mine, ref in [(hx, thx), (hw, thw), (hb, thb)]:
        np.testing.assert_allclose(mine.data, ref.numpy(), **TOL)


def test_third_derivatives(torch):
    x0 = np.array([-1.3, -0.2, 0.4, 1.1])

    def third(fn, x):
        (g1,) = tg.grad(fn(x).sum(), [x], create_graph=True)
        (g2,) = tg.grad(g1.sum(), [x], create_graph=True)
        (g3,) = tg.grad(g2.sum(), [x])
        return g3.data

    # closed forms
    np.testing.assert_allclose(third(lambda t: t ** 4, _t(x0)), 24 * x0, **TOL)
    np.testing.assert_allclose(third(lambda t: (2 * t).exp(), _t(x0)), 8 * np.exp(2 * x0), **TOL)
    th = np.tanh(x0)
    np.testing.assert_allclose(third(lambda t: t.tanh(), _t(x0)),
                               -2 * (1 - th ** 2) * (1 - 3 * th ** 2), **TOL)

    # a mixture, against torch
    def f(t):
        return (t.sigmoid() * t.exp()) / (1.0 + t * t) + (t * t + 2.0).sqrt() * t.tanh()

    tx = torch.tensor(x0, requires_grad=True)
    (t1,) = torch.autograd.grad(f(tx).sum(), [tx], create_graph=True)
    (t2,) = torch.autograd.grad(t1.sum(), [tx], create_graph=True)
    (t3,) = torch.autograd.grad(t2.sum(), [tx])
    np.testing.assert_allclose(third(f, _t(x0)), t3.numpy(), **TOL)

    # of a scalar function of a 0-d tensor
    s = _t(0.7)
    (d1,) = tg.grad(s ** 3 * s.exp(), [s], create_graph=True)
    (d2,) = tg.grad(d1, [s], create_graph=True)
    (d3,) = tg.grad(d2, [s])
    xv = 0.7  # (x^3 e^x)''' = e^x (x^3 + 9x^2 + 18x + 6)
    np.testing.assert_allclose(d3.item(), np.exp(xv) * (xv ** 3 + 9 * xv ** 2 + 18 * xv + 6),
                               **TOL)


def test_100k_op_chain_backward():
    n = 100_000
    x = _t(1.5)
    y = x
    for i in range(n // 2):
        y = y * 1.00001
        y = y + 0.5
    y.backward(retain_graph=True)
    np.testing.assert_allclose(x.grad, 1.00001 ** (n // 2), rtol=1e-9)
    (g,) = tg.grad(y, [x])  # grad() walks the same deep graph
    np.testing.assert_allclose(g.data, x.grad, rtol=1e-15)
    with pytest.raises(RuntimeError, match="second time"):  # that walk freed the graph
        y.backward()


# ------------------------------------------------------------------ accumulation
def test_two_retained_backwards_add_up_exactly():
    rng = np.random.default_rng(2)
    a, b = _t(rng.standard_normal((3, 2))), _t(rng.standard_normal(2))
    y = ((a * b).tanh() + a.exp() / b.sigmoid()).sum()
    y.backward(retain_graph=True)
    ga, gb = a.grad.copy(), b.grad.copy()
    y.backward()
    np.testing.assert_array_equal(a.grad, 2 * ga)
    np.testing.assert_array_equal(b.grad, 2 * gb)


def test_self_add_and_self_mul():
    a = _t([1.0, -2.0, 3.0])
    (a + a).sum().backward()
    np.testing.assert_array_equal(a.grad, [2, 2, 2])
    a.grad = None
    (a * a).sum().backward()
    np.testing.assert_array_equal(a.grad, [2, -4, 6])
    a.grad = None
    (a - a).sum().backward()
    np.testing.assert_array_equal(a.grad, [0, 0, 0])
    a.grad = None
    (a / a).sum().backward()
    np.testing.assert_allclose(a.grad, [0, 0, 0], atol=1e-15)


def test_leaf_used_many_times(torch):
    x0 = np.array([0.3, -0.7, 1.2])

    def f(x):
        y = x * 2 + x * x * 3 - x.exp() + x
        for k in range(10):
            y = y + x * float(k)
        return (y * x.sigmoid()).sum() + (x @ x)

    x = _t(x0)
    f(x).backward()
    tx = torch.tensor(x0, requires_grad=True)
    f(tx).backward()
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), **TOL)


def test_second_backward_without_retain_graph_raises_and_keeps_grad():
    a = _t([1.0, 2.0])
    y = (a * a).sum()
    y.backward()
    before = a.grad.copy()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()
    np.testing.assert_array_equal(a.grad, before)


def test_second_backward_raises_for_add_only_graph():
    a, b = _t([1.0, 2.0]), _t([3.0, 4.0])
    y = a + b
    y.backward(np.ones(2))
    before = a.grad.copy(), b.grad.copy()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward(np.ones(2))
    np.testing.assert_array_equal(a.grad, before[0])
    np.testing.assert_array_equal(b.grad, before[1])


def test_second_backward_through_a_shared_freed_subgraph_raises():
    a = _t([1.0, 2.0])
    z = a * 3
    y1, y2 = z.sum(), (z * z).sum()
    y1.backward()
    before = a.grad.copy()
    with pytest.raises(RuntimeError, match="second time"):
        y2.backward()
    np.testing.assert_array_equal(a.grad, before)
    with pytest.raises(RuntimeError, match="second time"):
        tg.grad(y2, [a])


def test_retain_graph_allows_another_backward():
    a = _t([1.0, 2.0])
    y = (a.exp() * a).sum()
    y.backward(retain_graph=True)
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(a.grad, 3 * (np.exp([1.0, 2.0]) * np.array([2.0, 3.0])), **TOL)
    with pytest.raises(RuntimeError):
        y.backward()
    # grad() with retain_graph, then backward()
    b = _t([0.5])
    z = (b * b * b).sum()
    (g,) = tg.grad(z, [b], retain_graph=True)
    z.backward()
    np.testing.assert_allclose(b.grad, g.data)
    np.testing.assert_allclose(g.data, [0.75])


# -------------------------------------------------------------------- grad modes
def test_no_grad_and_enable_grad_nest():
    x = _t([1.0])
    assert tg.is_grad_enabled()
    with tg.no_grad():
        assert not tg.is_grad_enabled()
        y = x * 2
        with tg.enable_grad():
            assert tg.is_grad_enabled()
            z = x * 2
            with tg.no_grad():
                w = x * 2
            assert tg.is_grad_enabled()
        assert not tg.is_grad_enabled()
        v = x * 2
    assert tg.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad and z.grad_fn is not None
    assert not w.requires_grad and not v.requires_grad
    assert (x * 2).requires_grad


def test_grad_mode_restored_after_exception():
    with pytest.raises(ZeroDivisionError):
        with tg.no_grad():
            1 / 0
    assert tg.is_grad_enabled()


def test_grad_mode_decorators():
    x = _t([1.0])

    @tg.no_grad()
    def f(t):
        assert not tg.is_grad_enabled()
        return t * 2

    @tg.enable_grad()
    def g(t):
        return t * 2

    assert not f(x).requires_grad
    assert tg.is_grad_enabled()
    with tg.no_grad():
        assert g(x).requires_grad
        assert not tg.is_grad_enabled()
    assert f.__name__ == "f"


def test_no_grad_is_per_thread():
    x = _t([1.0, 2.0])
    entered, computed = threading.Barrier(2, timeout=10), threading.Barrier(2, timeout=10)
    out = {}

    def quiet():
        with tg.no_grad():
            entered.wait()  # the other thread computes while this one is inside no_grad
            computed.wait()
            out["quiet"] = x * 2

    def loud():
        entered.wait()
        out["loud_enabled"] = tg.is_grad_enabled()
        out["loud"] = x * 2
        computed.wait()

    threads = [threading.Thread(target=quiet), threading.Thread(target=loud)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out["loud_enabled"] is True
    assert out["loud"].requires_grad and out["loud"].grad_fn is not None
    assert not out["quiet"].requires_grad
    out["loud"].sum().backward()
    np.testing.assert_array_equal(x.grad, [2, 2])


def test_detach():
    x = _t([1.0, 2.0])
    y = x * 3
    d = y.detach()
    assert not d.requires_grad and d.grad_fn is None and d.is_leaf
    assert np.shares_memory(d.data, y.data)
    (d * x).sum().backward()
    np.testing.assert_array_equal(x.grad, d.data)  # no gradient through d


def test_retain_grad_on_intermediate():
    x = _t([1.0, -2.0])
    h = x * 3
    h.retain_grad()
    k = h.exp()
    (k * h).sum().backward()
    np.testing.assert_allclose(h.grad, np.exp(h.data) * (h.data + 1), **TOL)
    np.testing.assert_allclose(x.grad, 3 * h.grad, **TOL)
    assert k.grad is None  # not retained


# -------------------------------------------------------------- freeing the graph
def test_graph_is_freed_by_reference_counting_after_backward():
    gc.collect()
    gc.disable()
    try:
        x = _t(np.linspace(-1, 1, 6).reshape(2, 3))
        w = _t(np.ones((3, 2)))
        h = (x @ w).tanh()
        z = h.sigmoid() * h
        y = (z.amax(axis=0) + z.mean()).sum()
        refs = [weakref.ref(h), weakref.ref(h.grad_fn), weakref.ref(z), weakref.ref(z.grad_fn),
                weakref.ref(y.grad_fn)]
        assert all(r() is not None for r in refs)
        y.backward()
        del h, z, y
        assert [r() for r in refs] == [None] * len(refs)
        assert x.grad is not None
    finally:
        gc.enable()


def test_graph_is_freed_without_backward_and_after_retained_backward():
    gc.collect()
    gc.disable()
    try:
        x = _t([1.0, 2.0])
        h = x.exp() * x
        y = (h / 3).sum()
        refs = [weakref.ref(h), weakref.ref(h.grad_fn), weakref.ref(y), weakref.ref(y.grad_fn)]
        y.backward(retain_graph=True)
        del h, y
        assert [r() for r in refs] == [None] * len(refs)
    finally:
        gc.enable()


def test_graph_is_freed_after_create_graph():
    gc.collect()
    gc.disable()
    try:
        x = _t([0.5, 1.5])
        h = x.tanh()
        y = (h * h).sum()
        (g,) = tg.grad(y, [x], create_graph=True)
        (g2,) = tg.grad(g.sum(), [x])
        refs = [weakref.ref(h), weakref.ref(h.grad_fn), weakref.ref(g), weakref.ref(g.grad_fn)]
        del h, y, g
        assert [r() for r in refs] == [None] * len(refs)
        assert g2.grad_fn is None
    finally:
        gc.enable()


# --------------------------------------------------------------------- aliasing
def _graphs():
    """(output, leaves) pairs whose backward hands one upstream array to several leaves."""
    rng = np.random.default_rng(4)
    a, b = _t(rng.standard_normal(3)), _t(rng.standard_normal(3))
    yield (a + b), (a, b)
    a, b = _t(rng.standard_normal(3)), _t(rng.standard_normal(3))
    yield (a - b), (a, b)
    a, b = _t(rng.standard_normal(3)), _t(rng.standard_normal(3))
    yield (a.reshape(3, 1) + b.reshape(3, 1)).reshape(3), (a, b)
    a, b = _t(rng.standard_normal(3)), _t(rng.standard_normal(3))
    yield (a + b) * 1.0 + a, (a, b)
    a = _t(rng.standard_normal(3))
    yield a, (a,)
    a = _t(rng.standard_normal(3))
    yield a.expand(3), (a,)


@pytest.mark.parametrize("k", range(6))
def test_leaf_grads_never_alias_each_other_or_the_user_gradient(k):
    y, leaves = list(_graphs())[k]
    user = np.array([1.0, 2.0, 3.0])
    y.backward(user)
    grads = [leaf.grad for leaf in leaves]
    for g in grads:
        assert not np.shares_memory(g, user)
    for i in range(len(grads)):
        for j in range(i + 1, len(grads)):
            assert not np.shares_memory(grads[i], grads[j])
    # mutate one: the others and the user's array stay
    snapshot = [g.copy() for g in grads]
    grads[0] += 100.0
    np.testing.assert_array_equal(user, [1.0, 2.0, 3.0])
    for g, s in zip(grads[1:], snapshot[1:]):
        np.testing.assert_array_equal(g, s)


def test_leaf_grads_do_not_alias_after_implicit_scalar_gradient():
    a, b = _t(2.0), _t(3.0)
    (a + b).backward()
    assert not np.shares_memory(a.grad, b.grad)
    a.grad += 1
    assert b.grad == 1.0


def test_accumulating_into_grad_does_not_touch_other_arrays():
    a, b = _t([1.0, 2.0]), _t([3.0, 4.0])
    y = a + b
    y.backward(np.ones(2), retain_graph=True)
    y.backward(np.ones(2))
    np.testing.assert_array_equal(a.grad, [2, 2])
    np.testing.assert_array_equal(b.grad, [2, 2])


def test_custom_function_returning_one_array_for_two_inputs():
    class Both(Function):
        @staticmethod
        def forward(ctx, x, y):
            return x.data + y.data

        @staticmethod
        def backward(ctx, g):
            return g, g

    a, b = _t([1.0, 2.0]), _t([3.0, 4.0])
    Both.apply(a, b).backward(np.ones(2))
    assert not np.shares_memory(a.grad, b.grad)
    a.grad += 5
    np.testing.assert_array_equal(b.grad, [1, 1])


# ------------------------------------------------------------------------ grad()
def test_grad_does_not_touch_dot_grad():
    x = _t([1.0, 2.0])
    (g,) = tg.grad((x * x).sum(), [x])
    assert x.grad is None
    np.testing.assert_array_equal(g.data, [2, 4])
    x.grad = np.array([10.0, 20.0])
    tg.grad((x * x).sum(), x)
    np.testing.assert_array_equal(x.grad, [10, 20])
    # leaves that are not among the inputs are left alone too
    w, b = _t([3.0, 4.0]), _t([1.0, 1.0])
    (gx,) = tg.grad((x * w + b * b).sum(), [x])
    assert w.grad is None and b.grad is None
    np.testing.assert_array_equal(x.grad, [10, 20])
    np.testing.assert_array_equal(gx.data, [3, 4])


def test_grad_with_non_leaf_inputs():
    x = _t([1.0, -2.0])
    h = x * 3
    y = (h ** 2).sum()
    gh, gx = tg.grad(y, [h, x])
    np.testing.assert_allclose(gh.data, 2 * h.data, **TOL)
    np.testing.assert_allclose(gx.data, 18 * x.data, **TOL)
    assert x.grad is None and h.grad is None


@pytest.mark.parametrize("first", [True, False])
def test_grad_of_a_non_leaf_input_is_not_overwritten(first):
    """The gradient captured for a non-leaf input is handed on by sub unchanged; later
    accumulation into the parent's slot must not change the captured array."""
    x, c = _t([1.0, 2.0]), _t([1.0, 1.0], requires_grad=False)
    a = x * 2
    s = a - c
    y = (s * 3).sum() + (a * 5).sum() if first else (a * 5).sum() + (s * 3).sum()
    gs, gx, ga = tg.grad(y, [s, x, a])
    np.testing.assert_array_equal(gs.data, [3, 3])
    np.testing.assert_array_equal(ga.data, [8, 8])
    np.testing.assert_array_equal(gx.data, [16, 16])


def test_grad_allow_unused():
    x, u = _t([1.0]), _t([2.0])
    y = (x * 2).sum()
    with pytest.raises(RuntimeError, match=r"inputs\[1\].*not used"):
        tg.grad(y, [x, u], retain_graph=True)
    gx, gu = tg.grad(y, [x, u], allow_unused=True)
    assert gu is None
    np.testing.assert_array_equal(gx.data, [2.0])


def test_grad_multiple_outputs_with_grad_outputs(torch):
    rng = np.random.default_rng(5)
    x0, v1, v2 = rng.standard_normal(3), rng.standard_normal((2, 3)), rng.standard_normal(3)

    def f(x):
        return x.reshape(1, 3) * x.reshape(3, 1)[:2], x.tanh()

    x = _t(x0)
    y1, y2 = f(x)
    (g,) = tg.grad([y1, y2], [x], grad_outputs=[v1, Tensor(v2)])
    tx = torch.tensor(x0, requires_grad=True)
    t1, t2 = f(tx)
    (tgr,) = torch.autograd.grad([t1, t2], [tx], grad_outputs=[torch.tensor(v1), torch.tensor(v2)])
    np.testing.assert_allclose(g.data, tgr.numpy(), **TOL)
    with pytest.raises(RuntimeError, match="2 output"):
        tg.grad([x * 1, x * 2], [x], grad_outputs=[v2])


def test_grad_needs_inputs_that_require_grad():
    x = _t([1.0])
    c = _t([1.0], requires_grad=False)
    with pytest.raises(RuntimeError, match=r"inputs\[1\].*does not require grad"):
        tg.grad((x * c).sum(), [x, c])


# ----------------------------------------------------------------- custom Function
class ScaledMul(Function):
    """z = alpha * x * y; alpha is a plain (non-Tensor) positional argument."""

    seen: dict = {}

    @staticmethod
    def forward(ctx, x, y, alpha):
        ScaledMul.seen["types"] = (type(x), type(y), type(alpha))
        ScaledMul.seen["recording"] = tg.is_grad_enabled()
        ctx.save_for_backward(x, y)
        ctx.alpha = alpha
        return x * y * alpha

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        ScaledMul.seen["needs"] = ctx.needs_input_grad
        ScaledMul.seen["grad_type"] = type(g)
        gx = g * y * ctx.alpha if ctx.needs_input_grad[0] else None
        gy = g * x * ctx.alpha if ctx.needs_input_grad[1] else None
        return gx, gy, None


def test_custom_function_ctx_api():
    x, y = _t([1.0, 2.0]), _t([3.0, 5.0], requires_grad=False)
    z = ScaledMul.apply(x, y, 0.5)
    assert ScaledMul.seen["types"] == (Tensor, Tensor, float)
    assert ScaledMul.seen["recording"] is False
    assert isinstance(z, Tensor) and z.requires_grad and isinstance(z.grad_fn, ScaledMul)
    np.testing.assert_array_equal(z.data, [1.5, 5.0])
    z.sum().backward()
    assert ScaledMul.seen["needs"] == (True, False, False)
    assert ScaledMul.seen["grad_type"] is Tensor
    np.testing.assert_array_equal(x.grad, [1.5, 2.5])
    assert y.grad is None
    # saved values are freed after backward
    z2 = ScaledMul.apply(x, _t([1.0, 1.0]), 2.0)
    node = z2.grad_fn
    z2.sum().backward()
    with pytest.raises(RuntimeError, match="freed"):
        node.saved_tensors


def test_custom_function_without_recording():
    x = _t([1.0], requires_grad=False)
    z = ScaledMul.apply(x, x, 2.0)
    assert not z.requires_grad and z.grad_fn is None
    with tg.no_grad():
        assert not ScaledMul.apply(_t([1.0]), x, 2.0).requires_grad


class Cube(Function):
    """y = x³ with a backward written in Tensor ops (so it can be differentiated again)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return (3.0 * x * x * g,)


class SoftClip(Function):
    """y = tanh(x) * w, backward in Tensor ops returning Tensors for both inputs."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)  # the inputs: recomputing from them keeps the graph
        return x.tanh() * w

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        t = x.tanh()
        return g * w * (1.0 - t * t), (g * t).sum(axis=0)


def test_custom_function_second_derivatives_match_torch(torch):
    rng = np.random.default_rng(6)
    x0, w0, v = rng.standard_normal((2, 3)), rng.standard_normal(3), rng.standard_normal((2, 3))

    x = _t(x0)
    (g,) = tg.grad(Cube.apply(x).sum(), [x], create_graph=True)
    np.testing.assert_allclose(g.data, 3 * x0 ** 2, **TOL)
    (h,) = tg.grad((g * v).sum(), [x])
    np.testing.assert_allclose(h.data, 6 * x0 * v, **TOL)

    x, w = _t(x0), _t(w0)

    def composed(x, w):
        return (x.tanh() * w) ** 2

    gx, gw = tg.grad((SoftClip.apply(x, w) ** 2).sum(), [x, w], create_graph=True)
    hx, hw = tg.grad((gx * v).sum() + (gw * w0).sum(), [x, w])
    tx, tw = torch.tensor(x0, requires_grad=True), torch.tensor(w0, requires_grad=True)
    tgx, tgw = torch.autograd.grad(composed(tx, tw).sum(), [tx, tw], create_graph=True)
    thx, thw = torch.autograd.grad((tgx * torch.tensor(v)).sum() + (tgw * torch.tensor(w0)).sum(),
                                   [tx, tw])
    np.testing.assert_allclose(gx.data, tgx.detach().numpy(), **TOL)
    np.testing.assert_allclose(gw.data, tgw.detach().numpy(), **TOL)
    np.testing.assert_allclose(hx.data, thx.numpy(), **TOL)
    np.testing.assert_allclose(hw.data, thw.numpy(), **TOL)
    # plain backward through the same op agrees with the first derivative
    x.grad = w.grad = None
    (SoftClip.apply(x, w) ** 2).sum().backward()
    np.testing.assert_allclose(x.grad, gx.data, **TOL)
    np.testing.assert_allclose(w.grad, gw.data, **TOL)


def test_custom_backward_wrong_number_of_gradients():
    class Two(Function):
        @staticmethod
        def forward(ctx, x, y):
            return x.data * y.data

        @staticmethod
        def backward(ctx, g):
            return g

    a, b = _t([1.0, 2.0]), _t([3.0, 4.0])
    with pytest.raises(RuntimeError, match=r"Two\.backward returned 1 gradient\(s\), expected 2"):
        Two.apply(a, b).sum().backward()
    assert a.grad is None and b.grad is None
    with pytest.raises(RuntimeError, match="expected 2"):
        tg.grad(Two.apply(a, b).sum(), [a], create_graph=True)


def test_custom_backward_wrong_shape():
    class Bad(Function):
        @staticmethod
        def forward(ctx, x):
            return x.data * 2

        @staticmethod
        def backward(ctx, g):
            return (Tensor(np.ones(5)),)

    a = _t(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match=r"Bad\.backward.*shape \(5,\).*shape \(2, 3\)"):
        Bad.apply(a).sum().backward()
    h = a * 1  # through a non-leaf input as well
    with pytest.raises(RuntimeError, match=r"shape \(5,\).*shape \(2, 3\)"):
        Bad.apply(h).sum().backward()


# ------------------------------------------------------------------------- errors
def test_nonscalar_backward_needs_a_gradient():
    y = _t(np.ones((2, 3))) * 2
    with pytest.raises(RuntimeError, match=r"shape \(2, 3\)"):
        y.backward()
    with pytest.raises(RuntimeError, match=r"shape \(2, 3\)"):
        tg.grad(y, [y])


def test_gradient_of_wrong_shape():
    x = _t(np.ones((2, 3)))
    y = x * 2
    with pytest.raises(RuntimeError, match=r"gradient .*shape \(3, 2\) but .*shape \(2, 3\)"):
        y.backward(np.ones((3, 2)))
    with pytest.raises(RuntimeError, match=r"gradient .*shape \(3,\) but .*shape \(2, 3\)"):
        tg.grad(y, [x], grad_outputs=np.ones(3))
    # a gradient that the graph could silently sum down is refused as well
    r = _t(np.ones((1, 3)))
    with pytest.raises(RuntimeError, match=r"gradient .*shape \(2, 3\) but .*shape \(1, 3\)"):
        (r * 2).backward(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match=r"shape \(2, 3\) but .*shape \(1, 3\)"):
        tg.grad(r * 2, [r], grad_outputs=Tensor(np.ones((2, 3))))
    assert x.grad is None and r.grad is None
    y.backward(np.ones((2, 3)))  # the failed calls did not free or change anything
    np.testing.assert_array_equal(x.grad, np.full((2, 3), 2.0))


@pytest.mark.parametrize("sa,sb", [((2, 3), (4, 5)), ((3,), (4,)), ((2, 3), (2,)),
                                   ((2, 2, 3), (3, 3, 4)), ((5, 2), (3,))])
def test_matmul_shape_mismatch_names_both_shapes(sa, sb):
    a, b = _t(np.ones(sa)), _t(np.ones(sb))
    pattern = (r"\(" + ", ".join(map(str, sa)) + r",?\).*\(" + ", ".join(map(str, sb)) + r",?\)")
    with pytest.raises(ValueError, match=pattern):
        a @ b
    with pytest.raises(ValueError, match=pattern):
        a.data @ b  # reflected


def test_matmul_with_a_0d_operand():
    with pytest.raises(ValueError, match=r"\(\).*\(3,\)"):
        _t(2.0) @ _t(np.ones(3))


def test_linear_shape_mismatch():
    x, w = _t(np.ones((4, 3))), _t(np.ones((2, 5)))
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(2, 5\)"):
        ops.Linear.apply(x, w)
    with pytest.raises(ValueError, match=r"\(3,\).*\(2, 5\)"):
        ops.Linear.apply(_t(np.ones((4, 5))), w, _t(np.ones(3)))


@pytest.mark.parametrize("op", ["+", "-", "*", "/", "**"])
def test_broadcasting_mismatch_names_both_shapes(op):
    a, b = _t(np.ones((2, 3))), _t(np.ones((4,)))
    fn = {"+": lambda p, q: p + q, "-": lambda p, q: p - q, "*": lambda p, q: p * q,
          "/": lambda p, q: p / q, "**": lambda p, q: p ** q}[op]
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4,\)"):
        fn(a, b)
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4,\)"):
        fn(a, b.data)
    with pytest.raises(ValueError, match=r"\(4,\) and \(2, 3\)"):
        fn(b.data, a)


def test_where_and_expand_mismatch():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4,\)"):
        _t(np.ones((2, 3))).expand(4)
    with pytest.raises(ValueError):
        tg.where(np.ones((2, 3), bool), _t(np.ones(3)), _t(np.ones(4)))


def test_bad_reshape():
    x = _t(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4,\)"):
        x.reshape(4)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, -1\)"):
        x.reshape(4, -1)


@pytest.mark.parametrize("method", ["sum", "mean", "amax", "var", "std", "amin"])
@pytest.mark.parametrize("axis", [2, -3, (0, 2), (0, 0), (1, -1)])
def test_bad_axis(method, axis):
    x = _t(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"range of \[-2, 1\].*\(2, 3\)|repeats"):
        getattr(x, method)(axis=axis)


@pytest.mark.parametrize("method", ["max", "min", "argmax", "argmin"])
@pytest.mark.parametrize("dim", [2, -3])
def test_bad_dim_is_an_index_error_as_in_torch(method, dim):
    with pytest.raises(IndexError, match=r"range of \[-2, 1\], but got"):
        getattr(_t(np.ones((2, 3))), method)(dim)


def test_bad_axis_names_the_shape():
    with pytest.raises(ValueError, match=r"out of range.*but got 2.*shape \(2, 3\)"):
        _t(np.ones((2, 3))).sum(axis=2)
    with pytest.raises(ValueError, match=r"shape \(\)"):
        _t(1.0).sum(axis=1)
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        _t(np.ones((2, 3))).swapaxes(0, 2)


@pytest.mark.parametrize("perm", [(0, 0, 1), (0, 1, 3), (2, 1, 0, 3), (0, -3, 1)])
def test_transpose_with_a_non_permutation(perm):
    x = _t(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match=r"not a permutation.*\(2, 3, 4\)|out of range"):
        x.transpose(*perm)


def test_var_with_too_few_values_is_nan_with_a_warning_as_in_torch():
    with pytest.warns(RuntimeWarning, match="degrees of freedom"):
        v = _t(np.ones((1, 3))).var(axis=0, ddof=1)
    assert np.isnan(v.data).all()


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_])
def test_requires_grad_on_a_non_float_tensor(dtype):
    with pytest.raises(RuntimeError, match=np.dtype(dtype).name):
        Tensor(np.arange(3).astype(dtype), requires_grad=True)
    t = Tensor(np.arange(3).astype(dtype))
    with pytest.raises(RuntimeError, match="floating"):
        t.requires_grad_()


def test_backward_on_a_tensor_that_does_not_require_grad():
    x = _t([1.0, 2.0], requires_grad=False)
    with pytest.raises(RuntimeError, match="does not require grad"):
        (x * 2).sum().backward()
    w = _t([1.0, 2.0])
    with tg.no_grad():
        y = (w * 2).sum()
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()
    with pytest.raises(RuntimeError, match="does not require grad"):
        tg.grad(y, [w])
    assert w.grad is None


def test_requires_grad_off_on_a_non_leaf():
    y = _t([1.0]) * 2
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad_(False)
