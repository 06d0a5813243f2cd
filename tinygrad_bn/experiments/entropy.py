"""Entropy (tutorial Part 5): do BN outputs have ½·log(2πe) ≈ 1.42 nats, and does BN keep
tanh units out of saturation and gradients flowing?

A 4×64 tanh MLP (``Linear → [BatchNorm1d] → Tanh`` × 4, then a linear head) on the 8×8
digits, trained with plain SGD (lr 0.1, batch 128) in four configurations: without and with
BN, each with torch's default init and with every weight from N(0, 1) (a bad, large init).
A ``diagnostics.Recorder`` follows every hidden layer on the training batches:

- the entropy of each tanh's *input* (the BN output, or the Linear output without BN), from
  the Gaussian formula ½·log(2πe·σ²) with σ the per-unit std over the batch, and from a
  histogram estimate that does not assume a Gaussian (both averaged over units);
- the saturation of each tanh's output: the fraction with |y| > 0.975 (local derivative
  below 5% of its maximum);
- the gradient norm ‖∂loss/∂(tanh input)‖ per layer (gradient flow).

At initialization the two entropy estimates are also taken on the whole training set (1,348
images, training-mode statistics), where the histogram estimate is precise to ~0.01 nats.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .. import nn
from ..training import data, optim
from ..diagnostics import (GAUSSIAN_UNIT_ENTROPY, Recorder, capture, gaussian_entropy,
                           histogram_entropy)
from ..training.models import mlp
from ..training.train import fit
from ._helpers import progress_bar, save, study_context

# name -> (norm, init_std); None is torch's default init
CONFIGS = {
    "no BN": ("none", None),
    "BN": ("batch", None),
    "no BN, N(0,1) init": ("none", 1.0),
    "BN, N(0,1) init": ("batch", 1.0),
}
COLORS = {"no BN": "#d62728", "BN": "#1f77b4", "no BN, N(0,1) init": "#ff7f0e",
          "BN, N(0,1) init": "#9467bd"}


@dataclass
class EntropyResult:
    """Per configuration name: arrays of shape (records, layers) over training unless noted
    (``steps`` are the recorded steps, 0 = initialization)."""

    dataset: str
    hidden: list
    activation: str
    lr: float
    batch_size: int
    total_steps: int
    configs: list
    steps: list = field(default_factory=list)
    entropy_gaussian: dict = field(default_factory=dict)  # tanh inputs
    entropy_hist: dict = field(default_factory=dict)      # tanh inputs
    pre_std: dict = field(default_factory=dict)           # per-unit std of tanh inputs
    saturation: dict = field(default_factory=dict)        # tanh outputs
    grad_norm: dict = field(default_factory=dict)         # ‖∂loss/∂(tanh input)‖
    init_entropy_gaussian: dict = field(default_factory=dict)  # (layers,), whole train set
    init_entropy_hist: dict = field(default_factory=dict)      # (layers,), whole train set
    eval_step: dict = field(default_factory=dict)
    test_acc: dict = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def target(self) -> float:
        """½·log(2πe) ≈ 1.4189: the tutorial's 1.42 nats."""
        return GAUSSIAN_UNIT_ENTROPY

    def max_deviation(self, name: str, estimate: str = "gaussian") -> float:
        """The largest |entropy - 1.42| over layers and recorded steps of configuration
        ``name`` (``estimate`` "gaussian" or "hist")."""
        h = self.entropy_gaussian if estimate == "gaussian" else self.entropy_hist
        return float(np.nanmax(np.abs(np.asarray(h[name]) - self.target)))


def run(quick: bool = False, seed: int = 0, progress: bool = True, *, steps: int | None = None,
        record_every: int | None = None, lr: float = 0.1) -> EntropyResult:
    """Train the four configurations, recording every ``record_every`` steps.

    Quick: 300 steps, a record every 10; full: 2,000 steps, a record every 20.
    """
    total = steps or (300 if quick else 2000)
    every = record_every or (10 if quick else 20)
    hidden, batch_size = [64, 64, 64, 64], 128
    ds = data.load("digits", seed=0)
    res = EntropyResult(dataset="digits", hidden=hidden, activation="tanh", lr=lr,
                        batch_size=batch_size, total_steps=total, configs=list(CONFIGS))
    t0 = time.perf_counter()
    bar = progress_bar(len(CONFIGS), "entropy study", progress)
    per_epoch = len(ds.y_train) // batch_size
    with study_context():
        for name, (norm, init_std) in CONFIGS.items():
            model = mlp(ds.n_features, hidden, ds.n_classes, norm=norm, activation="tanh",
                        init_std=init_std, rng=seed)
            acts = [i for i, m in enumerate(model) if isinstance(m, nn.Tanh)]
            pre = [str(i - 1) for i in acts]
            post = [str(i) for i in acts]
            outs = capture(model, ds.X_train, pre, training=True)
            res.init_entropy_gaussian[name] = np.array(
                [np.mean(gaussian_entropy(outs[n].std(axis=0))) for n in pre])
            res.init_entropy_hist[name] = np.array(
                [np.mean(histogram_entropy(outs[n])) for n in pre])
            opt = optim.SGD(model.parameters(), lr=lr)
            with Recorder(model, pre + post, every=every) as rec:
                hist = fit(model, ds, opt, epochs=-(-total // per_epoch), max_steps=total,
                           batch_size=batch_size, seed=seed, progress=False,
                           eval_every=max(every, 10))
            tp = [rec.trace(n) for n in pre]
            tq = [rec.trace(n) for n in post]
            res.steps = tp[0].step.tolist()
            res.entropy_gaussian[name] = np.stack([t.entropy_gaussian for t in tp], axis=1)
            res.entropy_hist[name] = np.stack([t.entropy_hist for t in tp], axis=1)
            res.pre_std[name] = np.stack([t.std for t in tp], axis=1)
            res.grad_norm[name] = np.stack([t.grad_norm for t in tp], axis=1)
            res.saturation[name] = np.stack([t.saturation for t in tq], axis=1)
            res.eval_step[name] = list(hist.eval_step)
            res.test_acc[name] = np.asarray(hist.test_acc)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    res.seconds = time.perf_counter() - t0
    return res


def plot(result: EntropyResult, path=None):
    """Six panels: entropy of tanh inputs per layer over training (BN; no BN); entropy per
    layer at initialization for all four configurations; tanh saturation per layer; gradient
    norm per layer; test accuracy."""
    import matplotlib.pyplot as plt

    steps = np.asarray(result.steps)
    L = len(result.hidden)
    layers = np.arange(1, L + 1)
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    target = result.target
    blues = plt.get_cmap("Blues")(np.linspace(0.45, 0.95, L))
    reds = plt.get_cmap("Reds")(np.linspace(0.45, 0.95, L))
    for ax, name, shades, letter in ((axes[0, 0], "BN", blues, "a"),
                                     (axes[0, 1], "no BN", reds, "b")):
        if name not in result.entropy_gaussian:
            continue
        hg = np.asarray(result.entropy_gaussian[name])
        hh = np.asarray(result.entropy_hist[name])
        for k in range(L):
            ax.plot(steps, hg[:, k], color=shades[k], lw=1.8, label=f"layer {k + 1}")
            ax.plot(steps, hh[:, k], ":", color=shades[k], lw=1.5)
        ax.axhline(target, color="k", lw=1, ls="--")
        ax.annotate("½·log(2πe) ≈ 1.42", (steps[-1], target), fontsize=8, ha="right",
                    va="top", xytext=(0, -3), textcoords="offset points")
        lo = min(np.nanmin(hg), np.nanmin(hh), target) - 0.1
        hi = max(np.nanmax(hg), np.nanmax(hh), target) + 0.1
        if hi - lo < 1.0:  # at least one nat, centred on the data, so small wiggles look small
            mid = (hi + lo) / 2
            lo, hi = mid - 0.5, mid + 0.5
        ax.set_ylim(lo, hi)
        ax.set_xlabel("training step")
        ax.set_ylabel("entropy of tanh inputs (nats)")
        ax.set_title(f"({letter}) {name}, default init: entropy per layer\n"
                     "solid: Gaussian formula ½·log(2πeσ²), dotted: histogram", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    ax = axes[0, 2]
    for name in result.configs:
        c = COLORS.get(name, "k")
        ax.plot(layers, result.init_entropy_gaussian[name], "-o", color=c, label=name)
        ax.plot(layers, result.init_entropy_hist[name], ":x", color=c, ms=7)
    ax.axhline(target, color="k", lw=1, ls="--")
    ax.set_xticks(layers)
    ax.set_xlabel("hidden layer")
    ax.set_ylabel("entropy of tanh inputs at init (nats)")
    ax.set_title("(c) At initialization (whole training set)\n"
                 "o: Gaussian formula, x: histogram", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1, 0]
    for name in result.configs:
        c = COLORS.get(name, "k")
        s = np.asarray(result.saturation[name])
        ax.plot(layers, s[0], "-o", color=c, label=f"{name}")
        ax.plot(layers, s[-1], "--s", color=c, ms=4, alpha=0.8)
    ax.set_xticks(layers)
    ax.set_ylim(-0.02, 1.0)
    ax.set_xlabel("hidden layer")
    ax.set_ylabel("fraction of saturated tanh outputs (|y| > 0.975)")
    ax.set_title(f"(d) Saturation: at init (solid) and after {result.total_steps} steps "
                 "(dashed)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    for name in result.configs:
        c = COLORS.get(name, "k")
        g = np.asarray(result.grad_norm[name])
        ax.plot(layers, g[0], "-o", color=c, label=name)
        last = g[~np.isnan(g).any(axis=1)][-1] if np.isfinite(g).any() else g[-1]
        ax.plot(layers, last, "--s", color=c, ms=4, alpha=0.8)
    ax.set_yscale("log")
    ax.set_xticks(layers)
    ax.set_xlabel("hidden layer (input side → output side)")
    ax.set_ylabel("‖∂loss/∂(tanh input)‖ over the batch")
    ax.set_title("(e) Gradient flow: at init (solid) and at the end (dashed)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax = axes[1, 2]
    for name in result.configs:
        ax.plot(result.eval_step[name], result.test_acc[name], color=COLORS.get(name, "k"),
                lw=1.8, label=name)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("training step")
    ax.set_ylabel("test accuracy")
    ax.set_title("(f) Test accuracy", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Entropy, saturation and gradient flow: {L}×{result.hidden[0]} tanh MLP on "
                 f"{result.dataset}, SGD lr {result.lr:g}, batch {result.batch_size}")
    fig.tight_layout()
    return save(fig, path)


def summary(result: EntropyResult) -> str:
    t = result.target
    lines = [f"Entropy study: {len(result.hidden)}×{result.hidden[0]} tanh MLP on "
             f"{result.dataset}, SGD lr {result.lr:g}, {result.total_steps} steps "
             f"({result.seconds:.1f} s). Target ½·log(2πe) = {t:.4f} nats.", "",
             "entropy of tanh inputs per layer (nats), Gaussian formula / histogram:"]
    for name in result.configs:
        g0 = " ".join(f"{v:6.2f}" for v in result.init_entropy_gaussian[name])
        h0 = " ".join(f"{v:6.2f}" for v in result.init_entropy_hist[name])
        g1 = " ".join(f"{v:6.2f}" for v in np.asarray(result.entropy_gaussian[name])[-1])
        h1 = " ".join(f"{v:6.2f}" for v in np.asarray(result.entropy_hist[name])[-1])
        lines.append(f"  {name:<20} init  {g0}  /  {h0}")
        lines.append(f"  {'':<20} end   {g1}  /  {h1}")
    lines.append("")
    lines.append("saturated tanh outputs per layer, init -> end; ‖∂loss/∂(tanh input)‖ "
                 "layer 1 / layer 4 at init; final test accuracy")
    for name in result.configs:
        s = np.asarray(result.saturation[name])
        g = np.asarray(result.grad_norm[name])
        lines.append(f"  {name:<20} " + " ".join(f"{v:4.0%}" for v in s[0]) + "  ->  "
                     + " ".join(f"{v:4.0%}" for v in s[-1])
                     + f";  {g[0, 0]:.3g} / {g[0, -1]:.3g}"
                     + f";  {result.test_acc[name][-1]:.3f}")
    lines.append("")
    lines.append("Verdict: " + verdict(result))
    return "\n".join(lines)


def verdict(result: EntropyResult) -> str:
    t = result.target
    bn_g = np.asarray(result.init_entropy_gaussian["BN"])
    bn_h = np.asarray(result.init_entropy_hist["BN"])
    end_g = np.asarray(result.entropy_gaussian["BN"])[-1]
    end_h = np.asarray(result.entropy_hist["BN"])[-1]
    nb = np.asarray(result.init_entropy_gaussian["no BN"])
    text = (f"at initialization the BN outputs have {bn_g.min():.3f}–{bn_g.max():.3f} nats by "
            f"the Gaussian formula (γ = 1 makes σ = 1 by construction, so this is "
            f"{t:.3f} up to ε) and {bn_h.min():.2f}–{bn_h.max():.2f} by the histogram, a little "
            "less because the real distribution is not exactly Gaussian (a Gaussian has the "
            "largest entropy for its variance): the 1.42 nats holds at init. ")
    dev = result.max_deviation("BN")
    dev_big = (f"; {result.max_deviation('BN, N(0,1) init'):.2f} with the large init"
               if "BN, N(0,1) init" in result.configs else "")
    if dev <= 0.1:
        text += (f"During these {result.total_steps} steps it stays close: the Gaussian formula "
                 f"never moves more than {dev:.2f} nats from 1.42 (γ changes little{dev_big}), "
                 f"and the histogram ends at {end_h.min():.2f}–{end_h.max():.2f}. ")
    else:
        text += (f"During training it is not kept exactly: γ and the shape move, the Gaussian "
                 f"formula drifts up to {dev:.2f} nats away, and after {result.total_steps} "
                 f"steps the layers show {end_g.min():.2f}–{end_g.max():.2f} (Gaussian) / "
                 f"{end_h.min():.2f}–{end_h.max():.2f} (histogram). ")
    text += (f"Without BN the entropy at init falls with depth ({nb[0]:.2f} … {nb[-1]:.2f} "
             "nats) as the signal shrinks. ")
    if "no BN, N(0,1) init" in result.configs:
        big = np.asarray(result.init_entropy_gaussian["no BN, N(0,1) init"])
        sat = np.asarray(result.saturation["no BN, N(0,1) init"])[0]
        sat_bn = np.asarray(result.saturation["BN, N(0,1) init"])[0]
        text += (f"Higher entropy is not better by itself: with the large init and no BN the "
                 f"tanh inputs have {big.min():.2f}–{big.max():.2f} nats — more than 1.42 — "
                 f"yet {sat.min():.0%}–{sat.max():.0%} of the tanh outputs are saturated, "
                 f"against {sat_bn.max():.0%} at most with BN; differential entropy grows with "
                 "the scale (log σ), so it measures spread, not usable information. ")
        g = np.asarray(result.grad_norm["no BN, N(0,1) init"])[0]
        gb = np.asarray(result.grad_norm["BN"])[0]
        gn = np.asarray(result.grad_norm["no BN"])[0]
        text += (f"Gradient flow at init (layer 1 / layer 4 gradient norm): "
                 f"{gb[0] / gb[-1]:.2f} with BN, {gn[0] / gn[-1]:.2f} without BN (default init, "
                 f"vanishing towards the input), {g[0] / g[-1]:.1f} with the large init "
                 "(exploding towards the input). BN keeps the ratio near 1: the claim about "
                 "saturation and gradient flow holds.")
    return text
