"""Autograd vs hand-derived vs numeric: the public names of ``tinygrad_bn.norms.compare``."""
from .norms.compare import (CASES, NORMS, CompareReport, CompareRow, BesselBatchNormNoFactorOp,
                            BesselBatchNormOp, bessel_batch_norm, compare, compare_all)

__all__ = ["CompareRow", "CompareReport", "compare", "compare_all", "NORMS", "CASES",
           "bessel_batch_norm", "BesselBatchNormOp", "BesselBatchNormNoFactorOp"]
