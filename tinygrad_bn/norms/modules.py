"""What the norm layers share: the ``analytic`` switch, affine parameters, running statistics.

Every layer computes ``y = (x - μ) / √(σ² + eps) · γ + β`` over its own axes, with the
**biased** variance σ² = mean((x - μ)²); the running variance that BatchNorm (and InstanceNorm
with ``track_running_stats=True``) keeps for eval mode is updated with the **unbiased** batch
variance (Σ (x - μ)² / (n - 1)), as in torch. ``analytic=True`` swaps the composed function
(many small graph nodes) for the hand-derived one (one node); the numbers are the same. Both
are read from the registry by the function's name. The layers are in their family's file
(``batch_norm.py``: ``BatchNorm1d``, ``BatchNorm2d``; ...).
"""
from __future__ import annotations

import numpy as np

from ..core.tensor import Tensor
from ..nn.module import Module, Parameter
from . import registry
from .._commit import interrupts_held
from .checks import check_writable


def _norm_function(name: str, analytic: bool):
    """The registered norm's composed function, or (``analytic``) its hand-derived one."""
    entry = registry.get(name)
    return entry.derived if analytic else entry.composed


def positive_int(value, what: str, cls: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{cls}: {what} must be a positive integer, got {value!r}")
    return int(value)


def shape_tuple(normalized_shape, cls: str) -> tuple:
    if isinstance(normalized_shape, (int, np.integer)):
        normalized_shape = (normalized_shape,)
    shape = tuple(int(s) for s in normalized_shape)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"{cls}: normalized_shape must be a non-empty shape of positive sizes, "
                         f"got {normalized_shape!r}")
    return shape


class NormLayer(Module):
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

    def _trailing(self, normalized_shape, eps, elementwise_affine: bool, bias, dtype,
                  analytic: bool) -> None:
        """LayerNorm / RMSNorm: settings and parameters of ``normalized_shape``."""
        self.normalized_shape = shape_tuple(normalized_shape, type(self).__name__)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self._affine_parameters(self.normalized_shape, elementwise_affine, bias, dtype)
        self.analytic = analytic

    def _repr_tail(self) -> str:
        return ", analytic=True" if self._analytic else ""


class ChannelNormLayer(NormLayer):
    """Per-channel affine parameters and running statistics (BatchNorm, InstanceNorm)."""

    def __init__(self, num_features: int, eps: float, momentum: float | None, affine: bool,
                 track_running_stats: bool, bias: bool, dtype, analytic: bool):
        super().__init__()
        name = type(self).__name__
        self.num_features = positive_int(num_features, "num_features", name)
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
        updated together after the call succeeded, or not at all (Principle 2): everything
        that could fail is checked first, the norm writes its statistics as its last step,
        and Ctrl-C is held from before the norm until the count is written."""
        nbt = self.num_batches_tracked if count else None
        if count:  # (the norm checks that it can write the running statistics)
            check_writable(type(self).__name__, num_batches_tracked=nbt)
        with interrupts_held():
            y = self._norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                           batch_stats, factor, self.eps)
            if count:
                n = nbt.data
                n[()] = n[()] + 1  # (a 0-d array: 8 times faster than n += 1)
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
