"""Normalization variants and placement (tutorial Parts 6–7; Wu & He 2018).

Two questions:

1. **Batch size.** BatchNorm, LayerNorm, GroupNorm, InstanceNorm, RMSNorm and no
   normalization in the same MLP, trained at batch sizes 2 … 256. Wu & He (2018) show
   BatchNorm's error growing as the batch shrinks (its statistics get noisy, and the running
   averages used at test time no longer match what training saw) while GroupNorm, which never
   looks across the batch, stays flat. Every run gets the same number of epochs, and the
   learning rate grows with the batch size (``lr = lr_per_32 · B / 32``, capped at
   ``lr_max``), as Wu & He scale it.
2. **Placement.** BatchNorm before the activation (``Linear → BN → act``, the common choice)
   or after it (``Linear → act → BN``); the tutorial says both work.

**InstanceNorm on an MLP.** InstanceNorm normalizes each sample and channel over its spatial
positions; a (N, C) feature vector has none, so over a length of 1 it would return zeros. We
view the C = 64 features as 16 channels of length 4, ``(N, C) → (N, 16, 4)``, apply
``nn.InstanceNorm1d(16, affine=True)`` and flatten back (``FeatureInstanceNorm``). On this
input it is GroupNorm with 16 groups of 4 features (and an affine per group instead of per
feature): the small-group end of GroupNorm, as InstanceNorm is in Wu & He's figure 2. GroupNorm
itself uses 8 groups of 8, LayerNorm is one group of 64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import nn
from ..core.tensor import Tensor
from ..diagnostics import train_mode_accuracy
from ..training import data, optim
from ..training.models import ACTIVATIONS, make_norm, mlp_of
from ..training.train import fit
from . import framework as fw

CLAIM = ("BatchNorm fails at small batches while GroupNorm holds (Part 6), and BatchNorm "
         "works before or after the activation (Part 7)")
QUICK = dict(dataset="digits", hidden=(64, 64), batch_sizes=(2, 8, 32, 128), epochs=4,
             n_seeds=1, lr_per_32=0.1, lr_max=0.4, momentum=0.9, placement_batch=32,
             placement_epochs=6, placement_hidden=(64, 64, 64), placement_lr=0.1,
             activations=("relu", "tanh"), instance_length=4)
FULL = dict(batch_sizes=(2, 4, 8, 16, 32, 64, 128, 256), epochs=10, n_seeds=3,
            placement_epochs=15)
NORMS = ("none", "batch", "layer", "group", "instance", "rms")  # the arms of question 1
PLACEMENTS = ("none", "before", "after")  # the arms of question 2 ("none": no norm)
NAMES = {"none": "no norm", "batch": "BatchNorm", "layer": "LayerNorm",
         "group": "GroupNorm (8 groups)", "instance": "InstanceNorm (16×4 view)",
         "rms": "RMSNorm"}
SHORT = {"none": "none", "batch": "BN", "layer": "LN", "group": "GN", "instance": "IN",
         "rms": "RMS"}
COLORS = {"none": "#7f7f7f", "batch": "#d62728", "layer": "#1f77b4", "group": "#2ca02c",
          "instance": "#9467bd", "rms": "#ff7f0e"}


class FeatureInstanceNorm(nn.Module):
    """InstanceNorm for an MLP's (N, C) features: viewed as (N, C/L, L), normalized per
    sample and channel over the L positions by ``nn.InstanceNorm1d(C/L, affine=True)``, and
    flattened back to (N, C). Equal to GroupNorm with C/L groups of L features (with one
    affine pair per group)."""

    def __init__(self, num_features: int, length: int = 4, *, dtype=np.float32):
        super().__init__()
        if num_features % length:
            raise ValueError(f"FeatureInstanceNorm: {num_features} features cannot be split "
                             f"into channels of length {length}")
        self.num_features = num_features
        self.length = length
        self.norm = nn.InstanceNorm1d(num_features // length, affine=True, dtype=dtype,
                                      analytic=True)

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        y = self.norm(x.reshape(n, self.num_features // self.length, self.length))
        return y.reshape(n, self.num_features)

    def extra_repr(self) -> str:
        return f"{self.num_features}, length={self.length}"


def make_model(norm: str, n_in: int, hidden, n_out: int, *, activation: str = "relu",
               placement: str = "before", instance_length: int = 4, rng=0) -> nn.Sequential:
    """``Linear → norm → activation`` (or ``Linear → activation → norm``) per hidden width,
    then a Linear head; ``norm`` one of ``NORMS``. The same ``rng`` gives the same Linear
    weights whatever the norm."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose from {', '.join(NORMS)}")
    if placement not in ("before", "after"):
        raise ValueError(f"placement must be 'before' or 'after', got {placement!r}")

    def block(width, _rng):
        act = ACTIVATIONS[activation]()
        if norm == "none":
            return [act]
        layer = (FeatureInstanceNorm(width, instance_length) if norm == "instance"
                 else make_norm(norm, width, analytic=True))
        return [layer, act] if placement == "before" else [act, layer]

    return mlp_of(block, n_in, hidden, n_out, rng=rng)


def learning_rate(cfg: dict, batch_size: int) -> float:
    """Wu & He's linear scaling: ``lr_per_32 · B / 32``, capped at ``lr_max``."""
    return min(cfg["lr_per_32"] * batch_size / 32, cfg["lr_max"])


def measure_norm(cfg: dict, ds, norm: str, batch_size: int, seed: int) -> dict:
    """Question 1, one run: train with ``norm`` at ``batch_size``; accuracies and the final
    loss (mean of the last 10% of steps; NaN if it diverged). A BatchNorm model is also
    scored in training mode on test batches of its training batch size."""
    model = make_model(norm, ds.n_features, cfg["hidden"], ds.n_classes,
                       instance_length=cfg["instance_length"], rng=seed)
    opt = optim.SGD(model.parameters(), lr=learning_rate(cfg, batch_size),
                    momentum=cfg["momentum"])
    hist = fit(model, ds, opt, epochs=cfg["epochs"], batch_size=batch_size,
               seed=seed + 1000 * batch_size, progress=False)
    tail = hist.step_loss[-max(1, hist.steps // 10):]
    out = {"test_acc": hist.final_test_acc, "train_acc": hist.final_train_acc,
           "final_loss": float(np.mean(tail)) if np.all(np.isfinite(tail)) else math.nan}
    if norm == "batch":
        out["batch_stats_acc"] = train_mode_accuracy(model, ds.X_test, ds.y_test, batch_size)
    return out


def measure_placement(cfg: dict, ds, placement: str, activation: str, seed: int) -> dict:
    """Question 2, one run: BatchNorm ``placement`` ("before" or "after" the activation, or
    "none": no norm); the test accuracy and the training losses."""
    model = make_model("none" if placement == "none" else "batch", ds.n_features,
                       cfg["placement_hidden"], ds.n_classes, activation=activation,
                       placement="before" if placement == "none" else placement, rng=seed)
    opt = optim.SGD(model.parameters(), lr=cfg["placement_lr"], momentum=cfg["momentum"])
    hist = fit(model, ds, opt, epochs=cfg["placement_epochs"],
               batch_size=cfg["placement_batch"], seed=seed + 7, progress=False)
    return {"test_acc": hist.final_test_acc, "losses": hist.step_loss}


@dataclass(kw_only=True)
class VariantsResult(fw.Result):
    """Accuracies per norm, batch size and seed; the placement comparison.

    ``test_acc[norm]``, ``train_acc[norm]``, ``final_loss[norm]``: arrays (len(batch_sizes),
    len(seeds)); test accuracy in eval mode (BatchNorm with its running statistics),
    ``final_loss`` the mean training loss over the last 10% of steps (NaN if it diverged).
    ``bn_batch_stats_acc`` (batch sizes, seeds): the BatchNorm models evaluated in training
    mode on test batches of their own training batch size. ``placement_acc[activation]
    [placement]``: test accuracy per seed for placement "none" (no norm), "before" and
    "after" the activation; ``placement_loss``: the training losses of the first seed.
    """

    norms: list
    batch_sizes: list
    learning_rates: list
    seeds: list
    test_acc: dict
    train_acc: dict
    final_loss: dict
    bn_batch_stats_acc: np.ndarray
    placement_acc: dict
    placement_loss: dict

    def mean_acc(self, norm: str) -> np.ndarray:
        """Test accuracy per batch size, averaged over seeds."""
        return np.asarray(self.test_acc[norm]).mean(1)

    def acc_at(self, norm: str, batch_size: int) -> float:
        return float(self.mean_acc(norm)[self.batch_sizes.index(batch_size)])

    def below_best(self, norm: str) -> float:
        """How far the accuracy at the smallest batch size is below the norm's best."""
        a = self.mean_acc(norm)
        return float(a.max() - a[0])

    def placement_mean(self, activation: str) -> dict:
        """Test accuracy per placement, mean over seeds."""
        return {pl: float(np.mean(v)) for pl, v in self.placement_acc[activation].items()}


def experiment(cfg: dict, seed: int, progress: bool) -> VariantsResult:
    """Every norm at every batch size (and seed); then the placement comparison."""
    ds = data.load(cfg["dataset"], seed=seed)
    seeds = [seed + k for k in range(cfg["n_seeds"])]
    bss = list(cfg["batch_sizes"])
    runs = fw.sweep(NORMS, lambda norm, b, s: measure_norm(cfg, ds, norm, b, s),
                    settings=bss, seeds=seeds, progress=progress, desc="variants: batch size")
    acts = list(cfg["activations"])
    place = fw.sweep(PLACEMENTS, lambda pl, act, s: measure_placement(cfg, ds, pl, act, s),
                     settings=acts, seeds=seeds, progress=progress,
                     desc="variants: placement")
    return VariantsResult(
        config=cfg, seed=seed, norms=list(NORMS), batch_sizes=bss, seeds=seeds,
        learning_rates=[learning_rate(cfg, b) for b in bss],
        test_acc=runs["test_acc"], train_acc=runs["train_acc"],
        final_loss=runs["final_loss"], bn_batch_stats_acc=runs["batch_stats_acc"]["batch"],
        placement_acc={a: {pl: place["test_acc"][pl][i].tolist() for pl in PLACEMENTS}
                       for i, a in enumerate(acts)},
        placement_loss={a: {pl: place["losses"][pl][i, 0].tolist() for pl in PLACEMENTS}
                        for i, a in enumerate(acts)})


def table(result: VariantsResult) -> str:
    """The accuracy table over batch sizes, and the placement table."""
    bs = result.batch_sizes
    lines = ["Normalization variants across batch sizes (test accuracy, eval mode, mean over "
             f"{len(result.seeds)} seed(s))", ""]
    lines.append(f"{'':<26}" + "".join(f"{'B=' + str(b):>8}" for b in bs))
    for norm in result.norms:
        lines.append(f"{NAMES[norm]:<26}" + "".join(f"{a:>8.1%}" for a in result.mean_acc(norm)))
    lines.append(f"{'BN, test batch stats':<26}" + "".join(
        f"{a:>8.1%}" for a in np.asarray(result.bn_batch_stats_acc).mean(1)))
    lines.append(f"{'learning rate':<26}" + "".join(f"{lr:>8.3g}"
                                                     for lr in result.learning_rates))
    lines.append("")
    lines.append(f"accuracy at B={bs[0]} below the same norm's best batch size: "
                 + ", ".join(f"{SHORT[n]} {100 * result.below_best(n):.1f} pts"
                             for n in result.norms))
    lines.append("")
    lines.append("Placement (test accuracy, mean over seeds):")
    for act in result.placement_acc:
        m = result.placement_mean(act)
        lines.append(f"  {act:<6} no norm {m['none']:.1%}   Linear->BN->act {m['before']:.1%}"
                     f"   Linear->act->BN {m['after']:.1%}")
    return "\n".join(lines)


def verdict(result: VariantsResult) -> fw.Verdict:
    """Part 6 holds when BatchNorm at the smallest batch is 5 points below GroupNorm and
    loses 5 points more against its own best than any batch-independent norm; Part 7 when
    the two placements are within 2 points for every activation. Supported when both hold,
    not supported when neither does, mixed otherwise."""
    bs = result.batch_sizes
    small = bs[0]
    bn_small, gn_small = result.acc_at("batch", small), result.acc_at("group", small)
    worst_indep = max(result.below_best(n) for n in ("layer", "group", "instance", "rms"))
    part6 = bn_small < gn_small - 0.05 and result.below_best("batch") > worst_indep + 0.05
    if part6:
        bad = [b for b in bs if result.acc_at("batch", b) < result.acc_at("group", b) - 0.02]
        text = (f"Part 6: BatchNorm fails at small batches while GroupNorm holds: at B={small} "
                f"BatchNorm reaches {bn_small:.1%} against {gn_small:.1%} for GroupNorm, "
                f"{100 * result.below_best('batch'):.0f} points below its own best, while no "
                f"batch-independent norm loses more than {100 * worst_indep:.0f} points at "
                f"B={small}. BatchNorm trails GroupNorm by more than 2 points at B in {bad}. ")
    else:
        text = (f"Part 6: no clear small-batch failure of BatchNorm here (B={small}: BatchNorm "
                f"{bn_small:.1%}, GroupNorm {gn_small:.1%}). ")
    bs_acc = float(np.asarray(result.bn_batch_stats_acc).mean(1)[0])
    text += (f"At B={small}, the same BatchNorm models evaluated with the statistics of test "
             f"batches of {small} (as in training) reach {bs_acc:.1%}: "
             + ("most of the loss is the train/test mismatch of the statistics. "
                if bs_acc > bn_small + 0.05 else
                "the model itself learned poorly, not only the running statistics. "))
    part7 = all(abs(m["before"] - m["after"]) <= 0.02
                for m in map(result.placement_mean, result.placement_acc))
    text += ("Part 7: " + ("both placements work here (within 2 points of each other), as the "
                           "tutorial says." if part7 else
                           "the placements differ by more than 2 points here; see the table."))
    return fw.Verdict(True if part6 and part7 else False if not (part6 or part7) else None,
                      text)


def plot(result: VariantsResult, path: str | None = None):
    """Test accuracy and final training loss against batch size for each norm; the
    placement comparison as bars."""
    import matplotlib.pyplot as plt

    c = result.config
    fig, ((a_acc, a_zoom), (a_loss, a_pl)) = plt.subplots(2, 2, figsize=(15, 10))
    bs = np.asarray(result.batch_sizes)
    for norm in result.norms:
        acc = np.asarray(result.test_acc[norm])  # (batch sizes, seeds)
        m = acc.mean(1)
        kw = dict(color=COLORS[norm], marker="o", label=NAMES[norm],
                  lw=2.2 if norm in ("batch", "group") else 1.3)
        a_acc.plot(bs, m, **kw)
        if acc.shape[1] > 1:  # the zoom shows the spread over seeds
            a_zoom.errorbar(bs * (1 + 0.03 * (result.norms.index(norm) - 2.5)), m,
                            yerr=[m - acc.min(1), acc.max(1) - m], capsize=2, **kw)
        else:
            a_zoom.plot(bs, m, **kw)
        a_loss.plot(bs, np.asarray(result.final_loss[norm]).mean(1), color=COLORS[norm],
                    marker="o", label=NAMES[norm])
    bn_bs = np.asarray(result.bn_batch_stats_acc).mean(1)
    a_acc.plot(bs, bn_bs, color=COLORS["batch"], ls="--", marker="x",
               label="BatchNorm, test batches of B\nin training mode (batch statistics)")
    for ax in (a_acc, a_zoom, a_loss):
        ax.set_xscale("log", base=2)
        ax.set_xticks(bs, [str(b) for b in bs])
        ax.set_xlabel(f"batch size B (lr = min({c['lr_per_32']:g}·B/32, {c['lr_max']:g}))")
        ax.grid(alpha=0.3)
    lo = min(min(float(np.nanmin(np.asarray(v))) for v in result.test_acc.values()),
             float(np.nanmin(bn_bs)))
    a_acc.set(title=f"test accuracy (eval mode) after {c['epochs']} epochs, mean over "
              f"{len(result.seeds)} seed(s)", ylabel="test accuracy",
              ylim=(max(0.0, lo - 0.05), 1.0))
    a_acc.legend(fontsize=8, loc="lower right")
    a_zoom.set(title="the same, zoomed to 85–100%" + (" (bars: min–max over seeds)"
                                                     if len(result.seeds) > 1 else ""),
               ylabel="test accuracy", ylim=(0.85, 1.0))
    a_loss.set(title="training loss (mean of the last 10% of steps)", ylabel="cross-entropy",
               yscale="log")
    a_loss.legend(fontsize=8)
    acts = list(result.placement_acc)
    names = {"none": "no norm", "before": "Linear→BN→act", "after": "Linear→act→BN"}
    colors = {"none": "#7f7f7f", "before": "#d62728", "after": "#ff9896"}
    w = 0.26
    for k, pl in enumerate(PLACEMENTS):
        vals = [np.asarray(result.placement_acc[a][pl]) for a in acts]
        x = np.arange(len(acts)) + (k - 1) * w
        a_pl.bar(x, [v.mean() for v in vals], w, color=colors[pl], label=names[pl])
        for xi, v in zip(x, vals):
            a_pl.plot([xi] * len(v), v, "k.", ms=4)
            a_pl.text(xi, v.max() + 0.002, f"{v.mean():.1%}", ha="center", va="bottom",
                      fontsize=8)
    lo = min(float(np.min(result.placement_acc[a][p])) for a in acts for p in PLACEMENTS)
    a_pl.set_ylim(max(0.0, lo - 0.05), 1.0)
    a_pl.set_xticks(np.arange(len(acts)), acts)
    a_pl.set(title=f"placement: B={c['placement_batch']}, lr={c['placement_lr']}, "
             f"{len(c['placement_hidden'])} hidden layers\n(bars: mean; dots: seeds)",
             xlabel="activation", ylabel="test accuracy")
    a_pl.legend(fontsize=8, loc="lower right")
    a_pl.grid(alpha=0.3, axis="y")
    fig.suptitle(f"Normalization variants across batch sizes (Wu & He 2018) and BN placement: "
                 f"{c['dataset']}, hidden {list(c['hidden'])}, SGD momentum {c['momentum']}, "
                 f"{len(result.seeds)} seed(s)")
    fig.tight_layout()
    return fw.save_figure(fig, path)


STUDY = fw.Study("variants", CLAIM, QUICK, FULL, experiment, table, verdict, plot)
run, summary = STUDY.run, STUDY.summary
