"""``tinygrad_bn.optim`` is ``tinygrad_bn.training.optim`` (this path keeps working)."""
import sys

from .training import optim as _module

sys.modules[__name__] = _module
