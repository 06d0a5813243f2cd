"""DOT output: the graph model with its annotations as Graphviz source, and the legend.

``draw_graph`` is the public entrance; ``Drawing`` holds one call's choices (which values
get a node, colours, gradient scale) and writes the DOT body from a ``model.Graph``.
"""
from __future__ import annotations

import functools
import html
import math
from collections import Counter
from typing import Any, Callable, Iterable

import numpy as np

from ..core.tensor import Tensor
from . import annotate
from .model import Graph

#: Fill colours of the node kinds (each picture's legend lists those it uses).
COLORS = {
    "op": "#e8e8e8",
    "value": "#ffffff",
    "input": "#cfe2f3",
    "param": "#ddd3f0",
    "saved": "#fbd7a8",
    "output": "#c9e7bf",
    "box": "#fff4c2",
}
# Borders: a darker shade of each kind. Under show_grad the fill shows the gradient and the
# border alone tells the kind.
_BORDERS = {
    "op": "#8c8c8c",
    "value": "#7f7f7f",
    "input": "#3d78b5",
    "param": "#6a4fb0",
    "saved": "#d9822b",
    "output": "#3f8f2f",
    "box": "#b8962e",
}
_KIND_TEXT = {
    "input": "input (leaf)",
    "param": "parameter",
    "value": "intermediate value",
    "saved": "saved for backward",
    "output": "output",
    "op": "op",
    "box": "collapsed scope",
}
_LEGEND_ORDER = ("input", "param", "value", "saved", "output", "op", "box")
# cluster fill, border, style per scope kind
_CLUSTER_STYLE = {
    "module": ("#f5f7fa", "#8a96a3", "rounded,filled"),
    "norm": ("#fffbea", "#c9a227", "rounded,dashed,filled"),
    "loss": ("#fdf3f3", "#c48b8b", "rounded,dashed,filled"),
}
_CLUSTER_DEFAULT = ("#f7f7f7", "#a0a0a0", "rounded,filled")

# Gradient magnitude scale: ColorBrewer RdYlBu, reversed (blue small, red large).
_GRAD_FILL = ["#4575b4", "#74add1", "#abd9e9", "#e0f3f8", "#ffffbf", "#fee090", "#fdae61",
              "#f46d43", "#d73027"]
_GRAD_ZERO = "#cfcfcf"
_FONT = "Helvetica,Arial,sans-serif"
RANKDIRS = ("LR", "TB", "RL", "BT")
_VALUES = ("auto", "all")

def _fmt_shape(shape) -> str:
    shape = tuple(int(s) for s in shape)
    return str(shape) if shape else "scalar"


def _fmt_num(v: float) -> str:
    return "nan" if v is None or math.isnan(v) else f"{v:.3g}"


def _fmt_norm(v: float) -> str:
    if v == 0 or not math.isfinite(v):
        return str(v) if v != 0 else "0"
    return f"{v:.1e}"


def _esc(s: Any) -> str:
    return html.escape(str(s), quote=False)


def _quote(s) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class _Html(str):
    """An HTML-like label: written between angle brackets, not quoted."""


def _attrs(a: dict) -> str:
    parts = []
    for k, v in a.items():
        if v is None:
            continue
        if isinstance(v, _Html):
            parts.append(f"{k}=<{v}>")
        elif isinstance(v, (int, float)):
            parts.append(f"{k}={v}")
        else:
            parts.append(f"{k}={_quote(v)}")
    return " [" + " ".join(parts) + "]" if parts else ""


def _norm(g) -> float:
    """L2 norm of a gradient, accumulated in float64."""
    a = np.asarray(g, dtype=np.float64)
    return float(np.sqrt(np.vdot(a, a).real)) if a.size else 0.0


def _mix(c1: str, c2: str, t: float) -> str:
    a = [int(c1[i:i + 2], 16) for i in (1, 3, 5)]
    b = [int(c2[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(a, b))


_LEVELS = 256  # colours of the gradient scale are quantized, and each computed once


@functools.lru_cache(maxsize=None)
def _ramp_level(level: int, darken: float = 0.0) -> str:
    t = level / (_LEVELS - 1) * (len(_GRAD_FILL) - 1)
    i = min(int(t), len(_GRAD_FILL) - 2)
    c = _mix(_GRAD_FILL[i], _GRAD_FILL[i + 1], t - i)
    return _mix(c, "#000000", darken) if darken else c


def _ramp(t: float, darken: float = 0.0) -> str:
    """The colour at ``t`` in [0, 1] of the gradient scale (blue, pale yellow, red)."""
    return _ramp_level(round(min(max(t, 0.0), 1.0) * (_LEVELS - 1)), darken)


class _GradScale:
    """Gradient norms to colours, log scale: centred on the median, at least 4 decades."""

    def __init__(self, norms: Iterable[float], grad_range=None):
        logs = [math.log10(n) for n in norms if n > 0 and math.isfinite(n)]
        if grad_range is not None:
            try:
                lo, hi = (float(v) for v in grad_range)
            except (TypeError, ValueError):
                raise ValueError("draw_graph: grad_range must be (low, high) exponents of 10, "
                                 f"got {grad_range!r}") from None
            if not hi > lo:
                raise ValueError(f"draw_graph: grad_range must be (low, high) with low < high, "
                                 f"got {grad_range!r}")
        elif logs:
            c = round(float(np.median(logs)))
            half = max(2, math.ceil(max(c - min(logs), max(logs) - c)))
            lo, hi = c - half, c + half
        else:
            lo, hi = -2.0, 2.0
        self.lo, self.hi = lo, hi

    def t(self, norm: float) -> float:
        if not math.isfinite(norm):
            return 1.0
        return (math.log10(norm) - self.lo) / (self.hi - self.lo)

    def fill(self, norm):
        if norm is None:
            return "#ffffff"
        if norm == 0:
            return _GRAD_ZERO
        return _ramp(self.t(norm))

    def line(self, norm) -> str:
        if norm is None or norm == 0:
            return "#a0a0a0"
        return _ramp(self.t(norm), 0.3)

    def text(self, norm) -> str:
        if norm is None or norm == 0:
            return "#707070"
        return _ramp(self.t(norm), 0.5)

    def width(self, norm) -> float:
        if norm is None or norm == 0:
            return 0.8
        return round(0.8 + 2.4 * min(max(self.t(norm), 0.0), 1.0), 2)



def draw_graph(root: "Tensor | list | dict | Graph", params: "Any" = None,
               show_data: bool = False, show_grad: bool = False, rankdir: str = "LR", *,
               collapse: "bool | str | list | Callable | None" = None, values: str = "auto",
               show_saved: bool = True, legend: bool = True,
               grad_range: "tuple[float, float] | None" = None,
               grad_outputs: "Tensor | np.ndarray | list | None" = None,
               title: str | None = None) -> "graphviz.Digraph":
    """Draw the computation graph behind ``root`` as a ``graphviz.Digraph``.

    Args:
        root: the output Tensor, a list of Tensors, or a dict ``name -> Tensor`` (several
            roots share one picture; the dict keys name them); or a ``viz.Graph`` already
            walked.
        params: a Module (its ``named_parameters()``), a dict ``name -> Tensor`` or
            ``(name, Tensor)`` pairs: leaves found there are drawn as parameters with those
            names. Other leaves show their own ``name``; ``nn.Parameter`` leaves are drawn
            as parameters even without a name.
        show_data: add the mean and std of each value whose data is known: leaves, outputs,
            values saved for backward, and every value computed inside ``with trace():``.
        show_grad: annotate each value with the L2 norm of its gradient, and fill it by that
            norm on a log scale, so vanishing or exploding gradients stand out. The
            gradients are those of the sum of the roots (for a scalar loss: what
            ``loss.backward()`` accumulates), computed here from the graph, which must still
            be there (draw before ``backward()`` or use ``backward(retain_graph=True)``).
            An edge leaving a value used more than once is labelled with the gradient that
            this use sends back; every edge is coloured and sized by its gradient.
        rankdir: direction of the data flow: "LR", "TB", "RL" or "BT".
        collapse: draw whole scopes as one box each, for large graphs: ``True`` (each scope
            that holds no module, e.g. every layer of an MLP, every norm or loss call
            outside modules), a label pattern (``"BatchNorm1d*"``, fnmatch style), a scope
            kind (``"module"``, ``"norm"``, ``"loss"``), a list of these, or a function
            ``Scope -> bool``. The outermost matching scope becomes the box.
        values: ``"auto"`` draws a node for leaves, outputs, named and saved values (all
            values when ``show_data`` or ``show_grad``), and shows any other intermediate
            as its shape on the edge between two ops; ``"all"`` draws a node for every value.
        show_saved: mark what backward keeps in memory: values saved by the ops that use
            them (orange), and arrays a custom op saved that are no value of the graph
            (small dashed nodes hanging off that op).
        legend: add a legend of the colours (and of the gradient scale).
        grad_range: ``(low, high)``: the exponents of 10 that the gradient colours span
            (default: centred on the median gradient norm, at least 4 decades). Fix it to
            compare pictures.
        grad_outputs: the gradient each root is seeded with for ``show_grad`` (a Tensor or
            ndarray shaped like the root, or a list with one per root, None for ones), as
            in ``tinygrad_bn.grad``; by default ones, i.e. the gradients of the roots' sum.
        title: a caption under the picture.

    Returns:
        a ``graphviz.Digraph``: ``.source`` is the DOT text (no Graphviz program needed); in
        Jupyter it displays itself as SVG (that needs ``dot``); ``render_graph`` writes files.

    Raises:
        TypeError: a root or a parameter that is not a Tensor.
        ValueError: a root that does not require grad, a bad ``rankdir`` / ``values`` /
            ``grad_range``, or a ``collapse`` pattern that matches no scope.
        RuntimeError: the graph was freed by ``backward()`` without ``retain_graph=True``.

    Example::

        x = Tensor.randn(8, 3, requires_grad=True, name="x")
        y = F.batch_norm(x, None, None, training=True)
        draw_graph(y)    # x -> mean -> μ -> sub -> pow -> mean -> σ² -> ... -> x̂
    """
    if rankdir not in RANKDIRS:
        raise ValueError(f"draw_graph: rankdir must be one of {RANKDIRS}, got {rankdir!r}")
    if values not in _VALUES:
        raise ValueError(f"draw_graph: values must be one of {_VALUES}, got {values!r}")
    if grad_range is not None and not show_grad:
        raise ValueError("draw_graph: grad_range needs show_grad=True")
    if grad_outputs is not None and not show_grad:
        raise ValueError("draw_graph: grad_outputs needs show_grad=True")
    graphviz = _graphviz()
    graph = root if isinstance(root, Graph) else Graph(root, params)
    graph.collapse(collapse)
    d = Drawing(graph, show_data=show_data, show_grad=show_grad, values=values,
                show_saved=show_saved)
    if show_grad:
        d.add_gradients(annotate.seeds(graph, grad_outputs), grad_range)
    body = d.emit()
    if legend:
        body.append(_legend(d.kinds_used, d.scale))
    graph_attr = {"rankdir": rankdir, "fontname": _FONT, "nodesep": "0.22",
                  "ranksep": "0.3", "bgcolor": "white", "pad": "0.2"}
    if title:
        graph_attr.update(label=title, labelloc="b", fontsize="13")
    return graphviz.Digraph(
        "tinygrad_bn",
        graph_attr=graph_attr,
        node_attr={"shape": "ellipse", "style": "filled", "fillcolor": COLORS["op"],
                   "color": _BORDERS["op"], "fontname": _FONT, "fontsize": "11",
                   "height": "0.3", "margin": "0.06,0.03"},
        edge_attr={"color": "#707070", "arrowsize": "0.6", "fontname": _FONT,
                   "fontsize": "9", "fontcolor": "#606060"},
        body=body,
    )


def _graphviz():
    """The ``graphviz`` Python package (it builds DOT source; rendering needs ``dot``)."""
    try:
        import graphviz
    except ImportError:
        raise ImportError(
            "drawing graphs needs the graphviz Python package: pip install graphviz "
            "(and Graphviz's `dot` program to render them)"
        ) from None
    return graphviz


class Drawing:
    """One ``draw_graph`` call: the graph, its annotations and the choices of what to show."""

    def __init__(self, graph: Graph, *, show_data: bool, show_grad: bool, values: str,
                 show_saved: bool):
        self.graph = graph
        self.show_data = show_data
        self.show_grad = show_grad
        self.every_value = show_data or show_grad or values == "all"
        self.saved, self.arrays, self.extra_saved = annotate.saved_values(graph)
        if not show_saved:
            self.saved, self.extra_saved = set(), []
        self.grads: dict = {}  # key -> gradient norm
        self.edge_norm: dict = {}  # (consumer node, input index) -> norm
        self.box_edge: dict = {}  # (box scope, input) -> norm
        self.scale = None
        self.kinds_used: set = set()

    def add_gradients(self, root_grads: list, grad_range=None) -> None:
        """Gradient norms of every value and edge (edges into a box: summed per input)."""
        box_of = self.graph.box_of
        grads, edges = annotate.gradients(self.graph, root_grads)
        box_sum: dict = {}
        for (node, i), g in edges.items():
            box = box_of.get(node)
            p = node.parents[i]
            if box is None:
                self.edge_norm[(node, i)] = _norm(g)
            elif isinstance(p, Tensor) or box_of.get(p) is not box:
                prev = box_sum.get((box, p))
                box_sum[(box, p)] = g if prev is None else prev + g
        self.grads = {k: _norm(g) for k, g in grads.items()}
        self.box_edge = {k: _norm(g) for k, g in box_sum.items()}
        self.scale = _GradScale(list(self.grads.values()) + list(self.edge_norm.values()),
                                grad_range)

    # -- labels --------------------------------------------------------------------
    def value_attrs(self, key, name, shape, dtype, kind: str) -> dict:
        """Attributes of a value node: label (name, shape, dtype, data, gradient), colours."""
        fill, border, pen, style = COLORS[kind], _BORDERS[kind], None, "rounded,filled"
        if key in self.saved:
            if kind == "value":
                self.kinds_used.add("saved")
                fill, border = COLORS["saved"], _BORDERS["saved"]
            elif not self.show_grad:  # under show_grad the border tells the kind
                self.kinds_used.add("saved")
                border, pen = _BORDERS["saved"], 2.0
        self.kinds_used.add(kind)
        fontcolor, grey, blue = None, "#505050", "#1d4f7a"
        n = None
        if self.show_grad:
            n = self.grads.get(key)
            fill = self.scale.fill(n)
            if n is not None and n > 0 and not 0.15 <= self.scale.t(n) <= 0.85:
                fontcolor, grey, blue = "#ffffff", "#e6e6e6", "#e6e6e6"  # dark fills
            if kind != "value" or key in self.saved:
                pen = 2.4
            if n is None:
                style = "rounded,filled,dashed"
        lines = []
        if name:
            lines.append(f"<b>{_esc(name)}</b>")
        lines.append(f'<font point-size="9" color="{grey}">{_fmt_shape(shape)} {dtype}</font>')
        if self.show_data:
            st = annotate.stats_of(key) if not isinstance(key, Tensor) else None
            if st is None and key in self.arrays:
                st = annotate.Stats(self.arrays[key])
            if st is not None:
                lines.append(f'<font point-size="9" color="{blue}">mean {_fmt_num(st.mean)}'
                             f"  std {_fmt_num(st.std)}</font>")
        if self.show_grad:
            txt = "no gradient" if n is None else f"‖∇‖ {_fmt_norm(n)}"
            lines.append(f'<font point-size="9"><b>{txt}</b></font>')
        return {"shape": "box", "style": style, "fillcolor": fill, "color": border,
                "penwidth": pen, "fontcolor": fontcolor, "label": _Html("<br/>".join(lines))}

    def has_value_node(self, node, exported: set) -> bool:
        if node in self.graph.root_name:
            return True
        if node in self.graph.box_of and node not in exported:
            return False
        return self.every_value or bool(node.out_name) or node in self.saved

    # -- DOT text ------------------------------------------------------------------
    def emit(self) -> list:
        order, index, box_of = self.graph.order, self.graph.index, self.graph.box_of
        members: dict = {}  # drawn scope (None: top level) -> [lines]

        def put(scope, line):
            lst = members.get(scope)
            if lst is None:
                members[scope] = [line]
            else:
                lst.append(line)

        # who uses what: exported values (leave a box), where each parameter is used
        exported: set = set()
        leaf_places: dict = {}
        for node in order:
            box = box_of.get(node)
            place = None
            for p in node.parents:
                if p is None:
                    continue
                if isinstance(p, Tensor):
                    if place is None:
                        place = self.graph.display_scope(node)
                    leaf_places.setdefault(p, set()).add(place)
                elif p in box_of and box_of[p] is not box:
                    exported.add(p)
        value_node = {node: self.has_value_node(node, exported) for node in order}

        # leaves
        for leaf in self.graph.leaves:
            kind, name = self.graph.kind_of_leaf(leaf)
            where = None
            if kind == "param":
                places = leaf_places.get(leaf, ())
                if len(places) == 1:
                    where = next(iter(places))
            a = self.value_attrs(leaf, name, leaf.shape, leaf.dtype, kind)
            put(where, f"\tx{self.graph.leaf_index[leaf]}{_attrs(a)}\n")

        # ops, their output values, boxes
        op_cache: dict = {}
        boxes: dict = {}  # box scope -> [id, Counter of op names]
        plain_value: dict = {}  # (name, shape, dtype, saved) -> attrs text (no data/grad)
        for node in order:
            i = index[node]
            box = box_of.get(node)
            if box is None:
                opname = node.name
                detail = node.describe()
                text = op_cache.get((opname, detail))
                if text is None:
                    label = f"<b>{_esc(opname)}</b>"
                    if detail:
                        label += f'<br/><font point-size="9" color="#505050">{_esc(detail)}</font>'
                    text = op_cache[(opname, detail)] = _attrs({"label": _Html(label)})
                put(node.scope, f"\top{i}{text}\n")
            else:
                if box not in boxes:
                    boxes[box] = [f"box{len(boxes)}", Counter()]
                boxes[box][1][node.name] += 1
            if value_node[node]:
                if node in self.graph.root_name:
                    kind, name = "output", self.graph.root_name[node]
                else:
                    kind, name = "value", node.out_name
                if kind == "value" and not (self.show_data or self.show_grad):
                    ck = (name, node.shape, node.dtype, node in self.saved)
                    text = plain_value.get(ck)
                    if text is None:
                        text = plain_value[ck] = _attrs(
                            self.value_attrs(node, name, node.shape, node.dtype, kind))
                else:
                    text = _attrs(self.value_attrs(node, name, node.shape, node.dtype, kind))
                put(self.graph.display_scope(node), f"\tv{i}{text}\n")
        if op_cache:
            self.kinds_used.add("op")
        for box, (bid, ops) in boxes.items():
            n = sum(ops.values())
            parts = [f"{k}×{c}" if c > 1 else k for k, c in ops.most_common()]
            rows = [" ".join(parts[j:j + 3]) for j in range(0, len(parts), 3)]
            label = (f"<b>{_esc(box.label)}</b><br/>"
                     f'<font point-size="9" color="#505050">{n} op{"s" if n != 1 else ""}: '
                     + "<br/>".join(_esc(r) for r in rows) + "</font>")
            self.kinds_used.add("box")
            a = {"shape": "box3d", "style": "filled", "fillcolor": COLORS["box"],
                 "margin": "0.15,0.06", "color": _BORDERS["box"], "label": _Html(label)}
            put(box.parent, f"\t{bid}{_attrs(a)}\n")
        extra_edges = []
        for j, (node, name, arr) in enumerate(self.extra_saved):
            if node in box_of:
                continue
            lines = [f"<b>{_esc(name or 'saved')}</b>",
                     f'<font point-size="9" color="#505050">{_fmt_shape(arr.shape)} '
                     f"{arr.dtype}</font>"]
            if self.show_data:
                st = annotate.Stats(arr)
                lines.append(f'<font point-size="9" color="#1d4f7a">mean {_fmt_num(st.mean)}'
                             f"  std {_fmt_num(st.std)}</font>")
            self.kinds_used.add("saved")
            a = {"shape": "box", "style": "rounded,filled,dashed", "fillcolor": COLORS["saved"],
                 "color": _BORDERS["saved"], "label": _Html("<br/>".join(lines))}
            put(node.scope, f"\ts{j}{_attrs(a)}\n")
            extra_edges.append(f'\top{index[node]} -> s{j} [style=dashed arrowhead=none '
                               f'color="{_BORDERS["saved"]}"]\n')

        # edges
        def disp_id(node) -> str:
            box = box_of.get(node)
            return f"op{index[node]}" if box is None else boxes[box][0]

        edges: list = []  # [src, dst, attrs, gradient norm or None, is an input edge]
        seen: set = set()
        show_grad = self.show_grad
        for node in order:
            i = index[node]
            box = box_of.get(node)
            dst = disp_id(node)
            for pi, p in enumerate(node.parents):
                if p is None:
                    continue
                label = None
                if isinstance(p, Tensor):
                    src = f"x{self.graph.leaf_index[p]}"
                else:
                    if box is not None and box_of.get(p) is box:
                        continue  # inside the box
                    if value_node[p]:
                        src = f"v{index[p]}"
                    else:
                        src, label = disp_id(p), _fmt_shape(p.shape)
                norm = None
                if box is not None:
                    if (src, dst) in seen:
                        continue
                    seen.add((src, dst))
                    if show_grad:
                        norm = self.box_edge.get((box, p))
                elif show_grad:
                    norm = self.edge_norm.get((node, pi))
                edges.append([src, dst, {"label": label} if label else {}, norm, True])
            if value_node[node]:
                src = disp_id(node)
                if box is None or (src, i) not in seen:
                    seen.add((src, i))
                    edges.append([src, f"v{i}", {}, self.grads.get(node), False])
        out_degree = Counter(e[0] for e in edges if e[4])
        body = members.get(None, [])
        lines = []
        for src, dst, a, norm, is_input in edges:
            if show_grad:
                a["color"] = self.scale.line(norm)
                a["penwidth"] = self.scale.width(norm)
                if is_input and norm is not None and out_degree[src] > 1:
                    a["label"] = _fmt_norm(norm)
                    a["fontcolor"] = self.scale.text(norm)
            lines.append(f"\t{src} -> {dst}{_attrs(a)}\n" if a else f"\t{src} -> {dst}\n")

        # clusters, nested by walking the scope tree with a stack (no recursion)
        children: dict = {}
        for s in self.graph.scopes:
            if self.graph.box_of_scope.get(s) is None:
                children.setdefault(s.parent, []).append(s)
        stack = [(s, 1, False) for s in reversed(children.get(None, []))]
        n_cluster = 0
        while stack:
            s, depth, close = stack.pop()
            tabs = "\t" * depth
            if close:
                body.append(f"{tabs}}}\n")
                continue
            fill, border, style = _CLUSTER_STYLE.get(s.kind, _CLUSTER_DEFAULT)
            n_cluster += 1
            a = {"label": _Html(f"<b>{_esc(s.label)}</b>"), "style": style, "fillcolor": fill,
                 "color": border, "fontsize": 11, "labeljust": "l", "labelloc": "t", "margin": 10}
            body.append(f"{tabs}subgraph cluster_{n_cluster} {{\n{tabs}\tgraph{_attrs(a)}\n")
            body.extend(tabs + line for line in members.get(s, ()))
            stack.append((s, depth, True))
            stack.extend((c, depth + 1, False) for c in reversed(children.get(s, ())))
        body.extend(lines)
        body.extend(extra_edges)
        return body



def _legend(kinds_used: set, scale) -> str:
    """Plaintext nodes holding tables: the node kinds used, and the gradient scale."""
    rows = ['<tr><td colspan="2" border="0" align="left"><b>legend</b></td></tr>']
    for kind in _LEGEND_ORDER:
        if kind not in kinds_used:
            continue
        fill = COLORS[kind]
        if scale is not None and kind in ("input", "param", "value", "saved", "output"):
            fill = "#ffffff"  # the fill shows the gradient; the border tells the kind
        rows.append(f'<tr><td bgcolor="{fill}" color="{_BORDERS[kind]}" width="22" '
                    f'height="12"></td><td border="0" align="left">{_KIND_TEXT[kind]}</td></tr>')
    if scale is not None:
        rows.append(f'<tr><td bgcolor="{_GRAD_ZERO}" color="#a0a0a0" width="22" height="12">'
                    '</td><td border="0" align="left">zero gradient</td></tr>')
    text = ('\tlegend [shape=plaintext style="" fontsize=9 margin=0 label=<<table border="0" '
            'cellborder="1" cellspacing="3" cellpadding="1">' + "".join(rows) + "</table>>]\n")
    if scale is not None:
        n = int(round(scale.hi - scale.lo))
        step = max(1, math.ceil(n / 8))
        cells = []
        for e in range(math.floor(scale.lo), math.ceil(scale.hi) + 1, step):
            v = 10.0 ** e
            color = "#ffffff" if not 0.15 <= scale.t(v) <= 0.85 else "#000000"
            cells.append(f'<td bgcolor="{scale.fill(v)}" width="30" height="14">'
                         f'<font point-size="8" color="{color}">1e{e:+d}</font></td>')
        text += ('\tlegend_grad [shape=plaintext style="" fontsize=9 margin=0 label=<<table '
                 'border="0" cellborder="0" cellspacing="0" cellpadding="1"><tr><td colspan="'
                 f'{len(cells)}" align="left">fill: gradient norm ‖∇‖, log scale</td></tr>'
                 f'<tr>{"".join(cells)}</tr></table>>]\n\tlegend -> legend_grad [style=invis]\n')
    return text


