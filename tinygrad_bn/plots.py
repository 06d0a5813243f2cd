"""``tinygrad_bn.plots`` is ``tinygrad_bn.app.plots`` (this path keeps working)."""
import sys

from .app import plots as _module

sys.modules[__name__] = _module
