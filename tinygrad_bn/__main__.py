"""``python -m tinygrad_bn``: the ``tinygrad-bn`` command."""
import sys

from .app.cli import main

sys.exit(main())
