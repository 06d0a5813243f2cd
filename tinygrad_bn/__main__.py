"""``python -m tinygrad_bn``: the ``tinygrad-bn`` command."""
import sys

from .cli import main

sys.exit(main())
