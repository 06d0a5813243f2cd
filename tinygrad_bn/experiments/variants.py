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
from dataclasses import dataclass, field

import numpy as np

from .. import nn
from ..core.node import no_grad
from ..core.tensor import Tensor
from ._helpers import progress_bar, save, study_context
from .ics import batch_stream

NORMS = ("none", "batch", "layer", "group", "instance", "rms")
NAMES = {"none": "no norm", "batch": "BatchNorm", "layer": "LayerNorm",
         "group": "GroupNorm (8 groups)", "instance": "InstanceNorm (16×4 view)",
         "rms": "RMSNorm"}
SHORT = {"none": "none", "batch": "BN", "layer": "LN", "group": "GN", "instance": "IN",
         "rms": "RMS"}
COLORS = {"none": "#7f7f7f", "batch": "#d62728", "layer": "#1f77b4", "group": "#2ca02c",
          "instance": "#9467bd", "rms": "#ff7f0e"}

QUICK = dict(dataset="digits", hidden=(64, 64), batch_sizes=(2, 8, 32, 128), epochs=4,
             seeds=1, lr_per_32=0.1, lr_max=0.4, momentum=0.9, placement_batch=32,
             placement_epochs=6, placement_hidden=(64, 64, 64), placement_lr=0.1,
             activations=("relu", "tanh"), instance_length=4)
FULL = dict(QUICK, batch_sizes=(2, 4, 8, 16, 32, 64, 128, 256), epochs=10, seeds=3,
            placement_epochs=15)


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
    from ..training.models import ACTIVATIONS, make_norm

    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose from {', '.join(NORMS)}")
    rng = np.random.default_rng(rng)
    layers, prev = [], n_in
    for h in hidden:
        layers.append(nn.Linear(prev, h, rng=rng))
        act = ACTIVATIONS[activation]()
        if norm == "none":
            layers.append(act)
            prev = h
            continue
        nl = (FeatureInstanceNorm(h, instance_length) if norm == "instance"
              else make_norm(norm, h, analytic=True))
        layers.extend([nl, act] if placement == "before" else [act, nl])
        prev = h
    layers.append(nn.Linear(prev, n_out, rng=rng))
    return nn.Sequential(*layers)


def train_one(model, ds, batch_size: int, epochs: int, lr: float, momentum: float,
              seed: int) -> list:
    """SGD with momentum for ``epochs`` passes of minibatches of ``batch_size`` (the last
    partial batch of each pass is dropped); returns the per-step losses (stops at a NaN)."""
    from ..training import optim
    from ..nn.losses import cross_entropy

    n = len(ds.y_train)
    steps = epochs * (n // batch_size)
    opt = optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    stream = batch_stream(n, batch_size, np.random.default_rng(seed))
    losses = []
    model.train()
    for _ in range(steps):
        idx = next(stream)
        opt.zero_grad()
        loss = cross_entropy(model(Tensor(ds.X_train[idx])), ds.y_train[idx])
        v = float(loss.data)
        losses.append(v)
        if not math.isfinite(v):
            break
        loss.backward()
        opt.step()
    return losses


def batch_stats_accuracy(model, X, y, batch_size: int) -> float:
    """Accuracy with the norm layers in training mode on consecutive test batches of
    ``batch_size`` (a BatchNorm model then uses each test batch's own statistics, as during
    training); a last batch of one sample is dropped. Buffers are restored afterwards."""
    bufs = [b.data.copy() for b in model.buffers()]
    model.train()
    right = total = 0
    try:
        with no_grad():
            for i in range(0, len(y), batch_size):
                xb, yb = X[i:i + batch_size], y[i:i + batch_size]
                if len(yb) < 2:
                    break
                right += int((model(Tensor(xb)).data.argmax(1) == yb).sum())
                total += len(yb)
    finally:
        for b, v in zip(model.buffers(), bufs):
            b.data[...] = v
    return right / total if total else math.nan


@dataclass
class VariantsResult:
    """Accuracies per norm, seed and batch size; the placement comparison.

    ``test_acc[norm]``, ``train_acc[norm]``, ``final_loss[norm]``: arrays (seeds, len
    (batch_sizes)); test accuracy in eval mode (BatchNorm with its running statistics),
    ``final_loss`` the mean training loss over the last 10% of steps (NaN if it diverged).
    ``bn_batch_stats_acc``: the BatchNorm models evaluated in training mode on test batches
    of their own training batch size. ``placement_acc[activation][placement]``: test accuracy
    per seed for placement "none" (no norm), "before" and "after" the activation.
    """

    settings: dict
    seed: int
    norms: list
    batch_sizes: list
    learning_rates: list
    test_acc: dict = field(default_factory=dict)
    train_acc: dict = field(default_factory=dict)
    final_loss: dict = field(default_factory=dict)
    bn_batch_stats_acc: np.ndarray | None = None
    placement_acc: dict = field(default_factory=dict)
    placement_loss: dict = field(default_factory=dict)

    def mean_acc(self, norm: str) -> np.ndarray:
        """Test accuracy per batch size, averaged over seeds."""
        return np.asarray(self.test_acc[norm]).mean(0)

    def acc_at(self, norm: str, batch_size: int) -> float:
        return float(self.mean_acc(norm)[self.batch_sizes.index(batch_size)])

    def drop(self, norm: str) -> float:
        """Test accuracy at the largest batch size minus at the smallest (mean over seeds)."""
        a = self.mean_acc(norm)
        return float(a[-1] - a[0])


def run(quick: bool = False, seed: int = 0, progress: bool = True) -> VariantsResult:
    """Train every norm at every batch size (and seed); then the placement comparison."""
    from ..training import data
    from ..training.train import accuracy

    s = dict(QUICK if quick else FULL)
    ds = data.load(s["dataset"], seed=seed)
    bss = list(s["batch_sizes"])
    lrs = [min(s["lr_per_32"] * b / 32, s["lr_max"]) for b in bss]
    seeds = [seed + k for k in range(s["seeds"])]
    n = len(ds.y_train)
    res = VariantsResult(settings=s, seed=seed, norms=list(NORMS), batch_sizes=bss,
                         learning_rates=lrs)
    acts = list(s["activations"])
    placements = ("none", "before", "after")
    total = (len(NORMS) * len(seeds) * sum(s["epochs"] * (n // b) for b in bss)
             + len(acts) * len(placements) * len(seeds) * s["placement_epochs"]
             * (n // s["placement_batch"]))
    bn_bs = np.zeros((len(seeds), len(bss)))
    with study_context():
        bar = progress_bar(total, "variants", progress)
        try:
            for norm in NORMS:
                te, tr, fl = (np.zeros((len(seeds), len(bss))) for _ in range(3))
                for i, sd in enumerate(seeds):
                    for j, (b, lr) in enumerate(zip(bss, lrs)):
                        model = make_model(norm, ds.n_features, s["hidden"], ds.n_classes,
                                           instance_length=s["instance_length"], rng=sd)
                        losses = train_one(model, ds, b, s["epochs"], lr, s["momentum"],
                                           sd + 1000 * b)
                        tail = losses[-max(1, len(losses) // 10):]
                        fl[i, j] = float(np.mean(tail)) if np.all(np.isfinite(tail)) \
                            else math.nan
                        te[i, j] = accuracy(model, ds.X_test, ds.y_test)
                        tr[i, j] = accuracy(model, ds.X_train, ds.y_train)
                        if norm == "batch":
                            bn_bs[i, j] = batch_stats_accuracy(model, ds.X_test, ds.y_test, b)
                        if bar is not None:
                            bar.update(s["epochs"] * (n // b))
                res.test_acc[norm], res.train_acc[norm], res.final_loss[norm] = te, tr, fl
            res.bn_batch_stats_acc = bn_bs
            for act in acts:
                res.placement_acc[act] = {}
                res.placement_loss[act] = {}
                for pl in placements:
                    accs = []
                    for sd in seeds:
                        model = make_model("none" if pl == "none" else "batch", ds.n_features,
                                           s["placement_hidden"], ds.n_classes,
                                           activation=act, placement=pl, rng=sd)
                        losses = train_one(model, ds, s["placement_batch"],
                                           s["placement_epochs"], s["placement_lr"],
                                           s["momentum"], sd + 7)
                        accs.append(accuracy(model, ds.X_test, ds.y_test))
                        if sd == seed:
                            res.placement_loss[act][pl] = losses
                        if bar is not None:
                            bar.update(s["placement_epochs"] * (n // s["placement_batch"]))
                    res.placement_acc[act][pl] = accs
        finally:
            if bar is not None:
                bar.close()
    return res


def plot(result: VariantsResult, path: str | None = None):
    """Test accuracy and final training loss against batch size for each norm; the
    placement comparison as bars."""
    import matplotlib.pyplot as plt

    fig, ((a_acc, a_zoom), (a_loss, a_pl)) = plt.subplots(2, 2, figsize=(15, 10))
    bs = np.asarray(result.batch_sizes)
    for norm in result.norms:
        acc = np.asarray(result.test_acc[norm])
        m = acc.mean(0)
        kw = dict(color=COLORS[norm], marker="o", label=NAMES[norm],
                  lw=2.2 if norm in ("batch", "group") else 1.3)
        a_acc.plot(bs, m, **kw)
        if acc.shape[0] > 1:  # the zoom shows the spread over seeds
            a_zoom.errorbar(bs * (1 + 0.03 * (result.norms.index(norm) - 2.5)), m,
                            yerr=[m - acc.min(0), acc.max(0) - m], capsize=2, **kw)
        else:
            a_zoom.plot(bs, m, **kw)
        loss = np.asarray(result.final_loss[norm]).mean(0)
        a_loss.plot(bs, loss, color=COLORS[norm], marker="o", label=NAMES[norm])
    if result.bn_batch_stats_acc is not None:
        a_acc.plot(bs, np.asarray(result.bn_batch_stats_acc).mean(0), color=COLORS["batch"],
                   ls="--", marker="x", label="BatchNorm, test batches of B\n"
                   "in training mode (batch statistics)")
    for ax in (a_acc, a_zoom, a_loss):
        ax.set_xscale("log", base=2)
        ax.set_xticks(bs, [str(b) for b in bs])
        ax.set_xlabel("batch size B (lr = min(%g·B/32, %g))" % (result.settings["lr_per_32"],
                                                               result.settings["lr_max"]))
        ax.grid(alpha=0.3)
    a_acc.set(title="test accuracy (eval mode) after %d epochs, mean over %d seed(s)"
              % (result.settings["epochs"], result.settings["seeds"]), ylabel="test accuracy")
    lo = min(float(np.nanmin(np.asarray(v))) for v in result.test_acc.values())
    if result.bn_batch_stats_acc is not None:
        lo = min(lo, float(np.nanmin(np.asarray(result.bn_batch_stats_acc).mean(0))))
    a_acc.set_ylim(max(0.0, lo - 0.05), 1.0)
    a_acc.legend(fontsize=8, loc="lower right")
    a_zoom.set(title="the same, zoomed to 85–100%" + (" (bars: min–max over seeds)"
                                                     if result.settings["seeds"] > 1 else ""),
               ylabel="test accuracy", ylim=(0.85, 1.0))
    a_loss.set(title="training loss (mean of the last 10% of steps)", ylabel="cross-entropy",
               yscale="log")
    a_loss.legend(fontsize=8)
    acts = list(result.placement_acc)
    pls = ("none", "before", "after")
    names = {"none": "no norm", "before": "Linear→BN→act", "after": "Linear→act→BN"}
    colors = {"none": "#7f7f7f", "before": "#d62728", "after": "#ff9896"}
    w = 0.26
    for k, pl in enumerate(pls):
        vals = [np.asarray(result.placement_acc[a][pl]) for a in acts]
        x = np.arange(len(acts)) + (k - 1) * w
        a_pl.bar(x, [v.mean() for v in vals], w, color=colors[pl], label=names[pl])
        for xi, v in zip(x, vals):
            a_pl.plot([xi] * len(v), v, "k.", ms=4)
            a_pl.text(xi, v.max() + 0.002, f"{v.mean():.1%}", ha="center", va="bottom",
                      fontsize=8)
    lo = min(float(np.min(result.placement_acc[a][p])) for a in acts for p in pls)
    a_pl.set_ylim(max(0.0, lo - 0.05), 1.0)
    a_pl.set_xticks(np.arange(len(acts)), acts)
    s = result.settings
    a_pl.set(title=f"placement: B={s['placement_batch']}, lr={s['placement_lr']}, "
             f"{len(s['placement_hidden'])} hidden layers\n(bars: mean; dots: seeds)",
             xlabel="activation", ylabel="test accuracy")
    a_pl.legend(fontsize=8, loc="lower right")
    a_pl.grid(alpha=0.3, axis="y")
    fig.suptitle(f"Normalization variants across batch sizes (Wu & He 2018) and BN placement: "
                 f"{s['dataset']}, hidden {list(s['hidden'])}, SGD momentum {s['momentum']}, "
                 f"{s['seeds']} seed(s)")
    fig.tight_layout()
    return save(fig, path)


def summary(result: VariantsResult) -> str:
    """The accuracy table and verdicts on Part 6 (variants) and Part 7 (placement)."""
    bs = result.batch_sizes
    lines = ["Normalization variants across batch sizes (test accuracy, eval mode, mean over "
             f"{result.settings['seeds']} seed(s))", ""]
    lines.append(f"{'':<26}" + "".join(f"{'B=' + str(b):>8}" for b in bs))
    for norm in result.norms:
        lines.append(f"{NAMES[norm]:<26}" + "".join(f"{a:>8.1%}" for a in result.mean_acc(norm)))
    if result.bn_batch_stats_acc is not None:
        lines.append(f"{'BN, test batch stats':<26}" + "".join(
            f"{a:>8.1%}" for a in np.asarray(result.bn_batch_stats_acc).mean(0)))
    lines.append(f"{'learning rate':<26}" + "".join(f"{lr:>8.3g}"
                                                     for lr in result.learning_rates))
    small = bs[0]
    bn_small, gn_small = result.acc_at("batch", small), result.acc_at("group", small)
    indep = [n for n in ("layer", "group", "instance", "rms") if n in result.norms]
    # how far each norm at the smallest batch is below its own best batch size
    below_best = {n: float(result.mean_acc(n).max() - result.mean_acc(n)[0])
                  for n in result.norms}
    lines.append("")
    lines.append("accuracy at B=%d below the same norm's best batch size: " % small
                 + ", ".join(f"{SHORT[n]} {100 * below_best[n]:.1f} pts"
                             for n in result.norms))
    if bn_small < gn_small - 0.05 and below_best["batch"] > max(below_best[n]
                                                                for n in indep) + 0.05:
        bad = [b for b in bs if result.acc_at("batch", b) < result.acc_at("group", b) - 0.02]
        lines.append(f"Verdict on Part 6: BatchNorm fails at small batches while GroupNorm "
                     f"holds: at B={small} BatchNorm reaches {bn_small:.1%} against "
                     f"{gn_small:.1%} for GroupNorm, {100 * below_best['batch']:.0f} points "
                     f"below its own best, while no batch-independent norm loses more than "
                     f"{100 * max(below_best[n] for n in indep):.0f} points at B={small}. "
                     f"BatchNorm trails GroupNorm by more than 2 points at B in {bad}.")
    else:
        lines.append(f"Verdict on Part 6: no clear small-batch failure of BatchNorm here "
                     f"(B={small}: BatchNorm {bn_small:.1%}, GroupNorm {gn_small:.1%}).")
    if result.bn_batch_stats_acc is not None:
        bs_acc = float(np.asarray(result.bn_batch_stats_acc).mean(0)[0])
        lines.append(f"At B={small}, the same BatchNorm models evaluated with the statistics of "
                     f"test batches of {small} (as in training) reach {bs_acc:.1%}: "
                     + ("most of the loss is the train/test mismatch of the statistics."
                        if bs_acc > bn_small + 0.05 else
                        "the model itself learned poorly, not only the running statistics."))
    lines.append("")
    lines.append("Placement (test accuracy, mean over seeds):")
    verdict_ok = True
    for act, d in result.placement_acc.items():
        m = {pl: float(np.mean(v)) for pl, v in d.items()}
        lines.append(f"  {act:<6} no norm {m['none']:.1%}   Linear->BN->act {m['before']:.1%}"
                     f"   Linear->act->BN {m['after']:.1%}")
        verdict_ok &= abs(m["before"] - m["after"]) <= 0.02
    lines.append("Verdict on Part 7: " + (
        "both placements work here (within 2 points of each other), as the tutorial says."
        if verdict_ok else
        "the placements differ by more than 2 points here; see the table."))
    return "\n".join(lines)
