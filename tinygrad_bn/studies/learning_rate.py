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
from dataclasses import dataclass

import numpy as np

from ..training import data, optim
from ..training.models import mlp
from ..training.train import fit
from . import framework as fw

CLAIM = "BatchNorm allows ~10x larger learning rates"
QUICK = dict(lrs=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0), epochs=8, n_seeds=3,
             hidden=(64, 64, 64), batch_size=64)
FULL = dict(lrs=QUICK["lrs"] + (10.0, 30.0),  # past 3, to find where BN stops training too
            epochs=30, n_seeds=5)
ARMS = ("none", "batch")  # the norm
LABELS = {"none": "without BN", "batch": "with BN"}
COLORS = {"none": "#d62728", "batch": "#1f77b4"}


@dataclass(kw_only=True)
class LRSweepResult(fw.TrainsResult):
    """Per norm: ``test_acc``, ``final_loss`` (mean loss of the last epoch; inf if the run
    diverged) and ``diverged``, arrays (len(lrs), len(seeds))."""

    lrs: list
    seeds: list
    norms: list
    steps: int  # SGD steps per run
    final_loss: dict

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


def measure(cfg: dict, ds, norm: str, lr: float, seed: int) -> dict:
    """One run: train with plain SGD at ``lr``; the final test accuracy and loss."""
    model = mlp(ds.n_features, cfg["hidden"], ds.n_classes, norm=norm, activation="relu",
                rng=seed)
    hist = fit(model, ds, optim.SGD(model.parameters(), lr=lr), epochs=cfg["epochs"],
               batch_size=cfg["batch_size"], seed=seed, progress=False)
    diverged = hist.diverged_at is not None
    last_epoch = hist.step_loss[-(len(ds.y_train) // cfg["batch_size"]):]
    # a diverged run is restored by fit to its last finite state: that model is scored
    return {"test_acc": hist.final_test_acc, "diverged": diverged,
            "final_loss": math.inf if diverged else float(np.mean(last_epoch))}


def experiment(cfg: dict, seed: int, progress: bool) -> LRSweepResult:
    ds = data.load("digits", seed=0)
    seeds = [seed + k for k in range(cfg["n_seeds"])]
    runs = fw.sweep(ARMS, lambda norm, lr, s: measure(cfg, ds, norm, lr, s),
                    settings=cfg["lrs"], seeds=seeds, progress=progress,
                    desc="learning-rate sweep")
    res = LRSweepResult(config=cfg, seed=seed, lrs=[float(v) for v in cfg["lrs"]],
                        seeds=seeds, norms=list(ARMS),
                        steps=cfg["epochs"] * (len(ds.y_train) // cfg["batch_size"]), **runs)
    res.set_threshold(ds.y_test)
    return res


def _model(result) -> str:
    h = result.config["hidden"]
    return f"{len(h)}×{h[0]} ReLU MLP on digits"


def table(result: LRSweepResult) -> str:
    """Mean test accuracy per learning rate, and the range of rates that train."""
    lines = [f"Learning-rate sweep: {_model(result)}, SGD, {result.steps} steps, seeds "
             f"{result.seeds} ({result.seconds:.1f} s)", "",
             "mean test accuracy (diverged seeds in brackets)",
             "lr        " + "".join(f"{LABELS[n]:>14}" for n in result.norms)]
    for i, lr in enumerate(result.lrs):
        lines.append(f"{lr:<10g}" + "".join(f"{result.cell(n, i):>14}" for n in result.norms))
    lines.append("")
    lines.append(f"'trains' = no divergence and mean accuracy >= {result.threshold:.3f} "
                 f"(halfway from chance, {result.chance:.3f}, to the best)")
    for n in result.norms:
        lines.append(f"{LABELS[n]:>11}: trains for lr in [{result.smallest_lr(n):g}, "
                     f"{result.largest_lr(n):g}], best lr {result.best_lr(n):g} "
                     f"(accuracy {np.nanmax(result.mean_acc(n)):.3f})")
    return "\n".join(lines)


def verdict(result: LRSweepResult) -> fw.Verdict:
    """Supported when the largest rate that trains is at least 10x larger with BN."""
    big_n, big_b = result.largest_lr("none"), result.largest_lr("batch")
    if not np.isfinite(big_b):
        return fw.Verdict(None, "With BN no learning rate trained in this budget; the claim "
                                "cannot be judged.")
    if not np.isfinite(big_n):
        return fw.Verdict(True, f"Without BN no learning rate on the grid trained in "
                                f"{result.steps} steps, with BN rates up to {big_b:g} did: BN "
                                "is far more forgiving here.")
    ratio = big_b / big_n
    capped = " (the top of the grid, so at least that)" if big_b >= max(result.lrs) else ""
    i_b = result.lrs.index(big_b)
    text = (f"The largest learning rate that trains is {big_n:g} without BN and {big_b:g} "
            f"with BN{capped}: a ratio of {ratio:g}x. At lr={big_b:g} the model without BN "
            f"reaches {result.mean_acc('none')[i_b]:.3f} test accuracy against "
            f"{result.mean_acc('batch')[i_b]:.3f} with BN. (The grid has half-decade steps, "
            "so a ratio is known only to within a factor of about 3.) ")
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
    if best_n != 0.01 and 0.01 in result.lrs:
        text += (f"The tutorial's specific numbers (no BN: lr ~0.01) do not carry over: "
                 f"without BN the best rate here is {best_n:g}, and lr=0.01 reaches only "
                 f"{result.mean_acc('none')[result.lrs.index(0.01)]:.3f} in "
                 f"{result.steps} steps.")
    return fw.Verdict(ratio >= 10, text.strip())


def plot(result: LRSweepResult, path=None):
    """Two panels over the learning rate (log axis): final test accuracy (mean over seeds,
    seeds as dots) and the last epoch's training loss (diverged runs marked ×)."""
    import matplotlib.pyplot as plt

    lrs = np.asarray(result.lrs)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11.5, 4.3))
    for norm in result.norms:
        c = COLORS[norm]
        acc = np.asarray(result.test_acc[norm], dtype=float)
        big = result.largest_lr(norm)
        label = LABELS[norm] + (f" (trains up to lr {big:g})" if np.isfinite(big)
                                else " (no rate trains)")
        ax1.plot(lrs, acc.mean(1), "-o", color=c, lw=2, label=label)
        ax1.scatter(np.repeat(lrs, acc.shape[1]), acc, color=c, s=10, alpha=0.35, zorder=3)
        if np.isfinite(big):
            ax1.axvline(big, color=c, ls=":", lw=1.2)
        loss = np.asarray(result.final_loss[norm], dtype=float)
        finite = np.where(np.isfinite(loss), loss, np.nan)
        with np.errstate(all="ignore"):
            med = np.nanmedian(finite, axis=1)
        ax2.plot(lrs, med, "-o", color=c, lw=2)
        ax2.scatter(np.repeat(lrs, loss.shape[1]), finite, color=c, s=10, alpha=0.35, zorder=3)
    ax1.axhline(result.threshold, color="0.5", lw=1, ls="--",
                label=f"'trains': mean accuracy ≥ {result.threshold:.2f}")
    ax1.set(xscale="log", ylim=(0, 1.02), xlabel="learning rate (SGD)",
            ylabel="final test accuracy", title="Test accuracy after training")
    ax1.grid(alpha=0.3)
    ax2.set(xscale="log", yscale="log", xlabel="learning rate (SGD)",
            ylabel="training loss, mean of the last epoch",
            title="Final training loss (median line; × = diverged)")
    ax2.grid(alpha=0.3, which="both")
    top = ax2.get_ylim()[1]
    for norm in result.norms:
        for lr, k in zip(lrs, np.asarray(result.diverged[norm], dtype=bool).sum(axis=1)):
            if k:
                ax2.scatter([lr], [top], marker="x", color=COLORS[norm], s=50, clip_on=False,
                            zorder=4)
                ax2.annotate(f"{k} diverged", (lr, top), fontsize=7, ha="right",
                             va="bottom", xytext=(-4, 4), textcoords="offset points",
                             color=COLORS[norm])
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, frameon=False,
               bbox_to_anchor=(0.5, -0.01))
    fig.suptitle(f"Learning-rate sweep: {_model(result)}, plain SGD, {result.steps} steps "
                 f"(batch {result.config['batch_size']}), {len(result.seeds)} seeds (dots: "
                 "single seeds)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fw.save_figure(fig, path)


STUDY = fw.Study("learning_rate", CLAIM, QUICK, FULL, experiment, table, verdict, plot)
run, summary = STUDY.run, STUDY.summary
