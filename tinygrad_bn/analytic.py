"""The hand-derived norms: one graph node each, whose backward is the derived formula.

Same functions and signatures as the composed ones in ``tinygrad_bn.nn.functional``:
``batch_norm``, ``layer_norm``, ``group_norm``, ``instance_norm``, ``rms_norm``. They
normalize with the **biased** variance and keep the **unbiased** one in the running
statistics, as torch. The derivations are in ``tinygrad_bn.norms`` (``batch_norm.py`` reads
top to bottom: math, composed, plain hand-derived op, modules); these public names run the
fused kernels of ``tinygrad_bn.norms.fused`` (the fast path, tested equal to the plain op);
``tutorial_boxed_batch_norm`` is the plain op with the tutorial's boxed backward, wrong on
purpose.
"""
from .norms.batch_norm import TutorialBoxedBatchNormOp
from .norms.batch_norm import tutorial_boxed_batch_norm_derived as tutorial_boxed_batch_norm
from .norms.fused import (BatchNormOp, GroupNormOp, InstanceNormOp, LayerNormOp, RMSNormOp,
                          backward_formula, batch_norm, group_norm, instance_norm, layer_norm,
                          rms_norm)

__all__ = ["batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm",
           "tutorial_boxed_batch_norm", "BatchNormOp", "LayerNormOp", "GroupNormOp",
           "InstanceNormOp", "RMSNormOp", "TutorialBoxedBatchNormOp", "backward_formula"]
