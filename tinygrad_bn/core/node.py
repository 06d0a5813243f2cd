"""Graph nodes: the ``Function`` base class (one node per call), the grad mode and scopes.

A ``Function`` subclass defines ``forward(ctx, *inputs)`` and ``backward(ctx, grad)``.
``Op.apply(*inputs)`` hands the call to ``tensor.apply_op``, which runs ``forward`` with
recording off and, when an input requires a gradient, has ``tensor._record`` (the one routine
that makes nodes) return a Tensor whose ``_ctx`` is the ``ctx`` object: the node of the graph.

This module knows nothing of ``Tensor``; ``tensor.py`` builds on it.

A node points at the nodes of its inputs (or at the leaf Tensors themselves), never at
intermediate Tensors and never at its own output, so intermediate values live only as long as
something saved them, and a graph is freed by reference counting alone (no cycles).
"""
from __future__ import annotations

import functools
import itertools
import threading
from typing import Any


class _GradMode(threading.local):
    """Per-thread switch for graph recording (``no_grad`` in one thread leaves others alone),
    and the innermost open ``scope`` (the norm call or module whose ops are being recorded)."""

    enabled = True
    scope = None
    record = None  # None, or record(node, output_array) for every node made (viz.trace)
    into = None  # backward: the gradient offered to an ``_adds_into`` node's rule (per
    # thread, as passes over one retained graph may run in several threads at once)


_grad_mode = _GradMode()


def is_grad_enabled() -> bool:
    """True when operations on Tensors that require grad are recorded."""
    return _grad_mode.enabled


def set_grad_enabled(mode: bool) -> None:
    """Turn recording on or off in this thread (prefer the context managers)."""
    _grad_mode.enabled = bool(mode)


class _GradModeContext:
    _value = True

    def __enter__(self):
        self._prev = _grad_mode.enabled
        _grad_mode.enabled = self._value
        return self

    def __exit__(self, *exc):
        _grad_mode.enabled = self._prev
        return False

    def __call__(self, fn):
        """Use as a decorator: the wrapped function runs in this grad mode."""
        value = self._value

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            prev = _grad_mode.enabled
            _grad_mode.enabled = value
            try:
                return fn(*args, **kwargs)
            finally:
                _grad_mode.enabled = prev

        return wrapper


class no_grad(_GradModeContext):
    """Context manager (and decorator) that turns graph recording off in this thread."""

    _value = False


class enable_grad(_GradModeContext):
    """Context manager (and decorator) that turns graph recording on in this thread."""

    _value = True


class Scope:
    """A labelled group of graph nodes (one call of a module or of a norm function).

    Nodes recorded while a scope is open get ``node.scope``; ``viz`` draws each scope as a
    cluster. Scopes nest through ``parent``; each call opens a new one.
    """

    __slots__ = ("label", "parent", "kind")

    def __init__(self, label: str, parent: "Scope | None" = None, kind: str = ""):
        self.label = label
        self.parent = parent
        self.kind = kind

    def path(self) -> list:
        """Labels from the outermost scope to this one."""
        out, s = [], self
        while s is not None:
            out.append(s.label)
            s = s.parent
        return out[::-1]

    def __repr__(self):
        return f"Scope({' / '.join(self.path())!r})"


class scope:
    """``with scope("BatchNorm1d (bn1)"):`` groups the nodes recorded inside into one cluster."""

    __slots__ = ("label", "kind", "_prev")

    def __init__(self, label: str, kind: str = ""):
        self.label = label
        self.kind = kind

    def __enter__(self) -> Scope:
        self._prev = _grad_mode.scope
        s = Scope(self.label, self._prev, self.kind)
        _grad_mode.scope = s
        return s

    def __exit__(self, *exc):
        _grad_mode.scope = self._prev
        return False


def current_scope() -> "Scope | None":
    return _grad_mode.scope


class _FreedType:
    __slots__ = ()

    def __repr__(self):
        return "<freed>"


FREED = _FreedType()

_FREED_MESSAGE = (
    "Trying to backward through the graph a second time (or to read saved values after they "
    "were freed): the saved values of {op} were freed by an earlier backward(). Pass "
    "retain_graph=True to the first backward() or grad() call if you need to backward twice."
)


def freed_error(node) -> RuntimeError:
    return RuntimeError(_FREED_MESSAGE.format(op=type(node).__name__))


# -- in-place changes (torch's version counter) ------------------------------------------
# Every in-place change takes a tick of one clock; a node that saves inputs notes the latest
# tick when it is made (`Changes.last`). A saved Tensor whose last change has a later tick is
# stale, and when no change happened since the node was made (the common case) that costs
# one comparison.
tick = itertools.count(1).__next__


class Changes:
    last = 0  # the tick of the latest in-place change of any Tensor


class Hooks:
    live = 0  # how many register_hook() functions exist: backward looks for none while 0
    retains = 0  # retain_grad() calls so far: backward looks for retained Tensors after one
    traces = 0  # viz.trace() blocks open in any thread: new nodes look for one only while > 0


def inplace_error(node, what: str, shape, version) -> RuntimeError:
    return RuntimeError(
        f"one of the values needed for gradient computation has been modified by an in-place "
        f"operation: {what} of shape {tuple(shape)}, saved by {type(node).__name__} "
        f"({node.name}), was changed after it was saved (it is now at version {version}). "
        f"Compute on a copy (x = x + y, or .clone()) instead of modifying it in place."
    )


def check_saved(node, saved) -> None:
    """Raise if a Tensor in ``saved`` changed in place after ``node`` was recorded."""
    if Changes.last <= node._seq:
        return
    for i, t in enumerate(saved):
        if getattr(t, "_changed", 0) > node._seq:
            raise inplace_error(node, f"saved value {i}", t.data.shape, t._version)


class Function:
    """Base class of every graph node; the instance is also the ``ctx`` of its op.

    Subclass it with static (or class) methods::

        class Square(Function):
            @staticmethod
            def forward(ctx, x):            # x: Tensor, recording off
                ctx.save_for_backward(x)
                return x * x
            @staticmethod
            def backward(ctx, grad):        # grad: Tensor shaped like the output
                (x,) = ctx.saved_tensors
                return 2 * x * grad         # one gradient per positional input

        y = Square.apply(t)

    ``forward`` receives the arguments as given (Tensors stay Tensors) and returns a Tensor or
    an ndarray. ``backward`` receives the output's gradient as a Tensor and returns one
    gradient per positional input (``None`` where there is none); when it is written with
    Tensor ops, ``grad(..., create_graph=True)`` differentiates through it again.
    ``ctx.needs_input_grad`` tells which inputs want a gradient; plain attributes set on
    ``ctx`` in ``forward`` are there in ``backward``.

    Node attributes read by the engine and by ``viz``: ``parents`` (one edge per positional
    input: the input's node, the leaf Tensor itself, or None), ``shape`` and ``dtype`` of the
    output, ``out_name`` (the output Tensor's name, if it was given one).

    The edges are kept in the node itself — ``_edge0`` and ``_edge1`` for an op of one or
    two inputs (nearly all), ``_edges`` (a tuple) for three or more — rather than in a tuple
    of their own: a tuple that holds nodes is one more object per node for Python's cyclic
    garbage collector to walk again and again while a long graph is built, and long graphs
    are made of little else. ``parents`` reads them back as a tuple.
    """

    # Primitives (ops.py) set this: their forward/backward run on raw ndarrays when no
    # differentiable backward graph is being built.
    _raw = False
    needs_input_grad: tuple = ()
    shape: tuple = ()
    dtype = None
    out_name: str | None = None
    scope = None  # the module / norm call that made the node (for drawing clusters)
    _edge0: Any = None  # the first input's edge (ops of one or two inputs); FREED once a
    # backward freed the node
    _edge1: Any = None  # the second input's edge (ops of two inputs)
    _edges: tuple | None = None  # all edges, for an op of three or more inputs
    _uses = 0  # edges that nodes recorded later point at this one: where a backward starts
    # counting the gradients it waits for (see autograd._run)
    _saved: Any = ()
    _inputs: Any = ()
    _out: Any = None
    _seq = 0  # the clock's tick when the node was recorded (see check_saved)
    _out_dirty = False  # the output Tensor was modified in place after the node saved it
    _mixed = True  # gradients may come back in other dtypes: backward casts them (primitives
    # say False, and True only where an op mixed dtypes)
    _retained = None  # weakref to an output Tensor that asked for retain_grad()
    _hooks = None  # register_hook() functions of the output Tensor (a list)
    _graph_mode = False  # True while backward builds a differentiable graph
    _adds_into = False  # the op's backward may add its first input's gradient into the one
    # that input already holds, offered by the engine in ``_grad_mode.into`` (autograd._run)

    @property
    def parents(self) -> tuple | None:
        """One edge per positional input: the input's node, the leaf Tensor itself, or None
        (an input that needs no gradient). None once a backward freed the graph."""
        if self._edge0 is FREED:
            return None
        n = len(self.needs_input_grad)
        if n == 2:
            return (self._edge0, self._edge1)
        if n == 1:
            return (self._edge0,)
        return self._edges

    # -- ctx API -----------------------------------------------------------------------
    def save_for_backward(self, *values) -> None:
        """Keep ``values`` (Tensors, ndarrays or None) for ``backward``.

        If a saved Tensor is modified in place before ``backward``, reading it raises (as
        torch's version counter does).
        """
        self._saved = values

    @property
    def saved_tensors(self) -> tuple:
        """What ``forward`` saved; freed by ``backward()`` unless ``retain_graph=True``."""
        saved = self._saved
        if saved is FREED:
            raise freed_error(self)
        check_saved(self, saved)
        return saved

    @property
    def name(self) -> str:
        """The op's name as drawn in graphs (``mul``, ``matmul``, ...)."""
        return type(self).__dict__.get("op_name") or type(self).__name__.lower()

    def describe(self) -> str:
        """A short note on this node's settings for a drawing's second line (``axis=0``,
        ``× 2``, ``perm=(1, 0)``), or "" when the op's name says it all. Ops override it."""
        return ""

    def __repr__(self):
        return f"<{type(self).__name__} node, output shape {self.shape}>"

    # -- subclass interface ------------------------------------------------------------
    @staticmethod
    def forward(ctx, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError("Function subclasses must implement forward(ctx, ...)")

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - abstract
        raise NotImplementedError("Function subclasses must implement backward(ctx, grad)")

    # -- application -------------------------------------------------------------------
    @classmethod
    def apply(cls, *args, **kwargs):
        """Run ``forward`` on the inputs; record a node when an input requires grad."""
        from .tensor import apply_op  # tensor.py imports this module, so import on use

        return apply_op(cls, args, kwargs)


class _NoCtx:
    """The ctx a primitive's forward gets when nothing records: it keeps nothing."""

    __slots__ = ()
    needs_input_grad = ()

    def save_for_backward(self, *values) -> None:
        pass

    def __setattr__(self, name, value) -> None:
        pass


NO_CTX = _NoCtx()
