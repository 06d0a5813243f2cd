"""A small training loop: minibatches, a progress bar, divergence caught and undone, a history.

``fit`` reads top to bottom as the loop it is: check the arguments and the data, then for
each minibatch take one step (forward, backward, update), check that nothing became NaN or
inf, evaluate now and then, and call the user's callback. Three things can end it early:

- **divergence**: the loss, a running statistic (buffer), a gradient or a parameter is no
  longer finite. The model is put back to its last finite state (``_LastFinite`` keeps it)
  and ``History`` says where and when it happened;
- **the callback** returns True;
- **Ctrl-C**: the ``KeyboardInterrupt`` is re-raised with the history so far as
  ``e.history``.

Whatever ends it, the last evaluation in the ``History`` describes the model ``fit`` leaves
behind.
"""
from __future__ import annotations

import math
import numbers
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .._commit import commit, interrupts_held
from ..core.node import no_grad
from ..core.tensor import Tensor


@dataclass
class History:
    """What happened during ``fit``: per-step losses, per-evaluation accuracies, and how it
    ended.

    ``eval_step[i]`` is the number of optimizer steps the model had taken when
    ``train_acc[i]``, ``test_acc[i]`` and ``lr[i]`` were measured. The last evaluation always
    describes the model ``fit`` returned, so ``final_train_acc`` / ``final_test_acc`` are that
    model's accuracies (after a restore, evaluations of the discarded states are dropped).

    How it ended (``outcome``): "finished"; "diverged" (``diverged_at``: the step, counted
    from 1, in which the first non-finite value appeared; ``diverged_in``: the parameter or
    buffer name as in ``model.named_parameters()`` / ``named_buffers()``, ``"<name>.grad"``
    for a gradient, or ``"loss"``; ``restored``: the model was put back to the state after
    step ``model_step``); "stopped" (the callback returned True: ``stopped_early``);
    "interrupted" (Ctrl-C: ``interrupted``). ``message`` says it in words.
    """

    step_loss: list = field(default_factory=list)  # training loss of every step (minibatch)
    eval_step: list = field(default_factory=list)  # the step after which each evaluation ran
    train_acc: list = field(default_factory=list)
    test_acc: list = field(default_factory=list)
    test_loss: list = field(default_factory=list)  # not filled by fit (kept for old callers)
    lr: list = field(default_factory=list)
    diverged_at: int | None = None  # the step in which a value first became NaN or inf
    message: str = ""
    diverged_in: str | None = None  # "loss", a parameter or buffer name, or "<param>.grad"
    restored: bool = False  # the model was put back to its last finite state
    model_step: int | None = None  # how many optimizer steps the returned model holds
    interrupted: bool = False  # Ctrl-C stopped fit (the history is then ``e.history``)
    stopped_early: bool = False  # the callback returned True

    @property
    def steps(self) -> int:
        """Steps run, including a step that diverged (``len(step_loss)``)."""
        return len(self.step_loss)

    @property
    def final_loss(self) -> float:
        """The training loss of the last step: a minibatch loss, measured on the model as it
        was before that step's update (NaN or inf when that step diverged in the loss)."""
        return self.step_loss[-1] if self.step_loss else math.nan

    @property
    def final_train_acc(self) -> float:
        """Training-set accuracy of the returned model (NaN before any evaluation)."""
        return self.train_acc[-1] if self.train_acc else math.nan

    @property
    def final_test_acc(self) -> float:
        """Test-set accuracy of the returned model (NaN before any evaluation)."""
        return self.test_acc[-1] if self.test_acc else math.nan

    @property
    def outcome(self) -> str:
        """ "interrupted", "diverged", "stopped" (by the callback) or "finished"."""
        if self.interrupted:
            return "interrupted"
        if self.diverged_at is not None:
            return "diverged"
        return "stopped" if self.stopped_early else "finished"

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

    def __repr__(self) -> str:
        """One line: how it ended, then the numbers (the lists are not printed)."""
        how = self.outcome
        if self.diverged_at is not None:
            how = f"diverged at step {self.diverged_at} in {self.diverged_in!r}"
            if self.interrupted:
                how = "interrupted, " + how
        if self.restored:
            how += f", model restored to step {self.model_step}"
        elif self.outcome in ("interrupted", "stopped") and self.model_step is not None:
            how += f" after step {self.model_step}"
        steps = f"{self.steps} step" + ("" if self.steps == 1 else "s")
        return (f"History({how}: {steps}, final loss {self.final_loss:.4g}, "
                f"train acc {self.final_train_acc:.3f}, test acc {self.final_test_acc:.3f})")

    def __str__(self) -> str:
        return repr(self) + (f"\n{self.message}" if self.message else "")


@dataclass(frozen=True)
class StepInfo:
    """What ``fit`` passes to ``callback`` after each step: ``epoch`` (1 for the first pass
    over the data), ``step`` (steps taken so far, 1 after the first), ``loss`` (this step's
    training loss), ``lr`` (the first parameter group's learning rate), ``model``,
    ``optimizer`` and ``history`` (the ``History`` so far, this step's evaluation included)."""

    epoch: int
    step: int
    loss: float
    lr: float | None
    model: Any
    optimizer: Any
    history: History


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
        max_steps: int | None = None, callback: Callable | None = None) -> History:
    """Train ``model`` on ``dataset`` (a ``data.Dataset``) and return a ``History``.

    Each step: a minibatch, ``loss_fn(model(X), y)`` (cross-entropy by default), backward,
    ``optimizer.step()``. Accuracy on the train and test split is measured every
    ``eval_every`` steps (default: once per epoch) in eval mode, and once more at the end if
    the model changed since. A progress bar (tqdm, when installed) shows the loss and test
    accuracy. ``scheduler.step()`` runs after each epoch.

    Checked before anything changes (ValueError naming the value): the arguments
    (``epochs``, ``batch_size``, ``max_steps``, ``eval_every`` positive integers), the data
    (non-empty, X and y of equal length, no NaN or inf in X, or in y when it holds targets
    of a custom loss; the error names the array and the first bad row) and, for the default
    cross-entropy, labels that are integers in ``0 .. outputs - 1`` of the model (found by
    one eval-mode forward pass of two rows). A model whose parameters are already NaN or
    inf is refused too.

    **Divergence.** In every step the loss and the buffers (running statistics) are checked
    after the forward pass, the parameters after the update (and, when one is bad, the
    gradients, to name the first). NumPy's overflow warnings are silenced inside the step
    (``np.errstate``) because these checks report the same thing with a name and a step. At
    the first non-finite value training stops, the model (parameters and buffers) is
    restored and ``History.diverged_at`` / ``diverged_in`` / ``message`` say where. The
    restored state is the last one whose parameters and buffers are finite *and* whose own
    forward pass gave a finite loss and finite running statistics: a bad loss or buffer in
    step k means the state after step k-1 already overflows, so the model goes back to the
    state after step k-2; a bad gradient or parameter in step k goes back to k-1. The
    optimizer's own state (momentum, Adam's moments) is not rolled back: use a new optimizer
    to train on. Cost: every step copies the parameters and buffers once (into two saved
    states allocated once) and scans them once for NaN/inf, about 2 µs per tensor for small
    ones: measured ~38 µs (~8% of a step) for a 2-32-32-2 MLP with BatchNorm and batches of
    32, ~6% for 64-256-256-10.

    **Callback.** ``callback(info)`` runs after every step that was kept (not after one
    that diverged), after that step's evaluation if there was one, with a ``StepInfo``
    (``epoch``, ``step``, ``loss``, ``lr``, ``model``, ``optimizer``, ``history``). If it
    returns True training stops: ``history.stopped_early`` is set. Any other return value
    (None included) continues. It runs with NumPy's usual warning settings.

    **Ctrl-C.** The optimizer step holds SIGINT until every parameter is written
    (``tinygrad_bn._commit``), so the model is never half-updated. On ``KeyboardInterrupt``
    the model is left exactly as after step ``history.model_step``: a step interrupted
    before its update has its forward pass's running statistics undone, and one whose
    update went non-finite is restored as above. It is then evaluated (a second Ctrl-C
    skips that) and left in training mode, and the same ``KeyboardInterrupt`` is re-raised
    with the history so far attached as ``e.history`` (``e.history.interrupted`` is True;
    a Ctrl-C during the checks before the first step carries no history)::

        try:
            hist = fit(model, ds, opt)
        except KeyboardInterrupt as e:
            hist = e.history
    """
    from ..nn.losses import cross_entropy

    _check_arguments(model, optimizer, loss_fn, epochs, batch_size, max_steps, eval_every,
                     scheduler, callback)
    _check_data(model, dataset, classes=loss_fn is None)
    loss_fn = loss_fn or cross_entropy
    rng = np.random.default_rng(seed)
    n = len(dataset.y_train)
    steps_per_epoch = max(1, n // batch_size)  # a last partial batch is dropped
    total = steps_per_epoch * epochs if max_steps is None else min(max_steps,
                                                                    steps_per_epoch * epochs)
    every = eval_every or steps_per_epoch
    hist = History(model_step=0)
    state = _LastFinite(model)
    bar = _progress(total, desc, progress)
    model.train()
    try:
        _loop(model, dataset, optimizer, loss_fn, hist, state, bar, rng, epochs, batch_size,
              total, every, scheduler, callback)
        _finish(model, dataset, optimizer, hist)
    except KeyboardInterrupt as e:
        e.history = hist
        _interrupted(model, dataset, optimizer, hist, state)
        raise
    except Exception:  # e.g. the loss function failed: the failed step changes nothing
        _settle(model, optimizer, hist, state)
        raise
    finally:
        if bar is not None:
            bar.close()
    return hist


def _loop(model, dataset, optimizer, loss_fn, hist, state, bar, rng, epochs, batch_size,
          total, every, scheduler, callback) -> None:
    """The epochs and steps of ``fit``; returns when done, diverged or told to stop."""
    from .data import batches

    n = len(dataset.y_train)
    step = 0
    for epoch in range(1, epochs + 1):
        for Xb, yb in batches(dataset.X_train, dataset.y_train, batch_size, seed=rng,
                              drop_last=n > batch_size):
            if step >= total:
                break
            step += 1
            state.save(step - 1)  # the state this step starts from
            with np.errstate(all="ignore"):  # overflow becomes inf/NaN, which is checked
                bad = _step(model, optimizer, loss_fn, Xb, yb, hist, state, step)
            if bad is not None:
                _diverged(model, optimizer, hist, state, step, *bad)
                return
            if step % every == 0 or step == total:
                _evaluate(model, dataset, optimizer, hist, step)
            if bar is not None:
                bar.update(1)
                post = {"loss": f"{hist.step_loss[-1]:.4f}"}
                if hist.test_acc:
                    post["test acc"] = f"{hist.test_acc[-1]:.3f}"
                bar.set_postfix(post, refresh=False)
            if callback is not None:
                info = StepInfo(epoch, step, hist.step_loss[-1], _lr(optimizer), model,
                                optimizer, hist)
                stop = callback(info)
                if isinstance(stop, (bool, np.bool_)) and stop:
                    hist.stopped_early = True
                    hist.message = f"stopped by the callback after step {step}"
                    return
        if scheduler is not None:
            scheduler.step()
        if step >= total:
            return


def _step(model, optimizer, loss_fn, Xb, yb, hist, state, step):
    """One training step, each phase followed by its check for NaN/inf.

    Returns None when all is finite, else ``(name, back_to)``: the first non-finite value and
    the step whose state the model must go back to (see ``fit``).
    """
    optimizer.zero_grad()
    loss = loss_fn(model(Tensor(Xb)), yb)
    value = float(loss.data)
    hist.step_loss.append(value)
    # forward: the state after step-1 overflowed on this batch, so it is no good either
    bad = "loss" if not math.isfinite(value) else _first_nonfinite(state.buffers)
    if bad is not None:
        return bad, step - 2
    loss.backward()
    with interrupts_held():  # the update and its record go together, even with Ctrl-C
        optimizer.step()
        hist.model_step = step
    bad = _first_nonfinite(state.params)
    if bad is not None:
        # a non-finite gradient shows up here too; name it if it was the first (the
        # gradients are checked only now, which saves a scan of them in every step)
        grads = ((f"{name}.grad", p.grad) for name, p in state.params)
        return _first_nonfinite(grads) or bad, step - 1
    return None


class _LastFinite:
    """The model's parameters and buffers as they were before the last two steps.

    ``save(s)`` copies the current state (the state after step ``s``) over the older of two
    saved copies, whose arrays are allocated once; ``restore(s)`` writes the saved state
    after step ``s`` back into the model (the oldest one kept when ``s`` is older, i.e. the
    initial state when the first step already fails). Both run with SIGINT held, so neither
    the copy nor the model is ever half-written.
    """

    def __init__(self, model):
        self.params = list(model.named_parameters())
        self.buffers = list(model.named_buffers())
        self.tensors = [t for _, t in self.params + self.buffers]
        self.saved = [[np.empty_like(t.data) for t in self.tensors] for _ in range(2)]
        self.saved_step = [None, None]
        self.newest = 1

    def save(self, step: int) -> None:
        i = 1 - self.newest
        with interrupts_held():
            for dst, t in zip(self.saved[i], self.tensors):
                np.copyto(dst, t.data)
            self.saved_step[i], self.newest = step, i

    def restore(self, step: int) -> int:
        """Put the saved state after ``step`` back; returns the step actually restored."""
        for i in (self.newest, 1 - self.newest):
            if self.saved_step[i] == step:
                break
        else:  # the state before the first step's start: the initial one is all there is
            i = self.newest
        commit(*((t.data, saved) for t, saved in zip(self.tensors, self.saved[i])))
        return self.saved_step[i]


def _first_nonfinite(named) -> str | None:
    """The name of the first ``(name, Tensor or array)`` holding a NaN or inf, else None."""
    for name, t in named:
        a = t.data if isinstance(t, Tensor) else t
        if a is not None and a.dtype.kind in "fc" and not np.isfinite(a).all():
            return name
    return None


def _diverged(model, optimizer, hist, state, step, name, back_to) -> None:
    """Stop after a non-finite value: restore the last finite state and say so."""
    with interrupts_held():  # the model and the record of what happened change together
        restored = state.restore(back_to)
        model.zero_grad()  # the gradients may hold the NaN
        hist.diverged_at, hist.diverged_in = step, name
        hist.restored, hist.model_step = True, restored
    lr = _lr(optimizer)
    at = f"lr={lr:g}" if lr is not None else "lr unknown"
    is_param = False
    if name == "loss":
        what = f"the loss became {hist.step_loss[-1]}"
    elif name.endswith(".grad"):
        what = f"the gradient of {name[:-len('.grad')]} became non-finite"
    elif name in dict(state.buffers):
        what = f"the running statistic (buffer) {name} became non-finite"
    else:
        what, is_param = f"the update made parameter {name} non-finite", True
    msg = (f"step {step}: {what} ({at}); training stopped. The model was restored to its "
           f"state after step {restored}")
    if restored == 0:
        msg += " (its initial state)"
    if restored < step - 1:
        msg += f": the state after step {step - 1} already overflowed in its forward pass"
    if step == 1 and not is_param:
        msg += (". Nothing had been updated yet, so the learning rate is not the cause: check "
                "the scale of the inputs, the initialization and the loss function")
    elif lr is not None:
        msg += f". Try a lower learning rate (e.g. {lr / 10:g})"
    hist.message = msg + "."


def _settle(model, optimizer, hist, state) -> int:
    """After a step was cut short (Ctrl-C, an exception): leave the model exactly as after a
    whole step. A step that went non-finite is handled as a divergence; one that did not
    get to its update has its forward pass undone (running statistics). Returns the step
    that was cut short."""
    started = state.saved_step[state.newest]  # the state the current step started from
    if started is None or hist.diverged_at is not None:
        return hist.steps
    step = started + 1
    with interrupts_held():  # a second Ctrl-C waits until the model is settled
        with np.errstate(all="ignore"):
            bad, back_to = _first_nonfinite(state.buffers), step - 2  # from its forward
            if bad is None:
                bad, back_to = _first_nonfinite(state.params), step - 1  # from its update
        if bad is not None:
            _diverged(model, optimizer, hist, state, step, bad, back_to)
        elif hist.model_step == started:
            state.restore(started)
            model.zero_grad()
    return step


def _interrupted(model, dataset, optimizer, hist, state) -> None:
    """After Ctrl-C: settle the model, evaluate it unless Ctrl-C comes again, and record it
    all in ``hist``."""
    hist.interrupted = True
    try:
        step = _settle(model, optimizer, hist, state)
        before = f". Before that: {hist.message}" if hist.message else ""
        hist.message = (f"interrupted (Ctrl-C) in step {step}; the model is as after step "
                        f"{hist.model_step}{before}")
        _finish(model, dataset, optimizer, hist)
    except KeyboardInterrupt:
        hist.message = ((hist.message + "; ") if hist.message else "interrupted (Ctrl-C); ") + (
            "the final evaluation was skipped (Ctrl-C again)")
    model.train()


def _finish(model, dataset, optimizer, hist) -> None:
    """Make the last evaluation describe the returned model: drop evaluations of discarded
    states, then evaluate unless the last evaluation already is of this state."""
    while hist.eval_step and hist.eval_step[-1] > hist.model_step:
        for lst in (hist.eval_step, hist.train_acc, hist.test_acc, hist.lr):
            del lst[-1]
    if not hist.eval_step or hist.eval_step[-1] != hist.model_step:
        _evaluate(model, dataset, optimizer, hist, hist.model_step)
    if hist.restored and len(dataset.y_test):
        # finite weights can still be so large that some inputs overflow: say so
        with np.errstate(all="ignore"):
            out = predict(model, dataset.X_test)
        k = int((~np.isfinite(out.reshape(len(out), -1)).all(axis=1)).sum())
        if k:
            hist.message += (f" Even so, its outputs are NaN or inf for {k} of {len(out)} test"
                             " rows (its weights are huge).")


def _evaluate(model, dataset, optimizer, hist, step) -> None:
    """Accuracy on the train and test split (eval mode), recorded as after ``step``."""
    with np.errstate(all="ignore"):  # a model with huge weights may overflow: NaN outputs
        train_acc = accuracy(model, dataset.X_train, dataset.y_train)
        test_acc = accuracy(model, dataset.X_test, dataset.y_test)
    hist.eval_step.append(step)
    hist.train_acc.append(train_acc)
    hist.test_acc.append(test_acc)
    hist.lr.append(_lr(optimizer))
    model.train()


def _lr(optimizer) -> float | None:
    """The first parameter group's learning rate (None for an optimizer without groups)."""
    try:
        return optimizer.param_groups[0]["lr"]
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


# -- checks before training ---------------------------------------------------------------

def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def _check_arguments(model, optimizer, loss_fn, epochs, batch_size, max_steps, eval_every,
                     scheduler, callback) -> None:
    """ValueError naming the first bad argument."""
    for name, value, may_be_none in (("epochs", epochs, False),
                                     ("batch_size", batch_size, False),
                                     ("max_steps", max_steps, True),
                                     ("eval_every", eval_every, True)):
        if value is None and may_be_none:
            continue
        if not _is_int(value) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1"
                             f"{' or None' if may_be_none else ''}, got {value!r}")
    for name, value in (("loss_fn", loss_fn), ("callback", callback)):
        if value is not None and not callable(value):
            raise ValueError(f"{name} must be a function or None, got {value!r}")
    if scheduler is not None and not callable(getattr(scheduler, "step", None)):
        raise ValueError(f"scheduler must have a step() method, got {scheduler!r}")
    for what in ("zero_grad", "step"):
        if not callable(getattr(optimizer, what, None)):
            raise ValueError(f"optimizer must have a {what}() method, got {optimizer!r}")
    for what in ("train", "named_parameters", "named_buffers", "zero_grad"):
        if not callable(getattr(model, what, None)):
            raise ValueError(f"model must be a tinygrad_bn.nn.Module (it has no {what}()), "
                             f"got {type(model).__name__}")


def _check_data(model, dataset, classes: bool) -> None:
    """Bad data named as bad data, before training starts (ValueError).

    ``classes``: the default cross-entropy is used, so y must hold class indices that the
    model has outputs for.
    """
    arrays = {}
    for name in ("X_train", "y_train", "X_test", "y_test"):
        if not hasattr(dataset, name):
            raise ValueError(f"dataset has no {name}: pass a data.Dataset (e.g. "
                             f"data.load('moons')) or an object with X_train, y_train, X_test "
                             f"and y_test")
        a = np.asarray(getattr(dataset, name))
        if a.ndim == 0 or a.dtype.kind not in "biufc":
            raise ValueError(f"dataset.{name} must be a numeric array with one row per sample,"
                             f" got {a.dtype} of shape {a.shape}")
        arrays[name] = a
    if len(arrays["y_train"]) == 0:
        raise ValueError("dataset.X_train / y_train are empty: there is nothing to train on")
    for split in ("train", "test"):
        X, y = arrays[f"X_{split}"], arrays[f"y_{split}"]
        if len(X) != len(y):
            raise ValueError(f"dataset.X_{split} has {len(X)} rows but y_{split} has {len(y)}")
        _check_finite(X, f"X_{split}")
        _check_finite(y, f"y_{split}")
    bad = _first_nonfinite(model.named_parameters())
    if bad is None:
        bad = _first_nonfinite(model.named_buffers())
    if bad is not None:
        raise ValueError(f"the model's {bad} holds NaN or inf before training: initialize the "
                         "model again or load a finite checkpoint")
    if classes:
        with np.errstate(all="ignore"):
            out = predict(model, arrays["X_train"][:2])
        if out.ndim != 2:
            raise ValueError(f"the model's output has shape {out.shape[1:]} per row; the "
                             "default loss (cross-entropy) needs (N, classes) logits: pass "
                             "loss_fn= for another kind of output")
        for split in ("train", "test"):
            _check_labels(arrays[f"y_{split}"], f"y_{split}", out.shape[1])


def _check_finite(a: np.ndarray, name: str) -> None:
    if a.dtype.kind not in "fc" or a.size == 0:
        return
    bad_rows = ~np.isfinite(a.reshape(len(a), -1)).all(axis=1)
    if bad_rows.any():
        i = int(np.argmax(bad_rows))
        value = "nan" if np.isnan(a[i]).any() else "inf"
        keep = f"np.isfinite({name})" + ("" if a.ndim == 1 else
                                         f".reshape(len({name}), -1).all(axis=1)")
        raise ValueError(
            f"dataset.{name} holds NaN or inf in {int(bad_rows.sum())} of {len(a)} rows (the "
            f"first in row {i}: {value}). That is bad data, not a learning-rate problem: drop "
            f"those rows from X and y (keep = {keep}) or fill the values in before calling "
            "fit")


def _check_labels(y: np.ndarray, name: str, n_classes: int) -> None:
    if y.ndim != 1:
        raise ValueError(f"dataset.{name} must hold one class index per row (shape (N,)) for "
                         f"the default cross-entropy, got shape {y.shape}: pass loss_fn= for "
                         "other targets")
    bad = (y != np.round(y)) | (y < 0) | (y >= n_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"dataset.{name}[{i}] is {y[i].item()!r}, not a class index of the model, which has "
            f"{n_classes} outputs (labels must be integers 0 .. {n_classes - 1}): give the "
            f"last layer one output per class or relabel the data")
