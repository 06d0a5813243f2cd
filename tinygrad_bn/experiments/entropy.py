"""The old path of ``tinygrad_bn.studies.entropy``."""
import sys

from ..studies import entropy as _module

sys.modules[__name__] = _module
