"""``tinygrad_bn.checkpoint`` is ``tinygrad_bn.training.checkpoint`` (this path keeps working)."""
import sys

from .training import checkpoint as _module

sys.modules[__name__] = _module
