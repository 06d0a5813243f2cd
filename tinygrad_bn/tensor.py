"""``Tensor``: an ndarray, its gradient, and the node of the graph that made it."""
from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from . import function as _function
from . import ops
from .function import NO_CTX, _grad_mode

_new = object.__new__
_ndarray = np.ndarray


def _from_op(data, ctx) -> "Tensor":
    """Wrap an op's result; ``ctx`` is its node (None when nothing was recorded)."""
    if type(data) is not _ndarray:
        data = np.asarray(data)
    t = _new(Tensor)
    t.data = data
    t.grad = None
    t._ctx = ctx
    t._name = None
    if ctx is None:
        t.requires_grad = False
    else:
        t.requires_grad = True
        ctx.shape = data.shape
        ctx.dtype = data.dtype
        sc = _grad_mode.scope
        if sc is not None:
            ctx.scope = sc
            if sc.record is not None:  # viz.trace() is open
                sc.record(ctx, data)
    return t


def _operand(x):
    """A non-Tensor operand as NumPy sees it: Python scalars stay weak (take the Tensor's dtype)."""
    if isinstance(x, (int, float, bool)):
        return x
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple)):
        return np.asarray(x)
    raise TypeError(f"unsupported operand type for a Tensor operation: {type(x).__name__}")


def _binary(cls, a, b) -> "Tensor":
    """Apply a two-input primitive; either side may be a Tensor, an ndarray or a scalar."""
    if isinstance(a, Tensor):
        ad = a.data
        ra = a.requires_grad
    else:
        a = ad = _operand(a)
        ra = False
    if isinstance(b, Tensor):
        bd = b.data
        rb = b.requires_grad
    else:
        b = bd = _operand(b)
        rb = False
    try:
        if (ra or rb) and _grad_mode.enabled:
            ctx = cls()
            out = cls.forward(ctx, ad, bd)
            ctx.parents = ((a._ctx or a) if ra else None, (b._ctx or b) if rb else None)
            ctx.needs_input_grad = (ra, rb)
            sl = cls._save_slice
            if sl is not None:
                ctx._inputs = (a, b)[sl]
            if cls.save_output and rb:  # the binary ops (Div, Pow) read it only for d/db
                ctx._out = out
            return _from_op(out, ctx)
        return _from_op(cls.forward(NO_CTX, ad, bd), None)
    except ValueError as e:
        if cls is ops.MatMul:
            raise
        raise ValueError(
            f"{cls.__name__.lower()}: shapes {np.shape(ad)} and {np.shape(bd)} do not "
            f"broadcast ({e})"
        ) from None


def _unary(cls, a: "Tensor", *params) -> "Tensor":
    """Apply a one-input primitive; ``params`` are settings (axis, shape, ...), not inputs."""
    if a.requires_grad and _grad_mode.enabled:
        ctx = cls()
        out = cls.forward(ctx, a.data, *params)
        ctx.parents = (a._ctx or a,)
        ctx.needs_input_grad = (True,)
        if cls._save_slice is not None:
            ctx._inputs = (a,)
        if cls.save_output:
            ctx._out = out
        return _from_op(out, ctx)
    return _from_op(cls.forward(NO_CTX, a.data, *params), None)


def _shape_arg(shape) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(s) for s in shape)


class Tensor:
    """An n-dimensional array that records the operations applied to it.

    ``Tensor(data, requires_grad=False, dtype=None, name=None)`` copies ``data`` (like
    ``torch.tensor``). An ndarray keeps its dtype; Python numbers and lists become float32
    (PyTorch's default float dtype; unlike ``torch.tensor``, integer lists too: pass an
    integer ndarray or ``dtype=`` for an integer Tensor). Python scalars in an operation
    take the Tensor's dtype. Only floating-point Tensors can require gradients.

    Attributes: ``data`` (ndarray), ``grad`` (ndarray shaped like ``data``, or None),
    ``requires_grad``, ``name``; ``shape``, ``dtype``, ``ndim``, ``size``.
    """

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_name", "__weakref__")
    __array_ufunc__ = None  # ndarray (op) Tensor defers to Tensor's reflected operator
    __array_priority__ = 1000

    def __init__(self, data: Any, requires_grad: bool = False, dtype=None,
                 name: str | None = None):
        if isinstance(data, Tensor):
            data = data.data
        if dtype is not None:
            dtype = np.dtype(dtype)
        if isinstance(data, (np.ndarray, np.generic)):
            arr = np.array(data, dtype=dtype, copy=True)
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

    # -- constructors --------------------------------------------------------------------
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
        """Standard-normal samples of ``shape`` (``rng``: a Generator or a seed)."""
        rng = np.random.default_rng(rng)
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
    def size(self) -> int:
        """Number of elements (NumPy's ``size``; ``numel()`` in torch)."""
        return self.data.size

    def numel(self) -> int:
        return self.data.size

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
        return self

    def numpy(self) -> np.ndarray:
        """The underlying ndarray (shared, not copied)."""
        return self.data

    def item(self) -> float:
        if self.data.size != 1:
            raise ValueError(f"item() needs a Tensor with one element, got shape {self.shape}")
        return self.data.item()

    def tolist(self):
        return self.data.tolist()

    def detach(self) -> "Tensor":
        """A Tensor sharing this data, cut from the graph."""
        return _from_op(self.data, None)

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

    __hash__ = object.__hash__

    # -- autograd ------------------------------------------------------------------------
    def backward(self, gradient=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        ``gradient`` (same shape as self) is required unless self has one element. The
        graph's saved values are freed afterwards unless ``retain_graph=True``.
        """
        from .autograd import backward

        backward(self, gradient, retain_graph=retain_graph)

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
        return _binary(ops.MatMul, self, other)

    def __rmatmul__(self, other):
        return _binary(ops.MatMul, other, self)

    def __neg__(self):
        return _unary(ops.Neg, self)

    def __pos__(self):
        return self

    # comparisons give boolean Tensors outside the graph (like torch)
    def _compare(self, other, fn):
        other = other.data if isinstance(other, Tensor) else _operand(other)
        return _from_op(fn(self.data, other), None)

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

    # -- elementwise functions -------------------------------------------------------------
    def exp(self) -> "Tensor":
        """Elementwise ``e**x``."""
        return _unary(ops.Exp, self)

    def log(self) -> "Tensor":
        """Elementwise natural logarithm."""
        return _unary(ops.Log, self)

    def sqrt(self) -> "Tensor":
        """Elementwise square root."""
        return _unary(ops.Sqrt, self)

    def tanh(self) -> "Tensor":
        """Elementwise hyperbolic tangent."""
        return _unary(ops.Tanh, self)

    def sigmoid(self) -> "Tensor":
        """Elementwise logistic function ``1 / (1 + e**-x)``."""
        return _unary(ops.Sigmoid, self)

    def relu(self) -> "Tensor":
        """Elementwise ``max(x, 0)``."""
        return _unary(ops.ReLU, self)

    def abs(self) -> "Tensor":
        """Elementwise ``|x|`` (gradient ``sign(x)``, 0 at 0), as ``where(x < 0, -x, x)``."""
        return where(self.data < 0, -self, self)

    def astype(self, dtype) -> "Tensor":
        """A copy in ``dtype``; differentiable (the gradient is cast back)."""
        dtype = np.dtype(dtype)
        if dtype == self.dtype:
            return self
        return _unary(ops.Cast, self, dtype)

    def float(self) -> "Tensor":
        return self.astype(np.float32)

    def double(self) -> "Tensor":
        return self.astype(np.float64)

    # -- reductions ---------------------------------------------------------------------
    def sum(self, axis=None, keepdims: bool = False) -> "Tensor":
        """Sum over ``axis`` (int, tuple or None for all)."""
        return _unary(ops.Sum, self, ops.normalize_axis(axis, self.data.ndim, self.shape),
                      keepdims)

    def mean(self, axis=None, keepdims: bool = False) -> "Tensor":
        """Mean over ``axis`` (int, tuple or None for all)."""
        axes = ops.normalize_axis(axis, self.data.ndim, self.shape)
        if self.data.size == 0 or any(self.data.shape[i] == 0 for i in axes):
            raise ValueError(f"mean over axis {axis!r} of an empty tensor of shape {self.shape}")
        return _unary(ops.Mean, self, axes, keepdims)

    def max(self, axis=None, keepdims: bool = False) -> "Tensor":
        """Maximum over ``axis``; ties share the gradient evenly (like ``torch.amax``)."""
        axes = ops.normalize_axis(axis, self.data.ndim, self.shape)
        if self.data.size == 0:
            raise ValueError(f"max of an empty tensor of shape {self.shape}")
        return _unary(ops.Max, self, axes, keepdims)

    def min(self, axis=None, keepdims: bool = False) -> "Tensor":
        """Minimum over ``axis`` (``-max(-x)``)."""
        return -((-self).max(axis=axis, keepdims=keepdims))

    def var(self, axis=None, keepdims: bool = False, ddof: int = 0) -> "Tensor":
        """Variance over ``axis`` in two passes: ``Σ (x - mean)² / (n - ddof)``.

        ``ddof=0`` is the biased variance (what normalization uses), ``ddof=1`` the unbiased
        one (what running statistics track).
        """
        axes = ops.normalize_axis(axis, self.data.ndim, self.shape)
        n = 1
        for i in axes:
            n *= self.data.shape[i]
        if n - ddof <= 0:
            raise ValueError(
                f"var over axis {axis!r} of shape {self.shape} has {n} value(s) per entry; "
                f"ddof={ddof} needs more than {ddof}"
            )
        d = self - self.mean(axis=axes, keepdims=True)
        if ddof == 0:
            return (d ** 2).mean(axis=axes, keepdims=keepdims)
        return (d ** 2).sum(axis=axes, keepdims=keepdims) / (n - ddof)

    def std(self, axis=None, keepdims: bool = False, ddof: int = 0) -> "Tensor":
        """Standard deviation: ``sqrt(var(axis, keepdims, ddof))``."""
        return self.var(axis=axis, keepdims=keepdims, ddof=ddof).sqrt()

    # -- shape ---------------------------------------------------------------------------
    def reshape(self, *shape) -> "Tensor":
        """Reshape to ``shape`` (ints or one tuple; one entry may be -1)."""
        shape = _shape_arg(shape)
        if shape == self.data.shape:
            return self
        return _unary(ops.Reshape, self, shape)

    view = reshape

    def flatten(self, start_axis: int = 0) -> "Tensor":
        """Merge the axes from ``start_axis`` on into one."""
        s = self.shape
        start_axis = start_axis % max(len(s), 1)
        return self.reshape(s[:start_axis] + (-1,))

    def transpose(self, *axes) -> "Tensor":
        """Permute the axes (NumPy semantics: no arguments reverses them).

        Note: unlike ``torch.transpose(a, b)``, the arguments are a full permutation; use
        ``swapaxes(a, b)`` to exchange two axes.
        """
        nd = self.data.ndim
        if not axes or (len(axes) == 1 and axes[0] is None):
            perm = tuple(range(nd))[::-1]
        else:
            perm = _shape_arg(axes)
            if sorted(a % nd if nd else a for a in perm) != list(range(nd)):
                raise ValueError(
                    f"transpose axes {perm} are not a permutation of the {nd} axes of shape "
                    f"{self.shape} (use swapaxes(a, b) to exchange two axes)"
                )
            perm = tuple(a % nd for a in perm)
        if perm == tuple(range(nd)):
            return self
        return _unary(ops.Transpose, self, perm)

    permute = transpose

    @property
    def T(self) -> "Tensor":
        """The axes reversed (the transpose of a matrix)."""
        return self.transpose()

    def swapaxes(self, axis1: int, axis2: int) -> "Tensor":
        """Exchange two axes."""
        nd = self.data.ndim
        ax = ops.normalize_axis((axis1,), nd, self.shape), ops.normalize_axis(
            (axis2,), nd, self.shape)
        if not nd:  # a 0-d tensor: axes 0 and -1 are valid and change nothing
            return self
        ax = ax[0][0], ax[1][0]
        perm = list(range(nd))
        perm[ax[0]], perm[ax[1]] = perm[ax[1]], perm[ax[0]]
        return self.transpose(*perm)

    def unsqueeze(self, axis: int) -> "Tensor":
        """Insert a size-1 axis at ``axis``."""
        s = list(self.shape)
        axis = axis % (len(s) + 1)
        s.insert(axis, 1)
        return self.reshape(tuple(s))

    def squeeze(self, axis=None) -> "Tensor":
        """Remove size-1 axes (all, or those in ``axis``)."""
        if axis is None:
            return self.reshape(tuple(s for s in self.shape if s != 1))
        axes = ops.normalize_axis(axis, self.data.ndim, self.shape)
        for a in axes:
            if self.shape[a] != 1:
                raise ValueError(f"cannot squeeze axis {a} of size {self.shape[a]} "
                                 f"(shape {self.shape})")
        return self.reshape(tuple(s for i, s in enumerate(self.shape) if i not in axes))

    def expand(self, *shape) -> "Tensor":
        """Broadcast to ``shape`` (NumPy's ``broadcast_to``)."""
        shape = _shape_arg(shape)
        if shape == self.shape:
            return self
        try:
            np.broadcast_shapes(self.shape, shape)
        except ValueError:
            raise ValueError(f"cannot broadcast a tensor of shape {self.shape} to {shape}") from None
        return _unary(ops.Expand, self, shape)

    broadcast_to = expand

    def __getitem__(self, idx) -> "Tensor":
        """Indexing with ints, slices, None, Ellipsis, boolean and integer arrays."""
        if isinstance(idx, tuple):
            idx = tuple(_index_item(i) for i in idx)
        else:
            idx = _index_item(idx)
        return _unary(ops.GetItem, self, idx)


def _index_item(i):
    if isinstance(i, Tensor):
        return i.data
    if isinstance(i, list):
        return np.asarray(i)
    return i


def where(cond, a, b) -> Tensor:
    """Elementwise ``a`` where ``cond`` else ``b`` (``cond``: boolean array or Tensor)."""
    c = np.asarray(cond.data if isinstance(cond, Tensor) else cond, dtype=bool)
    return ops.Where.apply(a, b, cond=c)


ops._bind(Tensor, _from_op)
_function._bind(Tensor, _from_op)
