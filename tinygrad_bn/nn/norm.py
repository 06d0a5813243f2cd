"""Normalization layers with torch's constructor arguments, defaults and state_dict keys.

Each layer lives with its family in ``tinygrad_bn.norms`` (``batch_norm.py``: the math, the
composed function, the hand-derived op and ``BatchNorm1d``/``BatchNorm2d``; ...); this module
re-exports them. ``analytic=True`` swaps the composed function for the hand-derived node.
"""
from ..norms import (BatchNorm1d, BatchNorm2d, GroupNorm, InstanceNorm1d, InstanceNorm2d,
                     LayerNorm, RMSNorm)

__all__ = ["BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm", "InstanceNorm1d",
           "InstanceNorm2d", "RMSNorm"]
