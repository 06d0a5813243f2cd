"""Computation graphs drawn with Graphviz: ``draw_graph``, ``render_graph``, ``trace``.

``draw_graph(y)`` walks the graph behind ``y`` and returns a ``graphviz.Digraph``. Data flows
along the arrows (left to right by default): value nodes (rounded boxes: name, shape, dtype)
feed op nodes (grey ellipses named by their op: ``mean``, ``sub``, ``matmul``, ...), whose
outputs are values again. The ops recorded inside a module call or a norm function are
grouped in a labelled cluster ("BatchNorm1d (bn1)", "batch_norm"), and any such group can be
collapsed into one box.

Colours: blue leaves (inputs that require grad), purple parameters (named from a module's
``named_parameters()``, as torchviz does), orange values that backward keeps in memory
("saved"), green outputs. With ``show_grad=True`` each value is filled by the size of its
gradient on a log scale (blue small, red large), so vanishing and exploding gradients show
in the picture.

Building the DOT source needs only the ``graphviz`` Python package (imported when a graph is
drawn); rendering needs Graphviz's ``dot`` program. Walking the graph never recurses, so a
graph of 100,000 ops can be drawn (as DOT source: no layout program makes a readable picture
of that many nodes; collapse scopes instead).
"""
from __future__ import annotations

import argparse
import fnmatch
import functools
import html
import math
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from .core.node import Function, Scope, no_grad
from .core.node import scope as _scope
from .core.tensor import Tensor

__all__ = [
    "draw_graph", "render_graph", "render_backward", "trace", "GraphvizNotFoundError",
    "COLORS", "add_graph_parser", "graph_main",
]

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
_RANKDIRS = ("LR", "TB", "RL", "BT")
_RENDER_FORMATS = ("svg", "png", "pdf")
_SOURCE_FORMATS = ("dot", "gv")
_VALUES = ("auto", "all")
_OP_SYMBOLS = {"add": "+", "sub": "−", "mul": "×", "div": "/", "pow": "^"}

_INSTALL_HINT = (
    "Graphviz's `dot` program was not found on PATH; it is needed to render graphs "
    "(draw_graph() builds the DOT source without it). Install Graphviz: "
    "`sudo apt-get install graphviz` (Debian/Ubuntu), `sudo dnf install graphviz` (Fedora), "
    "`brew install graphviz` (macOS), `conda install -c conda-forge graphviz`, or "
    "https://graphviz.org/download/ (Windows: add its bin folder to PATH). "
    "Or write the DOT source instead: a .dot path, or format='dot'."
)


class GraphvizNotFoundError(RuntimeError):
    """Rendering needs Graphviz's ``dot`` program and it is not on PATH."""


def _graphviz():
    try:
        import graphviz
    except ImportError:
        raise ImportError(
            "drawing graphs needs the graphviz Python package: pip install graphviz "
            "(and Graphviz's `dot` program to render them)"
        ) from None
    return graphviz


# ------------------------------------------------------------------------------ trace
class _Stats:
    """Mean and standard deviation of an array (float64 accumulation)."""

    __slots__ = ("mean", "std")

    def __init__(self, data):
        a = np.asarray(data)
        if a.size == 0 or a.dtype.kind not in "fiub":
            self.mean = self.std = float("nan")
        else:
            self.mean = float(np.mean(a, dtype=np.float64))
            self.std = float(np.std(a, dtype=np.float64))


class trace:
    """Record the mean and std of every value computed inside, for ``show_data=True``.

    The graph keeps only what backward needs, so most intermediate values are gone by the
    time a graph is drawn. Inside ``with trace():`` every recorded op also stores statistics
    of its output on its node (one extra pass over each output; no cost when no trace is
    open)::

        with viz.trace():
            loss = F.cross_entropy(model(x), y)
        draw_graph(loss, params=model, show_data=True)

    Without a trace, ``show_data`` still shows leaves, outputs and the values backward saved.
    A trace applies to the current thread; ``count`` is the number of ops recorded.
    """

    def __init__(self):
        self.count = 0

    def __enter__(self) -> "trace":
        self._cm = _scope("trace", kind="trace")
        s = self._cm.__enter__()
        s.record = self._record
        return self

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)

    def _record(self, node, data) -> None:
        node._viz_stats = _Stats(data)
        self.count += 1


# ----------------------------------------------------------------------- small helpers
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


def _clean(s):
    """``s`` or its nearest ancestor that is drawn (trace scopes are invisible)."""
    while s is not None and s.kind == "trace":
        s = s.parent
    return s


def _is_parameter(t: Tensor) -> bool:
    return any(c.__name__ == "Parameter" for c in type(t).__mro__)


def _key(t: Tensor):
    """The graph object a Tensor stands for: its node, or the leaf itself."""
    return t._ctx if t._ctx is not None else t


# ------------------------------------------------------------------------ graph walking
def _freed_error(node) -> RuntimeError:
    return RuntimeError(
        f"cannot draw the graph: the graph behind {type(node).__name__} was freed by "
        "backward(). Call backward(retain_graph=True) to keep it (or draw before backward)."
    )


def _walk(root_keys: list) -> tuple:
    """Nodes reachable from the roots (producers before consumers) and the leaves met.

    Iterative depth-first post-order: the depth of the graph does not matter.
    """
    order: list = []
    leaves: dict = {}
    seen: set = set()
    for r in root_keys:
        if isinstance(r, Tensor):
            leaves.setdefault(r, None)
            continue
        if r in seen:
            continue
        if r.parents is None:
            raise _freed_error(r)
        seen.add(r)
        stack = [(r, iter(r.parents))]
        while stack:
            node, it = stack[-1]
            for p in it:
                if p is None:
                    continue
                if isinstance(p, Tensor):
                    if p not in leaves:
                        leaves[p] = None
                elif p not in seen:
                    if p.parents is None:
                        raise _freed_error(p)
                    seen.add(p)
                    stack.append((p, iter(p.parents)))
                    break
            else:
                stack.pop()
                order.append(node)
    return order, list(leaves)


def _roots(root) -> list:
    """``[(name or None, Tensor)]`` from a Tensor, a sequence of Tensors or a dict."""
    if isinstance(root, Tensor):
        items = [(None, root)]
    elif isinstance(root, Mapping):
        items = [(str(k), v) for k, v in root.items()]
    elif isinstance(root, (list, tuple)):
        items = [(None, v) for v in root]
    else:
        raise TypeError(f"draw_graph: root must be a Tensor, a list of Tensors or a dict of "
                        f"them, got {type(root).__name__}")
    if not items:
        raise ValueError("draw_graph: no root Tensor given")
    for i, (name, t) in enumerate(items):
        what = f"root {name!r}" if name is not None else (
            "the root" if len(items) == 1 else f"root {i}")
        if not isinstance(t, Tensor):
            raise TypeError(f"draw_graph: {what} is a {type(t).__name__}, not a Tensor")
        if not t.requires_grad:
            raise ValueError(
                f"draw_graph: {what} (shape {t.shape}) does not require grad, so no graph was "
                "recorded for it (make an input requires_grad=True, and do not compute it "
                "under no_grad())"
            )
    return items


def _param_names(params) -> dict:
    """``id(tensor) -> name`` from a Module, a dict or ``(name, Tensor)`` pairs."""
    if params is None:
        return {}
    what = ("draw_graph: params must be a Module, a dict name -> Tensor or (name, Tensor) "
            "pairs")
    if hasattr(params, "named_parameters"):
        items = params.named_parameters()
    elif isinstance(params, Mapping):
        items = params.items()
    elif isinstance(params, Iterable) and not isinstance(params, (str, Tensor)):
        items = params
    else:
        raise TypeError(f"{what}, got {type(params).__name__}")
    names: dict = {}
    for item in items:
        try:
            name, t = item
        except (TypeError, ValueError):
            raise TypeError(f"{what}; got the item {item!r}") from None
        if not isinstance(t, Tensor):
            raise TypeError(f"draw_graph: parameter {name!r} is a {type(t).__name__}, "
                            "not a Tensor")
        names.setdefault(id(t), str(name))
    return names


def _collapse_predicate(collapse):
    """``collapse`` as a function of a Scope, "auto" for True, or None."""
    if collapse is None or collapse is False:
        return None
    if collapse is True:
        return "auto"
    if callable(collapse):
        return collapse
    pats = [collapse] if isinstance(collapse, str) else list(collapse)
    for p in pats:
        if not isinstance(p, str):
            raise TypeError("draw_graph: collapse must be True, a label pattern, a scope kind, "
                            f"a list of them or a function of a Scope; got {p!r}")

    def match(s: Scope) -> bool:
        return any(s.kind == p or fnmatch.fnmatchcase(s.label, p) for p in pats)

    match.patterns = pats
    return match


def _op_detail(node) -> str:
    """A short second line for an op node: the reduced axes, or a constant operand."""
    d = node.__dict__
    axes = d.get("axes")
    if isinstance(axes, tuple) and all(isinstance(a, (int, np.integer)) for a in axes):
        axes = tuple(int(a) for a in axes)
        if node.name == "transpose":
            return f"perm={axes}"
        if "keepdims" in d:  # a reduction
            in_shape = d.get("in_shape")
            if in_shape is not None and len(axes) > 1 and len(axes) == len(in_shape):
                return "all axes"
            return f"axis={axes[0]}" if len(axes) == 1 else f"axis={axes}"
    parents = node.parents
    sym = _OP_SYMBOLS.get(node.name)
    if sym is None or len(parents) != 2 or (parents[0] is None) == (parents[1] is None):
        return ""
    i = 0 if parents[0] is None else 1  # the constant operand
    c = "const"
    sl = getattr(type(node), "_save_slice", None)
    ins = node._inputs
    if sl is not None and isinstance(ins, tuple) and sl.start <= i < sl.stop \
            and i - sl.start < len(ins):
        v = ins[i - sl.start]
        v = v.data if isinstance(v, Tensor) else v
        if isinstance(v, (int, float, np.number)) or (isinstance(v, np.ndarray) and v.size == 1):
            c = _fmt_num(float(np.asarray(v).reshape(-1)[0]))
    if sym == "^":
        return f"^{c}" if i == 1 else f"{c}^x"
    return f"{sym} {c}" if i == 1 else f"{c} {sym} x"


# ------------------------------------------------------------------------- gradients
def _seeds(items, grad_outputs) -> list:
    """One seed gradient (ndarray) per root: ones, or what ``grad_outputs`` gives."""
    n = len(items)
    if grad_outputs is None:
        given = [None] * n
    elif isinstance(grad_outputs, (Tensor, np.ndarray)):
        given = [grad_outputs]
    else:
        given = list(grad_outputs)
    if len(given) != n:
        raise ValueError(f"draw_graph: {n} root(s) but {len(given)} grad_outputs")
    seeds = []
    for (_, t), g in zip(items, given):
        if g is None:
            seeds.append(np.ones(t.shape, dtype=t.dtype))
            continue
        g = np.asarray(g.data if isinstance(g, Tensor) else g)
        if g.shape != t.shape:
            raise ValueError(f"draw_graph: a grad_output of shape {g.shape} for a root of "
                             f"shape {t.shape}")
        seeds.append(g.astype(t.dtype))
    return seeds


def _gradients(items, seeds, order: list, leaves: list, edge_sink) -> dict:
    """d(roots · seeds)/d(value) for every node and leaf, in one reverse sweep.

    Returns ``key -> gradient`` (ndarray) for those that receive one; ``edge_sink(consumer,
    i, parent, g)`` sees the gradient sent back along each edge. With seeds of ones and a
    scalar loss this is what ``backward()`` computes.
    """
    from .core.autograd import _call_backward, unbroadcast

    pending: dict = {}
    for (_, t), seed in zip(items, seeds):
        k = _key(t)
        pending[k] = pending[k] + seed if k in pending else seed
    result: dict = {}
    with no_grad():
        for node in reversed(order):
            g = pending.pop(node, None)
            if g is None:
                continue
            result[node] = g
            out = _call_backward(node, g, False)
            for i, (p, gp) in enumerate(zip(node.parents, out)):
                if p is None or gp is None:
                    continue
                gp = np.asarray(gp.data if isinstance(gp, Tensor) else gp)
                shape = p.data.shape if isinstance(p, Tensor) else p.shape
                if gp.shape != shape:
                    gp = unbroadcast(gp, shape)
                edge_sink(node, i, p, gp)
                prev = pending.get(p)
                pending[p] = gp if prev is None else prev + gp
    for leaf in leaves:
        if leaf in pending:
            result[leaf] = pending[leaf]
    return result


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


# ------------------------------------------------------------------------- draw_graph
def draw_graph(root, params=None, show_data: bool = False, show_grad: bool = False,
               rankdir: str = "LR", *, collapse=None, values: str = "auto",
               show_saved: bool = True, legend: bool = True, grad_range=None,
               grad_outputs=None, title: str | None = None) -> "graphviz.Digraph":
    """Draw the computation graph behind ``root`` as a ``graphviz.Digraph``.

    Args:
        root: the output Tensor, a list of Tensors, or a dict ``name -> Tensor`` (several
            roots share one picture; the dict keys name them).
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
    if rankdir not in _RANKDIRS:
        raise ValueError(f"draw_graph: rankdir must be one of {_RANKDIRS}, got {rankdir!r}")
    if values not in _VALUES:
        raise ValueError(f"draw_graph: values must be one of {_VALUES}, got {values!r}")
    if grad_range is not None and not show_grad:
        raise ValueError("draw_graph: grad_range needs show_grad=True")
    if grad_outputs is not None and not show_grad:
        raise ValueError("draw_graph: grad_outputs needs show_grad=True")
    graphviz = _graphviz()
    b = _Builder(_roots(root), _param_names(params), show_data=show_data, show_grad=show_grad,
                 values=values, show_saved=show_saved)
    b.collapse(collapse)
    b.find_saved()
    if show_grad:
        b.compute_gradients(grad_range, grad_outputs)
    body = b.emit()
    if legend:
        body.append(_legend(b.kinds_used, b.scale))
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


class _Builder:
    """The state of one ``draw_graph`` call: the walked graph, scopes, saved values, grads."""

    def __init__(self, items, names, *, show_data, show_grad, values, show_saved):
        self.items = items
        self.names = names
        self.show_data = show_data
        self.show_grad = show_grad
        self.show_saved = show_saved
        self.every_value = show_data or show_grad or values == "all"
        self.root_keys = [_key(t) for _, t in items]
        self.order, self.leaves = _walk(self.root_keys)
        self.index = {node: i for i, node in enumerate(self.order)}
        self.leaf_index = {leaf: i for i, leaf in enumerate(self.leaves)}
        self.root_name: dict = {}
        for i, ((name, t), k) in enumerate(zip(items, self.root_keys)):
            if k not in self.root_name:
                default = "output" if len(items) == 1 else f"output {i}"
                self.root_name[k] = name or t.name or default
        self.box_of: dict = {}  # hidden node -> the collapsed scope drawn instead
        self.box_of_scope: dict = {}
        self.scopes: dict = {}  # every drawn scope, in order of first appearance
        for node in self.order:
            chain = []
            s = _clean(node.scope)
            while s is not None and s not in self.scopes:
                chain.append(s)
                s = _clean(s.parent)
            for s in reversed(chain):
                self.scopes[s] = None
        self.saved: set = set()
        self.extra_saved: list = []  # (node, name, array)
        self.arrays: dict = {}  # key -> ndarray, for show_data
        self.grads: dict = {}  # key -> gradient norm
        self.edge_norm: dict = {}  # (consumer node, input index) -> norm
        self.box_edge: dict = {}  # (box scope, parent) -> norm
        self.scale = None
        self.kinds_used: set = set()

    # -- collapsing ------------------------------------------------------------------
    def collapse(self, collapse) -> None:
        pred = _collapse_predicate(collapse)
        if pred is None:
            return
        if pred == "auto":
            holds_module = set()
            for s in self.scopes:
                if s.kind == "module":
                    p = _clean(s.parent)
                    while p is not None and p not in holds_module:
                        holds_module.add(p)
                        p = _clean(p.parent)
            n_ops: Counter = Counter()  # ops in each scope, nested ones included
            for node in self.order:
                s = _clean(node.scope)
                while s is not None:
                    n_ops[s] += 1
                    s = _clean(s.parent)

            def pred(s):  # a box for one op would only hide the op's name
                return s not in holds_module and n_ops[s] > 1
        bos = self.box_of_scope
        for s in self.scopes:  # parents come before children in self.scopes
            parent = _clean(s.parent)
            outer = bos.get(parent) if parent is not None else None
            bos[s] = outer if outer is not None else (s if pred(s) else None)
        if getattr(pred, "patterns", None) and not any(v is not None for v in bos.values()):
            labels = ", ".join(repr(s.label) for s in self.scopes) or "none"
            raise ValueError(f"draw_graph: collapse={collapse!r} matches no scope of this "
                             f"graph (its scopes: {labels})")
        for node in self.order:
            s = _clean(node.scope)
            if s is not None and bos[s] is not None:
                self.box_of[node] = bos[s]

    def display_scope(self, node):
        """The cluster that holds what is drawn for ``node`` (its op node or its box)."""
        box = self.box_of.get(node)
        return _clean(box.parent) if box is not None else _clean(node.scope)

    # -- saved values --------------------------------------------------------------
    def find_saved(self) -> None:
        known = set(self.order)
        known.update(self.leaves)
        saved, arrays = self.saved, self.arrays
        for leaf in self.leaves:
            arrays[leaf] = leaf.data
        for (_, t), k in zip(self.items, self.root_keys):
            arrays.setdefault(k, t.data)

        def note(x) -> bool:
            if isinstance(x, Tensor) and x.requires_grad:
                k = _key(x)
                if k in known:
                    saved.add(k)
                    arrays.setdefault(k, x.data)
                    return True
            return False

        for node in self.order:
            out = node._out
            if isinstance(out, np.ndarray):
                saved.add(node)
                arrays.setdefault(node, out)
            ins = node._inputs
            if isinstance(ins, tuple):
                for x in ins:
                    note(x)
        by_id = {id(a): k for k, a in arrays.items()}
        for node in self.order:
            sv = node._saved
            if not isinstance(sv, tuple):
                continue
            for x in sv:
                if note(x):
                    continue
                arr = x.data if isinstance(x, Tensor) else x
                if not isinstance(arr, np.ndarray):
                    continue
                k = by_id.get(id(arr))
                if k is not None:
                    saved.add(k)
                else:
                    name = x.name if isinstance(x, Tensor) else None
                    self.extra_saved.append((node, name, arr))
        if not self.show_saved:
            self.saved = set()
            self.extra_saved = []

    # -- gradients -----------------------------------------------------------------
    def compute_gradients(self, grad_range, grad_outputs=None) -> None:
        box_of, edge_norm = self.box_of, self.edge_norm
        box_sum: dict = {}

        def sink(node, i, p, gp):
            box = box_of.get(node)
            if box is None:
                edge_norm[(node, i)] = _norm(gp)
            elif isinstance(p, Tensor) or box_of.get(p) is not box:
                k = (box, p)
                prev = box_sum.get(k)
                box_sum[k] = gp if prev is None else prev + gp

        seeds = _seeds(self.items, grad_outputs)
        grads = _gradients(self.items, seeds, self.order, self.leaves, sink)
        self.grads = {k: _norm(g) for k, g in grads.items()}
        self.box_edge = {k: _norm(g) for k, g in box_sum.items()}
        self.scale = _GradScale(list(self.grads.values()) + list(edge_norm.values()),
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
            st = getattr(key, "_viz_stats", None) if isinstance(key, Function) else None
            if st is None and key in self.arrays:
                st = _Stats(self.arrays[key])
            if st is not None:
                lines.append(f'<font point-size="9" color="{blue}">mean {_fmt_num(st.mean)}'
                             f"  std {_fmt_num(st.std)}</font>")
        if self.show_grad:
            txt = "no gradient" if n is None else f"‖∇‖ {_fmt_norm(n)}"
            lines.append(f'<font point-size="9"><b>{txt}</b></font>')
        return {"shape": "box", "style": style, "fillcolor": fill, "color": border,
                "penwidth": pen, "fontcolor": fontcolor, "label": _Html("<br/>".join(lines))}

    def has_value_node(self, node, exported: set) -> bool:
        if node in self.root_name:
            return True
        if node in self.box_of and node not in exported:
            return False
        return self.every_value or bool(node.out_name) or node in self.saved

    # -- DOT text ------------------------------------------------------------------
    def emit(self) -> list:
        order, index, box_of = self.order, self.index, self.box_of
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
                        place = self.display_scope(node)
                    leaf_places.setdefault(p, set()).add(place)
                elif p in box_of and box_of[p] is not box:
                    exported.add(p)
        value_node = {node: self.has_value_node(node, exported) for node in order}

        # leaves
        for leaf in self.leaves:
            pname = self.names.get(id(leaf))
            if leaf in self.root_name:
                kind, name = "output", self.root_name[leaf]
            elif pname is not None:
                kind, name = "param", pname
            elif _is_parameter(leaf):
                kind, name = "param", leaf.name
            else:
                kind, name = "input", leaf.name
            where = None
            if kind == "param":
                places = leaf_places.get(leaf, ())
                if len(places) == 1:
                    where = next(iter(places))
            a = self.value_attrs(leaf, name, leaf.shape, leaf.dtype, kind)
            put(where, f"\tx{self.leaf_index[leaf]}{_attrs(a)}\n")

        # ops, their output values, boxes
        op_cache: dict = {}
        boxes: dict = {}  # box scope -> [id, Counter of op names]
        plain_value: dict = {}  # (name, shape, dtype, saved) -> attrs text (no data/grad)
        for node in order:
            i = index[node]
            box = box_of.get(node)
            if box is None:
                opname = node.name
                detail = _op_detail(node)
                text = op_cache.get((opname, detail))
                if text is None:
                    label = f"<b>{_esc(opname)}</b>"
                    if detail:
                        label += f'<br/><font point-size="9" color="#505050">{_esc(detail)}</font>'
                    text = op_cache[(opname, detail)] = _attrs({"label": _Html(label)})
                put(_clean(node.scope), f"\top{i}{text}\n")
            else:
                if box not in boxes:
                    boxes[box] = [f"box{len(boxes)}", Counter()]
                boxes[box][1][node.name] += 1
            if value_node[node]:
                if node in self.root_name:
                    kind, name = "output", self.root_name[node]
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
                put(self.display_scope(node), f"\tv{i}{text}\n")
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
            put(_clean(box.parent), f"\t{bid}{_attrs(a)}\n")
        extra_edges = []
        for j, (node, name, arr) in enumerate(self.extra_saved):
            if node in box_of:
                continue
            lines = [f"<b>{_esc(name or 'saved')}</b>",
                     f'<font point-size="9" color="#505050">{_fmt_shape(arr.shape)} '
                     f"{arr.dtype}</font>"]
            if self.show_data:
                st = _Stats(arr)
                lines.append(f'<font point-size="9" color="#1d4f7a">mean {_fmt_num(st.mean)}'
                             f"  std {_fmt_num(st.std)}</font>")
            self.kinds_used.add("saved")
            a = {"shape": "box", "style": "rounded,filled,dashed", "fillcolor": COLORS["saved"],
                 "color": _BORDERS["saved"], "label": _Html("<br/>".join(lines))}
            put(_clean(node.scope), f"\ts{j}{_attrs(a)}\n")
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
                    src = f"x{self.leaf_index[p]}"
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
        for s in self.scopes:
            if self.box_of_scope.get(s) is None:
                children.setdefault(_clean(s.parent), []).append(s)
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


# ------------------------------------------------------------------------- rendering
def _format_of(path: Path, format: str | None) -> str:
    if format is None:
        format = path.suffix.lstrip(".")
        if not format:
            raise ValueError(f"render_graph: cannot tell the format of {str(path)!r}: give the "
                             "file a suffix (.svg, .png, .pdf, .dot) or pass format=")
    fmt = str(format).lower()
    if fmt not in _RENDER_FORMATS + _SOURCE_FORMATS:
        raise ValueError(f"render_graph: format must be one of "
                         f"{_RENDER_FORMATS + _SOURCE_FORMATS}, got {format!r}")
    return fmt


def _check_dot() -> str:
    path = shutil.which("dot")
    if path is None:
        raise GraphvizNotFoundError(_INSTALL_HINT)
    return path


def render_graph(root, path, format: str | None = None, **kwargs) -> Path:
    """Draw the graph behind ``root`` and write it to ``path``; returns the path.

    ``format`` is "svg", "png" or "pdf" (rendered by Graphviz's ``dot``), or "dot" for the
    DOT source (no Graphviz program needed); by default it is the suffix of ``path``.
    ``root`` is what ``draw_graph`` takes, or a ``graphviz.Digraph`` it returned; keyword
    arguments go to ``draw_graph``.

    Raises GraphvizNotFoundError (a RuntimeError) that says how to install Graphviz when
    ``dot`` is not on PATH, and ValueError for an unknown format.
    """
    path = Path(path)
    fmt = _format_of(path, format)
    if hasattr(root, "source") and hasattr(root, "pipe"):
        if kwargs:
            raise ValueError("render_graph: drawing options cannot be applied to an already "
                             f"drawn graph (got {sorted(kwargs)})")
        dot = root
    else:
        dot = draw_graph(root, **kwargs)
    if fmt in _SOURCE_FORMATS:
        path.write_text(dot.source, encoding="utf-8")
        return path
    _check_dot()
    graphviz = _graphviz()
    try:
        data = dot.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise GraphvizNotFoundError(_INSTALL_HINT) from None
    path.write_bytes(data)
    return path


def render_backward(tensor: Tensor, path, params=None, **kwargs) -> Path:
    """Write one self-contained HTML page that steps through the backward pass of ``tensor``
    in the engine's order (see ``tinygrad_bn.stepper.render_backward``); returns the path.

    No ``.grad`` is touched and the graph is kept. ``params``: a dict ``name -> Tensor``
    naming leaves. Keyword arguments (``gradient=``, ``title=``) go to the stepper.
    """
    from .stepper import render_backward as _render_backward

    return _render_backward(tensor, path, params, **kwargs)


# ------------------------------------------------------------------------------- CLI
def add_graph_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``graph`` command to the ``tinygrad-bn`` CLI's subparsers."""
    p = subparsers.add_parser(
        "graph",
        help="draw the computation graph of a norm (or of a small MLP) to SVG/PNG/PDF/DOT",
        description="Draw the graph of one normalization call, composed from primitives "
        "(default) or fused (--analytic), or of a small MLP with its loss, annotated with "
        "the gradient norm of every value (--mlp).",
    )
    from .norms import registry

    p.add_argument("--norm", choices=registry.names(variants=False, short=True),
                   default="batch",
                   help="which normalization (default: batch)")
    p.add_argument("--analytic", action="store_true",
                   help="the fused single-node version with the hand-derived backward")
    p.add_argument("--mlp", action="store_true",
                   help="a small MLP (Linear, norm, ReLU, Linear) and its cross-entropy loss, "
                   "with gradient norms")
    p.add_argument("--out", default="graph.svg", metavar="FILE",
                   help="output file; the format comes from its suffix: .svg, .png, .pdf, or "
                   ".dot for the DOT source (default: graph.svg)")
    p.add_argument("--format", choices=_RENDER_FORMATS + _SOURCE_FORMATS, default=None,
                   help="output format (default: from the suffix of --out)")
    p.add_argument("--show-grad", action="store_true",
                   help="annotate values with gradient norms (always on with --mlp)")
    p.add_argument("--show-data", action="store_true",
                   help="annotate values with their mean and std")
    p.add_argument("--collapse", action="store_true",
                   help="draw each layer / norm call as one box")
    p.add_argument("--rankdir", choices=_RANKDIRS, default="LR",
                   help="direction of the data flow (default: LR)")
    p.add_argument("--steps", action="store_true",
                   help="write an HTML page that steps through the backward pass instead "
                   "(--out gets the suffix .html)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=graph_main)
    return p


def _norm_call(norm: str, analytic: bool, rng) -> tuple:
    """One call of a registered norm on its example input: ``(output, title)``."""
    from .norms import registry

    entry = registry.get(norm)
    shape, given = entry.example(rng)
    settings = entry.settings(shape, **given)

    def t(*shape, name):
        return Tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True,
                      name=name)

    pshape = tuple(entry.param_shape(shape, settings))
    x, w = t(*shape, name="x"), t(*pshape, name="γ")
    b = t(*pshape, name="β") if entry.has_bias else None
    y = entry.call(entry.derived if analytic else entry.composed, x, w, b, **settings)
    kind = "analytic (one fused node)" if analytic else "composed from primitives"
    return y, f"{entry.label(shape, True, settings)}, {kind}, x {shape}"


def _mlp_loss(norm: str, analytic: bool, rng) -> tuple:
    """A small MLP with ``norm`` after the first layer and its loss: ``(loss, model, title)``."""
    from . import nn
    from .nn import functional as F

    from .models import make_norm

    width = 8
    seed = int(rng.integers(2**31))
    norm_layer = make_norm(norm, width, analytic=analytic)
    model = nn.Sequential(nn.Linear(2, width, rng=seed), norm_layer, nn.ReLU(),
                          nn.Linear(width, 3, rng=seed + 1))
    x = Tensor(rng.standard_normal((16, 2)).astype(np.float32), name="x")
    target = rng.integers(0, 3, size=16)
    loss = F.cross_entropy(model(x), target).named("loss")
    kind = " (analytic)" if analytic else ""
    return loss, model, (f"MLP 2-{width}-3 with {type(norm_layer).__name__}{kind}, cross-entropy "
                         "loss, batch of 16: gradient norms")


def graph_main(args) -> int:
    """``tinygrad-bn graph``: build the example graph and write it to ``args.out``."""
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    if getattr(args, "steps", False):
        return _steps_main(args, rng, out)
    fmt = _format_of(out, getattr(args, "format", None))
    params = None
    show_grad = bool(getattr(args, "show_grad", False))
    show_data = bool(getattr(args, "show_data", False))
    tr = trace() if show_data else None
    if tr is not None:
        tr.__enter__()
    try:
        if args.mlp:
            root, params, title = _mlp_loss(args.norm, args.analytic, rng)
            show_grad = True
        else:
            root, title = _norm_call(args.norm, args.analytic, rng)
    finally:
        if tr is not None:
            tr.__exit__(None, None, None)
    seed = None
    if show_grad and not args.mlp:  # the sum of a norm's output barely depends on x
        seed = rng.standard_normal(root.shape).astype(root.dtype)
        title += "; gradients for a random upstream gradient"
    try:
        render_graph(root, out, format=fmt, params=params, show_grad=show_grad,
                     show_data=show_data, collapse=True if args.collapse else None,
                     rankdir=args.rankdir, title=title, grad_outputs=seed)
    except GraphvizNotFoundError as e:
        print(f"tinygrad-bn graph: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({fmt})")
    return 0


def _steps_main(args, rng, out: Path) -> int:
    """``tinygrad-bn graph --steps``: the backward-pass stepper page of the example graph."""
    if out.suffix.lower() not in (".html", ".htm"):
        out = out.with_suffix(".html")
    if args.mlp:
        root, params, title = _mlp_loss(args.norm, args.analytic, rng)
        seed = None
    else:
        (root, title), params = _norm_call(args.norm, args.analytic, rng), None
        # the sum of a norm's output barely depends on x: start from a random gradient
        seed = rng.standard_normal(root.shape).astype(root.dtype)
        title += "; a random upstream gradient"
    try:
        render_backward(root, out, params=params, gradient=seed, title=title)
    except GraphvizNotFoundError as e:
        print(f"tinygrad-bn graph: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out} (html)")
    return 0
