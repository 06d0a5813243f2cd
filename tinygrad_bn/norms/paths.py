"""Gradient paths: ``∂output/∂input`` split by the intermediates its paths go through.

The chain rule over a graph is a sum over paths. With ``p`` a path ``input → … → output``
and ``J_e`` the Jacobian of one edge, ::

    ∂output/∂input = Σ_p  Π_{e ∈ p} J_e                         (vector-Jacobian products)

Give a list ``via`` of intermediates. Walking a path from the input towards the output, the
first via intermediate it meets names the part the path belongs to; a path that meets none
belongs to ``"other"``. So the parts are disjoint and add up to the full gradient::

    part[v]     = ( ∂output/∂v through every path v → output )
                  · ( ∂v/∂input through the paths input → v that meet no other via )
    part[other] = ∂output/∂input through the paths that meet no via
    Σ_v part[v] + part[other] = ∂output/∂input

Reverse mode computes this with one full pass (the adjoint ``ā_v`` of every via node) and
then one pass per via from ``v`` with seed ``ā_v``, plus one from the output, each of which
drops any gradient that flows into a via node (``autograd._run(stop=...)``).

BatchNorm (``y = γ·x̂ + β``, ``x̂ = (x - μ)/σ``, ``σ = √(σ² + ε)``, statistics over m values
per channel) with ``via=("μ", "σ²", "x̂")`` gives the three terms of the derivation, with
``dx̂ = ∂L/∂y · γ``::

    part["x̂"] = dx̂ / σ
    part["σ²"] = dσ² · 2(x - μ)/m,    dσ² = Σ dx̂·(x - μ)·(-½)(σ² + ε)^(-3/2)
    part["μ"]  = dμ / m,              dμ  = Σ(-dx̂/σ) + dσ²·Σ(-2(x - μ))/m

(Σ over the batch axes; the second term of dμ is 0 up to rounding, since Σ(x - μ) = 0.)

The user's graph is left as it was (every pass retains it), and nothing changes ``.grad``:
the passes run no ``register_hook`` functions and update no ``retain_grad()`` Tensor (each
sees only part of a gradient), so with hooks that change gradients the parts add up to the
gradient without them.
"""
from __future__ import annotations

import numpy as np

from ..core.autograd import _lent, _root_grad, _root_key, _run
from ..core.node import Function, _grad_mode
from ..core.tensor import Tensor

OTHER = "other"


class _Ref:
    """What ``_run(inputs=...)`` needs to return the gradient of a node: its ``_ctx``."""

    __slots__ = ("_ctx",)

    def __init__(self, node):
        self._ctx = node


def _graph(root) -> tuple[set, dict]:
    """Everything reachable from ``root`` (nodes and leaf Tensors) and the names found there:
    ``{name: [node or leaf, ...]}`` in the order met. Iterative, so depth does not matter."""
    seen = {root}
    names: dict = {}
    stack = [root]
    while stack:
        k = stack.pop()
        if isinstance(k, Tensor):
            if k.name is not None:
                names.setdefault(k.name, []).append(k)
            continue
        if k.out_name is not None:
            names.setdefault(k.out_name, []).append(k)
        parents = k.parents
        if parents is None:
            raise RuntimeError(
                f"grad_paths: the graph of {type(k).__name__} was freed by an earlier "
                "backward(); pass retain_graph=True to it to look at the paths afterwards"
            )
        for p in parents:
            if p is not None and p not in seen:
                seen.add(p)
                stack.append(p)
    return seen, names


def grad_paths(output: Tensor, input: Tensor, via, grad_output=None) -> dict:
    """The gradient of ``output`` w.r.t. ``input``, split by the first ``via`` intermediate
    that each path from the input to the output reaches (see the module docstring).

    ``via``: Tensors of the graph, or names of intermediates in it (``"μ"``, ``"σ²"``,
    ``"x̂"``: a name stands for every node of that name), or one of them alone.
    ``grad_output``: the upstream gradient, shaped like ``output``; ones for a one-element
    output, required otherwise (as ``backward``).

    Returns ``{key: ndarray shaped like input}`` in the order of ``via``, then ``"other"``
    (zeros when every path meets a via). A key is the name given, or for a Tensor its
    ``.name``, else ``"via0"``, ``"via1"``, ... (its position). The values add up to
    ``tinygrad_bn.grad(output, input)``. The graph stays usable; ``.grad`` is not touched.

    Raises ValueError for a name not in the graph (listing the names there), a Tensor or an
    input not in the graph, two via entries for one intermediate or one key, and
    RuntimeError as ``backward`` for an output without a graph or a missing or misshapen
    ``grad_output``.
    """
    if not isinstance(output, Tensor):
        raise TypeError(f"grad_paths: output is a {type(output).__name__}, not a Tensor")
    if not isinstance(input, Tensor):
        raise TypeError(f"grad_paths: input is a {type(input).__name__}, not a Tensor")
    out_key = _root_key(output, "the output")
    g0 = _root_grad(output, grad_output, False, "the output")
    if not input.requires_grad:
        raise ValueError(f"grad_paths: input (shape {input.shape}) does not require grad, so "
                         "no path leads from it to the output")
    x_key = input._ctx if input._ctx is not None else input
    reachable, names = _graph(out_key)
    if x_key not in reachable:
        raise ValueError(f"grad_paths: input (shape {input.shape}) is not in the graph of "
                         "the output: no path leads from it to the output")

    if isinstance(via, (str, Tensor)):
        via = [via]
    keys: list = []
    groups: list = []  # per via entry: the nodes / leaves it stands for
    owner: dict = {}
    for i, v in enumerate(via):
        if isinstance(v, str):
            if v not in names:
                found = ", ".join(repr(n) for n in sorted(names)) or "none"
                raise ValueError(f"grad_paths: no intermediate named {v!r} in the graph of "
                                 f"the output; names found there: {found}")
            key, group = v, names[v]
        elif isinstance(v, Tensor):
            k = v._ctx if v._ctx is not None else v
            if not v.requires_grad or k not in reachable:
                raise ValueError(f"grad_paths: via[{i}] (a Tensor of shape {v.shape}) is not "
                                 "in the graph of the output")
            key, group = (v.name if v.name is not None else f"via{i}"), [k]
        else:
            raise TypeError(f"grad_paths: via[{i}] is a {type(v).__name__}; give Tensors or "
                            "names of intermediates")
        if key in keys or key == OTHER:
            raise ValueError(f"grad_paths: two parts would be called {key!r}; name the "
                             "Tensors apart (t.name = ...) or list each intermediate once")
        for k in group:
            if k in owner:
                raise ValueError(f"grad_paths: via[{i}] ({key!r}) and via[{owner[k]}] stand "
                                 "for the same intermediate")
            owner[k] = i
        keys.append(key)
        groups.append(group)

    dtype = input.data.dtype
    parts = {k: np.zeros(input.data.shape, dtype=dtype) for k in keys + [OTHER]}
    ins = [input]
    stop = frozenset(k for k in owner if isinstance(k, Function))
    prev = _grad_mode.enabled
    _grad_mode.enabled = False
    try:
        if x_key in owner or out_key in owner:
            # every path meets the input (or the output) itself: nothing is "other"; when
            # the input is a via, it is the first one met on every path
            if x_key in owner:
                full = _run([out_key], [g0], retain_graph=True, graph_mode=False,
                            inputs=ins, stop=()).get(x_key)
                if full is not None:
                    parts[keys[owner[x_key]]][...] = full
                return parts
        if owner:
            # pass 1: the adjoint of every via intermediate, through all its paths
            adj = _run([out_key], [g0], retain_graph=True, graph_mode=False,
                       inputs=[_Ref(k) if isinstance(k, Function) else k for k in owner],
                       stop=())
            # one pass per via: from its nodes down to the input, stopping at every via
            for key, group in zip(keys, groups):
                roots = [k for k in group if k in adj]
                if not roots:
                    continue
                got = _run(roots, [_lent(adj[k]) for k in roots], retain_graph=True,
                           graph_mode=False, inputs=ins, stop=stop).get(x_key)
                if got is not None:
                    parts[key][...] = got
        if out_key not in owner:
            got = _run([out_key], [g0], retain_graph=True, graph_mode=False, inputs=ins,
                       stop=stop).get(x_key)
            if got is not None:
                parts[OTHER][...] = got
    finally:
        _grad_mode.enabled = prev
    return parts
