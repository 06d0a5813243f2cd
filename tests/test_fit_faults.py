"""fit under faults: divergence caught in the loss, a buffer, a gradient or a parameter and
undone; bad data and bad arguments named; no raw NumPy warnings; a per-step callback;
Ctrl-C leaves a consistent model and hands back the history."""
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest

from tinygrad_bn import data, nn, optim
from tinygrad_bn.train import History, StepInfo, accuracy, fit, predict
from tinygrad_bn.training.models import mlp


@pytest.fixture(scope="module")
def moons():
    return data.load("moons", n=256, seed=0)


@pytest.fixture(scope="module")
def spirals():
    return data.load("spirals", n=256, seed=0)


def _state(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def _same_state(model, state):
    now = model.state_dict()
    return list(now) == list(state) and all(np.array_equal(now[k], state[k]) for k in state)


def _all_finite(model):
    return all(np.isfinite(v).all() for v in model.state_dict().values())


def _recording(states):
    """A callback that keeps the model's state after every kept step (states[0]: before)."""
    def callback(info):
        states[info.step] = _state(info.model)
    return callback


def _names(model):
    return {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}


# -- divergence -----------------------------------------------------------------------------

def test_batchnorm_at_lr_1e6_diverges_in_a_buffer_and_is_restored(moons):
    model = mlp(2, (16, 16), 2, norm="batch", rng=0)
    states = {0: _state(model)}
    hist = fit(model, moons, optim.SGD(model.parameters(), lr=1e6), epochs=20, batch_size=32,
               progress=False, callback=_recording(states))
    step = hist.diverged_at
    assert step is not None and hist.outcome == "diverged"  # was: diverged_at=None
    assert hist.diverged_in in _names(model)
    assert hist.diverged_in.endswith("running_var")  # a running statistic overflowed
    assert hist.restored and hist.model_step in (step - 1, step - 2)
    assert _same_state(model, states[hist.model_step])  # exactly the last finite state
    assert _all_finite(model)
    assert np.isfinite(predict(model, moons.X_test)).all()
    assert hist.eval_step[-1] == hist.model_step
    assert hist.final_test_acc == accuracy(model, moons.X_test, moons.y_test)
    assert hist.final_train_acc == accuracy(model, moons.X_train, moons.y_train)
    assert f"step {step}" in hist.message and hist.diverged_in in hist.message
    assert f"restored to its state after step {hist.model_step}" in hist.message
    assert model.training and all(p.grad is None for p in model.parameters())


def test_no_norm_at_lr_50_returns_the_restored_model_and_its_accuracy(spirals):
    model = mlp(2, (32, 32), 3, rng=0)
    states = {0: _state(model)}
    opt = optim.SGD(model.parameters(), lr=50, momentum=0.9)
    hist = fit(model, spirals, opt, epochs=10, batch_size=32, progress=False,
               callback=_recording(states))
    step = hist.diverged_at
    assert step is not None and hist.diverged_in == "loss"
    assert hist.steps == step and not math.isfinite(hist.step_loss[-1])
    # the state after step-1 gave the NaN loss itself: the model goes back one further
    assert hist.model_step == step - 2 and _same_state(model, states[step - 2])
    assert _all_finite(model)
    with np.errstate(all="ignore"):  # finite but huge weights: some outputs overflow
        assert hist.final_test_acc == accuracy(model, spirals.X_test, spirals.y_test)
        assert hist.final_train_acc == accuracy(model, spirals.X_train, spirals.y_train)
    assert "outputs are NaN or inf" in hist.message  # and the report says so
    assert hist.eval_step == sorted(set(hist.eval_step))  # no evaluation of a dropped state
    assert hist.eval_step[-1] == hist.model_step
    assert "lower learning rate" in hist.message and "lr=50" in hist.message


def test_a_parameter_that_the_update_makes_infinite_is_named_and_undone():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 3)).astype(np.float32)
    Y = (X @ np.array([1.0, -2.0, 0.5], np.float32)) * 1e3
    ds = data.Dataset("linear", X, Y, X, Y)
    model = nn.Linear(3, 1, rng=0)
    before = _state(model)
    hist = fit(model, ds, optim.SGD(model.parameters(), lr=1e38), epochs=2, batch_size=16,
               loss_fn=lambda out, y: nn.functional.mse_loss(out[:, 0], y), progress=False)
    assert hist.diverged_at == 1 and hist.diverged_in in ("weight", "bias")
    assert hist.model_step == 0 and _same_state(model, before)
    assert "update made parameter" in hist.message and "lower learning rate" in hist.message


def test_a_nonfinite_gradient_is_named_as_the_first_bad_value(moons):
    model = mlp(2, (8,), 2, rng=0)
    before = _state(model)
    # sqrt at 0: a finite loss (0) whose gradient is inf·0 = NaN
    hist = fit(model, moons, optim.SGD(model.parameters(), lr=0.1), epochs=1, batch_size=32,
               loss_fn=lambda out, y: (out * 0).sqrt().sum(), progress=False)
    assert hist.diverged_at == 1 and hist.diverged_in == "0.weight.grad"
    assert hist.step_loss == [0.0] and _same_state(model, before)
    assert "gradient of 0.weight" in hist.message
    assert "learning rate is not the cause" in hist.message  # nothing was updated yet


def test_a_first_forward_pass_that_overflows_restores_the_initial_state(moons):
    model = mlp(2, (16,), 2, init_std=1e20, rng=0)
    before = _state(model)
    hist = fit(model, moons, optim.SGD(model.parameters(), lr=0.1), epochs=1, batch_size=32,
               progress=False)
    assert hist.diverged_at == 1 and hist.diverged_in == "loss"
    assert hist.model_step == 0 and _same_state(model, before)  # running stats too
    assert hist.eval_step == [0]
    assert "initial state" in hist.message and "not the cause" in hist.message


def test_no_raw_numpy_warning_escapes(moons, spirals, capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m1 = mlp(2, (16, 16), 2, norm="batch", rng=0)
        h1 = fit(m1, moons, optim.SGD(m1.parameters(), lr=1e6), epochs=20, batch_size=32,
                 progress=False)
        m2 = mlp(2, (32, 32), 3, rng=0)
        h2 = fit(m2, spirals, optim.SGD(m2.parameters(), lr=50, momentum=0.9), epochs=10,
                 batch_size=32, progress=False)
    assert h1.diverged_at is not None and h2.diverged_at is not None
    assert [str(w.message) for w in caught] == []
    assert capsys.readouterr().err == ""


def test_divergence_is_reported_even_when_numpy_is_set_to_raise(moons):
    model = mlp(2, (16, 16), 2, norm="batch", rng=0)
    with np.errstate(all="raise"):  # no FloatingPointError from inside fit
        hist = fit(model, moons, optim.SGD(model.parameters(), lr=1e6), epochs=20,
                   batch_size=32, progress=False)
    assert hist.diverged_at is not None and _all_finite(model)


# -- bad data, bad arguments ----------------------------------------------------------------

def _copy(ds, **changes):
    arrays = {k: getattr(ds, k).copy() for k in ("X_train", "y_train", "X_test", "y_test")}
    arrays.update(changes)
    return data.Dataset(ds.name, **arrays)


def test_a_nan_in_the_inputs_is_named_as_bad_data(moons):
    X = moons.X_train.copy()
    X[17, 1] = np.nan
    X[40, 0] = np.inf
    model = mlp(2, (8,), 2, norm="batch", rng=0)
    before = _state(model)
    with pytest.raises(ValueError, match=r"X_train.*2 of 192 rows.*row 17") as e:
        fit(model, _copy(moons, X_train=X), optim.SGD(model.parameters(), lr=0.1),
            progress=False)
    assert "learning rate" not in str(e.value).replace("not a learning-rate problem", "")
    assert "drop those rows" in str(e.value)
    assert _same_state(model, before)


@pytest.mark.parametrize("change, pattern", [
    ("X_test", r"X_test.*row 3"),
    ("y_train_float_nan", r"y_train.*row 5"),
    ("y_train_out_of_range", r"y_train\[5\] is 2.*2 outputs"),
    ("y_test_negative", r"y_test\[0\] is -1"),
    ("y_train_fraction", r"y_train\[5\] is 0.5"),
    ("empty", r"empty"),
    ("lengths", r"X_train has 192 rows but y_train has 191"),
])
def test_bad_data_raises_a_value_error_that_names_it(moons, change, pattern):
    ds = moons
    if change == "X_test":
        X = moons.X_test.copy()
        X[3] = np.inf
        ds = _copy(moons, X_test=X)
    elif change in ("y_train_float_nan", "y_train_fraction"):
        y = moons.y_train.astype(np.float64)
        y[5] = np.nan if change == "y_train_float_nan" else 0.5
        ds = _copy(moons, y_train=y)
    elif change == "y_train_out_of_range":
        y = moons.y_train.copy()
        y[5] = 2
        ds = _copy(moons, y_train=y)
    elif change == "y_test_negative":
        y = moons.y_test.copy()
        y[0] = -1
        ds = _copy(moons, y_test=y)
    elif change == "empty":
        ds = _copy(moons, X_train=moons.X_train[:0], y_train=moons.y_train[:0])
    elif change == "lengths":
        ds = _copy(moons, y_train=moons.y_train[:-1])
    model = mlp(2, (8,), 2, norm="batch", rng=0)
    before = _state(model)
    with pytest.raises(ValueError, match=pattern):
        fit(model, ds, optim.SGD(model.parameters(), lr=0.1), progress=False)
    assert _same_state(model, before)


def test_a_model_that_is_already_nan_is_refused(moons):
    model = mlp(2, (8,), 2, rng=0)
    model[2].bias.data[1] = np.nan
    with pytest.raises(ValueError, match=r"2\.bias.*before training"):
        fit(model, moons, optim.SGD(model.parameters(), lr=0.1), progress=False)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(batch_size=0), r"batch_size must be an integer >= 1.*got 0"),  # was ZeroDivisionError
    (dict(batch_size=-3), r"batch_size.*got -3"),
    (dict(batch_size=2.5), r"batch_size.*got 2.5"),
    (dict(batch_size=True), r"batch_size.*got True"),
    (dict(epochs=-1), r"epochs.*got -1"),
    (dict(epochs=0), r"epochs.*got 0"),
    (dict(max_steps=0), r"max_steps.*got 0"),
    (dict(eval_every=-5), r"eval_every.*got -5"),
    (dict(callback="print"), r"callback must be a function"),
    (dict(loss_fn=3), r"loss_fn must be a function"),
    (dict(scheduler=1), r"scheduler must have a step"),
])
def test_argument_errors_are_value_errors_naming_the_value(moons, kwargs, pattern):
    model = mlp(2, (8,), 2, norm="batch", rng=0)
    before = _state(model)
    with pytest.raises(ValueError, match=pattern):
        fit(model, moons, optim.SGD(model.parameters(), lr=0.1), progress=False, **kwargs)
    assert _same_state(model, before)


def test_a_dataset_without_the_splits_is_a_value_error():
    model = mlp(2, (8,), 2, rng=0)
    with pytest.raises(ValueError, match="X_train"):
        fit(model, (np.zeros((4, 2)), np.zeros(4)), optim.SGD(model.parameters(), lr=0.1),
            progress=False)


# -- callback -------------------------------------------------------------------------------

def test_the_callback_runs_once_per_step_with_the_step_info(moons):
    model = mlp(2, (8,), 2, rng=0)
    opt = optim.SGD(model.parameters(), lr=0.1)
    seen = []
    hist = fit(model, moons, opt, epochs=3, batch_size=64, progress=False,
               callback=seen.append)
    assert [i.step for i in seen] == list(range(1, hist.steps + 1)) and hist.steps == 9
    assert [i.epoch for i in seen] == [1] * 3 + [2] * 3 + [3] * 3
    assert all(isinstance(i, StepInfo) for i in seen)
    assert [i.loss for i in seen] == hist.step_loss
    assert all(i.model is model and i.optimizer is opt and i.history is hist for i in seen)
    assert all(i.lr == 0.1 for i in seen)
    assert hist.outcome == "finished" and not hist.stopped_early


@pytest.mark.parametrize("returned", [1, "yes", None, False, np.False_])
def test_only_true_stops_training(moons, returned):
    model = mlp(2, (8,), 2, rng=0)
    hist = fit(model, moons, optim.SGD(model.parameters(), lr=0.1), epochs=2, batch_size=64,
               progress=False, callback=lambda info: returned)
    assert hist.steps == 6 and not hist.stopped_early


def test_the_callback_stops_training_by_returning_true(moons):
    model = mlp(2, (8,), 2, norm="batch", rng=0)
    calls = []

    def stop_at_5(info):
        calls.append(info.step)
        return info.step == 5

    hist = fit(model, moons, optim.SGD(model.parameters(), lr=0.1), epochs=10, batch_size=32,
               progress=False, callback=stop_at_5)
    assert calls == [1, 2, 3, 4, 5] and hist.steps == 5
    assert hist.stopped_early and hist.outcome == "stopped" and "step 5" in hist.message
    assert hist.model_step == 5 and hist.eval_step == [5]  # evaluated at the stop
    assert hist.final_test_acc == accuracy(model, moons.X_test, moons.y_test)


# -- History --------------------------------------------------------------------------------

def test_history_repr_and_str_show_the_outcome(moons):
    model = mlp(2, (8,), 2, rng=0)
    done = fit(model, moons, optim.SGD(model.parameters(), lr=0.1), epochs=1, batch_size=64,
               progress=False)
    assert repr(done).startswith("History(finished: 3 steps") and "test acc" in repr(done)
    assert str(done) == repr(done)  # no message
    bad = History(step_loss=[1.0, math.nan], diverged_at=2, diverged_in="loss", restored=True,
                  model_step=0, message="step 2: the loss became nan")
    assert repr(bad).startswith("History(diverged at step 2 in 'loss', model restored to "
                                "step 0: 2 steps, final loss nan")
    assert str(bad).endswith("\nstep 2: the loss became nan")
    assert "interrupted after step 4" in repr(History(step_loss=[1.0] * 4, model_step=4,
                                                      interrupted=True))
    assert "stopped after step 3" in repr(History(step_loss=[1.0] * 3, model_step=3,
                                                  stopped_early=True))
    assert History().outcome == "finished" and "0 steps" in repr(History())


# -- Ctrl-C ---------------------------------------------------------------------------------

def test_a_keyboard_interrupt_carries_the_history(moons):
    model = mlp(2, (8,), 2, norm="batch", rng=0)

    def interrupt_at_7(info):
        if info.step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as e:
        fit(model, moons, optim.SGD(model.parameters(), lr=0.1), epochs=10, batch_size=32,
            progress=False, callback=interrupt_at_7)
    hist = e.value.history
    assert hist.interrupted and hist.outcome == "interrupted"
    assert hist.steps == 7 and hist.model_step == 7 and hist.eval_step[-1] == 7
    assert hist.final_test_acc == accuracy(model, moons.X_test, moons.y_test)
    assert "interrupted" in hist.message and model.training and _all_finite(model)


def test_ctrl_c_before_the_update_undoes_the_running_statistics_of_that_step(moons):
    from tinygrad_bn.nn.functional import cross_entropy

    model = mlp(2, (8,), 2, norm="batch", rng=0)
    states = {0: _state(model)}

    def loss_fn(out, y):  # runs after the forward pass has moved the running statistics
        if len(states) == 4:
            raise KeyboardInterrupt
        return cross_entropy(out, y)

    with pytest.raises(KeyboardInterrupt) as e:
        fit(model, moons, optim.SGD(model.parameters(), lr=0.1), epochs=10, batch_size=32,
            loss_fn=loss_fn, progress=False, callback=_recording(states))
    hist = e.value.history
    assert hist.interrupted and hist.diverged_at is None and not hist.restored
    assert hist.steps == 3 and hist.model_step == 3
    assert _same_state(model, states[3])  # not half a step 4
    assert "in step 4; the model is as after step 3" in hist.message


@pytest.mark.parametrize("fail_at", [1, 4])
def test_a_step_that_raises_leaves_the_model_as_after_the_previous_step(moons, fail_at):
    from tinygrad_bn.nn.functional import cross_entropy

    model = mlp(2, (8,), 2, norm="batch", rng=0)
    states = {0: _state(model)}

    def loss_fn(out, y):
        if len(states) == fail_at:
            raise ValueError("my loss failed")
        return cross_entropy(out, y)

    with pytest.raises(ValueError, match="my loss failed"):
        fit(model, moons, optim.SGD(model.parameters(), lr=0.1), epochs=10, batch_size=32,
            loss_fn=loss_fn, progress=False, callback=_recording(states))
    assert _same_state(model, states[fail_at - 1])  # at step 1: the call changed nothing


class _BlowUpThenCtrlC:
    """An optimizer whose third step makes a weight infinite and then gets Ctrl-C (a real
    SIGINT, so it is held until the step is complete)."""

    def __init__(self, model):
        self.inner = optim.SGD(model.parameters(), lr=0.1)
        self.param_groups = self.inner.param_groups
        self.weight = model[0].weight
        self.steps = 0

    def zero_grad(self):
        self.inner.zero_grad()

    def step(self):
        self.inner.step()
        self.steps += 1
        if self.steps == 3:
            self.weight.data[0, 0] = np.inf
            signal.raise_signal(signal.SIGINT)


def test_ctrl_c_after_an_update_that_went_nonfinite_restores_the_model(moons):
    model = mlp(2, (8,), 2, norm="batch", rng=0)
    states = {0: _state(model)}
    with pytest.raises(KeyboardInterrupt) as e:
        fit(model, moons, _BlowUpThenCtrlC(model), epochs=10, batch_size=32, progress=False,
            callback=_recording(states))
    hist = e.value.history
    assert hist.interrupted and hist.diverged_at == 3 and hist.diverged_in == "0.weight"
    assert hist.model_step == 2 and _same_state(model, states[2]) and _all_finite(model)
    assert hist.final_test_acc == accuracy(model, moons.X_test, moons.y_test)
    assert repr(hist).startswith("History(interrupted, diverged at step 3 in '0.weight'")


_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from tinygrad_bn import data, optim
    from tinygrad_bn.train import accuracy, fit
    from tinygrad_bn.training.models import mlp

    ds = data.load("moons", n=512, seed=0)
    model = mlp(2, (32, 32), 2, norm="batch", rng=0)

    def announce(info):
        if info.step == 5:
            print("started", flush=True)

    try:
        fit(model, ds, optim.SGD(model.parameters(), lr=0.05, momentum=0.9), epochs=100000,
            batch_size=16, progress=False, callback=announce)
        print(json.dumps({"finished": True}), flush=True)
    except KeyboardInterrupt as e:
        h = getattr(e, "history", None)
        print(json.dumps({
            "has_history": h is not None,
            "interrupted": h.interrupted,
            "steps": h.steps,
            "model_step": h.model_step,
            "last_eval": h.eval_step[-1],
            "params_finite": all(bool(np.isfinite(p.data).all()) for p in model.parameters()),
            "buffers_finite": all(bool(np.isfinite(b.data).all()) for b in model.buffers()),
            "acc_matches": h.final_test_acc == accuracy(model, ds.X_test, ds.y_test),
            "training_mode": model.training,
            "message": h.message,
        }), flush=True)
""")


def test_ctrl_c_in_a_subprocess_leaves_a_finite_model_and_the_history():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()  # blocks until the child has taken 5 steps
        assert line.strip() == "started", (line, proc.stderr.read() if proc.poll() else "")
        time.sleep(0.05)  # a few more steps, so that SIGINT lands somewhere mid-step
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["has_history"] and summary["interrupted"]
    assert summary["steps"] >= 5 and summary["model_step"] in (summary["steps"],
                                                                summary["steps"] - 1)
    assert summary["last_eval"] == summary["model_step"]
    assert summary["params_finite"] and summary["buffers_finite"]
    assert summary["acc_matches"] and summary["training_mode"]
    assert summary["message"].startswith("interrupted (Ctrl-C)")
    assert "Traceback" not in err and "RuntimeWarning" not in err
