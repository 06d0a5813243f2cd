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
their running statistics are put back after each probe.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..core.autograd import grad
from ..core.tensor import Tensor
from ._helpers import progress_bar, save, study_context
from .ics import batch_stream, make_model

LABELS = ("standard", "BatchNorm")
COLORS = {"standard": "#1f77b4", "BatchNorm": "#d62728"}

# 600 steps are about 28 epochs: past that the networks interpolate the training set and the
# loss, its gradient and every measure here go to zero. The full study adds seeds.
QUICK = dict(dataset="digits", hidden=(64,) * 6, steps=600, every=30, batch_size=64, lr=0.1,
             etas=(0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0), hessian_every=60,
             power_iterations=20, init="kaiming", seeds=1)
FULL = dict(QUICK, every=15, power_iterations=30, seeds=5)


@dataclass
class SmoothnessResult:
    """Landscape probes per model at the measured steps.

    ``loss_along[label]`` and ``grad_change[label]``: arrays (len(seeds), len(steps),
    len(etas)) of L(x − η g) and ‖g − ∇L(x − η g)‖ for η = etas × lr; ``loss_here``,
    ``grad_norm`` (seeds, steps): L(x) and ‖g‖ at each measured step; ``hessian_top[label]``
    (seeds, len(hessian_steps)): the top Hessian eigenvalue; ``loss[label]`` (seeds, all
    steps); ``test_acc[label]``: one per seed.
    """

    settings: dict
    seed: int
    seeds: list
    steps: list
    etas: list
    hessian_steps: list
    loss: dict = field(default_factory=dict)
    loss_here: dict = field(default_factory=dict)
    loss_along: dict = field(default_factory=dict)
    grad_change: dict = field(default_factory=dict)
    grad_norm: dict = field(default_factory=dict)
    hessian_top: dict = field(default_factory=dict)
    train_acc: dict = field(default_factory=dict)
    test_acc: dict = field(default_factory=dict)

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
        lr = self.settings["lr"]
        dist = np.asarray(self.etas) * lr * np.asarray(self.grad_norm[label])[..., None]
        return (np.asarray(self.grad_change[label]) / np.maximum(dist, 1e-30)).max(-1)

    def acc(self, label: str) -> float:
        """Test accuracy, mean over seeds."""
        return float(np.mean(self.test_acc[label]))

    def median(self, what: str, label: str) -> float:
        """Median over seeds and measured steps of "loss_range", "relative_loss_range" (over
        L(x)), "grad_change" (the largest change over η at each step),
        "relative_grad_change" (the same over ‖∇L(x)‖), "beta" or "hessian_top"."""
        if what == "loss_range":
            v = self.loss_range(label)
        elif what == "relative_loss_range":
            v = self.loss_range(label, relative=True)
        elif what == "grad_change":
            v = self.max_grad_change(label)
        elif what == "relative_grad_change":
            v = self.max_grad_change(label, relative=True)
        elif what == "beta":
            v = self.beta(label)
        else:
            v = np.asarray(getattr(self, what)[label])
        v = np.asarray(v)
        return float(np.nanmedian(v)) if v.size else math.nan


def _loss(model, X, y):
    from ..nn.losses import cross_entropy

    return cross_entropy(model(Tensor(X)), y)


def _loss_and_grad(model, params, X, y) -> tuple:
    loss = _loss(model, X, y)
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
    bufs = [b.data.copy() for b in model.buffers()]
    try:
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
    finally:
        for p, o in zip(params, old):
            p.data[...] = o
        for b, v in zip(model.buffers(), bufs):
            b.data[...] = v
    return {"loss_here": loss0, "grad_norm": float(np.linalg.norm(flat0)),
            "loss_along": np.array(along), "grad_change": np.array(change)}


def top_hessian_eigenvalue(model, X, y, iterations: int = 20, seed=0) -> float:
    """The Hessian's eigenvalue of largest magnitude at the current parameters, by power
    iteration on Hessian-vector products: ``Hv = ∇(∇L · v)`` (``grad(create_graph=True)``).

    Returns the last Rayleigh quotient vᵀHv with ‖v‖ = 1. Buffers are restored afterwards.
    """
    params = list(model.parameters())
    bufs = [b.data.copy() for b in model.buffers()]
    rng = np.random.default_rng(seed)
    v = [rng.standard_normal(p.shape) for p in params]
    norm = math.sqrt(sum(float((a * a).sum()) for a in v))
    v = [a / norm for a in v]
    lam = math.nan
    try:
        for _ in range(iterations):
            loss = _loss(model, X, y)
            gs = grad(loss, params, create_graph=True)
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
    finally:
        for b, val in zip(model.buffers(), bufs):
            b.data[...] = val
    return lam


def _train_and_probe(label: str, ds, s: dict, seed: int, bar) -> dict:
    """One model, one seed: plain SGD for ``steps`` steps, probing every ``every`` steps."""
    from ..training import optim
    from ..training.train import accuracy

    model = make_model(label, ds.n_features, s["hidden"], ds.n_classes, init=s["init"],
                       rng=seed)
    opt = optim.SGD(model.parameters(), lr=s["lr"])
    stream = batch_stream(len(ds.y_train), s["batch_size"], np.random.default_rng(seed + 1))
    step_sizes = [e * s["lr"] for e in s["etas"]]
    out: dict = {k: [] for k in ("loss", "loss_here", "grad_norm", "loss_along",
                                 "grad_change", "hessian_top")}
    model.train()
    for step in range(s["steps"]):
        idx = next(stream)
        X, y = ds.X_train[idx], ds.y_train[idx]
        if s["hessian_every"] and step % s["hessian_every"] == 0:
            out["hessian_top"].append(top_hessian_eigenvalue(
                model, X, y, s["power_iterations"], seed=seed + step))
        if step % s["every"] == 0:
            for k, v in probe_gradient_direction(model, X, y, step_sizes).items():
                out[k].append(v)
        opt.zero_grad()
        loss = _loss(model, X, y)
        loss.backward()
        opt.step()
        value = float(loss.data)
        out["loss"].append(value)
        if not math.isfinite(value):
            raise RuntimeError(f"smoothness: the {label} model diverged at step {step} "
                               f"(lr={s['lr']}, seed {seed})")
        if bar is not None:
            bar.update(1)
    out = {k: np.array(v) for k, v in out.items()}
    out["train_acc"] = accuracy(model, ds.X_train, ds.y_train)
    out["test_acc"] = accuracy(model, ds.X_test, ds.y_test)
    return out


def run(quick: bool = False, seed: int = 0, progress: bool = True) -> SmoothnessResult:
    """Train a deep MLP with and without BatchNorm (same init, batches and learning rate,
    plain SGD), for each of ``seeds`` seeds, and probe the landscape along the gradient every
    ``every`` steps (the train/test split is fixed by ``seed``)."""
    from ..training import data

    s = dict(QUICK if quick else FULL)
    ds = data.load(s["dataset"], seed=seed)
    seeds = [seed + k for k in range(s["seeds"])]
    measured = list(range(0, s["steps"], s["every"]))
    hess = [t for t in range(s["steps"]) if s["hessian_every"] and t % s["hessian_every"] == 0]
    res = SmoothnessResult(settings=s, seed=seed, seeds=seeds, steps=measured,
                           etas=list(s["etas"]), hessian_steps=hess)
    with study_context():
        bar = progress_bar(len(LABELS) * len(seeds) * s["steps"], "smoothness", progress)
        try:
            for label in LABELS:
                runs = [_train_and_probe(label, ds, s, sd, bar) for sd in seeds]
                for k in ("loss", "loss_here", "loss_along", "grad_change", "grad_norm",
                          "hessian_top"):
                    getattr(res, k)[label] = np.stack([r[k] for r in runs])
                res.train_acc[label] = [r["train_acc"] for r in runs]
                res.test_acc[label] = [r["test_acc"] for r in runs]
        finally:
            if bar is not None:
                bar.close()
    return res


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
        c = COLORS.get(label)
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
        h = np.asarray(result.hessian_top.get(label, []))
        if h.size:
            a_hess.plot(result.hessian_steps, np.median(h, 0), color=c, marker="o",
                        label=label)
    lo, hi = result.etas[0], result.etas[-1]
    a_loss.set(title="training loss per step" + (f" (mean of {n} seeds)" if n > 1 else ""),
               xlabel="step", ylabel="cross-entropy",
               yscale="log")
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
    if not any(len(v) for v in result.hessian_top.values()):
        a_hess.text(0.5, 0.5, "not computed", ha="center", va="center",
                    transform=a_hess.transAxes)
    for ax in axes.ravel():
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    s = result.settings
    fig.suptitle(f"Smoothness along the gradient (Santurkar et al. Fig. 4): {s['dataset']}, "
                 f"{len(s['hidden'])} hidden ReLU layers of {s['hidden'][0]}, plain SGD "
                 f"lr={s['lr']}, batch {s['batch_size']}, "
                 + (f"median of seeds {result.seeds[0]}–{result.seeds[-1]}" if n > 1
                    else f"seed {result.seeds[0]}"))
    fig.tight_layout()
    return save(fig, path)


def summary(result: SmoothnessResult) -> str:
    """Medians over training and a verdict on Theory 2."""
    lines = ["Smoothness along the gradient (Santurkar et al. 2018, Fig. 4)", ""]
    cols = [("loss_range", "loss range"), ("relative_loss_range", "rel. range"),
            ("grad_change", "grad change"),
            ("relative_grad_change", "rel. change"), ("beta", "beta"),
            ("hessian_top", "top eig.")]
    lines.append(f"{'model':<12}{'test acc':>9}" + "".join(f"{t:>12}" for _, t in cols))
    for label in result.loss_along:
        lines.append(f"{label:<12}{result.acc(label):>9.1%}"
                     + "".join(f"{result.median(w, label):>12.4g}" for w, _ in cols))
    lines.append(f"medians over {len(result.seeds)} seed(s) x {len(result.steps)} measured steps "
                 f"({len(result.hessian_steps)} for the eigenvalue); steps of {result.etas[0]:g} to {result.etas[-1]:g} x "
                 f"lr along -grad")
    std, bn = "standard", "BatchNorm"
    if std in result.loss_along and bn in result.loss_along:
        ratios = {w: result.median(w, std) / result.median(w, bn)
                  for w, _ in cols if result.median(w, bn) > 0}
        smoother = [t for w, t in cols if ratios.get(w, 0) > 1.5]
        rougher = [t for w, t in cols if 0 < ratios.get(w, 1) < 1 / 1.5]
        lines.append("")
        lines.append("standard / BatchNorm: " + ", ".join(f"{t} {ratios[w]:.2g}x"
                                                          for w, t in cols if w in ratios))
        if smoother and not rougher:
            lines.append("Verdict on Theory 2: with BatchNorm the landscape along the "
                         f"gradient is smoother here ({', '.join(smoother)} at least 1.5x "
                         "smaller), as Santurkar et al. report.")
        elif rougher and not smoother:
            lines.append("Verdict on Theory 2: with BatchNorm the landscape is NOT smoother "
                         f"here ({', '.join(rougher)} larger with BatchNorm).")
        else:
            lines.append("Verdict on Theory 2: mixed: smoother with BatchNorm by "
                         f"{', '.join(smoother) or 'no measure'}, rougher by "
                         f"{', '.join(rougher) or 'no measure'} (1.5x threshold).")
    return "\n".join(lines)
