"""tinygrad_bn: a small reverse-mode autodiff engine over NumPy for seeing how normalization works."""
from ._alloc import tune_malloc as _tune_malloc
from .core.tensor import Tensor, where
from .core.node import Function, no_grad, enable_grad, is_grad_enabled, set_grad_enabled
from .core.autograd import grad
from .core.gradcheck import gradcheck, GradcheckError
from .core.factories import (tensor, zeros, ones, full, arange, randn, rand, zeros_like,
                             ones_like, cat, stack, manual_seed)
from .training.checkpoint import save, load
from . import nn, analytic, viz  # nn first: the norms' layers build on nn.Module
from .training import optim
from .norms import grad_paths
from .interop import to_torch, from_torch

__version__ = "0.1.0"

_tune_malloc()

__all__ = [
    "Tensor", "Function", "no_grad", "enable_grad", "is_grad_enabled", "set_grad_enabled",
    "grad", "gradcheck", "GradcheckError", "where", "tensor", "zeros", "ones", "full", "arange",
    "randn", "rand", "zeros_like", "ones_like", "cat", "stack", "manual_seed", "save", "load",
    "grad_paths", "nn", "optim", "analytic",
    "viz", "to_torch", "from_torch",
    "__version__",
]
