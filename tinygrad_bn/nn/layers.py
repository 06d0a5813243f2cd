"""Basic layers: ``Linear``, activations, ``Dropout``, ``Identity``."""
from __future__ import annotations

import math

import numpy as np

from ..core import ops
from ..core.factories import generator
from ..core.tensor import Tensor
from . import init
from .module import Module, Parameter


class Identity(Module):
    """Returns its input unchanged (arguments are accepted and ignored, as in torch)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Linear(Module):
    """Affine map ``y = x Wᵀ + b``: x (..., in_features) -> y (..., out_features).

    ``weight`` (out_features, in_features) and ``bias`` (out_features,) start as torch's do:
    ``kaiming_uniform_(weight, a=√5)``, i.e. U(-1/√in, 1/√in), and bias U(-1/√in, 1/√in).
    ``rng`` (a Generator or a seed) makes the initialization reproducible. One graph node per
    call (``ops.Linear``).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 dtype=np.float32, rng=None):
        super().__init__()
        if in_features < 0 or out_features < 0:
            raise ValueError(f"Linear: in_features ({in_features}) and out_features "
                             f"({out_features}) must be non-negative")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        rng = generator() if rng is None else np.random.default_rng(rng)
        self.weight = Parameter(np.empty((out_features, in_features), dtype=dtype))
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), rng=rng)
        if bias:
            self.bias = Parameter(np.empty((out_features,), dtype=dtype))
            bound = 1 / math.sqrt(in_features) if in_features > 0 else 0.0
            init.uniform_(self.bias, -bound, bound, rng=rng)
        else:
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        if self.bias is None:
            return ops.Linear.apply(x, self.weight)
        return ops.Linear.apply(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class ReLU(Module):
    """``max(x, 0)`` elementwise; any shape."""

    def forward(self, x: Tensor) -> Tensor:
        return x.relu()


class Tanh(Module):
    """``tanh(x)`` elementwise; any shape."""

    def forward(self, x: Tensor) -> Tensor:
        return x.tanh()


class Sigmoid(Module):
    """``1 / (1 + e^-x)`` elementwise; any shape."""

    def forward(self, x: Tensor) -> Tensor:
        return x.sigmoid()


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False, *,
            rng=None) -> Tensor:
    """Inverted dropout (``torch.nn.functional.dropout``): in training each element is zeroed
    with probability ``p`` and the rest scaled by 1/(1-p), so the expected output equals the
    input; with ``training=False`` the input itself. The mask is a constant (gradients flow
    through the kept elements only). Any shape. ``rng``: a Generator or a seed (default: the
    package's generator, see ``tinygrad_bn.manual_seed``)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p!r}")
    if inplace:
        raise ValueError("dropout(inplace=True) is not supported here: write "
                         "x = F.dropout(x, p) instead")
    if not training or p == 0.0:
        return input
    gen = generator() if rng is None else (rng if isinstance(rng, np.random.Generator)
                                            else np.random.default_rng(rng))
    keep = gen.random(input.shape) >= p
    mask = np.multiply(keep, 1.0 / (1.0 - p) if p < 1.0 else 0.0, dtype=input.dtype)
    return input * mask


class Dropout(Module):
    """Inverted dropout as a layer (``F.dropout`` in training mode, the identity in eval
    mode). ``rng``: a Generator or a seed."""

    def __init__(self, p: float = 0.5, *, rng=None):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p!r}")
        self.p = float(p)
        self.rng = None if rng is None else np.random.default_rng(rng)

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training, rng=self.rng)

    def extra_repr(self) -> str:
        return f"p={self.p}"
