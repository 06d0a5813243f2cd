"""InstanceNorm: statistics per (sample, channel) over the spatial positions L.

BatchNorm's steps (``batch_norm.py``) with the batch axis left out of the statistics:
``dx = γ·rstd/L · (L·g − Σ_L g − x̂·Σ_L(g·x̂))``, ``dγ = Σ_{N,L} g·x̂``, ``dβ = Σ_{N,L} g``.
Running statistics, when tracked, are the batch means of the per-instance mean and
**unbiased** variance. The hand-derived node is ``fused.instance_norm``
(``tinygrad_bn.analytic.instance_norm``).
"""
from __future__ import annotations

import warnings

import numpy as np

from ..core.node import scope
from ..core.tensor import Tensor
from . import fused, registry
from .batch_norm import affine, normalize, normalize_with, param_view, upcast
from .._commit import commit
from .checks import (as_input, check_instance_norm, compute_dtype,
                     instance_running,
                     stat_array)
from .modules import ChannelNormLayer

__all__ = ["instance_norm", "InstanceNorm1d", "InstanceNorm2d"]


def instance_norm(x: Tensor, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats: bool = True, momentum: float = 0.1,
                  eps: float = 1e-5) -> Tensor:
    """Instance normalization of (N, C, L) or (N, C, H, W): statistics per (sample, channel).

    Over the L (or H·W) positions of each (n, c): μ, σ² (biased), x̂ = (x - μ)/√(σ² + ε),
    y = γ·x̂ + β (γ, β of shape (C,)). With ``use_input_stats`` and running statistics given,
    they are updated as torch does, with the batch averages of the per-instance statistics:
    ``running_var ← (1 - momentum)·running_var + momentum·mean_n(σ²_{n,c}·L/(L-1))``
    (nan for an empty batch, as torch; unchanged when L = 0).
    ``use_input_stats=False`` normalizes with the running statistics instead.
    """
    x = as_input(x, "instance_norm")
    c, spatial = check_instance_norm(x, running_mean, running_var, weight, bias,
                                     use_input_stats, momentum, eps)
    rm, rv = stat_array(running_mean), stat_array(running_var)
    nd = x.ndim
    cd = compute_dtype(x.dtype)
    new = None
    with scope("instance_norm", kind="norm"):
        xc = upcast(x, cd)
        if use_input_stats:
            xhat, mu, var = normalize(xc, tuple(range(2, nd)), eps)
            if rm is not None:
                new = instance_running(rm, rv, mu.data, var.data, x.shape, momentum)
        else:
            shape = (c,) + (1,) * (nd - 2)
            xhat = normalize_with(xc, rm.reshape(shape), rv.reshape(shape), eps)
        y = affine(xhat, param_view(upcast(weight, cd), nd),
                    param_view(upcast(bias, cd), nd), x.dtype)
    if new:
        commit(*new)
    return y


class _InstanceNorm(ChannelNormLayer):
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


def _call(fn, x, weight, bias, training=True, running=None, eps=1e-5):
    rm, rv = running if running is not None and not training else (None, None)
    return fn(x, rm, rv, weight, bias, use_input_stats=training, eps=eps)


registry.register(
    "instance_norm", short="instance", composed=instance_norm, derived=fused.instance_norm,
    call=_call, param_shape=lambda shape, s: (shape[1],), example=lambda rng: ((4, 3, 5), {}),
    label=lambda shape, training, s:
        f"instance_norm ({'input stats' if training else 'running stats'})", running=True)
