"""Internal covariate shift, measured as Santurkar et al. (2018, Def. 2.1) define it.

The tutorial (Part 4, Theory 1) says BatchNorm works by reducing internal covariate shift:
each layer sees a more stable input distribution. Santurkar et al. turn that into a number.
At step t, on the step's batch, layer i's gradient is

- ``G = ∇_{W_i} L(W_1, …, W_k)`` with every layer at its value before the step, and
- ``G' = ∇_{W_i} L(W_1', …, W_{i-1}', W_i, …, W_k)`` after the layers *before* i took the
  step (their new values ``W'``) while layer i and the later ones have not.

``‖G − G'‖₂`` and ``cos(G, G')`` say how much the update of the earlier layers changes the
problem layer i is solving: no shift gives ‖G − G'‖ = 0 and cos = 1. We train three deep MLPs
on the same batches with the same optimizer: without normalization ("standard"), with
BatchNorm, and with BatchNorm followed by noise whose distribution changes at every step
("noisy BN", Santurkar et al. §2.1), which adds distributional instability on purpose.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .. import nn
from ..core.autograd import grad
from ..core.tensor import Tensor
from ..diagnostics import capture
from ..nn.losses import cross_entropy
from ..training import data, optim
from ..training.models import mlp_of
from ..training.train import accuracy
from . import framework as fw
from .framework import snapshot

CLAIM = "BatchNorm works by reducing internal covariate shift"
# 600 steps are about 28 epochs: past that the networks interpolate the training set and
# every gradient (so every measure here) goes to zero. The full study adds seeds.
QUICK = dict(dataset="digits", hidden=(64,) * 6, steps=600, every=20, batch_size=64, lr=0.05,
             momentum=0.9, noise=1.0, probe=256, init="kaiming", n_seeds=1)
FULL = dict(every=10, n_seeds=5)
LABELS = ("standard", "BatchNorm", "noisy BatchNorm")  # the arms
COLORS = {"standard": "#1f77b4", "BatchNorm": "#d62728", "noisy BatchNorm": "#2ca02c"}


# -- the models ------------------------------------------------------------------------------
class StepNoise(nn.Module):
    """Noise with a distribution that changes at every training step (Santurkar et al. §2.1).

    ``resample()`` draws, for each of the ``num_features`` units, a scale ``s_j ~ U(1, 1+a)``
    and a shift ``m_j ~ U(-a, a)`` (a = ``strength``); until the next ``resample()`` the
    forward pass in training mode is ``y_ij = s_j·x_ij + m_j + (a/4)·ε_ij`` with ε ~ N(0, 1)
    drawn once per batch shape. So each activation of each sample is perturbed by noise of
    non-zero mean and non-unit variance, and that distribution moves from step to step. In
    eval mode it is the expected map ``y = (1 + a/2)·x``. Input (N, num_features).
    """

    def __init__(self, num_features: int, strength: float = 1.0, *, rng=None):
        super().__init__()
        self.num_features = int(num_features)
        self.strength = float(strength)
        self.rng = np.random.default_rng(rng)
        self._draw: tuple | None = None
        self._eps: dict = {}
        self.resample()

    def resample(self) -> None:
        """New per-unit scale and shift (call once per training step)."""
        a, c = self.strength, self.num_features
        self._draw = (self.rng.uniform(1.0, 1.0 + a, c), self.rng.uniform(-a, a, c))
        self._eps = {}

    def forward(self, x: Tensor) -> Tensor:
        a = self.strength
        if not self.training or a == 0.0:
            return x * (1.0 + a / 2)
        scale, shift = self._draw
        eps = self._eps.get(x.shape)
        if eps is None:
            eps = self._eps[x.shape] = self.rng.standard_normal(x.shape)
        noise = (shift + (a / 4) * eps).astype(x.dtype)
        return x * scale.astype(x.dtype) + noise

    def extra_repr(self) -> str:
        return f"{self.num_features}, strength={self.strength}"


def make_model(kind: str, n_in: int, hidden, n_out: int, *, noise: float = 1.0,
               init: str = "kaiming", rng=0) -> nn.Sequential:
    """``Linear → [BatchNorm1d → [StepNoise]] → ReLU`` per hidden width, then a Linear head.

    ``kind``: "standard", "BatchNorm" or "noisy BatchNorm"; ``init``: "kaiming" (He normal
    weights, zero biases: the deep network without BatchNorm trains from the first step) or
    "default" (torch's Linear init). The three kinds built from the same ``rng`` start from
    the same Linear weights.
    """
    if kind not in LABELS:
        raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(LABELS)}")
    if init not in ("default", "kaiming"):
        raise ValueError(f"init must be 'default' or 'kaiming', got {init!r}")
    rng = np.random.default_rng(rng)
    noise_rng = np.random.default_rng(rng.integers(2**63))

    def block(width, _rng):
        norm = [] if kind == "standard" else [nn.BatchNorm1d(width, analytic=True)]
        noisy = [StepNoise(width, noise, rng=noise_rng)] if kind == "noisy BatchNorm" else []
        return norm + noisy + [nn.ReLU()]

    model = mlp_of(block, n_in, hidden, n_out, rng=rng)
    if init == "kaiming":
        for m in model:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu", rng=rng)
                nn.init.zeros_(m.bias)
    return model


def blocks(model) -> list:
    """The model's modules grouped into blocks, each starting at a ``Linear`` (its weight is
    "the layer"; the norm and noise that follow belong to the same block)."""
    out: list = []
    for m in model:
        if isinstance(m, nn.Linear) or not out:
            out.append([])
        out[-1].append(m)
    return out


# -- the measurement -------------------------------------------------------------------------
def measure_ics(model, optimizer, X, y, redraw=()) -> dict:
    """One training step on ``(X, y)`` that also measures ICS (Santurkar et al. Def. 2.1).

    Returns a dict: ``loss`` (float) and arrays over the Linear layers 2..k: ``l2``
    (‖G − G'‖₂), ``cosine`` (cos(G, G')), ``grad_norm`` (‖G‖₂). With ``redraw`` (StepNoise
    modules), G' is also computed with their noise drawn afresh, as the next step will see
    it: ``l2_redrawn``, ``cosine_redrawn``. The model ends in the state of a plain
    ``optimizer.step()`` (buffers and noise draws included).
    """
    bl = blocks(model)
    weights = [b[0].weight for b in bl]
    params = list(model.parameters())
    old = [p.data.copy() for p in params]
    loss = fw.sgd_step(model, optimizer, X, y)  # the step; its gradients G stay in .grad
    G = [w.grad.astype(np.float64).ravel() for w in weights]
    new = [p.data.copy() for p in params]
    out: dict = {"l2": [], "cosine": [], "grad_norm": []}
    if redraw:
        out.update(l2_redrawn=[], cosine_redrawn=[])

    def compare(i, suffix=""):
        (g2,) = grad(cross_entropy(model(Tensor(X)), y), [weights[i]])
        g1, g2 = G[i], g2.data.astype(np.float64).ravel()
        n1, n2 = np.linalg.norm(g1), np.linalg.norm(g2)
        out["l2" + suffix].append(float(np.linalg.norm(g1 - g2)))
        out["cosine" + suffix].append(float(g1 @ g2 / (n1 * n2)) if n1 > 0 and n2 > 0
                                      else math.nan)
        return n1

    with snapshot(model):  # afterwards: the state after the step, running statistics too
        for i in range(1, len(bl)):
            earlier = {id(p) for b in bl[:i] for m in b for p in m.parameters()}
            for p, o, n in zip(params, old, new):
                p.data[...] = n if id(p) in earlier else o
            out["grad_norm"].append(float(compare(i)))
            if redraw:
                saved = [(m._draw, m._eps) for m in redraw]
                for m in redraw:
                    m.resample()
                compare(i, "_redrawn")
                for m, (d, e) in zip(redraw, saved):
                    m._draw, m._eps = d, e
    return {"loss": loss, **{k: np.array(v) for k, v in out.items()}}


def _probe_stats(model, X) -> list:
    """Per-unit (mean, std) of every hidden Linear's input on ``X``, in training mode, with the
    model's buffers left as they were."""
    before_linear = [str(i - 1) for i, m in enumerate(model) if isinstance(m, nn.Linear)][1:]
    outs = capture(model, X, before_linear, training=True)
    return [(outs[n].mean(0), outs[n].std(0)) for n in before_linear]


def _shift(prev: list, cur: list) -> float:
    vals = [np.mean(np.abs(m1 - m0) + np.abs(s1 - s0)) / max(float(np.mean(s0)), 1e-12)
            for (m0, s0), (m1, s1) in zip(prev, cur)]
    return float(np.mean(vals))


# -- the study -------------------------------------------------------------------------------
@dataclass(kw_only=True)
class ICSResult(fw.Result):
    """ICS per model, measured step and layer; training curves and accuracies.

    ``l2[label]``, ``cosine[label]``, ``grad_norm[label]``: arrays (len(seeds), len(steps),
    len(layers)) of ‖G − G'‖₂, cos(G, G') and ‖G‖₂; ``layers`` are 1-based indices of the
    Linear layers measured (the first has no earlier layer, so it is left out).
    ``shift[label]`` (seeds, steps): the relative change of the per-unit mean and std of the
    hidden layers' inputs on a fixed probe batch (training mode) over the measured step
    (before the step against after it, with the next step's noise for the noisy model).
    ``loss[label]`` (seeds, all steps); ``train_acc``, ``test_acc`` (seeds,). For the noisy
    model, ``l2_redrawn`` / ``cosine_redrawn`` repeat the measurement with the noise of G'
    drawn afresh (G and G' otherwise share one draw, so that Def. 2.1 isolates the parameter
    update).
    """

    seeds: list
    steps: list
    layers: list
    l2: dict
    cosine: dict
    grad_norm: dict
    shift: dict
    loss: dict
    train_acc: dict
    test_acc: dict
    l2_redrawn: dict = field(default_factory=dict)
    cosine_redrawn: dict = field(default_factory=dict)

    def relative_l2(self, label: str, redrawn: bool = False) -> np.ndarray:
        """‖G − G'‖ / ‖G‖ (a scale-free version of the ℓ2 distance)."""
        l2 = self.l2_redrawn[label] if redrawn else self.l2[label]
        return np.asarray(l2) / np.maximum(np.asarray(self.grad_norm[label]), 1e-30)

    def median(self, what: str, label: str) -> float:
        """Median over measured steps and layers of "l2", "relative_l2", "cosine" (or the
        "..._redrawn" versions for the noisy model)."""
        if what.startswith("relative_l2"):
            vals = self.relative_l2(label, what.endswith("_redrawn"))
        else:
            vals = np.asarray(getattr(self, what)[label])
        return float(np.nanmedian(vals))

    def acc(self, label: str) -> float:
        """Test accuracy, mean over seeds."""
        return float(np.mean(self.test_acc[label]))


def measure(cfg: dict, ds, label: str, seed: int) -> dict:
    """One model, one seed: train for ``steps`` steps; every ``every`` steps, measure ICS at
    each layer (Def. 2.1) and the input-distribution shift on a probe batch."""
    model = make_model(label, ds.n_features, cfg["hidden"], ds.n_classes, noise=cfg["noise"],
                       init=cfg["init"], rng=seed)
    noise = [m for m in model if isinstance(m, StepNoise)]
    opt = optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
    probe = ds.X_train[:cfg["probe"]]
    rec: dict = {}

    def resample():  # the next step's noise
        for m in noise:
            m.resample()

    def take_step(step, X, y) -> float:
        if step % cfg["every"]:
            loss = fw.sgd_step(model, opt, X, y)
            resample()
            return loss
        before = _probe_stats(model, probe)
        out = measure_ics(model, opt, X, y, redraw=noise)
        resample()
        out["shift"] = _shift(before, _probe_stats(model, probe))  # what this step changed
        loss = out.pop("loss")
        for k, v in out.items():
            rec.setdefault(k, []).append(v)
        return loss

    resample()
    losses = fw.train(model, ds, opt, steps=cfg["steps"], batch_size=cfg["batch_size"],
                      seed=seed + 1, take_step=take_step)
    return {"loss": np.array(losses), **{k: np.array(v) for k, v in rec.items()},
            "train_acc": accuracy(model, ds.X_train, ds.y_train),
            "test_acc": accuracy(model, ds.X_test, ds.y_test)}


def experiment(cfg: dict, seed: int, progress: bool) -> ICSResult:
    """The three models trained on the same batches, for each seed (init and batch order;
    the train/test split is fixed by ``seed``)."""
    ds = data.load(cfg["dataset"], seed=seed)
    seeds = [seed + k for k in range(cfg["n_seeds"])]
    runs = fw.sweep(LABELS, lambda label, _, s: measure(cfg, ds, label, s), seeds=seeds,
                    progress=progress, desc="ics")
    return ICSResult(config=cfg, seed=seed, seeds=seeds,
                     steps=list(range(cfg["every"], cfg["steps"] + 1, cfg["every"])),
                     layers=list(range(2, len(cfg["hidden"]) + 2)), **runs)


def compare_ics(result: ICSResult, a: str = "BatchNorm", b: str = "standard") -> str:
    """"lower", "higher" or "similar": ICS of model ``a`` against model ``b``.

    "lower" needs both a median cosine at least 0.01 closer to 1 and a median relative ℓ2 at
    least 10% smaller; "higher" the reverse; anything else is "similar".
    """
    ca, cb = result.median("cosine", a), result.median("cosine", b)
    ra, rb = result.median("relative_l2", a), result.median("relative_l2", b)
    if ca >= cb + 0.01 and ra <= 0.9 * rb:
        return "lower"
    if ca <= cb - 0.01 and ra >= rb / 0.9:
        return "higher"
    return "similar"


def table(result: ICSResult) -> str:
    """Medians over training and layers per model."""
    lines = ["Internal covariate shift (Santurkar et al. 2018, Def. 2.1)", ""]
    lines.append(f"{'model':<34}{'test acc':>9}{'rel. l2':>9}{'l2':>10}{'cosine':>8}"
                 f"{'input shift':>13}")
    for label in result.l2:
        lines.append(f"{label:<34}{result.acc(label):>9.1%}"
                     f"{result.median('relative_l2', label):>9.3f}"
                     f"{result.median('l2', label):>10.2e}"
                     f"{result.median('cosine', label):>8.3f}"
                     f"{float(np.median(result.shift[label])):>13.3f}")
        if label in result.cosine_redrawn:
            lines.append(f"{'  same, noise of G-prime redrawn':<34}{'':>9}"
                         f"{result.median('relative_l2_redrawn', label):>9.3f}"
                         f"{result.median('l2_redrawn', label):>10.2e}"
                         f"{result.median('cosine_redrawn', label):>8.3f}")
    lines.append(f"medians over measured steps, layers and {len(result.seeds)} seed(s) "
                 "(test accuracy: mean over seeds); rel. l2 = |G - G'| / |G|; input shift "
                 "= relative change of the hidden layers' input mean and std over one step")
    return "\n".join(lines)


def verdict(result: ICSResult) -> fw.Verdict:
    """Not supported when noisy BatchNorm, whose layer inputs shift 10x more than with
    BatchNorm, trains within 2 points of BatchNorm: stable inputs are not what it needs."""
    std, bn, nz = "standard", "BatchNorm", "noisy BatchNorm"
    how = compare_ics(result, bn, std)
    c_std, c_bn = result.median("cosine", std), result.median("cosine", bn)
    r_std, r_bn = result.median("relative_l2", std), result.median("relative_l2", bn)
    nums = (f"cosine {c_bn:.3f} vs {c_std:.3f}, relative l2 {r_bn:.3f} vs {r_std:.3f} "
            "without it")
    text = {"lower": f"By Def. 2.1 BatchNorm does lower ICS here ({nums}). Santurkar et al. "
                     "found the opposite for VGG and deep linear networks; this small MLP "
                     "does not reproduce that part. ",
            "higher": f"BatchNorm raises ICS here ({nums}), as Santurkar et al. found: "
                      "reducing ICS is not how it helps. ",
            "similar": f"ICS is about the same with and without BatchNorm ({nums}), as "
                       "Santurkar et al. found. "}[how]
    shift = {k: float(np.median(result.shift[k])) for k in LABELS}
    noisy_ok = shift[nz] > 10 * shift[bn] and result.acc(nz) > result.acc(bn) - 0.02
    text += (f"Noisy BatchNorm: its layers' input distributions shift {shift[nz] / shift[bn]:.0f}x "
             f"more than with BatchNorm (and {shift[nz] / shift[std]:.1f}x the standard "
             f"network's), yet it reaches {result.acc(nz):.1%} test accuracy against "
             f"{result.acc(bn):.1%} (BatchNorm) and {result.acc(std):.1%} (standard)"
             + (": stable input distributions are not what BatchNorm's benefit needs."
                if noisy_ok else "."))
    return fw.Verdict(False if noisy_ok else None, text)


def _smooth(x, window: int = 25) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if len(x) < window:
        return x
    return np.convolve(x, np.ones(window) / window, mode="valid")


def plot(result: ICSResult, path: str | None = None):
    """Six panels: training loss; input-distribution shift; ICS (relative ℓ2 and cosine) over
    training (median over layers and seeds) and per layer (median over training and seeds)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8.4))
    (a_loss, a_l2, a_cos), (a_shift, a_l2l, a_cosl) = axes
    steps = np.asarray(result.steps)
    n_seeds = len(result.seeds)
    for label in result.loss:
        c = COLORS[label]
        loss = np.asarray(result.loss[label]).mean(0)
        sm = _smooth(loss)
        a_loss.plot(np.arange(len(sm)) + (len(loss) - len(sm)) + 1, sm, color=c,
                    label=f"{label} (test acc {result.acc(label):.1%})")
        a_shift.plot(steps, np.median(result.shift[label], 0), color=c, marker=".",
                     label=label)
        curves = [(label, result.relative_l2(label), np.asarray(result.cosine[label]), "-")]
        if label in result.cosine_redrawn:
            curves.append((f"{label}, noise of G' redrawn", result.relative_l2(label, True),
                           np.asarray(result.cosine_redrawn[label]), "--"))
        for name, rel, cos, ls in curves:  # arrays (seeds, steps, layers)
            a_l2.plot(steps, np.nanmedian(rel, (0, 2)), color=c, ls=ls, marker=".", label=name)
            a_cos.plot(steps, np.nanmedian(cos, (0, 2)), color=c, ls=ls, marker=".", label=name)
            a_l2l.plot(result.layers, np.nanmedian(rel, (0, 1)), color=c, ls=ls, marker="o",
                       label=name)
            a_cosl.plot(result.layers, np.nanmedian(cos, (0, 1)), color=c, ls=ls, marker="o",
                        label=name)
    seeds_txt = f" and {n_seeds} seeds" if n_seeds > 1 else ""
    a_loss.set(title="training loss (moving average" + (f", mean of {n_seeds} seeds)"
                                                        if n_seeds > 1 else ")"),
               xlabel="step", ylabel="cross-entropy", yscale="log")
    a_shift.set(title="input-distribution shift of the hidden layers in one step\n"
                "(relative change of per-unit mean and std on a probe batch)",
                xlabel="step", ylabel="relative shift", yscale="log")
    a_l2.set(title=f"ICS: ‖G − G'‖ / ‖G‖ (median over layers{seeds_txt})", xlabel="step",
             ylabel="relative ℓ2 distance", yscale="log")
    a_cos.set(title=f"ICS: cos(G, G') (median over layers{seeds_txt})\n1 = no shift",
              xlabel="step", ylabel="cosine", ylim=(min(0.0, a_cos.get_ylim()[0]), 1.02))
    a_l2l.set(title=f"relative ℓ2 per layer (median over training{seeds_txt})",
              xlabel="Linear layer", ylabel="‖G − G'‖ / ‖G‖", yscale="log")
    a_cosl.set(title=f"cosine per layer (median over training{seeds_txt})",
               xlabel="Linear layer", ylabel="cos(G, G')")
    for ax in axes.ravel():
        ax.grid(alpha=0.3)
    for ax in (a_loss, a_shift, a_cosl):
        ax.legend(fontsize=8)
    c = result.config
    seeds = (f"seeds {result.seeds[0]}–{result.seeds[-1]}" if n_seeds > 1
             else f"seed {result.seeds[0]}")
    fig.suptitle(f"Internal covariate shift (Santurkar et al. Def. 2.1): {c['dataset']}, "
                 f"{len(c['hidden'])} hidden ReLU layers of {c['hidden'][0]}, SGD lr={c['lr']} "
                 f"momentum={c['momentum']}, batch {c['batch_size']}, {seeds}")
    fig.tight_layout()
    return fw.save_figure(fig, path)


STUDY = fw.Study("ics", CLAIM, QUICK, FULL, experiment, table, verdict, plot)
run, summary = STUDY.run, STUDY.summary
