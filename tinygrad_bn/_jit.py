"""Whether compiled loops are used: numba (the optional ``fast`` extra) is installed and
``TINYGRAD_BN_KERNELS`` does not say ``numpy``.

Two modules hold such loops, each beside the NumPy code it replaces and tested against it:
``norms/_kernels.py`` (the fused norms) and ``core/_kernels.py`` (the engine's large
row-broadcasting ops and a few backward rules). Both are imported on first use, since
importing numba takes a while; ``TINYGRAD_BN_KERNELS=numpy`` keeps numba out entirely.
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np

# what the compiled loops take: float32 and float64 in native byte order (an equality test,
# so ">f4" is not among them)
LOOP_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def kernels_wanted() -> bool:
    """numba is installed and ``TINYGRAD_BN_KERNELS`` does not say ``numpy``."""
    if os.environ.get("TINYGRAD_BN_KERNELS", "").strip().lower() == "numpy":
        return False
    return importlib.util.find_spec("numba") is not None
