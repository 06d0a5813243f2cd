"""The graph model: one walk of the graph behind some Tensors, as plain data.

``Graph(root, params)`` walks the recorded graph once (iteratively: its depth does not
matter) and holds what every drawing and the backward stepper read:

* ``order``: the op nodes, producers before consumers; ``leaves``: the leaf Tensors met;
* ``edges()``: ``(input, node, i)`` for each input ``i`` of each node (the input is a node
  or a leaf Tensor);
* ``scopes``: the module / norm calls (``core.node.Scope``) that hold nodes, outermost
  first: the clusters of a picture;
* ``root_name`` and ``names``: what the roots and the parameters are called;
* after ``collapse(...)``: ``box_of``, the scope drawn as one box in place of a node.

Annotations (gradients, saved values, trace statistics) are computed from a ``Graph`` in
``annotate.py``; the DOT text in ``dot.py``.
"""
from __future__ import annotations

import fnmatch
from collections import Counter
from typing import Iterable, Mapping

from ..core.node import Scope
from ..core.tensor import Tensor

def _is_parameter(t: Tensor) -> bool:
    return any(c.__name__ == "Parameter" for c in type(t).__mro__)


def _key(t: Tensor):
    """The graph object a Tensor stands for: its node, or the leaf itself."""
    return t._ctx if t._ctx is not None else t


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



class Graph:
    """The nodes, leaves, edges and scopes behind ``root`` (see the module docstring)."""

    def __init__(self, root, params=None):
        """``root``: a Tensor, a list of Tensors or a dict ``name -> Tensor``; ``params``: a
        Module, a dict ``name -> Tensor`` or ``(name, Tensor)`` pairs naming leaves."""
        self.items = items = _roots(root)
        self.names = _param_names(params)
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
        self.box_of_scope: dict = {}  # scope -> the box it is drawn in (None: not boxed)
        self.scopes: dict = {}  # every scope that holds a node, outermost first
        for node in self.order:
            chain = []
            s = node.scope
            while s is not None and s not in self.scopes:
                chain.append(s)
                s = s.parent
            for s in reversed(chain):
                self.scopes[s] = None

    def __repr__(self) -> str:
        boxed = f", {len(self.box_of)} ops in boxes" if self.box_of else ""
        return (f"Graph({len(self.order)} ops, {len(self.leaves)} leaves, "
                f"{len(self.scopes)} scopes{boxed})")

    def edges(self):
        """``(input, node, i)`` for every input ``i`` of every node, in ``order``; the input
        is an op node or a leaf Tensor (constant inputs, which have no edge, are skipped)."""
        for node in self.order:
            for i, p in enumerate(node.parents):
                if p is not None:
                    yield p, node, i

    def kind_of_leaf(self, leaf) -> tuple:
        """``(kind, name)`` of a leaf: "output" (a root), "param" (named by ``params`` or an
        ``nn.Parameter``) or "input"."""
        if leaf in self.root_name:
            return "output", self.root_name[leaf]
        pname = self.names.get(id(leaf))
        if pname is not None:
            return "param", pname
        if _is_parameter(leaf):
            return "param", leaf.name
        return "input", leaf.name

    def drawn_count(self) -> int:
        """Op nodes and boxes drawn, plus leaves: the size a layout program sees."""
        return (sum(1 for n in self.order if n not in self.box_of)
                + len(set(self.box_of.values())) + len(self.leaves))

    # -- collapsing ------------------------------------------------------------------
    def collapse(self, collapse) -> None:
        """Draw whole scopes as one box each (see ``draw_graph``'s ``collapse``)."""
        pred = _collapse_predicate(collapse)
        if pred is None:
            return
        if pred == "auto":
            holds_module = set()
            for s in self.scopes:
                if s.kind == "module":
                    p = s.parent
                    while p is not None and p not in holds_module:
                        holds_module.add(p)
                        p = p.parent
            n_ops: Counter = Counter()  # ops in each scope, nested ones included
            for node in self.order:
                s = node.scope
                while s is not None:
                    n_ops[s] += 1
                    s = s.parent

            def pred(s):  # a box for one op would only hide the op's name
                return s not in holds_module and n_ops[s] > 1
        bos = self.box_of_scope
        for s in self.scopes:  # parents come before children in self.scopes
            parent = s.parent
            outer = bos.get(parent) if parent is not None else None
            bos[s] = outer if outer is not None else (s if pred(s) else None)
        if getattr(pred, "patterns", None) and not any(v is not None for v in bos.values()):
            labels = ", ".join(repr(s.label) for s in self.scopes) or "none"
            raise ValueError(f"draw_graph: collapse={collapse!r} matches no scope of this "
                             f"graph (its scopes: {labels})")
        for node in self.order:
            s = node.scope
            if s is not None and bos[s] is not None:
                self.box_of[node] = bos[s]

    def display_scope(self, node):
        """The cluster that holds what is drawn for ``node`` (its op node or its box)."""
        box = self.box_of.get(node)
        return box.parent if box is not None else node.scope

