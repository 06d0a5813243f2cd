"""Per-layer statistics of activations and gradients: the instruments behind the studies.

Functions on arrays (any layer output: (N, C), or (N, C, ...) with channels on axis 1; the
statistics are taken per unit/channel over the batch and the other axes, then averaged):

- ``gaussian_entropy(std)``: ½·log(2πe·σ²) nats, the entropy of a Gaussian with that std;
  ``GAUSSIAN_UNIT_ENTROPY`` = ½·log(2πe) ≈ 1.4189 is its value at σ = 1 (the tutorial's 1.42).
- ``histogram_entropy(x)``: a per-unit histogram estimate of the differential entropy (nats),
  which does not assume a Gaussian: ``-Σ pᵢ log pᵢ + log Δ`` with Rice's rule for the number
  of bins and the Miller–Madow correction. For Gaussian samples its bias is under 0.02 nats
  from n = 128 on (one unit's estimate scatters by about ±0.07 at n = 128, ±0.03 at 512;
  averaging over units shrinks that).
- ``saturation(output, activation)``: the fraction of outputs where the activation's local
  derivative is below ``tol`` (5%) of its maximum (tanh: |y| > 0.975; sigmoid: y < 0.0127 or
  y > 0.9873; relu: y == 0).
- ``layer_stats(x, ...)``: all of the above in one dict.
- ``param_grad_norms(model)``: the L2 norm of every parameter's ``.grad``.
- ``capture(model, X)``: the outputs of chosen layers on one forward pass (no graph).

``Recorder`` attaches forward hooks (``Module.register_forward_hook``) to chosen layers and
records these statistics of their outputs on every (or every k-th) training forward, plus the
norm of the gradient that reaches each output, while any training loop (``train.fit``)
runs::

    rec = Recorder(model, layers=["1", "4"], every=5, unit=0)
    with rec:                        # hooks on; removed (and last gradients read) on exit
        fit(model, data, opt)
    t = rec.trace("1")               # a Trace of arrays over the recorded steps
    t.step, t.percentiles[:, 1], t.entropy_gaussian, t.grad_norm

Evaluation mode (forgetting ``model.eval()``):

- ``check_eval_mode(model)`` warns (``TrainModeInferenceWarning``) and returns False when
  layers whose output depends on the mode (BatchNorm, InstanceNorm with running statistics,
  Dropout with p > 0) are in training mode; ``train_mode_layers(model)`` names them;
- ``inference_check(model)``, a context manager: inside it, each forward pass of ``model``
  with such layers in training mode warns;
- ``watch_train_mode_inference(model)`` keeps a hook on ``model`` that warns whenever it runs
  under ``no_grad()`` (nothing recorded: inference) with such layers in training mode; its
  handle's ``remove()`` takes it off;
- ``train_mode_accuracy(model, X, y, batch_size)``: what inference in training mode scores,
  batch by batch;
- ``snapshot(model)``, a context manager: the model's parameters and buffers are put back
  when the block ends.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

from . import nn
from .core.node import is_grad_enabled, no_grad
from .core.tensor import Tensor

__all__ = [
    "GAUSSIAN_UNIT_ENTROPY", "gaussian_entropy", "histogram_entropy", "saturation",
    "activation_kind", "layer_stats", "param_grad_norms", "capture", "resolve_layers",
    "Trace", "Recorder", "TrainModeInferenceWarning", "train_mode_layers", "check_eval_mode",
    "inference_check", "watch_train_mode_inference", "train_mode_accuracy", "snapshot",
]

GAUSSIAN_UNIT_ENTROPY = 0.5 * math.log(2 * math.pi * math.e)  # ≈ 1.4189 nats

DEFAULT_Q = (15.0, 50.0, 85.0)


# --------------------------------------------------------------------------- arrays
def _columns(x) -> np.ndarray:
    """``x`` as a float64 (rows, units) array: (N,) -> (N, 1); (N, C, ...) -> (N·..., C)."""
    a = np.asarray(x.data if isinstance(x, Tensor) else x, dtype=np.float64)
    if a.ndim == 0:
        raise ValueError("layer statistics need at least one sample, got a scalar")
    if a.ndim == 1:
        return a[:, None]
    if a.ndim > 2:
        a = np.moveaxis(a, 1, -1).reshape(-1, a.shape[1])
    return a


def gaussian_entropy(std):
    """Differential entropy of a Gaussian with standard deviation ``std``, in nats:
    ``H = ½·log(2πe·σ²)``; -inf where σ = 0. Works on floats and arrays."""
    s = np.asarray(std, dtype=np.float64)
    with np.errstate(divide="ignore"):
        h = 0.5 * np.log(2 * np.pi * np.e * s * s)
    return float(h) if h.ndim == 0 else h


def histogram_entropy(x, bins: int | None = None, correct: bool = True) -> np.ndarray:
    """Per-unit histogram estimate of differential entropy, in nats; shape (units,).

    For each column of ``x`` (see the module docstring for shapes): ``bins`` equal-width bins
    between the column's min and max (default Rice's rule, ⌈2·n^⅓⌉), probabilities pᵢ,
    ``H ≈ -Σ pᵢ log pᵢ + log Δ``, plus the Miller–Madow bias correction (m - 1)/(2n), m the
    number of non-empty bins, when ``correct``. A constant column gives -inf. Meaningful for
    continuous distributions only (not for ReLU outputs with a point mass at 0).
    """
    a = _columns(x)
    n, c = a.shape
    if n < 2:
        raise ValueError(f"histogram_entropy needs at least 2 samples per unit, got {n}")
    b = int(bins) if bins is not None else int(math.ceil(2 * n ** (1 / 3)))
    if b < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    lo = a.min(axis=0)
    width = (a.max(axis=0) - lo) / b
    ok = width > 0
    safe = np.where(ok, width, 1.0)
    idx = np.clip(np.floor((a - lo) / safe).astype(np.int64), 0, b - 1)
    counts = np.bincount((idx + np.arange(c) * b).ravel(), minlength=c * b).reshape(c, b)
    p = counts / n
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    h = -plogp.sum(axis=1) + np.log(safe)
    if correct:
        h = h + ((counts > 0).sum(axis=1) - 1) / (2 * n)
    return np.where(ok, h, -np.inf)


_SATURATION = {
    # local derivative as a function of the output y, divided by its maximum
    "tanh": lambda y: 1.0 - y * y,
    "sigmoid": lambda y: 4.0 * y * (1.0 - y),
    "relu": lambda y: (y > 0).astype(np.float64),
}


def activation_kind(module) -> str | None:
    """"tanh", "sigmoid" or "relu" for those activation modules, else None."""
    name = type(module).__name__.lower()
    return name if name in _SATURATION else None


def saturation(output, activation: str, tol: float = 0.05) -> float:
    """Fraction of the activation's outputs where its local derivative is below ``tol`` times
    its maximum: tanh |y| > √(1 - tol) (0.975); sigmoid 4y(1-y) < tol (y < 0.0127 or
    y > 0.9873); relu y == 0 (a "dead" output). ``output`` is what the activation returned."""
    if activation not in _SATURATION:
        raise ValueError(f"unknown activation {activation!r}; choose from "
                         f"{', '.join(_SATURATION)}")
    y = np.asarray(output.data if isinstance(output, Tensor) else output, dtype=np.float64)
    if y.size == 0:
        return math.nan
    return float((_SATURATION[activation](y) < tol).mean())


def layer_stats(x, *, activation: str | None = None, q: Iterable[float] = DEFAULT_Q,
                unit: int | None = None, tol: float = 0.05) -> dict:
    """Statistics of one layer output ``x`` (N, C) or (N, C, ...) as a dict of floats:

    - ``mean``: mean of all elements;
    - ``std``: per-unit standard deviation over the batch (biased), averaged over units;
    - ``percentiles``: ndarray of the ``q`` percentiles of unit ``unit``'s values (of all
      elements when ``unit`` is None);
    - ``saturation``: ``saturation(x, activation, tol)``, NaN when ``activation`` is None;
    - ``entropy_gaussian``: ``gaussian_entropy`` of each unit's std, averaged over units;
    - ``entropy_hist``: ``histogram_entropy`` of each unit, averaged over units.
    """
    a = _columns(x)
    sd = a.std(axis=0)
    vals = a.ravel() if unit is None else a[:, unit]
    h_hist = histogram_entropy(a) if a.shape[0] >= 2 else np.full(a.shape[1], np.nan)
    return {
        "mean": float(a.mean()),
        "std": float(sd.mean()),
        "percentiles": np.percentile(vals, list(q)),
        "saturation": math.nan if activation is None else saturation(x, activation, tol),
        "entropy_gaussian": float(np.mean(gaussian_entropy(sd))),
        "entropy_hist": float(np.mean(h_hist)),
    }


def param_grad_norms(model, weights_only: bool = False) -> dict:
    """``{name: ‖p.grad‖₂}`` for every parameter of ``model`` that has a gradient (call it
    after ``backward()`` and before ``zero_grad()``); ``weights_only`` keeps names ending in
    "weight"."""
    out = {}
    for name, p in model.named_parameters():
        if p.grad is None or (weights_only and not name.endswith("weight")):
            continue
        out[name] = float(np.linalg.norm(p.grad))
    return out


def resolve_layers(model, layers=None) -> dict:
    """``{name: module}`` from ``layers``: None (every leaf module, named by its path in
    ``model.named_modules()``: "0", "1", ... for a Sequential), a list of such names, or a
    mapping of names to modules (used as given)."""
    named = dict(model.named_modules())
    if layers is None:
        return {n: m for n, m in named.items() if n and not m._modules}
    if isinstance(layers, Mapping):
        return dict(layers)
    out = {}
    for n in layers:
        if n not in named:
            raise ValueError(f"no layer named {n!r}; the model has "
                             f"{', '.join(repr(k) for k in named if k)}")
        out[str(n)] = named[n]
    return out


def capture(model, X, layers=None, training: bool | None = None) -> dict:
    """``{name: ndarray}``: the outputs of ``layers`` (see ``resolve_layers``) on one forward
    pass of ``X`` without recording a graph.

    ``training`` (True/False) sets the model's mode for this pass (restored afterwards); None
    keeps its current mode. In training mode BatchNorm normalizes with the statistics of
    ``X``; the buffers it updates (running statistics) are restored afterwards, so the call
    leaves the model exactly as it was.
    """
    mods = resolve_layers(model, layers)
    outs: dict = {}
    handles = []
    for name, m in mods.items():
        def hook(_m, _inp, out, name=name):
            outs[name] = np.array(out.data if isinstance(out, Tensor) else out)
        handles.append(m.register_forward_hook(hook))
    was = model.training
    try:
        with snapshot(model, parameters=False):
            if training is not None:
                model.train(training)
            with no_grad():
                model(X if isinstance(X, Tensor) else Tensor(np.asarray(X)))
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return outs


# --------------------------------------------------------------------------- recorder
@dataclass
class Trace:
    """What a ``Recorder`` saw at one layer, one entry per recorded forward pass.

    ``step[i]`` is the number of earlier eligible forward passes (with one forward per
    training step: the number of updates so far, so 0 is the initialization). The other
    fields are ``layer_stats`` values; ``percentiles`` has shape (steps, len(q)).
    ``grad_norm[i]`` is ‖∂loss/∂output‖ (Frobenius, over the batch) of that pass, NaN when no
    gradient reached it.
    """

    name: str
    kind: str
    q: tuple
    step: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    percentiles: np.ndarray
    saturation: np.ndarray
    entropy_gaussian: np.ndarray
    entropy_hist: np.ndarray
    grad_norm: np.ndarray


@dataclass
class _Log:
    kind: str
    activation: str | None
    calls: int = 0
    rows: list = field(default_factory=list)
    grads: list = field(default_factory=list)
    pending: tuple | None = None  # (row index, output Tensor) awaiting its gradient


class Recorder:
    """Record ``layer_stats`` of chosen layers' outputs (and the gradient norm reaching them)
    during training, through forward hooks.

    ``layers``: see ``resolve_layers`` (default every leaf module). ``every``: record one
    forward pass in ``every``. ``mode``: "train" records only training-mode passes with
    gradients on (what ``fit`` does for its steps; its evaluations are skipped), "any"
    records every pass. ``unit``: the column whose percentiles are kept (None: all elements).
    ``grads``: also record ‖∂loss/∂output‖, read through ``retain_grad`` when the layer runs
    again or when the recorder is closed. Use as a context manager (or ``attach()`` /
    ``detach()``); ``trace(name)`` / ``traces()`` give the data.
    """

    def __init__(self, model, layers=None, *, every: int = 1, mode: str = "train",
                 unit: int | None = None, q: Iterable[float] = DEFAULT_Q, grads: bool = True,
                 tol: float = 0.05):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if mode not in ("train", "any"):
            raise ValueError(f"mode must be 'train' or 'any', got {mode!r}")
        self.model = model
        self.layers = resolve_layers(model, layers)
        self.every = int(every)
        self.mode = mode
        self.unit = unit
        self.q = tuple(float(v) for v in q)
        self.grads = grads
        self.tol = tol
        self._logs = {n: _Log(type(m).__name__, activation_kind(m))
                      for n, m in self.layers.items()}
        self._handles: list = []

    # -- hooks ------------------------------------------------------------------------
    def attach(self) -> "Recorder":
        """Register the hooks (idempotent); returns self."""
        if not self._handles:
            for name, m in self.layers.items():
                self._handles.append(m.register_forward_hook(self._hook_for(name)))
        return self

    def detach(self) -> None:
        """Remove the hooks and read the gradients still pending."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self.flush()

    def __enter__(self) -> "Recorder":
        return self.attach()

    def __exit__(self, *exc) -> bool:
        self.detach()
        return False

    def flush(self) -> None:
        """Read the gradients of the last recorded outputs (after the last ``backward``)."""
        for log in self._logs.values():
            self._settle(log)

    @staticmethod
    def _settle(log: _Log) -> None:
        if log.pending is not None:
            i, out = log.pending
            g = out.grad
            log.grads[i] = math.nan if g is None else float(np.linalg.norm(g))
            log.pending = None

    def _hook_for(self, name: str):
        log = self._logs[name]

        def hook(module, inputs, out):
            if self.mode == "train" and not (module.training and is_grad_enabled()):
                return None
            self._settle(log)
            call = log.calls
            log.calls += 1
            if call % self.every:
                return None
            st = layer_stats(out, activation=log.activation, q=self.q, unit=self.unit,
                             tol=self.tol)
            log.rows.append((call, st))
            log.grads.append(math.nan)
            if self.grads and isinstance(out, Tensor) and out.requires_grad:
                out.retain_grad()
                log.pending = (len(log.grads) - 1, out)
            return None

        return hook

    # -- results ----------------------------------------------------------------------
    @property
    def names(self) -> list:
        return list(self._logs)

    def trace(self, name: str) -> Trace:
        """The recorded statistics of layer ``name`` as arrays (see ``Trace``)."""
        if name not in self._logs:
            raise KeyError(f"no layer {name!r} is recorded; recorded: {self.names}")
        log = self._logs[name]
        self._settle(log)
        rows = log.rows

        def col(key):
            return np.array([r[1][key] for r in rows], dtype=np.float64)

        pct = (np.stack([r[1]["percentiles"] for r in rows]) if rows
               else np.zeros((0, len(self.q))))
        return Trace(name=name, kind=log.kind, q=self.q,
                     step=np.array([r[0] for r in rows], dtype=np.int64),
                     mean=col("mean"), std=col("std"), percentiles=pct,
                     saturation=col("saturation"), entropy_gaussian=col("entropy_gaussian"),
                     entropy_hist=col("entropy_hist"),
                     grad_norm=np.array(log.grads, dtype=np.float64))

    def traces(self) -> dict:
        """``{name: Trace}`` for every recorded layer."""
        return {n: self.trace(n) for n in self._logs}


# --------------------------------------------------------------------------- evaluation mode
@contextlib.contextmanager
def snapshot(model, parameters: bool = True):
    """A block after which ``model``'s parameters and buffers (running statistics) hold the
    values they had before it, whatever happened inside, an exception included. Yields the
    model. Gradients are left as they are; ``parameters=False`` restores the buffers only.
    A buffer the block replaced by one of another shape, or made read-only, gets its old
    array back::

        with snapshot(model):
            model(Tensor(X))  # a training-mode pass: the running statistics change
        # here they hold their old values again
    """
    tensors = (list(model.parameters()) if parameters else []) + list(model.buffers())
    saved = [t.data.copy() for t in tensors]
    try:
        yield model
    finally:
        for t, value in zip(tensors, saved):
            if t.data.shape == value.shape and t.data.flags.writeable:
                np.copyto(t.data, value)
            else:
                t.data = value


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d)


class TrainModeInferenceWarning(UserWarning):
    """A model with mode-dependent layers (BatchNorm, Dropout, ...) in training mode is used
    for inference: call ``model.eval()`` first."""


def train_mode_layers(model) -> list:
    """Names (as in ``named_modules``; "" for the model itself) of the submodules that are in
    training mode and whose output depends on it: BatchNorm layers, InstanceNorm layers that
    track running statistics, and Dropout with p > 0."""
    out = []
    for name, m in model.named_modules():
        if not getattr(m, "training", False):
            continue
        if isinstance(m, _BATCH_NORMS) or (isinstance(m, _INSTANCE_NORMS)
                                           and m.track_running_stats) \
                or (isinstance(m, nn.Dropout) and m.p > 0):
            out.append(name or type(m).__name__)
    return out


def _message(model, layers: list, shape=None) -> str:
    kinds = sorted({type(m).__name__ for n, m in model.named_modules()
                    if (n or type(m).__name__) in layers})
    where = f" on a batch of shape {tuple(shape)}" if shape is not None else ""
    listed = ", ".join(repr(n) for n in layers[:4]) + (", ..." if len(layers) > 4 else "")
    why = []
    if any("Norm" in k for k in kinds):
        why.append("the norm layers normalize with this batch's statistics and overwrite their "
                   "running averages")
    if "Dropout" in kinds:
        why.append("Dropout drops units at random")
    return (f"{type(model).__name__} is used for inference{where} with {len(layers)} "
            f"layer(s) in training mode ({', '.join(kinds)}: {listed}): {'; '.join(why)}. "
            "Call model.eval() before inference (and model.train() to resume training).")


def check_eval_mode(model, *, stacklevel: int = 2) -> bool:
    """True when ``model`` is ready for inference; otherwise warn with a
    ``TrainModeInferenceWarning`` naming the layers still in training mode and return
    False. ``stacklevel`` as in ``warnings.warn`` (2: the caller's line)."""
    layers = train_mode_layers(model)
    if layers:
        warnings.warn(_message(model, layers), TrainModeInferenceWarning,
                      stacklevel=stacklevel)
        return False
    return True


def _first_shape(inputs):
    for a in inputs:
        if hasattr(a, "shape"):
            return a.shape
    return None


@contextlib.contextmanager
def inference_check(model):
    """A block of inference: each forward pass of ``model`` inside it warns
    (``TrainModeInferenceWarning``, naming the layers and the batch shape) while
    mode-dependent layers are in training mode. Yields the model.

    >>> with inference_check(model):          # doctest: +SKIP
    ...     logits = model(Tensor(X_test))    # warns unless model.eval() was called
    """
    def hook(module, inputs, output):
        layers = train_mode_layers(module)
        if layers:
            warnings.warn(_message(module, layers, _first_shape(inputs)),
                          TrainModeInferenceWarning, stacklevel=3)

    with model.register_forward_hook(hook):
        yield model


def watch_train_mode_inference(model):
    """Warn whenever ``model`` runs under ``no_grad()`` (inference: nothing is recorded) with
    mode-dependent layers in training mode. Returns the hook's handle: ``.remove()`` stops
    watching (it is also a context manager)."""
    def hook(module, inputs, output):
        if is_grad_enabled():
            return
        layers = train_mode_layers(module)
        if layers:
            warnings.warn(_message(module, layers, _first_shape(inputs)),
                          TrainModeInferenceWarning, stacklevel=3)

    return model.register_forward_hook(hook)


def train_mode_accuracy(model, X, y, batch_size: int, order=None,
                        keep_running_stats: bool = False) -> float:
    """Accuracy of ``model`` left in training mode (what forgetting ``eval()`` gives), fed
    ``X[order]`` in consecutive batches of ``batch_size`` under ``no_grad()``: a BatchNorm
    model then normalizes each batch with that batch's statistics. A last batch of one sample
    is dropped (BatchNorm cannot normalize it). Parameters and buffers are restored afterwards
    unless ``keep_running_stats``."""
    order = np.arange(len(y)) if order is None else np.asarray(order)
    right = total = 0
    with contextlib.ExitStack() as stack:
        if not keep_running_stats:
            stack.enter_context(snapshot(model))
        model.train()
        with no_grad():
            for i in range(0, len(order), batch_size):
                j = order[i:i + batch_size]
                if len(j) < 2:
                    break
                right += int((model(Tensor(X[j])).data.argmax(1) == y[j]).sum())
                total += len(j)
    return right / total if total else math.nan
