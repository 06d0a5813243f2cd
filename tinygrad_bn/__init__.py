"""tinygrad_bn: a small reverse-mode autodiff engine over NumPy for seeing how normalization works."""
from ._alloc import tune_malloc as _tune_malloc
from .tensor import Tensor, where
from .function import Function, no_grad, enable_grad, is_grad_enabled, set_grad_enabled
from .autograd import grad
from .gradcheck import gradcheck, GradcheckError
from .checkpoint import save, load
from . import nn, optim, analytic, viz

__version__ = "0.1.0"

_tune_malloc()

__all__ = [
    "Tensor", "Function", "no_grad", "enable_grad", "is_grad_enabled", "set_grad_enabled",
    "grad", "gradcheck", "GradcheckError", "where", "save", "load", "nn", "optim", "analytic",
    "viz",
    "__version__",
]
