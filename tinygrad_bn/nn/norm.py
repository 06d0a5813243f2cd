"""Normalization layers with torch's constructor arguments, defaults and state_dict keys.

Every layer computes ``y = (x - μ) / √(σ² + eps) · γ + β`` over its own axes, with the
**biased** variance σ² = mean((x - μ)²); the running variance that BatchNorm (and InstanceNorm
with ``track_running_stats=True``) keeps for eval mode is updated with the **unbiased** batch
variance (Σ (x - μ)² / (n - 1)), as in torch. ``analytic=True`` swaps the composed functional
version (``nn.functional``: many small graph nodes) for the fused one (``tinygrad_bn.analytic``:
one node with a hand-derived backward); the numbers are the same.
"""
from __future__ import annotations

import warnings

import numpy as np

from .._norms import check_writable, commit
from ..core.tensor import Tensor
from . import functional as F
from .module import Module, Parameter


def _norm_function(name: str, analytic: bool):
    if not analytic:
        return getattr(F, name)
    from .. import analytic as A

    fn = getattr(A, name, None)
    if fn is None:
        raise NotImplementedError(f"tinygrad_bn.analytic has no fused {name}")
    return fn


def _positive_int(value, what: str, cls: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{cls}: {what} must be a positive integer, got {value!r}")
    return int(value)


def _shape_tuple(normalized_shape, cls: str) -> tuple:
    if isinstance(normalized_shape, (int, np.integer)):
        normalized_shape = (normalized_shape,)
    shape = tuple(int(s) for s in normalized_shape)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"{cls}: normalized_shape must be a non-empty shape of positive sizes, "
                         f"got {normalized_shape!r}")
    return shape


class _Norm(Module):
    """Shared by the norm layers: the ``analytic`` switch and its repr."""

    _function = ""  # name of the function in nn.functional / analytic

    @property
    def analytic(self) -> bool:
        """True: the fused node of ``tinygrad_bn.analytic``; False: the composed graph."""
        return self._analytic

    @analytic.setter
    def analytic(self, value: bool) -> None:
        self._norm = _norm_function(self._function, bool(value))
        self._analytic = bool(value)

    def _affine_parameters(self, shape: tuple, affine: bool, bias: bool | None, dtype) -> None:
        """``weight`` (ones) and ``bias`` (zeros) of ``shape``, registered as None when absent;
        ``bias=None``: the layer has no bias at all (RMSNorm)."""
        self.register_parameter("weight", Parameter(np.ones(shape, dtype=dtype)) if affine
                                else None)
        if bias is not None:
            self.register_parameter("bias", Parameter(np.zeros(shape, dtype=dtype))
                                    if affine and bias else None)

    def _repr_tail(self) -> str:
        return ", analytic=True" if self._analytic else ""


class _NormBase(_Norm):
    """Per-channel affine parameters and running statistics (BatchNorm, InstanceNorm)."""

    def __init__(self, num_features: int, eps: float, momentum: float | None, affine: bool,
                 track_running_stats: bool, bias: bool, dtype, analytic: bool):
        super().__init__()
        name = type(self).__name__
        self.num_features = _positive_int(num_features, "num_features", name)
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{name}: momentum must be in [0, 1] or None, got {momentum!r}")
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self._affine_parameters((self.num_features,), affine, bias, dtype)
        if track_running_stats:
            self.register_buffer("running_mean", Tensor(np.zeros(num_features, dtype=dtype)))
            self.register_buffer("running_var", Tensor(np.ones(num_features, dtype=dtype)))
            self.register_buffer("num_batches_tracked", Tensor(np.array(0, dtype=np.int64)))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.analytic = analytic

    def _call_updating(self, x: Tensor, batch_stats: bool, factor, count: bool) -> Tensor:
        """Call the norm; running statistics (and ``num_batches_tracked`` when ``count``) are
        updated together after the call succeeded, or not at all (Principle 2): the norm
        updates copies, which are written back in one ``commit``."""
        rm, rv = self.running_mean, self.running_var
        name = type(self).__name__
        updates = batch_stats and rm is not None
        pairs = []
        if updates:
            check_writable(name, running_mean=rm, running_var=rv)
            new_rm, new_rv = rm.data.copy(), rv.data.copy()
            pairs = [(rm.data, new_rm), (rv.data, new_rv)]
        else:
            new_rm, new_rv = rm, rv
        if count:
            nbt = self.num_batches_tracked
            check_writable(name, num_batches_tracked=nbt)
            pairs.append((nbt.data, nbt.data + 1))
        y = self._norm(x, new_rm, new_rv, self.weight, self.bias, batch_stats, factor,
                       self.eps)
        commit(*pairs)
        return y

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, ``num_batches_tracked`` 0."""
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}" + self._repr_tail())


class _BatchNorm(_NormBase):
    _function = "batch_norm"
    _ndims: tuple = ()
    _shapes = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *, bias: bool = True,
                 dtype=np.float32, analytic: bool = False):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, bias, dtype,
                         analytic)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim not in self._ndims:
            raise ValueError(f"{type(self).__name__}: expected input of shape {self._shapes}, "
                             f"got {x.ndim}-D input of shape {tuple(x.shape)}")
        nbt = self.num_batches_tracked
        count = self.training and self.track_running_stats and nbt is not None
        if self.momentum is not None:
            factor = self.momentum
        elif count:  # cumulative moving average over the batches seen so far
            factor = 1.0 / float(nbt.data + 1)
        else:
            factor = 0.0
        use_batch_stats = self.training or (self.running_mean is None
                                            and self.running_var is None)
        if self.training and not self.track_running_stats:
            return self._norm(x, None, None, self.weight, self.bias, use_batch_stats, factor,
                              self.eps)
        return self._call_updating(x, use_batch_stats, factor, count)


class BatchNorm1d(_BatchNorm):
    """Batch normalization over a batch of vectors or sequences.

    Input (N, C) or (N, C, L); output the same shape. Per channel c, in training:
    ``y = (x - μ_c) / √(σ²_c + eps) · weight_c + bias_c`` with μ_c and the **biased**
    variance σ²_c over N (and L); the running statistics move by
    ``r ← (1 - momentum)·r + momentum·batch`` using the **unbiased** variance
    (``momentum=None``: a cumulative average, factor 1 / num_batches_tracked). In eval mode
    (with ``track_running_stats``) the running statistics replace the batch ones.

    Parameters ``weight``, ``bias`` (C,) when ``affine`` (``bias=False`` drops the shift, as
    in torch 2.13); buffers ``running_mean``, ``running_var`` (C,) and ``num_batches_tracked``
    (int64 scalar) when ``track_running_stats``. A batch of one in training raises ValueError.
    """

    _ndims = (2, 3)
    _shapes = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalization over images: input (N, C, H, W), output the same shape.

    Per channel c the statistics are taken over N, H and W: normalization uses the
    **biased** variance, the running variance is updated with the **unbiased** one
    (see ``BatchNorm1d`` for the formulas, momentum and eval mode).
    """

    _ndims = (4,)
    _shapes = "(N, C, H, W)"


class _InstanceNorm(_NormBase):
    _function = "instance_norm"
    _no_batch_ndim = 0
    _shapes = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = False, track_running_stats: bool = False, *, bias: bool = True,
                 dtype=np.float32, analytic: bool = False):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, bias, dtype,
                         analytic)

    def forward(self, x: Tensor) -> Tensor:
        nd = self._no_batch_ndim
        shape = tuple(x.shape)
        if x.ndim not in (nd, nd + 1):
            raise ValueError(f"{type(self).__name__}: expected input of shape {self._shapes}, "
                             f"got {x.ndim}-D input of shape {shape}")
        c = shape[x.ndim - nd]
        if c != self.num_features:
            msg = (f"{type(self).__name__}: input of shape {shape} has {c} channels but "
                   f"num_features is {self.num_features}")
            if self.affine or self.track_running_stats:
                raise ValueError(msg)
            warnings.warn(msg + " (unused, since affine=False and track_running_stats=False)",
                          stacklevel=2)
        if x.ndim == nd:  # one unbatched sample
            return self._apply(x.reshape((1,) + shape)).reshape(shape)
        return self._apply(x)

    def _apply(self, x: Tensor) -> Tensor:
        return self._call_updating(x, self.training or not self.track_running_stats,
                                   self.momentum if self.momentum is not None else 0.0, False)


class InstanceNorm1d(_InstanceNorm):
    """Instance normalization of sequences: input (N, C, L) or (C, L), output the same shape.

    Each sample and channel is normalized over L with its own mean and **biased** variance.
    Defaults as torch: ``affine=False``, ``track_running_stats=False``; when tracking, the
    running variance is updated with the **unbiased** variance (averaged over the batch) and
    used in eval mode (``momentum=None`` means 0: the running statistics stay put).
    """

    _no_batch_ndim = 2
    _shapes = "(N, C, L) or (C, L)"


class InstanceNorm2d(_InstanceNorm):
    """Instance normalization of images: input (N, C, H, W) or (C, H, W), output the same shape.

    Each sample and channel is normalized over H and W with the **biased** variance; running
    statistics (when tracked) use the **unbiased** one (see ``InstanceNorm1d``).
    """

    _no_batch_ndim = 3
    _shapes = "(N, C, H, W) or (C, H, W)"


class LayerNorm(_Norm):
    """Layer normalization over the trailing ``normalized_shape`` axes.

    Input (*, *normalized_shape), output the same shape: each sample is normalized with the
    mean and **biased** variance of its last ``len(normalized_shape)`` axes, then scaled by
    ``weight`` and shifted by ``bias`` (both shaped ``normalized_shape``; ``bias=False``
    drops the shift, ``elementwise_affine=False`` both). No running statistics: train and
    eval are the same.
    """

    _function = "layer_norm"

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, *, dtype=np.float32, analytic: bool = False):
        super().__init__()
        self.normalized_shape = _shape_tuple(normalized_shape, "LayerNorm")
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self._affine_parameters(self.normalized_shape, elementwise_affine, bias, dtype)
        self.analytic = analytic

    def forward(self, x: Tensor) -> Tensor:
        return self._norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}"
                + self._repr_tail())


class GroupNorm(_Norm):
    """Group normalization: channels split into ``num_groups`` groups of C / G.

    Input (N, C, *), output the same shape: each sample's group is normalized with the mean
    and **biased** variance over its channels and spatial positions, then scaled and
    shifted per channel (``weight``, ``bias`` (C,) when ``affine``). ``num_channels`` must be
    divisible by ``num_groups`` (ValueError at construction). No running statistics.
    """

    _function = "group_norm"

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True, *, bias: bool = True, dtype=np.float32,
                 analytic: bool = False):
        super().__init__()
        num_groups = _positive_int(num_groups, "num_groups", "GroupNorm")
        num_channels = _positive_int(num_channels, "num_channels", "GroupNorm")
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by "
                             f"num_groups ({num_groups})")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        self._affine_parameters((num_channels,), affine, bias, dtype)
        self.analytic = analytic

    def forward(self, x: Tensor) -> Tensor:
        return self._norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, "
                f"affine={self.affine}, bias={self.bias is not None}" + self._repr_tail())


class RMSNorm(_Norm):
    """Root-mean-square normalization over the trailing ``normalized_shape`` axes.

    Input (*, *normalized_shape), output the same shape:
    ``y = x / √(mean(x²) + eps) · weight`` (no centring, no bias; ``eps=None`` means the
    dtype's machine epsilon, as torch). ``weight`` shaped ``normalized_shape`` when
    ``elementwise_affine``.
    """

    _function = "rms_norm"

    def __init__(self, normalized_shape, eps: float | None = None,
                 elementwise_affine: bool = True, *, dtype=np.float32,
                 analytic: bool = False):
        super().__init__()
        self.normalized_shape = _shape_tuple(normalized_shape, "RMSNorm")
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self._affine_parameters(self.normalized_shape, elementwise_affine, None, dtype)
        self.analytic = analytic

    def forward(self, x: Tensor) -> Tensor:
        return self._norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}" + self._repr_tail())
