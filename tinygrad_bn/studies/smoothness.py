"""Smoothness of the loss landscape, measured as Santurkar et al. (2018, §3, Fig. 4) do.

The tutorial (Part 4, Theory 2) says BatchNorm makes the loss surface smoother and the
gradients more predictive, which allows larger learning rates. At points along training
(parameters x, the step's batch, gradient g = ∇L(x)) we move along the gradient by steps
η ∈ [½, 4] × the learning rate and record

- the **loss range**: max − min of L(x − η g) over η (how much the loss varies along the
  direction the optimizer takes);
- **gradient predictiveness**: ‖∇L(x) − ∇L(x − η g)‖ (how well the gradient here predicts
  the gradient there: small is predictive);
- the **effective β-smoothness**: max over η of ‖∇L(x) − ∇L(x − η g)‖ / ‖η g‖, a local
  Lipschitz constant of the gradient along the path;
- optionally the **top Hessian eigenvalue**, by power iteration on Hessian-vector products
  (``tinygrad_bn.grad(..., create_graph=True)`` twice).

BatchNorm layers are in training mode throughout (batch statistics of the step's batch), and
their running statistics are put back after each probe. The networks are the ICS study's
(``ics.make_model``), so Theories 1 and 2 are tested on the same models.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core.autograd import grad
from ..core.tensor import Tensor
from ..nn.losses import cross_entropy
from ..training import data, optim
from ..training.train import accuracy
from . import framework as fw
from .framework import snapshot
from .ics import make_model

CLAIM = "BatchNorm makes the loss landscape smoother and the gradients more predictive"
# 600 steps are about 28 epochs: past that the networks interpolate the training set and the
# loss, its gradient and every measure here go to zero. The full study adds seeds.
QUICK = dict(dataset="digits", hidden=(64,) * 6, steps=600, every=30, batch_size=64, lr=0.1,
             etas=(0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0), hessian_every=60,
             power_iterations=20, init="kaiming", n_seeds=1)
FULL = dict(every=15, power_iterations=30, n_seeds=5)
LABELS = ("standard", "BatchNorm")  # the arms
COLORS = {"standard": "#1f77b4", "BatchNorm": "#d62728"}
# the measures: result.median(key) for each, and its name in the table
MEASURES = [("loss_range", "loss range"), ("relative_loss_range", "rel. range"),
            ("grad_change", "grad change"), ("relative_grad_change", "rel. change"),
            ("beta", "beta"), ("hessian_top", "top eig.")]


# -- the probes ------------------------------------------------------------------------------
def _loss_and_grad(model, params, X, y) -> tuple:
    loss = cross_entropy(model(Tensor(X)), y)
    gs = grad(loss, params)
    return float(loss.data), [g.data.astype(np.float64) for g in gs]


def probe_gradient_direction(model, X, y, steps) -> dict:
    """Move the parameters along −∇L by each step size in ``steps`` and measure the loss and
    the gradient there; parameters and buffers are restored afterwards.

    Returns ``loss_here``, ``grad_norm`` (floats) and arrays over ``steps``: ``loss_along``
    (L(x − η g)), ``grad_change`` (‖∇L(x) − ∇L(x − η g)‖).
    """
    params = list(model.parameters())
    old = [p.data.copy() for p in params]
    with snapshot(model):
        loss0, g0 = _loss_and_grad(model, params, X, y)
        flat0 = np.concatenate([g.ravel() for g in g0])
        along, change = [], []
        for eta in steps:
            for p, o, g in zip(params, old, g0):
                p.data[...] = o - eta * g
            loss, g1 = _loss_and_grad(model, params, X, y)
            along.append(loss)
            change.append(float(np.linalg.norm(np.concatenate([g.ravel() for g in g1])
                                               - flat0)))
    return {"loss_here": loss0, "grad_norm": float(np.linalg.norm(flat0)),
            "loss_along": np.array(along), "grad_change": np.array(change)}


def top_hessian_eigenvalue(model, X, y, iterations: int = 20, seed=0) -> float:
    """The Hessian's eigenvalue of largest magnitude at the current parameters, by power
    iteration on Hessian-vector products: ``Hv = ∇(∇L · v)`` (``grad(create_graph=True)``).

    Returns the last Rayleigh quotient vᵀHv with ‖v‖ = 1. Buffers are restored afterwards.
    """
    params = list(model.parameters())
    rng = np.random.default_rng(seed)
    v = [rng.standard_normal(p.shape) for p in params]
    norm = math.sqrt(sum(float((a * a).sum()) for a in v))
    v = [a / norm for a in v]
    lam = math.nan
    with snapshot(model):
        for _ in range(iterations):
            gs = grad(cross_entropy(model(Tensor(X)), y), params, create_graph=True)
            gv = None
            for g, a in zip(gs, v):
                term = (g * Tensor(a.astype(g.dtype))).sum()
                gv = term if gv is None else gv + term
            hv = [h.data.astype(np.float64) for h in grad(gv, params)]
            lam = sum(float((a * h).sum()) for a, h in zip(v, hv))
            norm = math.sqrt(sum(float((h * h).sum()) for h in hv))
            if norm == 0 or not math.isfinite(norm):
                break
            v = [h / norm for h in hv]
    return lam


# -- the study -------------------------------------------------------------------------------
@dataclass(kw_only=True)
class SmoothnessResult(fw.Result):
    """Landscape probes per model at the measured steps.

    ``loss_along[label]`` and ``grad_change[label]``: arrays (len(seeds), len(steps),
    len(etas)) of L(x − η g) and ‖g − ∇L(x − η g)‖ for η = etas × lr; ``loss_here``,
    ``grad_norm`` (seeds, steps): L(x) and ‖g‖ at each measured step; ``hessian_top[label]``
    (seeds, len(hessian_steps)): the top Hessian eigenvalue; ``loss[label]`` (seeds, all
    steps); ``train_acc``, ``test_acc`` (seeds,).
    """

    seeds: list
    steps: list
    etas: list
    hessian_steps: list
    loss: dict
    loss_here: dict
    loss_along: dict
    grad_change: dict
    grad_norm: dict
    hessian_top: dict
    train_acc: dict
    test_acc: dict

    def loss_range(self, label: str, relative: bool = False) -> np.ndarray:
        """max − min over η of L(x − η g) (over L(x) when ``relative``), per seed and
        measured step."""
        a = np.asarray(self.loss_along[label])
        r = a.max(-1) - a.min(-1)
        return r / np.maximum(np.asarray(self.loss_here[label]), 1e-30) if relative else r

    def max_grad_change(self, label: str, relative: bool = False) -> np.ndarray:
        """max over η of ‖∇L(x) − ∇L(x − η g)‖ (over ‖∇L(x)‖ when ``relative``), per seed
        and measured step."""
        v = np.asarray(self.grad_change[label]).max(-1)
        return v / np.maximum(np.asarray(self.grad_norm[label]), 1e-30) if relative else v

    def beta(self, label: str) -> np.ndarray:
        """Effective β-smoothness per seed and measured step: max_η ‖Δ∇L‖ / ‖η g‖."""
        dist = (np.asarray(self.etas) * self.config["lr"]
                * np.asarray(self.grad_norm[label])[..., None])
        return (np.asarray(self.grad_change[label]) / np.maximum(dist, 1e-30)).max(-1)

    def acc(self, label: str) -> float:
        """Test accuracy, mean over seeds."""
        return float(np.mean(self.test_acc[label]))

    def median(self, what: str, label: str) -> float:
        """Median over seeds and measured steps of one of ``MEASURES``: "loss_range",
        "relative_loss_range" (over L(x)), "grad_change" (the largest change over η at each
        step), "relative_grad_change" (the same over ‖∇L(x)‖), "beta" or "hessian_top"."""
        relative = what.startswith("relative_")
        if what.endswith("loss_range"):
            v = self.loss_range(label, relative)
        elif what.endswith("grad_change"):
            v = self.max_grad_change(label, relative)
        elif what == "beta":
            v = self.beta(label)
        else:
            v = getattr(self, what)[label]
        v = np.asarray(v)
        return float(np.nanmedian(v)) if v.size else math.nan


def measure(cfg: dict, ds, label: str, seed: int) -> dict:
    """One model, one seed: plain SGD for ``steps`` steps, probing the landscape before the
    step every ``every`` steps (and the Hessian every ``hessian_every``)."""
    model = make_model(label, ds.n_features, cfg["hidden"], ds.n_classes, init=cfg["init"],
                       rng=seed)
    opt = optim.SGD(model.parameters(), lr=cfg["lr"])
    step_sizes = [e * cfg["lr"] for e in cfg["etas"]]
    rec: dict = {"loss_here": [], "grad_norm": [], "loss_along": [], "grad_change": [],
                 "hessian_top": []}

    def take_step(step, X, y) -> float:
        t = step - 1  # steps taken so far
        if cfg["hessian_every"] and t % cfg["hessian_every"] == 0:
            rec["hessian_top"].append(top_hessian_eigenvalue(
                model, X, y, cfg["power_iterations"], seed=seed + t))
        if t % cfg["every"] == 0:
            for k, v in probe_gradient_direction(model, X, y, step_sizes).items():
                rec[k].append(v)
        return fw.sgd_step(model, opt, X, y)

    losses = fw.train(model, ds, opt, steps=cfg["steps"], batch_size=cfg["batch_size"],
                      seed=seed + 1, take_step=take_step)
    return {"loss": np.array(losses), **{k: np.array(v) for k, v in rec.items()},
            "train_acc": accuracy(model, ds.X_train, ds.y_train),
            "test_acc": accuracy(model, ds.X_test, ds.y_test)}


def experiment(cfg: dict, seed: int, progress: bool) -> SmoothnessResult:
    """Both models with the same init, batches and learning rate, for each seed (the
    train/test split is fixed by ``seed``)."""
    ds = data.load(cfg["dataset"], seed=seed)
    seeds = [seed + k for k in range(cfg["n_seeds"])]
    runs = fw.sweep(LABELS, lambda label, _, s: measure(cfg, ds, label, s), seeds=seeds,
                    progress=progress, desc="smoothness")
    every_h = cfg["hessian_every"]
    return SmoothnessResult(config=cfg, seed=seed, seeds=seeds,
                            steps=list(range(0, cfg["steps"], cfg["every"])),
                            etas=list(cfg["etas"]),
                            hessian_steps=[t for t in range(cfg["steps"])
                                           if every_h and t % every_h == 0], **runs)


def table(result: SmoothnessResult) -> str:
    """Medians over training per model, and the ratios standard / BatchNorm."""
    lines = ["Smoothness along the gradient (Santurkar et al. 2018, Fig. 4)", ""]
    lines.append(f"{'model':<12}{'test acc':>9}" + "".join(f"{t:>12}" for _, t in MEASURES))
    for label in result.loss_along:
        lines.append(f"{label:<12}{result.acc(label):>9.1%}"
                     + "".join(f"{result.median(w, label):>12.4g}" for w, _ in MEASURES))
    lines.append(f"medians over {len(result.seeds)} seed(s) x {len(result.steps)} measured "
                 f"steps ({len(result.hessian_steps)} for the eigenvalue); steps of "
                 f"{result.etas[0]:g} to {result.etas[-1]:g} x lr along -grad")
    ratios = _ratios(result)
    lines.append("")
    lines.append("standard / BatchNorm: " + ", ".join(f"{t} {ratios[w]:.2g}x"
                                                      for w, t in MEASURES if w in ratios))
    return "\n".join(lines)


def _ratios(result) -> dict:
    """Each measure's median without BatchNorm over its median with it."""
    return {w: result.median(w, "standard") / result.median(w, "BatchNorm")
            for w, _ in MEASURES if result.median(w, "BatchNorm") > 0}


def verdict(result: SmoothnessResult) -> fw.Verdict:
    """Supported when some measures are at least 1.5x smaller with BatchNorm and none is
    1.5x larger; not supported in the reverse case; mixed otherwise."""
    ratios = _ratios(result)
    smoother = [t for w, t in MEASURES if ratios.get(w, 0) > 1.5]
    rougher = [t for w, t in MEASURES if 0 < ratios.get(w, 1) < 1 / 1.5]
    if smoother and not rougher:
        return fw.Verdict(True, "With BatchNorm the landscape along the gradient is smoother "
                                f"here ({', '.join(smoother)} at least 1.5x smaller), as "
                                "Santurkar et al. report.")
    if rougher and not smoother:
        return fw.Verdict(False, "With BatchNorm the landscape is NOT smoother here "
                                 f"({', '.join(rougher)} larger with BatchNorm).")
    return fw.Verdict(None, f"Smoother with BatchNorm by {', '.join(smoother) or 'no measure'}"
                            f", rougher by {', '.join(rougher) or 'no measure'} (1.5x "
                            "threshold).")


def plot(result: SmoothnessResult, path: str | None = None):
    """Santurkar et al.'s Fig. 4 panels (loss range along the gradient, gradient
    predictiveness, effective β-smoothness), the relative gradient change, the top Hessian
    eigenvalue and the training loss."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 8.6))
    (a_loss, a_land, a_pred), (a_beta, a_rel, a_hess) = axes
    steps = np.asarray(result.steps)
    n = len(result.seeds)
    for label in result.loss_along:  # per step: the median over seeds
        c = COLORS[label]
        loss = np.asarray(result.loss[label]).mean(0)
        a_loss.plot(np.arange(len(loss)), loss, color=c, lw=0.6, alpha=0.8,
                    label=f"{label} (test acc {result.acc(label):.1%})")
        along = np.asarray(result.loss_along[label])
        a_land.fill_between(steps, np.median(along.min(-1), 0), np.median(along.max(-1), 0),
                            color=c, alpha=0.35, label=f"{label}: min–max over η")
        a_land.plot(steps, np.median(result.loss_here[label], 0), color=c, lw=1,
                    label=f"{label}: L(x)")
        ch = np.asarray(result.grad_change[label])
        a_pred.fill_between(steps, np.median(ch.min(-1), 0), np.median(ch.max(-1), 0),
                            color=c, alpha=0.35, label=label)
        a_beta.plot(steps, np.median(result.beta(label), 0), color=c, marker=".", label=label)
        a_rel.plot(steps, np.median(result.max_grad_change(label, True), 0), color=c,
                   marker=".", label=label)
        h = np.asarray(result.hessian_top[label])
        if h.size:
            a_hess.plot(result.hessian_steps, np.median(h, 0), color=c, marker="o",
                        label=label)
    lo, hi = result.etas[0], result.etas[-1]
    a_loss.set(title="training loss per step" + (f" (mean of {n} seeds)" if n > 1 else ""),
               xlabel="step", ylabel="cross-entropy", yscale="log")
    a_land.set(title=f"loss landscape: L(x − ηg) for η ∈ [{lo:g}, {hi:g}] × lr",
               xlabel="step", ylabel="loss", yscale="log")
    a_pred.set(title="gradient predictiveness: ‖∇L(x) − ∇L(x − ηg)‖\n(band: min–max over η; "
               "lower is more predictive)", xlabel="step", ylabel="ℓ2 change of the gradient",
               yscale="log")
    a_beta.set(title="effective β-smoothness: max over η of ‖Δ∇L‖ / ‖ηg‖", xlabel="step",
               ylabel="β", yscale="log")
    a_rel.set(title="relative gradient change: max over η of ‖Δ∇L‖ / ‖∇L(x)‖\n(scale-free "
              "predictiveness)", xlabel="step", ylabel="relative change", yscale="log")
    a_hess.set(title="top Hessian eigenvalue\n(power iteration on Hessian-vector products)",
               xlabel="step", ylabel="λ_max", yscale="log")
    if not result.hessian_steps:
        a_hess.text(0.5, 0.5, "not computed", ha="center", va="center",
                    transform=a_hess.transAxes)
    for ax in axes.ravel():
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    c = result.config
    fig.suptitle(f"Smoothness along the gradient (Santurkar et al. Fig. 4): {c['dataset']}, "
                 f"{len(c['hidden'])} hidden ReLU layers of {c['hidden'][0]}, plain SGD "
                 f"lr={c['lr']}, batch {c['batch_size']}, "
                 + (f"median of seeds {result.seeds[0]}–{result.seeds[-1]}" if n > 1
                    else f"seed {result.seeds[0]}"))
    fig.tight_layout()
    return fw.save_figure(fig, path)


STUDY = fw.Study("smoothness", CLAIM, QUICK, FULL, experiment, table, verdict, plot)
run, summary = STUDY.run, STUDY.summary
