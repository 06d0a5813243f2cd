"""Tests of ``tinygrad_bn.viz``: the DOT source of composed and fused norms, clusters,
parameter names, saved values, gradient and data annotations, collapsing, rendering."""
import html
import re
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from tinygrad_bn import Tensor, analytic, nn, viz
from tinygrad_bn.core.node import scope
from tinygrad_bn.nn import functional as F
from tinygrad_bn.viz import annotate

# ----------------------------------------------------------------------- DOT parsing
_NODE = re.compile(r"^\s*(\w+) \[(.*)\]$")
_EDGE = re.compile(r"^\s*(\w+) -> (\w+)(?: \[(.*)\])?$")
_CLUSTER = re.compile(r"^\s*subgraph (cluster_\w+) \{$")
_CLUSTER_LABEL = re.compile(r"^\s*graph \[label=<<b>(.*?)</b>>")


class Parsed:
    """Nodes (id -> attribute text), edges, and the cluster path of each node."""

    def __init__(self, dot):
        self.source = dot.source
        self.nodes, self.edges, self.cluster_of = {}, [], {}
        path = []
        for line in self.source.splitlines():
            if _CLUSTER.match(line):
                path.append(None)
                continue
            m = _CLUSTER_LABEL.match(line)
            if m and path and path[-1] is None:
                path[-1] = html.unescape(m[1])
                continue
            if line.strip() == "}":
                if path:
                    path.pop()
                continue
            m = _EDGE.match(line)
            if m:
                self.edges.append((m[1], m[2], m[3] or ""))
                continue
            m = _NODE.match(line)
            if m and m[1] not in ("graph", "node", "edge"):
                self.nodes[m[1]] = m[2]
                self.cluster_of[m[1]] = tuple(path)

    def label(self, nid) -> str:
        m = re.search(r"label=<(.*)>$", self.nodes[nid])
        return m[1] if m else ""

    def title(self, nid) -> str:
        """The bold first line: an op's name, a value's name ('' when unnamed)."""
        m = re.search(r"<b>(.*?)</b>", self.label(nid))
        return html.unescape(m[1]) if m else ""

    def text(self, nid) -> str:
        return html.unescape(re.sub(r"<[^>]+>", " ", self.label(nid)))

    def attr(self, nid, key):
        m = re.search(rf'\b{key}="?([^" ]*)"?', self.nodes[nid])
        return m[1] if m else None

    def ops(self):
        return [n for n in self.nodes if n.startswith("op")]

    def ids(self, title):
        return [n for n in self.nodes if self.title(n) == title]

    def one(self, title):
        ids = self.ids(title)
        assert len(ids) == 1, f"{title!r}: {ids}"
        return ids[0]

    def succ(self, nid):
        return [d for s, d, _ in self.edges if s == nid]

    def pred(self, nid):
        return [s for s, d, _ in self.edges if d == nid]

    def succ_titles(self, title):
        return sorted(self.title(d) for d in self.succ(self.one(title)))

    def pred_titles(self, title):
        return sorted(self.title(s) for s in self.pred(self.one(title)))

    def grad_norm(self, nid) -> float:
        m = re.search(r"‖∇‖ ([-+.e\d]+)", self.text(nid))
        return float(m[1])

    def stats(self, nid):
        m = re.search(r"mean ([-+.e\dna]+)  std ([-+.e\dna]+)", self.text(nid))
        return (float(m[1]), float(m[2])) if m else None


def _t(rng, *shape, name=None, grad=True):
    return Tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=grad, name=name)


def _bn_inputs(rng, n=8, c=3):
    return _t(rng, n, c, name="x"), _t(rng, c, name="γ"), _t(rng, c, name="β")


def _mlp(seed=0):
    return nn.Sequential(nn.Linear(2, 8, rng=seed), nn.BatchNorm1d(8), nn.ReLU(),
                         nn.Linear(8, 3, rng=seed + 1))


def _mlp_loss(model, rng):
    x = Tensor(rng.standard_normal((16, 2)).astype(np.float32), name="x")
    target = rng.integers(0, 3, size=16)
    return F.cross_entropy(model(x), target).named("loss")


# ------------------------------------------------------------------ composed and fused
def test_composed_batch_norm_ops_names_and_edges(rng):
    x, g, b = _bn_inputs(rng)
    y = F.batch_norm(x, None, None, g, b, training=True)
    p = Parsed(viz.draw_graph(y))
    assert sorted(p.title(n) for n in p.ops()) == sorted(
        ["mean", "sub", "pow", "mean", "add", "sqrt", "div", "mul", "add"])
    # x feeds mean and sub; μ comes from mean and feeds sub; and so on down to y
    assert p.succ_titles("x") == ["mean", "sub"]
    assert p.pred_titles("μ") == ["mean"] and p.succ_titles("μ") == ["sub"]
    assert p.pred_titles("x - μ") == ["sub"] and p.succ_titles("x - μ") == ["div", "pow"]
    assert p.succ_titles("σ²") == ["add"]
    assert p.pred_titles("σ") == ["sqrt"] and p.succ_titles("σ") == ["div"]
    assert p.pred_titles("x̂") == ["div"] and p.succ_titles("x̂") == ["mul"]
    assert p.succ_titles("γ") == ["mul"] and p.succ_titles("β") == ["add"]
    assert p.pred_titles("y") == ["add"]
    # the squared deviations (unnamed, not saved) are an edge pow -> mean with their shape
    pow_id = [n for n in p.ops() if p.title(n) == "pow"][0]
    assert [(p.title(d), a) for s, d, a in p.edges if s == pow_id] == [("mean", 'label="(8, 3)"')]
    # values show their shape and dtype; ops show the reduced axis and the exponent
    assert "(1, 3) float32" in p.text(p.one("μ"))
    assert "(8, 3) float32" in p.text(p.one("x"))
    assert all("axis=0" in p.text(n) for n in p.ops() if p.title(n) == "mean")
    assert "^2" in p.text(pow_id)
    # every op and intermediate sits in the norm's cluster; the inputs do not
    assert all(p.cluster_of[n] == ("batch_norm",) for n in p.ops())
    assert p.cluster_of[p.one("μ")] == ("batch_norm",)
    assert p.cluster_of[p.one("x")] == ()


def test_colours_of_leaves_saved_values_and_outputs(rng):
    x, g, b = _bn_inputs(rng)
    y = F.batch_norm(x, None, None, g, b, training=True)
    p = Parsed(viz.draw_graph(y))
    c = viz.COLORS
    assert p.attr(p.one("x"), "fillcolor") == c["input"]
    assert p.attr(p.one("y"), "fillcolor") == c["output"]
    assert p.attr(p.one("μ"), "fillcolor") == c["value"]  # read by nobody's backward
    for saved in ("x - μ", "σ", "x̂"):  # pow and div read x - μ; sqrt its output; mul x̂
        assert p.attr(p.one(saved), "fillcolor") == c["saved"], saved
    legend = p.text("legend")
    for words in ("input (leaf)", "saved for backward", "output", "op"):
        assert words in legend


def test_analytic_batch_norm_is_one_node(rng):
    x, g, b = _bn_inputs(rng)
    y = analytic.batch_norm(x, None, None, g, b, training=True)
    p = Parsed(viz.draw_graph(y))
    (op,) = p.ops()
    assert p.title(op) == "batch_norm"
    assert sorted(p.title(s) for s in p.pred(op)) == ["x", "β", "γ"]
    outs = [d for d in p.succ(op) if d.startswith("v")]
    assert len(outs) == 1 and p.attr(outs[0], "fillcolor") == viz.COLORS["output"]
    # what the fused node saved that is no value of the graph hangs off it, dashed
    saved = [d for d in p.succ(op) if d.startswith("s")]
    assert saved and all("dashed" in p.nodes[s] for s in saved)
    with pytest.raises(ValueError, match="rankdir"):
        viz.draw_graph(y, rankdir="XY")


def test_handmade_scopes_nest_as_clusters(rng):
    x = _t(rng, 4, 3, name="x")
    with scope("Block (b1)", kind="module"):
        h = (x * 2.0).named("h")
        with scope("inner_norm", kind="norm"):
            z = (h - h.mean(axis=0, keepdims=True)).named("z")
    y = z.sum()
    p = Parsed(viz.draw_graph(y))
    mul = [n for n in p.ops() if p.title(n) == "mul"][0]
    assert "× 2" in p.text(mul)  # the constant operand Mul saved
    assert p.cluster_of[mul] == ("Block (b1)",)
    assert p.cluster_of[p.one("z")] == ("Block (b1)", "inner_norm")
    sum_op = [n for n in p.ops() if p.title(n) == "sum"][0]
    assert p.cluster_of[sum_op] == ()
    assert "all axes" in p.text(sum_op)
    assert 'style="rounded,dashed,filled"' in p.source  # norm clusters are dashed


def test_mlp_module_clusters_and_parameter_names(rng):
    model = _mlp()
    loss = _mlp_loss(model, rng)
    p = Parsed(viz.draw_graph(loss, params=model))
    for name, cluster in [("0.weight", ("Sequential", "Linear (0)")),
                          ("0.bias", ("Sequential", "Linear (0)")),
                          ("1.weight", ("Sequential", "BatchNorm1d (1)", "batch_norm")),
                          ("3.bias", ("Sequential", "Linear (3)"))]:
        nid = p.one(name)
        assert p.attr(nid, "fillcolor") == viz.COLORS["param"], name
        assert p.cluster_of[nid] == cluster, name
    linears = [n for n in p.ops() if p.title(n) == "linear"]
    assert sorted(p.cluster_of[n] for n in linears) == [("Sequential", "Linear (0)"),
                                                        ("Sequential", "Linear (3)")]
    relu = [n for n in p.ops() if p.title(n) == "relu"][0]
    assert p.cluster_of[relu] == ("Sequential", "ReLU (2)")
    sqrt = [n for n in p.ops() if p.title(n) == "sqrt"][0]
    assert p.cluster_of[sqrt] == ("Sequential", "BatchNorm1d (1)", "batch_norm")
    assert p.pred_titles("loss") == ["cross_entropy"]
    assert p.attr(p.one("loss"), "fillcolor") == viz.COLORS["output"]
    assert "parameter" in p.text("legend")
    # Parameters are drawn as parameters even without names
    p2 = Parsed(viz.draw_graph(loss))
    assert sum(p2.attr(n, "fillcolor") == viz.COLORS["param"] for n in p2.nodes) == 6


def test_several_roots_share_one_picture(rng):
    x, g, b = _bn_inputs(rng)
    y = F.batch_norm(x, None, None, g, b, training=True)
    loss = (y * y).mean()
    p = Parsed(viz.draw_graph({"normalized": y, "loss": loss}))
    assert p.pred_titles("normalized") == ["add"]
    assert p.pred_titles("loss") == ["mean"]
    assert len(p.ops()) == 9 + 2  # the norm's nine ops drawn once
    p2 = Parsed(viz.draw_graph([y, loss]))
    assert p2.ids("y") and p2.ids("output 1")


# ------------------------------------------------------------------ grads and data
def test_gradient_annotations_match_grad(rng):
    model = _mlp()
    loss = _mlp_loss(model, rng)
    loss.backward(retain_graph=True)
    p = Parsed(viz.draw_graph(loss, params=model, show_grad=True))
    norms = {}
    for name, param in model.named_parameters():
        shown = p.grad_norm(p.one(name))
        expected = float(np.linalg.norm(param.grad))
        assert shown == pytest.approx(expected, rel=0.05, abs=1e-12), name
        norms[name] = shown
    assert p.grad_norm(p.one("loss")) == 1.0
    # the bias before BatchNorm gets no gradient (BN removes the mean): it is the smallest
    assert norms["0.bias"] < 1e-4 * min(v for k, v in norms.items() if k != "0.bias")

    # colours follow the magnitude: the smaller the norm, the bluer the fill
    def blueness(nid):
        c = p.attr(nid, "fillcolor")
        return int(c[5:7], 16) - int(c[1:3], 16)

    ranked = sorted(norms, key=norms.get)
    blues = [blueness(p.one(n)) for n in ranked]
    assert blues == sorted(blues, reverse=True)
    assert "gradient norm" in p.text("legend_grad")
    # a value used twice (x - μ inside the norm) labels each use with the share it sends back
    d = p.one("x - μ")
    labels = [a for s, _, a in p.edges if s == d and "label=" in a]
    assert len(labels) == 2


def test_gradients_equal_backward_exactly(rng):
    x, g, b = _bn_inputs(rng, n=6, c=4)
    w = rng.standard_normal((6, 4)).astype(np.float32)
    y = F.batch_norm(x, None, None, g, b, training=True)
    y.retain_grad()
    loss = (y * w).sum()
    loss.backward(retain_graph=True)
    graph = viz.Graph(loss)
    grads, edge_grads = annotate.gradients(graph, annotate.seeds(graph, None))
    edges = {}
    for (node, i), gp in edge_grads.items():
        edges.setdefault(node, []).append((node.parents[i], gp))
    for leaf in (x, g, b):
        np.testing.assert_allclose(grads[leaf], leaf.grad, rtol=1e-6)
    np.testing.assert_allclose(grads[y._ctx], y.grad, rtol=1e-6)
    # x's gradient is the sum of what its two uses (mean, sub) send back
    into_x = [gp for gps in edges.values() for p, gp in gps if p is x]
    assert len(into_x) == 2
    np.testing.assert_allclose(into_x[0] + into_x[1], x.grad, rtol=1e-5, atol=1e-6)
    # a seed of w on y gives the same as the loss above
    p1 = Parsed(viz.draw_graph(loss, show_grad=True))
    p2 = Parsed(viz.draw_graph(y, show_grad=True, grad_outputs=w))
    assert p1.grad_norm(p1.one("γ")) == p2.grad_norm(p2.one("γ"))


def test_show_data_needs_trace_for_unsaved_values(rng):
    x, g, b = _bn_inputs(rng, n=16, c=3)
    y = F.batch_norm(x, None, None, g, b, training=True)
    p = Parsed(viz.draw_graph(y, show_data=True))
    mean, std = p.stats(p.one("x"))
    assert mean == pytest.approx(float(x.data.mean()), abs=1e-3)
    assert std == pytest.approx(float(x.data.std()), rel=1e-2)
    mean, std = p.stats(p.one("x̂"))  # saved by mul: known without a trace
    assert abs(mean) < 1e-3 and std == pytest.approx(1.0, abs=1e-2)
    assert p.stats(p.one("γ·x̂")) is None  # nobody kept it

    with viz.trace() as tr:
        y = F.batch_norm(x, None, None, g, b, training=True)
    assert tr.count == 9
    p = Parsed(viz.draw_graph(y, show_data=True))
    mean, std = p.stats(p.one("γ·x̂"))
    ref = (y.data - b.data)
    assert mean == pytest.approx(float(ref.mean()), abs=1e-3)
    assert std == pytest.approx(float(ref.std()), rel=1e-2)
    mean, std = p.stats(p.one("μ"))
    assert mean == pytest.approx(float(x.data.mean()), abs=1e-4)
    # a trace changes no scope that is drawn, and ends with its block
    assert [n for n in p.ops() if p.cluster_of[n] != ("batch_norm",)] == []
    z = x * 2.0
    assert not hasattr(z._ctx, "_viz_stats") and z._ctx.scope is None


# ------------------------------------------------------------------------ collapsing
def test_collapse_a_norm_into_one_box(rng):
    x, g, b = _bn_inputs(rng)
    y = F.batch_norm(x, None, None, g, b, training=True)
    loss = (y * y).mean()
    p = Parsed(viz.draw_graph(loss, collapse="batch_norm"))
    (box,) = [n for n in p.nodes if n.startswith("box")]
    assert p.title(box) == "batch_norm" and "9 ops" in p.text(box)
    assert "box3d" in p.nodes[box]
    assert sorted(p.title(s) for s in p.pred(box)) == ["x", "β", "γ"]
    assert p.succ_titles("y") == ["mul", "mul"] and p.pred(p.one("y")) == [box]  # y * y
    assert sorted(p.title(n) for n in p.ops()) == ["mean", "mul"]
    with pytest.raises(ValueError, match="matches no scope.*'batch_norm'"):
        viz.draw_graph(loss, collapse="BatchNorm*")


def test_collapse_true_shows_the_layers(rng):
    model = _mlp()
    loss = _mlp_loss(model, rng)
    loss.backward(retain_graph=True)
    p = Parsed(viz.draw_graph(loss, params=model, collapse=True, show_grad=True))
    boxes = [n for n in p.nodes if n.startswith("box")]
    assert [p.title(n) for n in boxes] == ["BatchNorm1d (1)"]
    # one-op layers stay as their op, in their cluster
    assert sorted(p.title(n) for n in p.ops()) == ["cross_entropy", "linear", "linear", "relu"]
    assert p.cluster_of[boxes[0]] == ("Sequential",)
    assert p.cluster_of[p.one("1.weight")] == ("Sequential",)
    # the gradient on the edge 1.weight -> box is the parameter's gradient
    w = p.one("1.weight")
    (edge,) = [a for s, d, a in p.edges if s == w]
    assert "penwidth" in edge
    weight = dict(model.named_parameters())["1.weight"]
    assert p.grad_norm(w) == pytest.approx(float(np.linalg.norm(weight.grad)), rel=0.05)


# ------------------------------------------------------------------- errors, big graphs
def test_freed_graph_and_bad_arguments(rng):
    x, g, b = _bn_inputs(rng)
    loss = F.batch_norm(x, None, None, g, b, training=True).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        viz.draw_graph(loss)
    with pytest.raises(ValueError, match="does not require grad"):
        viz.draw_graph(Tensor([1.0, 2.0]))
    with pytest.raises(TypeError, match="not a Tensor"):
        viz.draw_graph([x, 3.0])
    y = x * 2.0
    with pytest.raises(ValueError, match="values"):
        viz.draw_graph(y, values="some")
    with pytest.raises(ValueError, match="grad_range needs show_grad"):
        viz.draw_graph(y, grad_range=(-3, 1))
    with pytest.raises(ValueError, match="low < high"):
        viz.draw_graph(y, show_grad=True, grad_range=(1, -3))
    with pytest.raises(ValueError, match="grad_output of shape"):
        viz.draw_graph(y, show_grad=True, grad_outputs=np.ones(3))
    with pytest.raises(TypeError, match="params"):
        viz.draw_graph(y, params=3)
    with pytest.raises(ValueError, match="format"):
        viz.render_graph(y, "graph.jpg")


def test_values_all_draws_every_value(rng):
    x, g, b = _bn_inputs(rng)
    y = F.batch_norm(x, None, None, g, b, training=True)
    p = Parsed(viz.draw_graph(y, values="all", legend=False))
    assert len([n for n in p.nodes if n.startswith("v")]) == len(p.ops()) == 9
    assert not any("label=" in a for _, _, a in p.edges)
    assert "legend" not in p.nodes


def test_deep_graph_is_drawn_without_recursion():
    x = Tensor(np.ones(2, dtype=np.float32), requires_grad=True, name="x")
    y = x
    for _ in range(100_000):
        y = y * 1.00001
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        dot = viz.draw_graph(y, legend=False)
    finally:
        sys.setrecursionlimit(limit)
    src = dot.source
    # x -> op0 -> op1 -> ... -> op99999 -> output: a product by a constant keeps only the
    # constant (its own input is never read), so no intermediate value is drawn
    assert src.count(" -> ") == 100_000 + 1
    assert "\top99999 [" in src


# ----------------------------------------------------------------------- rendering
def test_render_svg_png_with_dot(rng, tmp_path, dot_binary):
    model = _mlp()
    loss = _mlp_loss(model, rng)
    svg = viz.render_graph(loss, tmp_path / "mlp.svg", params=model, show_grad=True,
                           title="MLP")
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    texts = {t.text for t in root.iter() if t.tag.endswith("text")}
    assert {"0.weight", "linear", "BatchNorm1d (1)", "sqrt"} <= texts
    x, g, b = _bn_inputs(rng)
    y = F.batch_norm(x, None, None, g, b, training=True)
    png = viz.render_graph(y, tmp_path / "bn.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pdf = viz.render_graph(viz.draw_graph(y), tmp_path / "bn.out", format="pdf")
    assert pdf.read_bytes()[:5] == b"%PDF-"
    # inline display in Jupyter is the Digraph's own
    bundle = viz.draw_graph(y)._repr_mimebundle_()
    assert bundle["image/svg+xml"].lstrip().startswith("<?xml")


def test_rendering_without_dot_says_how_to_install(rng, tmp_path, monkeypatch):
    x, g, b = _bn_inputs(rng)
    y = F.batch_norm(x, None, None, g, b, training=True)
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot here
    dot = viz.draw_graph(y)  # building the source needs no binary
    assert "digraph" in dot.source
    with pytest.raises(viz.GraphvizNotFoundError, match="Install Graphviz.*apt-get install "
                       "graphviz"):
        viz.render_graph(y, tmp_path / "bn.svg")
    assert isinstance(viz.GraphvizNotFoundError("x"), RuntimeError)
    out = viz.render_graph(y, tmp_path / "bn.dot")  # the source needs no binary
    assert out.read_text(encoding="utf-8") == dot.source
    assert not (tmp_path / "bn.svg").exists()


# ----------------------------------------------------------------------------- CLI
def _run_cli(argv):
    from tinygrad_bn.cli import main

    return main(["graph", *argv])


@pytest.mark.parametrize("norm", ["batch", "layer", "group", "instance", "rms"])
def test_cli_graph_composed_and_analytic(norm, tmp_path, capsys):
    out = tmp_path / "g.dot"
    assert _run_cli(["--norm", norm, "--out", str(out)]) == 0
    p = Parsed(type("D", (), {"source": out.read_text(encoding="utf-8")})())
    assert len(p.ops()) > 5 and {"mean", "sqrt", "div"} <= {p.title(n) for n in p.ops()}
    assert f"{norm}_norm" in {c for path in p.cluster_of.values() for c in path}
    assert _run_cli(["--norm", norm, "--analytic", "--show-grad", "--out", str(out)]) == 0
    p = Parsed(type("D", (), {"source": out.read_text(encoding="utf-8")})())
    assert [p.title(n) for n in p.ops()] == [f"{norm}_norm"]
    assert "‖∇‖" in p.source
    assert f"wrote {out}" in capsys.readouterr().out


def test_cli_graph_mlp_and_errors(tmp_path, monkeypatch, capsys):
    out = tmp_path / "mlp.dot"
    assert _run_cli(["--mlp", "--collapse", "--out", str(out)]) == 0
    src = out.read_text(encoding="utf-8")
    assert "0.weight" in src and "‖∇‖" in src and "BatchNorm1d (1)" in src
    capsys.readouterr()
    assert _run_cli(["--mlp", "--norm", "instance", "--out", str(out)]) == 2
    assert "instance needs (N, C, L) inputs" in capsys.readouterr().err
    monkeypatch.setenv("PATH", str(tmp_path))
    assert _run_cli(["--out", str(tmp_path / "g.svg")]) == 2
    assert "install Graphviz" in capsys.readouterr().err
