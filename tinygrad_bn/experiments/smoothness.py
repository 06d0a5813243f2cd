"""The old path of ``tinygrad_bn.studies.smoothness``."""
import sys

from ..studies import smoothness as _module

sys.modules[__name__] = _module
