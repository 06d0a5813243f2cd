"""Normalization variants across batch sizes, on small CNNs (tutorial Parts 6–7; Wu & He 2018).

Two questions:

1. **Batch size** (Part 6; Wu & He 2018, Fig. 1). The same small CNN with the norm after each
   convolution — BatchNorm, GroupNorm (8 groups of 4 channels), LayerNorm (one group: all
   channels and positions of a sample), InstanceNorm (one channel: its positions), or none —
   trained at batch sizes 2 … 128 on two tasks: MNIST-1D signals (``Conv1d``) and the 8×8
   digits as images (``Conv2d``). Wu & He find BatchNorm's error rising as the batch shrinks
   (its statistics get noisy, and the running averages used at test time stop matching
   training) while GroupNorm, which never looks across the batch, holds.
2. **Placement** (Part 7). BatchNorm before the activation (``Conv → BN → act``) or after it
   (``Conv → act → BN``), against no norm; the tutorial says both work.

**Budget.** Every batch size gets the same number of epochs (the same samples seen), as in
Wu & He: small batches take many more, smaller steps. Adam with the square-root scaling rule
for adaptive optimizers, ``lr = lr · min(1, √(B / lr_batch))`` (the counterpart of the linear
rule Wu & He use for SGD), so the smallest batches do not take 2,000 full-size noisy steps
per epoch. At a short budget the largest batches get few steps and are under-trained: that
costs every norm alike, so the verdict compares each norm at the smallest batch with its
own best batch size, and BatchNorm with GroupNorm at the same batch size.

The four norms are GroupNorm at different group sizes (Wu & He's Fig. 2): LayerNorm is
``GroupNorm(1, C)``, InstanceNorm (``InstanceNorm1d/2d(C, affine=True)``) equals
``GroupNorm(C, C)``; only BatchNorm mixes the samples of a batch. Test accuracy is measured
in eval mode (BatchNorm with its running statistics); BatchNorm models are also scored in
training mode on test batches of their own training batch size.

(The MLP version of this study had to invent an InstanceNorm over a (16 × 4) view of MLP
features, and tried RMSNorm; both are gone: a CNN has real positions, and RMSNorm is not one
of Wu & He's variants.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..diagnostics import train_mode_accuracy
from ..training import data, optim
from ..training.models import cnn
from ..training.train import fit
from . import framework as fw

CLAIM = ("BatchNorm's accuracy falls as the batch shrinks while GroupNorm's holds (Part 6, "
         "Wu & He 2018), and BatchNorm works before or after the activation (Part 7)")
QUICK = dict(datasets=("mnist1d",), batch_sizes=(2, 16),
             epochs={"mnist1d": 2, "digits": 2}, n_seeds=1, channels=32, groups=8,
             lr=0.01, lr_batch=32, placement_dataset="mnist1d", placement_batch=32,
             placement_epochs=3, activations=("relu",), margin=0.03)
FULL = dict(datasets=("mnist1d", "digits"), batch_sizes=(2, 4, 8, 16, 32, 64, 128),
            epochs={"mnist1d": 3, "digits": 4}, n_seeds=3, placement_epochs=8,
            activations=("relu", "tanh"))
NORMS = ("batch", "group", "layer", "instance", "none")  # the arms of question 1
PLACEMENTS = ("none", "before", "after")  # the arms of question 2 ("none": no norm)
# the CNN per task: three conv layers of ``channels``, then Flatten → Linear
ARCH = {"mnist1d": dict(kernel_size=5, stride=2, padding=1),        # 40 → 19 → 9 → 4
        "digits": dict(kernel_size=3, stride=(1, 2, 2), padding=1)}  # 8×8 → 8×8 → 4×4 → 2×2
TASKS = {"mnist1d": "MNIST-1D (Conv1d)", "digits": "8×8 digits (Conv2d)"}
NAMES = {"batch": "BatchNorm", "group": "GroupNorm (8 groups)",
         "layer": "LayerNorm (GN, 1 group)", "instance": "InstanceNorm", "none": "no norm"}
SHORT = {"batch": "BN", "group": "GN", "layer": "LN", "instance": "IN", "none": "none"}
COLORS = {"batch": "#d62728", "group": "#2ca02c", "layer": "#1f77b4", "instance": "#9467bd",
          "none": "#7f7f7f"}


def load(name: str):
    """The task's data with its fixed split: MNIST-1D's published 4,000 / 1,000, the
    digits' 1,348 / 449 (as (N, 1, 40) signals and (N, 1, 8, 8) images)."""
    return data.load(name, images=True)


def make_model(cfg: dict, ds, norm: str, *, activation: str = "relu",
               placement: str = "before", rng=0):
    """The task's CNN (``ARCH``) with ``norm`` after each conv (``placement="after"``: after
    the activation); the same ``rng`` gives the same weights whatever the norm."""
    return cnn(ds.input_shape, ds.n_classes, channels=(cfg["channels"],) * 3, norm=norm,
               groups=cfg["groups"], activation=activation, placement=placement,
               analytic=True, rng=rng, **ARCH[ds.name])


def learning_rate(cfg: dict, batch_size: int) -> float:
    """Adam's learning rate at ``batch_size``: square-root scaling, ``lr · √(B / lr_batch)``,
    capped at ``lr``."""
    return cfg["lr"] * min(1.0, math.sqrt(batch_size / cfg["lr_batch"]))


def _fit(model, ds, cfg, batch_size: int, epochs: int, seed: int):
    """Adam at ``learning_rate(cfg, batch_size)`` for ``epochs``; evaluated once, at the end."""
    opt = optim.Adam(model.parameters(), lr=learning_rate(cfg, batch_size))
    steps = epochs * (len(ds.y_train) // batch_size)
    return fit(model, ds, opt, epochs=epochs, batch_size=batch_size, seed=seed,
               eval_every=steps, progress=False)


def measure_norm(cfg: dict, ds, norm: str, batch_size: int, seed: int) -> dict:
    """Question 1, one run: train the CNN with ``norm`` at ``batch_size``; test and train
    accuracy (eval mode), whether training diverged, and for BatchNorm the accuracy in
    training mode on test batches of ``batch_size`` (NaN for the other norms)."""
    model = make_model(cfg, ds, norm, rng=seed)
    hist = _fit(model, ds, cfg, batch_size, cfg["epochs"][ds.name], seed + 1000 * batch_size)
    batch_stats = (train_mode_accuracy(model, ds.X_test, ds.y_test, batch_size)
                   if norm == "batch" else math.nan)
    return {"test_acc": hist.final_test_acc, "train_acc": hist.final_train_acc,
            "diverged": hist.diverged_at is not None, "batch_stats_acc": batch_stats}


def measure_placement(cfg: dict, ds, placement: str, activation: str, seed: int) -> dict:
    """Question 2, one run: BatchNorm ``placement`` ("before" or "after" the activation, or
    "none": no norm) at ``placement_batch``; the test accuracy and the training losses."""
    model = make_model(cfg, ds, "none" if placement == "none" else "batch",
                       activation=activation,
                       placement="before" if placement == "none" else placement, rng=seed)
    hist = _fit(model, ds, cfg, cfg["placement_batch"], cfg["placement_epochs"], seed + 7)
    return {"test_acc": hist.final_test_acc, "losses": hist.step_loss}


@dataclass(kw_only=True)
class VariantsResult(fw.Result):
    """Accuracies per task, norm, batch size and seed; the placement comparison.

    ``test_acc[task][norm]``, ``train_acc[task][norm]``, ``diverged[task][norm]``: arrays
    (len(batch_sizes), len(seeds)); accuracies in eval mode (BatchNorm with its running
    statistics). ``bn_batch_stats_acc[task]`` (batch sizes, seeds): the BatchNorm models in
    training mode on test batches of their own batch size. ``placement_acc[activation]
    [placement]``: test accuracy per seed for "none", "before" and "after";
    ``placement_loss``: the training losses of the first seed.
    """

    datasets: list
    norms: list
    batch_sizes: list
    learning_rates: list
    seeds: list
    test_acc: dict
    train_acc: dict
    diverged: dict
    bn_batch_stats_acc: dict
    placement_acc: dict
    placement_loss: dict

    def mean_acc(self, task: str, norm: str) -> np.ndarray:
        """Test accuracy per batch size, averaged over seeds."""
        return np.asarray(self.test_acc[task][norm], dtype=float).mean(1)

    def acc_at(self, task: str, norm: str, batch_size: int) -> float:
        return float(self.mean_acc(task, norm)[self.batch_sizes.index(batch_size)])

    def drop(self, task: str, norm: str) -> float:
        """How far the accuracy at the smallest batch is below the norm's best batch size."""
        a = self.mean_acc(task, norm)
        return float(a.max() - a[0])

    def best_batch(self, task: str, norm: str) -> int:
        return self.batch_sizes[int(np.argmax(self.mean_acc(task, norm)))]

    def wu_he_holds(self, task: str) -> bool:
        """Wu & He's pattern on ``task``: at the smallest batch BatchNorm is at least
        ``margin`` below its own best batch size and below GroupNorm, and GroupNorm loses at
        least ``margin`` less than BatchNorm against its own best."""
        m, small = self.config["margin"], self.batch_sizes[0]
        bn_drop, gn_drop = self.drop(task, "batch"), self.drop(task, "group")
        return bool(bn_drop >= m and gn_drop <= bn_drop - m
                    and self.acc_at(task, "group", small) >= self.acc_at(task, "batch", small) + m)

    def placement_mean(self, activation: str) -> dict:
        """Test accuracy per placement, mean over seeds."""
        return {pl: float(np.mean(v)) for pl, v in self.placement_acc[activation].items()}


def experiment(cfg: dict, seed: int, progress: bool) -> VariantsResult:
    """Every norm at every batch size (and seed) on each task; then the placement question."""
    seeds = [seed + k for k in range(cfg["n_seeds"])]
    bss = list(cfg["batch_sizes"])
    tasks = list(cfg["datasets"])
    test_acc, train_acc, diverged, batch_stats = {}, {}, {}, {}
    for task in tasks:
        ds = load(task)
        runs = fw.sweep(NORMS, lambda norm, b, s: measure_norm(cfg, ds, norm, b, s),
                        settings=bss, seeds=seeds, progress=progress,
                        desc=f"variants: {task}")
        test_acc[task], train_acc[task] = runs["test_acc"], runs["train_acc"]
        diverged[task], batch_stats[task] = runs["diverged"], runs["batch_stats_acc"]["batch"]
    ds = load(cfg["placement_dataset"])
    acts = list(cfg["activations"])
    place = fw.sweep(PLACEMENTS, lambda pl, act, s: measure_placement(cfg, ds, pl, act, s),
                     settings=acts, seeds=seeds, progress=progress,
                     desc="variants: placement")
    return VariantsResult(
        config=cfg, seed=seed, datasets=tasks, norms=list(NORMS), batch_sizes=bss,
        seeds=seeds, learning_rates=[learning_rate(cfg, b) for b in bss],
        test_acc=test_acc, train_acc=train_acc, diverged=diverged,
        bn_batch_stats_acc=batch_stats,
        placement_acc={a: {pl: place["test_acc"][pl][i].tolist() for pl in PLACEMENTS}
                       for i, a in enumerate(acts)},
        placement_loss={a: {pl: place["losses"][pl][i, 0].tolist() for pl in PLACEMENTS}
                        for i, a in enumerate(acts)})


def table(result: VariantsResult) -> str:
    """Per task, the accuracy table over batch sizes; then the placement table."""
    bs, c = result.batch_sizes, result.config
    lines = []
    for task in result.datasets:
        lines += [f"{TASKS[task]}: test accuracy (eval mode) after {c['epochs'][task]} epochs, "
                  f"mean over {len(result.seeds)} seed(s)", ""]
        lines.append(f"{'':<28}" + "".join(f"{'B=' + str(b):>8}" for b in bs)
                     + f"{'drop':>8}")
        for norm in result.norms:
            k = int(np.asarray(result.diverged[task][norm]).sum())
            lines.append(f"{NAMES[norm]:<28}"
                         + "".join(f"{a:>8.1%}" for a in result.mean_acc(task, norm))
                         + f"{100 * result.drop(task, norm):>7.1f}p"
                         + (f"  [{k} run(s) diverged]" if k else ""))
        lines.append(f"{'BN, test batch statistics':<28}" + "".join(
            f"{a:>8.1%}" for a in np.asarray(result.bn_batch_stats_acc[task]).mean(1)))
        lines.append("")
    lines.append(f"{'Adam learning rate':<28}" + "".join(f"{lr:>8.2g}"
                                                        for lr in result.learning_rates))
    lines.append(f"drop: points below the norm's best batch size at B={bs[0]}")
    lines.append("")
    lines.append(f"Placement ({TASKS[c['placement_dataset']]}, B={c['placement_batch']}, "
                 f"{c['placement_epochs']} epochs; test accuracy, mean over seeds):")
    for act in result.placement_acc:
        m = result.placement_mean(act)
        lines.append(f"  {act:<6} no norm {m['none']:.1%}   Conv->BN->act {m['before']:.1%}"
                     f"   Conv->act->BN {m['after']:.1%}")
    return "\n".join(lines)


def _task_text(result: VariantsResult, task: str) -> str:
    small, mid = result.batch_sizes[0], result.batch_sizes[len(result.batch_sizes) // 2]
    acc = {n: result.acc_at(task, n, small) for n in result.norms}
    drops = {n: result.drop(task, n) for n in result.norms}
    if result.wu_he_holds(task):
        head = (f"{TASKS[task]}: Wu & He's pattern holds. At B={small} BatchNorm reaches "
                f"{acc['batch']:.1%}, {100 * drops['batch']:.1f} points below its best "
                f"(B={result.best_batch(task, 'batch')}), while GroupNorm reaches "
                f"{acc['group']:.1%}, {100 * drops['group']:.1f} points below its best. ")
    else:
        head = (f"{TASKS[task]}: no BatchNorm-specific small-batch failure. At B={small} "
                f"BatchNorm reaches {acc['batch']:.1%} ({100 * drops['batch']:.1f} points "
                f"below its best), GroupNorm {acc['group']:.1%} "
                f"({100 * drops['group']:.1f} points below its best). ")
    bs_acc = float(np.asarray(result.bn_batch_stats_acc[task]).mean(1)[0])
    head += (f"With test batches of {small} in training mode BatchNorm gets {bs_acc:.1%}. ")
    at_mid = {n: result.acc_at(task, n, mid) for n in result.norms}
    best_mid = max(at_mid, key=at_mid.get)
    head += (f"LayerNorm: {acc['layer']:.1%} at B={small} "
             f"({100 * drops['layer']:.1f} points below its best), InstanceNorm "
             f"{acc['instance']:.1%} ({100 * drops['instance']:.1f}), no norm "
             f"{acc['none']:.1%} ({100 * drops['none']:.1f}). At B={mid}: "
             + ", ".join(f"{SHORT[n]} {at_mid[n]:.1%}" for n in result.norms)
             + f" (best: {SHORT[best_mid]}). ")
    return head


def verdict(result: VariantsResult) -> fw.Verdict:
    """Part 6 (Wu & He) holds on a task when, at the smallest batch, BatchNorm is at least
    ``margin`` below its own best batch size and below GroupNorm, and GroupNorm loses at least
    ``margin`` less than BatchNorm against its own best. Part 7 holds when the two placements
    are within 2 points for every activation. Supported when Part 6 holds on every task and
    Part 7 holds; not supported when Part 6 holds on none and Part 7 fails; mixed otherwise."""
    holds = [t for t in result.datasets if result.wu_he_holds(t)]
    text = (f"Part 6 (Wu & He) holds on {len(holds)} of {len(result.datasets)} task(s)"
            + (f" ({', '.join(TASKS[t] for t in holds)}). " if holds else ". "))
    text += "".join(_task_text(result, t) for t in result.datasets)
    means = {a: result.placement_mean(a) for a in result.placement_acc}
    part7 = all(abs(m["before"] - m["after"]) <= 0.02 for m in means.values())
    text += ("Part 7: " + ("both placements work (within 2 points of each other: "
                           if part7 else "the placements differ by more than 2 points (")
             + "; ".join(f"{a}: before {m['before']:.1%}, after {m['after']:.1%}, "
                         f"no norm {m['none']:.1%}" for a, m in means.items()) + ").")
    part6 = len(holds) == len(result.datasets)
    supported = (True if part6 and part7 else False if not holds and not part7 else None)
    return fw.Verdict(supported, text)


def plot(result: VariantsResult, path: str | None = None):
    """Per task, test accuracy against batch size for each norm; the drop at the smallest
    batch per norm and task; the placement comparison as bars."""
    import matplotlib.pyplot as plt

    c = result.config
    tasks = result.datasets
    ncol = max(2, len(tasks))
    fig, axes = plt.subplots(2, ncol, figsize=(7.5 * ncol, 10), squeeze=False)
    bs = np.asarray(result.batch_sizes)
    for ax, task in zip(axes[0], tasks):
        for j, norm in enumerate(result.norms):
            acc = np.asarray(result.test_acc[task][norm], dtype=float)  # (batch sizes, seeds)
            m = acc.mean(1)
            kw = dict(color=COLORS[norm], marker="o", label=NAMES[norm],
                      lw=2.4 if norm in ("batch", "group") else 1.3)
            if acc.shape[1] > 1:  # bars: min–max over seeds
                ax.errorbar(bs * (1 + 0.03 * (j - 2)), m, yerr=[m - acc.min(1), acc.max(1) - m],
                            capsize=2, **kw)
            else:
                ax.plot(bs, m, **kw)
        ax.plot(bs, np.asarray(result.bn_batch_stats_acc[task]).mean(1), color=COLORS["batch"],
                ls="--", marker="x", label="BatchNorm in training mode on\ntest batches of B")
        ax.set_xscale("log", base=2)
        ax.set_xticks(bs, [str(b) for b in bs])
        ax.set(title=f"{TASKS[task]}: {c['epochs'][task]} epochs at every B, mean over "
               f"{len(result.seeds)} seed(s)" + (" (bars: min–max)" if len(result.seeds) > 1
                                                   else ""),
               xlabel="batch size B (Adam, lr = "
               f"{c['lr']:g}·min(1, √(B/{c['lr_batch']})))", ylabel="test accuracy (eval mode)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    for ax in axes[0][len(tasks):]:
        ax.axis("off")
    a_drop, a_pl = axes[1][0], axes[1][1]
    w = 0.8 / len(tasks)
    x = np.arange(len(result.norms))
    for k, task in enumerate(tasks):
        d = [100 * result.drop(task, n) for n in result.norms]
        a_drop.bar(x + (k - (len(tasks) - 1) / 2) * w, d, w, label=TASKS[task],
                   color=COLORS["batch"] if k == 0 else "#ff9896", edgecolor="k", lw=0.5)
    a_drop.set_xticks(x, [SHORT[n] for n in result.norms])
    a_drop.axhline(100 * c["margin"], color="k", ls=":", lw=1,
                   label=f"verdict margin ({100 * c['margin']:g} points)")
    a_drop.set(title=f"accuracy at B={result.batch_sizes[0]} below the norm's own best batch "
               "size", xlabel="norm", ylabel="drop (percentage points)")
    a_drop.legend(fontsize=8)
    a_drop.grid(alpha=0.3, axis="y")
    acts = list(result.placement_acc)
    names = {"none": "no norm", "before": "Conv→BN→act", "after": "Conv→act→BN"}
    colors = {"none": "#7f7f7f", "before": "#d62728", "after": "#ff9896"}
    w = 0.26
    for k, pl in enumerate(PLACEMENTS):
        vals = [np.asarray(result.placement_acc[a][pl]) for a in acts]
        xs = np.arange(len(acts)) + (k - 1) * w
        a_pl.bar(xs, [v.mean() for v in vals], w, color=colors[pl], label=names[pl])
        for xi, v in zip(xs, vals):
            a_pl.plot([xi] * len(v), v, "k.", ms=4)
            a_pl.text(xi, v.max() + 0.003, f"{v.mean():.1%}", ha="center", va="bottom",
                      fontsize=8)
    lo = min(float(np.min(result.placement_acc[a][p])) for a in acts for p in PLACEMENTS)
    a_pl.set_ylim(max(0.0, lo - 0.05), 1.0)
    a_pl.set_xticks(np.arange(len(acts)), acts)
    a_pl.set(title=f"placement: {TASKS[c['placement_dataset']]}, B={c['placement_batch']}, "
             f"{c['placement_epochs']} epochs\n(bars: mean; dots: seeds)",
             xlabel="activation", ylabel="test accuracy")
    a_pl.legend(fontsize=8, loc="lower right")
    a_pl.grid(alpha=0.3, axis="y")
    for ax in axes[1][2:]:
        ax.axis("off")
    fig.suptitle("Normalization variants across batch sizes on small CNNs (Wu & He 2018, "
                 f"Fig. 1) and BatchNorm's placement; {c['channels']} channels per conv")
    fig.tight_layout()
    return fw.save_figure(fig, path)


STUDY = fw.Study("variants", CLAIM, QUICK, FULL, experiment, table, verdict, plot)
run, summary = STUDY.run, STUDY.summary
