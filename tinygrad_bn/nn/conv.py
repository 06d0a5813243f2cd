"""Convolution, pooling, ``Flatten`` and ``Embedding`` layers, and their functional forms.

Each layer call is one graph node (the primitives in ``core.conv_ops``: window views and
matmuls in NumPy, backward as a transposed convolution), with torch's arguments, defaults,
checks, initialization, ``state_dict`` keys (``weight``, ``bias``) and reprs. Inputs may be
batched (N, C, *spatial) or unbatched (C, *spatial), as in torch.

Initialization (torch's): conv weights ``kaiming_uniform_(a=√5)``, i.e.
U(-1/√fan_in, 1/√fan_in) with ``fan_in = in_channels/groups · ∏kernel``; biases
U(-1/√fan_in, 1/√fan_in); embeddings N(0, 1) with the ``padding_idx`` row zero. ``rng`` (a
Generator or a seed) makes it reproducible; by default the generator that
``tinygrad_bn.manual_seed`` seeds.
"""
from __future__ import annotations

import math

import numpy as np

from ..core import conv_ops
from ..core.factories import generator
from ..core.tensor import Tensor
from . import init
from .module import Module, Parameter

__all__ = [
    "Conv1d", "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Flatten", "Embedding",
    "conv1d", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "embedding",
    "one_hot",
]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _np_dtype(dtype) -> np.dtype:
    """A NumPy dtype from a NumPy dtype, a name, or a torch dtype (``torch.float64``)."""
    if dtype is None:
        return np.dtype(np.float32)
    if type(dtype).__module__ == "torch":
        dtype = str(dtype).rsplit(".", 1)[-1]
    return np.dtype(dtype)


def _check_device(device) -> None:
    if device is not None and str(device) != "cpu":
        raise ValueError(f"tinygrad_bn runs on the CPU only, got device={device!r}")


def _input(x, fn: str):
    """A Tensor or ndarray as given (the primitive reads its array); else TypeError."""
    if isinstance(x, (Tensor, np.ndarray)):
        return x
    raise TypeError(f"{fn}(): argument 'input' must be a Tensor, not {type(x).__name__}")


def _ntuple(v, n: int, name: str, cls: str) -> tuple:
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return (int(v),) * n
    if isinstance(v, (tuple, list)) and len(v) == n and all(
            isinstance(e, (int, np.integer)) and not isinstance(e, bool) for e in v):
        return tuple(int(e) for e in v)
    raise ValueError(f"{cls}: {name} must be an int or a tuple of {n} ints, got {v!r}")


# --------------------------------------------------------------------------- functional
def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1) -> Tensor:
    """1-D convolution (cross-correlation): x (N, C, L) or (C, L), weight (O, C/groups, k),
    bias (O,) -> (N, O, L_out). ``padding``: int, tuple, "valid" or "same" (torch's)."""
    return conv_ops.Conv1d.apply(_input(input, "conv1d"), weight, bias, stride=stride,
                                 padding=padding, dilation=dilation, groups=groups)


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1) -> Tensor:
    """2-D convolution (cross-correlation): x (N, C, H, W) or (C, H, W), weight
    (O, C/groups, kH, kW), bias (O,) -> (N, O, H_out, W_out), with
    ``H_out = ⌊(H + 2·pad − dil·(kH − 1) − 1) / stride⌋ + 1``. One graph node."""
    return conv_ops.Conv2d.apply(_input(input, "conv2d"), weight, bias, stride=stride,
                                 padding=padding, dilation=dilation, groups=groups)


def max_pool2d(input: Tensor, kernel_size, stride=None, padding=0, dilation=1,
               ceil_mode: bool = False, return_indices: bool = False):
    """Maximum over each window of x (N, C, H, W) or (C, H, W); ``stride`` defaults to
    ``kernel_size``; padding counts as -inf. The gradient goes to the first maximum of each
    window (as torch). With ``return_indices``: ``(output, indices)``, the flat index
    h·W + w of each maximum in its input plane (int64)."""
    sink = [] if return_indices else None
    out = conv_ops.MaxPool2d.apply(_input(input, "max_pool2d"), kernel_size=kernel_size,
                                   stride=stride, padding=padding, dilation=dilation,
                                   ceil_mode=bool(ceil_mode), indices=sink)
    if return_indices:
        return out, Tensor._wrap(sink[0].astype(np.int64, copy=False), None)
    return out


def avg_pool2d(input: Tensor, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:
    """Mean over each window of x (N, C, H, W) or (C, H, W); ``stride`` defaults to
    ``kernel_size``. The divisor is torch's: the window within input + padding
    (``count_include_pad``) or within the input, or ``divisor_override``."""
    return conv_ops.AvgPool2d.apply(_input(input, "avg_pool2d"), kernel_size=kernel_size,
                                    stride=stride, padding=padding, ceil_mode=bool(ceil_mode),
                                    count_include_pad=bool(count_include_pad),
                                    divisor_override=divisor_override)


def adaptive_avg_pool2d(input: Tensor, output_size) -> Tensor:
    """Mean over ``output_size`` bins (an int, or a pair of ints / None for the input's
    size); bin i of n over a size S covers [⌊i·S/n⌋, ⌈(i+1)·S/n⌉) (torch's, overlapping when
    n does not divide S)."""
    return conv_ops.AdaptiveAvgPool2d.apply(_input(input, "adaptive_avg_pool2d"),
                                            output_size=output_size)


def _indices(input, fn: str) -> np.ndarray:
    if isinstance(input, Tensor):
        return input.data
    if isinstance(input, (np.ndarray, list, tuple, int, np.integer)):
        arr = np.asarray(input)
        return arr.astype(np.int64) if arr.size == 0 and arr.dtype.kind == "f" else arr
    raise TypeError(f"{fn}(): argument 'input' must be a Tensor of indices, not "
                    f"{type(input).__name__}")


class PaddingIdxError(ValueError, AssertionError):
    """``padding_idx`` outside the table (torch raises AssertionError)."""


def _padding_idx(padding_idx, n: int) -> int | None:
    if padding_idx is None:
        return None
    if isinstance(padding_idx, bool) or not isinstance(padding_idx, (int, np.integer)):
        raise TypeError(f"padding_idx must be an int or None, got {padding_idx!r}")
    if not -n <= padding_idx < n:
        raise PaddingIdxError(
            f"Padding_idx must be within num_embeddings: padding_idx={padding_idx} for "
            f"{n} embeddings")
    return int(padding_idx) % n


def _check_supported(max_norm, sparse) -> None:
    if max_norm is not None:
        raise NotImplementedError(
            "embedding: max_norm is not supported (torch renormalizes the weight rows in "
            "place); renormalize the weight yourself under no_grad() before the call")
    if sparse:
        raise NotImplementedError("embedding: sparse gradients are not supported; use "
                                  "sparse=False (a dense .grad)")


def embedding(input, weight: Tensor, padding_idx: int | None = None, max_norm=None,
              norm_type: float = 2.0, scale_grad_by_freq: bool = False,
              sparse: bool = False) -> Tensor:
    """Rows of ``weight`` (num_embeddings, D) at the integer ``input`` indices (any shape)
    -> input.shape + (D,). The ``padding_idx`` row gets no gradient; repeated indices
    accumulate. ``max_norm`` (renormalizes ``weight`` in place) and ``sparse`` gradients
    are not supported: they raise NotImplementedError."""
    _check_supported(max_norm, sparse)
    idx = _indices(input, "embedding")
    w = weight.data if isinstance(weight, Tensor) else weight
    n = w.shape[0] if isinstance(w, np.ndarray) and w.ndim == 2 else 0
    pi = _padding_idx(padding_idx, n) if isinstance(w, np.ndarray) and w.ndim == 2 else None
    return conv_ops.Embedding.apply(weight, indices=idx, padding_idx=pi,
                                    scale_grad_by_freq=bool(scale_grad_by_freq))


def one_hot(tensor, num_classes: int = -1) -> Tensor:
    """Integer class indices (any shape) -> int64 one-hot vectors, shape + (num_classes,).
    ``num_classes=-1``: one more than the largest index. Not differentiable (as torch)."""
    idx = _indices(tensor, "one_hot")
    if idx.dtype.kind not in "iu":
        raise conv_ops.LayerInputError(
            f"one_hot is only applicable to integer index tensors, got dtype {idx.dtype}")
    if num_classes == -1:
        if idx.size == 0:
            raise conv_ops.LayerInputError("Can not infer total number of classes from empty "
                                           f"tensor (shape {idx.shape}).")
        num_classes = int(idx.max()) + 1
    if idx.size and idx.min() < 0:
        raise conv_ops.LayerInputError(f"Class values must be non-negative, got "
                                       f"{int(idx.min())}.")
    if idx.size and idx.max() >= num_classes:
        raise conv_ops.LayerInputError(
            f"Class values must be smaller than num_classes: got {int(idx.max())} for "
            f"num_classes={num_classes}.")
    out = np.zeros(idx.shape + (int(num_classes),), dtype=np.int64)
    np.put_along_axis(out, idx[..., None].astype(np.intp), 1, axis=-1)
    return Tensor._wrap(out, None)


# ------------------------------------------------------------------------------ layers
class _ConvNd(Module):
    _nd = 2
    _op = conv_ops.Conv2d

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1,
                 padding=0, dilation=1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device=None, dtype=None, *, rng=None):
        super().__init__()
        cls, nd = type(self).__name__, self._nd
        _check_device(device)
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels),
                        ("groups", groups)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{cls}: {name} must be an int, got {v!r}")
        if groups <= 0:
            raise ValueError(f"groups must be a positive integer (got groups={groups})")
        if in_channels % groups != 0:
            raise ValueError(f"in_channels must be divisible by groups (in_channels="
                             f"{in_channels}, groups={groups})")
        if out_channels % groups != 0:
            raise ValueError(f"out_channels must be divisible by groups (out_channels="
                             f"{out_channels}, groups={groups})")
        kernel = _ntuple(kernel_size, nd, "kernel_size", cls)
        stride = _ntuple(stride, nd, "stride", cls)
        dilation = _ntuple(dilation, nd, "dilation", cls)
        if any(k <= 0 for k in kernel):
            raise ValueError(f"{cls}: kernel_size must be positive, got {kernel}")
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"Invalid padding string {padding!r}, should be one of "
                                 "{'valid', 'same'}")
            if padding == "same" and any(s != 1 for s in stride):
                raise ValueError("padding='same' is not supported for strided convolutions")
        else:
            padding = _ntuple(padding, nd, "padding", cls)
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {set(_PADDING_MODES)}, but got "
                             f"padding_mode={padding_mode!r}")
        if padding_mode != "zeros":
            raise NotImplementedError(
                f"{cls}: padding_mode={padding_mode!r} is not supported, only 'zeros'; pad "
                "the input yourself (e.g. np.pad with mode='reflect') and use padding=0")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.padding = kernel, stride, padding
        self.dilation, self.groups, self.padding_mode = dilation, int(groups), padding_mode
        rng = generator() if rng is None else np.random.default_rng(rng)
        dtype = _np_dtype(dtype)
        self.weight = Parameter(np.empty((out_channels, in_channels // groups) + kernel,
                                         dtype=dtype))
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), rng=rng)
        if bias:
            self.bias = Parameter(np.empty((out_channels,), dtype=dtype))
            fan_in, _ = init.fan_in_and_fan_out(self.weight)
            if fan_in != 0:
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(self.bias, -bound, bound, rng=rng)
        else:
            self.register_parameter("bias", None)

    def forward(self, input: Tensor) -> Tensor:
        return self._op.apply(_input(input, self._op.op_name), self.weight, self.bias,
                              stride=self.stride, padding=self.padding,
                              dilation=self.dilation, groups=self.groups)

    def extra_repr(self) -> str:
        nd = self._nd
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if isinstance(self.padding, str) or self.padding != (0,) * nd:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * nd:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class Conv1d(_ConvNd):
    """1-D convolution: x (N, C_in, L) or (C_in, L) -> (N, C_out, L_out); ``weight``
    (C_out, C_in/groups, k), ``bias`` (C_out,). One graph node (``conv1d``)."""

    _nd = 1
    _op = conv_ops.Conv1d


class Conv2d(_ConvNd):
    """2-D convolution: x (N, C_in, H, W) or (C_in, H, W) -> (N, C_out, H_out, W_out);
    ``weight`` (C_out, C_in/groups, kH, kW), ``bias`` (C_out,). ``padding``: int, pair,
    "valid" or "same"; only ``padding_mode="zeros"``. One graph node (``conv2d``)."""

    _nd = 2
    _op = conv_ops.Conv2d


class MaxPool2d(Module):
    """Maximum over windows of (N, C, H, W) or (C, H, W) (``F.max_pool2d``); ``stride``
    defaults to ``kernel_size``. With ``return_indices`` it returns (output, indices)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1,
                 return_indices: bool = False, ceil_mode: bool = False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, input: Tensor):
        return max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                          ceil_mode=self.ceil_mode, return_indices=self.return_indices)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
                f", dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """Mean over windows of (N, C, H, W) or (C, H, W) (``F.avg_pool2d``); ``stride``
    defaults to ``kernel_size``."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.ceil_mode = padding, ceil_mode
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def forward(self, input: Tensor) -> Tensor:
        return avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad, self.divisor_override)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Mean over a fixed grid of bins (``F.adaptive_avg_pool2d``): (N, C, H, W) or
    (C, H, W) -> (..., *output_size); an entry None keeps the input's size."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, input: Tensor) -> Tensor:
        return adaptive_avg_pool2d(input, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class Flatten(Module):
    """Merges the axes ``start_dim`` … ``end_dim`` into one (a reshape)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input: Tensor) -> Tensor:
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Embedding(Module):
    """A lookup table: integer indices (any shape) -> rows of ``weight``
    (num_embeddings, embedding_dim), initialized N(0, 1) with the ``padding_idx`` row zero
    (that row also gets no gradient). One graph node (``embedding``)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 max_norm=None, norm_type: float = 2.0, scale_grad_by_freq: bool = False,
                 sparse: bool = False, _weight=None, _freeze: bool = False, device=None,
                 dtype=None, *, rng=None):
        super().__init__()
        _check_device(device)
        _check_supported(max_norm, sparse)
        for name, v in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"Embedding: {name} must be a non-negative int, got {v!r}")
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.padding_idx = _padding_idx(padding_idx, self.num_embeddings)
        self.max_norm, self.norm_type = max_norm, norm_type
        self.scale_grad_by_freq, self.sparse = scale_grad_by_freq, sparse
        shape = (self.num_embeddings, self.embedding_dim)
        if _weight is None:
            self.weight = Parameter(np.empty(shape, dtype=_np_dtype(dtype)),
                                    requires_grad=not _freeze)
            init.normal_(self.weight, rng=rng)
            if self.padding_idx is not None:
                self.weight.data[self.padding_idx] = 0
        else:
            data = _weight.data if isinstance(_weight, Tensor) else np.asarray(_weight)
            if data.shape != shape:
                raise ValueError(f"Shape of weight {data.shape} does not match num_embeddings "
                                 f"and embedding_dim {shape}")
            self.weight = Parameter(data, requires_grad=not _freeze)

    @classmethod
    def from_pretrained(cls, embeddings, freeze: bool = True, padding_idx: int | None = None,
                        max_norm=None, norm_type: float = 2.0, scale_grad_by_freq: bool = False,
                        sparse: bool = False) -> "Embedding":
        """An Embedding whose weight is a copy of ``embeddings`` (2-D); frozen by default."""
        data = embeddings.data if isinstance(embeddings, Tensor) else np.asarray(embeddings)
        if data.ndim != 2:
            raise ValueError(f"Embeddings parameter is expected to be 2-dimensional, got shape "
                             f"{data.shape}")
        return cls(data.shape[0], data.shape[1], padding_idx, max_norm, norm_type,
                   scale_grad_by_freq, sparse, _weight=data, _freeze=freeze)

    def forward(self, input) -> Tensor:
        return embedding(input, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                         self.scale_grad_by_freq, self.sparse)

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            s += f", max_norm={self.max_norm}"
        if self.norm_type != 2:
            s += f", norm_type={self.norm_type}"
        if self.scale_grad_by_freq is not False:
            s += f", scale_grad_by_freq={self.scale_grad_by_freq}"
        if self.sparse is not False:
            s += ", sparse=True"
        return s
