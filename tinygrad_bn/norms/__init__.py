"""Norms: the registry and teaching files (to come), and ``grad_paths``, which splits a
gradient by the intermediates (μ, σ², x̂) its paths go through."""
from .paths import grad_paths
