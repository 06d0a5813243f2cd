"""The engine's fast paths, each checked against the plain path beside it.

* nodes keep their edges in themselves: one object per node for the cyclic garbage collector;
* a plain backward starts from the consumers each node counted when it was recorded
  (``Function._uses``) and counts the rest exactly when a consumer is outside the pass;
* gradient buffers the engine owns are reused in place (``ops._reusable``); everything
  someone else may hold (a user's array, what a hook or ``retain_grad`` saw, saved values)
  must come out unchanged;
* large arrays: products summed down with ``np.einsum``, negations after the sum;
  small arrays: sums over leading axes as one BLAS call (``ops._sum_leading``).
"""
import gc
import math
import subprocess
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_bn as tg
from tinygrad_bn import Function, Tensor
from tinygrad_bn.core import ops
from tinygrad_bn.core.node import FREED


def _t(a, dtype=np.float64):
    return Tensor(np.asarray(a, dtype=dtype), requires_grad=True)


@pytest.fixture
def reuse_everywhere(monkeypatch):
    """Every gradient counts as large: the in-place and einsum paths run on small arrays."""
    monkeypatch.setattr(ops, "_LARGE", 0)


# --------------------------------------------------------------------- one object per node
_ONE_OBJECT = """
import gc
import numpy as np
from tinygrad_bn import Tensor
x = Tensor(np.ones(4, np.float32), requires_grad=True)
y = x
for _ in range(10):
    y = y * 1.00001
gc.collect()
before = len(gc.get_objects())
for _ in range(2000):
    y = y * 1.00001
gc.collect()
print((len(gc.get_objects()) - before) / 2000)
"""


def test_a_chain_node_is_one_object_for_the_garbage_collector():
    """Counted in a fresh interpreter: Python 3.11 shares one table of attribute names among
    the instances of a class and stops growing it after many instances, so after many nodes
    made in many different ways (as this test suite makes them) a node may get a dict of
    its own, a second object."""
    out = subprocess.run([sys.executable, "-c", _ONE_OBJECT], capture_output=True, text=True,
                         check=True).stdout
    per_node = float(out.split()[-1])
    assert per_node <= 1.01, per_node
    x = Tensor(np.ones(4, np.float32), requires_grad=True)
    y = x
    for _ in range(2010):
        y = y * 1.00001
    n = 2000
    node = y.grad_fn
    assert gc.is_tracked(node)
    assert node.parents == (node._edge0, None)  # the edges live in the node itself
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 1.00001 ** (n + 10), rtol=1e-4)


def test_parents_reads_the_edges_back_for_every_arity():
    x, w, b = _t(np.ones((2, 3))), _t(np.ones((4, 3))), _t(np.ones(4))
    c = Tensor(np.ones((2, 3)))
    assert (x * 2).grad_fn.parents == (x, None)
    assert (c * x).grad_fn.parents == (None, x)
    assert x.exp().grad_fn.parents == (x,)
    assert ops.Linear.apply(x, w, b).grad_fn.parents == (x, w, b)
    assert ops.Linear.apply(c, w, None).grad_fn.parents == (None, w, None)
    cat = tg.cat([x, c, x], dim=0)
    assert cat.grad_fn.parents == (x, None, x)
    h = x * 2
    y = h.exp()
    assert y.grad_fn.parents == (h.grad_fn,)
    y.sum().backward()
    assert y.grad_fn.parents is None and h.grad_fn.parents is None  # freed


def test_a_node_counts_its_consumers():
    x = _t([1.0, 2.0])
    h = x * 2
    assert h.grad_fn._uses == 0
    a, b = h + 1, h * h
    assert h.grad_fn._uses == 3  # one edge from a, two from b
    assert a.grad_fn._uses == b.grad_fn._uses == 0


# ------------------------------------------------------- counting only what the pass reaches
def test_a_consumer_outside_the_pass_is_counted_out():
    a = _t([1.0, 2.0])
    z = a * 3
    y1, y2 = z.sum(), (z * z).sum()
    y1.backward()
    np.testing.assert_array_equal(a.grad, [3.0, 3.0])
    with pytest.raises(RuntimeError, match="second time"):
        y2.backward()
    np.testing.assert_array_equal(a.grad, [3.0, 3.0])


def test_a_discarded_branch_and_a_consumer_without_gradient():
    x = _t([0.5, -1.5, 2.0])
    h = x * 2
    _ = (h + 1).exp()  # recorded, then dropped: h counts a consumer no pass reaches
    k = h.tanh()
    loss = (k * k).sum() + h.sum()
    loss.backward()
    hd = 2 * x.data
    expect = 2 * (2 * np.tanh(hd) * (1 - np.tanh(hd) ** 2)) + 2
    np.testing.assert_allclose(x.grad, expect, rtol=1e-12)


def test_roots_that_feed_each_other():
    x = _t([1.0, 2.0, 3.0])
    y1 = (x * x).sum()
    y2 = y1 * 3.0
    gx, = tg.grad([y1, y2], [x])
    np.testing.assert_allclose(gx.data, 4 * 2 * x.data)
    x2 = _t([1.0, 2.0, 3.0])
    h = x2 * x2
    s = h.sum()
    t = (h * 2.0).sum()
    u = s * t  # s is both a root below and an input of u
    u.backward()
    hs = x2.data ** 2
    np.testing.assert_allclose(x2.grad, 2 * x2.data * (2 * hs.sum() + hs.sum() * 2)
                               / 1.0 * 1.0, rtol=1e-12)


def test_retained_graph_with_consumers_made_later():
    x = _t([0.3, -0.2, 0.9])
    y = (x * x * x).sum()
    (g1,) = tg.grad(y, [x], create_graph=True)  # builds new nodes on the old graph's values
    np.testing.assert_allclose(g1.data, 3 * x.data ** 2)
    y.backward(retain_graph=True)
    np.testing.assert_allclose(x.grad, 3 * x.data ** 2)
    x.grad = None
    g1.sum().backward()
    np.testing.assert_allclose(x.grad, 6 * x.data)


def test_a_freed_graph_raises_before_any_gradient_lands():
    a = _t([1.0, 2.0])
    z = a.exp()
    z.sum().backward()
    before = a.grad.copy()
    w = (z * 2).sum()  # a fresh node on top of the freed one
    with pytest.raises(RuntimeError, match="second time"):
        w.backward()
    np.testing.assert_array_equal(a.grad, before)


def test_counting_is_the_same_with_and_without_a_hook():
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((3, 4))

    def run(hook: bool):
        x = _t(x0)
        h = x * 2
        _ = h.sigmoid()  # a consumer outside the pass
        if hook:
            h.register_hook(lambda g: None)  # an exact count first
        ((h * h).sum() + h.exp().sum()).backward()
        return x.grad

    np.testing.assert_array_equal(run(False), run(True))


class _Join(Function):
    """The sum of its inputs; its backward notes its label (the order nodes are run in)."""

    ran: list = []

    @staticmethod
    def forward(ctx, *xs, label=""):
        ctx.label = label
        out = xs[0].data.copy()
        for x in xs[1:]:
            out = out + x.data
        return out

    @staticmethod
    def backward(ctx, grad):
        _Join.ran.append(ctx.label)
        return (grad,) * len(ctx.needs_input_grad)


def _kahn_order(root) -> list:
    """The order of a last-in-first-out pass that pushes an input once all its consumers
    ran, inputs in order: what backward() has always done."""
    uses: dict = {}
    stack, seen = [root], {root}
    while stack:
        n = stack.pop()
        for p in n.parents:
            if isinstance(p, Function):
                uses[p] = uses.get(p, 0) + 1
                if p not in seen:
                    seen.add(p)
                    stack.append(p)
    order, stack = [], [root]
    while stack:
        n = stack.pop()
        order.append(n.label)
        for p in n.parents:
            if isinstance(p, Function):
                uses[p] -= 1
                if uses[p] == 0:
                    stack.append(p)
    return order


@pytest.mark.parametrize("shape", ["chain", "diamond", "mixed", "wide", "late"])
def test_a_plain_pass_runs_nodes_in_the_ready_stack_order(shape):
    """Handing a gradient straight to the next node (its only consumer just ran) keeps the
    order of the ready stack, so sums of gradients are added in the same order as before."""
    x = _t(np.arange(3.0))
    J = _Join.apply
    a = J(x, label="a")
    if shape == "chain":
        top = J(J(J(a, label="b"), label="c"), label="d")
    elif shape == "diamond":
        b, c = J(a, label="b"), J(a, label="c")
        top = J(b, c, label="d")
    elif shape == "mixed":  # single-consumer inputs around a shared one
        b, shared = J(a, label="b"), J(a, label="s")
        c = J(shared, label="c")
        top = J(b, shared, c, J(x, label="e"), label="d")
    elif shape == "late":  # d's second input becomes ready after its first was handed one
        shared = J(a, label="s")
        c = J(shared, label="c")
        d = J(J(a, label="b"), shared, label="d")
        top = J(d, c, label="t")
    else:
        parts = [J(a, label=f"p{i}") for i in range(4)]
        top = J(*parts, J(parts[1], parts[2], label="q"), label="d")
    expect = _kahn_order(top.grad_fn)
    _Join.ran = []
    top.sum().backward()
    assert _Join.ran == expect


# --------------------------------------------------------------- buffers the engine owns
def _chain(x, s, hook=None, retain=False):
    a = x * 5.0
    b = a / s  # Div writes g / s into the gradient it receives, when it may
    if hook is not None:
        b.register_hook(hook)
    if retain:
        b.retain_grad()
    c = b * 3.0  # hands Div a fresh gradient
    return b, c


def test_a_hook_keeps_the_gradient_it_saw(reuse_everywhere):
    x, s = _t(np.ones((4, 5))), _t(np.full((1, 5), 2.0))
    kept = []
    _, c = _chain(x, s, hook=kept.append)
    c.sum().backward()
    np.testing.assert_array_equal(kept[0].data, np.full((4, 5), 3.0))
    np.testing.assert_allclose(x.grad, np.full((4, 5), 7.5))


def test_retain_grad_keeps_the_gradient(reuse_everywhere):
    x, s = _t(np.ones((4, 5))), _t(np.full((1, 5), 2.0))
    b, c = _chain(x, s, retain=True)
    c.sum().backward()
    np.testing.assert_array_equal(b.grad, np.full((4, 5), 3.0))
    np.testing.assert_allclose(s.grad, np.full((1, 5), -4 * 3.0 * 5 / 4))


def test_the_callers_gradient_is_left_alone(reuse_everywhere):
    x, s = _t(np.ones((4, 5))), _t(np.full((1, 5), 2.0))
    b = (x * 2.0) / s
    g = np.full((4, 5), 3.0)
    b.backward(g)
    np.testing.assert_array_equal(g, np.full((4, 5), 3.0))
    gt = Tensor(np.full((4, 5), 3.0))
    x.grad = None
    ((x * 2.0) / s).backward(gt)
    np.testing.assert_array_equal(gt.data, np.full((4, 5), 3.0))


def test_the_implicit_gradient_of_one_is_shared_and_never_written(reuse_everywhere):
    """backward() without a gradient starts from one cached read-only 1 per shape and
    dtype: a leaf that is the output itself gets its own writeable copy, a reusing op
    writes elsewhere, and the next backward still starts from 1."""
    for _ in range(2):
        x = Tensor(np.float32(3.0), requires_grad=True)
        x.backward()
        assert x.grad == 1.0 and x.grad.flags.writeable
        x.grad += 5  # must not reach the cached 1
        y = _t(np.full((1, 1), 2.0))
        (y * 3.0).backward()  # Mul may write into a gradient it owns: not into this one
        np.testing.assert_array_equal(y.grad, [[3.0]])
        y.grad += 1
        z = _t(np.full(4, 2.0))
        z.sum().backward()
        np.testing.assert_array_equal(z.grad, np.ones(4))
    for (value, dtype, shape), const in ops._CONSTS.items():
        assert not const.flags.writeable
        np.testing.assert_array_equal(const, np.full(shape, value, dtype))


def test_a_hook_result_is_not_adopted_by_a_leaf(reuse_everywhere):
    x = _t(np.ones(3))
    mine = np.full(3, 7.0)
    x.register_hook(lambda g: mine)
    (x * 2.0).sum().backward()
    np.testing.assert_array_equal(x.grad, mine)
    assert x.grad is not mine and not np.shares_memory(x.grad, mine)
    x.grad += 1
    np.testing.assert_array_equal(mine, np.full(3, 7.0))


def test_two_leaves_from_one_gradient_do_not_share_it(reuse_everywhere):
    x, y = _t(np.ones(5)), _t(np.ones(5))
    ((x + y) * 2.0).sum().backward()
    assert not np.shares_memory(x.grad, y.grad)
    x.grad += 1
    np.testing.assert_array_equal(y.grad, np.full(5, 2.0))


def test_an_add_feeding_two_reusing_ops(reuse_everywhere):
    rng = np.random.default_rng(1)
    x0, s0 = rng.uniform(1, 2, (6, 4)), rng.uniform(1, 2, (1, 4))
    x, s = _t(x0), _t(s0)
    u, v = x * 2.0, x * 3.0
    w = u + v  # one gradient, two consumers: each gets a view
    y = (w / s) * 1.5
    y.sum().backward()
    np.testing.assert_allclose(x.grad, np.broadcast_to(5 * 1.5 / s0, (6, 4)), rtol=1e-12)
    np.testing.assert_allclose(s.grad, (-1.5 * 5 * x0 / s0 ** 2).sum(0, keepdims=True),
                               rtol=1e-12)


@pytest.mark.parametrize("order", ["bias second", "bias first", "both broadcast"])
def test_an_add_with_a_broadcast_input_hands_on_its_own_gradient(reuse_everywhere, order):
    """``x̂ · γ + β``: Add sums β's gradient down itself and passes the gradient it received
    on to the product, which writes into it. β's gradient stays its own (the product's
    in-place write does not reach it), and every gradient is the plain one."""
    rng = np.random.default_rng(2)
    x0, r0, b0 = rng.uniform(1, 2, (6, 4)), rng.uniform(1, 2, (4,)), rng.uniform(1, 2, (4,))
    if order == "both broadcast":
        x0, b0 = x0[:, :1], b0.reshape(1, 4)
    x, r, b = _t(x0), _t(r0), _t(b0)
    g0 = rng.uniform(-1, 1, (6, 4))
    y = (b + x * r) if order == "bias first" else (x * r + b)
    y.backward(g0.copy())
    want_b = g0.sum(0) if b0.ndim == 1 else g0.sum(0, keepdims=True)
    np.testing.assert_allclose(b.grad, want_b, rtol=1e-12)
    np.testing.assert_allclose(x.grad, (g0 * r0).sum(1, keepdims=True) if x0.shape[1] == 1
                               else g0 * r0, rtol=1e-12)
    np.testing.assert_allclose(r.grad, (g0 * x0).sum(0), rtol=1e-12)
    assert not np.shares_memory(b.grad, x.grad) and not np.shares_memory(b.grad, r.grad)


def test_saved_values_survive_a_retained_backward(reuse_everywhere):
    rng = np.random.default_rng(2)
    x, s, w = _t(rng.standard_normal((5, 3))), _t(rng.uniform(1, 2, 3)), _t(rng.standard_normal(3))
    y = ((x - x.mean(0, keepdim=True)) / s * w).tanh()
    g = rng.standard_normal((5, 3))
    y.backward(g, retain_graph=True)
    first = [t.grad.copy() for t in (x, s, w)]
    y.backward(g)
    for t, f in zip((x, s, w), first):
        np.testing.assert_allclose(t.grad, 2 * f, rtol=1e-12)


class _GiveBackSaved(Function):
    """A user Function whose backward hands out an array it saved (its input's data)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.data * 1.0

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return x  # the input itself, as a gradient


def test_a_user_function_returning_a_saved_array(reuse_everywhere):
    x = _t([1.0, 2.0, 3.0])
    y = _GiveBackSaved.apply(x)
    (y / 2.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 2.0, 3.0])
    assert not np.shares_memory(x.grad, x.data)
    x.grad += 1
    np.testing.assert_array_equal(x.data, [1.0, 2.0, 3.0])
    z = _GiveBackSaved.apply(x)
    ((z * 2.0) + z * 3.0).sum().backward()  # the same saved array reaches x twice
    np.testing.assert_array_equal(x.data, [1.0, 2.0, 3.0])


def test_concurrent_backward_into_a_shared_leaf_with_reuse(reuse_everywhere):
    w = _t(np.ones((8, 8)))
    xs = [Tensor(np.full((8, 8), i + 1.0)) for i in range(8)]

    def work(x):
        for _ in range(20):
            ((x * w) / 2.0 * 3.0).sum().backward()

    threads = [threading.Thread(target=work, args=(x,)) for x in xs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_allclose(w.grad, np.full((8, 8), 20 * 1.5 * sum(range(1, 9))))


def test_concurrent_passes_over_one_retained_graph_keep_their_own_offers(monkeypatch):
    """Threads backpropagating through one retained graph at once, each with its own
    upstream gradient: d² adds into the gradient d holds in that thread's pass (the engine's
    offer is per thread), so every pass gives the single-threaded result. d²'s backward
    first sleeps a little, so that the other threads' passes reach the same node between
    the offer and its use."""
    real = ops.Pow.backward

    def slow(ctx, g):
        time.sleep(0.002)
        return real(ctx, g)
    monkeypatch.setattr(ops.Pow, "backward", staticmethod(slow))
    rng = np.random.default_rng(4)
    x = _t(rng.standard_normal((128, 256)))  # (large: d²'s gradient is added into d's)
    d = x - x.mean(axis=0, keepdims=True)
    var = (d ** 2).mean(axis=0, keepdims=True)
    y = d / (var + 1e-5).sqrt() + var
    ups = [rng.standard_normal((128, 256)) for _ in range(4)]
    want = []
    for up in ups:
        (g,) = tg.grad(y, [x], up, retain_graph=True)
        want.append(g.data)
    got = [[] for _ in ups]

    def work(i):
        for _ in range(10):
            (g,) = tg.grad(y, [x], ups[i], retain_graph=True)
            got[i].append(g.data)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(ups))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, w in enumerate(want):
        for g in got[i]:
            np.testing.assert_array_equal(g, w)


# ------------------------------------------------------- fast paths against the plain ones
def _grads(f, arrays):
    ts = [_t(a, a.dtype) for a in arrays]
    f(*ts).backward(np.ones(f(*[Tensor(a) for a in arrays]).shape, arrays[0].dtype))
    return [t.grad for t in ts]


CASES = {
    "mul bias": lambda x, b: x * b,
    "div bias": lambda x, b: x / b,
    "sub bias": lambda x, b: x - b,
    "bias mul": lambda x, b: b * x,
    "bias div": lambda x, b: b / (x * x + 1),
    "bias sub": lambda x, b: b - x,
    "chain": lambda x, b: ((x - b) / (b * b + 1)) * b,
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("shapes", [((6, 5), (5,)), ((6, 5), (1, 5)), ((3, 4, 5), (4, 1)),
                                    ((4, 5), (4, 5)), ((2, 3, 4), (1, 1, 1))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_paths_match_the_small_ones(monkeypatch, name, shapes, dtype):
    rng = np.random.default_rng(3)
    arrays = [rng.uniform(0.5, 2.0, s).astype(dtype) for s in shapes]
    f = CASES[name]
    small = _grads(f, arrays)
    monkeypatch.setattr(ops, "_LARGE", 0)
    large = _grads(f, arrays)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for a, s, g in zip(arrays, small, large):
        assert g.shape == a.shape and g.dtype == a.dtype
        np.testing.assert_allclose(g, s, rtol=tol, atol=tol)


def test_large_paths_match_torch(torch, monkeypatch):
    monkeypatch.setattr(ops, "_LARGE", 0)
    rng = np.random.default_rng(4)
    x0, w0, b0 = rng.standard_normal((7, 5)), rng.uniform(0.5, 1.5, 5), rng.standard_normal(5)
    g0 = rng.standard_normal((7, 5))
    x, w, b = _t(x0), _t(w0), _t(b0)
    tg.nn.functional.batch_norm(x, None, None, w, b, training=True).backward(g0)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x0, w0, b0))
    torch.nn.functional.batch_norm(tx, None, None, tw, tb, training=True).backward(
        torch.tensor(g0))
    for ours, theirs in ((x, tx), (w, tw), (b, tb)):
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("gshape, shape", [
    ((6, 5), (5,)), ((6, 5), (1, 5)), ((6, 5), (6, 1)), ((6, 5), ()), ((6, 5), (1, 1)),
    ((2, 3, 4), (4,)), ((2, 3, 4), (3, 4)), ((2, 3, 4), (1, 3, 1)), ((2, 3, 4), (2, 1, 4)),
    ((0, 5), (5,)), ((3, 0), (0,)), ((4,), ()), ((5, 1), (1,)),
])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_unbroadcast_matches_numpy(gshape, shape, dtype):
    rng = np.random.default_rng(5)
    g = rng.standard_normal(gshape).astype(dtype)
    nd = len(gshape) - len(shape)
    axes = tuple(range(nd)) + tuple(i + nd for i, s in enumerate(shape)
                                     if s == 1 and gshape[i + nd] != 1)
    expect = g.sum(axis=axes, keepdims=True).reshape(shape) if g.size else \
        np.zeros(shape, dtype)
    for arr in (g, np.asfortranarray(g)):
        got = ops.unbroadcast(arr, shape)
        assert got.shape == shape and got.dtype == dtype
        tol = 1e-2 if dtype == np.float16 else 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, expect, rtol=tol, atol=tol)
    with pytest.raises(RuntimeError, match="cannot be reduced"):
        ops.unbroadcast(g, (7,) + shape)


def test_leading_sums_and_means_match_numpy():
    rng = np.random.default_rng(6)
    for shape, axes in (((32, 16), (0,)), ((4, 8, 3), (0, 1)), ((64, 128), (0,)),
                        ((5, 6), (1,)), ((3, 4, 5), (0, 2))):
        a = rng.standard_normal(shape).astype(np.float32)
        for kd in (False, True):
            t = Tensor(a, requires_grad=True)
            np.testing.assert_allclose(t.sum(axes, keepdim=kd).data,
                                       a.sum(axis=axes, keepdims=kd), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(t.mean(axes, keepdim=kd).data,
                                       a.mean(axis=axes, keepdims=kd), rtol=1e-5, atol=1e-6)


@st.composite
def _leading_case(draw):
    """An array in some layout (C order, transposed, strided, broadcast, empty), the axes
    to sum (leading or not, a tuple or a list) and keepdims."""
    nd = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 3, 7, 40]), min_size=nd,
                                max_size=nd)))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.float16, np.int64]))
    a = np.random.default_rng(draw(st.integers(0, 9))).standard_normal(shape).astype(dtype)
    layout = draw(st.sampled_from(["C", "T", "strided", "broadcast"]))
    if layout == "T":
        a = a.T
    elif layout == "strided":
        a = np.repeat(a, 2, axis=-1)[..., ::2]
    elif layout == "broadcast" and nd > 1:
        a = np.broadcast_to(a[:1], a.shape)
    k = draw(st.integers(0, a.ndim))
    axes = draw(st.sampled_from([tuple(range(k)), tuple(range(a.ndim - k, a.ndim)),
                                 list(range(k))]))
    return a, axes, draw(st.booleans())


@settings(max_examples=300, deadline=None)
@given(_leading_case())
def test_leading_sum_is_numpys_sum_or_declines(case):
    """``_sum_leading`` either declines (None) or gives NumPy's sum, in the input's dtype and
    the result's shape, whatever the layout; a plan remembered for one dtype or layout is
    never used for another."""
    a, axes, keepdims = case
    wide = np.ascontiguousarray(a, np.float64)
    again = ops._sum_leading(wide, axes, keepdims)  # (first: its plan is remembered first)
    got = ops._sum_leading(a, axes, keepdims)
    for arr, out in ((a, got), (wide, again)):
        if out is None:
            continue
        expect = np.add.reduce(arr, tuple(axes), keepdims=keepdims)
        assert out.dtype == arr.dtype and out.shape == expect.shape
        # both sums within the rounding bound of n additions, n·ε·Σ|a| (Higham): a fixed
        # tolerance failed for 1600 float32 values of either sign summing to 1.4
        n = math.prod(arr.shape[i] for i in axes)
        bound = n * np.finfo(arr.dtype).eps * np.add.reduce(
            np.abs(arr.astype(np.float64)), tuple(axes), keepdims=keepdims)
        assert np.all(np.abs(out.astype(np.float64) - expect) <= bound), (out, expect)
    # what it takes: float32/float64, leading axes of a tuple, some but not all of them,
    # at most _ROWS_MAX elements and at least one
    takes = (a.dtype.char in "fd" and type(axes) is tuple and 0 < len(axes) < a.ndim
             and axes == tuple(range(len(axes))) and 0 < a.size <= ops._ROWS_MAX)
    assert (got is not None) == takes


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([np.float16, np.float32, np.float64]),
       st.sampled_from([(), (5,), (7, 3), (130, 130), (2, 90, 100)]),
       st.sampled_from(["C", "T"]), st.integers(0, 9))
def test_relu_mask_keeps_exactly_the_kept_values(dtype, shape, layout, seed):
    """``_kept`` (ReLU's gradient, by clearing bits on large arrays) is ``np.where(drop, +0,
    g)`` bit for bit, nan, infinities and -0 included, in any layout, and returns a new
    array the engine may own."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(shape).astype(dtype)
    if g.size:
        flat = g.reshape(-1)
        for v in (np.nan, np.inf, -np.inf, -0.0):
            flat[rng.integers(0, g.size, max(1, g.size // 10))] = v
    if layout == "T":
        g = g.T
    drop = rng.random(g.shape) < 0.5
    got = ops._kept(g, drop)
    expect = np.where(drop, np.zeros((), dtype), g)
    assert got.dtype == dtype and got.shape == g.shape
    assert got.base is None and got.flags.writeable
    bits = ops._UINTS[np.dtype(dtype).itemsize]  # compared bit for bit (nan, -0)
    np.testing.assert_array_equal(got.view(bits), expect.view(bits))


def test_linear_bias_gradient_matches_the_composed_one():
    rng = np.random.default_rng(7)
    x0, w0, b0 = rng.standard_normal((32, 16)), rng.standard_normal((8, 16)), \
        rng.standard_normal(8)
    g0 = rng.standard_normal((32, 8))
    for dtype in (np.float32, np.float64):
        x, w, b = (_t(a, dtype) for a in (x0, w0, b0))
        ops.Linear.apply(x, w, b).backward(g0.astype(dtype))
        x2, w2, b2 = (_t(a, dtype) for a in (x0, w0, b0))
        (x2 @ w2.T + b2).backward(g0.astype(dtype))
        tol = 1e-5 if dtype == np.float32 else 1e-12
        for u, v in ((x, x2), (w, w2), (b, b2)):
            assert u.grad.dtype == dtype
            np.testing.assert_allclose(u.grad, v.grad, rtol=tol, atol=tol)


# ------------------------------------------------------------------------- what is kept
def test_a_constant_divisor_keeps_no_output():
    x = _t(np.ones((3, 4)))
    y = x / 2.0
    assert y.grad_fn._out is None  # only d/db reads the output
    z = x / _t(np.full(4, 2.0))
    assert z.grad_fn._out is z.data
    p = x ** 2
    assert p.grad_fn._out is None  # a number exponent: d/da reads no output


def test_a_node_frees_what_it_kept():
    x, s = _t(np.ones((3, 4))), _t(np.full(4, 2.0))
    y = (x * s) / s
    node = y.grad_fn
    y.sum().backward()
    assert node._inputs is FREED and node._out is FREED and node._edge0 is FREED
    with pytest.raises(RuntimeError, match="freed"):
        node.inputs()


def test_every_kind_of_node_lets_go_of_its_edges_and_saved_values():
    x = _t(np.ones((3, 4)))
    w, b = _t(np.ones((2, 4))), _t(np.ones(2))
    lin = ops.Linear.apply(x, w, b)  # three inputs: the edges in _edges
    th = lin.tanh()  # one input, keeps its output
    pr = th * th  # two inputs, keeps both
    df = pr - x.sum()  # two inputs, keeps nothing
    tw = _GiveBackSaved.apply(df)  # a user Function: save_for_backward
    nodes = [t.grad_fn for t in (lin, th, pr, df, tw)]
    tw.sum().backward()
    for node in nodes:
        assert node._edge0 is FREED and node.parents is None
        assert node._edge1 is None and node._edges is None
    assert nodes[0]._inputs is FREED and nodes[2]._inputs is FREED
    assert nodes[1]._out is FREED
    assert nodes[3]._inputs == () and "_inputs" not in vars(nodes[3])  # (it kept nothing)
    with pytest.raises(RuntimeError, match="freed"):
        nodes[4].saved_tensors
    with pytest.raises(RuntimeError, match="second time"):
        tw.sum().backward()


def test_describe_still_reads_reductions_and_constants():
    x = _t(np.ones((2, 3)))
    assert x.sum(0).grad_fn.describe() == "axis=0"
    assert x.mean().grad_fn.describe() == "all axes"
    assert (x * 2).grad_fn.describe() == "× 2"
    assert (x / 2).grad_fn.describe() == "/ 2"
    assert (2 / x).grad_fn.describe() == "const / x"  # (a constant numerator is not kept)
    assert x.permute(1, 0).grad_fn.describe() == "perm=(1, 0)"


def test_composed_batch_norm_peak_memory():
    rng = np.random.default_rng(8)
    shape = (1024, 256)
    x = Tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)
    w = Tensor(np.ones(shape[1], np.float32), requires_grad=True)
    b = Tensor(np.zeros(shape[1], np.float32), requires_grad=True)
    dy = rng.standard_normal(shape).astype(np.float32)

    def step():
        x.grad = w.grad = b.grad = None
        tg.nn.functional.batch_norm(x, None, None, w, b, training=True).backward(dy)

    step()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 5 * x.data.nbytes, peak / x.data.nbytes


# --------------------------------------------------- passes others watch: nothing written
def _div_graph():
    rng = np.random.default_rng(9)
    x, s = _t(rng.uniform(1, 2, (4, 5))), _t(rng.uniform(1, 2, (1, 5)))
    b = (x * 5.0) / s
    y = (b * 3.0).sum()
    return x, s, b, y


def test_viz_gradients_see_what_each_node_received(reuse_everywhere):
    from tinygrad_bn import viz
    from tinygrad_bn.viz import annotate

    x, s, b, y = _div_graph()
    graph = viz.Graph(y)
    grads, _ = annotate.gradients(graph, annotate.seeds(graph, None))
    np.testing.assert_array_equal(grads[b.grad_fn], np.full((4, 5), 3.0))
    np.testing.assert_allclose(grads[x], np.broadcast_to(15.0 / s.data, (4, 5)))
    grads2, _ = annotate.gradients(graph, annotate.seeds(graph, None))  # the graph is kept
    np.testing.assert_array_equal(grads2[b.grad_fn], grads[b.grad_fn])
    assert x.grad is None and s.grad is None


def test_grad_paths_reuse_nothing_between_passes(reuse_everywhere):
    x, s, b, y = _div_graph()
    parts = tg.grad_paths(y, x, [b])
    total = sum(parts.values())
    np.testing.assert_allclose(total, np.broadcast_to(15.0 / s.data, (4, 5)))
    y.backward()
    np.testing.assert_allclose(x.grad, total)


def test_the_stepper_sees_the_incoming_gradients(reuse_everywhere):
    from tinygrad_bn.viz import stepper

    x, s, b, y = _div_graph()
    data = stepper.trace_backward(y, keep_arrays=True)
    exact = data["exact"]["grads"]
    assert any(np.array_equal(v, np.full((4, 5), 3.0)) for v in exact.values())
    assert x.grad is None


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=0, max_size=4), st.data())
def test_broadcast_view_is_numpys_broadcast_to(shape, data):
    """``_broadcast_view`` (a large reduction's gradient spread back) gives the values,
    shape and read-only flag of ``np.broadcast_to``, for kept and dropped leading axes,
    and shares the memory of what it spreads."""
    shape = tuple(shape)
    # a source: some axes of ``shape`` set to 1, some leading ones dropped
    ones = [data.draw(st.booleans()) for _ in shape]
    src_shape = tuple(1 if o else n for o, n in zip(ones, shape))
    src_shape = src_shape[data.draw(st.integers(0, len(src_shape))):]
    a = (np.arange(math.prod(src_shape), dtype=np.float32) + 1).reshape(src_shape)
    got = ops._broadcast_view(a, shape)
    want = np.broadcast_to(a, shape)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    assert not got.flags.writeable and np.shares_memory(got, a)
    bits = ops._broadcast_view(np.asfortranarray(np.ones((2, 1, 3))), (2, 4, 3))
    np.testing.assert_array_equal(bits, np.ones((2, 4, 3)))  # (not C-contiguous: NumPy's)


@pytest.mark.parametrize("shape", [(32, 1), (7,), (5, 6, 7), (300, 200), (1, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_a_full_sum_takes_numpys_bits(shape, dtype, layout):
    a = np.random.default_rng(3).standard_normal(shape).astype(dtype)
    if layout == "F":
        a = np.asfortranarray(a)
    elif layout == "strided":
        a = a[::2] if a.shape[0] > 1 else a[:, ::-1]
    axes = tuple(range(a.ndim))
    want = np.add.reduce(a, axes)
    got = ops._sum(a, axes)
    assert np.asarray(got).tobytes() == np.asarray(want).tobytes()
    kept = ops._sum(a, axes, True)
    assert kept.shape == (1,) * a.ndim and kept.tobytes() == np.asarray(want).tobytes()
