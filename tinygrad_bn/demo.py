"""``tinygrad_bn.demo`` is ``tinygrad_bn.app.demo`` (this path keeps working)."""
import sys

from .app import demo as _module

sys.modules[__name__] = _module
