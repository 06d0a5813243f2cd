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
shape: the engine reduces them to each input's shape in one place (``autograd.unbroadcast``).
"""
from __future__ import annotations

import numpy as np

from .function import FREED, NO_CTX, Function, _grad_mode, freed_error


class Primitive(Function):
    """A Function whose forward/backward run on ndarrays (see the module docstring)."""

    _raw = True
    save_inputs: tuple = ()  # indices of the inputs that backward reads (contiguous)
    save_output = False  # backward reads the output (exp, tanh, sqrt, ...)
    _save_slice = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        si = cls.__dict__.get("save_inputs")
        if si is not None:
            if si and tuple(si) != tuple(range(si[0], si[-1] + 1)):
                raise TypeError(f"{cls.__name__}.save_inputs must be contiguous indices")
            cls._save_slice = slice(si[0], si[-1] + 1) if si else None

    def inputs(self) -> tuple:
        """The saved inputs: ndarrays in raw mode, Tensors (graph-connected) in graph mode."""
        v = self._inputs
        if v is FREED:
            raise freed_error(self)
        if self._graph_mode:
            return v
        if len(v) == 2:
            a, b = v
            return (a.data if isinstance(a, Tensor) else a, b.data if isinstance(b, Tensor) else b)
        return tuple([x.data if isinstance(x, Tensor) else x for x in v])

    def output(self):
        """The op's own output: an ndarray in raw mode, a Tensor of this node in graph mode.

        The output data is saved instead of the output Tensor (which would be a cycle); in
        graph mode it is wrapped as a Tensor whose node is ``self``, so second derivatives
        flow through it to the inputs.
        """
        out = self._out
        if out is FREED:
            raise freed_error(self)
        if self._graph_mode:
            return _from_op(out, self)
        return out

    @classmethod
    def apply(cls, *args, **params):
        """Apply to inputs (Tensors, ndarrays or Python scalars); ``params`` are settings."""
        datas = []
        edges = []
        record = False
        for a in args:
            if isinstance(a, Tensor):
                datas.append(a.data)
                if a.requires_grad:
                    record = True
                    edges.append(a._ctx or a)
                    continue
            else:
                datas.append(a)
            edges.append(None)
        if record and _grad_mode.enabled:
            ctx = cls()
            out = cls.forward(ctx, *datas, **params)
            ctx.parents = tuple(edges)
            ctx.needs_input_grad = tuple([e is not None for e in edges])
            if cls._save_slice is not None:
                ctx._inputs = args[cls._save_slice]
            if cls.save_output:
                ctx._out = out
            return _from_op(out, ctx)
        return _from_op(cls.forward(NO_CTX, *datas, **params), None)


# Bound by tensor.py once the Tensor class exists (tensor.py imports this module).
Tensor = None
_from_op = None


def _bind(tensor_cls, from_op) -> None:
    global Tensor, _from_op
    Tensor, _from_op = tensor_cls, from_op


def _is_tensor(x) -> bool:
    return isinstance(x, Tensor)


def _log(x):
    return x.log() if _is_tensor(x) else np.log(x)


_MATERIALIZE_MAX = 1 << 14  # broadcast gradients up to this size are written out


def _expand(g, shape, scale=None):
    """``g * scale`` broadcast to ``shape``: an Expand node for Tensors; for ndarrays a new
    array when small (cheaper than ``np.broadcast_to``'s Python overhead), a read-only view
    when large (no memory)."""
    if _is_tensor(g):
        return Expand.apply(g if scale is None else g * scale, shape=shape)
    n = 1
    for s in shape:
        n *= s
    if n <= _MATERIALIZE_MAX:
        out = np.empty(shape, dtype=g.dtype)
        if scale is None:
            out[...] = g
        else:
            np.multiply(g, scale, out=out)
        return out
    return np.broadcast_to(g if scale is None else g * scale, shape)


def _keepdims_shape(shape: tuple, axes: tuple) -> tuple:
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


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

    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, g):
        return g, g


class Sub(Primitive):
    """Subtraction ``a - b`` (broadcasting). d/da = 1, d/db = -1."""

    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, g):
        return g, (-g if ctx.needs_input_grad[1] else None)


class Mul(Primitive):
    """Product ``a * b`` (broadcasting). d/da = b, d/db = a."""

    save_inputs = (0, 1)

    @staticmethod
    def forward(ctx, a, b):
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs()
        ga, gb = ctx.needs_input_grad
        return (g * b if ga else None), (g * a if gb else None)


class Div(Primitive):
    """Quotient ``y = a / b``. d/da = 1/b, d/db = -a/b² = -y/b."""

    save_inputs = (1,)
    save_output = True

    @staticmethod
    def forward(ctx, a, b):
        return a / b

    @staticmethod
    def backward(ctx, g):
        (b,) = ctx.inputs()
        ga = g / b
        gb = None
        if ctx.needs_input_grad[1]:
            gb = ga * ctx.output()
            gb *= -1.0  # in place on a fresh array (a new node for Tensors)
        return (ga if ctx.needs_input_grad[0] else None), gb


class Pow(Primitive):
    """Power ``y = a ** b`` (tensor or scalar exponent). d/da = b·a^(b-1), d/db = y·log(a)."""

    save_inputs = (0, 1)

    @staticmethod
    def forward(ctx, a, b):
        out = a ** b
        if not isinstance(b, (int, float)):
            ctx._out = out  # only a tensor exponent's gradient reads the output
        return out

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs()
        ga = gb = None
        if ctx.needs_input_grad[0]:
            if isinstance(b, (int, float)):
                if b == 0:  # a ** 0 is constant; a ** -1 would make 0 * inf = nan at a = 0
                    ga = g * 0.0
                else:
                    ga = g * a if b == 2 else g * a ** (b - 1)
                    ga *= b  # in place on a fresh array (a new node for Tensors)
            else:
                ga = g * (b * a ** (b - 1))
        if ctx.needs_input_grad[1]:
            gb = g * (ctx.output() * _log(a))
        return ga, gb


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
        return (g / (2.0 * ctx.output()),)


class Tanh(Primitive):
    """``y = tanh(a)``; dy/da = 1 - y²."""

    save_output = True

    @staticmethod
    def forward(ctx, a):
        return np.tanh(a)

    @staticmethod
    def backward(ctx, g):
        y = ctx.output()
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
    """``y = max(a, 0)``; dy/da = 1 where a > 0, else 0 (0 at a = 0, as torch)."""

    save_output = True

    @staticmethod
    def forward(ctx, a):
        return np.maximum(a, 0)

    @staticmethod
    def backward(ctx, g):
        out = ctx._out
        if out is FREED:
            raise freed_error(ctx)
        return (g * (out > 0),)


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
class Sum(Primitive):
    """Sum over ``axis`` (all by default). The gradient broadcasts back over the summed axes."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.in_shape = a.shape
        ctx.axes = axis
        ctx.keepdims = keepdims
        return np.add.reduce(a, axis=axis, keepdims=keepdims)

    @staticmethod
    def backward(ctx, g):
        if not ctx.keepdims:
            g = g.reshape(_keepdims_shape(ctx.in_shape, ctx.axes))
        return (_expand(g, ctx.in_shape),)


class Mean(Primitive):
    """Mean over ``axis`` (n elements each). The gradient is ``grad / n`` broadcast back."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.in_shape = a.shape
        ctx.axes = axis
        ctx.keepdims = keepdims
        n = 1
        for i in axis:
            n *= a.shape[i]
        ctx.n = n
        return np.add.reduce(a, axis=axis, keepdims=keepdims) / n

    @staticmethod
    def backward(ctx, g):
        shape = ctx.in_shape
        if not ctx.keepdims:
            g = g.reshape(_keepdims_shape(shape, ctx.axes))
        return (_expand(g, shape, 1.0 / ctx.n),)


class Max(Primitive):
    """Maximum over ``axis``; the gradient is shared evenly among ties (like ``torch.amax``)."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        out = np.max(a, axis=axis, keepdims=keepdims)
        ctx.axes = axis
        ctx.keepdims = keepdims
        ctx.save_for_backward(a, out)
        return out

    @staticmethod
    def backward(ctx, g):
        a, out = ctx.saved_tensors
        kshape = _keepdims_shape(a.shape, ctx.axes)
        mask = a == np.reshape(out, kshape)
        share = mask / mask.sum(axis=ctx.axes, keepdims=True)
        return (g.reshape(kshape) * share.astype(a.dtype, copy=False),)


class Expand(Primitive):
    """Broadcast to ``shape`` (``np.broadcast_to``); the engine sums the gradient back."""

    @staticmethod
    def forward(ctx, a, shape):
        return np.broadcast_to(a, shape)

    @staticmethod
    def backward(ctx, g):
        return (g,)


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

    dx = g @ W, dW = gᵀ x (over all leading axes), db = Σ g.
    """

    save_inputs = (0, 1)

    @staticmethod
    def forward(ctx, x, w, b=None):
        if w.ndim != 2 or x.ndim == 0 or x.shape[-1] != w.shape[1]:
            raise ValueError(
                f"linear: input of shape {x.shape} does not match weight of shape {w.shape} "
                f"(expected (..., {w.shape[-1] if w.ndim else '?'}) for weight (out, in))"
            )
        if b is not None and b.shape != (w.shape[0],):
            raise ValueError(f"linear: bias of shape {b.shape} does not match weight {w.shape}")
        out = x @ w.T
        if b is not None:
            out += b
        return out

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.inputs()
        need = ctx.needs_input_grad
        gx = g @ w if need[0] else None
        gw = gb = None
        if need[1] or (len(need) > 2 and need[2]):
            g2 = g.reshape((-1, g.shape[-1])) if len(g.shape) != 2 else g
            if need[1]:
                x2 = x.reshape((-1, x.shape[-1])) if len(x.shape) != 2 else x
                gw = g2.T @ x2
            if len(need) > 2 and need[2]:
                gb = g2.sum(axis=0)
        return gx, gw, gb


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
