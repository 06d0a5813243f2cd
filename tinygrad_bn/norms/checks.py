"""Argument checks and running-statistic updates shared by every norm (composed, fused, plain).

``nn.functional`` (composed from primitives) and ``analytic`` (one fused node each) have the
same signatures and must reject the same calls with the same messages, before anything is
mutated; the checks live here once. Each ``check_*`` returns what the caller needs (channel
count, values per statistic) and raises ``ValueError`` naming the shapes or values at fault
(or a ``ValueError`` subclass that is also torch's error type, where torch raises another one).

torch's rules followed here (checked against torch 2.13 on the CPU):

* **one value per statistic**: ``batch_norm`` in training raises when N·L == 1;
  ``instance_norm`` with input statistics when L == 1; ``group_norm`` (always) when
  N·(C/G)·L == 1 -- one value per group with more than one group element overall, e.g.
  (2, 4) with 4 groups, is allowed and gives y = β.
* **eps**: ``batch_norm`` needs eps > 0 in training and eps ≥ 0 in evaluation.
* **empty inputs** give empty outputs: ``batch_norm`` leaves the running statistics alone;
  ``instance_norm`` with N = 0 and input statistics writes nan into them (the mean over no
  samples), and raises ``IndexError`` when N = 0 and a weight or bias is given.
* **dtypes**: weight, bias and running statistics (of ``batch_norm``, ``layer_norm``,
  ``group_norm``; weight and bias of ``instance_norm``) share one dtype, the input's, or
  float32 for a float16 input (``RuntimeError`` "mixed dtype" otherwise; ``batch_norm`` of an
  empty input skips the check). ``rms_norm`` accepts any weight dtype.
* **float16** inputs are normalized in float32 (torch's accumulation type) and rounded once.

Running statistics are written by ``commit`` (``tinygrad_bn._commit``), after everything
else succeeded, all together (Principle 2; an interrupt is held until both are written).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .._commit import commit
from .._jit import LOOP_DTYPES
from ..core import ops as _ops
from ..core.tensor import Tensor, compute_dtype  # (compute_dtype: norms import it from here)


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


class NormDtypeError(ValueError, RuntimeError):
    """Mixed dtypes among a norm's input and parameters (torch raises RuntimeError)."""


class NormIndexError(ValueError, IndexError):
    """An input torch's norm kernels cannot index (torch raises IndexError)."""


def _check_dtypes(fn: str, x, names: tuple, values: tuple) -> None:
    """``values`` (arrays or None, called ``names``) share one dtype: the input's, or float32
    for a float16 input (torch's CPU kernels); else ``NormDtypeError``."""
    xd = x.data.dtype
    for t in values:  # the common case first: everything in the input's dtype
        if t is not None and t.dtype is not xd:
            break
    else:
        return
    given = [(what, t) for what, t in zip(names, values) if t is not None]
    if not given:
        return
    dts = {t.dtype for _, t in given}
    if len(dts) == 1:
        (d,) = dts
        if d == x.dtype or (x.dtype == np.float16 and d == np.float32):
            return
    allowed = "float32 or float16" if x.dtype == np.float16 else str(x.dtype)
    listed = ", ".join(f"{what} {t.dtype}" for what, t in given)
    raise NormDtypeError(
        f"{fn}: mixed dtype: input is {x.dtype} but {listed} (as in torch, they must all be "
        f"{allowed}; cast them with .astype(...))"
    )


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


def _check_eps(fn: str, eps, positive: bool = False) -> None:
    """eps ≥ 0 (> 0 with ``positive``: torch's ``batch_norm`` in training, whose message this
    is)."""
    if type(eps) is float and 0.0 < eps < math.inf:
        return
    _check_number(fn, "eps", eps)
    if positive and eps <= 0:
        raise ValueError(f"{fn} eps must be positive during training, but got {eps!r}")
    if eps < 0:
        raise ValueError(f"{fn} eps must be non-negative, but got {eps!r}")


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
        if stat_array(running_mean) is stat_array(running_var):
            raise ValueError(f"{fn}: running_mean and running_var are the same array")


def check_writable(fn: str, **arrays) -> None:
    """Each array (Tensor, ndarray or None) can be written in place: checked before anything
    is computed, so that a read-only running statistic cannot fail half-way through."""
    for what, t in arrays.items():
        a = stat_array(t)
        if a is not None and not a.flags.writeable:
            raise ValueError(f"{fn}: {what} is read-only (its array has writeable=False); "
                             "running statistics are updated in place")


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


def running_value(arr: np.ndarray, batch: np.ndarray, momentum: float) -> np.ndarray:
    """The new running statistic ``momentum·batch + (1 − momentum)·arr`` (torch's formula,
    in float64 and rounded once to ``arr``'s dtype, as torch's CPU kernel); not written.
    With the compiled loops (``ops.loops_for``), one of them (the same bits but for a nan's
    sign; a fifth of the time of these four NumPy calls on C values)."""
    k = _ops.loops_for(arr.size)
    if k and type(batch) is np.ndarray and batch.shape == arr.shape and arr.ndim == 1 \
            and arr.dtype in LOOP_DTYPES and batch.dtype in LOOP_DTYPES:
        return k.momentum_average(arr, batch, float(momentum), 1.0 - momentum)
    new = np.multiply(batch, momentum, dtype=np.float64)
    new += np.multiply(arr, 1.0 - momentum, dtype=np.float64)
    return new.astype(arr.dtype)


def update_running(rm: np.ndarray, rv: np.ndarray, mean: np.ndarray, var: np.ndarray, m: int,
                   momentum: float) -> None:
    """Write BatchNorm's new running statistics into ``rm`` and ``rv``, in place, both or
    neither: ``running_value`` of the batch mean, and of the unbiased batch variance
    σ²·m/(m − 1) (``var`` is the biased one, over m values per channel). The last step of a
    call, once everything was checked and computed.

    By ``commit`` of the two new arrays; with the compiled loops, by one call that computes
    and writes both (``running_stats_``: ``running_value``'s bits, a third of the time) when
    the four arrays are (C,) float32/float64, the statistics contiguous and apart."""
    factor = m / (m - 1)
    k = _ops.loops_for(rm.size)
    if k and type(mean) is np.ndarray and type(var) is np.ndarray and rm.ndim == 1 \
            and mean.shape == var.shape == rv.shape == rm.shape \
            and rm.dtype in LOOP_DTYPES and rv.dtype in LOOP_DTYPES \
            and mean.dtype in LOOP_DTYPES and var.dtype in LOOP_DTYPES \
            and rm.flags.c_contiguous and rv.flags.c_contiguous \
            and not np.may_share_memory(rm, rv):
        k.running_stats_(rm, rv, mean, var, var.dtype.type(factor), float(momentum),
                         1.0 - momentum)
        return
    commit((rm, running_value(rm, mean, momentum)),
           (rv, running_value(rv, var * factor, momentum)))


def instance_running(rm: np.ndarray, rv: np.ndarray, mean: np.ndarray, var: np.ndarray,
                     xshape: tuple, momentum: float):
    """The new running statistics of ``instance_norm`` as ``commit`` pairs (None: unchanged)
    from the per-instance ``mean`` and biased ``var`` ((N·C) values): the batch means of the
    instance mean and unbiased variance. As torch: nan for N = 0 (a mean over no samples),
    unchanged for L = 0 (nothing was normalized)."""
    n, c = xshape[0], xshape[1]
    spatial = math.prod(xshape[2:])
    if n == 0:
        return ((rm, np.full(rm.shape, np.nan, rm.dtype)),
                (rv, np.full(rv.shape, np.nan, rv.dtype)))
    if spatial == 0:
        return None
    bm = mean.reshape(n, c).astype(np.float64).mean(axis=0)
    bv = var.reshape(n, c).astype(np.float64).mean(axis=0) * (spatial / (spatial - 1))
    return ((rm, running_value(rm, bm, momentum)), (rv, running_value(rv, bv, momentum)))


def _check_channel_inputs(fn: str, x: Tensor, running_mean, running_var, weight, bias,
                          batch_stats: bool, momentum, eps, needs_running: str) -> int:
    """Shared checks of BatchNorm and InstanceNorm: a non-empty input, per-channel (C,)
    running statistics and affine parameters, eps, and momentum when the statistics update.
    ``needs_running`` names the setting under which running statistics are required."""
    c = x.data.shape[1]
    cs = (c,)
    for t in (running_mean, running_var, weight, bias):
        if t is not None and not (isinstance(t, _ARRAYS) and t.shape == cs):
            for what, u in (("running_mean", running_mean), ("running_var", running_var),
                            ("weight", weight), ("bias", bias)):
                _check_param(fn, what, u, cs, x.shape)  # raises for the first misfit
    _check_running(fn, running_mean, running_var)
    if not batch_stats and running_mean is None:
        raise ValueError(f"{fn}: running_mean and running_var are required when "
                         f"{needs_running}")
    if batch_stats and running_mean is not None:
        _check_momentum(fn, momentum)
        check_writable(fn, running_mean=running_mean, running_var=running_var)
    return c


def check_batch_norm(x: Tensor, running_mean, running_var, weight, bias, training: bool,
                     momentum, eps) -> tuple[int, int]:
    """Checks for ``batch_norm``; returns (C, values per channel)."""
    fn = "batch_norm"
    shape = x.data.shape
    if len(shape) < 2:
        raise ValueError(
            f"{fn}: expected input of shape (N, C), (N, C, L) or (N, C, H, W), got shape "
            f"{x.shape} (ndim {x.ndim})"
        )
    c = _check_channel_inputs(fn, x, running_mean, running_var, weight, bias, training,
                              momentum, eps, "training=False (evaluation normalizes with the "
                              "running statistics)")
    m = shape[0] * math.prod(shape[2:])
    if training and m == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {x.shape}"
        )
    _check_eps(fn, eps, positive=training)
    if x.data.size:  # torch returns an empty input before looking at dtypes
        _check_dtypes(fn, x, ("weight", "bias", "running_mean", "running_var"),
                      (weight, bias, running_mean, running_var))
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
    if not ns or any(s < 0 for s in ns):
        raise ValueError(f"{fn}: normalized_shape must be non-empty with sizes >= 0, got "
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
    _check_param(fn, "weight", weight, ns, x.shape, "normalized_shape")
    _check_param(fn, "bias", bias, ns, x.shape, "normalized_shape")
    if eps is not None:
        _check_eps(fn, eps)
    if fn == "layer_norm":  # torch's rms_norm accepts a weight of any dtype
        _check_dtypes(fn, x, ("weight", "bias"), (weight, bias))
    return ns


def check_group_norm(x: Tensor, num_groups, weight, bias, eps) -> tuple[int, int]:
    """Checks for ``group_norm``; returns (C, G)."""
    fn = "group_norm"
    if x.ndim < 2:
        raise ValueError(f"{fn}: expected input of shape (N, C, *), got shape {x.shape} "
                         f"(ndim {x.ndim})")
    c = x.shape[1]
    if (isinstance(num_groups, bool) or not isinstance(num_groups, numbers.Integral)
            or num_groups <= 0):
        raise ValueError(f"{fn}: num_groups must be a positive int, got {num_groups!r}")
    if c % num_groups:
        raise ValueError(
            f"{fn}: num_groups={num_groups} does not divide the {c} channels of input of shape "
            f"{x.shape} (expected the number of channels to be divisible by num_groups)"
        )
    if x.shape[0] * (c // num_groups) * math.prod(x.shape[2:]) == 1:  # torch's check, verbatim
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size "
            f"{[x.shape[0] * c // num_groups, int(num_groups), *x.shape[2:]]}"
        )
    _check_param(fn, "weight", weight, (c,), x.shape)
    _check_param(fn, "bias", bias, (c,), x.shape)
    _check_eps(fn, eps)
    _check_dtypes(fn, x, ("weight", "bias"), (weight, bias))
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
    _check_eps(fn, eps)
    spatial = math.prod(x.shape[2:])
    if use_input_stats and spatial == 1:
        raise ValueError(
            f"Expected more than 1 spatial element when training, got input size {x.shape}"
        )
    if x.shape[0] == 0 and (weight is not None or bias is not None):
        raise NormIndexError(
            f"{fn}: an empty batch (input of shape {x.shape}) with a weight or bias raises in "
            "torch (IndexError: select(): index 0 out of range); leave out weight and bias, "
            "or skip the call"
        )
    _check_dtypes(fn, x, ("weight", "bias"), (weight, bias))
    return c, spatial


def rms_eps(eps, dtype) -> float:
    """torch's default for ``rms_norm``: the machine epsilon of the input's dtype."""
    return float(np.finfo(dtype).eps) if eps is None else eps
