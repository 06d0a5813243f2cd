"""Step through a backward pass in the browser: ``render_backward(y, "bn.html")``.

The page is one self-contained HTML file: the graph drawn by Graphviz (inline SVG, the same
picture as ``viz.draw_graph``), the steps of the backward pass as JSON in a
``<script type="application/json">`` tag, and a small script that walks through them (next /
previous / play, a slider, the arrow keys and space). It needs no network and no other file.

The steps are those of the engine itself, in its real processing order: ``trace_backward``
runs the engine through its ``observe`` hook (``annotate.backward_steps``: the quiet capture
mode, so that no ``.grad`` is touched and the graph stays usable). Each step records the gradient the node received (with
the contributions it was summed from when several paths meet there), and the gradient sent
along each edge to the node's inputs, already reduced to each input's shape as the engine
does. Small gradients (at most 16 elements) are kept as values, larger ones as shape, norm,
min / max / mean and a strip of up to 64 evenly spaced values; numbers are rounded to 6
significant digits.
"""
from __future__ import annotations

import html
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..core.tensor import Tensor
from . import annotate
from .dot import draw_graph
from .model import Graph, _key
from .render import svg_inline

__all__ = ["render_backward", "trace_backward", "BackwardPage"]

#: Gradients with at most this many elements are shown value by value.
SMALL = 16
#: Values sampled for the heat strip of a larger gradient (fewer in big graphs).
STRIP = 64
STRIP_BIG = 16
#: Above this many nodes the graph is drawn with ``collapse=True`` and strips are shorter.
BIG_GRAPH = 2000
#: Above this many drawn nodes no picture is laid out (``dot`` would take minutes); the
#: page still steps through the pass, as a list.
MAX_SVG_NODES = 6000


# --------------------------------------------------------------------------- summaries
def _num(v):
    """A float rounded to 6 significant digits; non-finite values as strings JS parses."""
    v = float(v)
    if math.isfinite(v):
        return float(f"{v:.6g}")
    return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")


def _summary(a, strip: int) -> dict:
    """What the page shows of one gradient: values when small, else statistics + a strip."""
    a = np.asarray(a)
    f = a.reshape(-1)
    if f.dtype.kind not in "fiub":
        f = f.real
    f = f.astype(np.float64, copy=False)
    s = {"shape": list(a.shape), "dtype": str(a.dtype)}
    with np.errstate(all="ignore"):
        s["norm"] = _num(math.sqrt(float(np.dot(f, f)))) if f.size else 0.0
        if f.size <= SMALL:
            s["values"] = [_num(v) for v in f.tolist()]
            return s
        s["min"], s["max"], s["mean"] = _num(f.min()), _num(f.max()), _num(f.mean())
    if strip > 0:
        n = min(strip, f.size)
        idx = np.linspace(0, f.size - 1, n).round().astype(np.int64)
        s["strip"] = [_num(v) for v in f[idx].tolist()]
    return s


# ------------------------------------------------------------------------------ trace
def _root_gradient(tensor: Tensor, gradient):
    """The seed gradient and a sentence saying what it is."""
    shape, dtype = tensor.data.shape, tensor.data.dtype
    if gradient is None:
        g = np.ones(shape, dtype=dtype)
        if g.size == 1:
            return g, "The output has one element: backward starts from the gradient 1."
        return g, (f"The output has {g.size} elements and no gradient was given: backward "
                   "starts from ones_like(output), i.e. these are the gradients of "
                   "output.sum().")
    data = gradient.data if isinstance(gradient, Tensor) else np.asarray(gradient)
    if tuple(data.shape) != tuple(shape):
        raise ValueError(f"render_backward: the gradient has shape {tuple(data.shape)} but the "
                         f"output has shape {tuple(shape)}")
    return np.array(data, dtype=dtype), "Backward starts from the given upstream gradient."


def trace_backward(tensor: Tensor, params=None, *, gradient=None, keep_arrays: bool = False,
                   strip: int | None = None, graph: Graph | None = None) -> dict:
    """Run the backward pass behind ``tensor`` step by step and return what happened.

    Nothing is modified: no ``.grad`` changes and the graph is kept (it must still exist:
    trace before ``backward()``, or after ``backward(retain_graph=True)``).

    Returns a JSON-ready dict: ``nodes`` (id -> label, shape, the ids of its SVG elements),
    ``steps`` (one per node, in the engine's order: ``node``, ``op``, ``in`` the gradient it
    received, ``out`` one entry per input edge ``{"to", "input", "grad"}``, and for a node
    reached by several paths ``contribs`` (``{"from", "step", "grad"}``, in arrival order)
    and ``sum``), ``leaves`` (final gradient and contributions of each leaf) and ``meta``.
    Nodes have ids ``n<i>``, leaves ``x<j>``. With ``keep_arrays=True`` the result also holds
    ``"exact"``: ``{"grads": id -> ndarray, "contribs": id -> [ndarray, ...]}`` at full
    precision (not JSON; for tests and notebooks). ``graph``: the ``viz.Graph`` of
    ``tensor`` when already walked (and perhaps collapsed).
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"render_backward: expected a Tensor, got {type(tensor).__name__}")
    b = graph if graph is not None else Graph(tensor, params)  # raises if freed / no grad
    order, leaves = b.order, b.leaves
    if strip is None:
        strip = STRIP_BIG if len(order) > BIG_GRAPH else STRIP

    ids: dict = {}
    nodes: dict = {}
    box_ids: dict = {}
    for i, node in enumerate(order):
        nid = ids[node] = f"n{i}"
        box = b.box_of.get(node)
        if box is None:
            svg = [f"op{i}", f"v{i}"]
        else:
            if box not in box_ids:
                box_ids[box] = f"box{len(box_ids)}"
            svg = [box_ids[box], f"v{i}"]
        s = node.scope
        nodes[nid] = {"kind": "op", "op": node.name, "label": node.out_name or node.name,
                      "shape": list(node.shape), "dtype": str(node.dtype),
                      "scope": " / ".join(s.path()) if s is not None else "", "svg": svg}
    root_key = _key(tensor)
    for j, leaf in enumerate(leaves):
        lid = ids[leaf] = f"x{j}"
        kind, name = b.kind_of_leaf(leaf)
        nodes[lid] = {"kind": "param" if kind == "param" else "leaf",
                      "label": name or f"leaf {j}",
                      "shape": list(leaf.data.shape), "dtype": str(leaf.data.dtype),
                      "scope": "", "svg": [f"x{j}"]}
    nodes[ids[root_key]]["root"] = True
    nodes[ids[root_key]]["label"] = tensor.name or "output"

    g0, note = _root_gradient(tensor, gradient)
    steps: list = []
    contribs: dict = {}  # id -> [{"from", "step", "grad"}], as sent along the edges
    finals: dict = {}  # leaf id -> summary of its final gradient
    exact_g: dict = {}
    exact_c: dict = {}

    def observe(key, g, results):
        if results is None:  # a leaf, its gradient now summed and final
            lid = ids[key]
            finals[lid] = _summary(g, strip)
            if keep_arrays:
                exact_g[lid] = np.array(g)
            return
        nid, k = ids[key], len(steps)
        step = {"node": nid, "op": key.name, "in": None if g is None else _summary(g, strip)}
        if keep_arrays and g is not None:
            exact_g[nid] = np.array(g)
        arrived = contribs.get(nid)
        if arrived is not None and len(arrived) > 1:
            step["contribs"] = arrived
            step["sum"] = step["in"]  # the engine's own sum, in arrival order
        outs = []
        for pi, (p, gp) in enumerate(zip(key.parents, results)):
            if p is None:
                continue
            pid = ids[p]
            sm = None
            if gp is not None:
                gp = annotate.edge_gradient(key, p, gp)  # as the engine hands it on
                sm = _summary(gp, strip)
                contribs.setdefault(pid, []).append({"from": nid, "step": k, "grad": sm})
                if keep_arrays:
                    exact_c.setdefault(pid, []).append(np.array(gp))
            outs.append({"to": pid, "input": pi, "grad": sm})
        step["out"] = outs
        steps.append(step)

    annotate.backward_steps(b, [g0], observe)

    leaf_list = []
    for leaf in leaves:
        lid = ids[leaf]
        leaf_list.append({"id": lid, "grad": finals.get(lid), "contribs": contribs.get(lid, [])})
    out = {
        "meta": {"root": ids[root_key], "rootNote": note, "nodes": len(order),
                 "leaves": len(leaves), "strip": strip, "small": SMALL},
        "nodes": nodes, "steps": steps, "leaves": leaf_list,
    }
    if keep_arrays:
        out["exact"] = {"grads": exact_g, "contribs": exact_c}
    return out


# ------------------------------------------------------------------------------- page
def _json_script(data: dict) -> str:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c")  # no "</script>" can end the tag early


class BackwardPage:
    """The stepper page as a string (``.html``); in Jupyter it displays itself inline (an
    ``<iframe srcdoc>``, so that its script and style stay apart from the notebook's)."""

    def __init__(self, text: str, title: str):
        self.html = text
        self.title = title

    def save(self, path) -> Path:
        path = Path(path)
        path.write_text(self.html, encoding="utf-8")
        return path

    def _repr_html_(self) -> str:
        return (f'<iframe title="{html.escape(self.title)}" style="width:100%;height:760px;'
                f'border:1px solid #ccc" srcdoc="{html.escape(self.html, quote=True)}">'
                "</iframe>")

    def __repr__(self) -> str:
        return f"BackwardPage({self.title!r}, {len(self.html)} characters)"


def render_backward(tensor: Tensor, path: "str | Path | None" = None, params: "Any" = None, *,
                    gradient: "Tensor | np.ndarray | None" = None, title: str | None = None,
                    timeout: float | None = 60.0,
                    **draw_options: "Any") -> "Path | BackwardPage":
    """Write one self-contained HTML page that steps through the backward pass of ``tensor``.

    Args:
        tensor: the output; its graph must still exist (before ``backward()``, or after
            ``backward(retain_graph=True)``). It is not modified, nor is any ``.grad``.
        path: the HTML file to write; None returns a ``BackwardPage`` instead, which
            Jupyter displays inline (``page.save(path)`` writes it).
        params: a Module, a dict ``name -> Tensor`` or ``(name, Tensor)`` pairs naming leaves.
        gradient: the upstream gradient to start from (default: ones; for an output of
            several elements that is the gradient of ``output.sum()``, as the page says).
        title: the page's heading.
        timeout: seconds Graphviz may take to lay out the picture.
        draw_options: ``draw_graph`` options for the picture (``collapse``, ``rankdir``,
            ``show_data``, ``values``, ...). Past 2000 ops scopes collapse by themselves;
            past 6000 drawn nodes the page steps through the pass without a picture.

    Returns the path (or the page). Raises ``viz.GraphvizNotFoundError`` when Graphviz's
    ``dot`` is missing (it lays out the picture).
    """
    graph = Graph(tensor, params)
    collapse = draw_options.pop("collapse", None)
    if collapse is None and len(graph.order) > BIG_GRAPH:
        collapse = True
    graph.collapse(collapse)
    data = trace_backward(tensor, gradient=gradient, graph=graph)
    drawn = graph.drawn_count()
    svg = ""
    if drawn <= MAX_SVG_NODES:
        svg = svg_inline(draw_graph(graph, **draw_options).source, timeout)
    data["meta"]["svg"] = bool(svg)
    data["meta"]["collapsed"] = bool(graph.box_of)
    heading = title or f"Backward pass of {data['nodes'][data['meta']['root']]['label']}"
    data["meta"]["title"] = heading
    notes = [data["meta"]["rootNote"]]
    if graph.box_of:
        notes.append("Layers / norm calls are drawn as boxes; a box is highlighted while any "
                     "of its ops is processed.")
    if not svg:
        notes.append(f"The graph has {drawn} nodes to draw, too many to lay out: steps are "
                     "shown without the picture.")
    page = _PAGE
    for k, v in (("%%TITLE%%", html.escape(heading)),
                 ("%%NOTES%%", " ".join(html.escape(n) for n in notes)),
                 ("%%STYLE%%", _STYLE), ("%%SCRIPT%%", _SCRIPT)):
        page = page.replace(k, v)
    # the two big parts last, so that nothing inside them is ever taken for a placeholder
    head, rest = page.split("%%SVG%%")
    rest_a, rest_b = rest.split("%%DATA%%")
    result = BackwardPage(head + svg + rest_a + _json_script(data) + rest_b, heading)
    return result if path is None else result.save(path)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%%TITLE%%</title>
<style>%%STYLE%%</style>
</head>
<body>
<header>
  <h1>%%TITLE%%</h1>
  <p class="note">%%NOTES%% Numbers are shown to 5 significant digits.
  Keys: &larr; / &rarr; previous / next step, space play / pause, Home / End.</p>
  <div id="controls">
    <button id="first" title="first step (Home)">« first</button>
    <button id="prev" title="previous step (&larr;)">&#x25C0; prev</button>
    <button id="play" title="play / pause (space)">&#x25B6; play</button>
    <button id="next" title="next step (&rarr;)">next &#x25B6;</button>
    <button id="last" title="the end: leaf gradients (End)">last »</button>
    <input id="slider" type="range" min="0" max="0" value="0" aria-label="step">
    <span id="pos"></span>
    <label>speed <select id="speed">
      <option value="1">1/s</option><option value="3" selected>3/s</option>
      <option value="10">10/s</option><option value="50">50/s</option>
    </select></label>
    <span class="zoom">zoom
      <button id="zout" title="zoom out">&minus;</button>
      <button id="zfit" title="fit the width">fit</button>
      <button id="zin" title="zoom in">+</button></span>
  </div>
</header>
<main>
  <div id="graph">%%SVG%%</div>
  <aside>
    <section id="step"></section>
    <section id="leaves"></section>
  </aside>
</main>
<script type="application/json" id="backward-steps">%%DATA%%</script>
<script>%%SCRIPT%%</script>
</body>
</html>
"""

_STYLE = """
body { margin: 0; font: 14px/1.4 Helvetica, Arial, sans-serif; color: #222; }
header { padding: 8px 14px; border-bottom: 1px solid #ccc; background: #fafafa; }
h1 { font-size: 18px; margin: 0 0 4px; }
.note { margin: 0 0 6px; color: #555; font-size: 12px; }
#controls { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; }
#controls button { font-size: 13px; }
#slider { flex: 1 1 200px; }
#pos { min-width: 9em; font-variant-numeric: tabular-nums; }
.zoom { margin-left: 8px; color: #555; }
main { display: flex; height: calc(100vh - 110px); }
#graph { flex: 3 1 0; overflow: auto; border-right: 1px solid #ccc; }
aside { flex: 2 1 0; overflow: auto; padding: 8px 14px; }
h2 { font-size: 15px; margin: 10px 0 6px; }
h3 { font-size: 13px; margin: 10px 0 4px; color: #444; }
.muted { color: #888; }
.item { margin: 4px 0 8px; padding: 4px 6px; border-left: 3px solid #ddd; }
.item.meet { border-left-color: #e08214; }
.item.sum { border-left-color: #d62728; background: #fff6f0; }
.lbl { font-weight: bold; }
.stats { color: #444; font-size: 12px; }
table.vals { border-collapse: collapse; margin: 2px 0; font-size: 11px;
             font-variant-numeric: tabular-nums; }
table.vals td { border: 1px solid #fff; padding: 1px 4px; text-align: right; }
.strip { display: flex; margin: 2px 0; }
.strip span { width: 6px; height: 12px; }
/* graph highlighting: CSS overrides Graphviz's presentation attributes */
#graph g.node.done > :is(ellipse, polygon, path) { fill: #e6f2e1; }
#graph g.node.target > :is(ellipse, polygon, path) { stroke: #e08214; stroke-width: 3px; }
#graph g.node.cur > :is(ellipse, polygon, path) { fill: #ffe066; stroke: #d62728;
                                                  stroke-width: 3px; }
#graph g.node.leafdone > :is(ellipse, polygon, path) { stroke: #2ca02c; stroke-width: 3px; }
#graph g.edge.cur > path, #graph g.edge.cur > polygon { stroke: #d62728; stroke-width: 2.5px; }
#graph g.edge.cur > polygon { fill: #d62728; }
"""

_SCRIPT = r"""
"use strict";
(function () {
  // ---- data: the steps serialized by tinygrad_bn.viz.stepper-------------------------
  var D = JSON.parse(document.getElementById("backward-steps").textContent);
  var steps = D.steps, nodes = D.nodes, leaves = D.leaves, N = steps.length;
  var MANY_LEAVES = 40;  // above this, the leaf panel lists only the leaves of this step
  var $ = function (id) { return document.getElementById(id); };

  // ---- the SVG: Graphviz writes each node's DOT id in a <title> child --------------
  var svgNode = {}, edgesInto = {};
  document.querySelectorAll("#graph g.node").forEach(function (g) {
    var t = g.querySelector("title");
    if (t) svgNode[t.textContent] = g;
  });
  document.querySelectorAll("#graph g.edge").forEach(function (g) {
    var t = g.querySelector("title");
    if (!t) return;
    var dst = t.textContent.split("->")[1];
    (edgesInto[dst] = edgesInto[dst] || []).push(g);
  });
  var elemCache = {};
  function elems(id) {  // the SVG <g> elements drawn for a node or leaf id (cached)
    return elemCache[id] || (elemCache[id] = nodes[id].svg
      .map(function (s) { return svgNode[s]; }).filter(function (e) { return e; }));
  }

  // how many gradients each node / leaf receives in all, for "contribution m of M"
  var total = {};
  steps.forEach(function (s) {
    s.out.forEach(function (o) { if (o.grad) total[o.to] = (total[o.to] || 0) + 1; });
  });

  // ---- formatting ---------------------------------------------------------------------
  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c];
    });
  }
  function num(v) {
    if (typeof v === "string") return v;          // NaN, Infinity, -Infinity
    if (v === 0) return "0";
    var a = Math.abs(v);
    return (a >= 1e4 || a < 1e-3) ? v.toExponential(4) : String(Number(v.toPrecision(5)));
  }
  function color(v, m) {  // diverging: blue negative, white zero, red positive
    v = Number(v);
    if (!isFinite(v)) return "#000";
    var t = m > 0 ? Math.max(-1, Math.min(1, v / m)) : 0;
    var c = t < 0 ? [33, 102, 172] : [178, 24, 43], k = Math.abs(t);
    return "rgb(" + c.map(function (x) { return Math.round(255 + (x - 255) * k); }) + ")";
  }
  function maxAbs(vals) {
    return vals.reduce(function (m, v) {
      v = Math.abs(Number(v)); return isFinite(v) && v > m ? v : m; }, 0);
  }
  function shape(s) { return "(" + s.join(", ") + (s.length === 1 ? "," : "") + ")"; }
  function label(id) {
    var n = nodes[id];
    return '<span class="lbl">' + esc(n.label) + "</span>" +
      (n.kind === "op" && n.label !== n.op ? " (" + esc(n.op) + ")" : "");
  }
  function summary(s) {  // one gradient: its values, or statistics and a heat strip
    if (!s) return '<div class="muted">no gradient</div>';
    var h = '<div class="stats">' + shape(s.shape) + " " + esc(s.dtype) +
      ", &#x2016;g&#x2016; = " + num(s.norm);
    if (s.values) {  // small: a table, one row per last-axis slice
      var m = maxAbs(s.values), w = s.shape.length ? s.shape[s.shape.length - 1] : 1;
      h += '</div><table class="vals">';
      for (var i = 0; i < s.values.length; i += Math.max(w, 1)) {
        h += "<tr>" + s.values.slice(i, i + Math.max(w, 1)).map(function (v) {
          return '<td style="background:' + color(v, m) + '">' + num(v) + "</td>";
        }).join("") + "</tr>";
      }
      return h + "</table>";
    }
    h += ", min " + num(s.min) + ", max " + num(s.max) + ", mean " + num(s.mean) + "</div>";
    if (s.strip) {
      var mm = maxAbs(s.strip);
      var size = s.shape.reduce(function (a, b) { return a * b; }, 1);
      h += '<div class="strip" title="' + (s.strip.length < size ? s.strip.length + " of " +
        size + " values, evenly spaced" : "all " + size + " values") + '">' +
        s.strip.map(function (v) {
          return '<span style="background:' + color(v, mm) + '" title="' + num(v) + '"></span>';
        }).join("") + "</div>";
    }
    return h;
  }
  function contributions(list, sum, what) {  // where several paths meet
    var h = "<h3>" + list.length + " contributions, summed " + what + "</h3>";
    list.forEach(function (c, i) {
      h += '<div class="item meet">' + (i + 1) + ". from " + label(c.from) +
        ' <span class="muted">(step ' + (c.step + 1) + ")</span>" + summary(c.grad) + "</div>";
    });
    return h + '<div class="item sum">sum' + summary(sum) + "</div>";
  }

  // ---- one position: 0..N-1 are the steps, N is "done" ---------------------------------
  var k = 0, timer = null, lastEdges = [];
  function showInPanel(el) {  // scroll the graph panel only (scrollIntoView would also
    // scroll whatever page embeds this one in a frame)
    var box = $("graph"), r = el.getBoundingClientRect(), p = box.getBoundingClientRect();
    if (r.left < p.left) box.scrollLeft -= p.left - r.left + 20;
    else if (r.right > p.right) box.scrollLeft += r.right - p.right + 20;
    if (r.top < p.top) box.scrollTop -= p.top - r.top + 20;
    else if (r.bottom > p.bottom) box.scrollTop += r.bottom - p.bottom + 20;
  }
  function render(pos) {
    k = Math.max(0, Math.min(N, pos));
    $("slider").value = k;
    $("pos").textContent = k < N ? "step " + (k + 1) + " / " + N : "done (" + N + " steps)";
    var s = steps[k];  // undefined at the end
    // graph: processed nodes, the current one, the inputs it sends to
    steps.forEach(function (t, i) {
      elems(t.node).forEach(function (e) {
        e.classList.toggle("done", i < k);
        e.classList.toggle("cur", i === k);
        e.classList.remove("target");
      });
    });
    lastEdges.forEach(function (e) { e.classList.remove("cur"); });
    lastEdges = [];
    if (s) {
      s.out.forEach(function (o) {
        if (o.grad) elems(o.to).forEach(function (e) { e.classList.add("target"); });
      });
      nodes[s.node].svg.forEach(function (sid) {  // edges into the op: gradient goes back
        (edgesInto[sid] || []).forEach(function (e) { e.classList.add("cur"); lastEdges.push(e); });
      });
      var cur = elems(s.node)[0];
      if (cur) showInPanel(cur);
    }
    // panel: the current step
    var h;
    if (s) {
      var n = nodes[s.node];
      h = "<h2>Step " + (k + 1) + ": backward of " + esc(s.op) + "</h2>" +
        "<div>node " + label(s.node) + " " + shape(n.shape) +
        (n.scope ? ' <span class="muted">in ' + esc(n.scope) + "</span>" : "") +
        (n.root ? ' <span class="muted">(the output)</span>' : "") + "</div>";
      h += s.contribs ? contributions(s.contribs, s.sum, "into the gradient it receives")
        : "<h3>gradient received</h3>" + '<div class="item">' + summary(s.in) + "</div>";
      h += "<h3>gradients sent to its inputs</h3>";
      if (!s.out.length) h += '<div class="muted">none (no input needs a gradient)</div>';
      s.out.forEach(function (o) {
        var m = 0;  // which contribution to that input this is
        for (var i = 0; i <= k; i++) steps[i].out.forEach(function (p) {
          if (p.to === o.to && p.grad) m++;
        });
        h += '<div class="item">input ' + o.input + " &rarr; " + label(o.to) +
          (o.grad && total[o.to] > 1 ? ' <span class="muted">(contribution ' + m + " of " +
            total[o.to] + ")</span>" : "") + summary(o.grad) + "</div>";
      });
    } else {
      h = "<h2>Done: every leaf has its gradient</h2><div class=\"muted\">These are the " +
        ".grad values backward() would accumulate (the page did not touch any .grad).</div>";
    }
    $("step").innerHTML = h;
    // panel: the leaves, with what they have received so far
    // (with many leaves, only those this step sends to, until the end)
    var many = leaves.length > MANY_LEAVES && k < N, nComplete = 0;
    var lh = "";
    leaves.forEach(function (l) {
      // step k's gradients are already sent when step k is shown
      var got = l.contribs.filter(function (c) { return c.step <= k; });
      var complete = got.length === l.contribs.length;
      if (complete && l.grad) nComplete++;
      elems(l.id).forEach(function (e) { e.classList.toggle("leafdone", complete && !!l.grad); });
      if (many && !got.some(function (c) { return c.step === k; })) return;
      lh += '<div class="item">' + label(l.id) + " " + shape(nodes[l.id].shape) +
        ' <span class="muted">' + got.length + " of " + l.contribs.length +
        " contribution(s) received</span>";
      if (!l.grad) lh += '<div class="muted">no gradient reaches this leaf</div>';
      else if (complete && l.contribs.length > 1) lh += contributions(l.contribs, l.grad, "into .grad");
      else if (complete) lh += "<div>.grad</div>" + summary(l.grad);
      lh += "</div>";
    });
    $("leaves").innerHTML = "<h2>Leaves</h2><div class=\"muted\">" + nComplete + " of " +
      leaves.length + " leaf gradients complete" + (many ? "; those this step sends to:" : "") +
      "</div>" + lh;
  }

  // ---- controls -------------------------------------------------------------------------
  function stop() { if (timer) { clearInterval(timer); timer = null; } $("play").innerHTML = "&#x25B6; play"; }
  function play() {
    if (timer) { stop(); return; }
    if (k >= N) render(0);
    $("play").innerHTML = "&#x23F8; pause";
    timer = setInterval(function () {
      if (k >= N) stop(); else render(k + 1);
    }, 1000 / Number($("speed").value));
  }
  $("slider").max = N;
  $("slider").addEventListener("input", function () { stop(); render(Number(this.value)); });
  $("prev").onclick = function () { stop(); render(k - 1); };
  $("next").onclick = function () { stop(); render(k + 1); };
  $("first").onclick = function () { stop(); render(0); };
  $("last").onclick = function () { stop(); render(N); };
  $("play").onclick = play;
  document.querySelectorAll("#controls button").forEach(function (b) {
    b.addEventListener("click", function () { b.blur(); });  // space stays "play"
  });
  $("speed").onchange = function () { if (timer) { stop(); play(); } };
  document.addEventListener("keydown", function (e) {
    if (e.target.tagName === "SELECT") return;
    if (e.key === "ArrowLeft") { stop(); render(k - 1); }
    else if (e.key === "ArrowRight") { stop(); render(k + 1); }
    else if (e.key === " ") { play(); }
    else if (e.key === "Home") { stop(); render(0); }
    else if (e.key === "End") { stop(); render(N); }
    else return;
    e.preventDefault();  // the slider and the page do not also move
  });

  // zoom: scale the SVG's own width / height
  var svg = document.querySelector("#graph svg"), zoom = 1, w0 = 0, h0 = 0;
  if (svg) {
    w0 = parseFloat(svg.getAttribute("width")); h0 = parseFloat(svg.getAttribute("height"));
  }
  function setZoom(z) {
    if (!svg) return;
    zoom = Math.max(0.05, Math.min(8, z));
    svg.setAttribute("width", w0 * zoom + "pt"); svg.setAttribute("height", h0 * zoom + "pt");
  }
  $("zin").onclick = function () { setZoom(zoom * 1.25); };
  $("zout").onclick = function () { setZoom(zoom / 1.25); };
  $("zfit").onclick = function () {
    if (svg) setZoom($("graph").clientWidth / (w0 * 4 / 3));  // pt -> px
  };
  render(0);
})();
"""
