"""Scale invariance (tutorial Part 4, Theory 4): does BatchNorm decouple the direction of the
weights from their scale?

A weight matrix W whose output goes straight into BatchNorm (``Linear(bias=False) →
BatchNorm1d``) only matters through its direction: BN divides out the per-unit scale, so

1. the output is invariant to the scale: y(cW) = y(W) for every c > 0, up to BN's ε, which
   enters as ε/c² next to the variance (it breaks invariance for c near √(ε/σ²));
2. the loss L(cW) = L(W), so the gradient is orthogonal to W (d/dc L(cW) = ⟨∇_W L, W⟩ = 0)
   and scales as 1/c: ‖∇_{cW} L‖ = ‖∇_W L‖ / c;
3. under plain SGD the step is therefore perpendicular to W and ‖W‖ can only grow:
   ‖W_{t+1}‖² = ‖W_t‖² + lr²‖∇_t‖²; the *effective* learning rate of the direction,
   lr/‖w‖² per unit, decays;
4. weight decay shrinks ‖W‖ by (1 − lr·wd) per step against that growth, and the two balance
   at an equilibrium where the direction turns by √(2·lr·wd) radians per step whatever the
   init (van Laarhoven 2017; Zhang et al. 2019; Wan et al. 2021, "spherical motion dynamics").

The model: ``Linear(bias=False) → [BatchNorm1d] → ReLU`` × 2 (64 units), then a linear head,
on the 8×8 digits, plain SGD (no momentum). *Probe* (at initialization, on the whole training
set in training mode): every hidden weight matrix is multiplied by c over ten decades and we
record the relative change of the logits (with and without BN), of the first BN layer's
output (with its ε prediction), the gradient ratio c·‖∇_{cW} L‖ / ‖∇_W L‖ and the cosine
between ∇W and W. *Training* (every step, reported per window of ``every`` steps): ‖W‖², the
cosine between ∇W and W (whole matrix, and per unit: each row of W is scale-invariant on its
own), lr²‖∇W‖² (the growth that orthogonality predicts) and the angle W turns by. Weight
decay (``wd``) is applied to the hidden weights only, the BN-ed ones, so that it cannot act
on the function, only on the effective learning rate.

The arms: no BN (the control); BN without and with weight decay, from torch's init and from
that init times 0.1 and 10 (``init_scales``); and two "twins" of the BN run that start from
10·W with lr_W × 100: with ε × 100 as well they compute exactly the same function and updates
(the scale is only a learning-rate factor), with the same ε they differ by ε's effect alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .. import nn
from ..core.autograd import grad
from ..core.node import no_grad
from ..core.tensor import Tensor
from ..nn.losses import cross_entropy
from ..training import data, optim
from ..training.train import accuracy
from . import framework as fw
from .framework import snapshot

CLAIM = ("BatchNorm decouples the direction of the weights from their scale: the output is "
         "invariant to the scale of W, the gradient is orthogonal to W and shrinks as "
         "1/scale, so plain SGD grows ‖W‖ (a decaying effective learning rate) and weight "
         "decay holds it at an equilibrium")
QUICK = dict(hidden=(64, 64), lr=0.5, wd=1e-2, batch_size=64, steps=600, every=10,
             init_scales=(0.1, 10.0), twin_scale=10.0, eps=1e-5,
             probe_scales=tuple(float(10.0 ** (k / 2)) for k in range(-10, 11)), n_seeds=2)
FULL = dict(steps=3000, every=20, n_seeds=5)

# the thresholds of the verdict
TOL_INVARIANCE = 1e-3  # relative change of the logits that still counts as "invariant"
MIN_DECADES = 4.0      # ... over at least this many decades of c around 1
TOL_GRAD = 1e-2        # |c·‖∇_{cW}‖/‖∇_W‖ − 1| inside that window
TOL_COS = 1e-3         # |cos(∇W, W)| during training that counts as orthogonal
MIN_GROWTH = 1.05      # ‖W_T‖ / ‖W_0‖ without weight decay
TOL_PYTHAGORAS = 0.1   # |growth of ‖W‖² / Σ lr²‖∇‖² − 1|
TOL_SETTLE = 0.1       # relative change of ‖W‖² across the last third, with weight decay
TOL_ANGLE = 0.25       # |RMS angular step / √(2·lr·wd) − 1| over the last third
LOSS_REACHED = 0.1     # "steps to reach": first window whose mean training loss is below


class Arm(NamedTuple):
    """One training run's setting: BatchNorm or not, the factor on the hidden weights' init,
    weight decay on them or not, and the factors on their learning rate and on BN's ε."""

    bn: bool = True
    scale: float = 1.0
    wd: bool = False
    lr_factor: float = 1.0
    eps_factor: float = 1.0


def arms(cfg: dict) -> dict:
    """The training arms of config ``cfg``: name -> ``Arm``."""
    out = {"no BN": Arm(bn=False), "BN": Arm(), "BN + wd": Arm(wd=True)}
    for c in cfg["init_scales"]:
        out[f"BN, W×{c:g}"] = Arm(scale=c)
    for c in cfg["init_scales"]:
        out[f"BN + wd, W×{c:g}"] = Arm(scale=c, wd=True)
    c = cfg["twin_scale"]
    out[twin_name(c, exact=True)] = Arm(scale=c, lr_factor=c * c, eps_factor=c * c)
    out[twin_name(c, exact=False)] = Arm(scale=c, lr_factor=c * c)
    return out


def twin_name(c: float, exact: bool) -> str:
    """The name of the arm that starts from c·W with lr_W × c² (and ε × c² when ``exact``)."""
    return f"BN, W×{c:g}, lr×{c * c:g}" + (f", ε×{c * c:g}" if exact else "")


COLORS = {"no BN": "#7f7f7f", "BN": "#1f77b4", "BN + wd": "#d62728"}
PROBE_ARMS = ("BN", "no BN")


# -- the model and the probe --------------------------------------------------------------
def make_model(n_in: int, hidden, n_out: int, *, bn: bool = True, eps: float = 1e-5,
               rng=0) -> nn.Sequential:
    """``Linear(bias=False) → [BatchNorm1d(eps)] → ReLU`` per hidden width, then a ``Linear``
    head (torch's default init). A bias before BN would be removed by its mean anyway."""
    rng = np.random.default_rng(rng)
    layers, prev = [], n_in
    for h in hidden:
        layers.append(nn.Linear(prev, h, bias=False, rng=rng))
        if bn:
            layers.append(nn.BatchNorm1d(h, eps=eps))
        layers.append(nn.ReLU())
        prev = h
    layers.append(nn.Linear(prev, n_out, rng=rng))
    return nn.Sequential(*layers)


def hidden_weights(model) -> list:
    """The weight of every ``Linear`` but the head: the matrices BN makes scale-invariant."""
    return [m.weight for m in model if isinstance(m, nn.Linear)][:-1]


def bn_prediction(z: np.ndarray, c: float, eps: float) -> float:
    """The relative change of a BN layer's output (γ = 1, β = 0) when its input z (N, C)
    becomes c·z, from ε alone: per unit x̂ changes by the factor √((σ² + ε) / (σ² + ε/c²))."""
    var = z.var(axis=0)
    r = np.sqrt((var + eps) / (var + eps / c ** 2))
    weight = var / (var + eps)  # ‖x̂_j‖² / N at c = 1
    return float(np.sqrt(np.sum((r - 1) ** 2 * weight) / np.sum(weight)))


def probe(model, X, y, scales, eps: float) -> dict:
    """Multiply every hidden weight matrix by each c in ``scales`` and measure, against
    c = 1: the relative change of the logits (``out_rel``) and of the first BN layer's output
    (``bn1_rel``, with ``bn1_pred`` from ε alone), c·‖∇_{cW} L‖ / ‖∇_W L‖ per layer
    (``grad_ratio``) and cos(∇_{cW} L, W) per layer (``cos``); ``sigma2``: the median
    variance of the first layer's units at c = 1. Training-mode statistics; parameters and
    buffers are restored afterwards."""
    Ws = hidden_weights(model)
    W0 = [W.data.copy() for W in Ws]
    has_bn = isinstance(model[1], nn.BatchNorm1d)

    def at(c):
        with snapshot(model):
            for W, w0 in zip(Ws, W0):
                W.data[...] = c * w0
            out = model(Tensor(X))
            gs = grad(cross_entropy(out, y), Ws)
            bn1 = model[1](model[0](Tensor(X))).data.astype(np.float64) if has_bn else None
        return out.data.astype(np.float64), [g.data.astype(np.float64) for g in gs], bn1

    out1, g1, bn1_1 = at(1.0)
    z = X.astype(np.float64) @ W0[0].T.astype(np.float64)
    rec: dict = {"out_rel": [], "bn1_rel": [], "bn1_pred": [], "grad_ratio": [], "cos": []}
    for c in scales:
        out, g, bn1 = at(c)
        rec["out_rel"].append(np.linalg.norm(out - out1) / np.linalg.norm(out1))
        rec["grad_ratio"].append([c * np.linalg.norm(a) / np.linalg.norm(b)
                                  for a, b in zip(g, g1)])
        rec["cos"].append([_cos(a, w.astype(np.float64)) for a, w in zip(g, W0)])
        if has_bn:
            rec["bn1_rel"].append(np.linalg.norm(bn1 - bn1_1) / np.linalg.norm(bn1_1))
            rec["bn1_pred"].append(bn_prediction(z, c, eps))
        else:
            rec["bn1_rel"].append(math.nan)
            rec["bn1_pred"].append(math.nan)
    return {**{k: np.array(v, dtype=float) for k, v in rec.items()},
            "sigma2": float(np.median(z.var(axis=0)))}


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(np.sum(a * b) / (na * nb)) if na > 0 and nb > 0 else 0.0


def _angle(old: np.ndarray, new: np.ndarray) -> float:
    """The angle between two matrices (as vectors), precise for tiny angles."""
    u = old / np.linalg.norm(old)
    par = float(np.sum(new * u))
    return math.atan2(float(np.linalg.norm(new - par * u)), par)


# -- training --------------------------------------------------------------------------------
def measure(cfg: dict, ds, arm: Arm, seed: int) -> dict:
    """One training run of ``arm``: plain SGD for ``steps`` steps, recording at every step
    (before the update) ‖W‖², ‖∇W‖², cos(∇W, W) (whole matrix and per row) and, after it,
    the angle W turned by; summarized per window of ``every`` steps."""
    eps = cfg["eps"] * arm.eps_factor
    model = make_model(ds.n_features, cfg["hidden"], ds.n_classes, bn=arm.bn, eps=eps,
                       rng=seed)
    Ws = hidden_weights(model)
    for W in Ws:
        W.data *= np.float32(arm.scale)
    lr_w = cfg["lr"] * arm.lr_factor
    wd = cfg["wd"] if arm.wd else 0.0
    ids = {id(W) for W in Ws}
    others = [p for p in model.parameters() if id(p) not in ids]
    opt = optim.SGD([{"params": Ws, "lr": lr_w, "weight_decay": wd},
                     {"params": others}], lr=cfg["lr"])
    steps, every, L = cfg["steps"], cfg["every"], len(Ws)
    per_step = {k: np.full((steps, L), np.nan) for k in
                ("w_sq", "g_sq", "cos", "row_cos", "angle")}
    losses = np.full(steps, np.nan)

    def take_step(t, X, y) -> float:
        opt.zero_grad()
        loss = cross_entropy(model(Tensor(X)), y)
        loss.backward()
        old = [W.data.astype(np.float64) for W in Ws]
        for k, (w, W) in enumerate(zip(old, Ws)):
            g = W.grad.astype(np.float64)
            per_step["w_sq"][t - 1, k] = np.sum(w * w)
            per_step["g_sq"][t - 1, k] = np.sum(g * g)
            per_step["cos"][t - 1, k] = _cos(g, w)
            rows = np.sum(g * w, 1) / np.maximum(
                np.linalg.norm(g, axis=1) * np.linalg.norm(w, axis=1), 1e-300)
            per_step["row_cos"][t - 1, k] = np.max(np.abs(rows))
        opt.step()
        for k, (w, W) in enumerate(zip(old, Ws)):
            per_step["angle"][t - 1, k] = _angle(w, W.data.astype(np.float64))
        losses[t - 1] = float(loss.data)
        return losses[t - 1]

    try:
        fw.train(model, ds, opt, steps=steps, batch_size=cfg["batch_size"], seed=seed + 1,
                 take_step=take_step)
        diverged = False
    except RuntimeError:  # a non-finite loss: what was recorded stays, the rest is NaN
        diverged = True
    w_end = [float(np.sum(W.data.astype(np.float64) ** 2)) for W in Ws]
    test_acc = math.nan if diverged else accuracy(model, ds.X_test, ds.y_test)
    train_acc = math.nan if diverged else accuracy(model, ds.X_train, ds.y_train)
    recal = math.nan if diverged else recalibrated_accuracy(model, ds, cfg["batch_size"])
    n_win = steps // every
    win = lambda a: a[:n_win * every].reshape((n_win, every) + a.shape[1:])  # noqa: E731
    with np.errstate(all="ignore"):
        return {
            # ‖W‖² at steps 0, every, 2·every, ..., and at the end
            "w_sq": np.vstack([per_step["w_sq"][::every][:n_win], [w_end]]),
            # Σ over each window of lr²‖∇W‖²: the growth of ‖W‖² if ∇W ⟂ W (without wd)
            "sgd_growth": (lr_w ** 2 * win(per_step["g_sq"])).sum(1),
            "abs_cos": np.abs(win(per_step["cos"])).mean(1),
            "cos_max": np.abs(win(per_step["cos"])).max(1),
            "row_cos_max": win(per_step["row_cos"]).max(1),
            "angle": np.sqrt((win(per_step["angle"]) ** 2).mean(1)),  # RMS per window
            "loss": win(losses).mean(1),
            "diverged": diverged, "train_acc": train_acc, "test_acc": test_acc,
            "test_acc_recal": recal,
        }


def recalibrated_accuracy(model, ds, batch_size: int) -> float:
    """Test accuracy after BN's running statistics are recomputed for the final weights (a
    plain average over one pass of training batches), parameters and buffers restored after.
    The running averages of training (momentum 0.1: the last ~10 steps) lag behind weights
    whose direction still turns quickly; this removes that lag."""
    bns = [m for m in model if isinstance(m, nn.BatchNorm1d)]
    if not bns:
        return accuracy(model, ds.X_test, ds.y_test)
    momenta = [m.momentum for m in bns]
    with snapshot(model), no_grad():
        try:
            for m in bns:
                m.momentum = None  # cumulative average
                m.reset_running_stats()
            model.train()
            n = len(ds.y_train) // batch_size * batch_size
            for i in range(0, n, batch_size):
                model(Tensor(ds.X_train[i:i + batch_size]))
            return accuracy(model, ds.X_test, ds.y_test)
        finally:
            for m, mom in zip(bns, momenta):
                m.momentum = mom


def experiment(cfg: dict, seed: int, progress: bool) -> "ScaleInvarianceResult":
    """The probe at initialization (with and without BN), then every training arm, for each
    seed (the seed sets the init and the minibatch order; the split is fixed)."""
    ds = data.load("digits", seed=0)
    seeds = [seed + k for k in range(cfg["n_seeds"])]

    def probe_one(name, _, s):
        model = make_model(ds.n_features, cfg["hidden"], ds.n_classes, bn=name == "BN",
                           eps=cfg["eps"], rng=s)
        return probe(model, ds.X_train, ds.y_train, cfg["probe_scales"], cfg["eps"])

    probes = fw.sweep(PROBE_ARMS, probe_one, seeds=seeds, progress=progress,
                      desc="scale probe")
    table_of_arms = arms(cfg)
    runs = fw.sweep(list(table_of_arms), lambda name, _, s: measure(cfg, ds,
                                                                    table_of_arms[name], s),
                    seeds=seeds, progress=progress, desc="scale-invariance training")
    return ScaleInvarianceResult(
        config=cfg, seed=seed, seeds=seeds, arms=list(table_of_arms),
        arm_settings={k: a._asdict() for k, a in table_of_arms.items()},
        scales=[float(c) for c in cfg["probe_scales"]],
        out_rel=probes["out_rel"], bn1_rel=probes["bn1_rel"], bn1_pred=probes["bn1_pred"],
        grad_ratio=probes["grad_ratio"], probe_cos=probes["cos"], sigma2=probes["sigma2"],
        **runs)


# -- the result and what it says -------------------------------------------------------------
@dataclass(kw_only=True)
class ScaleInvarianceResult(fw.Result):
    """The probe, per probe arm ("BN", "no BN"), arrays over (seeds, scales): ``out_rel``,
    ``bn1_rel``, ``bn1_pred`` (NaN without BN); (seeds, scales, layers): ``grad_ratio``,
    ``probe_cos``; (seeds,): ``sigma2``.

    Training, per arm (names in ``arms``, settings in ``arm_settings``), arrays over (seeds,
    windows, layers): ``abs_cos`` (window mean of |cos(∇W, W)|), ``cos_max``, ``row_cos_max``
    (the largest |cos| of one unit's row), ``angle`` (RMS angle W turns by per step),
    ``sgd_growth`` (Σ lr²‖∇W‖² over the window); ``w_sq`` (seeds, windows + 1, layers), ‖W‖²
    at the window starts and at the end; ``loss`` (seeds, windows), the window's mean
    training loss; ``diverged``, ``train_acc``, ``test_acc`` (eval mode) and
    ``test_acc_recal`` (eval mode after BN's running statistics are recomputed for the final
    weights) (seeds,).
    """

    seeds: list
    arms: list
    arm_settings: dict
    scales: list
    out_rel: dict
    bn1_rel: dict
    bn1_pred: dict
    grad_ratio: dict
    probe_cos: dict
    sigma2: dict
    w_sq: dict
    sgd_growth: dict
    abs_cos: dict
    cos_max: dict
    row_cos_max: dict
    angle: dict
    loss: dict
    diverged: dict
    train_acc: dict
    test_acc: dict
    test_acc_recal: dict

    # -- the probe
    def invariance_window(self) -> tuple:
        """(smallest, largest) c of the probe grid, contiguous around c = 1, where the
        logits with BN change by at most ``TOL_INVARIANCE`` (worst seed)."""
        err = np.nanmax(np.asarray(self.out_rel["BN"], dtype=float), axis=0)
        c = np.asarray(self.scales)
        i = int(np.argmin(np.abs(np.log(c))))
        if not err[i] <= TOL_INVARIANCE:
            return (math.nan, math.nan)
        lo = hi = i
        while lo > 0 and err[lo - 1] <= TOL_INVARIANCE:
            lo -= 1
        while hi < len(c) - 1 and err[hi + 1] <= TOL_INVARIANCE:
            hi += 1
        return float(c[lo]), float(c[hi])

    def decades(self) -> float:
        lo, hi = self.invariance_window()
        return math.log10(hi / lo) if np.isfinite(lo) else 0.0

    def _in_window(self) -> np.ndarray:
        lo, hi = self.invariance_window()
        c = np.asarray(self.scales)
        return (c >= lo) & (c <= hi) if np.isfinite(lo) else np.zeros(len(c), bool)

    def grad_ratio_error(self) -> float:
        """The largest |c·‖∇_{cW}‖/‖∇_W‖ − 1| with BN over the invariance window."""
        g = np.asarray(self.grad_ratio["BN"], dtype=float)[:, self._in_window()]
        return float(np.nanmax(np.abs(g - 1))) if g.size else math.nan

    def c_star(self) -> float:
        """√(ε/σ²): where ε equals the (median) variance of a first-layer unit, so that
        invariance must break."""
        return float(math.sqrt(self.config["eps"] / np.median(self.sigma2["BN"])))

    def eps_prediction_error(self) -> float:
        """The largest |log10(measured / predicted)| of the first BN layer's change, over
        the c where the change is above float32 noise (1e-5)."""
        m = np.asarray(self.bn1_rel["BN"], dtype=float)
        p = np.asarray(self.bn1_pred["BN"], dtype=float)
        ok = (m > 1e-5) & (p > 1e-5)
        return float(np.max(np.abs(np.log10(m[ok] / p[ok])))) if ok.any() else math.nan

    def probe_at(self, what: str, arm: str, c: float) -> float:
        """Probe value ``what`` (``out_rel``, ...) of ``arm`` at the grid point nearest c,
        worst seed (max over seeds and layers)."""
        i = int(np.argmin(np.abs(np.log(np.asarray(self.scales) / c))))
        v = np.asarray(getattr(self, what)[arm], dtype=float)[:, i]
        return float(np.nanmax(v))

    # -- training
    def window_steps(self) -> np.ndarray:
        """The first step of each window (0, every, ...)."""
        return np.arange(np.asarray(self.loss[self.arms[0]]).shape[1]) * self.config["every"]

    def norm_ratio(self, arm: str) -> np.ndarray:
        """‖W_T‖ / ‖W_0‖ per seed and layer."""
        w = np.asarray(self.w_sq[arm], dtype=float)
        return np.sqrt(w[:, -1] / w[:, 0])

    def eff_lr(self, arm: str) -> np.ndarray:
        """The effective learning rate of a unit's direction, lr_W / ‖w_j‖² with ‖w_j‖² the
        mean squared row norm, at the window starts and the end: (seeds, windows + 1,
        layers)."""
        lr_w = self.config["lr"] * self.arm_settings[arm]["lr_factor"]
        rows = np.asarray(self.config["hidden"], dtype=float)
        return lr_w * rows / np.asarray(self.w_sq[arm], dtype=float)

    def pythagoras(self, arm: str = "BN") -> np.ndarray:
        """The growth of ‖W‖² over training divided by Σ lr²‖∇W‖² (1 if every step is
        perpendicular to W), per seed and layer."""
        w = np.asarray(self.w_sq[arm], dtype=float)
        return (w[:, -1] - w[:, 0]) / np.asarray(self.sgd_growth[arm], dtype=float).sum(1)

    def monotone_fraction(self, arm: str = "BN") -> float:
        """The fraction of windows over which ‖W‖² grew (all seeds and layers)."""
        d = np.diff(np.asarray(self.w_sq[arm], dtype=float), axis=1)
        return float(np.mean(d >= 0))

    def _tail(self) -> slice:
        n = np.asarray(self.loss[self.arms[0]]).shape[1]
        return slice(n - max(n // 3, 2), n)

    def settle_change(self, arm: str = "BN + wd") -> np.ndarray:
        """|mean ‖W‖² over the second half of the last third − over its first half| /
        their mean, per seed and layer: 0 at an equilibrium."""
        w = np.asarray(self.w_sq[arm], dtype=float)[:, :-1][:, self._tail()]
        h = w.shape[1] // 2
        a, b = w[:, :h].mean(1), w[:, h:].mean(1)
        return np.abs(b - a) / (0.5 * (a + b))

    def predicted_angle(self) -> float:
        """The equilibrium angle per step with weight decay: tan θ = √(1 − (1−λ)²)/(1 − λ),
        λ = lr·wd (≈ √(2·lr·wd))."""
        lam = self.config["lr"] * self.config["wd"]
        return math.atan(math.sqrt(1 - (1 - lam) ** 2) / (1 - lam))

    def tail_angle(self, arm: str = "BN + wd") -> np.ndarray:
        """The RMS angle W turns by per step over the last third, per seed and layer."""
        a = np.asarray(self.angle[arm], dtype=float)[:, self._tail()]
        return np.sqrt(np.mean(a ** 2, axis=1))

    def median_cos(self, arm: str) -> float:
        """Median over seeds, windows and layers of the window mean |cos(∇W, W)|."""
        return float(np.nanmedian(np.asarray(self.abs_cos[arm], dtype=float)))

    def max_cos(self, arm: str, per_row: bool = False) -> float:
        """The largest |cos(∇W, W)| of any step (of any unit's row when ``per_row``)."""
        v = self.row_cos_max if per_row else self.cos_max
        return float(np.nanmax(np.asarray(v[arm], dtype=float)))

    def steps_to(self, arm: str, loss: float = LOSS_REACHED) -> float:
        """The first window start whose mean training loss (over seeds) is below ``loss``."""
        m = np.nanmean(np.asarray(self.loss[arm], dtype=float), axis=0)
        hit = np.flatnonzero(m < loss)
        return float(self.window_steps()[hit[0]]) if len(hit) else math.nan

    def twin_gap(self, exact: bool = True) -> float:
        """The largest |difference| of the window mean training loss between the twin that
        starts from c·W with lr_W × c² (and ε × c² when ``exact``) and the BN run."""
        twin = twin_name(self.config["twin_scale"], exact)
        return float(np.nanmax(np.abs(np.asarray(self.loss[twin], dtype=float)
                                      - np.asarray(self.loss["BN"], dtype=float))))

    def scale_arms(self, wd: bool) -> list:
        """The BN arms that differ only by the init scale (1 and ``init_scales``), without
        or with weight decay, ordered by scale."""
        names = [n for n in self.arms if self.arm_settings[n]["bn"]
                 and self.arm_settings[n]["wd"] == wd
                 and self.arm_settings[n]["lr_factor"] == 1.0]
        return sorted(names, key=lambda n: self.arm_settings[n]["scale"])

    def final_norm_spread(self, wd: bool) -> float:
        """max / min over the init scales of the final ‖W‖ (mean over seeds; worst layer)."""
        w = np.array([np.sqrt(np.asarray(self.w_sq[n], dtype=float)[:, -1]).mean(0)
                      for n in self.scale_arms(wd)])
        return float(np.max(w.max(0) / w.min(0)))

    def acc(self, arm: str, recalibrated: bool = False) -> float:
        """Final test accuracy, mean over seeds (after recomputing BN's running statistics
        for the final weights when ``recalibrated``)."""
        v = self.test_acc_recal if recalibrated else self.test_acc
        return float(np.nanmean(np.asarray(v[arm], dtype=float)))

    def claims(self) -> dict:
        """Each sub-claim's ``Verdict``, computed from the data: "invariance",
        "orthogonality", "growth", "equilibrium"."""
        return {"invariance": _invariance(self), "orthogonality": _orthogonality(self),
                "growth": _growth(self), "equilibrium": _equilibrium(self)}


def _invariance(r: ScaleInvarianceResult) -> fw.Verdict:
    lo, hi = r.invariance_window()
    dec = r.decades()
    none10 = r.probe_at("out_rel", "no BN", 10.0)
    if not np.isfinite(lo):
        return fw.Verdict(False, f"With BN the logits change by more than {TOL_INVARIANCE:g} "
                                 "already next to c = 1.")
    capped = " (the whole grid above 1)" if hi >= max(r.scales) else ""
    text = (f"With BN the logits change by at most {TOL_INVARIANCE:g} (relative) for c from "
            f"{lo:g} to {hi:g}{capped}, {dec:.1f} decades; without BN they change by "
            f"{none10:.3g} already at c = 10. Invariance breaks for small c as ε predicts: "
            f"σ² of a first-layer unit is {np.median(r.sigma2['BN']):.3g}, so ε/c² reaches "
            f"it at c* = √(ε/σ²) ≈ {r.c_star():.2g}, and the first BN layer's change agrees "
            f"with the ε formula to {10 ** r.eps_prediction_error() - 1:.1%} over the grid.")
    return fw.Verdict(dec >= MIN_DECADES, text)


def _orthogonality(r: ScaleInvarianceResult) -> fw.Verdict:
    bn_arms = [n for n in r.arms if r.arm_settings[n]["bn"]]
    med = max(r.median_cos(n) for n in bn_arms)
    worst = max(r.max_cos(n) for n in bn_arms)
    row = max(r.max_cos(n, per_row=True) for n in bn_arms)
    gerr = r.grad_ratio_error()
    ok = med < TOL_COS and np.isfinite(gerr) and gerr < TOL_GRAD
    text = (f"During training |cos(∇W, W)| has a median of {med:.2g} (largest {worst:.2g}; "
            f"per unit's row {row:.2g}) in the BN runs, against {r.median_cos('no BN'):.2g} "
            f"(largest {r.max_cos('no BN'):.2g}) without BN. At initialization "
            f"c·‖∇_(cW) L‖/‖∇_W L‖ stays within {gerr:.2g} of 1 over the invariance window "
            f"(without BN it is {r.probe_at('grad_ratio', 'no BN', 10.0):.3g} at c = 10).")
    return fw.Verdict(bool(ok), text)


def _growth(r: ScaleInvarianceResult) -> fw.Verdict:
    ratio = np.nanmedian(r.norm_ratio("BN"), axis=0)  # per layer
    pyth = np.nanmedian(r.pythagoras("BN"), axis=0)
    mono = r.monotone_fraction("BN")
    eff = np.nanmedian(np.asarray(r.eff_lr("BN"))[:, -1] / np.asarray(r.eff_lr("BN"))[:, 0],
                       axis=0)
    ok = (np.all(ratio >= MIN_GROWTH) and mono >= 0.99
          and np.all(np.abs(pyth - 1) <= TOL_PYTHAGORAS))
    layers = ", ".join(f"{v:.3g}x" for v in ratio)
    text = (f"Without weight decay ‖W‖ grew in {mono:.0%} of the windows, by {layers} "
            f"(hidden layers, median over seeds) in {r.config['steps']} steps; the growth of "
            f"‖W‖² is {', '.join(f'{v:.3f}' for v in pyth)} times Σ lr²‖∇W‖², as orthogonal "
            f"steps predict; the effective learning rate fell to "
            f"{', '.join(f'{v:.2f}' for v in eff)} of its initial value.")
    return fw.Verdict(bool(ok), text)


def _equilibrium(r: ScaleInvarianceResult) -> fw.Verdict:
    change = np.nanmax(np.nanmedian(r.settle_change("BN + wd"), axis=0))
    ang = np.nanmedian(r.tail_angle("BN + wd"), axis=0)
    pred = r.predicted_angle()
    ok = change <= TOL_SETTLE and np.all(np.abs(ang / pred - 1) <= TOL_ANGLE)
    start = np.nanmedian(np.sqrt(np.asarray(r.w_sq["BN + wd"], dtype=float)[:, 0]), axis=0)
    end = np.nanmedian(np.sqrt(np.asarray(r.w_sq["BN + wd"], dtype=float)[:, -1]), axis=0)
    text = (f"With weight decay {r.config['wd']:g} ‖W‖ went from "
            f"{', '.join(f'{v:.3g}' for v in start)} to {', '.join(f'{v:.3g}' for v in end)} "
            f"and then held: over the last third it moved by at most {change:.1%}; W turns by "
            f"{', '.join(f'{v:.3g}' for v in ang)} rad per step there, against "
            f"√(2·lr·wd) ≈ {pred:.3g} predicted at equilibrium. From inits 0.1x to 10x the "
            f"final ‖W‖ differ by {r.final_norm_spread(True):.2f}x with weight decay, "
            f"{r.final_norm_spread(False):.3g}x without.")
    return fw.Verdict(bool(ok), text)


# -- telling it ------------------------------------------------------------------------------
def _model(result) -> str:
    h = result.config["hidden"]
    return f"{len(h)}×{h[0]} ReLU MLP on digits"


def table(result: ScaleInvarianceResult) -> str:
    """The probe over c, the training arms, and the sub-claims' verdicts."""
    cfg = result.config
    lines = [f"Scale invariance: {_model(result)}, SGD lr {cfg['lr']:g} (wd {cfg['wd']:g} on "
             f"the hidden weights where noted), {cfg['steps']} steps, batch "
             f"{cfg['batch_size']}, seeds {result.seeds} ({result.seconds:.1f} s)", "",
             "Probe at init: all hidden W scaled by c (worst seed)",
             f"{'c':>8}{'logits BN':>12}{'logits noBN':>13}{'BN1 out':>10}{'ε pred.':>10}"
             f"{'c·|∇|ratio':>12}{'|cos| BN':>10}"]
    for i, c in enumerate(result.scales):
        row = [np.nanmax(np.asarray(result.out_rel["BN"])[:, i]),
               np.nanmax(np.asarray(result.out_rel["no BN"])[:, i]),
               np.nanmax(np.asarray(result.bn1_rel["BN"])[:, i]),
               np.nanmax(np.asarray(result.bn1_pred["BN"])[:, i])]
        g = np.asarray(result.grad_ratio["BN"])[:, i]
        cos = np.nanmax(np.abs(np.asarray(result.probe_cos["BN"])[:, i]))
        lines.append(f"{c:>8.3g}" + "".join(f"{v:>12.3g}" if k == 0 else
                                            f"{v:>13.3g}" if k == 1 else f"{v:>10.3g}"
                                            for k, v in enumerate(row))
                     + f"{np.nanmedian(g):>12.5g}{cos:>10.2g}")
    lo, hi = result.invariance_window()
    reach = f"steps to loss<{LOSS_REACHED:g}"
    lines += [f"invariant (≤ {TOL_INVARIANCE:g}) for c in [{lo:g}, {hi:g}]; "
              f"c* = √(ε/σ²) ≈ {result.c_star():.2g}", "",
              "Training (medians over seeds; layer 1 / layer 2)",
              f"{'arm':<24}{'test acc':>9}{'recal.':>8}{'‖W_T‖/‖W_0‖':>15}{'eff. lr end':>16}"
              f"{'median|cos|':>12}{'RMS angle, last ⅓':>20}{reach:>18}"]
    for arm in result.arms:
        nr = np.nanmedian(result.norm_ratio(arm), axis=0)
        eff = np.nanmedian(result.eff_lr(arm)[:, -1], axis=0)
        ang = np.nanmedian(result.tail_angle(arm), axis=0)
        k = int(np.sum(np.asarray(result.diverged[arm], dtype=bool)))
        lines.append(f"{arm:<24}{result.acc(arm):>9.3f}{result.acc(arm, True):>8.3f}"
                     f"{nr[0]:>8.3g} /{nr[-1]:<6.3g}{eff[0]:>8.3g} /{eff[-1]:<6.3g}"
                     f"{result.median_cos(arm):>12.2g}{ang[0]:>11.3g} /{ang[-1]:<7.3g}"
                     f"{result.steps_to(arm):>18g}" + (f"  [{k} diverged]" if k else ""))
    lines.append("test acc: eval mode with the running statistics of training; recal.: the "
                 "same after recomputing them for the final weights")
    lines.append(f"eff. lr = lr_W / mean ‖w_j‖² (per unit; {cfg['lr'] * 3:g} at torch's "
                 f"init, whose rows have ‖w_j‖² ≈ 1/3); √(2·lr·wd) ≈ "
                 f"{result.predicted_angle():.3g} rad")
    tc = cfg["twin_scale"]
    lines.append(f"twin runs (W×{tc:g}, lr_W×{tc ** 2:g}) vs BN: "
                 f"largest |Δ loss| (window means) {result.twin_gap(True):.2g} with ε scaled "
                 f"too, {result.twin_gap(False):.2g} with the same ε")
    lines.append("")
    for name, v in result.claims().items():
        lines.append(f"[{name}] {v}")
    return "\n".join(lines)


def verdict(result: ScaleInvarianceResult) -> fw.Verdict:
    """Supported when all four sub-claims are (invariance over ≥ 4 decades; |cos| below
    1e-3 and the 1/c law to 1%; ‖W‖ growing by Pythagoras without weight decay; an
    equilibrium at √(2·lr·wd) per step with it); not supported when the first two fail (then
    there is no decoupling); mixed otherwise."""
    claims = result.claims()
    ok = {k: v.supported for k, v in claims.items()}
    held = [k for k, v in ok.items() if v]
    failed = [k for k, v in ok.items() if not v]
    if not failed:
        supported, head = True, "All four sub-claims hold on this engine."
    elif not ok["invariance"] and not ok["orthogonality"]:
        supported, head = False, "Neither scale invariance nor orthogonality holds here."
    else:
        supported, head = None, (f"Holds: {', '.join(held) or 'none'}; fails: "
                                 f"{', '.join(failed)}.")
    twin_e, twin = result.twin_gap(True), result.twin_gap(False)
    c = result.config["twin_scale"]
    plain, decayed = result.scale_arms(False), result.scale_arms(True)
    scales = ", ".join(f"{result.arm_settings[n]['scale']:g}" for n in plain)

    def listed(values, fmt):
        return ", ".join(format(v, fmt) for v in values)

    small = plain[0]  # the smallest init scale, without weight decay
    e0 = np.nanmedian(result.eff_lr(small)[:, 0])
    e1 = np.nanmedian(result.eff_lr(small)[:, -1])
    practice = (
        f"What the decoupling buys: the scale of a BN-ed weight is only a learning-rate "
        f"factor. A run from {c:g}·W with lr_W × {c * c:g} (and ε × {c * c:g}) tracks the BN "
        f"run to {twin_e:.2g} in the training loss (float32 rounding), to {twin:.2g} with the "
        f"same ε. At one learning rate, init scales {scales} give effective learning rates "
        f"{listed([np.nanmedian(result.eff_lr(n)[:, 0]) for n in plain], '.3g')} at the "
        f"start; without weight decay the loss falls below {LOSS_REACHED:g} after "
        f"{listed([result.steps_to(n) for n in plain], 'g')} steps and the final test "
        f"accuracies are {listed([result.acc(n) for n in plain], '.3f')}: SGD corrects a small "
        f"init by itself (‖W‖ grows {np.nanmedian(result.norm_ratio(small)):.3g}x, the "
        f"effective learning rate falls from {e0:.3g} to {e1:.3g}), a large one it does not. "
        f"With weight decay ‖W‖ forgets the init (final norms within "
        f"{result.final_norm_spread(True):.2f}x, against {result.final_norm_spread(False):.3g}x "
        f"without; test accuracies {listed([result.acc(n) for n in decayed], '.3f')}). Weight "
        f"decay on these weights cannot regularize the function (it is invariant to their "
        f"scale); what it changes is the effective learning rate: at the end "
        f"{np.nanmedian(result.eff_lr('BN + wd')[:, -1]):.3g} with weight decay against "
        f"{np.nanmedian(result.eff_lr('BN')[:, -1]):.3g} without. Here that costs test "
        f"accuracy ({result.acc('BN + wd'):.3f} against {result.acc('BN'):.3f}); part of it is "
        f"BN's running statistics lagging behind a direction that keeps turning (recomputed "
        f"for the final weights: {result.acc('BN + wd', True):.3f} against "
        f"{result.acc('BN', True):.3f}).")
    text = " ".join([head] + [f"({k}) {v.text}" for k, v in claims.items()] + [practice])
    return fw.Verdict(supported, text)


def plot(result: ScaleInvarianceResult, path=None):
    """Eight panels: the probe (the logits' change over c; the gradient's 1/c law); over
    training, |cos(∇W, W)|, ‖W‖² with the Pythagoras prediction, the effective learning rate
    of every BN arm and the angle W turns by per step (first hidden layer); the training loss
    of the init scales and the twins; the test accuracy of every arm."""
    import matplotlib.pyplot as plt

    c = np.asarray(result.scales)
    fig, axes = plt.subplots(2, 4, figsize=(22, 9.5))
    (a1, a2, a3, a7), (a4, a5, a6, a8) = axes

    def worst(v):  # over seeds; c = 1 is the reference (a change of 0) and is left out
        v = np.nanmax(np.asarray(v, dtype=float), axis=0)
        return np.where(np.isclose(c, 1.0), np.nan, v)

    # (1) invariance
    a1.plot(c, worst(result.out_rel["BN"]), "-o", color=COLORS["BN"], lw=2, ms=4,
            label="logits, with BN")
    a1.plot(c, worst(result.out_rel["no BN"]), "-o", color=COLORS["no BN"], lw=2, ms=4,
            label="logits, without BN")
    a1.plot(c, worst(result.bn1_rel["BN"]), "s", color="#2ca02c", ms=5, mfc="none",
            label="first BN layer's output")
    a1.plot(c, worst(result.bn1_pred["BN"]), "-", color="#2ca02c", lw=1,
            label="… predicted from ε alone")
    a1.axhline(TOL_INVARIANCE, color="0.5", ls="--", lw=1,
               label=f"tolerance {TOL_INVARIANCE:g}")
    a1.axvline(result.c_star(), color="#2ca02c", ls=":", lw=1.2,
               label=f"c* = √(ε/σ²) ≈ {result.c_star():.2g}")
    lo, hi = result.invariance_window()
    if np.isfinite(lo):
        a1.axvspan(lo, hi, color=COLORS["BN"], alpha=0.07)
    a1.set(xscale="log", yscale="log", ylim=(1e-8, 1e3), xlabel="scale c of every hidden W",
           ylabel="‖y(cW) − y(W)‖ / ‖y(W)‖ (worst seed)",
           title="1. Output invariant to the scale of W")
    a1.legend(fontsize=7.5, loc="lower left")
    # (2) gradient 1/c law
    for arm, ls in (("BN", "-o"), ("no BN", "-o")):
        g = np.nanmedian(np.asarray(result.grad_ratio[arm], dtype=float), axis=0)
        for k in range(g.shape[-1]):
            a2.plot(c, g[:, k], ls if k == 0 else "--", color=COLORS[arm], lw=2 - k * 0.8,
                    ms=4 if k == 0 else 0,
                    label=f"{'with' if arm == 'BN' else 'without'} BN, layer {k + 1}")
    a2.axhline(1, color="0.5", ls="--", lw=1, label="1/c law (ratio 1)")
    a2.set(xscale="log", yscale="log", ylim=(1e-3, 1e4), xlabel="scale c of every hidden W",
           ylabel="c · ‖∇_(cW) L‖ / ‖∇_W L‖ (median seed)",
           title="2. Gradient shrinks as 1/c (at init)")
    a2.legend(fontsize=7.5, loc="upper left")
    steps = result.window_steps()
    # (3) cosine during training
    for arm in ("no BN", "BN", "BN + wd"):
        v = np.nanmedian(np.asarray(result.abs_cos[arm], dtype=float), axis=0)
        a3.plot(steps, v[:, 0], color=COLORS[arm], lw=1.6, label=f"{arm}, layer 1")
        a3.plot(steps, v[:, -1], color=COLORS[arm], lw=1, ls="--", label=f"{arm}, layer 2")
    a3.axhline(TOL_COS, color="0.5", ls=":", lw=1, label=f"threshold {TOL_COS:g}")
    a3.set(yscale="log", xlabel="step", ylabel=f"|cos(∇W, W)|, mean over "
                                               f"{result.config['every']} steps",
           title="2. Gradient orthogonal to W during training")
    a3.legend(fontsize=7.5, ncol=2, loc="center right")
    # (4) ‖W‖² and Pythagoras
    s_end = np.append(steps, result.config["steps"])
    for arm in ("no BN", "BN", "BN + wd"):
        w = np.nanmedian(np.asarray(result.w_sq[arm], dtype=float), axis=0)[:, 0]
        a4.plot(s_end, w, color=COLORS[arm], lw=2, label=arm)
    w = np.asarray(result.w_sq["BN"], dtype=float)[:, :, 0]
    pred = w[:, :1] + np.concatenate([np.zeros((w.shape[0], 1)),
                                      np.cumsum(np.asarray(result.sgd_growth["BN"])[:, :, 0],
                                                axis=1)], axis=1)
    a4.plot(s_end, np.nanmedian(pred, axis=0), color="k", ls=":", lw=1.5,
            label="‖W₀‖² + Σ lr²‖∇W‖² (BN)")
    a4.set(xlabel="step", ylabel="‖W‖² (first hidden layer, median seed)",
           title="3./4. ‖W‖ grows without wd, settles with wd")
    a4.legend(fontsize=8)
    # (5) effective learning rate, every BN arm
    styles = {1.0: "-"}
    for arm in result.arms:
        st = result.arm_settings[arm]
        if not st["bn"] or st["lr_factor"] != 1.0:
            continue
        col = COLORS["BN + wd"] if st["wd"] else COLORS["BN"]
        ls = styles.get(st["scale"], "--" if st["scale"] > 1 else ":")
        e = np.nanmedian(result.eff_lr(arm), axis=0)[:, 0]
        a5.plot(s_end, e, color=col, ls=ls, lw=2 if st["scale"] == 1 else 1.4, label=arm)
    a5.set(yscale="log", xlabel="step", ylabel="lr / mean ‖w_j‖² (first hidden layer)",
           title="Effective learning rate: init scale and weight decay")
    a5.legend(fontsize=7.5)
    # (6) angular update
    for arm in result.arms:
        st = result.arm_settings[arm]
        if not st["bn"] or st["lr_factor"] != 1.0:
            continue
        col = COLORS["BN + wd"] if st["wd"] else COLORS["BN"]
        ls = styles.get(st["scale"], "--" if st["scale"] > 1 else ":")
        a = np.nanmedian(np.asarray(result.angle[arm], dtype=float), axis=0)[:, 0]
        a6.plot(steps, a, color=col, ls=ls, lw=1.8 if st["scale"] == 1 else 1.2, label=arm)
    a6.axhline(result.predicted_angle(), color="k", ls=":", lw=1.5,
               label=f"√(2·lr·wd) ≈ {result.predicted_angle():.3g}")
    a6.set(yscale="log", xlabel="step", ylabel="angle W turns by per step (rad, RMS)",
           title="4. With wd the rotation settles at √(2·lr·wd)")
    a6.legend(fontsize=7.5)
    # (7) what it buys: the training loss of the init scales and of the twins
    for arm in result.scale_arms(False) + result.scale_arms(True):
        st = result.arm_settings[arm]
        col = COLORS["BN + wd"] if st["wd"] else COLORS["BN"]
        ls = styles.get(st["scale"], "--" if st["scale"] > 1 else ":")
        v = np.nanmedian(np.asarray(result.loss[arm], dtype=float), axis=0)
        a7.plot(steps, v, color=col, ls=ls, lw=1.8 if st["scale"] == 1 else 1.2, label=arm)
    tc = result.config["twin_scale"]
    for exact, col in ((True, "k"), (False, "#ff7f0e")):
        arm = twin_name(tc, exact)
        v = np.nanmedian(np.asarray(result.loss[arm], dtype=float), axis=0)
        a7.plot(steps, v, color=col, ls=(0, (1, 3)), lw=1.6, label=arm)
    a7.set(yscale="log", xlabel="step", ylabel=f"training loss, mean over "
                                               f"{result.config['every']} steps (median seed)",
           title="Init scale = a learning-rate factor")
    a7.legend(fontsize=7, loc="upper right")
    # (8) test accuracy per arm
    names = result.arms
    acc = [np.asarray(result.test_acc[n], dtype=float) for n in names]
    cols = [COLORS["no BN"] if not result.arm_settings[n]["bn"] else
            COLORS["BN + wd"] if result.arm_settings[n]["wd"] else COLORS["BN"]
            for n in names]
    y = np.arange(len(names))
    a8.barh(y, [np.nanmean(a) for a in acc], color=cols, alpha=0.55)
    for k, a in enumerate(acc):
        a8.scatter(a, np.full(len(a), y[k]), color="k", s=8, zorder=3,
                   label="seeds (eval mode)" if k == 0 else None)
    a8.scatter([result.acc(n, True) for n in names], y, marker="D", s=28, facecolor="none",
               edgecolor="k", zorder=4, label="mean, running statistics recomputed")
    a8.legend(fontsize=7, loc="lower left")
    a8.set_yticks(y, names, fontsize=8)
    a8.invert_yaxis()
    lo_acc = np.nanmin([np.nanmin(a) for a in acc] + [result.acc(n, True) for n in names])
    a8.set(xlim=(max(0.0, lo_acc - 0.03), 1.0), xlabel="final test accuracy (dots: seeds)",
           ylabel="", title=f"Test accuracy after {result.config['steps']} steps")
    for ax in axes.flat:
        ax.grid(alpha=0.3, which="both" if ax in (a1, a2) else "major")
    cfg = result.config
    fig.suptitle(f"Scale invariance: {_model(result)}, Linear(bias=False) → BN, plain SGD "
                 f"lr {cfg['lr']:g}, wd {cfg['wd']:g} on the hidden weights, "
                 f"{len(result.seeds)} seed(s)")
    fig.tight_layout()
    return fw.save_figure(fig, path)


STUDY = fw.Study("scale_invariance", CLAIM, QUICK, FULL, experiment, table, verdict, plot)
run, summary = STUDY.run, STUDY.summary
