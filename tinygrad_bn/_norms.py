"""Argument checks and running-statistic updates shared by the two norm families.

``nn.functional`` (composed from primitives) and ``analytic`` (one fused node each) have the
same signatures and must reject the same calls with the same messages, before anything is
mutated; the checks live here once. Each ``check_*`` returns what the caller needs (channel
count, values per statistic) and raises ``ValueError`` naming the shapes or values at fault.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .core.tensor import Tensor


def as_input(x, fn: str) -> Tensor:
    """``x`` as a floating-point Tensor (an ndarray becomes a constant Tensor)."""
    if not isinstance(x, Tensor):
        if isinstance(x, np.ndarray):
            x = Tensor(x)
        else:
            raise TypeError(f"{fn}: input must be a Tensor, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise ValueError(f"{fn}: input must be floating point, got dtype {x.dtype}")
    return x


_ARRAYS = (Tensor, np.ndarray)


def _check_param(fn: str, what: str, t, expected: tuple, x_shape: tuple,
                 of: str | None = None) -> None:
    """``t`` (Tensor, ndarray or None) must have shape ``expected`` (``of``: what that shape
    comes from, by default the channels)."""
    if t is None or (isinstance(t, _ARRAYS) and t.shape == expected):
        return
    if not isinstance(t, _ARRAYS):
        raise TypeError(f"{fn}: {what} must be a Tensor or None, got {type(t).__name__}")
    if of is None:
        of = f"the {expected[0]} channels"
    raise ValueError(
        f"{fn}: {what} of shape {tuple(t.shape)} does not match {of} of input of shape "
        f"{x_shape} (expected shape {expected})"
    )


def _check_number(fn: str, what: str, value) -> None:
    t = type(value)
    if t is float or t is int:  # the common case, without the slower ABC check
        if math.isfinite(value):
            return
    elif not isinstance(value, bool) and isinstance(value, numbers.Real) and \
            math.isfinite(value):
        return
    raise ValueError(f"{fn}: {what} must be a finite number, got {value!r}")


def _check_eps(fn: str, eps) -> None:
    if type(eps) is float and 0.0 <= eps < math.inf:
        return
    _check_number(fn, "eps", eps)
    if eps < 0:
        raise ValueError(f"{fn}: eps must be >= 0, got {eps!r}")


def _check_running(fn: str, running_mean, running_var) -> None:
    """Running statistics are given together, as floating-point arrays (updated in place)."""
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{fn}: running_mean and running_var must be given together "
                         f"(got {'running_var' if running_mean is None else 'running_mean'}"
                         " = None)")
    if running_mean is not None:
        for what, t in (("running_mean", running_mean), ("running_var", running_var)):
            if t.dtype.kind != "f":
                raise ValueError(f"{fn}: {what} must be floating point, got dtype {t.dtype}")


def _check_momentum(fn: str, momentum) -> None:
    if momentum is None:
        raise ValueError(
            f"{fn}: momentum must be a number, got None (a cumulative average is a module "
            "feature: BatchNorm modules with momentum=None pass 1/num_batches_tracked)"
        )
    _check_number(fn, "momentum", momentum)


def stat_array(t) -> np.ndarray | None:
    """The array a running statistic lives in (updated in place), or None."""
    if t is None:
        return None
    return t.data if isinstance(t, Tensor) else t


def update_running(arr: np.ndarray, batch: np.ndarray, momentum: float) -> None:
    """``arr ← (1 − momentum)·arr + momentum·batch`` in place (torch's formula)."""
    np.multiply(arr, 1.0 - momentum, out=arr)
    np.add(arr, batch * momentum, out=arr, casting="same_kind")


def _fits(t, shape: tuple) -> bool:
    """True for None or an array of ``shape`` (the fast path of ``_check_param``)."""
    return t is None or (isinstance(t, _ARRAYS) and t.shape == shape)


def _check_channel_inputs(fn: str, x: Tensor, running_mean, running_var, weight, bias,
                          batch_stats: bool, momentum, eps, needs_running: str) -> int:
    """Shared checks of BatchNorm and InstanceNorm: a non-empty input, per-channel (C,)
    running statistics and affine parameters, eps, and momentum when the statistics update.
    ``needs_running`` names the setting under which running statistics are required."""
    _nonempty(fn, x)
    c = x.shape[1]
    cs = (c,)
    if not (_fits(running_mean, cs) and _fits(running_var, cs) and _fits(weight, cs)
            and _fits(bias, cs)):
        for what, t in (("running_mean", running_mean), ("running_var", running_var),
                        ("weight", weight), ("bias", bias)):
            _check_param(fn, what, t, cs, x.shape)
    _check_running(fn, running_mean, running_var)
    if not batch_stats and running_mean is None:
        raise ValueError(f"{fn}: running_mean and running_var are required when "
                         f"{needs_running}")
    _check_eps(fn, eps)
    if batch_stats and running_mean is not None:
        _check_momentum(fn, momentum)
    return c


def _nonempty(fn: str, x: Tensor) -> None:
    if x.size == 0:
        raise ValueError(f"{fn}: input of shape {x.shape} is empty")


def check_batch_norm(x: Tensor, running_mean, running_var, weight, bias, training: bool,
                     momentum, eps) -> tuple[int, int]:
    """Checks for ``batch_norm``; returns (C, values per channel)."""
    fn = "batch_norm"
    if x.ndim < 2:
        raise ValueError(
            f"{fn}: expected input of shape (N, C), (N, C, L) or (N, C, H, W), got shape "
            f"{x.shape} (ndim {x.ndim})"
        )
    c = _check_channel_inputs(fn, x, running_mean, running_var, weight, bias, training,
                              momentum, eps, "training=False (evaluation normalizes with the "
                              "running statistics)")
    m = x.size // c
    if training and m <= 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {x.shape}"
        )
    return c, m


def normalized_shape_tuple(fn: str, normalized_shape) -> tuple:
    if isinstance(normalized_shape, (numbers.Integral,)) and not isinstance(normalized_shape,
                                                                            bool):
        ns = (int(normalized_shape),)
    else:
        try:
            ns = tuple(int(s) for s in normalized_shape)
        except TypeError:
            raise ValueError(f"{fn}: normalized_shape must be an int or a tuple of ints, got "
                             f"{normalized_shape!r}") from None
    if not ns or any(s <= 0 for s in ns):
        raise ValueError(f"{fn}: normalized_shape must be non-empty with positive sizes, got "
                         f"{normalized_shape!r}")
    return ns


def check_layer_norm(fn: str, x: Tensor, normalized_shape, weight, bias, eps) -> tuple:
    """Checks for ``layer_norm`` / ``rms_norm``; returns ``normalized_shape`` as a tuple."""
    ns = normalized_shape_tuple(fn, normalized_shape)
    k = len(ns)
    if x.ndim < k or tuple(x.shape[x.ndim - k:]) != ns:
        star = ", ".join(str(s) for s in ns)
        raise ValueError(
            f"{fn}: given normalized_shape={ns}, expected input with shape (*, {star}), but got "
            f"input of shape {x.shape}"
        )
    _nonempty(fn, x)
    _check_param(fn, "weight", weight, ns, x.shape, "normalized_shape")
    _check_param(fn, "bias", bias, ns, x.shape, "normalized_shape")
    if eps is not None:
        _check_eps(fn, eps)
    return ns


def check_group_norm(x: Tensor, num_groups, weight, bias, eps) -> tuple[int, int]:
    """Checks for ``group_norm``; returns (C, G)."""
    fn = "group_norm"
    if x.ndim < 2:
        raise ValueError(f"{fn}: expected input of shape (N, C, *), got shape {x.shape} "
                         f"(ndim {x.ndim})")
    _nonempty(fn, x)
    c = x.shape[1]
    if (isinstance(num_groups, bool) or not isinstance(num_groups, numbers.Integral)
            or num_groups <= 0):
        raise ValueError(f"{fn}: num_groups must be a positive int, got {num_groups!r}")
    if c % num_groups:
        raise ValueError(
            f"{fn}: num_groups={num_groups} does not divide the {c} channels of input of shape "
            f"{x.shape} (expected the number of channels to be divisible by num_groups)"
        )
    _check_param(fn, "weight", weight, (c,), x.shape)
    _check_param(fn, "bias", bias, (c,), x.shape)
    _check_eps(fn, eps)
    return c, int(num_groups)


def check_instance_norm(x: Tensor, running_mean, running_var, weight, bias,
                        use_input_stats: bool, momentum, eps) -> tuple[int, int]:
    """Checks for ``instance_norm``; returns (C, spatial size L)."""
    fn = "instance_norm"
    if x.ndim < 3:
        raise ValueError(f"{fn}: expected input of shape (N, C, L) or (N, C, H, W), got shape "
                         f"{x.shape} (ndim {x.ndim})")
    c = _check_channel_inputs(fn, x, running_mean, running_var, weight, bias,
                              use_input_stats, momentum, eps, "use_input_stats=False")
    spatial = x.size // (x.shape[0] * c)
    if use_input_stats and spatial <= 1:
        raise ValueError(
            f"Expected more than 1 spatial element when training, got input size {x.shape}"
        )
    return c, spatial


def rms_eps(eps, dtype) -> float:
    """torch's default for ``rms_norm``: the machine epsilon of the input's dtype."""
    return float(np.finfo(dtype).eps) if eps is None else eps
