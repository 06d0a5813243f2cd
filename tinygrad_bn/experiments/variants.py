"""The old path of ``tinygrad_bn.studies.variants``."""
import sys

from ..studies import variants as _module

sys.modules[__name__] = _module
