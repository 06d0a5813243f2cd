"""Toy models: MLPs with a choice of normalization, activation, placement and init scale."""
from __future__ import annotations

import numpy as np

from .. import nn
from ..norms import registry

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def norm_names() -> tuple:
    """"none" and the registered norms that have a layer for (N, features) inputs."""
    return ("none",) + tuple(e.short or e.name for e in registry.entries(variants=False)
                             if e.module is not None)


NORMS = norm_names()  # at import; ``norm_names()`` also lists norms registered later


def make_norm(norm: str, features: int, analytic: bool = False, dtype=np.float32):
    """The registered norm's layer for (N, features) activations ("batch", "layer", ...)."""
    entry = registry.get(norm) if norm in registry.REGISTRY else None
    if entry is None or entry.module is None:
        raise ValueError(f"unknown norm {norm!r}; choose from {', '.join(norm_names()[1:])}"
                         + ("" if entry is None else f" ({norm} needs (N, C, L) inputs)"))
    return entry.module(features, dtype=dtype, analytic=analytic)


def mlp(n_in: int, hidden, n_out: int, *, norm: str = "none", activation: str = "relu",
        analytic: bool = False, placement: str = "before", init_std: float | None = None,
        dtype=np.float32, rng=0) -> nn.Sequential:
    """``Linear → [norm] → activation`` for each hidden width, then a ``Linear`` head.

    ``placement="before"`` puts the norm between the linear map and the activation (the
    common choice), ``"after"`` after the activation. ``init_std`` replaces torch's default
    weight init by N(0, init_std²) (biases zero), to study sensitivity to the init scale.
    Input (N, n_in) -> logits (N, n_out).
    """
    if norm != "none":
        make_norm(norm, 1)  # raises for an unknown norm, before anything is built
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from "
                         f"{', '.join(ACTIVATIONS)}")
    if placement not in ("before", "after"):
        raise ValueError(f"placement must be 'before' or 'after', got {placement!r}")
    hidden = list(hidden)
    if not hidden or any(h < 1 for h in hidden):
        raise ValueError(f"hidden widths must be positive integers, got {hidden}")
    rng = np.random.default_rng(rng)
    layers = []
    prev = n_in
    for h in hidden:
        layers.append(nn.Linear(prev, h, dtype=dtype, rng=rng))
        if norm != "none" and placement == "before":
            layers.append(make_norm(norm, h, analytic, dtype))
        layers.append(ACTIVATIONS[activation]())
        if norm != "none" and placement == "after":
            layers.append(make_norm(norm, h, analytic, dtype))
        prev = h
    layers.append(nn.Linear(prev, n_out, dtype=dtype, rng=rng))
    model = nn.Sequential(*layers)
    if init_std is not None:
        for m in model:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, init_std, rng=rng)
                nn.init.zeros_(m.bias)
    return model


def mlp_of(block, n_in: int, hidden, n_out: int, *, dtype=np.float32,
           rng=0) -> nn.Sequential:
    """``Linear → block(width, rng)`` for each hidden width, then a ``Linear`` head: an MLP
    whose layers after each hidden ``Linear`` are chosen by ``block``, which returns a list of
    modules (e.g. ``[nn.BatchNorm1d(width), nn.ReLU()]``). ``rng`` is the generator the
    ``Linear`` layers draw their weights from, passed on for blocks that need one (Dropout).
    Input (N, n_in) -> logits (N, n_out).
    """
    rng = np.random.default_rng(rng)
    layers, prev = [], n_in
    for h in hidden:
        layers.append(nn.Linear(prev, h, dtype=dtype, rng=rng))
        layers.extend(block(h, rng))
        prev = h
    layers.append(nn.Linear(prev, n_out, dtype=dtype, rng=rng))
    return nn.Sequential(*layers)
