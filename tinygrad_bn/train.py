"""``tinygrad_bn.train`` is ``tinygrad_bn.training.train`` (this path keeps working)."""
import sys

from .training import train as _module

sys.modules[__name__] = _module
