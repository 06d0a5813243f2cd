"""``tinygrad_bn.models`` is ``tinygrad_bn.training.models`` (this path keeps working)."""
import sys

from .training import models as _module

sys.modules[__name__] = _module
