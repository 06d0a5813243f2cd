"""The old path of ``tinygrad_bn.studies.learning_rate``."""
import sys

from ..studies import learning_rate as _module

sys.modules[__name__] = _module
