"""The old path of ``tinygrad_bn.studies.init``."""
import sys

from ..studies import init as _module

sys.modules[__name__] = _module
