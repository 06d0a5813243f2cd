"""``grad_paths``: the gradient split by the first via intermediate each path reaches.

For the composed BatchNorm (statistics over the m = N rows of an (N, C) input), with
x̂ = (x - μ)/σ, σ = √(σ² + ε), dx̂ = G·γ and Σ over the batch::

    part["x̂"] = dx̂ / σ
    part["σ²"] = dσ² · 2(x - μ)/m,   dσ² = Σ dx̂·(x - μ)·(-½)(σ² + ε)^(-3/2)
    part["μ"]  = dμ / m,             dμ  = Σ(-dx̂/σ) + dσ²·Σ(-2(x - μ))/m

and the three add up to the full gradient (nothing is left under "other").
"""
import numpy as np
import pytest

import tinygrad_bn as tb
from tinygrad_bn import Tensor
from tinygrad_bn.nn import functional as F

EPS = 1e-5


def _bn(seed=0, n=7, c=3):
    rng = np.random.default_rng(seed)
    xd = rng.standard_normal((n, c)) * 2 + 0.5
    gd = rng.standard_normal(c) + 1.5
    bd = rng.standard_normal(c)
    G = rng.standard_normal((n, c))
    x = Tensor(xd, requires_grad=True)
    g = Tensor(gd, requires_grad=True)
    b = Tensor(bd, requires_grad=True)
    y = F.batch_norm(x, None, None, weight=g, bias=b, training=True, eps=EPS)
    return x, g, b, y, G


def _derivation(xd, gd, G, eps=EPS):
    m = xd.shape[0]
    mu = xd.mean(0)
    d = xd - mu
    var = (d ** 2).mean(0)
    sigma = np.sqrt(var + eps)
    dxhat = G * gd
    dvar = np.sum(dxhat * d * -0.5 * (var + eps) ** -1.5, axis=0)
    dmu = np.sum(-dxhat / sigma, axis=0) + dvar * np.sum(-2 * d, axis=0) / m
    return {
        "x̂": dxhat / sigma,
        "σ²": dvar * 2 * d / m,
        "μ": np.broadcast_to(dmu / m, xd.shape),
    }


def test_batch_norm_parts_are_the_derivation_terms(torch):
    x, g, b, y, G = _bn()
    parts = tb.grad_paths(y, x, ("μ", "σ²", "x̂"), grad_output=G)
    assert list(parts) == ["μ", "σ²", "x̂", "other"]
    for v in parts.values():
        assert v.shape == x.shape and v.dtype == np.float64
    want = _derivation(x.data, g.data, G)
    for k in ("μ", "σ²", "x̂"):
        np.testing.assert_allclose(parts[k], want[k], rtol=1e-10, atol=1e-10, err_msg=k)
    assert not parts["other"].any()
    # the μ part is not zero (Σ dx̂ ≠ 0); only its σ² term vanishes
    assert np.abs(parts["μ"]).max() > 1e-3

    total = sum(parts.values())
    (full,) = tb.grad(y, x, G, retain_graph=True)
    np.testing.assert_allclose(total, full.data, rtol=0, atol=1e-12)

    xt = torch.tensor(x.data, requires_grad=True)
    yt = torch.nn.functional.batch_norm(xt, None, None, torch.tensor(g.data),
                                        torch.tensor(b.data), training=True, eps=EPS)
    (gt,) = torch.autograd.grad(yt, xt, torch.tensor(G))
    np.testing.assert_allclose(total, gt.numpy(), rtol=1e-10, atol=1e-12)


def test_batch_norm_three_dimensional_and_other_splits():
    # (N, C, L): statistics over N·L values; σ and "x - μ" as via give other splits that
    # still add up to the full gradient
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((4, 2, 5)), requires_grad=True)
    y = F.batch_norm(x, None, None, training=True)
    G = rng.standard_normal(y.shape)
    (full,) = tb.grad(y, x, G, retain_graph=True)
    for via in [("μ", "σ²", "x̂"), ("x̂",), ("σ",), ("x - μ",), ("σ²", "μ"), ()]:
        parts = tb.grad_paths(y, x, via, G)
        assert list(parts) == list(via) + ["other"]
        np.testing.assert_allclose(sum(parts.values()), full.data, rtol=0, atol=1e-12,
                                   err_msg=str(via))
    # every path starts x → (x - μ) or x → μ: these two take everything
    parts = tb.grad_paths(y, x, ("x - μ", "μ"), G)
    assert not parts["other"].any()
    # with x̂ alone, "other" is what does not pass x̂: nothing (y depends on x only via x̂)
    parts = tb.grad_paths(y, x, "x̂", G)
    assert not parts["other"].any()
    np.testing.assert_allclose(parts["x̂"], full.data, rtol=0, atol=1e-12)


def test_via_given_as_tensors():
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((5, 2)), requires_grad=True)
    mu = x.mean(axis=0, keepdims=True)
    d = x - mu
    var = (d ** 2).mean(axis=0, keepdims=True)
    var.name = "var"
    xhat = d / (var + EPS).sqrt()
    G = rng.standard_normal(x.shape)
    by_tensor = tb.grad_paths(xhat, x, [mu, var, xhat], G)
    assert list(by_tensor) == ["via0", "var", "via2", "other"]
    # the same intermediates by name give the same parts
    mu.name, xhat.name = "μ", "x̂"
    by_name = tb.grad_paths(xhat, x, ["μ", "var", "x̂"], G)
    for a, b in zip(by_tensor.values(), by_name.values()):
        np.testing.assert_array_equal(a, b)
    want = _derivation(x.data, np.ones(2), G)
    np.testing.assert_allclose(by_tensor["via0"], want["μ"], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(by_tensor["var"], want["σ²"], rtol=1e-10, atol=1e-10)
    # the output itself as a via: every path ends there, so nothing is "other"
    assert not by_tensor["other"].any()


def test_tiny_hand_example():
    # b = a², y = a·b + a: dy/da = b + a·2a + 1 = 3a² + 1; through b: a·2a; other: b + 1
    a = Tensor(np.array([0.5, -2.0, 3.0]), requires_grad=True)
    b = (a * a).named("b")
    y = a * b + a
    G = np.array([1.0, 2.0, -1.0])
    parts = tb.grad_paths(y, a, ["b"], G)
    av = a.data
    np.testing.assert_allclose(parts["b"], G * 2 * av ** 2, rtol=0, atol=1e-15)
    np.testing.assert_allclose(parts["other"], G * (av ** 2 + 1), rtol=0, atol=1e-15)

    # a scalar output takes ones as its upstream gradient
    s = y.sum()
    parts = tb.grad_paths(s, a, b)
    np.testing.assert_allclose(parts["b"], 2 * av ** 2, rtol=0, atol=1e-15)
    np.testing.assert_allclose(parts["other"], av ** 2 + 1, rtol=0, atol=1e-15)

    # a leaf that is not the input lies on no path from it: its part is zero
    c = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    z = a * c
    parts = tb.grad_paths(z.sum(), a, [c])
    assert not parts["via0"].any()
    np.testing.assert_array_equal(parts["other"], c.data)

    # the input itself as a via: it is the first one met on every path
    parts = tb.grad_paths(y, a, [b, a], G)
    assert not parts["b"].any() and not parts["other"].any()
    np.testing.assert_allclose(parts["via1"], G * (3 * av ** 2 + 1), rtol=0, atol=1e-15)


def test_first_via_wins_and_names_stand_for_every_node():
    # x → u → v → y and x → v → y and x → y: with via (u, v) the path through u then v
    # belongs to u (met first)
    x = Tensor(np.array([1.5, -0.5]), requires_grad=True)
    u = (x * 3.0).named("u")
    v = (u * x).named("v")  # v = 3x², dv/du = x, dv/dx (direct) = u
    y = v * 2.0 + x
    parts = tb.grad_paths(y.sum(), x, ["u", "v"])
    xv = x.data
    np.testing.assert_allclose(parts["u"], 2 * xv * 3, rtol=0, atol=1e-14)
    np.testing.assert_allclose(parts["v"], 2 * 3 * xv, rtol=0, atol=1e-14)
    np.testing.assert_allclose(parts["other"], np.ones(2), rtol=0, atol=1e-14)
    # two nodes of one name: one part for both, and the nested one does not count twice
    w = (x * 2.0).named("h")
    h2 = (w * w).named("h")  # x → h → h: every path meets the first h first
    parts = tb.grad_paths(h2.sum(), x, "h")
    np.testing.assert_allclose(parts["h"], 8 * xv, rtol=0, atol=1e-14)
    assert not parts["other"].any()


def test_errors():
    x, g, b, y, G = _bn()
    with pytest.raises(ValueError, match="no intermediate named 'mu'") as e:
        tb.grad_paths(y, x, ["mu"], G)
    for name in ("'μ'", "'σ²'", "'x̂'", "'σ'"):
        assert name in str(e.value)
    other = Tensor(np.ones((7, 3)), requires_grad=True)
    with pytest.raises(ValueError, match="input .* is not in the graph"):
        tb.grad_paths(y, other, ["μ"], G)
    with pytest.raises(ValueError, match="does not require grad"):
        tb.grad_paths(y, Tensor(np.ones((7, 3))), ["μ"], G)
    with pytest.raises(ValueError, match="not in the graph"):
        tb.grad_paths(y, x, [other * 2], G)
    with pytest.raises(RuntimeError, match="implicitly created only for outputs with one"):
        tb.grad_paths(y, x, ["μ"])
    with pytest.raises(RuntimeError, match="mismatch in shape"):
        tb.grad_paths(y, x, ["μ"], np.ones(3))
    with pytest.raises(ValueError, match="two parts would be called 'μ'"):
        tb.grad_paths(y, x, ["μ", "μ"], G)
    with pytest.raises(ValueError, match="same intermediate"):
        tb.grad_paths(y, x, ["x̂", _named(y, "x̂")], G)
    with pytest.raises(TypeError):
        tb.grad_paths(y, x, [3], G)
    with pytest.raises(RuntimeError, match="does not require grad"):
        tb.grad_paths(Tensor(np.ones(2)), x, [])


def _named(y, name):
    """The Tensor of the node called ``name`` (a fresh wrapper around that node)."""
    stack, seen = [y._ctx], set()
    while stack:
        n = stack.pop()
        if n.out_name == name:
            return Tensor._wrap(np.empty(n.shape), n)
        for p in n.parents:
            if p is not None and not isinstance(p, Tensor) and p not in seen:
                seen.add(p)
                stack.append(p)
    raise LookupError(name)


def test_graph_stays_usable_and_grad_untouched():
    x, g, b, y, G = _bn(seed=2)
    xhat = _named(y, "x̂")
    hits = []
    x.register_hook(lambda gr: hits.append(gr))
    tb.grad_paths(y, x, ("μ", "σ²", "x̂"), G)
    tb.grad_paths(y, x, [xhat], G)
    assert x.grad is None and g.grad is None and b.grad is None
    assert hits == []  # partial gradients run no hooks
    # the graph was retained: backward still runs, and gives what a fresh graph gives
    y.backward(Tensor(G))
    x2, g2, b2, y2, _ = _bn(seed=2)
    y2.backward(Tensor(G))
    np.testing.assert_array_equal(x.grad, x2.grad)
    np.testing.assert_array_equal(g.grad, g2.grad)
    np.testing.assert_array_equal(b.grad, b2.grad)
    assert len(hits) == 1
    # after a backward that freed the graph, grad_paths says so
    with pytest.raises(RuntimeError, match="freed"):
        tb.grad_paths(y, x, ["μ"], G)


def test_retain_grad_untouched():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    u = (x * 3.0).named("u")
    u.retain_grad()
    y = (u * u).sum()
    tb.grad_paths(y, x, ["u"])
    assert u.grad is None
