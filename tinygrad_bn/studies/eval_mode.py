"""Forgetting ``eval()``: what train-mode inference costs.

The tutorial (Part 2, "Training vs Inference") says inference uses the running averages.
That only happens when the model is switched to eval mode; in training mode a BatchNorm
layer normalizes every batch with that batch's own statistics (so a prediction depends on
which other samples share its batch, and a batch of one fails), updates its running averages
as a side effect, and Dropout keeps dropping units. We train an MLP with BatchNorm and one
with Dropout, then compare eval-mode accuracy with train-mode "inference" on test batches of
several sizes, shuffled or sorted by class, and measure how a train-mode pass over the test
set corrupts the running statistics that a later ``eval()`` relies on.

The checks that catch the mistake (``check_eval_mode``, ``inference_check``,
``watch_train_mode_inference``) and ``train_mode_accuracy`` are in ``tinygrad_bn.diagnostics``;
the study shows what they report.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from .. import nn
from ..core.node import no_grad
from ..core.tensor import Tensor
from ..diagnostics import (TrainModeInferenceWarning, check_eval_mode, inference_check,
                           train_mode_accuracy, watch_train_mode_inference)
from ..diagnostics import train_mode_layers  # noqa: F401  (its old home was this module)
from ..training import data, optim
from ..training.models import mlp_of
from ..training.train import accuracy, fit
from . import framework as fw
from .framework import snapshot

CLAIM = "At inference BatchNorm uses the running averages, not the batch's statistics"
QUICK = dict(dataset="digits", hidden=(64, 64), epochs=10, batch_size=32, lr=0.05,
             momentum=0.9, dropout=0.3, inference_batches=(2, 8, 32, 128, 449), repeats=3,
             pollute_batches=(2, 8, 32))
FULL = dict(epochs=30, repeats=10)
LABELS = ("BatchNorm", "Dropout")  # the arms
COLORS = {"BatchNorm": "#d62728", "Dropout": "#1f77b4"}


def make_model(kind: str, n_in: int, hidden, n_out: int, *, dropout: float = 0.3, rng=0):
    """``Linear → BatchNorm1d → ReLU`` (kind "BatchNorm") or ``Linear → ReLU → Dropout``
    (kind "Dropout") per hidden width, then a Linear head."""
    if kind not in LABELS:
        raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(LABELS)}")

    def block(width, rng):
        if kind == "BatchNorm":
            return [nn.BatchNorm1d(width, analytic=True), nn.ReLU()]
        return [nn.ReLU(), nn.Dropout(dropout, rng=rng.integers(2**63))]

    return mlp_of(block, n_in, hidden, n_out, rng=rng)


@dataclass(kw_only=True)
class EvalModeResult(fw.Result):
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
    what the checks said before and after ``eval()``.
    """

    batch_sizes: list
    pollute_batches: list
    eval_acc: dict
    train_acc: dict
    shuffled_acc: dict
    shuffled_std: dict
    sorted_acc: dict
    warnings: dict
    eval_acc_after: dict
    running_mean_change: dict
    running_var_change: dict
    batch_of_one: str

    def gap(self, label: str, batch_size: int, how: str = "shuffled") -> float:
        """Eval-mode accuracy minus train-mode accuracy at ``batch_size``."""
        accs = self.shuffled_acc if how == "shuffled" else self.sorted_acc
        return float(self.eval_acc[label] - accs[label][self.batch_sizes.index(batch_size)])


def _checks_demo(model, X) -> dict:
    """What the checks report on ``model`` in training mode and after ``eval()``."""
    out = {}
    for state in ("training mode", "after eval()"):
        model.train(state == "training mode")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_eval_mode(model)
            with inference_check(model), no_grad():
                model(Tensor(X))
            with watch_train_mode_inference(model), no_grad():
                model(Tensor(X))
        out[state] = [str(w.message) for w in caught
                      if issubclass(w.category, TrainModeInferenceWarning)]
    return out


def _pollution(model, cfg, ds, rng, sorted_order) -> dict:
    """Eval-mode accuracy after one train-mode pass over the test set that updates the
    running statistics, and how far the pass moved them; the model is put back after each."""
    Xt, yt = ds.X_test, ds.y_test
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    out = {"eval_acc_after": {}, "running_mean_change": {}, "running_var_change": {}}

    def change(a, b):  # relative ℓ2 change, mean over layers
        return float(np.mean([np.linalg.norm(x - y) / np.linalg.norm(y) for x, y in zip(a, b)]))

    for how in ("shuffled", "sorted"):
        accs, dmean, dvar = [], [], []
        for b in cfg["pollute_batches"]:
            order = rng.permutation(len(yt)) if how == "shuffled" else sorted_order
            with snapshot(model):
                means = [m.running_mean.data.copy() for m in bns]
                variances = [m.running_var.data.copy() for m in bns]
                train_mode_accuracy(model, Xt, yt, b, order, keep_running_stats=True)
                dmean.append(change([m.running_mean.data for m in bns], means))
                dvar.append(change([m.running_var.data for m in bns], variances))
                accs.append(accuracy(model, Xt, yt))
        out["eval_acc_after"][how] = accs
        out["running_mean_change"][how] = dmean
        out["running_var_change"][how] = dvar
    return out


def measure(cfg: dict, ds, label: str, seed: int) -> dict:
    """One model: train it, then infer in eval mode and in training mode (shuffled and
    class-sorted test batches); for BatchNorm also the side effect and a batch of one."""
    Xt, yt = ds.X_test, ds.y_test
    model = make_model(label, ds.n_features, cfg["hidden"], ds.n_classes,
                       dropout=cfg["dropout"], rng=seed)
    opt = optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
    hist = fit(model, ds, opt, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
               seed=seed + 1, progress=False)
    out = {"eval_acc": hist.final_test_acc, "train_acc": hist.final_train_acc}
    rng = np.random.default_rng(seed + 2)
    sorted_order = np.argsort(yt, kind="stable")
    means, stds, sorted_acc = [], [], []
    for b in _batch_sizes(cfg, ds):
        accs = [train_mode_accuracy(model, Xt, yt, b, rng.permutation(len(yt)))
                for _ in range(cfg["repeats"])]
        means.append(float(np.mean(accs)))
        stds.append(float(np.std(accs)))
        sorted_acc.append(train_mode_accuracy(model, Xt, yt, b, sorted_order))
    out.update(shuffled_acc=means, shuffled_std=stds, sorted_acc=sorted_acc,
               warnings=_checks_demo(model, Xt[:8]))
    if label == "BatchNorm":
        out.update(_pollution(model, cfg, ds, rng, sorted_order))
        model.train()
        try:
            with no_grad():
                model(Tensor(Xt[:1]))
        except ValueError as e:
            out["batch_of_one"] = str(e)
        model.eval()
    return out


def _batch_sizes(cfg: dict, ds) -> list:
    return [min(b, len(ds.y_test)) for b in cfg["inference_batches"]]


def experiment(cfg: dict, seed: int, progress: bool) -> EvalModeResult:
    ds = data.load(cfg["dataset"], seed=seed)
    runs = fw.sweep(LABELS, lambda label, _, s: measure(cfg, ds, label, s), seeds=seed,
                    progress=progress, desc="eval_mode")
    bn_only = {k: runs.pop(k)["BatchNorm"] for k in ("eval_acc_after", "running_mean_change",
                                                     "running_var_change", "batch_of_one")}
    return EvalModeResult(config=cfg, seed=seed, batch_sizes=_batch_sizes(cfg, ds),
                          pollute_batches=list(cfg["pollute_batches"]), **runs, **bn_only)


def table(result: EvalModeResult) -> str:
    """The accuracies in eval and training mode; the gaps, the side effect, the checks."""
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
    small, big = bs[0], bs[-1]
    worst_sorted = max(result.gap(bn, b, "sorted") for b in bs)
    lines.append(
        f"BatchNorm: forgetting eval() costs {100 * result.gap(bn, small):.1f} points on "
        f"shuffled batches of {small}, {100 * result.gap(bn, big):+.1f} on one batch of "
        f"{big} (eval minus train mode), and up to {100 * worst_sorted:.1f} on class-sorted "
        f"batches; a single sample fails outright ({result.batch_of_one!r}).")
    k = int(np.argmin(result.eval_acc_after["sorted"]))
    lines.append(
        f"Side effect: one train-mode pass over the test set in class-sorted batches "
        f"of {result.pollute_batches[k]} moved the running means by "
        f"{result.running_mean_change['sorted'][k]:.0%} and the running variances by "
        f"{result.running_var_change['sorted'][k]:.0%}; eval-mode accuracy afterwards: "
        f"{result.eval_acc_after['sorted'][k]:.1%} (was {result.eval_acc[bn]:.1%}; "
        f"after shuffled batches of the same size "
        f"{result.eval_acc_after['shuffled'][k]:.1%}).")
    lines.append(f"Dropout: train-mode inference costs "
                 f"{100 * np.mean([result.gap(do, b) for b in bs]):.1f} points on average "
                 f"(and varies from run to run: std up to "
                 f"{100 * max(result.shuffled_std[do]):.1f} points); batch composition does "
                 f"not matter.")
    lines.append("Warning helpers: " + "; ".join(
        f"{label}: {len(w['training mode'])} warning(s) in training mode, "
        f"{len(w['after eval()'])} after eval()" for label, w in result.warnings.items()))
    return "\n".join(lines)


def verdict(result: EvalModeResult) -> fw.Verdict:
    """Supported when inference in training mode loses more than 5 points against eval mode
    on small or class-sorted batches: then the running averages are what inference needs."""
    bn = "BatchNorm"
    worst = max(max(result.gap(bn, b), result.gap(bn, b, "sorted")) for b in result.batch_sizes)
    if worst > 0.05:
        return fw.Verdict(True, "The tutorial's rule (running averages at inference) is right, "
                                "and it only holds after model.eval(): in training mode the "
                                "predictions depend on the batch they come in (up to "
                                f"{100 * worst:.0f} points lost here), and the running "
                                "statistics are overwritten.")
    return fw.Verdict(False, "Train-mode inference loses at most "
                             f"{100 * worst:.1f} points here: the running averages make "
                             "little difference for this model.")


def plot(result: EvalModeResult, path: str | None = None):
    """Accuracy against the inference batch size in training mode (shuffled and class-sorted
    batches) next to the eval-mode accuracy; eval-mode accuracy after a train-mode pass."""
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [1.5, 1]})
    bs = np.asarray(result.batch_sizes)
    for label in result.eval_acc:
        c = COLORS[label]
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
    c = result.config
    fig.suptitle(f"Forgetting eval(): {c['dataset']}, hidden {list(c['hidden'])}, "
                 f"Dropout p={c['dropout']}, {c['epochs']} epochs, seed {result.seed}")
    fig.tight_layout()
    return fw.save_figure(fig, path)


STUDY = fw.Study("eval_mode", CLAIM, QUICK, FULL, experiment, table, verdict, plot)
run, summary = STUDY.run, STUDY.summary
