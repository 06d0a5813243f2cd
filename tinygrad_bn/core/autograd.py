"""The backward engine: dependency counting (iterative), gradient flow, ``grad()``.

Nodes are processed in topological order by counting, for each node, how many edges from
the rest of the graph still owe it a gradient (Kahn's algorithm); nothing recurses, so a graph
100,000 ops deep is fine. Every node counts its consumers as they are recorded (``_uses``),
so a plain ``backward()`` starts at once; where that count says more than the pass will see
(a consumer that is not part of it), the pass counts the rest of the graph exactly when it
gets there. Broadcast gradients are reduced to each input's shape in one place,
``ops.unbroadcast``; a gradient whose dtype differs from its input's (mixed-dtype ops) is
cast to the input's dtype on the edge, as torch does. ``register_hook`` functions run where
a Tensor's gradient is complete: before its node's backward, or for a leaf once per pass.
Gradient arrays the engine made are reused in place where nobody else can see them (see
``_run``).
"""
from __future__ import annotations

import threading
from typing import Sequence

import numpy as np

from .node import FREED, Function, Hooks, _grad_mode
from .ops import _add_row_into, _const, unbroadcast  # (unbroadcast: the one reduction of
# broadcast gradients; ops use it too)
from .tensor import Tensor

_wrap = Tensor._wrap
# Adding into a leaf's .grad is read-modify-write: threads backpropagating into one shared
# leaf take turns (the rest of a backward pass runs in parallel).
_accumulate_lock = threading.Lock()


def _count_dependencies(roots) -> dict:
    """For every node reachable from ``roots``: how many edges from that part of the graph
    point to it (iteratively). Raises before anything runs when a node on the way was freed
    by an earlier backward."""
    deps: dict = {}
    stack = []
    for r in roots:
        if isinstance(r, Function) and r not in deps:
            deps[r] = 0
            stack.append(r)
    pop = stack.pop
    push = stack.append
    get = deps.get
    while stack:
        node = pop()
        parents = node.parents
        if parents is None:
            raise _freed_graph(node)
        for p in parents:
            if isinstance(p, Function):
                c = get(p)
                if c is None:
                    deps[p] = 1
                    push(p)
                else:
                    deps[p] = c + 1
    return deps


def _freed_graph(node) -> RuntimeError:
    return RuntimeError(
        "Trying to backward through the graph a second time: the graph of "
        f"{type(node).__name__} was freed by an earlier backward(). Pass retain_graph=True to "
        "the first backward() or grad() call if you need to backward twice."
    )


def _call_backward(node: Function, g, graph_mode: bool) -> tuple:
    """Run one node's backward; returns one gradient (or None) per input."""
    if node._raw:
        if not graph_mode:
            return node.backward(node, g)
        node._graph_mode = True
        try:
            return node.backward(node, g)
        finally:
            node._graph_mode = False
    # a user Function: it receives and returns Tensors
    out = node.backward(node, g if graph_mode else _wrap(g, None))
    if not isinstance(out, tuple):
        out = (out,)
    n = len(node.needs_input_grad)
    if len(out) != n:
        raise RuntimeError(
            f"{type(node).__name__}.backward returned {len(out)} gradient(s), expected {n} "
            "(one per positional input of forward, None where there is none)"
        )
    if not graph_mode:
        # arrays a user's backward returns may live on elsewhere (a saved Tensor, the
        # incoming gradient): read-only views, so that nothing downstream adds or writes
        # into them (a leaf copies one instead of adopting it)
        out = tuple([_lent(o.data if isinstance(o, Tensor) else o) for o in out])
    return out


def _lent(g):
    """``g`` as a read-only view when it is an ndarray: the engine does not own it, so no
    backward writes into it and no leaf adopts it as its ``.grad`` (see ``ops._reusable``)."""
    if type(g) is not np.ndarray:
        return g
    g = g.view()
    g.flags.writeable = False
    return g


def _shape_error(node, gshape, shape):
    return RuntimeError(
        f"{type(node).__name__}.backward returned a gradient of shape {gshape} for an input "
        f"of shape {shape}"
    )


def _run(roots: list, root_grads: list, *, retain_graph: bool, graph_mode: bool,
         inputs: Sequence[Tensor] | None = None, stop=None, observe=None):
    """Propagate ``root_grads`` from ``roots`` (nodes or leaf Tensors) through the graph.

    With ``inputs=None`` leaf gradients accumulate into ``.grad``; otherwise the gradients of
    ``inputs`` are returned (a dict keyed by node or leaf) and ``.grad`` is left alone.

    ``stop`` (private, for ``grad_paths``) is None or a set of nodes: a gradient flowing
    into one of them is dropped (a root keeps the gradient it starts with), and the pass is
    quiet: no hooks, no ``retain_grad`` updates, since it sees only part of a gradient
    (``stop=()`` is a quiet pass that stops nowhere).

    ``observe`` (private, for ``stepper``) is None or a callable: ``observe(node, g,
    results)`` runs once per processed node, in processing order, right after its backward
    returned (``g`` is None and ``results`` all None for a node no gradient reached;
    ``results`` are as backward returned them, before reduction to the inputs' shapes), then
    ``observe(leaf, g, None)`` once per leaf in the result, with its final summed gradient.
    It must not modify the arrays it is shown.

    Gradient buffers: an array that a backward returned (fresh, writeable, owning its
    memory) belongs to the engine, which sums further gradients into it in place, hands it
    to the next node's backward (which may write into it: ``ops._reusable``) or makes it a
    leaf's ``.grad``. A gradient someone else may hold — a user's array, what a hook or
    ``retain_grad`` was shown, every gradient of a quiet or observed pass — travels as a
    read-only view instead. An op that declares ``_adds_into`` (``a ** 2``) is offered the
    gradient its first input already holds (``_grad_mode.into``, unless the pass is
    observed); its rule may add its own into that array when the engine owns it, as the sum
    below would, and return it, which leaves nothing to sum.

    Counting: ``pending[node]`` is how many gradients a node still waits for. A plain pass
    starts from the consumers each node counted when it was recorded (``_uses``), which can
    only be more than the pass delivers (a consumer outside it, or one made later): a node
    is never run early, and when the pass runs out of ready nodes with some still waiting,
    the rest of the graph is counted exactly (``_count_dependencies``) and the pass goes on.
    Any other pass (hooks, retained Tensors, ``inputs``, graph mode, quiet or observed)
    counts exactly first, so that it raises for a freed graph before anything runs.
    """
    raw_mode = not graph_mode
    quiet = stop is not None
    hooked = Hooks.live > 0 and not quiet
    retaining = raw_mode and not quiet and Hooks.retains > 0
    lend = raw_mode and (quiet or observe is not None)  # every gradient read-only
    watch = hooked or retaining or lend or inputs is not None
    exact = watch or graph_mode
    pending = _count_dependencies(roots) if exact else {}
    if len(roots) == 1:
        grads = {roots[0]: root_grads[0]}
    else:
        grads = {}
        for r, g in zip(roots, root_grads):
            grads[r] = grads[r] + g if r in grads else g
    if stop:
        grads = _Stopping(grads, stop)
    wanted = None
    captured: dict = {}
    if inputs is not None:
        wanted = {(t._ctx if t._ctx is not None else t): True for t in inputs}
    # only a root can be waiting for nothing: every other node is some node's input
    if len(roots) == 1:  # (the common case, without building a comprehension)
        r = roots[0]
        ready = [r] if isinstance(r, Function) and (pending[r] if exact else r._uses) == 0 \
            else []
    else:
        ready = [r for r in dict.fromkeys(roots)
                 if isinstance(r, Function) and (pending[r] if exact else r._uses) == 0]
    if len(ready) != len(grads):  # leaf roots (backward() on a leaf) take their gradient
        for r in list(grads):
            if isinstance(r, Tensor):
                _deliver_leaf(r, grads.pop(r), wanted, captured)
    pop = ready.pop
    push = ready.append
    get = pending.get
    into = None  # the gradient an _adds_into node's rule was offered (see Function)
    nxt = nxt_g = None  # a node whose one consumer just ran, and its gradient: the next node
    # (as if pushed onto ``ready`` and popped at once, without the trip through ``grads``)
    while True:
        if nxt is not None:
            node = nxt
            g = nxt_g
            nxt = nxt_g = None
        else:
            if not ready:  # done, or nodes wait for consumers this pass does not reach
                if not grads:
                    break
                rest = [n for n, left in pending.items() if left]
                rest += [n for n in grads if isinstance(n, Function) and n not in pending]
                if not rest:
                    break
                pending = _count_dependencies(rest)
                get = pending.get
                ready += [n for n in rest if pending[n] == 0]
            node = pop()
            g = grads.pop(node, None)
        # node.parents, spelled out (see Function): this runs for every node of every pass
        # (an op of one input has _edge1 None: zip() below stops at its one result)
        e0 = node._edge0
        if e0 is FREED:
            raise _freed_graph(node)
        many = node._edges  # (an op of three or more inputs)
        parents = many or (e0, node._edge1)
        if g is not None:
            if watch:
                if hooked and node._hooks:
                    g = _run_hooks(node._hooks, g, graph_mode, node.shape)
                    if raw_mode:
                        g = _lent(g)  # the hooks saw it (and may keep it)
                if wanted is not None and node in wanted:
                    captured[node] = g
                    if raw_mode:
                        g = _lent(g)
                elif lend:
                    g = _lent(g)
                if retaining and node._retained is not None:
                    _retain(node, g)
            # a primitive's gradients have its inputs' dtypes unless it mixed dtypes
            cast = node._mixed
            if node._raw and raw_mode:
                if node._adds_into and observe is None and isinstance(e0, Function):
                    # its rule may add into it and return it as the input's gradient (then
                    # there is nothing left to add: below)
                    into = _grad_mode.into = grads.get(e0)
                results = node.backward(node, g)
            else:
                results = _call_backward(node, g, graph_mode)
        else:
            results = (None,) * len(parents)
            cast = False
        if observe is not None:
            observe(node, g, results)
        for p, gp in zip(parents, results):
            if p is None:
                continue
            if isinstance(p, Function):
                left = get(p)
                if left is None:
                    left = p._uses
                if gp is not None:
                    if gp.shape != p.shape:
                        try:
                            gp = unbroadcast(gp, p.shape)
                        except RuntimeError:
                            raise _shape_error(node, gp.shape, p.shape) from None
                    if cast and gp.dtype != p.dtype:
                        gp = gp.astype(p.dtype)
                    if left == 1 and p not in pending:  # its one consumer: nothing to add
                        if nxt is not None:  # an earlier input was handed one: it waits
                            grads[nxt] = nxt_g
                            push(nxt)
                        nxt = p
                        nxt_g = gp
                        continue
                    if gp is not into:
                        prev = grads.get(p)
                        grads[p] = gp if prev is None else _sum_into(prev, gp)
                left -= 1
                pending[p] = left
                if left == 0:
                    if nxt is not None:  # (kept in the order the two became ready)
                        grads[nxt] = nxt_g
                        push(nxt)
                        nxt = nxt_g = None
                    push(p)
            elif gp is not None:  # a leaf Tensor
                shape = p.data.shape
                if gp.shape != shape:
                    try:
                        gp = unbroadcast(gp, shape)
                    except RuntimeError:
                        raise _shape_error(node, gp.shape, shape) from None
                if cast and gp.dtype != p.data.dtype:
                    gp = gp.astype(p.data.dtype)
                if wanted is None:  # (_deliver_leaf, spelled out for backward())
                    prev = captured.get(p)
                    captured[p] = gp if prev is None else _sum_into(prev, gp)
                else:
                    _deliver_leaf(p, gp, wanted, captured)
        g = results = into = None  # drop this step's arrays before the next node (what gp
        # and prev hold lives on in grads, nxt_g or captured)
        if not retain_graph:
            # free what the node kept: its edges and its saved values, those it has (giving a
            # node an attribute it never had costs more than the whole check)
            node._edge0 = FREED
            if many is not None:
                node._edges = None
            elif parents[1] is not None:
                node._edge1 = None
            if node._inputs:
                node._inputs = FREED
            if node._out is not None:
                node._out = FREED
            if node._saved:  # (save_for_backward: user Functions, the fused norms)
                node._saved = FREED
    if hooked:
        for leaf in [k for k in captured if isinstance(k, Tensor)
                     and getattr(k, "_hooks", None)]:
            g = _run_hooks(leaf._hooks, captured[leaf], graph_mode, leaf.data.shape)
            captured[leaf] = _lent(g) if raw_mode else g  # the hooks saw it: not adopted
    if observe is not None:
        for leaf in [k for k in captured if isinstance(k, Tensor)]:
            observe(leaf, captured[leaf], None)
    if wanted is None:  # backward(): each leaf's gradients were summed first, add them now
        _accumulate_all(captured)
    return captured


def _accumulate_all(grads: dict) -> None:
    """Add each leaf's gradient of this pass into its ``.grad``; one thread at a time.

    A leaf without ``.grad`` adopts an array the engine owns (fresh, writeable, its dtype)
    and copies any other; an existing ``.grad`` is added to in place, as torch does.
    """
    with _accumulate_lock:
        for leaf, g in grads.items():
            cur = leaf.grad
            if cur is None:
                if type(g) is np.ndarray and g.base is None and g.dtype is leaf.data.dtype \
                        and g.flags.writeable:
                    leaf.grad = g  # a fresh array nobody else holds
                else:
                    leaf.grad = np.array(g, dtype=leaf.data.dtype)
            else:
                if cur.shape != leaf.data.shape:
                    raise RuntimeError(f".grad of shape {cur.shape} does not match its "
                                       f"Tensor's shape {leaf.data.shape}")
                cur += g


class _Stopping(dict):
    """``_run``'s gradient slots when ``stop`` is given: nodes in ``stop`` take no gradient
    (only the dict's setup, the roots' starting gradients, writes them)."""

    __slots__ = ("stop",)

    def __init__(self, grads: dict, stop):
        super().__init__(grads)
        self.stop = stop

    def get(self, key, default=None):
        return default if key in self.stop else dict.get(self, key, default)

    def __setitem__(self, key, value) -> None:
        if key not in self.stop:
            dict.__setitem__(self, key, value)


def _run_hooks(hooks: list, g, graph_mode: bool, shape: tuple):
    """Apply ``register_hook`` functions in order: each sees a Tensor and may replace it."""
    for fn in list(hooks):
        arg = g if graph_mode else _wrap(g, None)
        new = fn(arg)
        if new is None:
            continue
        if graph_mode:
            new = new if isinstance(new, Tensor) else _wrap(np.asarray(new), None)
        else:
            new = np.asarray(new.data if isinstance(new, Tensor) else new)
        if tuple(new.shape) != tuple(shape):
            raise RuntimeError(f"a hook returned a gradient of shape {tuple(new.shape)} for a "
                               f"Tensor of shape {tuple(shape)}")
        g = new
    return g


def _retain(node, g) -> None:
    t = node._retained()
    if t is not None:
        t.grad = np.array(g, dtype=t.data.dtype) if t.grad is None else t.grad + g


def _deliver_leaf(leaf: Tensor, g, wanted, captured) -> None:
    """Sum the gradients reaching ``leaf`` in this pass (into ``.grad`` at the end of the pass,
    once, as torch's AccumulateGrad: two retained backward passes add up exactly)."""
    if wanted is not None and leaf not in wanted:
        return
    prev = captured.get(leaf)
    captured[leaf] = g if prev is None else _sum_into(prev, g)


def _sum_into(prev, g):
    """``prev + g``, in place when ``prev`` is an array only the engine's slot holds (owned,
    writeable, same shape and dtype); Tensors (graph mode) are added out of place."""
    if type(prev) is np.ndarray and prev.base is None and prev.shape == g.shape \
            and prev.dtype is g.dtype and prev.flags.writeable:
        if not _add_row_into(prev, g):  # (a mean's gradient, a broadcast row: a loop)
            prev += g
        return prev
    return prev + g


def _root_grad(t: Tensor, g, graph_mode: bool, what: str):
    if g is None:
        if t.data.size != 1:
            raise RuntimeError(
                f"grad can be implicitly created only for outputs with one element; {what} "
                f"has shape {t.shape}: pass a gradient of that shape"
            )
        if graph_mode:
            return _wrap(np.ones(t.data.shape, dtype=t.data.dtype), None)
        return _const(1, t.data.dtype, t.data.shape)  # (read-only: lent, never written)
    if isinstance(g, Tensor):
        gshape = g.shape
    else:
        g = np.asarray(g)
        gshape = g.shape
    if gshape != t.data.shape:
        raise RuntimeError(
            f"mismatch in shape: the gradient for {what} has shape {gshape} but {what} has "
            f"shape {t.shape}"
        )
    if graph_mode:
        return g if isinstance(g, Tensor) else _wrap(np.array(g, dtype=t.data.dtype), None)
    data = g.data if isinstance(g, Tensor) else g
    if data.dtype != t.data.dtype:
        return data.astype(t.data.dtype)
    return _lent(data)  # not owned: a leaf copies it instead of adopting it


def _root_key(t: Tensor, what: str):
    if not t.requires_grad:
        raise RuntimeError(
            f"{what} does not require grad and has no graph: nothing to differentiate "
            "(did you forget requires_grad=True, or compute it under no_grad()?)"
        )
    return t._ctx if t._ctx is not None else t


def backward(tensor: Tensor, gradient=None, retain_graph: bool = False,
             create_graph: bool = False, inputs=None) -> None:
    """``tensor.backward(gradient, retain_graph, inputs=None)``: accumulate into leaves'
    ``.grad`` (only into those in ``inputs`` when given, as torch)."""
    if create_graph:
        raise RuntimeError(
            "backward(create_graph=True) is not supported: .grad is an ndarray here. For "
            "higher-order derivatives use tinygrad_bn.grad(output, inputs, create_graph=True)"
        )
    key = _root_key(tensor, "the output")
    ins = None
    if inputs is not None:
        ins = [inputs] if isinstance(inputs, Tensor) else list(inputs)
        for i, t in enumerate(ins):
            if not isinstance(t, Tensor) or not t.requires_grad or t._ctx is not None:
                raise RuntimeError(f"backward(inputs=...): inputs[{i}] must be a leaf Tensor "
                                   "that requires grad")
    g = _root_grad(tensor, gradient, False, "the output")
    prev = _grad_mode.enabled
    _grad_mode.enabled = False
    try:
        captured = _run([key], [g], retain_graph=retain_graph, graph_mode=False, inputs=ins)
        if ins is not None:
            _accumulate_all(captured)
    finally:
        _grad_mode.enabled = prev


def grad(outputs, inputs, grad_outputs=None, create_graph: bool = False,
         retain_graph: bool | None = None, allow_unused: bool = False) -> tuple:
    """Gradients of ``outputs`` with respect to ``inputs``, like ``torch.autograd.grad``.

    Returns a tuple of Tensors, one per input (None for an unused input when
    ``allow_unused=True``). ``.grad`` attributes are not touched. With ``create_graph=True``
    the results carry a graph of their own, so they can be differentiated again
    (Hessian-vector products). ``retain_graph`` defaults to ``create_graph``.
    """
    outs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    ins = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    if grad_outputs is None or isinstance(grad_outputs, (Tensor, np.ndarray)):
        gouts = [grad_outputs] * len(outs) if grad_outputs is None else [grad_outputs]
    else:
        gouts = list(grad_outputs)
    if len(gouts) != len(outs):
        raise RuntimeError(f"grad: {len(outs)} output(s) but {len(gouts)} grad_outputs")
    for i, t in enumerate(ins):
        if not isinstance(t, Tensor):
            raise TypeError(f"grad: inputs[{i}] is a {type(t).__name__}, not a Tensor")
        if not t.requires_grad:
            raise RuntimeError(f"grad: inputs[{i}] (shape {t.shape}) does not require grad")
    if retain_graph is None:
        retain_graph = create_graph
    keys = [_root_key(t, f"outputs[{i}]") for i, t in enumerate(outs)]
    gs = [_root_grad(t, g, create_graph, f"outputs[{i}]")
          for i, (t, g) in enumerate(zip(outs, gouts))]
    prev = _grad_mode.enabled
    _grad_mode.enabled = bool(create_graph)
    try:
        captured = _run(keys, gs, retain_graph=retain_graph, graph_mode=create_graph,
                        inputs=ins)
    finally:
        _grad_mode.enabled = prev
    result = []
    for i, t in enumerate(ins):
        key = t._ctx if t._ctx is not None else t
        g = captured.get(key)
        if g is None:
            if not allow_unused:
                raise RuntimeError(
                    f"grad: inputs[{i}] (shape {t.shape}) was not used to compute the outputs "
                    "(pass allow_unused=True to get None for it)"
                )
            result.append(None)
        elif isinstance(g, Tensor):
            result.append(g)
        else:
            result.append(_wrap(np.array(g, dtype=t.data.dtype) if g.dtype != t.data.dtype
                                or not g.flags.writeable or g.base is not None else g, None))
    return tuple(result)
