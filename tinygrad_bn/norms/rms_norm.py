"""RMSNorm: no centring, x̂ = x / √(mean(x²) + ε) over the trailing ``normalized_shape``.

Without μ the derivation loses its Σ dx̂ term: with dx̂ = γ·g and r = √(mean(x²) + ε),
``dx = (dx̂ − x̂·mean(dx̂·x̂)) / r``, ``dγ = Σ_batch g·x̂``; there is no β. ``eps=None`` is the
machine epsilon of the input's dtype (torch's default). The hand-derived node is
``fused.rms_norm`` (``tinygrad_bn.analytic.rms_norm``).
"""
from __future__ import annotations

import numpy as np

from ..core.node import scope
from ..core.tensor import Tensor
from . import fused, registry
from .batch_norm import affine, upcast
from .checks import as_input, check_layer_norm, compute_dtype, rms_eps
from .modules import NormLayer, shape_tuple

__all__ = ["rms_norm", "RMSNorm"]


def rms_norm(x: Tensor, normalized_shape, weight=None, eps: float | None = None) -> Tensor:
    """RMS normalization over the trailing ``normalized_shape``, composed (no centring).

    r = √(mean_S(x²) + ε), x̂ = x / r, y = γ·x̂; ``eps=None`` means the machine epsilon of
    the input's dtype (torch's default). γ has shape ``normalized_shape`` and may have another
    dtype (as torch: the output keeps the input's dtype).
    """
    x = as_input(x, "rms_norm")
    ns = check_layer_norm("rms_norm", x, normalized_shape, weight, None, eps)
    eps = rms_eps(eps, x.dtype)
    cd = compute_dtype(x.dtype)
    with scope("rms_norm", kind="norm"):
        xc = upcast(x, cd)
        axes = tuple(range(x.ndim - len(ns), x.ndim))
        ms = (xc ** 2).mean(axis=axes, keepdims=True).named("mean(x²)")
        r = (ms + eps).sqrt().named("rms")
        xhat = (xc / r).named("x̂")
        if weight is not None and weight.dtype not in (x.dtype, cd):
            xhat = xhat.astype(x.dtype)  # torch's mixed-dtype path: x̂ in x's dtype, then γ·x̂
        else:
            weight = upcast(weight, cd)
        return affine(xhat, weight, None, x.dtype)


class RMSNorm(NormLayer):
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
        self._trailing(normalized_shape, eps, elementwise_affine, None, dtype, analytic)

    def forward(self, x: Tensor) -> Tensor:
        return self._norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}" + self._repr_tail())


def _call(fn, x, weight, bias=None, training=True, running=None, normalized_shape=None,
          eps=None):
    return fn(x, normalized_shape, weight, eps=eps)


registry.register(
    "rms_norm", short="rms", composed=rms_norm, derived=fused.rms_norm, call=_call,
    defaults=lambda shape: {"normalized_shape": shape[-1:]},
    param_shape=lambda shape, s: shape_tuple(s["normalized_shape"], "rms_norm"),
    example=lambda rng: ((4, 6), {}), has_bias=False,
    label=lambda shape, training, s: f"rms_norm {shape_tuple(s['normalized_shape'], '')}",
    module=lambda features, dtype=np.float32, analytic=False: RMSNorm(
        features, dtype=dtype, analytic=analytic))
