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
    _check_block(activation, placement)
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


# -- small CNNs ---------------------------------------------------------------------------
CONV_NORMS = ("none", "batch", "layer", "group", "instance")


def make_conv_norm(norm: str, channels: int, dims: int, *, groups: int = 8,
                   analytic: bool = False, dtype=np.float32):
    """The layer of norm ``norm`` for feature maps (N, C, L) (``dims=1``) or (N, C, H, W)
    (``dims=2``), by the registry's short names:

    - "batch": ``BatchNorm1d``/``BatchNorm2d(C)``, statistics per channel over N × positions;
    - "group": ``GroupNorm(groups, C)``, per sample over C/groups channels × positions;
    - "layer": ``GroupNorm(1, C)``, per sample over all C × positions: LayerNorm over
      (C, L) / (C, H, W) as Wu & He (2018) define it for CNNs, with one γ, β per channel
      (``nn.LayerNorm((C, L))`` normalizes the same values but has one γ, β per position);
    - "instance": ``InstanceNorm1d``/``InstanceNorm2d(C, affine=True)``, per sample and
      channel over the positions (``GroupNorm(C, C)``).
    """
    if norm not in CONV_NORMS[1:]:
        raise ValueError(f"unknown norm {norm!r} for feature maps; choose from "
                         f"{', '.join(CONV_NORMS[1:])}")
    if dims not in (1, 2):
        raise ValueError(f"dims must be 1 (N, C, L) or 2 (N, C, H, W), got {dims!r}")
    if norm == "group" and channels % groups:
        raise ValueError(f"GroupNorm: {channels} channels cannot be split into {groups} groups")
    kw = dict(dtype=dtype, analytic=analytic)
    if norm == "batch":
        return (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(channels, **kw)
    if norm == "instance":
        return (nn.InstanceNorm1d if dims == 1 else nn.InstanceNorm2d)(channels, affine=True,
                                                                       **kw)
    return nn.GroupNorm(groups if norm == "group" else 1, channels, **kw)


def cnn(input_shape, n_out: int, *, channels=(32, 32, 32), kernel_size: int = 5, stride=2,
        padding: int = 1, norm: str = "none", groups: int = 8, activation: str = "relu",
        placement: str = "before", analytic: bool = False, dtype=np.float32,
        rng=0) -> nn.Sequential:
    """``Conv → [norm] → activation`` for each width in ``channels``, then ``Flatten →
    Linear``: a small CNN for (N, C, L) signals (``input_shape`` (C, L): ``Conv1d``) or
    (N, C, H, W) images (``input_shape`` (C, H, W): ``Conv2d``).

    ``stride`` is one int or one per layer; ``norm`` one of ``CONV_NORMS`` (see
    ``make_conv_norm``; ``groups`` is GroupNorm's); ``placement`` as in ``mlp``. The same
    ``rng`` gives the same conv and linear weights whatever the norm. E.g. the MNIST-1D CNN
    ``cnn((1, 40), 10, norm="batch")``: lengths 40 → 19 → 9 → 4, then Linear(128, 10).
    """
    input_shape = tuple(int(s) for s in input_shape)
    dims = len(input_shape) - 1
    if dims not in (1, 2):
        raise ValueError(f"input_shape must be (C, L) or (C, H, W), got {input_shape}")
    if norm not in CONV_NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose from {', '.join(CONV_NORMS)}")
    _check_block(activation, placement)
    channels = list(channels)
    if not channels or any(c < 1 for c in channels):
        raise ValueError(f"channels must be positive integers, got {channels}")
    strides = [stride] * len(channels) if isinstance(stride, (int, np.integer)) else list(stride)
    if len(strides) != len(channels):
        raise ValueError(f"one stride per layer: {len(channels)} layers, strides {strides}")
    conv = nn.Conv1d if dims == 1 else nn.Conv2d
    rng = np.random.default_rng(rng)
    layers, prev, size = [], input_shape[0], list(input_shape[1:])
    for c, s in zip(channels, strides):
        size = [(n + 2 * padding - kernel_size) // s + 1 for n in size]
        if min(size) < 1 or (norm == "instance" and np.prod(size) == 1):
            raise ValueError(f"cnn: input {input_shape} shrinks to {size} positions at a "
                             f"{c}-channel layer" + (" (InstanceNorm needs more than one)"
                                                    if min(size) >= 1 else ""))
        layers.append(conv(prev, c, kernel_size, stride=s, padding=padding, dtype=dtype,
                           rng=rng))
        layer = [] if norm == "none" else [make_conv_norm(norm, c, dims, groups=groups,
                                                          analytic=analytic, dtype=dtype)]
        act = [ACTIVATIONS[activation]()]
        layers.extend(layer + act if placement == "before" else act + layer)
        prev = c
    layers += [nn.Flatten(), nn.Linear(prev * int(np.prod(size)), n_out, dtype=dtype, rng=rng)]
    return nn.Sequential(*layers)


def _check_block(activation: str, placement: str) -> None:
    """The activation and the norm's placement of an ``mlp`` / ``cnn`` block are known."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from "
                         f"{', '.join(ACTIVATIONS)}")
    if placement not in ("before", "after"):
        raise ValueError(f"placement must be 'before' or 'after', got {placement!r}")
