"""``tinygrad_bn.data`` is ``tinygrad_bn.training.data`` (this path keeps working)."""
import sys

from .training import data as _module

sys.modules[__name__] = _module
