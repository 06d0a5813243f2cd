"""The old path of ``tinygrad_bn.studies.ics``."""
import sys

from ..studies import ics as _module

sys.modules[__name__] = _module
