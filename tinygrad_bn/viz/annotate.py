"""What a drawing adds to the graph model: gradients, saved values, trace statistics.

* **Gradients** come from the engine itself: ``backward_steps`` runs ``autograd._run`` on the
  retained graph with its ``observe`` hook, in the quiet capture mode (``inputs=`` every
  leaf, no hooks, no ``retain_grad``), so no ``.grad`` changes and the graph stays usable.
  ``gradients`` collects what each value received and what each edge carried back; the
  backward stepper (``stepper.py``) records the same hook's calls step by step.
* **Saved values**: what the ops of the graph keep for backward (``saved_values``).
* **Trace statistics**: inside ``with trace():`` every op recorded also stores the mean and
  std of its output on its node, through the engine's ``record`` hook (no cost when no trace
  is open).
"""
from __future__ import annotations

import numpy as np

from ..core.autograd import _run, unbroadcast
from ..core.node import Hooks, _grad_mode, no_grad
from ..core.tensor import Tensor
from .model import Graph, _key


# ------------------------------------------------------------------------------ trace
class Stats:
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
    A trace applies to the current thread (traces nest); ``count`` is the number of ops
    recorded.
    """

    def __init__(self):
        self.count = 0
        self._prev = None

    def __enter__(self) -> "trace":
        self._prev = _grad_mode.record
        _grad_mode.record = self._record
        Hooks.traces += 1
        return self

    def __exit__(self, *exc):
        _grad_mode.record = self._prev
        Hooks.traces -= 1
        return False

    def _record(self, node, data) -> None:
        node._viz_stats = Stats(data)
        self.count += 1
        if self._prev is not None:
            self._prev(node, data)


def stats_of(node):
    """The trace statistics kept for ``node``, or None."""
    return node.__dict__.get("_viz_stats")


# ------------------------------------------------------------------------ saved values
def saved_values(graph: Graph) -> tuple:
    """What backward keeps in memory: ``(saved, arrays, extra)``.

    ``saved``: the keys (nodes, leaves) whose value an op kept; ``arrays``: key -> ndarray
    for every value whose data is known (leaves, roots, saved values); ``extra``: ``(node,
    name, array)`` for arrays an op saved that are no value of the graph.
    """
    known = set(graph.order)
    known.update(graph.leaves)
    saved: set = set()
    arrays: dict = {}
    extra: list = []
    for leaf in graph.leaves:
        arrays[leaf] = leaf.data
    for (_, t), k in zip(graph.items, graph.root_keys):
        arrays.setdefault(k, t.data)

    def note(x) -> bool:
        if isinstance(x, Tensor) and x.requires_grad:
            k = _key(x)
            if k in known:
                saved.add(k)
                arrays.setdefault(k, x.data)
                return True
        return False

    for node in graph.order:
        out = node._out
        if isinstance(out, np.ndarray):
            saved.add(node)
            arrays.setdefault(node, out)
        ins = node._inputs
        if isinstance(ins, tuple):
            for x in ins:
                note(x)
    by_id = {id(a): k for k, a in arrays.items()}
    for node in graph.order:
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
                extra.append((node, x.name if isinstance(x, Tensor) else None, arr))
    return saved, arrays, extra


# ------------------------------------------------------------------------- gradients
def seeds(graph: Graph, grad_outputs, who: str = "draw_graph") -> list:
    """One seed gradient (ndarray) per root: ones, or what ``grad_outputs`` gives."""
    items = graph.items
    n = len(items)
    if grad_outputs is None:
        given = [None] * n
    elif isinstance(grad_outputs, (Tensor, np.ndarray)):
        given = [grad_outputs]
    else:
        given = list(grad_outputs)
    if len(given) != n:
        raise ValueError(f"{who}: {n} root(s) but {len(given)} grad_outputs")
    out = []
    for (_, t), g in zip(items, given):
        if g is None:
            out.append(np.ones(t.shape, dtype=t.dtype))
            continue
        g = np.asarray(g.data if isinstance(g, Tensor) else g)
        if g.shape != t.shape:
            raise ValueError(f"{who}: a grad_output of shape {g.shape} for a root of shape "
                             f"{t.shape}")
        out.append(g.astype(t.dtype))
    return out


def edge_gradient(node, parent, gp):
    """A gradient ``node``'s backward returned for input ``parent``, as the engine hands it
    on: reduced to the input's shape (and cast to its dtype where the op mixed dtypes)."""
    shape, dtype = ((parent.data.shape, parent.data.dtype) if isinstance(parent, Tensor)
                    else (parent.shape, parent.dtype))
    if gp.shape != shape:
        try:
            gp = unbroadcast(gp, shape)
        except RuntimeError:
            pass  # the engine raises its own error right after
    if node._mixed and gp.dtype != dtype:
        gp = gp.astype(dtype)
    return gp


def backward_steps(graph: Graph, root_grads: list, observe) -> None:
    """Run the engine's backward pass over ``graph`` from its roots, quietly: ``observe(node,
    g, results)`` sees each node in the engine's order (see ``autograd._run``), then
    ``observe(leaf, g, None)`` each leaf's summed gradient. Nothing is modified: no
    ``.grad``, no hook, no ``retain_grad``; the graph is kept."""
    with no_grad():
        _run(list(graph.root_keys), list(root_grads), retain_graph=True, graph_mode=False,
             inputs=graph.leaves, stop=(), observe=observe)


def gradients(graph: Graph, root_grads: list) -> tuple:
    """``(grads, edges)``: the gradient each value (node or leaf) received, and the one each
    edge carried back, keyed ``(node, input index)``; for a scalar loss seeded with 1, what
    ``loss.backward()`` computes."""
    grads: dict = {}
    edges: dict = {}

    def observe(key, g, results):  # copies: the engine may later sum into these arrays
        if g is None:
            return
        grads[key] = np.array(g)
        if results is None:
            return
        for i, (p, gp) in enumerate(zip(key.parents, results)):
            if p is not None and gp is not None:
                edges[(key, i)] = np.array(edge_gradient(key, p, gp))

    backward_steps(graph, root_grads, observe)
    return grads, edges
