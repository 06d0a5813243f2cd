"""The norms, each declared once in the registry (``registry.py``).

One teaching file per family: ``batch_norm.py`` (math → composed → plain hand-derived op →
layers), ``layer_norm.py``, ``group_norm.py``, ``instance_norm.py``, ``rms_norm.py``; the
argument checks they share (``checks.py``), the fused fast kernels (``fused.py``), the
three-way comparison (``compare.py``) and ``grad_paths`` (``paths.py``), which splits a
gradient by the intermediates (μ, σ², x̂) its paths go through.
"""
from . import registry
from .batch_norm import BatchNorm1d, BatchNorm2d, BatchNormOp, batch_norm, batch_norm_derived
from .layer_norm import LayerNorm, layer_norm
from .group_norm import GroupNorm, group_norm
from .instance_norm import InstanceNorm1d, InstanceNorm2d, instance_norm
from .rms_norm import RMSNorm, rms_norm
from .paths import grad_paths

__all__ = ["registry", "batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm",
           "batch_norm_derived", "BatchNormOp", "BatchNorm1d", "BatchNorm2d", "LayerNorm",
           "GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "RMSNorm", "grad_paths"]
