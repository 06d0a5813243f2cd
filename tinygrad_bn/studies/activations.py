"""Activation distributions (Ioffe & Szegedy 2015, Fig. 1): does BN keep the input of a
sigmoid stable over training?

As in the paper's MNIST experiment, but on the 8×8 digits: an MLP with 3 hidden layers of 100
sigmoid units and a linear head, weights from a small Gaussian N(0, 0.1²), trained with plain
SGD (batch 60), once as is and once with BatchNorm before each sigmoid. Every few steps we
record the test accuracy and, on a fixed probe set of 512 training images (training-mode
statistics; running statistics are left untouched), the 15th, 50th and 85th percentiles of
the input of every sigmoid of the last hidden layer. The figure shows one unit, as the paper
does; the stability numbers average over all 100 units.

Drift of a percentile curve = its max minus its min over training, in the units of the
sigmoid's input (what decides saturation); relative drift divides by the unit's initial
15–85 spread.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..diagnostics import capture, saturation
from ..training import data, optim
from ..training.models import mlp
from ..training.train import accuracy, fit
from . import framework as fw

CLAIM = ("BatchNorm keeps the distribution of a layer's inputs stable over training "
         "(Ioffe & Szegedy 2015, Fig. 1)")
QUICK = dict(steps=1500, every=25, lr=0.5, init_std=0.1, hidden=(100, 100, 100),
             batch_size=60, probe=512, unit=0, q=(15.0, 50.0, 85.0))
FULL = dict(steps=10000, every=100)
ARMS = ("none", "batch")  # the norm
LABELS = {"none": "without BN", "batch": "with BN"}
COLORS = {"none": "#d62728", "batch": "#1f77b4"}


@dataclass(kw_only=True)
class ActivationsResult(fw.Result):
    """Per norm: ``test_acc`` (records,), ``percentiles`` (records, units, 3) of the last
    hidden layer's sigmoid inputs on the probe set, ``saturation`` (records,) of that layer's
    sigmoid outputs; ``steps`` are the recorded steps (0: initialization)."""

    norms: list
    steps: list
    test_acc: dict
    percentiles: dict
    saturation: dict

    @property
    def unit(self) -> int:
        """The unit shown in the figure."""
        return self.config["unit"]

    def drift(self, norm: str) -> np.ndarray:
        """Per unit: the largest max-minus-min over training among the three percentile
        curves, in sigmoid-input units; shape (units,)."""
        p = np.asarray(self.percentiles[norm], dtype=float)
        return (p.max(axis=0) - p.min(axis=0)).max(axis=1)

    def relative_drift(self, norm: str) -> np.ndarray:
        """``drift`` divided by each unit's initial 85th-minus-15th percentile spread."""
        p = np.asarray(self.percentiles[norm], dtype=float)
        return self.drift(norm) / (p[0, :, 2] - p[0, :, 0])

    def median_drift(self, norm: str) -> float:
        """Per unit: how far the median moved from its initial value at the end, in units of
        the final 15–85 spread — a shift of the distribution's centre relative to its width;
        averaged over units."""
        p = np.asarray(self.percentiles[norm], dtype=float)
        return float(np.mean(np.abs(p[-1, :, 1] - p[0, :, 1]) / (p[-1, :, 2] - p[-1, :, 0])))

    def spread(self, norm: str, record: int) -> float:
        """The 15–85 spread at a record, mean over units."""
        p = np.asarray(self.percentiles[norm], dtype=float)
        return float(np.mean(p[record, :, 2] - p[record, :, 0]))


def measure(cfg: dict, ds, norm: str, seed: int) -> dict:
    """One run: train for ``steps`` SGD steps, recording every ``every`` (and at step 0)."""
    model = mlp(ds.n_features, cfg["hidden"], ds.n_classes, norm=norm, activation="sigmoid",
                init_std=cfg["init_std"], rng=seed)
    sig = str(len(model) - 2)  # the last hidden layer's Sigmoid
    pre = str(len(model) - 3)  # its input: BatchNorm1d or Linear output
    probe = ds.X_train[:cfg["probe"]]
    rec: dict = {"steps": [], "test_acc": [], "percentiles": [], "saturation": []}

    def record(step):
        outs = capture(model, probe, [pre, sig], training=True)
        rec["steps"].append(step)
        rec["test_acc"].append(accuracy(model, ds.X_test, ds.y_test))
        rec["percentiles"].append(np.percentile(outs[pre], cfg["q"], axis=0).T)
        rec["saturation"].append(saturation(outs[sig], "sigmoid"))

    def after_step(info):
        if info.step % cfg["every"] == 0 or info.step == cfg["steps"]:
            record(info.step)

    record(0)
    per_epoch = len(ds.y_train) // cfg["batch_size"]
    fit(model, ds, optim.SGD(model.parameters(), lr=cfg["lr"]), batch_size=cfg["batch_size"],
        epochs=-(-cfg["steps"] // per_epoch), max_steps=cfg["steps"], eval_every=cfg["steps"],
        seed=seed, progress=False, callback=after_step)
    return {k: np.asarray(v) for k, v in rec.items()}


def experiment(cfg: dict, seed: int, progress: bool) -> ActivationsResult:
    ds = data.load("digits", seed=0)
    runs = fw.sweep(ARMS, lambda norm, _, s: measure(cfg, ds, norm, s), seeds=seed,
                    progress=progress, desc="sigmoid MLP")
    steps = runs.pop("steps")
    return ActivationsResult(config=cfg, seed=seed, norms=list(ARMS),
                             steps=steps[ARMS[0]].tolist(), **runs)


def table(result: ActivationsResult) -> str:
    """Test accuracy along training; drift, spread and saturation of the sigmoid inputs."""
    c = result.config
    lines = [f"Sigmoid MLP {len(c['hidden'])}×{c['hidden'][0]} on digits, init "
             f"N(0, {c['init_std']:g}²), SGD lr {c['lr']:g}, {c['steps']} steps, percentiles "
             f"on {c['probe']} probe images ({result.seconds:.1f} s)", ""]
    marks = [s for s in (100, 500, 1000, 2000, 5000, 10000) if s <= c["steps"]]
    steps = np.asarray(result.steps)
    lines.append("test accuracy at step " + "  ".join(f"{s:>6}" for s in marks + ["final"]))
    for n in result.norms:
        acc = np.asarray(result.test_acc[n])
        vals = [acc[int(np.searchsorted(steps, s))] for s in marks] + [acc[-1]]
        lines.append(f"{LABELS[n]:>21} " + "  ".join(f"{v:>6.3f}" for v in vals))
    lines.append("")
    lines.append(f"last-layer sigmoid inputs, {len(result.drift('none'))} units:")
    for n in result.norms:
        lines.append(f"{LABELS[n]:>11}: drift {result.drift(n).mean():.3f} (mean over units; "
                     f"unit {result.unit}: {result.drift(n)[result.unit]:.3f}), "
                     f"15–85 spread {result.spread(n, 0):.3f} at init -> "
                     f"{result.spread(n, -1):.3f} at the end, "
                     f"median shift / final spread {result.median_drift(n):.3f}, "
                     f"saturated sigmoid outputs {result.saturation[n][0]:.1%} -> "
                     f"{result.saturation[n][-1]:.1%}")
    return "\n".join(lines)


def verdict(result: ActivationsResult) -> fw.Verdict:
    """Supported when the percentiles of the sigmoid inputs drift less with BN."""
    dn, db = result.drift("none").mean(), result.drift("batch").mean()
    an, ab = result.test_acc["none"][-1], result.test_acc["batch"][-1]
    steps = np.asarray(result.steps)
    i = int(np.searchsorted(steps, min(500, result.config["steps"])))
    text = (f"With BN the sigmoid inputs drift {db:.2f} on average over training against "
            f"{dn:.2f} without ({dn / db:.1f}x more without BN)")
    text += (": the paper's observation holds here. " if db < dn else
             ": BN does not make them more stable here. ")
    text += (f"BN also trains faster (test accuracy {result.test_acc['batch'][i]:.3f} vs "
             f"{result.test_acc['none'][i]:.3f} at step {steps[i]}) and ends "
             f"{'higher' if ab > an else 'lower'} ({ab:.3f} vs {an:.3f}). ")
    text += ("Part of the stability is by construction: in training mode BN standardizes "
             "each unit over the batch, so its output percentiles move only as γ, β and the "
             "shape of the distribution change — the 15–85 spread with BN still grows from "
             f"{result.spread('batch', 0):.2f} to {result.spread('batch', -1):.2f} as γ grows.")
    return fw.Verdict(bool(db < dn), text)


def plot(result: ActivationsResult, path=None):
    """The paper's Fig. 1 layout: (a) test accuracy over steps; (b, c) the 15th, 50th and
    85th percentiles of one last-layer sigmoid input over steps, without and with BN (same
    y axis)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    c = result.config
    steps = np.asarray(result.steps)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    ax = axes[0]
    for norm in result.norms:
        ax.plot(steps, result.test_acc[norm], color=COLORS[norm], lw=2, label=LABELS[norm])
    ax.set(ylim=(0, 1.02), xlabel="training step", ylabel="test accuracy",
           title="(a) Test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    u = result.unit
    lo = min(float(np.min(np.asarray(result.percentiles[n])[:, u])) for n in result.norms)
    hi = max(float(np.max(np.asarray(result.percentiles[n])[:, u])) for n in result.norms)
    pad = 0.08 * (hi - lo)
    for ax, norm, letter in zip(axes[1:], result.norms, "bc"):
        p = np.asarray(result.percentiles[norm])[:, u]
        ax.fill_between(steps, p[:, 0], p[:, 2], color=COLORS[norm], alpha=0.15)
        for k, ls in enumerate(("--", "-", "--")):
            ax.plot(steps, p[:, k], ls, color=COLORS[norm], lw=1.8 if k == 1 else 1.2)
        d = result.drift(norm)
        ax.set(ylim=(lo - pad, hi + pad), xlabel="training step",
               ylabel=f"input of sigmoid unit {u}, last hidden layer")
        ax.set_title(f"({letter}) {LABELS[norm]}: drift {d[u]:.2f} (unit {u}), "
                     f"{d.mean():.2f} (mean of {len(d)} units)", fontsize=10)
        ax.grid(alpha=0.3)
    q = [f"{v:g}th" for v in c["q"]]
    fig.legend([Line2D([], [], color="0.3", ls="-", lw=1.8),
                Line2D([], [], color="0.3", ls="--", lw=1.2)],
               [f"(b, c): {q[1]} percentile (median)",
                f"(b, c): {q[0]} and {q[2]} percentiles, shaded between"],
               loc="lower center", ncol=2, frameon=False, bbox_to_anchor=(0.62, -0.01))
    fig.suptitle(f"Sigmoid inputs over training (after Ioffe & Szegedy 2015, Fig. 1): "
                 f"{len(c['hidden'])}×{c['hidden'][0]} sigmoid MLP on digits, "
                 f"init N(0, {c['init_std']:g}²), SGD lr {c['lr']:g}, batch {c['batch_size']}")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fw.save_figure(fig, path)


STUDY = fw.Study("activations", CLAIM, QUICK, FULL, experiment, table, verdict, plot)
run, summary = STUDY.run, STUDY.summary
