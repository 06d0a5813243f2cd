"""The viz package's parts on their own: the graph model (one walk), the annotations
(gradients through the engine's hook, saved values, trace statistics through the record
hook), ops describing themselves, and rendering that never hangs (size limit, timeout)."""
import subprocess

import numpy as np
import pytest

import tinygrad_bn
from tinygrad_bn import Tensor, nn, viz
from tinygrad_bn.core.node import Hooks, _grad_mode
from tinygrad_bn.nn import functional as F
from tinygrad_bn.viz import annotate, render


def _bn(rng, shape=(6, 3)):
    x = Tensor(rng.standard_normal(shape), requires_grad=True, name="x")
    w = Tensor(rng.standard_normal(shape[1]), requires_grad=True, name="γ")
    b = Tensor(rng.standard_normal(shape[1]), requires_grad=True, name="β")
    y = F.batch_norm(x, None, None, w, b, training=True)
    return y, x, w, b


def _mlp(rng, depth=2):
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(4, 2))
    x = Tensor(rng.standard_normal((8, 4)).astype(np.float32))
    return F.cross_entropy(model(x), rng.integers(0, 2, 8)), model


# ------------------------------------------------------------------------ the model
def test_graph_walks_once_into_plain_data(rng):
    y, x, w, b = _bn(rng)
    g = viz.Graph(y, params={"γ": w})
    pos = {node: i for i, node in enumerate(g.order)}
    assert g.order[-1] is y._ctx and set(g.leaves) == {x, w, b}
    edges = list(g.edges())
    assert len(edges) == sum(p is not None for n in g.order for p in n.parents)
    for src, node, i in edges:  # producers before consumers; each edge is an input slot
        assert node.parents[i] is src
        if src in pos:
            assert pos[src] < pos[node]
    # x feeds two ops of the composed BatchNorm: mean (μ) and x − μ
    assert sorted(n.name for s, n, _ in edges if s is x) == ["mean", "sub"]
    assert [s.label for s in g.scopes] == ["batch_norm"]
    assert g.kind_of_leaf(w) == ("param", "γ")
    assert g.kind_of_leaf(x) == ("input", "x")
    assert g.drawn_count() == len(g.order) + 3 and not g.box_of
    assert repr(g) == f"Graph({len(g.order)} ops, 3 leaves, 1 scopes)"
    g.collapse(True)
    assert set(g.box_of) == set(g.order) and g.drawn_count() == 1 + 3
    assert "ops in boxes" in repr(g)


def test_graph_names_roots_and_parameters(rng):
    loss, model = _mlp(rng)
    g = viz.Graph({"loss": loss}, params=model)
    assert g.root_name[loss._ctx] == "loss"
    names = {g.kind_of_leaf(l)[1] for l in g.leaves}
    assert {"0.weight", "0.bias", "1.weight"} <= names
    assert any(s.kind == "module" for s in g.scopes)


def test_graph_errors(rng):
    y, *_ = _bn(rng)
    with pytest.raises(ValueError, match="does not require grad"):
        viz.Graph(Tensor(np.ones(3)))
    with pytest.raises(TypeError, match="not a Tensor"):
        viz.Graph([y, np.ones(3)])
    with pytest.raises(TypeError, match="params must be"):
        viz.Graph(y, params=3)
    y.sum().backward()
    with pytest.raises(RuntimeError, match="freed"):
        viz.Graph(y)


# ------------------------------------------------------------- ops describe themselves
def test_ops_describe_themselves(rng):
    x = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    y = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    cases = {
        x * 2.0: "× 2", x / 4: "/ 4", x ** 2: "^2", x - 1: "− const", 2 - x: "const − x",
        x.sum(0): "axis=0", x.mean(): "all axes", x.mean(axis=(0, 1), keepdims=True):
        "all axes", x.amax(1): "axis=1", x.var(0): "axis=0", x.permute(1, 0): "perm=(1, 0)",
        x + y: "", x.exp(): "", x @ y.T: "",
    }
    for t, want in cases.items():
        assert t.grad_fn.describe() == want, (t.grad_fn.name, want)
    # the drawing shows the same second line
    src = viz.draw_graph(x.sum(0) * 2.0).source
    assert "axis=0" in src and "× 2" in src


# ------------------------------------------------------------------------ annotations
def test_gradients_come_from_the_engine_and_touch_nothing(rng):
    loss, model = _mlp(rng)
    calls = []
    p0 = next(model.parameters())
    p0.register_hook(lambda g: calls.append(1))
    h = model[1].weight
    g = viz.Graph(loss, params=model)
    grads, edges = annotate.gradients(g, annotate.seeds(g, None))
    assert calls == [] and all(p.grad is None for p in model.parameters())
    want = tinygrad_bn.grad(loss, list(model.parameters()), retain_graph=True)
    for p, gp in zip(model.parameters(), want):
        if p is not p0:  # the hook only counts calls; grad() runs it, backward_steps not
            np.testing.assert_allclose(grads[p], gp.data, rtol=1e-6, atol=1e-7)
    assert h in grads
    # every edge's gradient has its input's shape; a leaf's gradient is the sum of its edges
    for (node, i), ge in edges.items():
        p = node.parents[i]
        assert ge.shape == (p.data.shape if isinstance(p, Tensor) else p.shape)
    for leaf in g.leaves:
        parts = [ge for (node, i), ge in edges.items() if node.parents[i] is leaf]
        np.testing.assert_allclose(sum(parts), grads[leaf], rtol=1e-6, atol=1e-7)
    loss.backward()  # the graph was kept: a normal backward still works
    assert p0.grad is not None


def test_saved_values_and_trace_statistics(rng):
    y, x, w, b = _bn(rng)
    saved, arrays, extra = annotate.saved_values(viz.Graph(y))
    names = {n.out_name for n in saved if not isinstance(n, Tensor)}
    assert "x̂" in names and x in arrays and extra == []
    with viz.trace() as tr:
        y2, *_ = _bn(rng)
    assert tr.count == len(viz.Graph(y2).order)
    assert _grad_mode.record is None  # closed again
    mu = next(n for n in viz.Graph(y2).order if n.out_name == "μ")
    assert annotate.stats_of(mu) is not None and annotate.stats_of(y._ctx) is None
    # a trace is a hook, not a scope: it leaves no trace in the graph's clusters
    assert [s.label for s in viz.Graph(y2).scopes] == ["batch_norm"]
    with viz.trace() as outer:
        with viz.trace() as inner:
            (x * 2).sum()
        (x * 3).sum()
    assert (inner.count, outer.count) == (2, 4)


def test_a_trace_sees_only_its_own_thread_and_always_closes():
    import threading

    x = Tensor(np.ones(3), requires_grad=True)
    assert Hooks.traces == 0
    with pytest.raises(KeyError):
        with viz.trace():
            assert Hooks.traces == 1
            raise KeyError("inside")
    assert Hooks.traces == 0 and _grad_mode.record is None  # closed by the error too
    opened, done = threading.Event(), threading.Event()
    counts = []

    def other():
        with viz.trace() as tr:
            opened.set()
            done.wait(5)
            (x * 5).sum()
        counts.append(tr.count)

    t = threading.Thread(target=other)
    t.start()
    opened.wait(5)
    assert Hooks.traces == 1  # open in the other thread: this thread's nodes are not traced
    y = x * 2
    assert annotate.stats_of(y._ctx) is None
    done.set()
    t.join()
    assert counts == [2] and Hooks.traces == 0


# -------------------------------------------------------------------- never hangs
def test_render_collapses_or_refuses_big_graphs(rng, tmp_path, dot_binary):
    loss, model = _mlp(rng, depth=6)
    n = viz.Graph(loss).drawn_count()
    out = viz.render_graph(loss, tmp_path / "big.svg", params=model, max_nodes=n - 1)
    text = out.read_text(encoding="utf-8")
    assert "collapsed scope" in text and "BatchNorm1d (1)" in text
    y = Tensor(np.ones(3), requires_grad=True)
    for _ in range(50):
        y = y * 1.01
    with pytest.raises(ValueError, match="max_nodes=20.*Draw a part"):
        viz.render_graph(y, tmp_path / "chain.svg", max_nodes=20)
    assert not (tmp_path / "chain.svg").exists()
    viz.render_graph(y, tmp_path / "chain.dot", max_nodes=20)  # DOT source: any size
    with pytest.raises(ValueError, match="max_nodes"):  # an explicit collapse is kept
        viz.render_graph(loss, tmp_path / "big.svg", params=model, max_nodes=5,
                         collapse="BatchNorm1d*")


def test_dot_gets_a_timeout(rng, tmp_path, monkeypatch, dot_binary):
    y, *_ = _bn(rng)
    real = subprocess.run

    def slow(*args, **kwargs):
        assert kwargs["timeout"] == 0.5
        raise subprocess.TimeoutExpired(args[0], kwargs["timeout"])
    monkeypatch.setattr(render.subprocess, "run", slow)
    with pytest.raises(TimeoutError, match="did not finish .* in 0.5 s"):
        viz.render_graph(y, tmp_path / "g.svg", timeout=0.5)
    monkeypatch.setattr(render.subprocess, "run", real)
    assert viz.render_graph(y, tmp_path / "g.svg", timeout=30).stat().st_size > 1000


def test_render_backward_page_displays_inline(rng, tmp_path, dot_binary):
    y, x, w, b = _bn(rng)
    page = viz.render_backward(y)
    assert isinstance(page, viz.BackwardPage) and page.html.startswith("<!DOCTYPE html>")
    frame = page._repr_html_()
    assert frame.startswith("<iframe") and 'srcdoc="&lt;!DOCTYPE html&gt;' in frame
    assert "<script" not in frame  # all of it escaped into the attribute
    out = page.save(tmp_path / "p.html")
    assert out.read_text(encoding="utf-8") == page.html
    assert viz.render_backward(y, tmp_path / "q.html").read_text(encoding="utf-8") == page.html


def test_cnn_layers_are_one_node_each_in_drawings_and_the_stepper(rng):
    from tinygrad_bn.viz import stepper

    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3))
    x = Tensor(rng.standard_normal((4, 1, 4, 4)).astype(np.float32))
    loss = F.cross_entropy(model(x), np.array([0, 1, 2, 0]))
    g = viz.Graph(loss, params=model)
    names = [n.name for n in g.order]
    assert names.count("conv2d") == 1 and names.count("max_pool2d") == 1
    conv = next(n for n in g.order if n.name == "conv2d")
    assert "3×3" in conv.describe()
    src = viz.draw_graph(loss, params=model).source
    assert "3×3" in src and "0.weight" in src
    data = stepper.trace_backward(loss, model, keep_arrays=True)
    want = tinygrad_bn.grad(loss, list(model.parameters()), retain_graph=True)
    ids = {data["nodes"][l["id"]]["label"]: l["id"] for l in data["leaves"]}
    for (name, _), gp in zip(model.named_parameters(), want):
        np.testing.assert_allclose(data["exact"]["grads"][ids[name]], gp.data, rtol=1e-6,
                                   atol=1e-8)
