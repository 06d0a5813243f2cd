"""The old path of ``tinygrad_bn.studies.eval_mode``."""
import sys

from ..studies import eval_mode as _module

sys.modules[__name__] = _module
