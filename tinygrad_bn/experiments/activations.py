"""The old path of ``tinygrad_bn.studies.activations``."""
import sys

from ..studies import activations as _module

sys.modules[__name__] = _module
