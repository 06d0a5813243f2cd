"""Computation graphs drawn with Graphviz, and a backward pass you can step through.

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

``render_backward(y, "bn.html")`` writes one self-contained page that steps through the
engine's backward pass node by node.

The package, in reading order:

* ``model.py``: ``Graph``, one walk of the graph (nodes, leaves, edges, scopes as plain data);
* ``annotate.py``: gradients (through the engine's own ``observe`` hook), saved values,
  ``trace`` statistics (through the engine's ``record`` hook);
* ``dot.py``: ``draw_graph``, the DOT text and its legend;
* ``render.py``: ``render_graph``, files through Graphviz's ``dot`` (size limit, timeout);
* ``stepper.py``: ``render_backward``, the backward stepper page.

Building DOT source needs only the ``graphviz`` Python package; rendering needs Graphviz's
``dot`` program. Walking never recurses, so a graph of 100,000 ops can be drawn as DOT
source; ``render_graph`` collapses or refuses graphs too big to lay out.
"""
from .annotate import trace
from .dot import COLORS, draw_graph
from .model import Graph
from .render import GraphvizNotFoundError, render_graph
from .stepper import BackwardPage, render_backward, trace_backward

__all__ = [
    "draw_graph", "render_graph", "render_backward", "trace_backward", "trace", "Graph",
    "BackwardPage", "GraphvizNotFoundError", "COLORS",
]
