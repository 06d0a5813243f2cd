"""Primitive ops: one small class each.

Every primitive's ``forward(ctx, *arrays, **params)`` works on ndarrays and returns an
ndarray. Its ``backward(ctx, grad)`` is written once and runs in two modes:

* raw mode (``backward()``, ``grad(create_graph=False)``): ``grad``, ``ctx.inputs()`` and
  ``ctx.output()`` are ndarrays, so a backward step is plain NumPy;
* graph mode (``grad(create_graph=True)``): they are Tensors, the same expressions record a
  new graph, and the result can be differentiated again.

So a backward rule uses only what ndarrays and Tensors share: arithmetic operators, ``@``,
``.reshape``, ``.transpose``, ``.swapaxes``, ``.sum(axis, keepdims)``, ``.astype``, ``.shape``,
plus the helpers ``_log`` and ``_expand`` below. Gradients may come back with the broadcast
shape: the engine reduces them to each input's shape with ``unbroadcast`` (below). A rule
may reduce one itself when it can do so more cheaply (``_sum_product``: the gradient of a
broadcast factor, summed without writing the full product out).

Buffers: in raw mode the engine may hand a backward an incoming gradient that it made for
this node alone; the rule may then write its result into it (``_reusable``) instead of
taking new memory. Everything else a rule is given (saved inputs, the output, a gradient
someone else may hold, which arrives read-only) it must leave unchanged. What a rule returns
becomes the engine's, so it returns a separate array per input (``Add`` hands out two views
of its one gradient), never an array it keeps.
"""
from __future__ import annotations

import math

import numpy as np

from .._jit import LOOP_DTYPES, kernels_wanted
from . import tensor as _tensor  # a module reference: Tensor and apply_op, read at call time
from .node import (FREED, NO_CTX, Changes, Function, _grad_mode, check_saved, freed_error,
                   inplace_error)


class Primitive(Function):
    """A Function whose forward/backward run on ndarrays (see the module docstring).

    What a node keeps is declared, not coded: ``save_inputs`` (indices of the inputs that
    backward reads), optionally ``save_for`` (for each saved input, the inputs whose
    gradient reads it: an input nobody needs is not kept, and is None in backward), and
    ``save_output`` (True, or the inputs whose gradient reads the output).
    ``tensor._record``, the one routine that records nodes, reads these attributes and
    nothing else.
    """

    _raw = True
    _mixed = False
    save_inputs: tuple = ()  # indices of the inputs that backward reads (contiguous)
    save_for: tuple | None = None  # per saved input: the gradients that read it
    save_output: bool | tuple = False  # backward reads the output (exp, tanh, sqrt, ...):
    # True, or the indices of the inputs whose gradient reads it
    _save_slice = None
    _plans: dict = {}  # needs_input_grad -> what a node keeps (see save_plan), per class
    symbol: str | None = None  # a binary op's sign, drawn with its constant operand

    def describe(self) -> str:
        """A reduction's axes (``axis=0``, ``axis=(0, 2)``, ``all axes``), or a binary op's
        constant operand (``× 2``, ``^2``, ``1 / x``: its value when the node kept it)."""
        axes = getattr(self, "axes", None)
        if getattr(self, "keepdims", None) is not None and isinstance(axes, tuple):
            axes = tuple(int(a) for a in axes)  # a reduction
            in_shape = getattr(self, "in_shape", None)
            if in_shape is not None and len(axes) > 1 and len(axes) == len(in_shape):
                return "all axes"
            return f"axis={axes[0]}" if len(axes) == 1 else f"axis={axes}"
        parents = self.parents
        if self.symbol is None or parents is None or len(parents) != 2 \
                or (parents[0] is None) == (parents[1] is None):
            return ""
        i = 0 if parents[0] is None else 1  # the constant operand
        c = "const"
        sl, kept = self._save_slice, self._inputs
        if sl is not None and isinstance(kept, tuple) and sl.start <= i < sl.stop \
                and i - sl.start < len(kept):
            v = kept[i - sl.start]
            v = v.data if isinstance(v, _tensor.Tensor) else v
            if isinstance(v, (int, float, np.number)) or (isinstance(v, np.ndarray)
                                                         and v.size == 1):
                c = f"{float(np.asarray(v).reshape(-1)[0]):.3g}"
        if self.symbol == "^":
            return f"^{c}" if i == 1 else f"{c}^x"
        return f"{self.symbol} {c}" if i == 1 else f"{c} {self.symbol} x"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        si = cls.__dict__.get("save_inputs")
        if si is not None:
            if si and tuple(si) != tuple(range(si[0], si[-1] + 1)):
                raise TypeError(f"{cls.__name__}.save_inputs must be contiguous indices")
            cls._save_slice = slice(si[0], si[-1] + 1) if si else None
        if cls.save_for is not None and len(cls.save_for) != len(cls.save_inputs):
            raise TypeError(f"{cls.__name__}.save_for needs one entry per saved input")
        cls._plans = {}

    @classmethod
    def save_plan(cls, needs: tuple) -> tuple:
        """What a node with ``needs_input_grad == needs`` keeps, from the declarations:
        ``(inputs, output)`` — ``inputs`` None (nothing), True (all of ``save_inputs``) or
        one bool per saved input (``save_for``: an input no wanted gradient reads is not
        kept); ``output`` a bool. Remembered per pattern."""
        def wanted(js) -> bool:
            return any(j < len(needs) and needs[j] for j in js)

        keep = None
        if cls._save_slice is not None:
            keep = True
            if cls.save_for is not None:
                keep = tuple(wanted(js) for js in cls.save_for)
                keep = True if all(keep) else keep
        out = cls.save_output
        plan = (keep, bool(out) if out is True or out is False else wanted(out))
        cls._plans[needs] = plan
        return plan

    @classmethod
    def apply(cls, *args, **params):
        """Apply to inputs (Tensors, ndarrays or Python scalars); ``params`` are settings."""
        return _tensor.apply_op(cls, args, params)

    def inputs(self) -> tuple:
        """The saved inputs: ndarrays in raw mode, Tensors (graph-connected) in graph mode.

        Raises if a saved Tensor was modified in place since it was saved.
        """
        v = self._inputs
        if Changes.last > self._seq or v is FREED:
            if v is FREED:
                raise freed_error(self)
            check_saved(self, v)
        if self._graph_mode:
            return v
        T = _tensor.Tensor
        if len(v) == 2:
            a, b = v
            return (a.data if isinstance(a, T) else a, b.data if isinstance(b, T) else b)
        return tuple([x.data if isinstance(x, T) else x for x in v])

    def output(self):
        """The op's own output: an ndarray in raw mode, a Tensor of this node in graph mode.

        The output data is saved instead of the output Tensor (which would be a cycle); in
        graph mode it is wrapped as a Tensor whose node is ``self`` (without touching its
        scope or a trace), so second derivatives flow through it to the inputs.
        """
        out = self._out
        if out is FREED:
            raise freed_error(self)
        if self._out_dirty:
            raise inplace_error(self, "its output", out.shape, "> 0")
        if self._graph_mode:
            return _tensor._wrap(out, self)
        return out


# what is not a Tensor among saved values (None: an input that no wanted gradient reads)
_RAW = (np.ndarray, np.generic, int, float, type(None))


def _is_tensor(x) -> bool:
    """True in graph mode, where backward rules receive Tensors instead of ndarrays."""
    return not isinstance(x, _RAW)


def _data(x):
    """The array behind ``x`` (a Tensor in graph mode, an ndarray in raw mode)."""
    return x.data if _is_tensor(x) else x


def _where0(cond, x):
    """``x`` with 0 where ``cond`` (a constant mask); differentiable in ``x`` for Tensors."""
    if _is_tensor(x):
        return Where.apply(0.0, x, cond=cond)
    return np.where(cond, 0, x).astype(x.dtype, copy=False)


def _scale(x, c):
    """``x * c``: in place for a fresh ndarray (raw mode), a new node for a Tensor."""
    if type(x) is not np.ndarray and _is_tensor(x):
        return x * c
    x *= c
    return x


def _negated(x):
    """``-x`` for an array made for the purpose: in place when it is a writeable ndarray."""
    if type(x) is np.ndarray and x.flags.writeable:
        return np.negative(x, out=x)
    return -x


_CONSTS: dict = {}  # (value, dtype, shape) -> a read-only array of that value


def _const(value, dtype, shape: tuple = ()):
    """``value`` as a read-only array of ``dtype`` (0-d unless ``shape`` is given), one per
    value, dtype and shape. An operation with a 0-d one needs no conversion of a Python
    number, which costs NumPy about as much as the operation itself on small arrays (and
    gives the same result: the number is converted to the array's dtype); the engine starts
    a backward pass from the 1 of the output's shape."""
    key = (value, dtype, shape)
    c = _CONSTS.get(key)
    if c is None:
        c = np.full(shape, value, dtype)
        c.flags.writeable = False
        if len(_CONSTS) < 256:
            _CONSTS[key] = c
    return c


def _log(x):
    return x.log() if _is_tensor(x) else np.log(x)


def unbroadcast(g, shape: tuple):
    """Sum ``g`` (ndarray or Tensor) down to ``shape``, undoing NumPy broadcasting.

    Leading axes that broadcasting added are summed away, then axes where ``shape`` has size
    1 are summed with keepdims. Raises RuntimeError when ``g`` cannot come from ``shape``.
    """
    gshape = g.shape
    if gshape == shape:
        return g
    plan = _REDUCTIONS.get((gshape, shape))
    if plan is None:
        plan = _reduction(gshape, shape)
    axes, keepdims = plan
    g = _sum(g, axes, keepdims) if type(g) is np.ndarray else g.sum(axis=axes,
                                                                    keepdims=keepdims)
    return g if g.shape == shape else g.reshape(shape)


# (gradient's shape, input's shape) -> (axes to sum, keepdims)
_REDUCTIONS: dict = {}


def _reduction(gshape: tuple, shape: tuple) -> tuple:
    """How ``unbroadcast`` sums ``gshape`` down to ``shape`` (remembered per pair)."""
    nd = len(gshape) - len(shape)
    if nd < 0 or any(s != 1 and gshape[i + nd] != s for i, s in enumerate(shape)):
        raise RuntimeError(f"gradient of shape {gshape} cannot be reduced to shape {shape}")
    ones = tuple(i + nd for i, s in enumerate(shape) if s == 1 and gshape[i + nd] != 1)
    plan = (tuple(range(nd)) + ones, bool(ones))
    if len(_REDUCTIONS) < 1024:
        _REDUCTIONS[(gshape, shape)] = plan
    return plan


_ROWS_MAX = 1 << 21  # elements: up to here a matrix-vector product took the same time on a
# busy machine as on an idle one (BLAS; larger ones are spread over threads)


def _sum(a, axes, keepdims=False):
    """``Σ a`` over ``axes`` (a tuple) of an ndarray, in its dtype: ``_sum_leading`` where it
    applies, else ``np.add.reduce`` (without ``ndarray.sum``'s wrapper)."""
    if not keepdims and len(axes) == a.ndim:  # all of it (a loss): nothing to look up
        return np.add.reduce(a, None)
    out = _sum_leading(a, axes, keepdims)
    return np.add.reduce(a, axes, None, None, keepdims) if out is None else out


def _sum_leading(a, axes, keepdims):
    """``np.add.reduce(a, axes, keepdims=keepdims)`` for a small float32/float64 array summed
    over its leading axes (the batch axis of a mean or of a bias's gradient), as one
    matrix-vector product with a vector of ones (BLAS): two to three times faster than
    ``np.add.reduce`` on such arrays. None for any other case. (Larger products may be
    spread over threads, whose wake-up costs more than the sum on a busy machine: those are
    left to ``np.add.reduce``.)

    What to do is remembered per (shape, dtype, axes, keepdims): this runs for nearly every
    bias gradient and batch mean, where checking again would cost as much as the sum.
    """
    try:
        plan = _LEADING[(a.shape, a.dtype, axes, keepdims)]
    except KeyError:
        plan = _leading_plan(a, axes, keepdims)
    except TypeError:  # axes given as a list: unhashable, and not the common case
        return None
    if plan is None:
        return None
    ones, matrix, shape = plan
    out = ones.dot(a if matrix is None else a.reshape(matrix))
    return out if shape is None else out.reshape(shape)


# (shape, dtype, axes, keepdims) -> (ones, the shape of a as a matrix or None when it is
# one, the result's shape or None when the product has it), or None: not a leading sum
_LEADING: dict = {}


def _leading_plan(a, axes, keepdims):
    shape, k = a.shape, len(axes) if type(axes) is tuple else 0
    plan = None
    if (a.size <= _ROWS_MAX and a.dtype.char in "fd" and a.size and k and k < a.ndim
            and axes == tuple(range(k))):
        rows = math.prod(shape[:k])
        ones = _const(1, a.dtype, (rows,))
        result = ((1,) * k if keepdims else ()) + shape[k:]
        plan = (ones, None if a.ndim == 2 else (rows, a.size // rows),
                None if result == (a.size // rows,) else result)
    if len(_LEADING) < 1024:
        _LEADING[(shape, a.dtype, axes, keepdims)] = plan
    return plan


def _input_shape(ctx, i: int):
    """The shape of input ``i`` of node ``ctx`` (read from its edge), None for a constant."""
    edges = ctx._edges  # (the node's parents, without making the tuple)
    p = edges[i] if edges is not None else (ctx._edge1 if i else ctx._edge0)
    if p is None:
        return None
    return p.shape if isinstance(p, Function) else p.data.shape


_LARGE = 1 << 14  # elements: from here on, saving a pass over memory is worth a few checks


def _large(g) -> bool:
    """True for a gradient array (raw mode) large enough for the memory-saving paths."""
    return type(g) is np.ndarray and g.size >= _LARGE


# ------------------------------------------------------ compiled loops, beside NumPy's
# With numba installed (the "fast" extra), a large float32/float64 array meeting a row of
# its dtype (``x - μ``, ``x̂ · γ``, a bias) goes through a loop of ``_kernels`` instead of
# NumPy's broadcasting, and a few backward rules make their two results in one pass. Each
# call site keeps the NumPy line it replaces, and tests hold the two to the same results.
_KERNELS = None  # the module ``_kernels`` once imported; False: NumPy only (see _loops)


def _loops():
    """``_kernels`` (imported on first use: importing numba takes a while), or None without
    numba or with ``TINYGRAD_BN_KERNELS=numpy``."""
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = False
        if kernels_wanted():
            try:
                from . import _kernels
            except ImportError:  # pragma: no cover - a broken numba installation
                _kernels = None
            if _kernels is not None and _kernels.available:
                _KERNELS = _kernels
    return _KERNELS or None


def loops_for(size: int):
    """The compiled loops for an array of ``size`` elements, for the loops that need no row
    (running statistics, optimizer steps, ReLU, tanh's gradient): once loaded, for any size
    (a loop costs less than two NumPy calls even on a few values); an array of ``_LARGE``
    elements or more loads them; else None."""
    if _KERNELS is None and size >= _LARGE:
        return _loops()
    return _KERNELS or None


def _row_pair(a, r):
    """``(a2, r1)``: ``a`` as a C-contiguous (M, C) array and ``r`` as its contiguous (C,)
    row, when ``r`` broadcasts along the rows of ``a`` (shape (..., 1, C) against
    (..., C), every axis of ``r`` but the last of size 1) and both are float32 or both
    float64 in native byte order; else None."""
    if type(r) is not np.ndarray or r.dtype is not a.dtype or a.dtype not in LOOP_DTYPES \
            or not a.flags.c_contiguous or not a.ndim:
        return None
    c = a.shape[-1]
    rs = r.shape
    if not rs or rs[-1] != c or r.size != c or len(rs) > a.ndim:
        return None
    return (a if a.ndim == 2 else a.reshape((-1, c))), (r if len(rs) == 1 else r.reshape(c))


def _row_of(v, shape):
    """The (C,) row that a read-only broadcast view ``v`` of ``shape`` repeats (a mean's
    gradient: strides 0 but along the last axis), or None."""
    if type(v) is not np.ndarray or v.shape != shape or v.base is None or v.ndim < 2:
        return None
    st = v.strides
    if st[-1] != v.itemsize or any(st[:-1]):
        return None
    return v[(0,) * (v.ndim - 1)]


def _row_loop(a, r):
    """``(loops, a2, r1)`` when the compiled loops are there and ``r`` is a row of ``a``
    (``_row_pair``); else None."""
    k = _loops()
    if not k:
        return None
    pair = _row_pair(a, r)
    return None if pair is None else (k, *pair)


def _rowwise(name: str, a, r, in_place: bool = False):
    """``a (op) r`` by the loop ``name`` of ``_kernels`` (into a new array, or into ``a``)
    when ``r`` is a row of ``a`` and the loops are there (``_row_loop``); else None."""
    found = _row_loop(a, r)
    if found is None:
        return None
    k, a2, r1 = found
    if in_place:
        getattr(k, name + "_")(a2, r1)
        return a
    out = np.empty(a.shape, a.dtype)
    getattr(k, name)(a2, r1, out if a2 is a else out.reshape(a2.shape))
    return out


def _add_row_into(prev, g) -> bool:
    """``prev += g`` by a compiled loop when ``prev`` is large and ``g`` a broadcast row of
    its shape (a mean's gradient, added into the input's); False when nothing was done."""
    if prev.size < _LARGE:
        return False
    row = _row_of(g, prev.shape)
    return row is not None and _rowwise("add_row", prev, row, True) is not None


def _same_layout(x, like) -> bool:
    """``x`` is a C-contiguous ndarray of ``like``'s shape and dtype."""
    return (type(x) is np.ndarray and x.shape == like.shape and x.dtype is like.dtype
            and x.flags.c_contiguous)


def _mul_rows_backward(g, a, b, need_a: bool, need_b: bool):
    """Both gradients of ``a * b`` when one factor is a row of the other and of ``g``
    (``x̂ · γ``): ``g · row`` (into ``g`` when lent to this node alone) and ``Σ g · full``
    over the rows, in one compiled pass; None when that does not apply."""
    swap = not _same_layout(a, g)  # (γ · x̂: the row comes first)
    full, row = (b, a) if swap else (a, b)
    found = _row_loop(g, row)
    if found is None or not _same_layout(full, g):
        return None
    k, g2, r1 = found
    need_full, need_row = (need_b, need_a) if swap else (need_a, need_b)
    gfull = grow = None
    in_place = need_full and _reusable(g, row)
    if need_full:
        gfull = g if in_place else np.empty(g.shape, g.dtype)
    full2 = full.reshape(g2.shape)
    if need_row and in_place:
        grow = k.mul_row_and_sum_(g2, r1, full2)
    elif need_row and need_full:
        grow = k.mul_row_and_sum(g2, r1, full2, gfull.reshape(g2.shape))
    elif need_row:
        grow = k.row_sums_of_products(g2, full2)
    elif in_place:
        k.mul_row_(g2, r1)
    else:
        k.mul_row(g2, r1, gfull.reshape(g2.shape))
    if grow is not None:
        grow = grow.astype(g.dtype).reshape(row.shape)
    return (grow, gfull) if swap else (gfull, grow)


def _div_rows_backward(g, b, ctx, need_a: bool, need_b: bool):
    """Both gradients of ``y = a / b`` for a row divisor ``b`` (``(x − μ) / σ``): ``g / b``
    (into ``g`` when lent to this node alone) and ``−Σ (g / b) · y`` over the rows, in one
    compiled pass; None when that does not apply."""
    found = _row_loop(g, b)
    if found is None:
        return None
    k, g2, r1 = found
    y = ctx.output() if need_b else None
    if need_b and not _same_layout(y, g):
        return None
    in_place = _reusable(g, b)
    ga = g if in_place else np.empty(g.shape, g.dtype)
    if not need_b:
        if in_place:
            k.div_row_(g2, r1)
        else:
            k.div_row(g2, r1, ga.reshape(g2.shape))
        return ga, None
    y2 = y.reshape(g2.shape)
    if in_place:
        gb = k.div_row_and_sum_(g2, r1, y2)
    else:
        gb = k.div_row_and_sum(g2, r1, y2, ga.reshape(g2.shape))
    return (ga if need_a else None), np.negative(gb).astype(g.dtype).reshape(b.shape)


def _double_times_row(a, g, into=None):
    """``(a + a) · g`` (the gradient of ``a ** 2``) when ``g`` is a broadcast row (a mean's
    gradient) of ``a``'s shape, by one compiled loop; else None. ``into``: the gradient that
    ``a`` already holds in the backward pass (see ``Function._adds_into``); when the engine
    owns it (``_same_layout`` and ``_reusable``), the product is added into it and ``into``
    itself returned: one pass instead of two."""
    row = _row_of(g, a.shape)
    found = None if row is None else _row_loop(a, row)
    if found is None:
        return None
    k, a2, r1 = found
    if into is not None and _same_layout(into, a) and _reusable(into, a) \
            and not np.may_share_memory(into, a):
        k.double_mul_row_add_(a2, r1, into if a2 is a else into.reshape(a2.shape))
        return into
    out = np.empty(a.shape, a.dtype)
    k.double_mul_row(a2, r1, out if a2 is a else out.reshape(a2.shape))
    return out


def _reusable(g, other) -> bool:
    """True when the result of ``g (op) other`` may be written into ``g``, the gradient that
    arrived at this node: an array the engine made for this node alone (fresh, writeable,
    owning its memory; anything else arrives as a read-only view or as a view of another
    array), and ``other`` (an array that broadcasts to ``g``'s shape, or a number) keeps
    ``g``'s dtype."""
    return (g.base is None and g.flags.writeable
            and (type(other) is float or type(other) is int
                 or (type(other) is np.ndarray and other.dtype is g.dtype)))


_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_SUBSCRIPTS: dict = {}  # (shape of the factors, shape of the result) -> np.einsum subscripts


def _sum_product(a, b, ctx, i: int):
    """``a * b`` (``a`` an array), the gradient of input ``i`` of a product-like op, summed
    down to that input's shape.

    When ``a`` and ``b`` are float32/float64 arrays of one shape and the input is smaller,
    ``np.einsum`` sums the products as it goes: no array of the full shape is written (a
    third of the time, and no memory). Otherwise ``a * b``, which the engine reduces.
    """
    if type(b) is not np.ndarray or a.shape != b.shape or a.dtype is not b.dtype \
            or a.dtype.char not in "fd":
        return a * b
    shape = _input_shape(ctx, i)
    full = a.shape
    if shape is None or shape == full:
        return a * b
    key = (full, shape)
    sub = _SUBSCRIPTS.get(key)
    if sub is None:
        n, nd = len(full), len(full) - len(shape)
        if nd < 0 or n > len(_LETTERS) \
                or any(s != 1 and s != full[j + nd] for j, s in enumerate(shape)):
            return a * b  # not a broadcast of the input: the engine reports it
        kept = "".join(_LETTERS[j + nd] for j, s in enumerate(shape) if s == full[j + nd])
        sub = f"{_LETTERS[:n]},{_LETTERS[:n]}->{kept}"
        if len(_SUBSCRIPTS) < 1024:
            _SUBSCRIPTS[key] = sub
    return np.einsum(sub, a, b).reshape(shape)


_MATERIALIZE_MAX = 1 << 14  # broadcast gradients up to this size are written out


def _expand(g, shape, scale=None):
    """``g * scale`` broadcast to ``shape``: an Expand node for Tensors; for ndarrays a new
    array when small (cheaper than ``np.broadcast_to``'s Python overhead), a read-only view
    when large (no memory)."""
    if type(g) is not np.ndarray and _is_tensor(g):
        return Expand.apply(g if scale is None else g * scale, shape=shape)
    if math.prod(shape) <= _MATERIALIZE_MAX:
        out = np.empty(shape, dtype=g.dtype)
        if g.ndim == 0 and scale is None:  # (a full reduction's gradient: one value)
            out.fill(g)
        elif g.ndim == 0:
            np.multiply(g, scale, out=out)
        else:  # (the reduced array scaled first, then copied out: a third faster than
            # one broadcasting product on small arrays, and the same values)
            out[...] = g if scale is None else g * scale
        return out
    return _broadcast_view(g if scale is None else g * scale, shape)


def _broadcast_view(a, shape):
    """``np.broadcast_to(a, shape)``, a read-only view, made by the ndarray constructor for a
    C-contiguous ``a`` (a quarter of the time: ``np.broadcast_to`` is Python code)."""
    if type(a) is not np.ndarray or not a.flags.c_contiguous:
        return np.broadcast_to(a, shape)
    lead = len(shape) - a.ndim
    strides = (0,) * lead + tuple(0 if n == 1 else st for n, st in zip(a.shape, a.strides))
    v = np.ndarray(shape, a.dtype, a, 0, strides)
    v.flags.writeable = False
    return v


def _keepdims_shape(shape: tuple, axes: tuple) -> tuple:
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


def _with_reduced_axes(g, ctx):
    """A reduction's gradient ``g`` with the reduced axes back as size 1, so that it
    broadcasts against the input; as it is when they were kept or are the leading axes
    (broadcasting adds those)."""
    axes = ctx.axes
    if ctx.keepdims or not axes or axes[-1] == len(axes) - 1:
        return g
    return g.reshape(_keepdims_shape(ctx.in_shape, axes))


def normalize_axis(axis, ndim: int, shape=None) -> tuple:
    """``axis`` (None, int or tuple) as a sorted tuple of non-negative axes; ValueError if bad."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if not isinstance(a, (int, np.integer)) or not -max(ndim, 1) <= a < max(ndim, 1):
            raise ValueError(
                f"axis {axis!r} is out of range for a tensor of shape {tuple(shape or ())} "
                f"(ndim {ndim})"
            )
        out.append(int(a) % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ValueError(f"axis {axis!r} repeats an axis")
    return tuple(sorted(out)) if ndim else ()


# --------------------------------------------------------------------------- elementwise
class Add(Primitive):
    """Addition ``a + b`` (broadcasting). d/da = 1, d/db = 1."""

    symbol = "+"

    @staticmethod
    def forward(ctx, a, b):
        if type(a) is np.ndarray and a.size >= _LARGE:  # (a row of a: a compiled loop)
            out = _rowwise("add_row", a, b)
            if out is not None:
                return out
        return a + b

    @staticmethod
    def backward(ctx, g):
        if ctx.needs_input_grad[1] and ctx.needs_input_grad[0] and not _is_tensor(g):
            # one array for both inputs would let one input's consumer write into (or a
            # leaf adopt) what the other still reads. When one input was broadcast (a bias,
            # β), its gradient is summed down here, a new array, and g itself goes on to the
            # other (whose rule may then write into it); else a view each.
            sb = _input_shape(ctx, 1)
            if sb != g.shape:
                return g, unbroadcast(g, sb)
            sa = _input_shape(ctx, 0)
            if sa != g.shape:
                return unbroadcast(g, sa), g
            return g.view(), g.view()
        return g, g


class Sub(Primitive):
    """Subtraction ``a - b`` (broadcasting). d/da = 1, d/db = -1."""

    symbol = "−"

    @staticmethod
    def forward(ctx, a, b):
        if type(a) is np.ndarray and a.size >= _LARGE:  # (a row of a: a compiled loop)
            out = _rowwise("sub_row", a, b)
            if out is not None:
                return out
        return a - b

    @staticmethod
    def backward(ctx, g):
        if not ctx.needs_input_grad[1]:
            return g, None
        if type(g) is np.ndarray:  # summed down to b's shape first: negate the smaller array
            gb = unbroadcast(g, _input_shape(ctx, 1))
            return g, (-gb if gb is g else _negated(gb))
        return g, -g


class Mul(Primitive):
    """Product ``a * b`` (broadcasting). d/da = b, d/db = a."""

    symbol = "×"

    save_inputs = (0, 1)
    save_for = ((1,), (0,))  # a is read only for d/db, b only for d/da

    @staticmethod
    def forward(ctx, a, b):
        if type(a) is np.ndarray and a.size >= _LARGE:  # (a row of a: a compiled loop)
            out = _rowwise("mul_row", a, b)
            if out is not None:
                return out
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs()
        need_a, need_b = ctx.needs_input_grad
        if not _large(g):
            return (g * b if need_a else None), (g * a if need_b else None)
        both = _mul_rows_backward(g, a, b, need_a, need_b)  # a row factor: a compiled loop
        if both is not None:
            return both
        # large arrays: d/db summed down to b's shape at once (no product in memory), then
        # g * b written into g itself when the engine lent g to this node alone
        gb = _sum_product(g, a, ctx, 1) if need_b else None
        ga = None
        if need_a:
            ga = np.multiply(g, b, out=g) if _reusable(g, b) else _sum_product(g, b, ctx, 0)
        return ga, gb


class Div(Primitive):
    """Quotient ``y = a / b``. d/da = 1/b, d/db = -a/b² = -y/b."""

    symbol = "/"

    save_inputs = (1,)
    save_output = (1,)  # only d/db reads y

    @staticmethod
    def forward(ctx, a, b):
        if type(a) is np.ndarray and a.size >= _LARGE:  # (a row of a: a compiled loop)
            out = _rowwise("div_row", a, b)
            if out is not None:
                return out
        return a / b

    @staticmethod
    def backward(ctx, g):
        (b,) = ctx.inputs()
        need_a, need_b = ctx.needs_input_grad
        if type(g) is not np.ndarray:  # graph mode (Tensors), or a number
            ga = g / b
            gb = _scale(ga * ctx.output(), -1.0) if need_b else None
            return (ga if need_a else None), gb
        if _large(g):  # a row divisor (σ): a compiled loop makes both in one pass
            both = _div_rows_backward(g, b, ctx, need_a, need_b)
            if both is not None:
                return both
        # g / b written into g when the engine lent g to this node alone (large arrays), and
        # d/db summed down to b's shape before it is negated (without the full product in
        # memory, for large arrays)
        ga = np.divide(g, b, out=g) if _large(g) and _reusable(g, b) else g / b
        gb = None
        if need_b:
            y = ctx.output()
            gb = _sum_product(ga, y, ctx, 1) if _large(g) else ga * y
            gb = _negated(unbroadcast(gb, _input_shape(ctx, 1)))
        return (ga if need_a else None), gb


class Pow(Primitive):
    """Power ``y = a ** b`` (tensor or scalar exponent). d/da = b·a^(b-1), d/db = y·log(a).

    At the edges torch's values: d/da is 0 where b = 0 (not 0·inf), and d/db is 0 where
    a = 0 and b >= 0 (the limit of y·log(a), not 0·(-inf) = nan).
    """

    symbol = "^"

    save_inputs = (0, 1)
    save_output = (1,)  # only d/db (a tensor exponent's) reads y
    _adds_into = True  # a ** 2 against a mean's gradient (σ²'s d²): added into a's gradient

    @staticmethod
    def forward(ctx, a, b):
        if type(b) is float:  # a number exponent: the common case
            return a ** b
        if type(b) is int:
            if b < 0 and a.dtype.kind in "biu":  # (NumPy lets an empty array through)
                raise ValueError("Integers to negative integer powers are not allowed.")
            return a ** b
        if isinstance(b, np.ndarray) and b.dtype.kind in "iu" \
                and np.asarray(a).dtype.kind in "biu" and (b < 0).any():
            out = _int_pow(a if isinstance(a, np.ndarray) else np.asarray(a, b.dtype), b)
        else:
            out = a ** b
            if type(b) is bool and a.dtype == np.bool_:  # bool ** bool stays bool (torch)
                out = out.astype(np.bool_)
        return out

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs()
        into = _grad_mode.into  # (the engine's offer: see _double_times_row)
        if into is not None:
            _grad_mode.into = None
        ga = gb = None
        if ctx.needs_input_grad[0]:
            if isinstance(b, (int, float)):
                if b == 0:  # a ** 0 is constant; a ** -1 would make 0 * inf = nan at a = 0
                    ga = g * 0.0
                elif b == 2 and type(a) is np.ndarray:
                    ga = _double_times_row(a, g, into) if a.size >= _LARGE else None
                    if ga is None:
                        ga = a + a  # (2a exactly: doubling before the product rounds alike)
                        ga *= g
                else:
                    ga = g * a if b == 2 else g * a ** (b - 1)
                    ga = _scale(ga, b)
            else:
                ga = g * (b * a ** (b - 1))
                zero_b = _data(b) == 0
                if np.any(zero_b):
                    ga = _where0(np.broadcast_to(zero_b, ga.shape), ga)
        if ctx.needs_input_grad[1]:
            ad = _data(a)
            edge = (ad == 0) & (_data(b) >= 0)
            if np.any(edge):  # the limit of y·log(a) at a = 0 is 0 (torch), not nan
                with np.errstate(divide="ignore", invalid="ignore"):
                    gb = _where0(np.broadcast_to(edge, np.broadcast_shapes(
                        np.shape(g), np.shape(ad))), g * (ctx.output() * _log(a)))
            else:
                gb = g * (ctx.output() * _log(a))
        return ga, gb


def _int_pow(a, b):
    """Integer powers with negative integer exponents, as torch: 1 for base 1, ±1 for base
    -1, else 0 (NumPy refuses them)."""
    a, b = np.broadcast_arrays(a, b)
    neg = b < 0
    out = a ** np.where(neg, 0, b)
    minus_one = np.where(b % 2 == 0, 1, -1).astype(out.dtype)
    small = np.where(a == 1, 1, np.where(a == -1, minus_one, 0)).astype(out.dtype)
    return np.where(neg, small, out)


class Neg(Primitive):
    """Negation ``-a``."""

    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, g):
        return (-g,)


class Exp(Primitive):
    """``y = exp(a)``; dy/da = y."""

    save_output = True

    @staticmethod
    def forward(ctx, a):
        return np.exp(a)

    @staticmethod
    def backward(ctx, g):
        return (g * ctx.output(),)


class Log(Primitive):
    """Natural logarithm ``log(a)``; d/da = 1/a."""

    save_inputs = (0,)

    @staticmethod
    def forward(ctx, a):
        return np.log(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.inputs()
        return (g / a,)


class Sqrt(Primitive):
    """``y = sqrt(a)``; dy/da = 1 / (2y)."""

    save_output = True

    @staticmethod
    def forward(ctx, a):
        return np.sqrt(a)

    @staticmethod
    def backward(ctx, g):
        y = ctx.output()
        return (g / (y + y),)  # (2y exactly, without converting a Python 2)


class Tanh(Primitive):
    """``y = tanh(a)``; dy/da = 1 - y²."""

    save_output = True

    @staticmethod
    def forward(ctx, a):
        return np.tanh(a)

    @staticmethod
    def backward(ctx, g):
        y = ctx.output()
        if type(y) is np.ndarray:
            if type(g) is np.ndarray:
                ga = _flat_grad_loop("tanh_grad", g, y)  # one compiled pass (three below)
                if ga is not None:
                    return (ga,)
            # (1 as an array of y's dtype: a Python float costs more)
            return (g * (_const(1, y.dtype) - y * y),)
        return (g * (1.0 - y * y),)


class Sigmoid(Primitive):
    """``y = 1 / (1 + exp(-a))``, computed without overflow; dy/da = y(1 - y)."""

    save_output = True

    @staticmethod
    def forward(ctx, a):
        e = np.exp(-np.abs(a))
        return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(a.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        y = ctx.output()
        return (g * (y * (1.0 - y)),)


class ReLU(Primitive):
    """``y = max(a, 0)``; dy/da = 1 where a > 0, else 0 (0 at a = 0, as torch).

    As torch's ``a < 0 ? 0 : a``: nan stays nan and -0 stays -0 (``np.maximum`` alone
    would give +0)."""

    save_output = True

    @staticmethod
    def forward(ctx, a):
        if a.dtype == np.bool_:
            raise RuntimeError("Boolean inputs not supported for relu")
        out = _relu_loop(a)  # a compiled loop: one pass (np.maximum is slow here)
        if out is not None:
            return out
        out = np.maximum(a, 0)
        if a.dtype.kind == "f" and a.ndim:
            zero = a == 0
            if zero.any():
                out = np.where(zero, a, out)  # (the zeros as they came: -0 included)
        return out

    @staticmethod
    def backward(ctx, g):
        y = _data(ctx.output())
        if type(g) is np.ndarray:
            ga = _flat_grad_loop("relu_grad", g, y)  # a compiled loop: one pass
            if ga is not None:
                return (ga,)
        drop = y <= 0  # (not ``y > 0``: where the output is nan the gradient flows, as torch)
        if type(g) is np.ndarray:
            return (_kept(g, drop),)
        return (_where0(drop, g),)


_UINTS = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def _kept(g, drop):
    """``g`` where ``drop`` (a bool array of its shape) is False, +0 where it is True, as
    torch's ``threshold_backward``: a nan or a negative gradient where nothing flows back
    gives 0, not the nan or -0 of ``g * mask``. The bits of ``g`` are cleared where ``drop``
    (three times faster than ``np.where`` on large arrays; on small ones ``np.where``)."""
    uint = _UINTS.get(g.itemsize)
    if g.size < _LARGE or uint is None or g.dtype.kind != "f":
        return np.where(drop, _const(0, g.dtype), g)
    out = np.empty_like(g)  # (a new array of g's dtype, which the engine may then own)
    mask = out.view(uint)
    np.copyto(mask, drop)
    np.subtract(mask, 1, out=mask)  # 1 -> none of the bits set, 0 -> all of them
    np.bitwise_and(g.view(uint), mask, out=mask)
    return out


def _relu_loop(a):
    """``ReLU.forward`` by one compiled loop for a contiguous float32/float64 array (when
    ``loops_for`` its size gives the loops); None otherwise."""
    k = loops_for(a.size)
    if not k or a.dtype not in LOOP_DTYPES or not a.flags.c_contiguous:
        return None
    out = np.empty(a.shape, a.dtype)
    k.relu(a, out)
    return out


def _flat_grad_loop(name: str, g, y):
    """A unary op's gradient from ``g`` and its saved output ``y`` by the flat loop ``name``
    of ``_kernels`` (``relu_grad``, ``tanh_grad``; when ``loops_for`` g's size gives the
    loops): into ``g`` itself when the engine lent it to this node alone (``_reusable``),
    else into a new array; None when the arrays are not C-contiguous float32/float64 arrays
    of one shape and dtype."""
    k = loops_for(g.size)
    if not k or type(y) is not np.ndarray or y.dtype is not g.dtype \
            or g.dtype not in LOOP_DTYPES or g.shape != y.shape or not y.flags.c_contiguous:
        return None
    flags = g.flags  # (read once: each read makes an object)
    if not flags.c_contiguous:
        return None
    if g.base is None and flags.writeable:  # (_reusable, y's dtype being g's)
        getattr(k, name + "_")(g, y)
        return g
    out = np.empty(g.shape, g.dtype)
    getattr(k, name)(g, y, out)
    return out


class Abs(Primitive):
    """``y = |a|``; dy/da = sign(a): -1, 0 at a = 0 (as torch), +1."""

    save_inputs = (0,)

    @staticmethod
    def forward(ctx, a):
        return np.abs(a)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.inputs()
        return (g * np.sign(_data(a)),)


class Clone(Primitive):
    """A copy of ``a`` in new memory; the gradient passes through unchanged."""

    @staticmethod
    def forward(ctx, a):
        return a.copy()

    @staticmethod
    def backward(ctx, g):
        return (g,)


class Cast(Primitive):
    """Change of dtype; the gradient is cast back to the input's dtype."""

    @staticmethod
    def forward(ctx, a, dtype):
        ctx.in_dtype = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return (g.astype(ctx.in_dtype),)


# ----------------------------------------------------------------------------- reductions
def _reduce_sum(a, axis, keepdims):
    """``Σ a`` over ``axis`` with torch's accumulation: integers and bools sum to int64,
    float16 accumulates in float32 and is rounded back once."""
    kind = a.dtype.char
    if kind == "f" or kind == "d":  # float32, float64
        return _sum(a, axis, keepdims)
    if a.dtype.kind in "biu":
        return np.add.reduce(a, axis=axis, keepdims=keepdims, dtype=np.int64)
    if a.dtype == np.float16:
        return np.add.reduce(a, axis=axis, keepdims=keepdims,
                             dtype=np.float32).astype(np.float16)
    return np.add.reduce(a, axis=axis, keepdims=keepdims)


def _count(shape, axes) -> int:
    n = 1
    for i in axes:
        n *= shape[i]
    return n


class Sum(Primitive):
    """Sum over ``axis`` (all by default). The gradient broadcasts back over the summed axes."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.in_shape = a.shape
        ctx.axes = axis
        ctx.keepdims = keepdims
        return _reduce_sum(a, axis, keepdims)

    @staticmethod
    def backward(ctx, g):
        return (_expand(_with_reduced_axes(g, ctx), ctx.in_shape),)


class Mean(Primitive):
    """Mean over ``axis`` (n elements each). The gradient is ``grad / n`` broadcast back.

    The mean over no values is nan, as in torch.
    """

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.in_shape = a.shape
        ctx.axes = axis
        ctx.keepdims = keepdims
        n = ctx.n = _count(a.shape, axis)
        acc = np.float32 if a.dtype.char == "e" else None  # float16 sums in float32
        if n == 0:  # the mean over no values is nan (no warning, as torch)
            return np.full(np.add.reduce(a, axis=axis, keepdims=keepdims).shape, np.nan,
                           dtype=a.dtype)
        if acc is None:
            out = _sum(a, axis, keepdims)
            if type(out) is not np.ndarray:  # a full reduction: a NumPy scalar
                return out / n
            out /= _const(n, a.dtype)  # (a new array: divided where it is)
            return out
        return (np.add.reduce(a, axis, acc, None, keepdims) / n).astype(a.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        n = ctx.n
        scale = 1.0 / n if n else np.nan
        if type(g) is np.ndarray:
            scale = _const(scale, g.dtype)
        return (_expand(_with_reduced_axes(g, ctx), ctx.in_shape, scale),)


class Max(Primitive):
    """Maximum over ``axis``; the gradient is shared evenly among ties (like ``torch.amax``)."""

    save_inputs = (0,)
    save_output = True
    _reduce = staticmethod(np.max)

    @classmethod
    def forward(cls, ctx, a, axis=None, keepdims=False):
        ctx.axes = axis
        ctx.keepdims = keepdims
        return cls._reduce(a, axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.inputs()
        a = _data(a)
        out = _data(ctx.output())
        kshape = _keepdims_shape(a.shape, ctx.axes)
        mask = a == np.reshape(out, kshape)
        share = mask / mask.sum(axis=ctx.axes, keepdims=True)
        return (g.reshape(kshape) * share.astype(a.dtype, copy=False),)


class Min(Max):
    """Minimum over ``axis``; the gradient is shared evenly among ties (like ``torch.amin``)."""

    _reduce = staticmethod(np.min)


class Var(Primitive):
    """Variance over ``axis`` in two passes: ``Σ (a - mean)² / (n - correction)``.

    d/da = 2 (a - mean) / (n - correction). Accumulated in float64 (float32 for float16),
    as torch does on the CPU; constant values give exactly 0 (as torch's Welford update).
    """

    save_inputs = (0,)

    @staticmethod
    def forward(ctx, a, axis, correction, keepdims=False):
        return Var._variance(ctx, a, axis, correction, keepdims).astype(a.dtype, copy=False)

    @staticmethod
    def _variance(ctx, a, axis, correction, keepdims):
        """The variance in the accumulation dtype (not yet rounded to ``a``'s dtype)."""
        ctx.axes = axis
        ctx.keepdims = keepdims
        ctx.in_shape = a.shape
        n = ctx.n = _count(a.shape, axis)
        ctx.correction = correction
        acc = np.float32 if a.dtype == np.float16 else np.float64
        with np.errstate(invalid="ignore", divide="ignore"):
            m = np.add.reduce(a, axis=axis, keepdims=True, dtype=acc) / n
            d = a - m
            if a.size:  # a rounded mean leaves d != 0 where every value is the same
                d = np.where(a.max(axis=axis, keepdims=True) == a.min(axis=axis, keepdims=True),
                             0, d)
            s = np.add.reduce(d * d, axis=axis, keepdims=keepdims) / max(0, n - correction)
        return np.asarray(s)

    @staticmethod
    def _dvar(ctx, gv):
        """The gradient of the input for ``gv``, the gradient of the variance."""
        (a,) = ctx.inputs()
        if not ctx.keepdims:
            gv = gv.reshape(_keepdims_shape(ctx.in_shape, ctx.axes))
        d = a - a.mean(axis=ctx.axes, keepdims=True)
        with np.errstate(divide="ignore"):
            scale = float(np.divide(2.0, ctx.n - ctx.correction))
        return gv * d * scale

    @staticmethod
    def backward(ctx, g):
        with np.errstate(invalid="ignore"):
            return (Var._dvar(ctx, g),)


class Std(Primitive):
    """Standard deviation ``s = sqrt(var)`` over ``axis``.

    d/da = (a - mean) / (s (n - correction)), and 0 where s = 0 (constant values), as torch:
    not the 0 · inf = nan that ``var().sqrt()`` would give.
    """

    save_inputs = (0,)
    save_output = True

    @staticmethod
    def forward(ctx, a, axis, correction, keepdims=False):
        # the square root in the accumulation dtype: a tiny float32 variance would underflow
        return np.sqrt(Var._variance(ctx, a, axis, correction, keepdims)).astype(
            a.dtype, copy=False)

    @staticmethod
    def backward(ctx, g):
        s = ctx.output()
        zero = _data(s) == 0
        with np.errstate(invalid="ignore", divide="ignore"):
            if np.any(zero):
                gv = _where0(zero, g / (s * 2.0 + zero))
            else:
                gv = g / (s * 2.0)
            return (Var._dvar(ctx, gv),)


class Expand(Primitive):
    """Broadcast to ``shape`` (``np.broadcast_to``); the engine sums the gradient back."""

    @staticmethod
    def forward(ctx, a, shape):
        return np.broadcast_to(a, shape)

    @staticmethod
    def backward(ctx, g):
        return (g,)


class Cat(Primitive):
    """Concatenation along ``axis``; the gradient is cut back into the inputs' pieces."""

    @staticmethod
    def forward(ctx, *arrays, axis=0):
        ctx.axis = axis
        ctx.sizes = [a.shape[axis] for a in arrays]
        return np.concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        idx = [slice(None)] * len(g.shape)
        start, parts = 0, []
        for n, need in zip(ctx.sizes, ctx.needs_input_grad):
            if need:
                idx[ctx.axis] = slice(start, start + n)
                parts.append(g[tuple(idx)])
            else:
                parts.append(None)
            start += n
        return tuple(parts)


# ------------------------------------------------------------------------------- linear
def _swap(x):
    return x.swapaxes(-1, -2)


class MatMul(Primitive):
    """Matrix product ``a @ b`` with NumPy's rules (1-D, 2-D and batched operands).

    d/da = g @ bᵀ, d/db = aᵀ @ g (1-D operands are promoted to a row / column first).
    """

    save_inputs = (0, 1)

    @staticmethod
    def forward(ctx, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(
                f"matmul: both operands need at least one dimension, got shapes {a.shape} "
                f"and {b.shape} (use * for scalars)"
            )
        if a.dtype != b.dtype:
            raise RuntimeError(
                f"matmul: expected both operands to have the same dtype, got {a.dtype} and "
                f"{b.dtype}; cast one of them first (e.g. .astype(np.float32) or .float())"
            )
        try:
            return np.matmul(a, b)
        except ValueError:
            ka = a.shape[-1]
            kb = b.shape[-2] if b.ndim > 1 else b.shape[0]
            raise ValueError(
                f"matmul: shapes {a.shape} and {b.shape} are not aligned: "
                + (f"{ka} (last dim of a) != {kb} ({'second-to-last' if b.ndim > 1 else 'only'}"
                   f" dim of b)" if ka != kb else "batch dimensions do not broadcast")
            ) from None

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs()
        na, nb = len(a.shape), len(b.shape)
        if na == 1 and nb == 1:
            return g * b, g * a
        if na == 1:  # (k,) @ (..., k, m) -> (..., m)
            a2 = a.reshape((1,) + a.shape)
            g2 = g.reshape(g.shape[:-1] + (1, g.shape[-1]))
            b2 = b
        elif nb == 1:  # (..., n, k) @ (k,) -> (..., n)
            a2 = a
            b2 = b.reshape(b.shape + (1,))
            g2 = g.reshape(g.shape + (1,))
        else:
            a2, b2, g2 = a, b, g
        ga = gb = None
        if ctx.needs_input_grad[0]:
            ga = g2 @ _swap(b2)
            if na == 1:
                ga = ga.reshape(ga.shape[:-2] + ga.shape[-1:])
        if ctx.needs_input_grad[1]:
            gb = _swap(a2) @ g2
            if nb == 1:
                gb = gb.reshape(gb.shape[:-1])
        return ga, gb


class Linear(Primitive):
    """Fused affine map ``y = x @ Wᵀ + b``; x (..., in), W (out, in), b (out,) or None.

    dx = g @ W, dW = gᵀ x (over all leading axes), db = Σ g. As in torch, the bias may be
    any shape that broadcasts to the output's without growing it (a (1,) bias is shared by
    every output); its gradient is then ``g`` summed down to that shape.
    """

    save_inputs = (0, 1)
    save_for = ((1,), (0,))  # x is read only for dW, W only for dx
    full_bias = False  # the bias is not a row of out values: its gradient is g, summed down
    # to its shape by the engine (``unbroadcast``)

    @staticmethod
    def forward(ctx, x, w, b=None):
        # the common case costs four comparisons; what they let through is checked by NumPy
        # (mismatched shapes raise) and reported below in torch's terms
        dt = w.dtype
        if w.ndim != 2 or x.ndim == 0 or x.dtype is not dt \
                or (b is not None and b.dtype is not dt):
            _check_linear(x, w, b)
        # (ndarray.dot is matmul for a matrix operand, with less overhead per call than @ or
        # np.dot, which passes through a Python dispatcher first)
        try:
            out = x.dot(w.T) if x.ndim <= 2 else x @ w.T
        except ValueError:
            raise ValueError(
                f"linear: input of shape {x.shape} does not match weight of shape {w.shape} "
                f"(expected (..., {w.shape[1]}) for weight (out, in))"
            ) from None
        if b is not None:
            if b.ndim != 1:
                ctx.full_bias = True
            if out.size < _LARGE or _rowwise("add_row", out, b, True) is None:
                try:
                    out += b
                except ValueError:
                    raise ValueError(
                        f"linear: bias of shape {b.shape} does not broadcast to the output's "
                        f"shape {out.shape} (weight {w.shape}: a bias of shape ({w.shape[0]},))"
                    ) from None
        return out

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.inputs()
        need = ctx.needs_input_grad
        raw = type(g) is np.ndarray  # (graph mode: Tensors, and their @ and sum)
        gx = gw = gb = None
        if need[0]:
            gx = g.dot(w) if raw and g.ndim <= 2 else g @ w
        need_b = len(need) > 2 and need[2]
        if need[1] or need_b:
            g2 = g.reshape((-1, g.shape[-1])) if g.ndim != 2 else g
            if need[1]:
                x2 = x.reshape((-1, x.shape[-1])) if x.ndim != 2 else x
                gw = g2.T.dot(x2) if raw else g2.T @ x2
            if need_b:
                if ctx.full_bias:
                    gb = g
                else:
                    gb = _sum(g2, (0,)) if raw else g2.sum(axis=0)
        return gx, gw, gb


def _check_linear(x, w, b) -> None:
    """Raise for what ``linear`` refuses, as torch does; return for equal dtypes that are
    distinct dtype objects."""
    if w.ndim == 1:
        raise ValueError(
            f"linear: weight of shape {w.shape} is 1-D; torch then computes x @ w: write "
            f"x @ w (+ bias) for that, or pass a weight of shape (1, {w.shape[0]})"
        )
    if w.ndim != 2 or x.ndim == 0:
        raise ValueError(
            f"linear: input of shape {x.shape} does not match weight of shape {w.shape} "
            f"(expected (..., {w.shape[-1] if w.ndim else '?'}) for weight (out, in))"
        )
    dt = w.dtype
    if x.dtype != dt or (b is not None and b.dtype != dt):
        raise RuntimeError(
            f"linear: input ({x.dtype}), weight ({w.dtype})"
            + (f" and bias ({b.dtype})" if b is not None else "")
            + " must have the same dtype; cast the input first (e.g. x.float())"
        )


# ---------------------------------------------------------------------------- movement
class Reshape(Primitive):
    """Reshape (a view when possible); the gradient is reshaped back."""

    @staticmethod
    def forward(ctx, a, shape):
        ctx.in_shape = a.shape
        try:
            return a.reshape(shape)
        except ValueError:
            raise ValueError(
                f"cannot reshape a tensor of shape {a.shape} ({a.size} elements) into shape "
                f"{tuple(shape)}"
            ) from None

    @staticmethod
    def backward(ctx, g):
        return (g.reshape(ctx.in_shape),)


class Transpose(Primitive):
    """Permute axes (NumPy's ``transpose``); the gradient takes the inverse permutation."""

    @staticmethod
    def forward(ctx, a, axes):
        ctx.axes = axes
        return np.transpose(a, axes)

    def describe(self) -> str:
        return f"perm={tuple(int(a) for a in self.axes)}"

    @staticmethod
    def backward(ctx, g):
        return (g.transpose(tuple(np.argsort(ctx.axes))),)


def _is_advanced(idx) -> bool:
    """True when ``idx`` holds an integer array (which may repeat positions)."""
    items = idx if isinstance(idx, tuple) else (idx,)
    for i in items:
        if isinstance(i, np.ndarray) and i.dtype != bool:
            return True
    return False


class GetItem(Primitive):
    """Indexing ``a[idx]`` (ints, slices, None, Ellipsis, boolean and integer arrays).

    The gradient scatters back into zeros, adding where integer indices repeat.
    """

    @staticmethod
    def forward(ctx, a, idx):
        ctx.in_shape = a.shape
        ctx.idx = idx
        try:
            return a[idx]
        except IndexError as e:
            raise IndexError(f"index {idx!r} is invalid for a tensor of shape {a.shape}: {e}") from None

    @staticmethod
    def backward(ctx, g):
        if _is_tensor(g):
            return (Scatter.apply(g, shape=ctx.in_shape, idx=ctx.idx),)
        return (Scatter.forward(NO_CTX, g, ctx.in_shape, ctx.idx),)


class Scatter(Primitive):
    """Zeros of ``shape`` with ``g`` added at ``idx`` (the adjoint of ``GetItem``)."""

    @staticmethod
    def forward(ctx, g, shape, idx):
        ctx.idx = idx
        out = np.zeros(shape, dtype=g.dtype)
        if _is_advanced(idx):
            np.add.at(out, idx, g)
        else:
            out[idx] = g
        return out

    @staticmethod
    def backward(ctx, g):
        return (g[ctx.idx],)


class Where(Primitive):
    """``where(cond, a, b)`` elementwise; ``cond`` is a constant boolean array."""

    @staticmethod
    def forward(ctx, a, b, cond):
        ctx.cond = cond
        return np.where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        c = ctx.cond
        return (g * c if ctx.needs_input_grad[0] else None,
                g * ~c if ctx.needs_input_grad[1] else None)
