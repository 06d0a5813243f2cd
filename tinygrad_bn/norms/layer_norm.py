"""LayerNorm: each sample normalized over its trailing ``normalized_shape`` axes.

The same steps as BatchNorm (``batch_norm.py``: μ, σ² biased, σ, x̂, y = γ·x̂ + β), over the
n values of one sample instead of one channel; γ and β have shape ``normalized_shape``, so γ
varies inside a statistic and stays in the sums: with dx̂ = γ·g,
``dx = rstd/n · (n·dx̂ − Σdx̂ − x̂·Σ(dx̂·x̂))``, ``dγ = Σ_batch g·x̂``, ``dβ = Σ_batch g``. No
running statistics: training and evaluation are the same. The hand-derived node is
``fused.layer_norm`` (``tinygrad_bn.analytic.layer_norm``).
"""
from __future__ import annotations

import numpy as np

from ..core.node import scope
from ..core.tensor import Tensor
from . import fused, registry
from .batch_norm import affine, normalize, upcast
from .checks import as_input, check_layer_norm, compute_dtype
from .modules import NormLayer, shape_tuple

__all__ = ["layer_norm", "LayerNorm"]


def layer_norm(x: Tensor, normalized_shape, weight=None, bias=None,
               eps: float = 1e-5) -> Tensor:
    """Layer normalization over the trailing ``normalized_shape`` of each sample, composed.

    With S the last ``len(normalized_shape)`` axes: μ = mean_S(x), σ² = mean_S((x - μ)²)
    (biased), x̂ = (x - μ) / √(σ² + ε), y = γ·x̂ + β; γ and β have shape ``normalized_shape``.
    The same computation in training and evaluation (no running statistics).
    """
    x = as_input(x, "layer_norm")
    ns = check_layer_norm("layer_norm", x, normalized_shape, weight, bias, eps)
    cd = compute_dtype(x.dtype)
    with scope("layer_norm", kind="norm"):
        axes = tuple(range(x.ndim - len(ns), x.ndim))
        xhat, _, _ = normalize(upcast(x, cd), axes, eps)
        return affine(xhat, upcast(weight, cd), upcast(bias, cd), x.dtype)


class LayerNorm(NormLayer):
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
        self._trailing(normalized_shape, eps, elementwise_affine, bias, dtype, analytic)

    def forward(self, x: Tensor) -> Tensor:
        return self._norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}"
                + self._repr_tail())


def _call(fn, x, weight, bias, training=True, running=None, normalized_shape=None, eps=1e-5):
    return fn(x, normalized_shape, weight, bias, eps=eps)


registry.register(
    "layer_norm", short="layer", composed=layer_norm, derived=fused.layer_norm, call=_call,
    defaults=lambda shape: {"normalized_shape": shape[-1:]},
    param_shape=lambda shape, s: shape_tuple(s["normalized_shape"], "layer_norm"),
    example=lambda rng: ((4, 6), {}),
    label=lambda shape, training, s: f"layer_norm {shape_tuple(s['normalized_shape'], '')}",
    module=lambda features, dtype=np.float32, analytic=False: LayerNorm(
        features, dtype=dtype, analytic=analytic))
