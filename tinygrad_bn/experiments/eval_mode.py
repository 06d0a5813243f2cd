"""Forgetting ``eval()``: what train-mode inference costs, and a check that catches it.

The tutorial (Part 2, "Training vs Inference") says inference uses the running averages.
That only happens when the model is switched to eval mode; in training mode a BatchNorm
layer normalizes every batch with that batch's own statistics (so a prediction depends on
which other samples share its batch, and a batch of one fails), updates its running averages
as a side effect, and Dropout keeps dropping units. We train an MLP with BatchNorm and one
with Dropout, then compare eval-mode accuracy with train-mode "inference" on test batches of
several sizes, shuffled or sorted by class, and measure how a train-mode pass over the test
set corrupts the running statistics that a later ``eval()`` relies on.

The helpers:

- ``check_eval_mode(model)`` warns (``TrainModeInferenceWarning``) and returns False when
  layers whose output depends on the mode (BatchNorm, InstanceNorm with running statistics,
  Dropout with p > 0) are in training mode;
- ``inference_check(model)``, a context manager: inside it, each forward pass of ``model``
  with such layers in training mode warns;
- ``watch_train_mode_inference(model)`` keeps a hook on ``model`` that warns whenever it runs
  under ``no_grad()`` (nothing recorded: inference) with such layers in training mode; its
  handle's ``remove()`` takes it off.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from .. import nn
from ..core.node import is_grad_enabled, no_grad
from ..core.tensor import Tensor
from ._helpers import progress_bar, save, study_context
from .ics import batch_stream


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


# -- the study ---------------------------------------------------------------------------
LABELS = ("BatchNorm", "Dropout")
COLORS = {"BatchNorm": "#d62728", "Dropout": "#1f77b4"}

QUICK = dict(dataset="digits", hidden=(64, 64), epochs=10, batch_size=32, lr=0.05,
             momentum=0.9, dropout=0.3, inference_batches=(2, 8, 32, 128, 449), repeats=3,
             pollute_batches=(2, 8, 32))
FULL = dict(QUICK, epochs=30, repeats=10)


def make_model(kind: str, n_in: int, hidden, n_out: int, *, dropout: float = 0.3, rng=0):
    """``Linear → BatchNorm1d → ReLU`` (kind "BatchNorm") or ``Linear → ReLU → Dropout``
    (kind "Dropout") per hidden width, then a Linear head."""
    if kind not in LABELS:
        raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(LABELS)}")
    rng = np.random.default_rng(rng)
    layers, prev = [], n_in
    for h in hidden:
        layers.append(nn.Linear(prev, h, rng=rng))
        if kind == "BatchNorm":
            layers += [nn.BatchNorm1d(h, analytic=True), nn.ReLU()]
        else:
            layers += [nn.ReLU(), nn.Dropout(dropout, rng=rng.integers(2**63))]
        prev = h
    layers.append(nn.Linear(prev, n_out, rng=rng))
    return nn.Sequential(*layers)


def train_mode_accuracy(model, X, y, batch_size: int, order=None,
                        keep_running_stats: bool = False) -> float:
    """Accuracy of ``model`` left in training mode, fed ``X[order]`` in consecutive batches of
    ``batch_size`` under ``no_grad()`` (a last batch of one sample is dropped: BatchNorm
    cannot normalize it). Buffers are restored afterwards unless ``keep_running_stats``."""
    order = np.arange(len(y)) if order is None else np.asarray(order)
    bufs = [b.data.copy() for b in model.buffers()]
    model.train()
    right = total = 0
    try:
        with no_grad():
            for i in range(0, len(order), batch_size):
                j = order[i:i + batch_size]
                if len(j) < 2:
                    break
                right += int((model(Tensor(X[j])).data.argmax(1) == y[j]).sum())
                total += len(j)
    finally:
        if not keep_running_stats:
            for b, v in zip(model.buffers(), bufs):
                b.data[...] = v
    return right / total if total else math.nan


@dataclass
class EvalModeResult:
    """Eval-mode against train-mode inference.

    ``eval_acc[label]``: test accuracy after ``model.eval()``. ``shuffled_acc[label]`` /
    ``shuffled_std[label]``: train-mode accuracy (mean, std over ``repeats`` random test
    orders) per size in ``batch_sizes``; ``sorted_acc[label]``: train-mode accuracy on test
    batches sorted by class. For the BatchNorm model, ``eval_acc_after[how]``: eval-mode
    accuracy after one train-mode pass over the test set (batches of each size in
    ``pollute_batches``, "shuffled" or "sorted" by class) that was allowed to update the
    running statistics; ``running_mean_change[how]`` / ``running_var_change[how]``: how far
    that pass moved them (relative ℓ2 change, mean over layers).
    ``batch_of_one``: the error a train-mode BatchNorm raises on one sample. ``warnings``:
    what the helpers said before and after ``eval()``.
    """

    settings: dict
    seed: int
    batch_sizes: list
    eval_acc: dict = field(default_factory=dict)
    train_acc: dict = field(default_factory=dict)
    shuffled_acc: dict = field(default_factory=dict)
    shuffled_std: dict = field(default_factory=dict)
    sorted_acc: dict = field(default_factory=dict)
    pollute_batches: list = field(default_factory=list)
    eval_acc_after: dict = field(default_factory=dict)
    running_mean_change: dict = field(default_factory=dict)
    running_var_change: dict = field(default_factory=dict)
    batch_of_one: str = ""
    warnings: dict = field(default_factory=dict)

    def gap(self, label: str, batch_size: int, how: str = "shuffled") -> float:
        """Eval-mode accuracy minus train-mode accuracy at ``batch_size``."""
        accs = self.shuffled_acc if how == "shuffled" else self.sorted_acc
        return float(self.eval_acc[label] - accs[label][self.batch_sizes.index(batch_size)])


def _helper_demo(model, X) -> dict:
    """What the helpers report on ``model`` in training mode and after ``eval()``."""
    out = {}
    for state in ("training mode", "after eval()"):
        if state == "after eval()":
            model.eval()
        else:
            model.train()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_eval_mode(model)
            with inference_check(model), no_grad():
                model(Tensor(X))
            with watch_train_mode_inference(model), no_grad():
                model(Tensor(X))
        out[state] = [str(w.message) for w in caught
                      if issubclass(w.category, TrainModeInferenceWarning)]
    model.eval()
    return out


def run(quick: bool = False, seed: int = 0, progress: bool = True) -> EvalModeResult:
    """Train both models, then measure inference in eval mode and in training mode."""
    from ..training import data, optim
    from ..nn.losses import cross_entropy
    from ..training.train import accuracy

    s = dict(QUICK if quick else FULL)
    ds = data.load(s["dataset"], seed=seed)
    Xt, yt = ds.X_test, ds.y_test
    bss = [min(b, len(yt)) for b in s["inference_batches"]]
    res = EvalModeResult(settings=s, seed=seed, batch_sizes=bss,
                         pollute_batches=list(s["pollute_batches"]))
    n = len(ds.y_train)
    steps = s["epochs"] * (n // s["batch_size"])
    sorted_order = np.argsort(yt, kind="stable")
    with study_context():
        bar = progress_bar(len(LABELS) * steps, "eval_mode", progress)
        try:
            for label in LABELS:
                model = make_model(label, ds.n_features, s["hidden"], ds.n_classes,
                                   dropout=s["dropout"], rng=seed)
                opt = optim.SGD(model.parameters(), lr=s["lr"], momentum=s["momentum"])
                stream = batch_stream(n, s["batch_size"], np.random.default_rng(seed + 1))
                model.train()
                for _ in range(steps):
                    idx = next(stream)
                    opt.zero_grad()
                    loss = cross_entropy(model(Tensor(ds.X_train[idx])), ds.y_train[idx])
                    loss.backward()
                    opt.step()
                    if bar is not None:
                        bar.update(1)
                res.eval_acc[label] = accuracy(model, Xt, yt)
                res.train_acc[label] = accuracy(model, ds.X_train, ds.y_train)
                rng = np.random.default_rng(seed + 2)
                means, stds, sorted_acc = [], [], []
                for b in bss:
                    accs = [train_mode_accuracy(model, Xt, yt, b, rng.permutation(len(yt)))
                            for _ in range(s["repeats"])]
                    means.append(float(np.mean(accs)))
                    stds.append(float(np.std(accs)))
                    sorted_acc.append(train_mode_accuracy(model, Xt, yt, b, sorted_order))
                res.shuffled_acc[label] = means
                res.shuffled_std[label] = stds
                res.sorted_acc[label] = sorted_acc
                res.warnings[label] = _helper_demo(model, Xt[:8])
                bns = [m for m in model.modules() if isinstance(m, _BATCH_NORMS)]
                if bns:
                    for how in ("shuffled", "sorted"):
                        accs, dmean, dvar = [], [], []
                        for b in s["pollute_batches"]:
                            order = rng.permutation(len(yt)) if how == "shuffled" \
                                else sorted_order
                            saved = [v.data.copy() for v in model.buffers()]
                            r0 = [(m.running_mean.data.copy(), m.running_var.data.copy())
                                  for m in bns]
                            train_mode_accuracy(model, Xt, yt, b, order,
                                                keep_running_stats=True)
                            dmean.append(float(np.mean([
                                np.linalg.norm(m.running_mean.data - a) / np.linalg.norm(a)
                                for m, (a, _) in zip(bns, r0)])))
                            dvar.append(float(np.mean([
                                np.linalg.norm(m.running_var.data - v) / np.linalg.norm(v)
                                for m, (_, v) in zip(bns, r0)])))
                            accs.append(accuracy(model, Xt, yt))
                            for v, val in zip(model.buffers(), saved):
                                v.data[...] = val
                        res.eval_acc_after[how] = accs
                        res.running_mean_change[how] = dmean
                        res.running_var_change[how] = dvar
                if label == "BatchNorm":
                    model.train()
                    try:
                        with no_grad():
                            model(Tensor(Xt[:1]))
                    except ValueError as e:
                        res.batch_of_one = str(e)
                    model.eval()
        finally:
            if bar is not None:
                bar.close()
    return res


def plot(result: EvalModeResult, path: str | None = None):
    """Accuracy against the inference batch size in training mode (shuffled and class-sorted
    batches) next to the eval-mode accuracy; eval-mode accuracy after a train-mode pass."""
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [1.5, 1]})
    bs = np.asarray(result.batch_sizes)
    for label in result.eval_acc:
        c = COLORS.get(label)
        m, sd = np.asarray(result.shuffled_acc[label]), np.asarray(result.shuffled_std[label])
        a1.axhline(result.eval_acc[label], color=c, lw=1, ls=":",
                   label=f"{label}: eval mode ({result.eval_acc[label]:.1%})")
        a1.plot(bs, m, color=c, marker="o", label=f"{label}: training mode, shuffled batches")
        a1.fill_between(bs, m - sd, m + sd, color=c, alpha=0.2)
        a1.plot(bs, result.sorted_acc[label], color=c, marker="s", ls="--",
                label=f"{label}: training mode, class-sorted batches")
    a1.set_xscale("log", base=2)
    a1.set_xticks(bs, [str(b) for b in bs])
    a1.set(xlabel="inference batch size", ylabel="test accuracy", ylim=(0, 1.02),
           title="inference without model.eval(): accuracy against the batch size")
    a1.grid(alpha=0.3)
    a1.legend(fontsize=8, loc="lower right")
    pb = np.asarray(result.pollute_batches)
    if "BatchNorm" in result.eval_acc and result.eval_acc_after:
        a2.axhline(result.eval_acc["BatchNorm"], color="#555555", ls=":",
                   label=f"eval mode, running statistics from training "
                   f"({result.eval_acc['BatchNorm']:.1%})")
        for how, c, mk in (("shuffled", "#8c9fd6", "o"), ("sorted", "#e3a33b", "s")):
            a2.plot(pb, result.eval_acc_after[how], color=c, marker=mk,
                    label=f"eval mode after a train-mode pass over the test set\n"
                    f"({'shuffled' if how == 'shuffled' else 'class-sorted'} batches)")
        a2.set_xscale("log", base=2)
        a2.set_xticks(pb, [str(b) for b in pb])
    a2.set(ylim=(0, 1.02), xlabel="batch size of the train-mode pass",
           ylabel="BatchNorm model: test accuracy in eval mode",
           title="side effect: the pass overwrote the running statistics\n(BatchNorm model; "
           "Dropout keeps no state)")
    a2.legend(fontsize=8, loc="lower right")
    a2.grid(alpha=0.3)
    s = result.settings
    fig.suptitle(f"Forgetting eval(): {s['dataset']}, hidden {list(s['hidden'])}, "
                 f"Dropout p={s['dropout']}, {s['epochs']} epochs, seed {result.seed}")
    fig.tight_layout()
    return save(fig, path)


def summary(result: EvalModeResult) -> str:
    """The accuracy gaps and a verdict."""
    bs = result.batch_sizes
    lines = ["Forgetting eval(): test accuracy in eval mode vs training mode", ""]
    lines.append(f"{'':<34}" + "".join(f"{'B=' + str(b):>8}" for b in bs))
    for label in result.eval_acc:
        lines.append(f"{label + ': eval mode':<34}" + f"{result.eval_acc[label]:>8.1%}" * len(bs))
        lines.append(f"{label + ': train mode, shuffled':<34}"
                     + "".join(f"{a:>8.1%}" for a in result.shuffled_acc[label]))
        lines.append(f"{label + ': train mode, class-sorted':<34}"
                     + "".join(f"{a:>8.1%}" for a in result.sorted_acc[label]))
    lines.append("")
    bn, do = "BatchNorm", "Dropout"
    if bn in result.eval_acc:
        small, big = bs[0], bs[-1]
        lines.append(
            f"BatchNorm: forgetting eval() costs {100 * result.gap(bn, small):.1f} points on "
            f"shuffled batches of {small}, {100 * result.gap(bn, big):+.1f} on one batch of "
            f"{big} (eval minus train mode), and up to {100 * max(result.gap(bn, b, 'sorted') for b in bs):.1f} on "
            f"class-sorted batches; a single sample fails outright ({result.batch_of_one!r}).")
        if result.eval_acc_after:
            k = int(np.argmin(result.eval_acc_after["sorted"]))
            lines.append(
                f"Side effect: one train-mode pass over the test set in class-sorted batches "
                f"of {result.pollute_batches[k]} moved the running means by "
                f"{result.running_mean_change['sorted'][k]:.0%} and the running variances by "
                f"{result.running_var_change['sorted'][k]:.0%}; eval-mode accuracy afterwards: "
                f"{result.eval_acc_after['sorted'][k]:.1%} (was {result.eval_acc[bn]:.1%}; "
                f"after shuffled batches of the same size "
                f"{result.eval_acc_after['shuffled'][k]:.1%}).")
    if do in result.eval_acc:
        lines.append(f"Dropout: train-mode inference costs "
                     f"{100 * np.mean([result.gap(do, b) for b in bs]):.1f} points on average "
                     f"(and varies from run to run: std up to "
                     f"{100 * max(result.shuffled_std[do]):.1f} points); batch composition does "
                     f"not matter.")
    nwarn = {lb: {k: len(v) for k, v in w.items()} for lb, w in result.warnings.items()}
    lines.append("Warning helpers: " + "; ".join(
        f"{lb}: {d['training mode']} warning(s) in training mode, {d['after eval()']} after "
        "eval()" for lb, d in nwarn.items()))
    lines.append("")
    lines.append("Verdict: the tutorial's rule (running averages at inference) is right, and "
                 "it only holds after model.eval(): in training mode the predictions depend "
                 "on the batch they come in, and the running statistics are overwritten.")
    return "\n".join(lines)
