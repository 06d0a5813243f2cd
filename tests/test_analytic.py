"""The fused norms of ``tinygrad_bn.analytic``: one node, the hand-derived backward, second
derivatives through it (create_graph=True) against the composed graph and PyTorch, what it
saves, and the tutorial's boxed formula failing the checks."""
import numpy as np
import pytest

from tinygrad_bn import Tensor, analytic, gradcheck, grad, no_grad
from tinygrad_bn.analytic import backward_formula
from tinygrad_bn.nn import functional as F
from tinygrad_bn.norms import fused

TOL = dict(rtol=1e-10, atol=1e-10)

# name -> (ours(module, x, w, b), torch's(torch, x, w, b), input shape, parameter shape)
CASES = {
    "batch_norm-2d": (
        lambda m, x, w, b: m.batch_norm(x, None, None, w, b, training=True),
        lambda t, x, w, b: t.nn.functional.batch_norm(x, None, None, w, b, training=True),
        (6, 3), (3,)),
    "batch_norm-4d": (
        lambda m, x, w, b: m.batch_norm(x, None, None, w, b, training=True),
        lambda t, x, w, b: t.nn.functional.batch_norm(x, None, None, w, b, training=True),
        (2, 3, 2, 2), (3,)),
    "batch_norm-eval": (
        lambda m, x, w, b: m.batch_norm(x, Tensor(RM), Tensor(RV), w, b),
        lambda t, x, w, b: t.nn.functional.batch_norm(x, t.tensor(RM), t.tensor(RV), w, b),
        (4, 3, 2), (3,)),
    "layer_norm": (
        lambda m, x, w, b: m.layer_norm(x, (2, 3), w, b),
        lambda t, x, w, b: t.nn.functional.layer_norm(x, (2, 3), w, b),
        (4, 2, 3), (2, 3)),
    "group_norm": (
        lambda m, x, w, b: m.group_norm(x, 2, w, b),
        lambda t, x, w, b: t.nn.functional.group_norm(x, 2, w, b),
        (3, 4, 3), (4,)),
    "instance_norm": (
        lambda m, x, w, b: m.instance_norm(x, None, None, w, b),
        lambda t, x, w, b: t.nn.functional.instance_norm(x, None, None, w, b),
        (2, 3, 4), (3,)),
    "instance_norm-eval": (
        lambda m, x, w, b: m.instance_norm(x, Tensor(RM), Tensor(RV), w, b,
                                           use_input_stats=False),
        lambda t, x, w, b: t.nn.functional.instance_norm(x, t.tensor(RM), t.tensor(RV), w, b,
                                                         use_input_stats=False),
        (2, 3, 4), (3,)),
    "rms_norm": (
        lambda m, x, w, b: m.rms_norm(x, 3, w, eps=1e-5),
        lambda t, x, w, b: t.nn.functional.rms_norm(x, (3,), w, eps=1e-5),
        (4, 3), (3,)),
}
RM, RV = np.linspace(-1, 1, 3), np.linspace(0.5, 2, 3)  # running statistics for eval cases


def _inputs(case, seed=0):
    _, _, shape, pshape = CASES[case]
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(shape) * 1.5 + 0.3, rng.uniform(0.5, 1.5, pshape),
              rng.standard_normal(pshape)]
    if case == "rms_norm":
        arrays[2] = None
    return arrays, rng


def _loss(y, u, v):
    """A loss with curvature of its own: Σ u·y + Σ v·y²."""
    return (y * u).sum() + (y * y * v).sum()


def _hvp_ours(module, case, arrays, u, v, dirs):
    ours = CASES[case][0]
    leaves = [None if a is None else Tensor(a, requires_grad=True) for a in arrays]
    live = [t for t in leaves if t is not None]
    y = ours(module, *leaves)
    gs = grad(_loss(y, u, v), live, create_graph=True)
    s = sum((g * d).sum() for g, d in zip(gs, dirs))
    hv = grad(s, live, allow_unused=True)
    return ([g.data for g in gs],
            [np.zeros_like(t.data) if h is None else h.data for t, h in zip(live, hv)])


def _hvp_torch(torch, case, arrays, u, v, dirs):
    theirs = CASES[case][1]
    leaves = [None if a is None else torch.tensor(a, requires_grad=True) for a in arrays]
    live = [t for t in leaves if t is not None]
    y = theirs(torch, *leaves)
    loss = (y * torch.tensor(u)).sum() + (y * y * torch.tensor(v)).sum()
    gs = torch.autograd.grad(loss, live, create_graph=True)
    s = sum((g * torch.tensor(d)).sum() for g, d in zip(gs, dirs))
    hv = torch.autograd.grad(s, live, allow_unused=True)
    return ([g.detach().numpy() for g in gs],
            [np.zeros(t.shape) if h is None else h.numpy() for t, h in zip(live, hv)])


@pytest.mark.parametrize("case", list(CASES))
def test_second_derivatives_match_composed_and_torch(torch, case):
    arrays, rng = _inputs(case)
    shape = arrays[0].shape
    u, v = rng.standard_normal(shape), rng.standard_normal(shape)
    dirs = [rng.standard_normal(a.shape) for a in arrays if a is not None]
    g_a, h_a = _hvp_ours(analytic, case, arrays, u, v, dirs)
    g_c, h_c = _hvp_ours(F, case, arrays, u, v, dirs)
    g_t, h_t = _hvp_torch(torch, case, arrays, u, v, dirs)
    for a, c, t in zip(g_a + h_a, g_c + h_c, g_t + h_t):
        np.testing.assert_allclose(a, t, **TOL)
        np.testing.assert_allclose(c, t, **TOL)


@pytest.mark.parametrize("case", list(CASES))
def test_analytic_passes_gradcheck(case):
    arrays, _ = _inputs(case, seed=1)
    ours = CASES[case][0]
    leaves = [None if a is None else Tensor(a, requires_grad=True) for a in arrays]
    live = [i for i, t in enumerate(leaves) if t is not None]

    def f(*ts):
        full = list(leaves)
        for i, t in zip(live, ts):
            full[i] = t
        return ours(analytic, *full)

    assert gradcheck(f, [leaves[i] for i in live], atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("case", list(CASES))
def test_fused_backward_equals_the_plain_formula(case):
    """The fused NumPy backward and ``backward_formula`` (run on ndarrays) agree."""
    arrays, rng = _inputs(case, seed=2)
    leaves = [None if a is None else Tensor(a, requires_grad=True) for a in arrays]
    y = CASES[case][0](analytic, *leaves)
    node = y.grad_fn
    g = rng.standard_normal(y.shape)
    fused = node.backward(node, g)
    plain = backward_formula(arrays[0], arrays[1], g, node.plan, node.stats,
                             node.needs_input_grad)
    for a, b in zip(fused, plain):
        if a is None:
            assert b is None
        else:
            np.testing.assert_allclose(a, b, **TOL)


@pytest.mark.parametrize("need", [(True, False, False), (False, True, False),
                                  (False, False, True), (True, True, False)])
@pytest.mark.parametrize("case", ["batch_norm-2d", "group_norm", "instance_norm"])
def test_only_the_needed_gradients(case, need):
    arrays, rng = _inputs(case, seed=3)
    leaves = [Tensor(a, requires_grad=r) for a, r in zip(arrays, need)]
    y = CASES[case][0](analytic, *leaves)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    ref = [Tensor(a, requires_grad=True) for a in arrays]
    CASES[case][0](F, *ref).backward(g)
    for t, r, n in zip(leaves, ref, need):
        if n:
            np.testing.assert_allclose(t.grad, r.grad, **TOL)
        else:
            assert t.grad is None


def test_node_saves_xhat_and_rstd_and_frees_them(monkeypatch):
    """On the NumPy path (the compiled kernels keep μ and rstd instead: test_fused_kernels)."""
    monkeypatch.setattr(fused, "_USE_KERNELS", False)
    rng = np.random.default_rng(4)
    x = Tensor(rng.standard_normal((5, 3)), requires_grad=True)
    w = Tensor(np.ones(3), requires_grad=True)
    y = analytic.batch_norm(x, None, None, w, None, training=True)
    node = y.grad_fn
    xh, rstd = node.saved_tensors
    assert xh.shape == (5, 3) and rstd.size == 3  # one per channel
    np.testing.assert_allclose(xh, (x.data - x.data.mean(0)) / np.sqrt(x.data.var(0) + 1e-5),
                               **TOL)
    y.backward(np.ones((5, 3)), retain_graph=True)
    first = x.grad.copy()
    y.backward(np.ones((5, 3)))  # accumulates
    np.testing.assert_allclose(x.grad, 2 * first, **TOL)
    with pytest.raises(RuntimeError, match="second time"):
        y.backward(np.ones((5, 3)))
    with pytest.raises(RuntimeError, match="freed"):  # x̂ was let go of, not kept for later
        node.saved_tensors


def test_no_affine_output_and_no_grad_mode():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 2))
    rm, rv = Tensor(np.zeros(3)), Tensor(np.ones(3))
    with no_grad():
        y = analytic.batch_norm(Tensor(x, requires_grad=True), rm, rv, training=True)
    assert y.grad_fn is None and not y.requires_grad
    ref = F.batch_norm(Tensor(x), Tensor(np.zeros(3)), Tensor(np.ones(3)), training=True)
    np.testing.assert_allclose(y.data, ref.data, **TOL)
    assert not np.all(rm.data == 0)  # running statistics are updated under no_grad too


def test_non_contiguous_input():
    rng = np.random.default_rng(6)
    base = Tensor(rng.standard_normal((3, 5)), requires_grad=True)
    xs = [base.T, base.T]  # (5, 3), not contiguous
    outs = [m.batch_norm(x, None, None, training=True) for m, x in zip((analytic, F), xs)]
    np.testing.assert_allclose(outs[0].data, outs[1].data, **TOL)
    g = rng.standard_normal((5, 3))
    (ga,) = grad(outs[0], base, g)
    (gc,) = grad(outs[1], base, g)
    np.testing.assert_allclose(ga.data, gc.data, **TOL)


def test_float32_agrees_with_float64():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((64, 16))
    g = rng.standard_normal((64, 16))
    out = {}
    for dt in (np.float32, np.float64):
        t = Tensor(x.astype(dt), requires_grad=True)
        w = Tensor(np.full(16, 1.5, dt), requires_grad=True)
        y = analytic.batch_norm(t, None, None, w, None, training=True)
        y.backward(g.astype(dt))
        out[dt] = (y.data, t.grad, w.grad)
        assert y.dtype == dt and t.grad.dtype == dt and w.grad.dtype == dt
    for a, b in zip(out[np.float32], out[np.float64]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- the tutorial's formula
def test_tutorial_boxed_formula_is_wrong_and_caught():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((16, 3))
    w = rng.uniform(1, 2, 3)
    g = rng.standard_normal((16, 3))
    grads = {}
    for name, fn in [("right", analytic.batch_norm),
                     ("boxed", analytic.tutorial_boxed_batch_norm)]:
        xt, wt = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
        y = fn(xt, None, None, wt, None, training=True)
        y.backward(g)
        grads[name] = (y.data, xt.grad, wt.grad)
    np.testing.assert_allclose(grads["right"][0], grads["boxed"][0], rtol=1e-12,
                               atol=1e-12)  # the forward is right
    np.testing.assert_allclose(grads["right"][2], grads["boxed"][2], **TOL)  # and dγ
    right, boxed = grads["right"][1], grads["boxed"][1]
    # a correct BatchNorm gradient sums to zero over the batch; the boxed one does not
    np.testing.assert_allclose(right.sum(axis=0), 0, atol=1e-12)
    assert np.all(np.abs(boxed.sum(axis=0)) > 1e-3)
    assert np.linalg.norm(boxed - right) / np.linalg.norm(right) > 0.5
    # with m in place of √m it would be right: boxed − right = −γ·rstd·(√m − 1)/m·(Σg + x̂Σgx̂)
    m = 16
    xh = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
    corr = -(w / np.sqrt(x.var(0) + 1e-5)) * (np.sqrt(m) - 1) / m * (
        g.sum(0) + xh * (g * xh).sum(0))
    np.testing.assert_allclose(boxed - right, corr, **TOL)
    xt = Tensor(x[:6], requires_grad=True)
    assert not gradcheck(lambda t: analytic.tutorial_boxed_batch_norm(t, None, None,
                                                                       training=True),
                         [xt], raise_exception=False)


def test_docstrings_carry_the_formulas():
    doc = analytic.__doc__
    assert "biased" in doc and "unbiased" in doc
    assert "γ·rstd/m · (m·dy − Σdy − x̂·Σ(dy·x̂))" in analytic.batch_norm.__doc__
    for fn in (analytic.layer_norm, analytic.group_norm, analytic.instance_norm,
               analytic.rms_norm):
        assert "dx = " in fn.__doc__
    assert "WRONG ON PURPOSE" in analytic.tutorial_boxed_batch_norm.__doc__


@pytest.mark.parametrize("module,limit", [(analytic, 4.0), (F, 6.0)], ids=["analytic", "composed"])
def test_peak_memory_of_forward_and_backward(module, limit):
    """Issue #3's budget, in units of the input's size: ≤ 4x fused, ≤ 6x composed (the small
    per-channel arrays add a fraction of a percent)."""
    import gc
    import tracemalloc

    rng = np.random.default_rng(9)
    x = Tensor(rng.standard_normal((1024, 256)).astype(np.float32), requires_grad=True)
    w = Tensor(np.ones(256, np.float32), requires_grad=True)
    b = Tensor(np.zeros(256, np.float32), requires_grad=True)
    g = rng.standard_normal((1024, 256)).astype(np.float32)
    # once untraced first: compiled loops are loaded (or compiled) on their first call, and
    # what numba allocates then is not the norm's memory
    module.batch_norm(x, None, None, w, b, training=True).backward(g)
    x.grad = w.grad = b.grad = None
    gc.collect()
    tracemalloc.start()
    try:
        y = module.batch_norm(x, None, None, w, b, training=True)
        y.backward(g)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= limit * 1.01 * x.data.nbytes, peak / x.data.nbytes
