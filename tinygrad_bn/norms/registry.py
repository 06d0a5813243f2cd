"""The registry of norms: each norm declared once, read by compare, viz, models and studies.

An entry (``Norm``) says everything the rest of the package needs to know about a norm:

* ``composed``: the function built from graph primitives (autograd differentiates it);
* ``derived``: the same function as one node with the hand-derived backward;
* ``module``: ``module(features, dtype=, analytic=)`` → a layer for (N, features)
  activations, or None when the norm does not apply to them (InstanceNorm needs (N, C, L));
* ``example(rng)`` → ``(shape, settings)``: a small input for drawings and tests;
* ``defaults(shape)`` → the settings a call takes when none are given (e.g. num_groups);
* ``param_shape(shape, settings)`` → the shape of γ and β;
* ``call(fn, x, weight, bias, training=, running=, **settings)``: calls ``composed`` or
  ``derived`` with the norm's own signature (``running``: (mean, var) for evaluation);
* ``label(shape, training, settings)``: its name in tables and titles.

``register(...)`` adds one (adding a norm is one registration), ``get(name)`` finds it by
name or short alias ("batch" for "batch_norm"), ``names()`` lists them; iterating over the
module's ``REGISTRY`` (or ``entries()``) yields the entries in registration order. A
*variant* (``variant=True``, e.g. the tutorial's boxed BatchNorm backward) is a registered
norm that is not one of the five families: ``names()`` leaves it out unless asked.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

__all__ = ["Norm", "REGISTRY", "register", "get", "names", "entries", "unregister"]


@dataclass(frozen=True)
class Norm:
    """One registered norm (see the module docstring for the fields)."""

    name: str
    composed: Callable
    derived: Callable
    call: Callable
    param_shape: Callable
    example: Callable
    label: Callable
    defaults: Callable = lambda shape: {}
    module: Callable | None = None
    short: str | None = None
    has_bias: bool = True
    running: bool = False  # takes running statistics (evaluation mode uses them)
    variant: bool = False  # a variant of a family (not listed by names() by default)
    wrong_dx: bool = False  # its hand-derived dx is known to be wrong (expected failure)
    wrong_dx_only_in_training: bool = True

    def settings(self, shape: tuple, **given) -> dict:
        """The call's settings: ``defaults(shape)`` updated with ``given``."""
        s = self.defaults(tuple(shape))
        s.update(given)
        return s

    def example_call(self, rng, analytic: bool = False) -> tuple:
        """One call on the example input, as graphs and demos draw it: ``(output, title)``.
        ``x``, ``γ`` (and ``β``) are named float32 leaves that require grad."""
        import numpy as np

        from ..core.tensor import Tensor

        shape, given = self.example(rng)
        settings = self.settings(shape, **given)

        def leaf(shape, name):
            return Tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True,
                          name=name)

        pshape = tuple(self.param_shape(shape, settings))
        x, w = leaf(shape, "x"), leaf(pshape, "γ")
        b = leaf(pshape, "β") if self.has_bias else None
        y = self.call(self.derived if analytic else self.composed, x, w, b, **settings)
        kind = "analytic (one fused node)" if analytic else "composed from primitives"
        return y, f"{self.label(shape, True, settings)}, {kind}, x {shape}"


_REGISTRY: dict = {}


def register(name: str, **fields) -> Norm:
    """Declare a norm (fields as ``Norm``); replaces an entry of the same name."""
    entry = Norm(name=name, **fields)
    _REGISTRY[name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove a registered norm (for tests that register a toy one)."""
    _REGISTRY.pop(name, None)


def entries(variants: bool = True) -> list:
    """The registered entries, in registration order."""
    return [e for e in _REGISTRY.values() if variants or not e.variant]


def names(variants: bool = True, short: bool = False) -> tuple:
    """Registered names (``short=True``: the short alias where there is one)."""
    return tuple((e.short or e.name) if short else e.name for e in entries(variants))


def get(name: str) -> Norm:
    """The entry registered as ``name`` (or with ``name`` as its short alias)."""
    entry = _REGISTRY.get(name)
    if entry is None:
        entry = next((e for e in _REGISTRY.values() if e.short == name), None)
    if entry is None:
        raise ValueError(f"unknown norm {name!r}; expected one of {names()}")
    return entry


class _Registry:
    """``for norm in REGISTRY`` and ``"batch_norm" in REGISTRY``."""

    def __iter__(self) -> Iterator[Norm]:
        return iter(entries())

    def __contains__(self, name) -> bool:
        return name in _REGISTRY or any(e.short == name for e in _REGISTRY.values())

    def __len__(self) -> int:
        return len(_REGISTRY)


REGISTRY = _Registry()
