"""Implicit regularization (tutorial Part 4, Theory 3): does the noise of batch statistics act
like dropout and prevent overfitting?

An overfitting regime: a class-balanced random subset of ``n_train`` samples (256 by default)
of MNIST-1D, and an MLP (``Linear → [BatchNorm1d] → ReLU → [Dropout]`` × 2, 128 units, then a
linear head) large enough to memorize it. Four arms, the same in everything else:

- ``none``: no normalization, no dropout;
- ``bn``: BatchNorm before each ReLU;
- ``dropout``: Dropout(p) after each ReLU;
- ``bn+dropout``: both.

Every run takes the same number of SGD steps (momentum, no weight decay, no augmentation), at
each batch size of ``batch_sizes``; the largest is the whole training set (full batch). The
arms (nearly) fit the training set, so the **generalization gap** (train accuracy − test
accuracy, and test loss − train loss, both in eval mode at the end) says how much each one
overfits; the verdict compares arms only where both fit (mean train accuracy ≥ ``FIT``).
The test set is every sample of the dataset that is not in the training subset.

The noise of batch statistics grows as the batch shrinks; with full-batch training they are
the same in every step (no noise at all), a control. A smaller batch also makes the gradient
noisier, for every arm, so the question is whether BN's reduction of the gap (against no norm
at the same batch size) grows as the batch shrinks. A second part isolates BN's noise
completely: full-batch gradients (no minibatch noise), with the statistics of each BN layer
taken over random **ghost batches** of ``g`` samples (``GhostBatchNorm1d``; the partition is
reshuffled every step) — so the only randomness in training is BN's.

The seed sets the training subset, the weights (the same for every arm), the batch order and
the dropout masks; the arms are compared seed by seed (paired differences).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import nn
from ..core.tensor import Tensor
from ..training import data, optim
from ..training.models import mlp_of
from ..training.train import fit, predict
from . import framework as fw

CLAIM = ("The noise of batch statistics acts like dropout: BatchNorm regularizes and prevents "
         "overfitting")
QUICK = dict(dataset="mnist1d", n_train=256, hidden=(128, 128), batch_sizes=(32, 256),
             ghost_sizes=(8,), steps=500, lr=0.02, momentum=0.9, dropout=0.3, n_seeds=2)
FULL = dict(batch_sizes=(8, 32, 128, 256), ghost_sizes=(8, 32, 128), steps=2000, n_seeds=5)
ARMS = ("none", "bn", "dropout", "bn+dropout")
LABELS = {"none": "no norm", "bn": "BatchNorm", "dropout": "Dropout",
          "bn+dropout": "BN + Dropout"}
COLORS = {"none": "#7f7f7f", "bn": "#d62728", "dropout": "#1f77b4", "bn+dropout": "#9467bd"}
MIN_EFFECT = 0.01  # a change of the gap smaller than 1 point of accuracy does not count
FIT = 0.98  # an arm fits its training set when its mean train accuracy reaches this


class GhostBatchNorm1d(nn.Module):
    """BatchNorm1d whose training statistics are taken over ghost batches: the batch of N
    rows is cut into N/g consecutive groups of ``ghost`` rows, and each group is normalized
    with its own mean and (biased) variance; then ``y = γ·x̂ + β`` with γ, β shared.

    It holds an ``nn.BatchNorm1d`` (``self.bn``: the parameters and the running statistics).
    In eval mode, or when ``ghost >= N``, it *is* that layer. Otherwise the running
    statistics move once per step, by ``momentum``, towards the mean over the groups of
    their means and unbiased variances. N must be a multiple of ``ghost``.
    """

    def __init__(self, num_features: int, ghost: int, *, eps: float = 1e-5,
                 momentum: float = 0.1, dtype=np.float32):
        super().__init__()
        if isinstance(ghost, bool) or not isinstance(ghost, (int, np.integer)) or ghost < 2:
            raise ValueError(f"ghost batch size must be an integer >= 2, got {ghost!r}")
        self.ghost = int(ghost)
        self.bn = nn.BatchNorm1d(num_features, eps=eps, momentum=momentum, dtype=dtype,
                                 analytic=True)

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[0], x.shape[1] if x.ndim == 2 else -1
        if not self.training or self.ghost >= n:
            return self.bn(x)
        if x.ndim != 2 or n % self.ghost:
            raise ValueError(f"GhostBatchNorm1d: expected (N, C) input with N a multiple of "
                             f"{self.ghost}, got shape {tuple(x.shape)}")
        g, bn = self.ghost, self.bn
        xg = x.reshape(n // g, g, c)                      # (groups, g, C)
        mu = xg.mean(axis=1, keepdims=True)
        var = ((xg - mu) ** 2).mean(axis=1, keepdims=True)  # biased, as BatchNorm
        xhat = ((xg - mu) / (var + bn.eps).sqrt()).reshape(n, c)
        m = bn.momentum
        bn.running_mean.data[...] = ((1 - m) * bn.running_mean.data
                                     + m * mu.data.mean(axis=(0, 1)))
        bn.running_var.data[...] = ((1 - m) * bn.running_var.data
                                    + m * var.data.mean(axis=(0, 1)) * g / (g - 1))
        bn.num_batches_tracked.data[...] += 1
        return xhat * bn.weight + bn.bias

    def extra_repr(self) -> str:
        return f"{self.bn.num_features}, ghost={self.ghost}"


def make_model(arm: str, n_in: int, hidden, n_out: int, *, dropout: float = 0.3,
               ghost: int | None = None, rng=0) -> nn.Sequential:
    """The MLP of arm ``arm`` (one of ``ARMS``, or "ghost": BN over ghost batches of
    ``ghost`` rows). The same ``rng`` gives the same Linear weights in every arm (the
    dropout masks draw from their own generators, seeded from ``rng``)."""
    if arm not in ARMS + ("ghost",):
        raise ValueError(f"unknown arm {arm!r}; choose from {', '.join(ARMS + ('ghost',))}")
    if arm == "ghost" and ghost is None:
        raise ValueError("the ghost arm needs a ghost batch size")
    masks = np.random.default_rng([int(rng), 1])  # not the weights' generator

    def block(width, _rng):
        layers = []
        if arm == "ghost":
            layers.append(GhostBatchNorm1d(width, ghost))
        elif arm.startswith("bn"):
            layers.append(nn.BatchNorm1d(width, analytic=True))
        layers.append(nn.ReLU())
        if arm.endswith("dropout"):
            layers.append(nn.Dropout(dropout, rng=masks.integers(2**63)))
        return layers

    return mlp_of(block, n_in, hidden, n_out, rng=rng)


def load_pool(name: str):
    """All samples of dataset ``name`` (its train and test split together): X, y."""
    ds = data.load(name, seed=0)
    return (np.concatenate([ds.X_train, ds.X_test]),
            np.concatenate([ds.y_train, ds.y_test]))


def subset(X, y, n_train: int, seed: int) -> data.Dataset:
    """A class-balanced random training set of ``n_train`` samples (classes in a random
    order get one more when ``n_train`` is not a multiple of the number of classes); the
    test set is all the other samples."""
    rng = np.random.default_rng([int(seed), 2])
    classes = np.unique(y)
    counts = np.full(len(classes), n_train // len(classes))
    counts[rng.permutation(len(classes))[:n_train % len(classes)]] += 1
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), k, replace=False)
                          for c, k in zip(classes, counts)])
    idx = rng.permutation(idx)
    rest = np.setdiff1d(np.arange(len(y)), idx)
    return data.Dataset("subset", X[idx], y[idx], X[rest], y[rest])


def _loss_acc(model, X, y) -> tuple:
    """Mean cross-entropy and accuracy of ``model`` on (X, y), in eval mode."""
    z = predict(model, X).astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean()), float((z.argmax(1) == y).mean())


def measure(cfg: dict, X, y, arm: str, batch_size: int, seed: int,
            ghost: int | None = None) -> dict:
    """One run: train arm ``arm`` for ``cfg["steps"]`` SGD steps at ``batch_size``; the
    final loss and accuracy on the training and the test set (eval mode)."""
    ds = subset(X, y, cfg["n_train"], seed)
    model = make_model(arm, ds.n_features, cfg["hidden"], ds.n_classes,
                       dropout=cfg["dropout"], ghost=ghost, rng=seed)
    opt = optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
    per_epoch = len(ds.y_train) // batch_size
    hist = fit(model, ds, opt, epochs=math.ceil(cfg["steps"] / per_epoch),
               max_steps=cfg["steps"], batch_size=batch_size, seed=seed,
               eval_every=cfg["steps"], progress=False)
    train_loss, train_acc = _loss_acc(model, ds.X_train, ds.y_train)
    test_loss, test_acc = _loss_acc(model, ds.X_test, ds.y_test)
    return {"train_acc": train_acc, "test_acc": test_acc, "train_loss": train_loss,
            "test_loss": test_loss, "diverged": hist.diverged_at is not None}


@dataclass(kw_only=True)
class RegularizationResult(fw.Result):
    """The end of training, per arm: ``train_acc``, ``test_acc``, ``train_loss``,
    ``test_loss`` (eval mode) and ``diverged``, arrays (len(batch_sizes), len(seeds)).
    ``ghost``: the same keys for BatchNorm with statistics over ghost batches, trained with
    full-batch gradients, arrays (len(ghost_sizes), len(seeds)). ``n_test``: test samples."""

    dataset: str
    n_train: int
    n_test: int
    arms: list
    batch_sizes: list
    ghost_sizes: list
    seeds: list
    train_acc: dict
    test_acc: dict
    train_loss: dict
    test_loss: dict
    diverged: dict
    ghost: dict

    @property
    def full(self) -> int:
        """The index of the full batch in ``batch_sizes``."""
        return self.batch_sizes.index(self.n_train)

    def gap(self, arm: str) -> np.ndarray:
        """Train accuracy − test accuracy, (batch sizes, seeds)."""
        return np.asarray(self.train_acc[arm], float) - np.asarray(self.test_acc[arm], float)

    def loss_gap(self, arm: str) -> np.ndarray:
        """Test loss − train loss, (batch sizes, seeds)."""
        return np.asarray(self.test_loss[arm], float) - np.asarray(self.train_loss[arm], float)

    def reduction(self, arm: str, ref: str = "none") -> np.ndarray:
        """How much smaller the gap of ``arm`` is than that of ``ref`` (same batch size,
        same seed), (batch sizes, seeds); positive: ``arm`` overfits less."""
        return self.gap(ref) - self.gap(arm)

    def ghost_gap(self) -> np.ndarray:
        """The gap of the ghost-batch runs, (ghost sizes, seeds)."""
        return (np.asarray(self.ghost["train_acc"], float)
                - np.asarray(self.ghost["test_acc"], float))

    def mean(self, key: str, arm: str) -> np.ndarray:
        """``key`` ("train_acc", ...) of ``arm`` averaged over seeds, per batch size."""
        return np.asarray(getattr(self, key)[arm], float).mean(axis=1)


def mean_se(d) -> tuple:
    """Mean and standard error over seeds (the last axis) of paired differences ``d``; the
    error is NaN for one seed."""
    d = np.asarray(d, float)
    k = d.shape[-1]
    se = d.std(axis=-1, ddof=1) / math.sqrt(k) if k > 1 else np.full(d.shape[:-1], np.nan)
    return d.mean(axis=-1), se


def clear(d, sign: int = 1) -> bool:
    """Whether the paired differences ``d`` (over seeds) are clearly ``sign``·positive: the
    mean is beyond ``MIN_EFFECT`` and (with more than one seed) beyond two standard
    errors."""
    m, se = mean_se(d)
    m, se = float(m) * sign, float(se)
    return bool(m > MIN_EFFECT and (math.isnan(se) or m > 2 * se))


def _pts(d) -> str:
    """Paired differences as "m ± se pts" (accuracy points)."""
    m, se = mean_se(d)
    return f"{100 * m:+.1f}" + ("" if np.isnan(se) else f" ± {100 * se:.1f}") + " pts"


def experiment(cfg: dict, seed: int, progress: bool) -> RegularizationResult:
    n = int(cfg["n_train"])
    bss = [int(b) for b in cfg["batch_sizes"]]
    ghosts = [int(g) for g in cfg["ghost_sizes"]]
    if any(b < 2 or b > n for b in bss) or n not in bss:
        raise ValueError(f"batch_sizes {bss} must lie in [2, n_train={n}] and include "
                         f"n_train (the full batch, the control)")
    if any(g < 2 or g >= n or n % g for g in ghosts):
        raise ValueError(f"ghost_sizes {ghosts} must divide n_train={n} and be smaller")
    X, y = load_pool(cfg["dataset"])
    if n >= len(y) or n < 2 * len(np.unique(y)):
        raise ValueError(f"n_train={n} must leave test data and give each class two samples")
    seeds = [seed + k for k in range(cfg["n_seeds"])]
    runs = fw.sweep(ARMS, lambda arm, b, s: measure(cfg, X, y, arm, b, s), settings=bss,
                    seeds=seeds, progress=progress, desc="regularization: arms × batch size")
    ghost = fw.sweep(("ghost",), lambda arm, g, s: measure(cfg, X, y, arm, n, s, ghost=g),
                     settings=ghosts, seeds=seeds, progress=progress,
                     desc="regularization: ghost batches") if ghosts else {}
    ghost = {k: v["ghost"] for k, v in ghost.items()} or {
        k: np.zeros((0, len(seeds))) for k in ("train_acc", "test_acc", "train_loss",
                                               "test_loss", "diverged")}
    return RegularizationResult(config=cfg, seed=seed, dataset=cfg["dataset"], n_train=n,
                                n_test=len(y) - n, arms=list(ARMS), batch_sizes=bss,
                                ghost_sizes=ghosts, seeds=seeds, ghost=ghost, **runs)


def _bs(result, b) -> str:
    return f"full ({b})" if b == result.n_train else str(b)


def table(result: RegularizationResult) -> str:
    """Per batch size and arm: accuracies, losses and the gaps; BN's and dropout's reduction
    of the gap; the ghost-batch runs."""
    c = result.config
    lines = [f"{result.dataset}: {result.n_train} training samples (class-balanced), "
             f"{result.n_test} test samples; MLP {list(c['hidden'])}, SGD lr {c['lr']} "
             f"momentum {c['momentum']}, {c['steps']} steps, dropout p={c['dropout']}; "
             f"seeds {result.seeds} ({result.seconds:.1f} s)", "",
             "mean over seeds, eval mode; gap = train acc - test acc; loss gap = test loss - "
             "train loss",
             f"{'batch':>10} {'arm':<13}{'train acc':>10}{'test acc':>10}{'gap':>8}"
             f"{'train loss':>12}{'test loss':>11}"]
    unfit = False
    for i, b in enumerate(result.batch_sizes):
        for arm in result.arms:
            div = int(np.asarray(result.diverged[arm])[i].sum())
            train_acc = result.mean("train_acc", arm)[i]
            mark = "*" if not train_acc >= FIT else " "
            unfit |= mark == "*"
            lines.append(f"{_bs(result, b):>10} {LABELS[arm]:<13}"
                         f"{train_acc:>9.3f}{mark}"
                         f"{result.mean('test_acc', arm)[i]:>10.3f}"
                         f"{result.gap(arm)[i].mean():>8.3f}"
                         f"{result.mean('train_loss', arm)[i]:>12.4f}"
                         f"{result.mean('test_loss', arm)[i]:>11.3f}"
                         + (f"  [{div} diverged]" if div else ""))
    if unfit:
        lines.append(f"* does not fit its training set (mean train accuracy < {FIT}): its gap "
                     "is small partly because it learned less")
    lines += ["", "reduction of the gap against no norm at the same batch size (mean ± "
              "standard error over seeds, accuracy points; + = overfits less)",
              f"{'batch':>10}" + "".join(f"{LABELS[a]:>20}" for a in result.arms[1:])]
    for i, b in enumerate(result.batch_sizes):
        lines.append(f"{_bs(result, b):>10}" + "".join(
            f"{_pts(result.reduction(a)[i]):>20}" for a in result.arms[1:]))
    if result.ghost_sizes:
        f = result.full
        lines += ["", f"BatchNorm over ghost batches, full-batch gradients "
                  f"({result.n_train} rows per step): the only noise is BN's"]
        lines.append(f"{'ghost g':>10}{'train acc':>10}{'test acc':>10}{'gap':>8}"
                     f"{'test loss':>11}   gap change vs full-batch BN")
        gg = result.ghost_gap()
        for j, g in enumerate(result.ghost_sizes):
            lines.append(f"{g:>10}{np.mean(result.ghost['train_acc'][j]):>10.3f}"
                         f"{np.mean(result.ghost['test_acc'][j]):>10.3f}{gg[j].mean():>8.3f}"
                         f"{np.mean(result.ghost['test_loss'][j]):>11.3f}   "
                         f"{_pts(result.gap('bn')[f] - gg[j])} smaller")
        for arm in ("bn", "none", "dropout"):
            lines.append(f"{'(' + LABELS[arm] + ', full batch)':>30}: gap "
                         f"{result.gap(arm)[f].mean():.3f}, test acc "
                         f"{result.mean('test_acc', arm)[f]:.3f}")
    return "\n".join(lines)


def verdict(result: RegularizationResult) -> fw.Verdict:
    """Computed from paired differences of the gaps, only at batch sizes where the arms
    compared fit their training set (mean train accuracy >= ``FIT``: a model that did not
    learn has a small gap for the wrong reason). A difference counts when it is beyond 1
    point and two standard errors over seeds (``clear``).

    1. Does BN reduce the gap against no norm (averaged over those batch sizes)?
    2. Does the noise of its statistics have a part in it? *For*: BN over the smallest ghost
       batches (full-batch gradients) overfits less than full-batch BN, or BN's reduction is
       larger at the smallest batch size than at the full batch. *Against*: either of the
       two clearly goes the other way.

    Supported when 1 holds and the evidence on 2 is for and not against; not supported when
    1 fails (or BN increases the gap); mixed when BN reduces the gap but its noise is not
    shown to be part of why, or when no batch size can be compared.
    """
    f, bs = result.full, result.batch_sizes
    fits = {a: result.mean("train_acc", a) >= FIT for a in result.arms}
    ok_bn = fits["none"] & fits["bn"]
    ok_do = fits["none"] & fits["dropout"]

    def where(ok) -> str:  # the batch sizes selected by the mask ``ok``
        return "B = " + ", ".join(_bs(result, b) for b, o in zip(bs, ok) if o)

    text = ""
    unfit = [f"{LABELS[a]} at B={_bs(result, b)} ({result.mean('train_acc', a)[i]:.3f})"
             for a in result.arms for i, b in enumerate(bs) if not fits[a][i]]
    if unfit:
        text += (f"Not every arm fits its training set (mean train accuracy below {FIT}): "
                 f"{'; '.join(unfit)}; comparisons with them leave those batch sizes out. ")
    if not ok_bn.any():
        return fw.Verdict(None, text + "At no batch size do both the models with and without "
                          "BatchNorm fit their training set: the claim cannot be judged here.")
    red_bn, red_do = result.reduction("bn"), result.reduction("dropout")
    avg_bn = red_bn[ok_bn].mean(axis=0)  # per seed, over the comparable batch sizes
    regularizes, harms = clear(avg_bn), clear(avg_bn, -1)
    text += (f"Without a norm the gap between train and test accuracy is "
             f"{result.gap('none')[ok_bn].mean():.1%}; BatchNorm reduces it by "
             f"{_pts(avg_bn)} (mean over {where(ok_bn)}): "
             + ", ".join(f"{_pts(red_bn[i])} at B={_bs(result, b)}"
                         for i, b in enumerate(bs) if ok_bn[i]) + ". ")
    both = ok_bn & ok_do
    if both.any():
        m_bn, m_do = float(red_bn[both].mean()), float(red_do[both].mean())
        text += (f"Dropout (p={result.config['dropout']}) reduces it by "
                 f"{_pts(red_do[both].mean(axis=0))} over {where(both)}, where BN's reduction "
                 f"is {100 * m_bn:+.1f} pts"
                 + (f" ({m_bn / m_do:.1f}x dropout's)" if m_do > MIN_EFFECT else ""))
        if (fits["bn+dropout"] & both).any():
            ok = fits["bn+dropout"] & both
            text += (f"; BN + dropout by "
                     f"{_pts(result.reduction('bn+dropout')[ok].mean(axis=0))} over {where(ok)}")
        text += ". "
    tl = {a: float(result.mean("test_loss", a)[ok_bn].mean()) for a in ("none", "bn")}
    text += (f"The test loss falls from {tl['none']:.2f} without a norm to {tl['bn']:.2f} "
             f"with BN (train loss at most "
             f"{max(result.mean('train_loss', a)[ok_bn].max() for a in ('none', 'bn')):.3f}). ")
    # the noise of the statistics: in real minibatches, and alone (ghost batches)
    evidence_for, evidence_against = [], []
    small = int(np.flatnonzero(ok_bn)[0])
    if ok_bn[f] and small != f:
        trend = red_bn[small] - red_bn[f]
        grows, shrinks = clear(trend), clear(trend, -1)
        text += (f"Without any noise in its statistics (full batch) BN reduces the gap by "
                 f"{_pts(red_bn[f])}; from there to B={bs[small]} its reduction changes by "
                 f"{_pts(trend)}: "
                 + ("it grows as the statistics get noisier. " if grows else
                    "it shrinks as the statistics get noisier. " if shrinks else
                    "no clear change as the statistics get noisier. "))
        (evidence_for if grows else evidence_against if shrinks else []).append(
            f"minibatches of {bs[small]}")
    if result.ghost_sizes and fits["bn"][f]:
        noise = result.gap("bn")[f] - result.ghost_gap()[0]
        if np.mean(result.ghost["train_acc"][0]) >= FIT:
            helps, hurts = clear(noise), clear(noise, -1)
            text += (f"With full-batch gradients, BN statistics over ghost batches of "
                     f"{result.ghost_sizes[0]} (their noise the only randomness in training) "
                     f"change the gap of full-batch BN by {_pts(-noise)}"
                     + ("; the noise alone regularizes" if helps else
                        "; the noise alone increases the gap" if hurts else
                        "; no clear effect of the noise alone")
                     + (f" (dropout at full batch: {_pts(-red_do[f])} against no norm). "
                        if ok_do[f] else ". "))
            (evidence_for if helps else evidence_against if hurts else []).append(
                f"ghost batches of {result.ghost_sizes[0]}")
    if harms or not regularizes:
        text += ("BatchNorm " + ("increases the gap" if harms else
                                 "does not clearly reduce the gap (by less than 1 point or "
                                 "within the spread over seeds)")
                 + " here: it does not act as a regularizer in this setting.")
        return fw.Verdict(False, text)
    if evidence_for and not evidence_against:
        text += ("BatchNorm regularizes here and the noise of its batch statistics is part "
                 f"of why ({' and '.join(evidence_for)}).")
        return fw.Verdict(True, text)
    text += "BatchNorm reduces the gap"
    if ok_bn[f] and clear(red_bn[f]):
        text += " even with noiseless full-batch statistics"
    if evidence_for:
        text += (f"; the evidence on its noise is split: less overfitting with "
                 f"{' and '.join(evidence_for)}, more with {' and '.join(evidence_against)}. "
                 "The noise of batch statistics explains at most part of BN's effect here.")
    elif evidence_against:
        text += (f", and its noise takes away from that with {' and '.join(evidence_against)}"
                 ": the regularization is real but is not the noise of batch statistics.")
    else:
        text += (", and noisier statistics do not clearly add to that: the regularization "
                 "is real but is not explained by the noise of batch statistics.")
    return fw.Verdict(None, text)


def plot(result: RegularizationResult, path=None):
    """Four panels over the batch size (log axis, the right end is the full batch): the
    generalization gap, the test accuracy, train and test loss; and the gap of BN over ghost
    batches with full-batch gradients."""
    import matplotlib.pyplot as plt

    c = result.config
    bs = np.asarray(result.batch_sizes, float)
    fig, ((a_gap, a_acc), (a_loss, a_gh)) = plt.subplots(2, 2, figsize=(13, 9.5))
    k = len(result.arms)
    for j, arm in enumerate(result.arms):
        col = COLORS[arm]
        x = bs * 1.04 ** (j - (k - 1) / 2)  # spread the arms a little
        for ax, vals in ((a_gap, result.gap(arm)),
                         (a_acc, np.asarray(result.test_acc[arm], float))):
            m, se = vals.mean(1), (vals.std(1, ddof=1) / math.sqrt(vals.shape[1])
                                   if vals.shape[1] > 1 else np.zeros(len(bs)))
            ax.errorbar(x, 100 * m, yerr=100 * se, color=col, marker="o", lw=2, capsize=3,
                        label=LABELS[arm])
            ax.scatter(np.repeat(x, vals.shape[1]), 100 * vals.ravel(), color=col, s=9,
                       alpha=0.35)
        a_loss.plot(bs, result.mean("test_loss", arm), "-o", color=col, lw=2,
                    label=f"{LABELS[arm]}, test")
        a_loss.plot(bs, result.mean("train_loss", arm), "--", marker=".", color=col, lw=1.2,
                    label=f"{LABELS[arm]}, train")
    ticks = [_bs(result, int(b)).replace(" (", "\n(") for b in bs]
    for ax in (a_gap, a_acc, a_loss):
        ax.set_xscale("log", base=2)
        ax.set_xticks(bs, ticks)
        ax.minorticks_off()
        ax.set_xlabel("batch size B (same number of steps for each)")
        ax.grid(alpha=0.3)
    a_gap.set(title="generalization gap: train − test accuracy (lower: overfits less)",
              ylabel="gap (accuracy points)")
    a_gap.legend(fontsize=8)
    a_acc.set(title="test accuracy (bars: ± standard error over seeds; dots: seeds)",
              ylabel="test accuracy (%)")
    a_loss.set(title="cross-entropy at the end (eval mode): test (solid), train (dashed)",
               ylabel="cross-entropy", yscale="log")
    a_loss.legend(fontsize=7, ncol=2)
    f = result.full
    if result.ghost_sizes:
        gs = np.asarray(result.ghost_sizes + [result.n_train], float)
        gg = np.vstack([result.ghost_gap(), result.gap("bn")[f][None]])
        a_gh.errorbar(gs, 100 * gg.mean(1), yerr=100 * (gg.std(1, ddof=1) / math.sqrt(
            gg.shape[1]) if gg.shape[1] > 1 else 0), color=COLORS["bn"], marker="o", lw=2,
            capsize=3, label="BatchNorm, statistics over ghost batches of g")
        a_gh.scatter(np.repeat(gs, gg.shape[1]), 100 * gg.ravel(), color=COLORS["bn"], s=9,
                     alpha=0.35)
        for arm, ls in (("none", "--"), ("dropout", ":"), ("bn+dropout", "-.")):
            a_gh.axhline(100 * result.gap(arm)[f].mean(), color=COLORS[arm], ls=ls, lw=1.5,
                         label=f"{LABELS[arm]}, full batch")
        a_gh.set_xscale("log", base=2)
        a_gh.set_xticks(gs, [_bs(result, int(g)).replace(" (", "\n(") for g in gs])
        a_gh.minorticks_off()
        a_gh.legend(fontsize=8)
    a_gh.set(title="only BN's noise: full-batch gradients, BN statistics over ghost batches",
             xlabel="ghost batch size g (rows per BN statistic)",
             ylabel="gap (accuracy points)")
    a_gh.grid(alpha=0.3)
    fig.suptitle(f"Implicit regularization: {result.dataset}, {result.n_train} training "
                 f"samples, MLP {list(c['hidden'])}, SGD lr {c['lr']} (momentum "
                 f"{c['momentum']}), {c['steps']} steps, dropout p={c['dropout']}, "
                 f"{len(result.seeds)} seeds")
    fig.tight_layout()
    return fw.save_figure(fig, path)


STUDY = fw.Study("regularization", CLAIM, QUICK, FULL, experiment, table, verdict, plot)
run, summary = STUDY.run, STUDY.summary
