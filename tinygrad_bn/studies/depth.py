"""Depth (tutorial summary): does BatchNorm prevent both vanishing *and exploding* gradients?

Yang et al. (2019, "A Mean Field Theory of Batch Normalization", ICLR) prove the opposite
for exploding gradients: in a deep fully connected BatchNorm network *without* skip
connections, the gradient norm at initialization grows geometrically with depth going
backwards (from the output towards the input), whatever the non-linearity; for ReLU in the
wide, large-batch limit the squared norm grows by π/(π−1) per layer, i.e. the norm by
√(π/(π−1)) ≈ 1.21. Residual connections tame it.

Three arms, each with ReLU and with tanh, at several depths L (width 64, digits' 64 inputs):

- ``plain``: ``Linear → act`` × L, then a ``Linear`` head (no normalization);
- ``bn``: ``Linear → BatchNorm1d → act`` × L, then the head;
- ``resbn``: the same blocks, but blocks 2 … L are residual, ``x + act(BN(Linear(x)))``
  (``Residual`` below); block 1 maps the raw input to the width and has no skip.

torch's default init everywhere. On a fixed probe batch of training images (training-mode
BatchNorm, so batch statistics, as in training) we record, at initialization and after some
SGD steps, ‖∂loss/∂W_l‖ for every hidden ``Linear`` (l = 1 … L, input side first) and
‖∂loss/∂h_l‖ for every hidden layer's output h_l. The *explosion factor* is ‖∂L/∂W_1‖ /
‖∂L/∂W_L‖ (> 1: larger towards the input; < 1: vanishing towards the input); its growth
rate per layer is exp(−slope) of a straight-line fit of log ‖∂L/∂W_l‖ against l. Between
the probes the network trains with plain SGD; a setting *trains* when no seed diverged and
the mean training loss of the last tenth of the steps is below half of ln(classes) (chance
level), and we also score the test set (eval mode).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import nn
from ..core.tensor import Tensor
from ..nn.losses import cross_entropy
from ..training import data, optim
from . import framework as fw

CLAIM = "BatchNorm prevents both vanishing and exploding gradients"
QUICK = dict(depths=(5, 10, 25), activations=("relu", "tanh"), width=64, steps=30,
             probe_steps=(0, 1, 10, 30), lr=0.03, batch_size=128, probe_size=256, n_seeds=2)
FULL = dict(depths=(5, 10, 25, 50), steps=300, probe_steps=(0, 1, 10, 100, 300), n_seeds=3)
ARMS = ("plain", "bn", "resbn")
LABELS = {"plain": "no norm", "bn": "BN", "resbn": "BN + residual"}
COLORS = {"plain": "#d62728", "bn": "#1f77b4", "resbn": "#2ca02c"}
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}
ACT_LABELS = {"relu": "ReLU", "tanh": "tanh"}
RELU_RATE = math.sqrt(math.pi / (math.pi - 1))  # Yang et al.'s ReLU rate, for the norm
EXPLODES = 1.05  # a growth rate per layer of at least this (≥ 11x per 50 layers) explodes


class Residual(nn.Module):
    """``x + block(x)``: a skip connection around ``block`` (same shape in and out)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x):
        return x + self.block(x)


def build(arm: str, activation: str, depth: int, width: int, n_in: int, n_out: int,
          rng=0) -> nn.Sequential:
    """The arm's network: ``depth`` hidden blocks (``Linear → [BN] → act``, residual from
    the second on for "resbn"), then a ``Linear`` head; torch's default init drawn from
    ``rng``. Item ``l - 1`` of the Sequential is hidden layer ``l``; the last is the head."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; choose from {', '.join(ARMS)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from "
                         f"{', '.join(ACTIVATIONS)}")
    rng = np.random.default_rng(rng)
    layers, prev = [], n_in
    for l in range(depth):
        mods = [nn.Linear(prev, width, rng=rng)]
        if arm != "plain":
            mods.append(nn.BatchNorm1d(width))
        mods.append(ACTIVATIONS[activation]())
        block = nn.Sequential(*mods)
        layers.append(Residual(block) if arm == "resbn" and l > 0 else block)
        prev = width
    layers.append(nn.Linear(prev, n_out, rng=rng))
    return nn.Sequential(*layers)


def hidden_linears(model: nn.Sequential) -> list:
    """The ``Linear`` of each hidden layer, input side first (the head excluded)."""
    return [next(m for m in block.modules() if isinstance(m, nn.Linear))
            for block in list(model)[:-1]]


def layer_gradients(model: nn.Sequential, X, y) -> tuple:
    """‖∂loss/∂W_l‖ and ‖∂loss/∂h_l‖ (h_l: hidden layer l's output) for l = 1 … L on the
    batch ``(X, y)``, in training mode (batch statistics); parameters, running statistics,
    ``.grad`` and the train/eval mode are left as they were."""
    blocks = list(model)[:-1]
    outs: list = []
    handles = [b.register_forward_hook(lambda m, i, o: outs.append(o.retain_grad()))
               for b in blocks]
    saved = [None if p.grad is None else p.grad.copy() for p in model.parameters()]
    was_training = model.training
    try:
        with fw.snapshot(model):
            model.train()
            model.zero_grad()
            cross_entropy(model(Tensor(X)), y).backward()
            gw = np.array([np.linalg.norm(lin.weight.grad) for lin in hidden_linears(model)])
            gh = np.array([np.linalg.norm(o.grad) for o in outs])
    finally:
        for h in handles:
            h.remove()
        for p, g in zip(model.parameters(), saved):
            p.grad = g
        model.train(was_training)
    return gw, gh


def measure(cfg: dict, ds, probe, arm: str, setting: tuple, seed: int) -> dict:
    """One network: gradients per layer at each probe step, the training losses between
    them, the test accuracy at the end."""
    activation, depth = setting
    Lmax, steps = max(cfg["depths"]), cfg["steps"]
    probes = sorted(set(cfg["probe_steps"]))
    model = build(arm, activation, depth, cfg["width"], ds.n_features, ds.n_classes,
                  rng=seed)
    opt = optim.SGD(model.parameters(), lr=cfg["lr"])
    gw, gh, wn = (np.full((len(probes), Lmax), np.nan) for _ in range(3))
    losses = np.full(steps, np.nan)
    stream = data.batch_stream(len(ds.y_train), cfg["batch_size"], seed)
    done, diverged = 0, False
    for k, at in enumerate(probes):
        while done < min(at, steps) and not diverged:
            idx = next(stream)
            loss = fw.sgd_step(model, opt, ds.X_train[idx], ds.y_train[idx])
            losses[done] = loss
            done += 1
            diverged = not math.isfinite(loss)
        if diverged or at > steps:
            break
        gw[k, :depth], gh[k, :depth] = layer_gradients(model, *probe)
        wn[k, :depth] = [np.linalg.norm(lin.weight.data) for lin in hidden_linears(model)]
    while done < steps and not diverged:  # train to the end if the last probe came earlier
        idx = next(stream)
        losses[done] = fw.sgd_step(model, opt, ds.X_train[idx], ds.y_train[idx])
        diverged = not math.isfinite(losses[done])
        done += 1
    model.eval()
    with fw.snapshot(model):
        logits = model(Tensor(ds.X_test)).data
    acc = float(np.mean(logits.argmax(axis=1) == ds.y_test)) if not diverged else math.nan
    return {"grad_w": gw, "grad_h": gh, "weight_norm": wn, "losses": losses, "diverged": diverged,
            "test_acc": acc}


@dataclass(kw_only=True)
class DepthResult(fw.Result):
    """Per arm: ``grad_w`` (‖∂L/∂W_l‖), ``grad_h`` (‖∂L/∂h_l‖) and ``weight_norm``
    (‖W_l‖) of shape (activations, depths, seeds, probes, max depth), NaN beyond a
    network's depth and after a divergence; ``losses``
    (activations, depths, seeds, steps); ``diverged`` and ``test_acc`` (activations,
    depths, seeds)."""

    depths: list
    activations: list
    arms: list
    seeds: list
    probe_steps: list
    n_classes: int
    grad_w: dict
    grad_h: dict
    weight_norm: dict
    losses: dict
    diverged: dict
    test_acc: dict

    def _g(self, arm, key="w"):
        return np.asarray(self.grad_w[arm] if key == "w" else self.grad_h[arm], dtype=float)

    def _ia(self, activation):
        return self.activations.index(activation)

    def _ip(self, probe):
        return self.probe_steps.index(probe)

    def explosion(self, arm: str, activation: str, probe: int = 0, key: str = "w"):
        """‖∂L/∂W_1‖ / ‖∂L/∂W_L‖ per depth (``key="h"``: of the hidden outputs), the
        geometric mean over seeds; > 1: larger towards the input."""
        g = self._g(arm, key)[self._ia(activation), :, :, self._ip(probe)]
        out = []
        for j, L in enumerate(self.depths):
            with np.errstate(all="ignore"):
                r = np.log(g[j, :, 0]) - np.log(g[j, :, L - 1])
            out.append(math.exp(np.mean(r)) if np.all(np.isfinite(r)) else math.nan)
        return np.array(out)

    def rate(self, arm: str, activation: str, probe: int = 0, key: str = "w"):
        """The growth per layer towards the input, per depth: exp(−slope) of a line fitted
        to log ‖∂L/∂W_l‖ over l = 1 … L, the slope averaged over seeds."""
        g = self._g(arm, key)[self._ia(activation), :, :, self._ip(probe)]
        out = []
        for j, L in enumerate(self.depths):
            slopes = []
            for s in range(g.shape[1]):
                with np.errstate(all="ignore"):
                    lg = np.log(g[j, s, :L])
                slopes.append(np.polyfit(np.arange(L), lg, 1)[0] if np.all(np.isfinite(lg))
                              else math.nan)
            out.append(math.exp(-np.mean(slopes)))
        return np.array(out)

    def depth_rate(self, arm: str, activation: str, probe: int = 0) -> float:
        """How much the explosion factor grows per added layer between the two deepest
        depths: (EF(L_max) / EF(L_prev))^(1/(L_max − L_prev)). Constant for geometric
        growth, tending to 1 for a power of L."""
        ef = self.explosion(arm, activation, probe)
        a, b = self.depths[-2], self.depths[-1]
        return float((ef[-1] / ef[-2]) ** (1 / (b - a)))

    def weight_growth(self, arm: str, activation: str, probe: int, layer: int = 1) -> float:
        """‖W_layer‖ after ``probe`` steps over its value at init in the deepest networks,
        geometric mean over seeds (layer 1 is the input side, -1 the last hidden layer)."""
        w = np.asarray(self.weight_norm[arm], dtype=float)[self._ia(activation), -1]
        j = layer - 1 if layer > 0 else self.depths[-1] + layer
        with np.errstate(all="ignore"):
            r = np.log(w[:, self._ip(probe), j]) - np.log(w[:, 0, j])
        return math.exp(np.mean(r)) if np.all(np.isfinite(r)) else math.nan

    def final_loss(self, arm: str, activation: str):
        """Mean training loss of the last tenth of the steps, mean over seeds, per depth
        (inf when a seed diverged)."""
        lo = np.asarray(self.losses[arm], dtype=float)[self._ia(activation)]
        n = max(1, lo.shape[-1] // 10)
        with np.errstate(all="ignore"):
            f = lo[..., -n:].mean(axis=-1)
        return np.where(np.isfinite(f), f, np.inf).mean(axis=-1)

    def first_loss(self, arm: str, activation: str):
        """The loss of the first step (the network at init), mean over seeds, per depth."""
        return np.asarray(self.losses[arm], dtype=float)[self._ia(activation), :, :, 0].mean(
            axis=-1)

    def trains(self, arm: str, activation: str):
        """Per depth: no seed diverged and the final loss is below ½·ln(classes)."""
        div = np.asarray(self.diverged[arm], dtype=bool)[self._ia(activation)].any(axis=-1)
        return (~div) & (self.final_loss(arm, activation) < 0.5 * math.log(self.n_classes))

    def mean_acc(self, arm: str, activation: str):
        """Test accuracy (eval mode) per depth, mean over seeds."""
        return np.asarray(self.test_acc[arm], dtype=float)[self._ia(activation)].mean(axis=-1)


def experiment(cfg: dict, seed: int, progress: bool) -> DepthResult:
    if sorted(cfg["depths"]) != list(cfg["depths"]) or len(cfg["depths"]) < 2 \
            or min(cfg["depths"]) < 2:
        raise ValueError(f"depths must be at least two increasing values ≥ 2, got "
                         f"{cfg['depths']}")
    ds = data.load("digits", seed=0)
    pick = np.random.default_rng(12345).choice(len(ds.y_train), cfg["probe_size"],
                                               replace=False)
    probe = (ds.X_train[pick], ds.y_train[pick])  # the same probe batch for every run
    seeds = [seed + k for k in range(cfg["n_seeds"])]
    acts, depths = list(cfg["activations"]), list(cfg["depths"])
    settings = [(a, L) for a in acts for L in depths]
    runs = fw.sweep(ARMS, lambda arm, st, s: measure(cfg, ds, probe, arm, st, s),
                    settings=settings, seeds=seeds, progress=progress, desc="depth study")
    shaped = {key: {arm: np.asarray(v).reshape((len(acts), len(depths)) + np.shape(v)[1:])
                    for arm, v in per_arm.items()} for key, per_arm in runs.items()}
    probes = [p for p in sorted(set(cfg["probe_steps"])) if p <= cfg["steps"]]
    for key in ("grad_w", "grad_h", "weight_norm"):
        for arm in ARMS:
            shaped[key][arm] = shaped[key][arm][:, :, :, :len(probes)]
    return DepthResult(config=cfg, seed=seed, depths=depths, activations=acts,
                       arms=list(ARMS), seeds=seeds, probe_steps=probes,
                       n_classes=ds.n_classes, **shaped)


def _title(result) -> str:
    c = result.config
    return (f"width-{c['width']} MLPs on digits, SGD lr {c['lr']:g}, batch {c['batch_size']}"
            f" (probe batch {c['probe_size']})")


def _num(v: float) -> str:
    return "nan" if not np.isfinite(v) else (f"{v:.3g}" if 1e-3 <= abs(v) < 1e5
                                             else f"{v:.1e}")


def _times(v: float) -> str:
    return (f"{v:.2f}x" if np.isfinite(v) and v < 100 else _num(v) + "x")


def table(result: DepthResult) -> str:
    """Explosion factor and growth rate per arm, activation and depth at init; the deepest
    network's explosion factor over training; training losses and test accuracy."""
    d = result.depths
    lines = [f"Depth study: {_title(result)}, {result.config['steps']} steps, seeds "
             f"{result.seeds} ({result.seconds:.1f} s)", "",
             "explosion factor ‖∂L/∂W_1‖ / ‖∂L/∂W_L‖ at init (geometric mean over seeds), "
             "and growth per layer towards the input (fit of log‖∂L/∂W_l‖ over l)",
             f"{'':<22}" + "".join(f"{'L=' + str(L):>10}" for L in d)
             + "".join(f"{'rate L=' + str(L):>11}" for L in d)]
    for a in result.activations:
        for arm in result.arms:
            lines.append(f"{ACT_LABELS[a] + ', ' + LABELS[arm]:<22}"
                         + "".join(f"{_num(v):>10}" for v in result.explosion(arm, a))
                         + "".join(f"{v:>11.3f}" for v in result.rate(arm, a)))
    lines.append(f"(Yang et al.'s ReLU rate for the norm: √(π/(π−1)) = {RELU_RATE:.3f})")
    lines += ["", "the same for the hidden outputs' gradients, ‖∂L/∂h_1‖ / ‖∂L/∂h_L‖ at init",
              f"{'':<22}" + "".join(f"{'L=' + str(L):>10}" for L in d)
              + "".join(f"{'rate L=' + str(L):>11}" for L in d)]
    for a in result.activations:
        for arm in result.arms:
            lines.append(f"{ACT_LABELS[a] + ', ' + LABELS[arm]:<22}"
                         + "".join(f"{_num(v):>10}" for v in result.explosion(arm, a, key="h"))
                         + "".join(f"{v:>11.3f}" for v in result.rate(arm, a, key="h")))
    t_end = result.probe_steps[-1]
    lines += ["", f"explosion factor of the deepest networks (L={d[-1]}) after t SGD steps; "
              f"‖W_1‖ and ‖W_L‖ after {t_end} steps relative to init",
              f"{'':<22}" + "".join(f"{'t=' + str(t):>10}" for t in result.probe_steps)
              + f"{'‖W_1‖':>10}{'‖W_L‖':>10}"]
    for a in result.activations:
        for arm in result.arms:
            lines.append(f"{ACT_LABELS[a] + ', ' + LABELS[arm]:<22}" + "".join(
                f"{_num(result.explosion(arm, a, t)[-1]):>10}" for t in result.probe_steps)
                + f"{_times(result.weight_growth(arm, a, t_end, 1)):>10}"
                + f"{_times(result.weight_growth(arm, a, t_end, -1)):>10}")
    lines += ["", "training loss: first step -> mean of the last tenth (* = trains: below "
              f"½·ln {result.n_classes}); test accuracy after {result.config['steps']} steps",
              f"{'':<22}" + "".join(f"{'L=' + str(L):>22}" for L in d)]
    for a in result.activations:
        for arm in result.arms:
            first, final = result.first_loss(arm, a), result.final_loss(arm, a)
            ok, acc = result.trains(arm, a), result.mean_acc(arm, a)
            cells = [f"{_num(f0)}->{_num(f1)}{'*' if t else ' '} {ac:.2f}"
                     for f0, f1, t, ac in zip(first, final, ok, acc)]
            lines.append(f"{ACT_LABELS[a] + ', ' + LABELS[arm]:<22}"
                         + "".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)


def verdict(result: DepthResult) -> fw.Verdict:
    """Not supported when the BN arm's gradients explode at init (explosion factor > 1 at
    the largest depth, growing by at least 5% per added layer) for every activation;
    supported when BN neither explodes nor vanishes (factor within 0.1 … 10 at every
    depth) for every activation; mixed otherwise."""
    L, t_end = result.depths[-1], result.probe_steps[-1]
    explodes, even, parts = {}, {}, []
    for a in result.activations:
        ef_bn, ef_pl, ef_res = (result.explosion(arm, a) for arm in ("bn", "plain", "resbn"))
        g_bn, g_res = result.depth_rate("bn", a), result.depth_rate("resbn", a)
        r_bn = result.rate("bn", a)[-1]
        explodes[a] = bool(ef_bn[-1] > 1 and g_bn >= EXPLODES)
        even[a] = bool(np.all((ef_bn > 0.1) & (ef_bn < 10)))
        tames = bool(ef_res[-1] < ef_bn[-1] and (g_res - 1) <= 0.5 * (g_bn - 1))
        yang = (f" (Yang et al.'s wide-network value for ReLU is {RELU_RATE:.2f})"
                if a == "relu" else "")
        text = (f"{ACT_LABELS[a]}: at init with BN the first layer's weight gradient is "
                f"{_num(ef_bn[-1])}x the last layer's at depth {L} "
                f"({', '.join(_num(v) for v in ef_bn)} for depths "
                f"{', '.join(map(str, result.depths))}); within the network it grows by "
                f"{r_bn:.3f} per layer towards the input{yang}, and the factor grows by "
                f"{g_bn:.3f} per added layer — "
                + ("geometric: BN makes the gradients explode. " if explodes[a] else
                   "not a geometric explosion. ")
                + f"Without normalization the factor is {_num(ef_pl[-1])} (vanishing towards "
                f"the input). With residual connections it is {_num(ef_res[-1])} and grows "
                f"by {g_res:.3f} per added layer: "
                + ("the skips tame the explosion. " if tames else
                   "the skips do not tame it here. "))
        ef_t = result.explosion("bn", a, t_end)[-1]
        if t_end > 0:
            gone = np.isfinite(ef_t) and ef_t < 10 <= ef_bn[-1]
            text += (f"After {t_end} SGD steps the BN factor at depth {L} is {_num(ef_t)}"
                     + (f": the explosion is gone once training starts, but the first "
                        f"layer's weights have grown "
                        f"{_times(result.weight_growth('bn', a, t_end, 1))} in norm (the last "
                        f"layer's {_times(result.weight_growth('bn', a, t_end, -1))}). "
                        if gone else ". "))
        tr = {arm: bool(result.trains(arm, a)[-1]) for arm in result.arms}
        text += (f"At depth {L} after {result.config['steps']} steps, final training loss "
                 + ", ".join(f"{LABELS[arm]} {_num(result.final_loss(arm, a)[-1])}"
                             + (" (trains)" if tr[arm] else " (does not train)")
                             for arm in result.arms) + ".")
        parts.append(text)
    if all(explodes.values()):
        head = ("BN does not prevent exploding gradients: it causes them at initialization, "
                "for every activation tried, as Yang et al. (2019) prove. It does prevent the "
                "vanishing gradients of the unnormalized network. ")
        ok = False
    elif all(even.values()) and not any(explodes.values()):
        head = ("With BN the gradient norms stay within a factor 10 across layers at every "
                "depth and activation: no vanishing, no explosion, as the tutorial says. ")
        ok = True
    else:
        head = ("Mixed: BN's gradients explode for "
                + (", ".join(ACT_LABELS[a] for a in explodes if explodes[a]) or "no activation")
                + " but not for "
                + (", ".join(ACT_LABELS[a] for a in explodes if not explodes[a]) or "none")
                + ". ")
        ok = None
    return fw.Verdict(ok, head + " ".join(parts))


def plot(result: DepthResult, path=None):
    """Top row, per activation: ‖∂L/∂W_l‖ over the layer at init for the deepest networks
    of each arm (log axis), and the explosion factor against depth. Bottom row: the deepest
    BN networks' gradient profile after 0 … t steps, and the training losses at that depth."""
    import matplotlib.pyplot as plt

    acts = result.activations
    fig, axes = plt.subplots(2, len(acts) + 1, figsize=(5.3 * (len(acts) + 1), 9))
    Lmax = result.depths[-1]
    layers = np.arange(1, Lmax + 1)
    for i, a in enumerate(acts):
        ax = axes[0, i]
        for arm in result.arms:
            g = result._g(arm)[result._ia(a), -1, :, 0, :Lmax]  # (seeds, layers)
            with np.errstate(all="ignore"):
                gm = np.exp(np.log(g).mean(axis=0))
            ax.plot(layers, gm, "-", color=COLORS[arm], lw=2,
                    label=f"{LABELS[arm]} (rate {result.rate(arm, a)[-1]:.2f}/layer)")
            for s in range(g.shape[0]):
                ax.plot(layers, g[s], "-", color=COLORS[arm], lw=0.6, alpha=0.35)
        if a == "relu":
            g = result._g("bn")[result._ia(a), -1, :, 0, Lmax - 1]
            ref = np.exp(np.log(g).mean()) * RELU_RATE ** (Lmax - layers)
            ax.plot(layers, ref, ":", color="k", lw=1.2,
                    label=f"√(π/(π−1))^(L−l) (Yang et al.)")
        ax.set(yscale="log", xlabel="hidden layer l (input side → output side)",
               ylabel="‖∂loss/∂W_l‖ at init")
        ax.set_title(f"({'ab'[i]}) {ACT_LABELS[a]}, depth {Lmax}: gradient per layer at init",
                     fontsize=10)
        ax.legend(fontsize=8)
    ax = axes[0, -1]
    for a, ls, mk in zip(acts, ("-", "--"), ("o", "s")):
        for arm in result.arms:
            ax.plot(result.depths, result.explosion(arm, a), ls, marker=mk, color=COLORS[arm],
                    label=f"{LABELS[arm]}, {ACT_LABELS[a]}")
    ax.axhline(1, color="0.5", lw=1)
    ax.set(yscale="log", xlabel="depth L (hidden layers)",
           ylabel="explosion factor ‖∂L/∂W_1‖ / ‖∂L/∂W_L‖")
    ax.set_title("(c) Explosion factor at init vs depth (>1 explodes, <1 vanishes)",
                 fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    shades = plt.get_cmap("viridis")(np.linspace(0, 0.85, len(result.probe_steps)))
    for i, a in enumerate(acts):
        ax = axes[1, i]
        for k, t in enumerate(result.probe_steps):
            g = result._g("bn")[result._ia(a), -1, :, k, :Lmax]
            with np.errstate(all="ignore"):
                gm = np.exp(np.log(g).mean(axis=0))
            ax.plot(layers, gm, "-", color=shades[k], lw=1.8,
                    label=f"t={t}: factor {_num(result.explosion('bn', a, t)[-1])}")
        ax.set(yscale="log", xlabel="hidden layer l (input side → output side)",
               ylabel="‖∂loss/∂W_l‖ (BN, geometric mean over seeds)")
        ax.set_title(f"({'de'[i]}) {ACT_LABELS[a]} with BN, depth {Lmax}: gradient per layer "
                     "after t SGD steps", fontsize=10)
        ax.legend(fontsize=8)
    ax = axes[1, -1]
    steps = np.arange(1, result.config["steps"] + 1)
    for a, ls in zip(acts, ("-", "--")):
        for arm in result.arms:
            lo = np.asarray(result.losses[arm], dtype=float)[result._ia(a), -1]
            with np.errstate(all="ignore"):
                m = np.nanmean(np.where(np.isfinite(lo), lo, np.nan), axis=0)
            ax.plot(steps, m, ls, color=COLORS[arm], lw=1.4,
                    label=f"{LABELS[arm]}, {ACT_LABELS[a]}")
    ax.axhline(math.log(result.n_classes), color="0.5", lw=1, ls=":")
    ax.set(yscale="log", xlabel="SGD step", ylabel="training loss (mean over seeds)")
    ax.set_title(f"(f) Training at depth {Lmax} (dotted: chance, ln {result.n_classes})",
                 fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    for ax in axes.flat:
        ax.grid(alpha=0.3, which="both")
    fig.suptitle(f"Gradients vs depth: {_title(result)}, {len(result.seeds)} seeds")
    fig.tight_layout()
    return fw.save_figure(fig, path)


STUDY = fw.Study("depth", CLAIM, QUICK, FULL, experiment, table, verdict, plot)
run, summary = STUDY.run, STUDY.summary
