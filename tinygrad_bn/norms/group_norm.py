"""GroupNorm: statistics per (sample, group of C/G channels), γ and β per channel.

x is viewed as (N, G, C/G·L) and normalized over its last axis with BatchNorm's steps
(``batch_norm.py``); then y = γ·x̂ + β per channel. γ varies inside a group, so with
dx̂ = γ·g: ``dx = rstd/n · (n·dx̂ − Σdx̂ − x̂·Σ(dx̂·x̂))`` over the n = (C/G)·L values of a
group. No running statistics. The hand-derived node is ``fused.group_norm``
(``tinygrad_bn.analytic.group_norm``).
"""
from __future__ import annotations

import math

import numpy as np

from ..core.node import scope
from ..core.tensor import Tensor
from . import fused, registry
from .batch_norm import affine, normalize, param_view, upcast
from .checks import as_input, check_group_norm, compute_dtype
from .modules import NormLayer, positive_int

__all__ = ["group_norm", "GroupNorm"]


def group_norm(x: Tensor, num_groups: int, weight=None, bias=None,
               eps: float = 1e-5) -> Tensor:
    """Group normalization of (N, C, *): statistics per (sample, group of C/G channels), composed.

    x is viewed as (N, G, C/G·L); over the last axis μ, σ² (biased), x̂ = (x - μ)/√(σ² + ε);
    then x̂ takes x's shape and y = γ·x̂ + β with γ, β of shape (C,). Raises ValueError when
    ``num_groups`` does not divide C. A group of one value (e.g. (2, 4) with 4 groups) gives
    x̂ = 0, y = β, as torch.
    """
    x = as_input(x, "group_norm")
    c, g = check_group_norm(x, num_groups, weight, bias, eps)
    nd = x.ndim
    cd = compute_dtype(x.dtype)
    with scope("group_norm", kind="norm"):
        n = x.shape[0]
        xg = upcast(x, cd).reshape(n, g, (c // g) * int(np.prod(x.shape[2:], dtype=np.int64)))
        xhat_g, _, _ = normalize(xg, (2,), eps)
        xhat_g.name = "x̂ (per group)"
        xhat = xhat_g.reshape(x.shape).named("x̂")
        return affine(xhat, param_view(upcast(weight, cd), nd),
                       param_view(upcast(bias, cd), nd), x.dtype)


class GroupNorm(NormLayer):
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
        num_groups = positive_int(num_groups, "num_groups", "GroupNorm")
        num_channels = positive_int(num_channels, "num_channels", "GroupNorm")
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


def _call(fn, x, weight, bias, training=True, running=None, num_groups=1, eps=1e-5):
    return fn(x, num_groups, weight, bias, eps=eps)


registry.register(
    "group_norm", short="group", composed=group_norm, derived=fused.group_norm, call=_call,
    defaults=lambda shape: {"num_groups": 2 if shape[1] % 2 == 0 else 1},
    param_shape=lambda shape, s: (shape[1],), example=lambda rng: ((4, 6, 5), {}),
    label=lambda shape, training, s: f"group_norm (G={s['num_groups']})",
    module=lambda features, dtype=np.float32, analytic=False: GroupNorm(
        math.gcd(features, 8), features, dtype=dtype, analytic=analytic))
