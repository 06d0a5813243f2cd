"""Learning rate (tutorial Part 7): does BatchNorm allow ~10x larger learning rates?

The same MLP (``Linear → [BatchNorm1d] → ReLU`` × 3, then a linear head) is trained on the
8×8 digits with plain SGD (no momentum) for a fixed number of epochs at each learning rate of
a log grid from 1e-3 to 3, with and without BatchNorm, over several seeds (the seed sets the
weight init and the minibatch order; the train/test split is fixed). We record the final test
accuracy, the mean training loss of the last epoch and whether the loss became NaN/inf.

A setting *trains* when no seed diverged and its mean test accuracy gets at least halfway
from chance (the most frequent test class) to the best mean accuracy of the whole sweep.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..training import data, optim
from ..training.models import mlp
from ..training.train import accuracy, fit
from ._helpers import SweepMixin, progress_bar, save, study_context

LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0)
LRS_FULL = LRS + (10.0, 30.0)  # past 3, to find where BN stops training too
NORMS = ("none", "batch")
LABELS = {"none": "without BN", "batch": "with BN"}
COLORS = {"none": "#d62728", "batch": "#1f77b4"}
_ACT = {"relu": "ReLU", "tanh": "tanh", "sigmoid": "sigmoid"}


@dataclass
class LRSweepResult(SweepMixin):
    """Final metrics per (norm, learning rate, seed); arrays are (len(lrs), len(seeds))."""

    dataset: str
    hidden: list
    activation: str
    epochs: int
    steps: int  # SGD steps per run
    batch_size: int
    lrs: list
    seeds: list
    norms: list
    test_acc: dict = field(default_factory=dict)    # norm -> (lrs, seeds)
    final_loss: dict = field(default_factory=dict)  # mean loss of the last epoch; inf if diverged
    diverged: dict = field(default_factory=dict)    # norm -> (lrs, seeds) bool
    chance: float = 0.0  # accuracy of always predicting the most frequent test class
    threshold: float = 0.0  # halfway from chance to the best mean accuracy: "trains"
    seconds: float = 0.0

    def largest_lr(self, norm: str) -> float:
        """The largest learning rate that trains (NaN if none does)."""
        ok = np.flatnonzero(self.trains(norm))
        return float(self.lrs[ok[-1]]) if len(ok) else math.nan

    def smallest_lr(self, norm: str) -> float:
        """The smallest learning rate that trains (NaN if none does)."""
        ok = np.flatnonzero(self.trains(norm))
        return float(self.lrs[ok[0]]) if len(ok) else math.nan

    def best_lr(self, norm: str) -> float:
        """The learning rate with the highest mean test accuracy."""
        return float(self.lrs[int(np.nanargmax(self.mean_acc(norm)))])


def run(quick: bool = False, seed: int = 0, progress: bool = True, *, lrs=None,
        epochs: int | None = None, n_seeds: int | None = None) -> LRSweepResult:
    """Train with and without BN at every learning rate in ``lrs`` for ``n_seeds`` seeds.

    Quick: ``LRS`` (1e-3 … 3), 8 epochs (168 steps), 3 seeds; full: ``LRS_FULL`` (1e-3 …
    30), 30 epochs (630 steps), 5 seeds.
    """
    lrs = tuple(lrs) if lrs is not None else (LRS if quick else LRS_FULL)
    epochs = epochs or (8 if quick else 30)
    n_seeds = n_seeds or (3 if quick else 5)
    hidden, batch_size = [64, 64, 64], 64
    ds = data.load("digits", seed=0)
    seeds = [seed + i for i in range(n_seeds)]
    res = LRSweepResult(dataset="digits", hidden=hidden, activation="relu", epochs=epochs,
                        steps=epochs * (len(ds.y_train) // batch_size), batch_size=batch_size,
                        lrs=[float(v) for v in lrs], seeds=seeds, norms=list(NORMS))
    t0 = time.perf_counter()
    bar = progress_bar(len(NORMS) * len(lrs) * n_seeds, "learning-rate sweep", progress)
    with study_context():
        for norm in NORMS:
            acc = np.zeros((len(lrs), n_seeds))
            loss = np.zeros((len(lrs), n_seeds))
            div = np.zeros((len(lrs), n_seeds), dtype=bool)
            for i, lr in enumerate(lrs):
                for j, s in enumerate(seeds):
                    model = mlp(ds.n_features, hidden, ds.n_classes, norm=norm,
                                activation="relu", rng=s)
                    opt = optim.SGD(model.parameters(), lr=lr)
                    hist = fit(model, ds, opt, epochs=epochs, batch_size=batch_size, seed=s,
                               progress=False)
                    div[i, j] = hist.diverged_at is not None
                    last = np.asarray(hist.step_loss[-(len(ds.y_train) // batch_size):])
                    loss[i, j] = math.inf if div[i, j] else float(last.mean())
                    # the model we end up with (a diverged one predicts class 0 everywhere)
                    acc[i, j] = accuracy(model, ds.X_test, ds.y_test)
                    if bar is not None:
                        bar.update(1)
            res.test_acc[norm], res.final_loss[norm], res.diverged[norm] = acc, loss, div
    if bar is not None:
        bar.close()
    best = max(np.nanmax(res.mean_acc(n)) for n in NORMS)
    chance = np.bincount(ds.y_test).max() / len(ds.y_test)
    res.chance = float(chance)
    res.threshold = float(chance + 0.5 * (best - chance))
    res.seconds = time.perf_counter() - t0
    return res


def plot(result: LRSweepResult, path=None):
    """Two panels over the learning rate (log axis): final test accuracy (mean over seeds,
    seeds as dots) and the last epoch's training loss (diverged runs marked ×)."""
    import matplotlib.pyplot as plt

    lrs = np.asarray(result.lrs)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11.5, 4.3))
    for norm in result.norms:
        c = COLORS.get(norm, "k")
        acc = np.asarray(result.test_acc[norm], dtype=float)
        big = result.largest_lr(norm)
        label = LABELS.get(norm, norm) + (f" (trains up to lr {big:g})" if np.isfinite(big)
                                          else " (no rate trains)")
        ax1.plot(lrs, acc.mean(1), "-o", color=c, lw=2, label=label)
        for j in range(acc.shape[1]):
            ax1.scatter(lrs, acc[:, j], color=c, s=10, alpha=0.35, zorder=3)
        if np.isfinite(big):
            ax1.axvline(big, color=c, ls=":", lw=1.2)
        loss = np.asarray(result.final_loss[norm], dtype=float)
        div = np.asarray(result.diverged[norm], dtype=bool)
        finite = np.where(div, np.nan, loss)
        with np.errstate(all="ignore"):
            med = np.nanmedian(np.where(np.isfinite(finite), finite, np.nan), axis=1)
        ax2.plot(lrs, med, "-o", color=c, lw=2)
        for j in range(loss.shape[1]):
            ax2.scatter(lrs, finite[:, j], color=c, s=10, alpha=0.35, zorder=3)
    ax1.axhline(result.threshold, color="0.5", lw=1, ls="--",
                label=f"'trains': mean accuracy ≥ {result.threshold:.2f}")
    ax1.set_xscale("log")
    ax1.set_ylim(0, 1.02)
    ax1.set_xlabel("learning rate (SGD)")
    ax1.set_ylabel("final test accuracy")
    ax1.set_title("Test accuracy after training")
    ax1.grid(alpha=0.3)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("learning rate (SGD)")
    ax2.set_ylabel("training loss, mean of the last epoch")
    ax2.set_title("Final training loss (median line; × = diverged)")
    ax2.grid(alpha=0.3, which="both")
    top = ax2.get_ylim()[1]
    for norm in result.norms:
        div = np.asarray(result.diverged[norm], dtype=bool)
        n_div = div.sum(axis=1)
        for lr, k in zip(lrs, n_div):
            if k:
                ax2.scatter([lr], [top], marker="x", color=COLORS.get(norm, "k"), s=50,
                            clip_on=False, zorder=4)
                ax2.annotate(f"{k} diverged", (lr, top), fontsize=7, ha="right",
                             va="bottom", xytext=(-4, 4), textcoords="offset points",
                             color=COLORS.get(norm, "k"))
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, frameon=False,
               bbox_to_anchor=(0.5, -0.01))
    fig.suptitle(f"Learning-rate sweep: {len(result.hidden)}×{result.hidden[0]} "
                 f"{_ACT.get(result.activation, result.activation)} MLP on {result.dataset}, "
                 "plain SGD, "
                 f"{result.steps} steps (batch {result.batch_size}), "
                 f"{len(result.seeds)} seeds (dots: single seeds)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return save(fig, path)


def summary(result: LRSweepResult) -> str:
    """A table of mean test accuracy per learning rate and the verdict on 'BN allows ~10x
    larger learning rates'."""
    lines = [f"Learning-rate sweep: {len(result.hidden)}×{result.hidden[0]} "
             f"{_ACT.get(result.activation, result.activation)} "
             f"MLP on {result.dataset}, SGD, {result.steps} steps, seeds {result.seeds} "
             f"({result.seconds:.1f} s)", "",
             "mean test accuracy (diverged seeds in brackets)",
             "lr        " + "".join(f"{LABELS[n]:>14}" for n in result.norms)]
    for i, lr in enumerate(result.lrs):
        row = f"{lr:<10g}"
        for n in result.norms:
            k = int(np.asarray(result.diverged[n])[i].sum())
            cell = f"{result.mean_acc(n)[i]:.3f}" + (f" [{k}]" if k else "")
            row += f"{cell:>14}"
        lines.append(row)
    lines.append("")
    lines.append(f"'trains' = no divergence and mean accuracy >= {result.threshold:.3f} "
                 f"(halfway from chance, {result.chance:.3f}, to the best)")
    for n in result.norms:
        lines.append(f"{LABELS[n]:>11}: trains for lr in [{result.smallest_lr(n):g}, "
                     f"{result.largest_lr(n):g}], best lr {result.best_lr(n):g} "
                     f"(accuracy {np.nanmax(result.mean_acc(n)):.3f})")
    lines.append("")
    lines.append("Verdict: " + verdict(result))
    return "\n".join(lines)


def verdict(result: LRSweepResult) -> str:
    """One paragraph on the claim, computed from the data."""
    big_n, big_b = result.largest_lr("none"), result.largest_lr("batch")
    top = max(result.lrs)
    if not np.isfinite(big_b):
        return "with BN no learning rate trained in this budget; the claim cannot be judged."
    if not np.isfinite(big_n):
        return (f"without BN no learning rate on the grid trained in {result.steps} steps, "
                f"with BN rates up to {big_b:g} did: BN is far more forgiving here.")
    ratio = big_b / big_n
    capped = " (the top of the grid, so at least that)" if big_b >= top else ""
    i_b = result.lrs.index(big_b)
    acc_n_at_b = result.mean_acc("none")[i_b]
    text = (f"the largest learning rate that trains is {big_n:g} without BN and {big_b:g} "
            f"with BN{capped}: a ratio of {ratio:g}x. At lr={big_b:g} the model without BN "
            f"reaches {acc_n_at_b:.3f} test accuracy against "
            f"{result.mean_acc('batch')[i_b]:.3f} with BN. ")
    text += ("(The grid has half-decade steps, so a ratio is known only to within a factor "
             "of about 3.) ")
    if ratio >= 10:
        text += "The claim that BN allows ~10x larger learning rates holds here. "
    elif ratio > 1:
        text += f"BN allows larger rates, but by {ratio:g}x rather than ~10x. "
    else:
        text += "BN does not allow larger rates in this setting: the claim does not hold. "
    lo_n, lo_b = result.smallest_lr("none"), result.smallest_lr("batch")
    text += (f"BN also widens the range at the low end (smallest rate that trains: {lo_b:g} "
             f"with BN, {lo_n:g} without), so the usable window is "
             f"{big_b / lo_b:g}x wide with BN against {big_n / lo_n:g}x without. ")
    best_n = result.best_lr("none")
    text += (f"The tutorial's specific numbers (no BN: lr ~0.01) do not carry over: without "
             f"BN the best rate here is {best_n:g}, and lr=0.01 reaches only "
             f"{result.mean_acc('none')[_index(result.lrs, 0.01)]:.3f} in {result.steps} "
             "steps." if best_n != 0.01 and 0.01 in result.lrs else "")
    return text.strip()


def _index(values, v) -> int:
    return int(np.argmin(np.abs(np.log(np.asarray(values)) - math.log(v))))
