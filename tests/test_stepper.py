"""Tests of ``tinygrad_bn.stepper``: the backward-pass stepper page (``viz.render_backward``).

The page's data is checked against the engine: one step per processed node, a valid reverse
topological order, contributions that sum to what autograd gives, final leaf gradients equal
to ``tinygrad_bn.grad``, and no ``.grad`` touched. The page itself is checked for being
self-contained. (Its script is not run in a browser here.)
"""
import json
import re
import time

import numpy as np
import pytest

import tinygrad_bn
from tinygrad_bn import Tensor, viz
from tinygrad_bn.viz import stepper
from tinygrad_bn.cli import main as cli_main
from tinygrad_bn.nn import functional as F

_DATA = re.compile(r'<script type="application/json" id="backward-steps">(.*?)</script>', re.S)


def _page_data(text: str) -> dict:
    m = _DATA.search(text)
    assert m, "no JSON data tag"
    return json.loads(m[1])


def _bn(rng, shape=(5, 3)):  # x: 15 values, shown one by one
    x = Tensor(rng.standard_normal(shape), requires_grad=True, name="x")
    w = Tensor(rng.standard_normal(shape[1]), requires_grad=True)
    b = Tensor(rng.standard_normal(shape[1]), requires_grad=True)
    y = F.batch_norm(x, None, None, w, b, training=True)
    loss = (y ** 3).sum()  # a loss whose gradient in x is not ~0 (sum(y) would be)
    return loss, {"x": x, "w": w, "b": b}


def _self_contained(text: str) -> None:
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"<script[^>]*\ssrc=", text)
    assert not re.search(r"<link\b", text)
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!#)""", text)
    assert "<svg" in text and "</svg>" in text


def _check_order(data: dict) -> None:
    """Each node comes after every node that consumes it (its consumers send it gradients)."""
    pos = {s["node"]: i for i, s in enumerate(data["steps"])}
    assert len(pos) == len(data["steps"])  # each node once
    for i, s in enumerate(data["steps"]):
        for o in s["out"]:
            if o["to"] in pos:  # a node, not a leaf
                assert pos[o["to"]] > i, (s, o)


# ------------------------------------------------------------------------------ the page
def test_page_is_self_contained_and_holds_the_steps(rng, tmp_path, dot_binary):
    loss, params = _bn(rng)
    out = viz.render_backward(loss, tmp_path / "bn.html", params=params)
    assert out == tmp_path / "bn.html" and out.exists()
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    _self_contained(text)
    data = _page_data(text)
    for k in ("steps", "nodes", "leaves", "meta"):
        assert k in data
    # controls: buttons, a range slider, keyboard handling, inline script and style
    for needle in ('id="prev"', 'id="next"', 'id="play"', 'type="range"', "ArrowLeft",
                   "ArrowRight", '" "', "<style>", "keydown"):
        assert needle in text, needle
    # every node's first SVG element (its op or box, or the leaf) is in the picture
    titles = set(re.findall(r"<title>([^<]*)</title>", text))
    for nid, n in data["nodes"].items():
        assert n["svg"][0] in titles, (nid, n)
    # the number of steps is the number of nodes the engine processes: every node
    _, leaves = viz.Graph(loss).order, viz.Graph(loss).leaves
    n_nodes = data["meta"]["nodes"]
    assert len(data["steps"]) == n_nodes == sum(1 for k in data["nodes"] if k.startswith("n"))
    assert len(data["leaves"]) == len(leaves) == 3
    _check_order(data)
    assert data["steps"][0]["node"] == data["meta"]["root"]
    # the page names the leaves from params
    labels = {data["nodes"][l["id"]]["label"] for l in data["leaves"]}
    assert labels == {"x", "w", "b"}


def test_observed_order_is_the_engines(rng):
    """The steps are in the order the engine really processes nodes."""
    from tinygrad_bn.core.autograd import _run

    loss, params = _bn(rng)
    seen = []
    _run([loss._ctx], [np.ones(())], retain_graph=True, graph_mode=False,
         inputs=list(params.values()), stop=(),
         observe=lambda n, g, r: seen.append(n) if r is not None else None)
    data = stepper.trace_backward(loss, params)
    order, _ = viz.Graph(loss).order, viz.Graph(loss).leaves
    ids = {f"n{i}": node for i, node in enumerate(order)}
    assert [ids[s["node"]] for s in data["steps"]] == seen
    assert len(seen) == len(order)


def test_user_graph_and_grads_untouched(rng, tmp_path, dot_binary):
    loss, params = _bn(rng)
    x = params["x"]
    mid = (x * 2.0)
    mid.retain_grad()
    loss = loss + (mid ** 2).sum()
    viz.render_backward(loss, tmp_path / "a.html", params=params)
    assert all(t.grad is None for t in params.values())
    assert mid.grad is None
    # the graph is still there: a real backward works afterwards and agrees with grad()
    (gx,) = tinygrad_bn.grad(loss, [x], retain_graph=True)
    loss.backward()
    np.testing.assert_allclose(x.grad, gx.data, rtol=0, atol=1e-12)


def test_contributions_sum_to_autograd(rng, tmp_path, dot_binary):
    """Where several paths meet, the contributions sent along the edges sum to the gradient.

    In the composed BatchNorm x feeds two ops (mean for μ, and x − μ; σ² is computed from
    x − μ, so its path reaches x through that node): two contributions arrive at x, and two
    at x − μ (from x̂ directly and through σ²). The three paths of the derivation all meet.
    """
    loss, params = _bn(rng)
    x = params["x"]
    (gx,) = tinygrad_bn.grad(loss, [x], retain_graph=True)
    data = stepper.trace_backward(loss, params, keep_arrays=True)
    xid = next(l["id"] for l in data["leaves"] if data["nodes"][l["id"]]["label"] == "x")
    parts = data["exact"]["contribs"][xid]
    assert len(parts) >= 2
    np.testing.assert_allclose(sum(parts), gx.data, rtol=0, atol=1e-10)
    # at least one node is reached by several paths too, and shows its sum
    met = [s for s in data["steps"] if "contribs" in s]
    assert met
    for s in met:
        exact = data["exact"]["contribs"][s["node"]]
        np.testing.assert_allclose(sum(exact), data["exact"]["grads"][s["node"]],
                                   rtol=0, atol=1e-12)
        assert s["sum"] == s["in"] and len(s["contribs"]) == len(exact) >= 2

    # the page carries the same, rounded to 6 significant digits
    text = viz.render_backward(loss, tmp_path / "bn.html", params=params).read_text()
    page = _page_data(text)
    leaf = next(l for l in page["leaves"] if l["id"] == xid)
    assert len(leaf["contribs"]) == len(parts)
    total = sum(np.array(c["grad"]["values"])
                .reshape(c["grad"]["shape"]) for c in leaf["contribs"])
    np.testing.assert_allclose(total, gx.data, rtol=1e-4, atol=1e-5)
    steps_by_id = {s["node"]: i for i, s in enumerate(page["steps"])}
    for c in leaf["contribs"]:  # each contribution names the step that sent it
        assert page["steps"][c["step"]]["node"] == c["from"]
        assert steps_by_id[c["from"]] == c["step"]


def test_the_derivations_three_terms_are_contributions(rng):
    """The three terms of dx (through μ, through σ², direct) are what the engine sums: the
    contribution mean sends to x, and the two that meet at x − μ (from the square, on σ²'s
    path, and from the division into x̂). They equal grad_paths' split and sum to x.grad."""
    loss, params = _bn(rng)
    x = params["x"]
    paths = tinygrad_bn.grad_paths(loss, x, via=("μ", "σ²", "x̂"))
    data = stepper.trace_backward(loss, params, keep_arrays=True)
    nodes, exact = data["nodes"], data["exact"]["contribs"]
    xid = next(k for k, n in nodes.items() if n["label"] == "x")
    did = next(k for k, n in nodes.items() if n["label"] == "x - μ")
    by_op = {}
    for s in data["steps"]:
        for o in s["out"]:
            if o["to"] in (xid, did):
                by_op[(o["to"], nodes[s["node"]]["op"])] = s["node"]
    order_x = [c["from"] for l in data["leaves"] if l["id"] == xid for c in l["contribs"]]
    order_d = [c["from"] for s in data["steps"] if s["node"] == did for c in s["contribs"]]
    via_mu = exact[xid][order_x.index(by_op[(xid, "mean")])]
    via_var = exact[did][order_d.index(by_op[(did, "pow")])]
    direct = exact[did][order_d.index(by_op[(did, "div")])]
    np.testing.assert_allclose(via_mu, paths["μ"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(via_var, paths["σ²"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(direct, paths["x̂"], rtol=1e-9, atol=1e-12)
    (gx,) = tinygrad_bn.grad(loss, [x], retain_graph=True)
    np.testing.assert_allclose(via_mu + via_var + direct, gx.data, rtol=1e-9, atol=1e-12)


def test_three_uses_three_contributions(rng):
    x = Tensor(rng.standard_normal((2, 3)), requires_grad=True, name="x")
    y = (x * x + x.exp()).sum()
    (gx,) = tinygrad_bn.grad(y, [x], retain_graph=True)
    data = stepper.trace_backward(y, {"x": x}, keep_arrays=True)
    parts = data["exact"]["contribs"]["x0"]
    assert len(parts) == 3
    np.testing.assert_allclose(sum(parts), gx.data, rtol=0, atol=1e-12)
    leaf = data["leaves"][0]
    assert len(leaf["contribs"]) == 3
    np.testing.assert_allclose(np.array(leaf["grad"]["values"]).reshape(2, 3), gx.data,
                               rtol=1e-5)


def test_leaf_final_grads_equal_grad(rng):
    loss, params = _bn(rng, shape=(32, 4))  # x has 128 elements: a summary with a strip
    names = list(params)
    expect = tinygrad_bn.grad(loss, [params[k] for k in names], retain_graph=True)
    data = stepper.trace_backward(loss, params, keep_arrays=True)
    by_label = {data["nodes"][l["id"]]["label"]: l for l in data["leaves"]}
    for k, e in zip(names, expect):
        lid = by_label[k]["id"]
        np.testing.assert_allclose(data["exact"]["grads"][lid], e.data, rtol=0, atol=1e-12)
        s = by_label[k]["grad"]
        assert s["shape"] == list(e.shape)
        assert s["norm"] == pytest.approx(float(np.linalg.norm(e.data)), rel=1e-5)
    big = by_label["x"]["grad"]
    assert "values" not in big and len(big["strip"]) == 64
    assert big["min"] == pytest.approx(float(expect[0].data.min()), rel=1e-5)
    assert big["max"] == pytest.approx(float(expect[0].data.max()), rel=1e-5)
    small = by_label["w"]["grad"]
    np.testing.assert_allclose(small["values"], expect[1].data, rtol=1e-5)
    assert all(t.grad is None for t in params.values())


def test_root_gradient_and_leaf_root(rng):
    x = Tensor(rng.standard_normal(3), requires_grad=True, name="x")
    y = x * 2.0  # not a scalar: starts from ones, and says so
    data = stepper.trace_backward(y)
    assert "ones_like" in data["meta"]["rootNote"]
    np.testing.assert_allclose(data["leaves"][0]["grad"]["values"], [2.0, 2.0, 2.0])
    g = np.array([1.0, -1.0, 0.5])
    data = stepper.trace_backward(y, gradient=g)
    np.testing.assert_allclose(data["leaves"][0]["grad"]["values"], 2 * g)
    with pytest.raises(ValueError, match="shape"):
        stepper.trace_backward(y, gradient=np.ones(4))
    data = stepper.trace_backward(x)  # a leaf: no steps, its gradient is the seed
    assert data["steps"] == [] and data["leaves"][0]["grad"]["values"] == [1.0, 1.0, 1.0]


def test_freed_graph_and_bad_input(rng):
    x = Tensor(rng.standard_normal(3), requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        stepper.trace_backward(y)
    with pytest.raises(ValueError, match="does not require grad"):
        stepper.trace_backward(Tensor(np.ones(2)))
    with pytest.raises(TypeError):
        stepper.trace_backward(np.ones(2))


def test_non_finite_values_are_valid_json():
    s = stepper._summary(np.array([1.0, np.nan, np.inf, -np.inf, 1.23456789e-12]), 64)
    assert s["values"] == [1.0, "NaN", "Infinity", "-Infinity", 1.23457e-12]
    json.dumps(s, allow_nan=False)
    assert stepper._json_script({"a": "</script>"}) == '{"a":"\\u003c/script>"}'


def test_cli_steps_writes_the_page(tmp_path, monkeypatch, capsys, dot_binary):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["graph", "--norm", "batch", "--steps", "--out", "bn.html"]) == 0
    text = (tmp_path / "bn.html").read_text(encoding="utf-8")
    _self_contained(text)
    data = _page_data(text)
    assert len(data["steps"]) == data["meta"]["nodes"] > 5
    _check_order(data)
    assert "wrote bn.html" in capsys.readouterr().out
    # another suffix becomes .html
    assert cli_main(["graph", "--norm", "layer", "--steps", "--out", "ln.svg"]) == 0
    assert (tmp_path / "ln.html").exists()


def test_big_chain_renders_quickly(tmp_path, dot_binary):
    x = Tensor(np.linspace(-1, 1, 40), requires_grad=True, name="x")
    y = x
    for _ in range(2999):
        y = y * 1.0001
    y = y.sum()  # 3,000 nodes
    t0 = time.perf_counter()
    out = viz.render_backward(y, tmp_path / "chain.html")
    elapsed = time.perf_counter() - t0
    assert elapsed < 15, elapsed  # about 1 s here; generous for slow CI machines
    text = out.read_text(encoding="utf-8")
    _self_contained(text)
    data = _page_data(text)
    assert len(data["steps"]) == 3000
    _check_order(data)
    # big graphs get shorter heat strips
    assert all(len(s["in"]["strip"]) == stepper.STRIP_BIG for s in data["steps"][1:])
    assert x.grad is None
