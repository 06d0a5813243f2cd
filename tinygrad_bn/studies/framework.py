"""The study framework: what a study declares, and what the framework does for it.

A *study* tests one claim of the BatchNorm tutorial. Its module declares a ``Study``:

- ``claim``: the claim, in one sentence;
- ``quick`` and ``full``: its config at the two sizes, one dict each (``full`` lists only
  what differs from ``quick``); a config key ``n_seeds`` is the number of seeds;
- ``experiment(cfg, seed, progress)``: runs the study's *arms* (what it compares: without and
  with BatchNorm, ...) over its settings (learning rates, batch sizes, ...) and seeds with
  ``sweep``, calling its ``measure`` function once per run, and returns its ``Result``;
- ``table(result)``: the numbers, as text;
- ``verdict(result)``: a ``Verdict`` on the claim, computed from those numbers;
- ``plot(result, path=None)``: a matplotlib figure.

The framework does the rest. ``Study.run`` picks the config, runs the experiment on one
BLAS thread with NumPy's overflow warnings silenced, and times it; ``sweep`` loops over
arms × settings × seeds with a progress bar and stacks what the runs measured into arrays;
``Study.summary`` is the table and the verdict; ``Study.save`` writes the figure and the
data (strict JSON). Two tools serve several studies: ``train``, the training loop for studies
that measure something *inside* a step (the others train with ``training.train.fit``), and
``snapshot`` (from ``diagnostics``), which puts a model's parameters and buffers back after
a probe.

Read ``learning_rate.py`` next: it is the simplest study.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from ..core.tensor import Tensor
from ..diagnostics import snapshot
from ..nn.losses import cross_entropy
from ..training import data
from ..training.train import _progress as progress_bar  # fit's: tqdm on stderr, or None

__all__ = ["Verdict", "Result", "TrainsResult", "Study", "sweep", "train", "sgd_step",
           "snapshot", "to_json", "save_figure"]


# -- what a study declares ----------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    """The answer to a study's claim, computed from its data: ``supported`` is True or
    False, or None when the data are mixed or cannot decide; ``text`` gives the numbers."""

    supported: bool | None
    text: str

    def __str__(self) -> str:
        word = {True: "supported", False: "not supported", None: "mixed"}[self.supported]
        return f"Verdict: {word}. {self.text}"


@dataclass(kw_only=True)
class Result:
    """What every study's result holds besides its data: the config it ran with, the seed
    it was given and how long it took (seconds)."""

    config: dict
    seed: int
    seconds: float = 0.0


@dataclass(kw_only=True)
class TrainsResult(Result):
    """A sweep that asks which settings *train*: per arm, the final test accuracy and
    whether a run diverged, arrays of shape (settings, seeds).

    A setting trains when no seed diverged and the mean test accuracy gets at least halfway
    from chance (always predicting the most frequent test class) to the best mean accuracy
    of the whole sweep (``threshold``, set by ``set_threshold``).
    """

    test_acc: dict
    diverged: dict
    chance: float = 0.0
    threshold: float = 0.0

    def mean_acc(self, arm: str) -> np.ndarray:
        """Test accuracy averaged over seeds, one value per setting."""
        return np.asarray(self.test_acc[arm], dtype=float).mean(axis=1)

    def trains(self, arm: str) -> np.ndarray:
        """Per setting: no seed diverged and the mean accuracy reached ``threshold``."""
        div = np.asarray(self.diverged[arm], dtype=bool).any(axis=1)
        return (~div) & (self.mean_acc(arm) >= self.threshold)

    def cell(self, arm: str, i: int) -> str:
        """Setting ``i``'s mean accuracy as a table cell, "[k]" when k seeds diverged."""
        k = int(np.asarray(self.diverged[arm])[i].sum())
        return f"{self.mean_acc(arm)[i]:.3f}" + (f" [{k}]" if k else "")

    def set_threshold(self, y_test) -> None:
        """Set ``chance`` from the test labels and ``threshold`` halfway to the best."""
        best = max(np.nanmax(self.mean_acc(arm)) for arm in self.test_acc)
        self.chance = float(np.bincount(y_test).max() / len(y_test))
        self.threshold = float(self.chance + 0.5 * (best - self.chance))


class Study(NamedTuple):
    """A study: its name, its claim and the functions that run, tell and draw it (see the
    module docstring). A NamedTuple, so ``study[1]`` is the claim (the command line lists
    ``name: claim``)."""

    name: str
    claim: str
    quick: dict
    full: dict
    experiment: Callable  # (cfg, seed, progress) -> Result
    table: Callable       # (result) -> str
    verdict: Callable     # (result) -> Verdict
    plot: Callable        # (result, path=None) -> matplotlib Figure

    def config(self, quick: bool = False, **overrides) -> dict:
        """The quick or the full config, with ``overrides`` (config keys) applied."""
        unknown = sorted(set(overrides) - set(self.quick))
        if unknown:
            raise ValueError(f"{self.name}: unknown config key(s) {unknown}; the config has "
                             f"{', '.join(self.quick)}")
        return {**self.quick, **({} if quick else self.full), **overrides}

    def run(self, quick: bool = False, seed: int = 0, progress: bool = True,
            **overrides) -> Result:
        """Run the study at the quick or the full size (``overrides``: config keys, e.g.
        ``n_seeds=1``) and return its result; ``seed`` sets every random choice."""
        cfg = self.config(quick, **overrides)
        t0 = time.perf_counter()
        with quiet_numerics():
            result = self.experiment(cfg, seed, progress)
        result.seconds = time.perf_counter() - t0
        return result

    def summary(self, result: Result) -> str:
        """The claim, the numbers and the verdict, as text."""
        return f"Claim: {self.claim}.\n\n{self.table(result)}\n\n{self.verdict(result)}"

    def save(self, result: Result, out_dir: str) -> tuple:
        """Write ``NAME.png`` (the plot) and ``NAME.json`` (claim, verdict and data; NaN and
        inf as null) to ``out_dir``; returns their paths."""
        os.makedirs(out_dir, exist_ok=True)
        png, js = (os.path.join(out_dir, f"{self.name}.{ext}") for ext in ("png", "json"))
        self.plot(result, png)
        record = {"study": self.name, "claim": self.claim,
                  "verdict": to_json(self.verdict(result)), "result": to_json(result)}
        with open(js, "w") as f:
            json.dump(record, f, indent=1, allow_nan=False)
        return png, js


# -- what the framework does ----------------------------------------------------------------
def sweep(arms, measure: Callable, *, settings=None, seeds, progress: bool = True,
          desc: str = "runs") -> dict:
    """Call ``measure(arm, setting, seed)`` (a dict of measured values) for every arm,
    setting and seed, with a progress bar; returns ``{key: {arm: value}}``.

    ``settings`` is a list of values (or None: nothing is swept and ``setting`` is None);
    ``seeds`` a list of seeds, or one seed for a single run. Each list adds an axis:
    ``value`` stacks the runs' values into an array of shape (len(settings), len(seeds),
    ...) without the axes not swept (so a single run's value is passed on as measured).
    """
    many_seeds = isinstance(seeds, (list, tuple))
    setting_list = [None] if settings is None else list(settings)
    seed_list = list(seeds) if many_seeds else [seeds]
    axes = (([len(setting_list)] if settings is not None else [])
            + ([len(seed_list)] if many_seeds else []))
    grid = list(itertools.product(setting_list, seed_list))
    bar = progress_bar(len(arms) * len(grid), desc, progress)
    out: dict = {}
    try:
        for arm in arms:
            runs = []
            for setting, seed in grid:
                runs.append(measure(arm, setting, seed))
                if bar is not None:
                    bar.update(1)
            for key in runs[0]:
                values = [r[key] for r in runs]
                if axes:  # (runs, ...) -> (settings, seeds, ...)
                    values = np.array(values).reshape(axes + list(np.shape(values[0])))
                else:
                    values = values[0]
                out.setdefault(key, {})[arm] = values
    finally:
        if bar is not None:
            bar.close()
    return out


@contextlib.contextmanager
def quiet_numerics():
    """Run the studies' many small matrix products on one BLAS thread (several times faster
    at these sizes, and steady on a busy machine) and silence the overflow warnings of runs
    that diverge on purpose."""
    with contextlib.ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            pass
        else:
            stack.enter_context(threadpool_limits(limits=1, user_api="blas"))
        stack.enter_context(np.errstate(over="ignore", invalid="ignore", divide="ignore"))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def to_json(obj):
    """``obj`` (dataclasses, dicts, lists, arrays, NumPy numbers) as plain JSON values;
    NaN and inf become None, so the output is strict JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_json(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def save_figure(fig, path=None):
    """Save ``fig`` to ``path`` (when given) and close it; returns ``fig``."""
    if path:
        import matplotlib.pyplot as plt

        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
    return fig


# -- tools for the studies: a training step, the loop, the snapshot ---------------------------
# (``snapshot(model)``, the context manager that puts parameters and buffers back, is
# ``diagnostics.snapshot``, imported above)
def sgd_step(model, optimizer, X, y) -> float:
    """One training step on the batch ``(X, y)``: forward, cross-entropy, backward, update.
    Returns the loss (of the model before the update)."""
    optimizer.zero_grad()
    loss = cross_entropy(model(Tensor(X)), y)
    loss.backward()
    optimizer.step()
    return float(loss.data)


def train(model, ds, optimizer, *, steps: int, batch_size: int, seed,
          take_step: Callable | None = None) -> list:
    """Train ``model`` for ``steps`` steps on minibatches of ``ds.X_train`` drawn by
    ``data.batch_stream(..., seed)`` (the order ``fit`` uses with the same seed); returns
    the losses.

    Step ``t`` (counted from 1) is ``take_step(t, X, y) -> loss``; the default is
    ``sgd_step``. A study passes its own to measure around a step, with the batch and the
    state before the update at hand, which ``fit``'s callback (run after a step) does not
    give. A non-finite loss raises RuntimeError.
    """
    if take_step is None:
        def take_step(t, X, y):
            return sgd_step(model, optimizer, X, y)
    stream = data.batch_stream(len(ds.y_train), batch_size, seed)
    losses = []
    model.train()
    for t in range(1, steps + 1):
        idx = next(stream)
        loss = take_step(t, ds.X_train[idx], ds.y_train[idx])
        losses.append(loss)
        if not math.isfinite(loss):
            raise RuntimeError(f"the model diverged in step {t} (loss {loss}): lower the "
                               "learning rate")
    return losses
