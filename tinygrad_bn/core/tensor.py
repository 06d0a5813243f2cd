"""``Tensor``: an ndarray, its gradient, and the node of the graph that made it.

Every node of a graph is made by one routine, ``_record``: it runs a primitive's forward and
records the node — its edges, what backward will read (the op's declared ``save_inputs`` /
``save_for`` / ``save_output``, with the clock's tick for in-place changes), its output's
shape, dtype, scope and trace. ``apply_op`` is the general entrance (any op, any number of
inputs; it finds the edges); Tensor methods and operators are thin: they check arguments the
way torch does, then hand over to ``_unary`` / ``_binary`` / ``apply_op``.
"""
from __future__ import annotations

import warnings
import weakref
from collections import namedtuple
from typing import Any

import numpy as np

from . import ops
from .node import NO_CTX, Changes, Function, Hooks, _grad_mode, tick

_new = object.__new__
_ndarray = np.ndarray
_EMPTY: dict = {}


# ----------------------------------------------------------------------- the one routine
def apply_op(fn, args: tuple, params: dict = _EMPTY, datas=None) -> "Tensor":
    """Apply op ``fn`` (a Function class) to ``args``, recording a node when an input needs it.

    Primitives (``fn._raw``) compute on ndarrays (``datas``, the arrays behind ``args``
    unless the caller already converted them); other Functions receive the arguments as
    given, with recording off. When grad mode is on and a Tensor argument requires grad,
    ``_record`` makes the node. Operators and methods with one or two inputs call
    ``_record`` directly (``_unary``, ``_binary``) once they know the edges.
    """
    # Edges and arrays, spelled out for one and two inputs: this runs for every op, and a
    # loop or comprehension would cost more than the rest of the routine.
    edges = None
    n = len(args)
    if n == 1:
        a = args[0]
        if isinstance(a, Tensor):
            if datas is None:
                datas = (a.data,)
            if a.requires_grad and _grad_mode.enabled:
                edges = (a._ctx or a,)
                needs = _NEED1
    elif n == 2:
        a, b = args
        ea = eb = None
        if isinstance(a, Tensor):
            if a.requires_grad:
                ea = a._ctx or a
            a = a.data
        if isinstance(b, Tensor):
            if b.requires_grad:
                eb = b._ctx or b
            b = b.data
        if datas is None:
            datas = (a, b)
        if (ea is not None or eb is not None) and _grad_mode.enabled:
            edges = (ea, eb)
            needs = _NEEDS2[ea is None][eb is None]
    elif n == 3:  # Linear (x, W, b), the fused norms (x, γ, β)
        a, b, c = args
        ea = eb = ec = None
        if isinstance(a, Tensor):
            if a.requires_grad:
                ea = a._ctx or a
            a = a.data
        if isinstance(b, Tensor):
            if b.requires_grad:
                eb = b._ctx or b
            b = b.data
        if isinstance(c, Tensor):
            if c.requires_grad:
                ec = c._ctx or c
            c = c.data
        if datas is None:
            datas = (a, b, c)
        if (ea is not None or eb is not None or ec is not None) and _grad_mode.enabled:
            edges = (ea, eb, ec)
            needs = _NEEDS3[ea is None][eb is None][ec is None]
    else:
        es = []
        ns = []
        ds = []
        record = False
        for a in args:
            if isinstance(a, Tensor):
                ds.append(a.data)
                if a.requires_grad:
                    es.append(a._ctx or a)
                    ns.append(True)
                    record = True
                    continue
            else:
                ds.append(a)
            es.append(None)
            ns.append(False)
        if datas is None:
            datas = ds
        if record and _grad_mode.enabled:
            edges = tuple(es)
            needs = tuple(ns)
    if fn._raw:
        if edges is None:
            return _wrap(fn.forward(NO_CTX, *datas, **params), None)
        return _record(fn, args, params, datas, edges, needs)
    ctx = fn()
    if edges is not None:  # known before forward, as in torch
        ctx.needs_input_grad = needs
        ctx._seq = Changes.last
    prev = _grad_mode.enabled
    _grad_mode.enabled = False
    try:
        out = fn.forward(ctx, *args, **params)
    finally:
        _grad_mode.enabled = prev
    if isinstance(out, Tensor):
        out = out.data
    elif isinstance(out, (tuple, list)):
        raise TypeError(
            f"{fn.__name__}.forward returned a {type(out).__name__}; a Function has "
            "exactly one output (a Tensor or an ndarray)"
        )
    if edges is None:
        return _wrap(out, None)
    return _record(fn, args, params, datas, edges, needs, ctx, out)


def _record(fn, args, params, datas, edges, needs, ctx=None, out=None) -> "Tensor":
    """Make one node — the only place a node is created — and its output Tensor.

    For a primitive (``ctx`` None) run ``forward`` on ``datas`` and keep what it declares
    (``Primitive.save_plan``): the inputs in ``save_inputs`` (those whose gradient is wanted,
    per ``save_for``) with the clock's tick (a later in-place change makes them stale), and
    the output if ``save_output`` (when a wanted gradient reads it). A user ``Function``
    arrives with its ``ctx`` and ``out`` (it saved what it wanted itself). Then the node gets
    its edges (each input's node counts one more use: see ``autograd._run``), and the output
    its shape, dtype, scope and trace statistics.
    """
    n = len(edges)  # (one per input, as datas)
    if ctx is None:
        ctx = fn()
        ctx.needs_input_grad = needs
        # (spelled out for one to three inputs: a call with *datas costs more than the rest
        # of this line)
        if params:
            out = fn.forward(ctx, *datas, **params)
        elif n == 2:
            out = fn.forward(ctx, datas[0], datas[1])
        elif n == 1:
            out = fn.forward(ctx, datas[0])
        elif n == 3:
            out = fn.forward(ctx, datas[0], datas[1], datas[2])
        else:
            out = fn.forward(ctx, *datas)
        keep, keep_out = fn._plans.get(needs) or fn.save_plan(needs)
        if keep is not None:
            saved = args[fn._save_slice]
            if keep is not True:  # drop the inputs that no wanted gradient reads
                if len(saved) == 2:
                    saved = (saved[0] if keep[0] else None, saved[1] if keep[1] else None)
                else:
                    saved = tuple([x if k else None for x, k in zip(saved, keep)])
            ctx._inputs = saved
            ctx._seq = Changes.last  # saved Tensors changed in place after this are stale
        if keep_out:
            ctx._out = out
    # the edges, kept in the node itself (see Function)
    if n == 2:
        e0, e1 = edges
        ctx._edge0 = e0
        ctx._edge1 = e1
        if isinstance(e0, Function):
            e0._uses += 1
        if isinstance(e1, Function):
            e1._uses += 1
    elif n == 1:
        e0 = ctx._edge0 = edges[0]
        if isinstance(e0, Function):
            e0._uses += 1
    else:
        ctx._edge0 = edges[0]  # (set here, so that freeing it later adds no attribute)
        ctx._edges = edges
        for e in edges:
            if isinstance(e, Function):
                e._uses += 1
    if type(out) is not _ndarray:
        out = np.asarray(out)
    t = _new(Tensor)  # as _wrap, spelled out: this is every recorded op's output
    t.data = out
    t.grad = None
    t._ctx = ctx
    t._name = None
    t.requires_grad = True
    ctx.shape = out.shape
    ctx.dtype = out.dtype
    sc = _grad_mode.scope
    if sc is not None:
        ctx.scope = sc
    if Hooks.traces:  # viz.trace() is open somewhere: in this thread?
        rec = _grad_mode.record
        if rec is not None:
            rec(ctx, out)
    return t


def _unary(fn, x: "Tensor", params: dict = _EMPTY) -> "Tensor":
    """A one-input primitive on Tensor ``x``: ``_record`` when it needs a node, else the
    bare forward (the routine ``apply_op`` would decide the same, a little slower)."""
    if x.requires_grad and _grad_mode.enabled:
        return _record(fn, (x,), params, (x.data,), (x._ctx or x,), _NEED1)
    return _wrap(fn.forward(NO_CTX, x.data, **params), None)


_NEED1 = (True,)
_NEEDS2 = (((True, True), (True, False)), ((False, True), (False, False)))  # [not a][not b]
_NEEDS3 = tuple(tuple(tuple((not a, not b, not c) for c in (False, True)) for b in (False, True))
                for a in (False, True))  # [not a][not b][not c]


def _wrap(data, ctx) -> "Tensor":
    """A Tensor around an op's result (``ctx``: its node, or None). Touches nothing else:
    re-wrapping an output for ``create_graph`` goes through here too, so it never changes
    a node's scope or trace."""
    if type(data) is not _ndarray:
        data = np.asarray(data)
    t = _new(Tensor)
    t.data = data
    t.grad = None
    t._ctx = ctx
    t._name = None
    t.requires_grad = ctx is not None
    return t


def _edge(a):
    """The graph edge to input ``a``: its node, the leaf Tensor itself, or None."""
    if isinstance(a, Tensor) and a.requires_grad:
        return a._ctx if a._ctx is not None else a
    return None


# ------------------------------------------------------------------------- dtypes
_DEFAULT_FLOAT = _F32 = np.dtype(np.float32)


def compute_dtype(dtype) -> np.dtype:
    """The dtype an op computes in: float32 for float16 (torch's accumulation type on the
    CPU), else the dtype itself (the norms and the convolutions)."""
    dtype = np.dtype(dtype)
    return _F32 if dtype.char == "e" else dtype
_F64 = np.dtype(np.float64)
_INT64 = np.dtype(np.int64)
_BOOL = np.dtype(np.bool_)
_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}


def _promote(x: np.dtype, y: np.dtype) -> np.dtype:
    """torch's ``promote_types``: a higher category (bool < int < float) wins outright."""
    cx, cy = _CATEGORY[x.kind], _CATEGORY[y.kind]
    if cx != cy:
        return x if cx > cy else y
    return np.promote_types(x, y)


def _combine(higher, lower):
    """torch's rule for letting 0-d tensors and Python scalars raise only the category."""
    if higher is None:
        return lower
    if lower is None:
        return higher
    if higher.kind in "fc":
        return higher
    if higher.kind == "b" or lower.kind in "fc":
        return _promote(higher, lower)
    return higher


def result_type(*operands) -> np.dtype:
    """The dtype of an elementwise op on ``operands`` under PyTorch's promotion rules.

    Operands are ndarrays (Tensor data) or Python scalars. Tensors with dimensions decide
    the dtype within a category; 0-d tensors and Python scalars only raise the category
    (``float32 (3,) + float64 0-d`` is float32, ``int64 (3,) + 2.5`` is float32).
    """
    dim = zero = wrapped = None
    for x in operands:
        if isinstance(x, _ndarray):
            dt = x.dtype
            if x.ndim:
                dim = dt if dim is None else _promote(dim, dt)
            else:
                zero = dt if zero is None else _promote(zero, dt)
        else:
            if isinstance(x, bool):
                dt = _BOOL
            elif isinstance(x, int):
                dt = _INT64
            elif isinstance(x, float):
                dt = _DEFAULT_FLOAT
            else:
                dt = np.dtype(np.complex64)
            wrapped = dt if wrapped is None else _promote(wrapped, dt)
    return _combine(dim, _combine(zero, wrapped))


def _operand(x):
    """A non-Tensor operand as NumPy sees it: Python scalars stay weak (take the Tensor's dtype)."""
    if isinstance(x, (int, float, bool)):
        return x
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, _ndarray):
        return x
    if isinstance(x, (list, tuple)):
        return np.asarray(x)
    raise TypeError(f"unsupported operand type for a Tensor operation: {type(x).__name__}")


def _broadcastable(s1: tuple, s2: tuple) -> bool:
    for x, y in zip(reversed(s1), reversed(s2)):
        if x != y and x != 1 and y != 1:
            return False
    return True


def _fits_in_place(shape: tuple, target: tuple) -> bool:
    """A value of ``shape`` broadcasts to ``target`` without growing it (in-place updates)."""
    return shape == target or (_broadcastable(target, shape)
                               and np.broadcast_shapes(target, shape) == target)


def _cast(x, dtype):
    return x.astype(dtype) if isinstance(x, _ndarray) and x.dtype != dtype else x


def _binary(fn, a, b) -> "Tensor":
    """An elementwise two-input primitive on Tensors, ndarrays or scalars, with torch's
    type promotion. A failure is reported as a broadcasting error only when the shapes do
    not broadcast; every other error of the op passes through unchanged."""
    if isinstance(a, Tensor):
        ad = a.data
        ra = a.requires_grad
    else:
        ad = a if type(a) is float or type(a) is int else _operand(a)
        ra = False
    if isinstance(b, Tensor):
        bd = b.data
        rb = b.requires_grad
    else:
        bd = b if type(b) is float or type(b) is int else _operand(b)
        rb = False
    # one side is a Tensor, so at least one of ad, bd is an ndarray; two float arrays of one
    # dtype, or a float array and a Python number, need nothing (a weak scalar keeps the dtype)
    mixed = False
    if type(bd) is _ndarray:
        dt = bd.dtype
        if type(ad) is _ndarray:
            if ad.dtype is not dt or (dt is not _F32 and dt is not _F64):
                ad, bd, mixed = _promote_operands(fn, ad, bd)
        elif (dt is not _F32 and dt is not _F64) or type(ad) is bool:
            ad, bd, mixed = _promote_operands(fn, ad, bd)
    elif ((dt := ad.dtype) is not _F32 and dt is not _F64) or type(bd) is bool:
        ad, bd, mixed = _promote_operands(fn, ad, bd)
    try:
        if (ra or rb) and _grad_mode.enabled:
            t = _record(fn, (a, b), _EMPTY, (ad, bd),
                        ((a._ctx or a) if ra else None, (b._ctx or b) if rb else None),
                        _NEEDS2[not ra][not rb])
            if mixed:
                t._ctx._mixed = True  # backward casts each gradient to its input's dtype
            return t
        # nothing to record: the one shortcut past apply_op (see benchmarks/README.md)
        return _wrap(fn.forward(NO_CTX, ad, bd), None)
    except ValueError:
        sa, sb = np.shape(ad), np.shape(bd)
        if not _broadcastable(sa, sb):
            raise ValueError(f"{fn.__name__.lower()}: shapes {sa} and {sb} do not "
                             "broadcast") from None
        raise


def _promote_operands(fn, ad, bd) -> tuple:
    """Cast the operands of an elementwise op to torch's result type; refuse what torch
    refuses (subtraction with bools, bool ** bool). True division of integers is float32."""
    a_bool = _is_bool(ad)
    b_bool = _is_bool(bd)
    if fn is ops.Sub and (a_bool or b_bool):
        raise RuntimeError(_BOOL_SUB)
    if fn is ops.Pow and a_bool and b_bool and isinstance(bd, np.ndarray):
        raise NotImplementedError("pow is not implemented for bool Tensors")
    rt = result_type(ad, bd)
    if fn is ops.Div and rt.kind in "biu":
        rt = _DEFAULT_FLOAT
    mixed = getattr(ad, "dtype", rt) != rt or getattr(bd, "dtype", rt) != rt
    return _cast(ad, rt), _cast(bd, rt), mixed


def _float_input(t: "Tensor") -> "Tensor":
    """Integer and bool Tensors become float32 for float-valued functions (as torch);
    float16 stays."""
    if t.data.dtype.kind in "fc":
        return t
    return Tensor._wrap(t.data.astype(_DEFAULT_FLOAT), None)


# ------------------------------------------------------------------------- arguments
class AxisError(IndexError, ValueError):
    """An axis (dim) out of range: an IndexError as in torch, also a ValueError."""


def _pick(name: str, torch_value, numpy_name: str, numpy_value, default=None):
    """One of two spellings of an argument (``dim``/``axis``, ``keepdim``/``keepdims``)."""
    if numpy_value is not None:
        if torch_value is not None:
            raise TypeError(f"got both {name}= and {numpy_name}=; pass one of them")
        return numpy_value
    return default if torch_value is None else torch_value


def _norm_axis(axis: int, ndim: int, shape=None, extra: int = 0) -> int:
    """One axis as a non-negative int; ``extra=1`` for ``unsqueeze`` (one past the end)."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"dim must be an int, got {type(axis).__name__} {axis!r}")
    n = max(ndim + extra, 1)
    if not -n <= axis < n:
        raise AxisError(
            f"dimension out of range (expected to be in range of [{-n}, {n - 1}], but got "
            f"{axis}) for a tensor of shape {tuple(shape if shape is not None else ())}"
        )
    return int(axis) % n if ndim + extra else 0


_ALL_AXES = [tuple(range(n)) for n in range(33)]


def normalize_axis(axis, ndim: int, shape=None) -> tuple:
    """``axis`` (None, int or tuple) as a sorted tuple of non-negative axes; AxisError if bad.

    An empty tuple means every axis, as in torch.
    """
    if axis is None or axis == ():
        return _ALL_AXES[ndim] if ndim < 33 else tuple(range(ndim))
    if type(axis) is int and -ndim <= axis < ndim:  # the common case, without the checks
        return (axis % ndim,)
    if type(axis) is tuple:  # a tuple of dims seen before (checked then)
        try:
            cached = _AXES_CACHE.get((axis, ndim))
        except TypeError:  # unhashable entries: the checks below say what is wrong
            cached = None
        if cached is not None:
            return cached
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = [_norm_axis(a, ndim, shape) for a in axes]
    if len(set(out)) != len(out):
        raise ValueError(f"dim {axis!r} repeats an axis")
    result = tuple(sorted(out)) if ndim else ()
    if type(axis) is tuple and len(_AXES_CACHE) < 1024 and all(type(a) is int for a in axis):
        _AXES_CACHE[(axis, ndim)] = result
    return result


_AXES_CACHE: dict = {}  # (tuple of int dims, ndim) -> normalized axes


def _shape_arg(shape) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(s) for s in shape)


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


MaxResult = namedtuple("MaxResult", ["values", "indices"])
MaxResult.__doc__ = "What ``max(dim)`` / ``min(dim)`` return, as torch: ``(values, indices)``."


class RemovableHandle:
    """What ``register_hook`` returns: ``.remove()`` unregisters the hook."""

    def __init__(self, hooks: list, fn):
        self._hooks = hooks
        self._fn = fn
        Hooks.live += 1

    def remove(self) -> None:
        if self._fn in self._hooks:
            self._hooks.remove(self._fn)
            Hooks.live -= 1


_LEAF_INPLACE = (
    "a leaf Tensor that requires grad is being used in an in-place operation ({op}); update "
    "parameters under `with no_grad():` (e.g. `with no_grad(): p -= lr * p.grad`)"
)
_GRAPH_INPLACE = (
    "in-place {op} on a Tensor that is part of a recorded graph is not supported; write it "
    "out of place, e.g. `x = x + y` instead of `x += y`"
)


# ---------------------------------------------------------------------------- Tensor
class Tensor:
    """An n-dimensional array that records the operations applied to it.

    ``Tensor(data, requires_grad=False, dtype=None, name=None)`` copies ``data``. An ndarray
    keeps its dtype; Python numbers and lists become float32 (PyTorch's default float
    dtype; unlike ``torch.tensor``, integer lists too — ``tinygrad_bn.tensor`` follows
    ``torch.tensor``). Only floating-point Tensors can require gradients.

    Operations follow PyTorch: type promotion, ``dim``/``keepdim`` (NumPy's
    ``axis``/``keepdims`` are accepted too), ``var``/``std`` unbiased by default,
    ``max(dim)`` returning ``(values, indices)``, ``transpose(dim0, dim1)`` swapping two
    axes, in-place operators with a version counter.

    Attributes: ``data`` (ndarray), ``grad`` (ndarray shaped like ``data``, or None),
    ``requires_grad``, ``name``; ``shape``, ``dtype``, ``ndim``, ``size``.
    """

    # set only when used: _v (the version: in-place changes so far), _changed (the clock's
    # tick at the latest one), _base (the Tensor whose memory a view shares), _hooks (a
    # leaf's register_hook functions)
    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_name", "_v", "_changed", "_base",
                 "_hooks", "__weakref__")
    __array_ufunc__ = None  # ndarray (op) Tensor defers to Tensor's reflected operator
    __array_priority__ = 1000

    def __init__(self, data: Any, requires_grad: bool = False, dtype=None,
                 name: str | None = None):
        if isinstance(data, Tensor):
            data = data.data
        if dtype is not None:
            dtype = np.dtype(dtype)
        if isinstance(data, (np.ndarray, np.generic)):
            # keeps a C or Fortran layout (as torch.tensor); a broadcast (zero-stride) view
            # becomes C-contiguous
            order = "C" if 0 in np.shape(data) or 0 in getattr(data, "strides", ()) else "K"
            arr = np.array(data, dtype=dtype, copy=True, order=order)
        else:
            arr = np.array(data, dtype=dtype)
            if dtype is None and arr.dtype.kind in "iuf":
                arr = arr.astype(np.float32)
        if arr.dtype == object:
            raise TypeError(f"cannot make a Tensor from {type(data).__name__} data "
                            "(ragged lists or non-numeric objects)")
        self.data = arr
        self.grad = None
        self._ctx = None
        self._name = name
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    _wrap = staticmethod(_wrap)

    # -- constructors (also top-level functions: tinygrad_bn.zeros, ...) ------------------
    @classmethod
    def zeros(cls, *shape, dtype=np.float32, requires_grad=False, name=None) -> "Tensor":
        """A Tensor of zeros of ``shape``."""
        return cls(np.zeros(_shape_arg(shape), dtype=dtype), requires_grad, name=name)

    @classmethod
    def ones(cls, *shape, dtype=np.float32, requires_grad=False, name=None) -> "Tensor":
        """A Tensor of ones of ``shape``."""
        return cls(np.ones(_shape_arg(shape), dtype=dtype), requires_grad, name=name)

    @classmethod
    def randn(cls, *shape, dtype=np.float32, requires_grad=False, name=None,
              rng: np.random.Generator | int | None = None) -> "Tensor":
        """Standard-normal samples of ``shape`` (``rng``: a Generator, a seed, or None for
        the default generator that ``manual_seed`` seeds)."""
        from .factories import generator

        rng = generator() if rng is None else np.random.default_rng(rng)
        return cls(rng.standard_normal(_shape_arg(shape)).astype(dtype), requires_grad,
                   name=name)

    # -- basic properties ------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> "_Size":
        """Number of elements as an int (NumPy's ``size``); called, torch's ``size()``:
        ``x.size()`` is the shape and ``x.size(dim)`` one of its entries."""
        return _Size(self.data.size, self.data.shape)

    def numel(self) -> int:
        return self.data.size

    def dim(self) -> int:
        """Number of axes (torch's ``dim()``)."""
        return self.data.ndim

    @property
    def name(self) -> str | None:
        return self._name

    @name.setter
    def name(self, value: str | None) -> None:
        self._name = value
        if self._ctx is not None:
            self._ctx.out_name = value

    @property
    def is_leaf(self) -> bool:
        """True for Tensors made by the user (not by a recorded op)."""
        return self._ctx is None

    @property
    def grad_fn(self):
        """The node that made this Tensor (None for leaves)."""
        return self._ctx

    def named(self, name: str) -> "Tensor":
        """Set ``name`` and return self (handy inside expressions)."""
        self.name = name
        return self

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        """Set ``requires_grad`` on a leaf in place; returns self."""
        if self._ctx is not None and not requires_grad:
            raise RuntimeError(
                "requires_grad can only be turned off on leaf Tensors; use detach() instead"
            )
        if requires_grad and self.data.dtype.kind not in "fc":
            raise RuntimeError(
                f"only floating-point Tensors can require gradients, got dtype {self.dtype}"
            )
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self) -> "Tensor":
        """Keep ``.grad`` for this non-leaf Tensor after ``backward()`` (leaves always do)."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad() on a Tensor that does not require grad")
        if self._ctx is not None:
            self._ctx._retained = weakref.ref(self)
            Hooks.retains += 1
        return self

    def register_hook(self, fn) -> RemovableHandle:
        """Call ``fn(grad)`` when the gradient of this Tensor is computed, as torch.

        ``grad`` is a Tensor; ``fn`` returns None or a replacement gradient (a Tensor or an
        ndarray of the same shape). On a leaf the hook sees the gradient summed over the
        backward pass, before it is added to ``.grad``. Returns a handle: ``.remove()``.
        """
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a Tensor that does not require grad")
        if self._ctx is not None:
            if self._ctx._hooks is None:
                self._ctx._hooks = []
            hooks = self._ctx._hooks
        else:
            hooks = getattr(self, "_hooks", None)  # a slot set only when used
            if hooks is None:
                hooks = self._hooks = []
        hooks.append(fn)
        return RemovableHandle(hooks, fn)

    def numpy(self) -> np.ndarray:
        """The underlying ndarray (shared, not copied)."""
        return self.data

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a Tensor with one element, got shape {self.shape}")
        return self.data.item()

    def tolist(self):
        return self.data.tolist()

    def detach(self) -> "Tensor":
        """A Tensor sharing this data (and its version counter), cut from the graph."""
        t = Tensor._wrap(self.data, None)
        t._base = _base_of(self)
        return t

    def clone(self) -> "Tensor":
        """A copy in new memory; differentiable (the gradient passes through)."""
        return _unary(ops.Clone, self)

    def zero_grad(self) -> None:
        self.grad = None

    def __repr__(self) -> str:
        body = np.array2string(self.data, precision=4, separator=", ", threshold=64,
                               edgeitems=3, prefix="Tensor(")
        parts = [f"shape={self.shape}", f"dtype={self.dtype}"]
        if self._ctx is not None:
            parts.append(f"op={self._ctx.name}")
        elif self.requires_grad:
            parts.append("requires_grad=True")
        if self._name:
            parts.append(f"name={self._name!r}")
        return f"Tensor({body}, {', '.join(parts)})"

    def __len__(self) -> int:
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d Tensor")
        return self.data.shape[0]

    def __iter__(self):
        if self.data.ndim == 0:
            raise TypeError("iteration over a 0-d Tensor")
        return (self[i] for i in range(self.data.shape[0]))

    def __bool__(self) -> bool:
        return bool(self.data)

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self.data.dtype.kind not in "iu" or self.data.size != 1:
            raise TypeError("only integer Tensors of a single element can be used as an index")
        return int(self.data.item())

    __hash__ = object.__hash__

    # -- autograd ------------------------------------------------------------------------
    def backward(self, gradient=None, retain_graph: bool = False, create_graph: bool = False,
                 inputs=None) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad
        (or only for the leaves in ``inputs``).

        ``gradient`` (same shape as self) is required unless self has one element. The
        graph's saved values are freed afterwards unless ``retain_graph=True``. For
        ``create_graph`` use ``tinygrad_bn.grad`` (``.grad`` is an ndarray here).
        """
        _backward(self, gradient, retain_graph, create_graph, inputs)

    # -- arithmetic ----------------------------------------------------------------------
    def __add__(self, other):
        return _binary(ops.Add, self, other)

    def __radd__(self, other):
        return _binary(ops.Add, other, self)

    def __sub__(self, other):
        return _binary(ops.Sub, self, other)

    def __rsub__(self, other):
        return _binary(ops.Sub, other, self)

    def __mul__(self, other):
        return _binary(ops.Mul, self, other)

    def __rmul__(self, other):
        return _binary(ops.Mul, other, self)

    def __truediv__(self, other):
        return _binary(ops.Div, self, other)

    def __rtruediv__(self, other):
        return _binary(ops.Div, other, self)

    def __pow__(self, other):
        return _binary(ops.Pow, self, other)

    def __rpow__(self, other):
        return _binary(ops.Pow, other, self)

    def __matmul__(self, other):
        other = other if isinstance(other, Tensor) else np.asarray(_operand(other))
        if self.data.dtype.kind == "b" or _is_bool(other):
            raise NotImplementedError("matmul is not implemented for bool Tensors")
        return apply_op(ops.MatMul, (self, other))

    def __rmatmul__(self, other):
        other = np.asarray(_operand(other))
        if self.data.dtype.kind == "b" or other.dtype.kind == "b":
            raise NotImplementedError("matmul is not implemented for bool Tensors")
        return apply_op(ops.MatMul, (other, self))

    def __neg__(self):
        if self.data.dtype == np.bool_:
            raise RuntimeError("negation, the `-` operator, on a bool Tensor is not supported; "
                               "use ~ (logical not) to invert a mask")
        return _unary(ops.Neg, self)

    def __pos__(self):
        return self

    # torch's method spellings of the operators
    def add(self, other):
        return self + other

    def sub(self, other):
        return self - other

    def mul(self, other):
        return self * other

    def div(self, other):
        return self / other

    def pow(self, exponent):
        return self ** exponent

    def matmul(self, other):
        return self @ other

    def neg(self):
        return -self

    def t(self) -> "Tensor":
        """The transpose of a matrix (a 0-d or 1-D Tensor is returned as it is), as torch."""
        if self.data.ndim > 2:
            raise ValueError(f"t() expects a tensor with <= 2 dimensions, but got shape "
                             f"{self.shape}; use transpose(dim0, dim1) or permute")
        return self.transpose()

    def cpu(self) -> "Tensor":
        """This Tensor (everything lives in host memory here)."""
        return self

    def contiguous(self) -> "Tensor":
        """This Tensor if its memory is contiguous, else a contiguous copy (``clone``)."""
        return self if self.data.flags.c_contiguous else self.clone()

    def __invert__(self):
        if self.data.dtype.kind not in "biu":
            raise TypeError(f"~ needs a bool or integer Tensor, got {self.dtype}")
        return Tensor._wrap(~self.data, None)

    # comparisons give boolean Tensors outside the graph (like torch)
    def _compare(self, other, fn):
        other = other.data if isinstance(other, Tensor) else _operand(other)
        a = self.data
        if type(other) is _ndarray and other.dtype != a.dtype:  # compared in torch's common
            rt = result_type(a, other)  # dtype: float32 [0.1] == float64 0-d 0.1 is True
            a, other = _cast(a, rt), _cast(other, rt)
        return Tensor._wrap(fn(a, other), None)

    def __eq__(self, other):  # type: ignore[override]
        return self._compare(other, np.equal)

    def __ne__(self, other):  # type: ignore[override]
        return self._compare(other, np.not_equal)

    def __lt__(self, other):
        return self._compare(other, np.less)

    def __le__(self, other):
        return self._compare(other, np.less_equal)

    def __gt__(self, other):
        return self._compare(other, np.greater)

    def __ge__(self, other):
        return self._compare(other, np.greater_equal)

    # -- in place ------------------------------------------------------------------------
    def _check_inplace(self, op: str, other=None) -> None:
        """Torch's rules for modifying a Tensor in place (checked before anything changes)."""
        if _grad_mode.enabled:
            if self.requires_grad and self._ctx is None:
                raise RuntimeError(_LEAF_INPLACE.format(op=op))
            if self.requires_grad or (isinstance(other, Tensor) and other.requires_grad):
                raise RuntimeError(_GRAPH_INPLACE.format(op=op))
        if not self.data.flags.writeable:
            raise RuntimeError(
                f"in-place {op}: this Tensor's memory is read-only (e.g. the result of "
                "expand(), where several elements share one location); clone() it first"
            )

    @property
    def _version(self) -> int:
        """How many times this Tensor was modified in place (torch's ``_version``)."""
        return getattr(self, "_v", 0)

    def _bump_version(self) -> None:
        """Note an in-place change: saved copies of this Tensor (and of Tensors sharing its
        memory through detach()/views) become stale, so a backward that reads them raises."""
        now = Changes.last = tick()
        t = self
        while t is not None:
            t._v = t._version + 1
            t._changed = now
            if t._ctx is not None and t._ctx._out is not None:
                t._ctx._out_dirty = True
            t = getattr(t, "_base", None)

    def _inplace(self, ufunc, other, op: str, true_div: bool = False) -> "Tensor":
        self._check_inplace(op, other)
        od = other.data if isinstance(other, Tensor) else _operand(other)
        a = self.data
        rt = result_type(a, od)
        if true_div and rt.kind in "biu":
            rt = _DEFAULT_FLOAT
        if not np.can_cast(rt, a.dtype, casting="same_kind"):
            raise RuntimeError(
                f"in-place {op}: result type {rt} can't be cast to the Tensor's dtype "
                f"{a.dtype}; write it out of place (x = x {op_symbol(op)} y) to get a new dtype"
            )
        oshape = np.shape(od)
        if not _fits_in_place(oshape, a.shape):
            raise ValueError(
                f"in-place {op}: a value of shape {oshape} cannot update a Tensor of shape "
                f"{a.shape} in place (the broadcast shape would differ)"
            )
        ufunc(a, _cast(od, rt), out=a, casting="unsafe", dtype=rt)
        self._bump_version()
        return self

    def __iadd__(self, other):
        return self._inplace(np.add, other, "add")

    def __isub__(self, other):
        return self._inplace(np.subtract, other, "sub")

    def __imul__(self, other):
        return self._inplace(np.multiply, other, "mul")

    def __itruediv__(self, other):
        return self._inplace(np.true_divide, other, "div", true_div=True)

    def __setitem__(self, idx, value) -> None:
        """``t[idx] = value`` in place (value cast to this dtype, broadcast to the slot)."""
        self._check_inplace("index assignment", value)
        idx = _index(idx)
        v = value.data if isinstance(value, Tensor) else _operand(value)
        try:
            self.data[idx] = v
        except (ValueError, IndexError) as e:
            raise type(e)(f"t[{idx!r}] = value of shape {np.shape(v)} for a Tensor of shape "
                          f"{self.shape}: {e}") from None
        self._bump_version()

    def zero_(self) -> "Tensor":
        """Set every element to 0 in place; returns self."""
        return self.fill_(0)

    def fill_(self, value) -> "Tensor":
        """Set every element to ``value`` (a number or a one-element Tensor) in place."""
        self._check_inplace("fill_", value)
        v = value.data if isinstance(value, Tensor) else value
        if np.size(v) != 1 or (isinstance(value, Tensor) and value.ndim):
            raise RuntimeError(f"fill_ needs a number or a 0-d Tensor, got shape {np.shape(v)}")
        self.data[...] = v
        self._bump_version()
        return self

    def copy_(self, src) -> "Tensor":
        """Copy ``src`` (broadcast to this shape, cast to this dtype) into self in place."""
        self._check_inplace("copy_", src)
        s = src.data if isinstance(src, Tensor) else np.asarray(src)
        if not _fits_in_place(s.shape, self.shape):
            raise RuntimeError(f"copy_: source of shape {s.shape} cannot be broadcast to the "
                               f"Tensor's shape {self.shape}")
        np.copyto(self.data, s, casting="unsafe")
        self._bump_version()
        return self

    # -- elementwise functions -------------------------------------------------------------
    def exp(self) -> "Tensor":
        """Elementwise ``e**x``."""
        dt = self.data.dtype
        return _unary(ops.Exp, self if dt is _F32 or dt is _F64 else _float_input(self))

    def log(self) -> "Tensor":
        """Elementwise natural logarithm."""
        dt = self.data.dtype
        return _unary(ops.Log, self if dt is _F32 or dt is _F64 else _float_input(self))

    def sqrt(self) -> "Tensor":
        """Elementwise square root."""
        dt = self.data.dtype
        return _unary(ops.Sqrt, self if dt is _F32 or dt is _F64 else _float_input(self))

    def tanh(self) -> "Tensor":
        """Elementwise hyperbolic tangent."""
        dt = self.data.dtype
        return _unary(ops.Tanh, self if dt is _F32 or dt is _F64 else _float_input(self))

    def sigmoid(self) -> "Tensor":
        """Elementwise logistic function ``1 / (1 + e**-x)``."""
        dt = self.data.dtype
        return _unary(ops.Sigmoid, self if dt is _F32 or dt is _F64 else _float_input(self))

    def relu(self) -> "Tensor":
        """Elementwise ``max(x, 0)`` (gradient 0 at 0, as torch)."""
        return _unary(ops.ReLU, self)

    def abs(self) -> "Tensor":
        """Elementwise ``|x|`` (gradient ``sign(x)``: 0 at 0, as torch)."""
        if self.data.dtype.kind == "b":
            raise NotImplementedError("abs is not implemented for bool Tensors")
        return _unary(ops.Abs, self)

    def astype(self, dtype) -> "Tensor":
        """A copy in ``dtype``; differentiable (the gradient is cast back)."""
        dtype = np.dtype(dtype)
        if dtype == self.dtype:
            return self
        return _unary(ops.Cast, self, {"dtype": dtype})

    def float(self) -> "Tensor":
        return self.astype(np.float32)

    def double(self) -> "Tensor":
        return self.astype(np.float64)

    def half(self) -> "Tensor":
        return self.astype(np.float16)

    def long(self) -> "Tensor":
        return self.astype(np.int64)

    def softmax(self, dim=None, *, axis=None) -> "Tensor":
        """``exp(x) / Σ exp(x)`` along ``dim``, shifted by the (constant) maximum."""
        d = _softmax_dim(self, dim, axis, "softmax")
        if d is None:
            return self.clone()
        e = (self - _shift(self.data, d)).exp()
        return e / e.sum(d, keepdim=True)

    def log_softmax(self, dim=None, *, axis=None) -> "Tensor":
        """``x - logsumexp(x)`` along ``dim``, shifted by the (constant) maximum."""
        d = _softmax_dim(self, dim, axis, "log_softmax")
        if d is None:
            return self.clone()
        z = self - _shift(self.data, d)
        return z - z.exp().sum(d, keepdim=True).log()

    # -- reductions ---------------------------------------------------------------------
    def _axes(self, dim, axis) -> tuple:
        if axis is not None:  # NumPy's spelling (_pick raises when both are given)
            dim = axis if dim is None else _pick("dim", dim, "axis", axis)
        return normalize_axis(dim, self.data.ndim, self.data.shape)

    def sum(self, dim=None, keepdim=None, *, axis=None, keepdims=None) -> "Tensor":
        """Sum over ``dim`` (int, tuple or None for all); integers and bools sum to int64."""
        axes = self._axes(dim, axis)
        if keepdims is not None:
            keepdim = keepdims if keepdim is None else _pick("keepdim", keepdim, "keepdims",
                                                             keepdims)
        return _unary(ops.Sum, self, {"axis": axes, "keepdims": bool(keepdim)})

    def mean(self, dim=None, keepdim=None, *, axis=None, keepdims=None) -> "Tensor":
        """Mean over ``dim`` (int, tuple or None for all); nan over no values (as torch)."""
        if self.data.dtype.kind != "f":
            _need_float(self, "mean")
        axes = self._axes(dim, axis)
        if keepdims is not None:
            keepdim = keepdims if keepdim is None else _pick("keepdim", keepdim, "keepdims",
                                                             keepdims)
        return _unary(ops.Mean, self, {"axis": axes, "keepdims": bool(keepdim)})

    def amax(self, dim=None, keepdim=None, *, axis=None, keepdims=None) -> "Tensor":
        """Maximum over ``dim`` (int or tuple); ties share the gradient evenly (torch.amax)."""
        return self._extreme(ops.Max, "amax", dim, keepdim, axis, keepdims)

    def amin(self, dim=None, keepdim=None, *, axis=None, keepdims=None) -> "Tensor":
        """Minimum over ``dim`` (int or tuple); ties share the gradient evenly (torch.amin)."""
        return self._extreme(ops.Min, "amin", dim, keepdim, axis, keepdims)

    def _extreme(self, fn, name, dim, keepdim, axis, keepdims) -> "Tensor":
        axes = self._axes(dim, axis)
        kd = bool(_pick("keepdim", keepdim, "keepdims", keepdims, False))
        for i in axes if self.data.ndim else ():
            if self.data.shape[i] == 0:
                raise AxisError(f"{name}(): expected reduction dim {i} to have non-zero size "
                                f"(shape {self.shape})")
        if self.data.size == 0 and len(axes) == self.data.ndim:
            raise AxisError(f"{name}(): the tensor of shape {self.shape} is empty")
        return _unary(fn, self, {"axis": axes, "keepdims": kd})

    def max(self, dim=None, keepdim=None, *, axis=None, keepdims=None):
        """Without ``dim``: the largest value (ties share the gradient). With ``dim``: the
        named tuple ``(values, indices)`` as torch (the gradient goes to the index found)."""
        return self._max_min(dim, keepdim, axis, keepdims, "max")

    def min(self, dim=None, keepdim=None, *, axis=None, keepdims=None):
        """Without ``dim``: the smallest value. With ``dim``: ``(values, indices)``."""
        return self._max_min(dim, keepdim, axis, keepdims, "min")

    def _max_min(self, dim, keepdim, axis, keepdims, name):
        if isinstance(dim, Tensor):
            raise TypeError(f"{name}(other) is not supported; use tinygrad_bn.where(a > b, a, b)"
                            f" for the elementwise {name}imum")
        d = _pick("dim", dim, "axis", axis)
        kd = bool(_pick("keepdim", keepdim, "keepdims", keepdims, False))
        if d is None:
            if kd:
                raise TypeError(f"{name}(keepdim=True) needs a dim, as in torch")
            return self._extreme(ops.Max if name == "max" else ops.Min, name, None, None,
                                 None, None)
        if not _is_int(d):
            raise TypeError(f"{name}(dim) takes one int dim, got {d!r}; use a{name}(dim) to "
                            "reduce over several axes")
        nd = self.data.ndim
        ax = _norm_axis(d, nd, self.shape)
        if nd and self.data.shape[ax] == 0:
            raise AxisError(f"{name}(): expected reduction dim {ax} to have non-zero size "
                            f"(shape {self.shape})")
        if nd == 0:
            return MaxResult(self.clone(), Tensor._wrap(np.zeros((), np.int64), None))
        arg = np.argmax if name == "max" else np.argmin
        idx = arg(self.data, axis=ax)
        grids = list(np.indices(idx.shape, sparse=True)) if idx.ndim else []
        values = self[tuple(grids[:ax] + [idx] + grids[ax:])]
        if kd:
            values = values.unsqueeze(ax)
            idx = np.expand_dims(idx, ax)
        return MaxResult(values, Tensor._wrap(idx.astype(np.int64), None))

    def argmax(self, dim=None, keepdim=None, *, axis=None, keepdims=None) -> "Tensor":
        """Index of the largest value over ``dim`` (flat index for None), int64, as torch."""
        return self._arg(np.argmax, "argmax", dim, keepdim, axis, keepdims)

    def argmin(self, dim=None, keepdim=None, *, axis=None, keepdims=None) -> "Tensor":
        """Index of the smallest value over ``dim`` (flat index for None), int64."""
        return self._arg(np.argmin, "argmin", dim, keepdim, axis, keepdims)

    def _arg(self, fn, name, dim, keepdim, axis, keepdims) -> "Tensor":
        if self.data.dtype.kind == "b":
            raise RuntimeError(f"{name}() is not implemented for bool Tensors; use .long()")
        d = _pick("dim", dim, "axis", axis)
        kd = bool(_pick("keepdim", keepdim, "keepdims", keepdims, False))
        if d is not None:
            d = _norm_axis(d, self.data.ndim, self.shape)
            if self.data.ndim == 0:
                d = None
        if (self.data.size == 0 and d is None) or (d is not None and self.data.shape[d] == 0):
            raise AxisError(f"{name}(): expected a non-empty reduction (shape {self.shape})")
        out = fn(self.data, axis=d, keepdims=kd)
        return Tensor._wrap(np.asarray(out, dtype=np.int64), None)

    def var(self, dim=None, unbiased=None, keepdim=None, *, correction=None, ddof=None,
            axis=None, keepdims=None) -> "Tensor":
        """Variance over ``dim`` with torch's signature: unbiased (``n - 1``) by default.

        ``x.var(1, False)`` / ``unbiased=False`` / ``correction=0`` / NumPy's ``ddof=0`` give
        the biased variance (``n``), which normalization layers use. Two passes:
        ``Σ (x - mean)² / (n - correction)``; float16 accumulates in float32.
        """
        return self._var_std(ops.Var, "var", dim, unbiased, keepdim, correction, ddof, axis,
                             keepdims)

    def std(self, dim=None, unbiased=None, keepdim=None, *, correction=None, ddof=None,
            axis=None, keepdims=None) -> "Tensor":
        """Standard deviation, ``sqrt(var(...))`` with the same arguments (unbiased by
        default); its gradient is 0 where the values are constant, as torch."""
        return self._var_std(ops.Std, "std", dim, unbiased, keepdim, correction, ddof, axis,
                             keepdims)

    def _var_std(self, fn, name, dim, unbiased, keepdim, correction, ddof, axis, keepdims):
        if isinstance(dim, bool):  # torch's var(unbiased) overload
            if unbiased is not None:
                raise TypeError(f"{name}(): unbiased given twice")
            dim, unbiased = None, dim
        given = [k for k, v in (("unbiased", unbiased), ("correction", correction),
                                ("ddof", ddof)) if v is not None]
        if len(given) > 1:
            raise TypeError(f"{name}(): pass only one of {' / '.join(given)}")
        c = 1
        if unbiased is not None:
            c = 1 if unbiased else 0
        elif correction is not None:
            c = correction
        elif ddof is not None:
            c = ddof
        _need_float(self, name)
        axes = self._axes(dim, axis)
        kd = bool(_pick("keepdim", keepdim, "keepdims", keepdims, False))
        n = ops._count(self.data.shape, axes)
        if n - c <= 0:
            warnings.warn(f"{name}(): degrees of freedom is <= 0 ({n} value(s) per entry, "
                          f"correction {c}); the result is nan or inf, as in torch",
                          RuntimeWarning, stacklevel=3)
        return _unary(fn, self, {"axis": axes, "correction": c, "keepdims": kd})

    # -- shape ---------------------------------------------------------------------------
    def _view_of(self, out: "Tensor") -> "Tensor":
        """Let an in-place change of ``out`` count as a change of self when they share memory."""
        if out is not self and out.data.base is not None:
            out._base = _base_of(self)
        return out

    def reshape(self, *shape) -> "Tensor":
        """Reshape to ``shape`` (ints or one tuple; one entry may be -1)."""
        shape = _shape_arg(shape)
        if shape == self.data.shape:
            return self
        return self._view_of(_unary(ops.Reshape, self, {"shape": shape}))

    def view(self, *shape) -> "Tensor":
        """Reshape without copying, as ``torch.view``: raises (use ``reshape``) when the
        memory layout (e.g. after ``transpose``) does not allow it."""
        shp = _shape_arg(shape)
        try:
            np.reshape(self.data, shp, copy=False)
        except ValueError:
            try:
                np.reshape(self.data, shp)
            except ValueError:
                return self.reshape(shp)  # a shape that does not fit: reshape's error
            raise RuntimeError(
                f"view size {shp} is not compatible with the memory layout of this Tensor "
                f"of shape {self.shape} (e.g. after transpose); use .reshape(...) instead"
            ) from None
        return self.reshape(shp)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> "Tensor":
        """Merge the axes ``start_dim`` … ``end_dim`` into one (a 0-d Tensor becomes 1-D)."""
        s = self.shape
        if not s:
            _norm_axis(start_dim, 0)
            _norm_axis(end_dim, 0)
            return self.reshape(1)
        a = _norm_axis(start_dim, len(s), s)
        b = _norm_axis(end_dim, len(s), s)
        if a > b:
            raise ValueError(f"flatten() has invalid args: start_dim {start_dim} cannot come "
                             f"after end_dim {end_dim}")
        n = 1
        for k in s[a:b + 1]:
            n *= k
        return self.reshape(s[:a] + (n,) + s[b + 1:])

    def transpose(self, *dims) -> "Tensor":
        """``transpose(dim0, dim1)`` swaps two axes, as torch.

        NumPy's extensions: no argument reverses the axes, and three or more ints (or one
        tuple) are a full permutation (as ``permute``).
        """
        nd = self.data.ndim
        if not dims or (len(dims) == 1 and dims[0] is None):
            perm = tuple(range(nd))[::-1]
        elif len(dims) == 2 and _is_int(dims[0]) and _is_int(dims[1]):
            a = _norm_axis(dims[0], nd, self.shape)
            b = _norm_axis(dims[1], nd, self.shape)
            if nd == 0:
                return self
            perm = list(range(nd))
            perm[a], perm[b] = perm[b], perm[a]
            perm = tuple(perm)
        else:
            perm = self._permutation(dims, "transpose")
        return self._permute(perm)

    def permute(self, *dims) -> "Tensor":
        """Reorder the axes: ``permute(2, 0, 1)`` (or one tuple), a full permutation."""
        return self._permute(self._permutation(dims, "permute"))

    def _permutation(self, dims, name) -> tuple:
        nd = self.data.ndim
        perm = _shape_arg(dims) if dims else ()
        axes = tuple(_norm_axis(a, nd, self.shape) for a in perm)
        if len(axes) != nd or sorted(axes) != list(range(nd)):
            raise ValueError(
                f"{name}: {perm} is not a permutation of the {nd} axes of shape {self.shape}"
                + (" (use transpose(dim0, dim1) to swap two axes)" if name == "transpose" else "")
            )
        return axes

    def _permute(self, perm: tuple) -> "Tensor":
        if perm == tuple(range(self.data.ndim)):
            return self
        return self._view_of(_unary(ops.Transpose, self, {"axes": perm}))

    @property
    def T(self) -> "Tensor":
        """The axes reversed (the transpose of a matrix)."""
        return self.transpose()

    @property
    def mT(self) -> "Tensor":
        """The last two axes swapped (a batch of matrices transposed)."""
        return self.transpose(-2, -1)

    def swapaxes(self, axis1: int, axis2: int) -> "Tensor":
        """Exchange two axes (``transpose(axis1, axis2)``)."""
        return self.transpose(int(axis1), int(axis2))

    def unsqueeze(self, dim: int) -> "Tensor":
        """Insert a size-1 axis at ``dim`` (in ``[-ndim-1, ndim]``)."""
        s = list(self.shape)
        s.insert(_norm_axis(dim, len(s), self.shape, extra=1), 1)
        return self.reshape(tuple(s))

    def squeeze(self, dim=None, *, axis=None) -> "Tensor":
        """Remove size-1 axes: all, or those in ``dim`` (others are left alone, as torch)."""
        d = _pick("dim", dim, "axis", axis)
        if d is None:
            return self.reshape(tuple(s for s in self.shape if s != 1))
        axes = normalize_axis(d, self.data.ndim, self.shape)
        return self.reshape(tuple(s for i, s in enumerate(self.shape)
                                  if not (i in axes and s == 1)))

    def expand(self, *sizes) -> "Tensor":
        """Broadcast to ``sizes`` (read-only view); -1 keeps an existing size, as torch."""
        sizes = _shape_arg(sizes)
        nd, ns = self.data.ndim, len(sizes)
        if ns < nd:
            raise ValueError(f"cannot expand a tensor of shape {self.shape} to {sizes}: fewer "
                             "sizes than dimensions")
        shape = list(sizes)
        for i in range(ns):
            j = i - (ns - nd)
            if sizes[i] == -1:
                if j < 0:
                    raise ValueError(f"expand: -1 is not allowed for a new leading dimension "
                                     f"(sizes {sizes})")
                shape[i] = self.shape[j]
            elif j >= 0 and self.shape[j] != 1 and self.shape[j] != sizes[i]:
                raise ValueError(f"cannot expand a tensor of shape {self.shape} to {sizes}: "
                                 f"size {self.shape[j]} at dim {j} must be 1 or match")
        shape = tuple(shape)
        if shape == self.shape:
            return self
        return _unary(ops.Expand, self, {"shape": shape})

    broadcast_to = expand

    def split(self, split_size_or_sections, dim: int = 0) -> tuple:
        """Pieces along ``dim``: of size ``split_size`` (the last may be smaller), or of the
        sizes in a list, as ``torch.split``."""
        ax = _norm_axis(dim, self.data.ndim, self.shape)
        n = self.shape[ax]
        if _is_int(split_size_or_sections):
            k = int(split_size_or_sections)
            if k <= 0 and not (k == 0 and n == 0):
                raise ValueError(f"split: split_size must be positive, got {k}")
            sizes = [min(k, n - i) for i in range(0, n, k)] if n else [0]
        else:
            sizes = [int(s) for s in split_size_or_sections]
            if sum(sizes) != n or any(s < 0 for s in sizes):
                raise ValueError(f"split: sizes {sizes} do not add up to {n}, the size of dim "
                                 f"{dim} of shape {self.shape}")
        out, start = [], 0
        for s in sizes:
            idx = [slice(None)] * self.data.ndim
            idx[ax] = slice(start, start + s)
            out.append(self[tuple(idx)])
            start += s
        return tuple(out)

    def __getitem__(self, idx) -> "Tensor":
        """Indexing with ints, slices, None, Ellipsis, boolean and integer arrays."""
        return self._view_of(_unary(ops.GetItem, self, {"idx": _index(idx)}))


def _base_of(t: Tensor) -> Tensor:
    """The Tensor whose memory ``t`` shares (itself if it owns it)."""
    base = getattr(t, "_base", None)
    return t if base is None else base


def _index_item(i):
    if isinstance(i, Tensor):
        return i.data
    if isinstance(i, list):
        arr = np.asarray(i)
        if arr.size == 0:
            return np.zeros(arr.shape, dtype=np.intp)
        return arr
    return i


def _index(idx):
    if isinstance(idx, tuple):
        return tuple(_index_item(i) for i in idx)
    return _index_item(idx)


class _Size(int):
    """An int (the number of elements) that, called like torch's ``size()``, gives the shape
    (``x.size()``) or one entry of it (``x.size(dim)``)."""

    def __new__(cls, n: int, shape: tuple):
        obj = super().__new__(cls, n)
        obj._shape = shape
        return obj

    def __call__(self, dim=None):
        if dim is None:
            return self._shape
        return self._shape[_norm_axis(dim, len(self._shape), self._shape)]


_BOOL_SUB = ("subtraction, the `-` operator, with a bool Tensor is not supported; to invert a "
             "mask use ~ (logical not)")


def _is_bool(x) -> bool:
    if isinstance(x, (bool, np.bool_)):
        return True
    d = getattr(x, "dtype", None)
    return d is not None and d.kind == "b"


def _need_float(t: Tensor, name: str) -> None:
    if t.data.dtype.kind not in "fc":
        raise RuntimeError(f"{name}() needs a floating-point Tensor, got {t.dtype}; cast it "
                           "first with .float()")


def _softmax_dim(t: Tensor, dim, axis, name):
    """The checked axis; None for an empty integer Tensor, which torch returns as it is."""
    d = _pick("dim", dim, "axis", axis)
    if d is None:
        raise TypeError(f"{name}() needs dim (e.g. x.{name}(dim=-1)), as in torch")
    d = _norm_axis(d, t.data.ndim, t.shape)
    if t.data.dtype.kind != "f":
        if t.data.size == 0:
            return None
        raise NotImplementedError(f"{name}() needs a floating-point Tensor, got {t.dtype}; "
                                  "cast it first with .float()")
    return d


def _shift(x: np.ndarray, d: int) -> np.ndarray:
    """The maximum along ``d`` (a constant that keeps exp() finite); 0 for no values."""
    if x.size == 0:
        return np.zeros((), dtype=x.dtype)
    return x.max(axis=d, keepdims=True)


def op_symbol(op: str) -> str:
    return {"add": "+", "sub": "-", "mul": "*", "div": "/"}.get(op, op)


def where(cond, a, b) -> Tensor:
    """Elementwise ``a`` where ``cond`` else ``b`` (``cond``: boolean array or Tensor), with
    torch's type promotion of ``a`` and ``b``."""
    c = np.asarray(cond.data if isinstance(cond, Tensor) else cond)
    if c.dtype != np.bool_:
        raise TypeError(f"where: the condition must be boolean, got {c.dtype} (use x != 0)")
    ad = a.data if isinstance(a, Tensor) else _operand(a)
    bd = b.data if isinstance(b, Tensor) else _operand(b)
    rt = result_type(ad, bd)
    ad = _cast(ad, rt) if isinstance(ad, _ndarray) else np.asarray(ad, dtype=rt)
    bd = _cast(bd, rt) if isinstance(bd, _ndarray) else np.asarray(bd, dtype=rt)
    t = apply_op(ops.Where, (a, b), {"cond": c}, (ad, bd))
    if t._ctx is not None and any(isinstance(v, Tensor) and v.dtype != rt for v in (a, b)):
        t._ctx._mixed = True
    return t


# autograd.py builds on this module (it imports Tensor), so it comes in last
from .autograd import backward as _backward  # noqa: E402
