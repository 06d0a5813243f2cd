"""A small training loop: minibatches, a progress bar, NaN/inf detection, a history to plot."""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..core.node import no_grad
from ..core.tensor import Tensor


@dataclass
class History:
    """What happened during ``fit``: per-step losses, per-evaluation accuracies."""

    step_loss: list = field(default_factory=list)  # training loss of every step
    eval_step: list = field(default_factory=list)  # the step after which each evaluation ran
    train_acc: list = field(default_factory=list)
    test_acc: list = field(default_factory=list)
    test_loss: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    diverged_at: int | None = None  # the step whose loss was NaN or inf
    message: str = ""

    @property
    def steps(self) -> int:
        return len(self.step_loss)

    @property
    def final_loss(self) -> float:
        return self.step_loss[-1] if self.step_loss else math.nan

    @property
    def final_test_acc(self) -> float:
        return self.test_acc[-1] if self.test_acc else math.nan

    def steps_to(self, accuracy: float, on: str = "test") -> int | None:
        """The first step after which the ``on`` ("test" or "train") accuracy reached
        ``accuracy``; None if it never did."""
        accs = self.test_acc if on == "test" else self.train_acc
        for s, a in zip(self.eval_step, accs):
            if a >= accuracy:
                return s
        return None

    def smoothed_loss(self, window: int = 20) -> np.ndarray:
        """Moving average of the step losses (for plotting)."""
        x = np.asarray(self.step_loss, dtype=float)
        if len(x) < window or window <= 1:
            return x
        k = np.ones(window) / window
        return np.convolve(x, k, mode="valid")


def predict(model, X, batch_size: int = 1024) -> np.ndarray:
    """Model outputs for ``X`` (ndarray), in eval mode and without recording a graph."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        outs = []
        with no_grad():
            for i in range(0, len(X), batch_size):
                outs.append(model(Tensor(X[i:i + batch_size])).data)
        return np.concatenate(outs) if outs else np.zeros((0,))
    finally:
        if was_training and hasattr(model, "train"):
            model.train()


def accuracy(model, X, y, batch_size: int = 1024) -> float:
    """Fraction of rows of ``X`` whose arg-max output equals ``y`` (eval mode)."""
    out = predict(model, X, batch_size)
    return float((out.argmax(axis=1) == np.asarray(y)).mean()) if len(y) else math.nan


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


def fit(model, dataset, optimizer, *, loss_fn: Callable | None = None, epochs: int = 10,
        batch_size: int = 64, seed=0, scheduler=None, progress: bool = True,
        eval_every: int | None = None, desc: str = "training",
        max_steps: int | None = None) -> History:
    """Train ``model`` on ``dataset`` (a ``data.Dataset``) and return a ``History``.

    Each step: a minibatch, ``loss_fn(model(X), y)`` (cross-entropy by default), backward,
    ``optimizer.step()``. Accuracy on the train and test split is measured every
    ``eval_every`` steps (default: once per epoch) in eval mode. A progress bar (tqdm, when
    installed) shows the loss and test accuracy. When a loss is NaN or inf, training stops
    early: ``history.diverged_at`` names the step and ``history.message`` says what to try.
    """
    from .data import batches
    from ..nn.losses import cross_entropy

    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    loss_fn = loss_fn or cross_entropy
    rng = np.random.default_rng(seed)
    n = len(dataset.y_train)
    steps_per_epoch = max(1, n // batch_size)  # a last partial batch is dropped
    total = steps_per_epoch * epochs if max_steps is None else min(max_steps,
                                                                    steps_per_epoch * epochs)
    every = eval_every or steps_per_epoch
    hist = History()
    bar = _progress(total, desc, progress)
    model.train()
    step = 0
    try:
        for _epoch in range(epochs):
            for Xb, yb in batches(dataset.X_train, dataset.y_train, batch_size, seed=rng,
                                  drop_last=n > batch_size):
                if step >= total:
                    break
                optimizer.zero_grad()
                loss = loss_fn(model(Tensor(Xb)), yb)
                value = float(loss.data)
                step += 1
                hist.step_loss.append(value)
                if not math.isfinite(value):
                    lr = optimizer.param_groups[0]["lr"]
                    hist.diverged_at = step
                    hist.message = (f"loss became {value} at step {step} (lr={lr:g}): training "
                                    f"stopped; try a lower learning rate (e.g. {lr / 10:g})")
                    return hist
                loss.backward()
                optimizer.step()
                if step % every == 0 or step == total:
                    hist.eval_step.append(step)
                    hist.train_acc.append(accuracy(model, dataset.X_train, dataset.y_train))
                    hist.test_acc.append(accuracy(model, dataset.X_test, dataset.y_test))
                    hist.lr.append(optimizer.param_groups[0]["lr"])
                    model.train()
                if bar is not None:
                    bar.update(1)
                    post = {"loss": f"{value:.4f}"}
                    if hist.test_acc:
                        post["test acc"] = f"{hist.test_acc[-1]:.3f}"
                    bar.set_postfix(post, refresh=False)
            if scheduler is not None:
                scheduler.step()
            if step >= total:
                break
    finally:
        if bar is not None:
            bar.close()
    return hist
