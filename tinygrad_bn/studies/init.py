"""Initialization (tutorial Part 7): is BatchNorm less sensitive to the weight-init scale?

Every ``Linear`` weight of the MLP (``Linear → [BatchNorm1d] → ReLU`` × 3, then a linear
head) is drawn from N(0, s²) (biases zero) for s over four orders of magnitude, 1e-3 … 10;
each model is trained on the 8×8 digits with plain SGD at one fixed learning rate (0.1) for a
fixed number of epochs, with and without BatchNorm, over several seeds. For reference, He
init for these layers is s = √(2/64) ≈ 0.18 and torch's default is s ≈ 1/√(3·64) ≈ 0.07.

Recorded: the final test accuracy, the test accuracy after every epoch, the loss of the
first step, whether training diverged, and, at initialization, the standard deviation of the
input to each ReLU and of the logits (``diagnostics.capture`` on the training set).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import nn
from ..diagnostics import capture
from ..training import data, optim
from ..training.models import mlp
from ..training.train import fit
from . import framework as fw

CLAIM = "BatchNorm makes training far less sensitive to the scale of the weight init"
QUICK = dict(stds=(1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0), lr=0.1, epochs=8,
             n_seeds=2, hidden=(64, 64, 64), batch_size=64)
FULL = dict(epochs=30, n_seeds=5)
ARMS = ("none", "batch")  # the norm
LABELS = {"none": "without BN", "batch": "with BN"}
COLORS = {"none": "#d62728", "batch": "#1f77b4"}
HE_STD = math.sqrt(2 / 64)


@dataclass(kw_only=True)
class InitScaleResult(fw.TrainsResult):
    """Per norm, arrays (len(stds), len(seeds)) unless noted: ``test_acc``, ``acc_curve``
    (…, epochs), ``first_loss`` (the loss of the first step), ``final_loss`` (mean loss of
    the last epoch; inf if diverged), ``diverged``; at initialization (first seed):
    ``act_std`` (stds, hidden layers), the std of each ReLU's input, and ``logit_std``
    (stds,)."""

    stds: list
    seeds: list
    norms: list
    steps: int
    acc_curve: dict
    first_loss: dict
    final_loss: dict
    act_std: dict
    logit_std: dict

    def trainable_range(self, norm: str) -> tuple:
        """(smallest, largest) init std that trains; NaNs if none does."""
        ok = np.flatnonzero(self.trains(norm))
        if not len(ok):
            return (math.nan, math.nan)
        return (float(self.stds[ok[0]]), float(self.stds[ok[-1]]))

    def decades(self, norm: str) -> float:
        """Width of the trainable range in decades (log10 of largest / smallest)."""
        lo, hi = self.trainable_range(norm)
        return math.log10(hi / lo) if np.isfinite(lo) else math.nan


def measure(cfg: dict, ds, norm: str, std: float, seed: int) -> dict:
    """One run: the signal size at init, then training with plain SGD."""
    model = mlp(ds.n_features, cfg["hidden"], ds.n_classes, norm=norm, activation="relu",
                init_std=std, rng=seed)
    # signal propagation at init (training-mode statistics): each ReLU's input, the logits
    relus = [str(k) for k, m in enumerate(model) if isinstance(m, nn.ReLU)]
    inputs = {name: model[int(name) - 1] for name in relus}
    inputs["logits"] = model[len(model) - 1]
    outs = capture(model, ds.X_train, inputs, training=True)
    hist = fit(model, ds, optim.SGD(model.parameters(), lr=cfg["lr"]), epochs=cfg["epochs"],
               batch_size=cfg["batch_size"], seed=seed, progress=False)
    diverged = hist.diverged_at is not None
    last_epoch = hist.step_loss[-(len(ds.y_train) // cfg["batch_size"]):]
    curve = np.full(cfg["epochs"], np.nan)
    curve[:len(hist.test_acc)] = hist.test_acc
    return {"test_acc": hist.final_test_acc, "acc_curve": curve, "diverged": diverged,
            "first_loss": hist.step_loss[0],
            "final_loss": math.inf if diverged else float(np.mean(last_epoch)),
            "act_std": [outs[n].std(axis=0).mean() for n in relus],
            "logit_std": outs["logits"].std(axis=0).mean()}


def experiment(cfg: dict, seed: int, progress: bool) -> InitScaleResult:
    ds = data.load("digits", seed=0)
    seeds = [seed + k for k in range(cfg["n_seeds"])]
    runs = fw.sweep(ARMS, lambda norm, std, s: measure(cfg, ds, norm, std, s),
                    settings=cfg["stds"], seeds=seeds, progress=progress,
                    desc="init-scale sweep")
    for key in ("act_std", "logit_std"):  # at init: the first seed's
        runs[key] = {norm: v[:, 0] for norm, v in runs[key].items()}
    res = InitScaleResult(config=cfg, seed=seed, stds=[float(s) for s in cfg["stds"]],
                          seeds=seeds, norms=list(ARMS),
                          steps=cfg["epochs"] * (len(ds.y_train) // cfg["batch_size"]),
                          **runs)
    res.set_threshold(ds.y_test)
    return res


def table(result: InitScaleResult) -> str:
    """Mean accuracy, first loss and signal size per init std; the trainable ranges."""
    h = result.config["hidden"]
    lines = [f"Init scale: {len(h)}×{h[0]} ReLU MLP on digits, SGD lr {result.config['lr']:g}, "
             f"{result.steps} steps, seeds {result.seeds} ({result.seconds:.1f} s)", "",
             "init std   acc w/o BN   acc with BN   first loss w/o / with   "
             "last-ReLU-input std w/o / with"]
    for i, s in enumerate(result.stds):
        cells = [result.cell(n, i) for n in result.norms]
        fl = [float(np.mean(result.first_loss[n][i])) for n in result.norms]
        a = [float(result.act_std[n][i][-1]) for n in result.norms]
        lines.append(f"{s:<10g} {cells[0]:>10} {cells[1]:>13}   {fl[0]:>10.3g} / {fl[1]:<10.3g}"
                     f"   {a[0]:>10.3g} / {a[1]:.3g}")
    lines.append("([k] = k seeds diverged)")
    lines.append("")
    for n in result.norms:
        lo, hi = result.trainable_range(n)
        lines.append(f"{LABELS[n]:>11}: trains for init std in [{lo:g}, {hi:g}] "
                     f"({result.decades(n):.1f} decades)")
    return "\n".join(lines)


def verdict(result: InitScaleResult) -> fw.Verdict:
    """Supported when the trainable range is more than half a decade wider with BN."""
    d_n, d_b = result.decades("none"), result.decades("batch")
    lo_b, hi_b = result.trainable_range("batch")
    if not np.isfinite(d_b):
        return fw.Verdict(None, "With BN no init scale trained in this budget; the claim "
                                "cannot be judged.")
    supported = not np.isfinite(d_n) or d_b > d_n + 0.5
    if supported:
        without = ("none does" if not np.isfinite(d_n) else
                   "only {0:g} to {1:g} ({2:.1f} decades)".format(
                       *result.trainable_range("none"), d_n))
        text = (f"BN makes training far less sensitive to the init scale: with BN every std "
                f"from {lo_b:g} to {hi_b:g} trains ({d_b:.1f} decades), without BN {without}. "
                "The claim holds. ")
    else:
        text = (f"The trainable ranges are similar ({d_b:.1f} decades with BN, {d_n:.1f} "
                "without): the claim does not hold here. ")
    a = np.asarray(result.act_std["batch"])[:, -1]
    an = np.asarray(result.act_std["none"])[:, -1]
    text += (f"At init the input to the last ReLU has std {an.min():.2g} … {an.max():.2g} "
             f"without BN across the grid, {a.min():.2g} … {a.max():.2g} with BN: BN "
             "normalizes away the scale of the hidden layers. ")
    accs = result.mean_acc("batch")
    i_best = int(np.nanargmax(accs))
    big = [i for i, s in enumerate(result.stds) if s >= 1]
    if big:
        text += ("'Training still works, just slower' is only partly true: with BN the "
                 "accuracy at large scales falls to "
                 + ", ".join(f"{accs[i]:.2f} (s={result.stds[i]:g})" for i in big)
                 + f" against {accs[i_best]:.2f} at s={result.stds[i_best]:g} in the same "
                 "budget, because the linear head has no BN after it: its large weights give "
                 "huge initial logits (first loss up to "
                 f"{float(np.max(np.mean(result.first_loss['batch'], axis=1))):.3g}) that SGD "
                 "must shrink first.")
    return fw.Verdict(supported, text.strip())


def plot(result: InitScaleResult, path=None):
    """Three panels: final test accuracy over the init std; the std of the last ReLU's
    input at initialization; test accuracy over training with BN for each init std."""
    import matplotlib.pyplot as plt
    from matplotlib import cm, colors

    stds = np.asarray(result.stds)
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15.5, 4.5))
    for norm in result.norms:
        c = COLORS[norm]
        acc = np.asarray(result.test_acc[norm], dtype=float)
        lo, hi = result.trainable_range(norm)
        label = LABELS[norm] + (f" (trains for std {lo:g} … {hi:g})" if np.isfinite(lo)
                                else " (no std trains)")
        ax1.plot(stds, acc.mean(1), "-o", color=c, lw=2, label=label)
        ax1.scatter(np.repeat(stds, acc.shape[1]), acc, color=c, s=10, alpha=0.35, zorder=3)
        div = np.asarray(result.diverged[norm], dtype=bool).sum(axis=1)
        for i, k in enumerate(div):
            if k:
                ax1.annotate(f"{k}×div.", (stds[i], acc.mean(1)[i]), color=c, fontsize=7,
                             xytext=(0, 6), textcoords="offset points", ha="center")
        a = np.asarray(result.act_std[norm], dtype=float)
        ax2.plot(stds, a[:, -1], "-o", color=c, lw=2, label=LABELS[norm] + ": last ReLU input")
        ax2.plot(stds, np.asarray(result.logit_std[norm]), "--", color=c, lw=1.2,
                 label=LABELS[norm] + ": logits")
    ax1.axhline(result.threshold, color="0.5", lw=1, ls="--",
                label=f"'trains': mean accuracy ≥ {result.threshold:.2f}")
    for ax in (ax1, ax2):
        ax.axvline(HE_STD, color="0.3", lw=0.8, ls=":",
                   label=f"He init, s = √(2/64) ≈ {HE_STD:.2f}" if ax is ax1 else None)
        ax.set(xscale="log", xlabel="init std s of every weight, N(0, s²)")
        ax.grid(alpha=0.3)
    ax1.set(ylim=(0, 1.02), ylabel="final test accuracy",
            title=f"Accuracy after {result.steps} steps (lr {result.config['lr']:g})")
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, frameon=False, fontsize=9,
               bbox_to_anchor=(0.5, -0.01))
    ax2.set(yscale="log", ylabel="std at initialization (per unit, mean)",
            title="Signal size at initialization")
    ax2.legend(loc="upper left", fontsize=8)
    norm_c = colors.LogNorm(vmin=stds.min(), vmax=stds.max())
    cmap = plt.get_cmap("viridis")
    curve = np.asarray(result.acc_curve["batch"], dtype=float)
    epochs = np.arange(1, curve.shape[2] + 1)
    for i, s in enumerate(stds):
        ax3.plot(epochs, np.nanmean(curve[i], axis=0), color=cmap(norm_c(s)), lw=1.6)
    fig.colorbar(cm.ScalarMappable(norm=norm_c, cmap=cmap), ax=ax3, label="init std s")
    ax3.set(ylim=(0, 1.02), xlabel="epoch", ylabel="test accuracy (mean over seeds)",
            title="With BN: accuracy during training")
    ax3.grid(alpha=0.3)
    h = result.config["hidden"]
    fig.suptitle(f"Init scale: {len(h)}×{h[0]} ReLU MLP on digits, plain SGD lr "
                 f"{result.config['lr']:g}, {len(result.seeds)} seeds (dots: single seeds)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fw.save_figure(fig, path)


STUDY = fw.Study("init", CLAIM, QUICK, FULL, experiment, table, verdict, plot)
run, summary = STUDY.run, STUDY.summary
