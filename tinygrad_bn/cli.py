"""``tinygrad_bn.cli`` is ``tinygrad_bn.app.cli`` (this path keeps working)."""
import sys

from .app import cli as _module

sys.modules[__name__] = _module
