"""Functional ops shaped like ``torch.nn.functional`` (import as ``F``).

The norms here (re-exported from ``tinygrad_bn.norms``, one file per family) are *composed*:
built only from graph primitives (mean, sub, pow, add, sqrt, div, mul, reshape), so their
gradients emerge from the recorded graph. The intermediates are named as in the derivation,
``x → μ → x - μ → σ² → σ → x̂ → y``, and each call's nodes are grouped in a ``scope`` (kind
``"norm"``) so a drawn graph reads like the tutorial's. ``tinygrad_bn.analytic`` has the same
functions as single nodes with hand-derived backwards.

Normalization uses the **biased** variance ``σ² = mean((x - μ)²)`` (two passes: the mean first,
then the mean of squared deviations, never ``E[x²] - E[x]²``); running statistics track the
**unbiased** one, ``σ²·m/(m-1)``, as torch does::

    running_mean ← (1 - momentum)·running_mean + momentum·μ
    running_var  ← (1 - momentum)·running_var  + momentum·σ²·m/(m-1)

Running statistics are Tensors (or ndarrays) updated in place, outside the graph. Arguments are
checked before anything is computed or updated: a call that raises changes nothing.
"""
from __future__ import annotations

import numpy as np

from ..core import ops
from ..core.tensor import Tensor
from ..norms import batch_norm, group_norm, instance_norm, layer_norm, rms_norm
from .layers import dropout
from .conv import (adaptive_avg_pool2d, avg_pool2d, conv1d, conv2d, embedding, max_pool2d,
                   one_hot)
from .losses import (binary_cross_entropy_with_logits, cross_entropy, log_softmax, mse_loss,
                     softmax)

__all__ = [
    "dropout",
    "batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm",
    "linear", "relu", "tanh", "sigmoid",
    "cross_entropy", "mse_loss", "binary_cross_entropy_with_logits", "log_softmax", "softmax",
    "conv1d", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "embedding",
    "one_hot",
]


# --------------------------------------------------------------------- thin wrappers
def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Affine map ``y = x @ Wᵀ + b`` (one fused node); x (..., in), W (out, in), b (out,)."""
    return ops.Linear.apply(x, weight, bias)


def relu(x: Tensor) -> Tensor:
    """``max(x, 0)`` elementwise."""
    return x.relu()


def tanh(x: Tensor) -> Tensor:
    """Hyperbolic tangent elementwise."""
    return x.tanh()


def sigmoid(x: Tensor) -> Tensor:
    """Logistic function ``1 / (1 + e^-x)`` elementwise."""
    return x.sigmoid()
