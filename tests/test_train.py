"""Training: models learn within a small budget, divergence is caught, History answers
questions, predict/accuracy work in eval mode."""
import math
import time

import numpy as np
import pytest

from tinygrad_bn import Tensor, data, nn, optim
from tinygrad_bn.models import mlp
from tinygrad_bn.train import History, accuracy, fit, predict


@pytest.fixture(scope="module")
def moons():
    return data.load("moons", n=512, seed=0)


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_moons_reach_95_percent_quickly(moons, norm):
    t0 = time.perf_counter()
    model = mlp(2, (32, 32), 2, norm=norm, rng=0)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    hist = fit(model, moons, opt, epochs=8, batch_size=32, seed=0, progress=False)
    assert time.perf_counter() - t0 < 15
    assert hist.diverged_at is None and hist.message == ""
    assert hist.steps == 8 * (384 // 32)
    assert hist.final_test_acc > 0.95
    assert accuracy(model, moons.X_test, moons.y_test) == pytest.approx(hist.final_test_acc)
    assert hist.step_loss[-1] < hist.step_loss[0] / 3


def test_digits_reach_90_percent_quickly():
    pytest.importorskip("sklearn")
    t0 = time.perf_counter()
    ds = data.load("digits", seed=0)
    model = mlp(64, (64,), 10, norm="batch", rng=0)
    hist = fit(model, ds, optim.Adam(model.parameters(), lr=1e-2), epochs=3, batch_size=64,
               seed=0, progress=False)
    assert time.perf_counter() - t0 < 20
    assert hist.diverged_at is None
    assert hist.final_test_acc > 0.90
    assert accuracy(model, ds.X_test, ds.y_test) > 0.90


@pytest.mark.parametrize("lr", [1e6, 1e12])
def test_fit_stops_on_a_nan_or_inf_loss(moons, lr):
    model = mlp(2, (16, 16), 2, rng=0)
    with np.errstate(all="ignore"):
        hist = fit(model, moons, optim.SGD(model.parameters(), lr=lr), epochs=20,
                   batch_size=32, progress=False)
    step = hist.diverged_at
    assert step is not None and 1 < step < 20 * 12
    assert hist.steps == step  # stopped right there
    assert not math.isfinite(hist.step_loss[-1])
    assert all(math.isfinite(v) for v in hist.step_loss[:-1])
    assert f"step {step}" in hist.message
    assert "lower learning rate" in hist.message
    assert f"{lr:g}" in hist.message


def test_fit_evaluates_every_n_steps_and_respects_max_steps(moons):
    model = mlp(2, (8,), 2, rng=0)
    hist = fit(model, moons, optim.SGD(model.parameters(), lr=0.1), epochs=10, batch_size=32,
               eval_every=5, max_steps=23, progress=False)
    assert hist.steps == 23
    assert hist.eval_step == [5, 10, 15, 20, 23]
    assert len(hist.train_acc) == len(hist.test_acc) == len(hist.lr) == 5
    assert all(0 <= a <= 1 for a in hist.train_acc + hist.test_acc)
    assert model.training  # left in training mode


def test_fit_steps_the_scheduler_once_per_epoch(moons):
    model = mlp(2, (8,), 2, rng=0)
    opt = optim.SGD(model.parameters(), lr=0.1)
    sched = optim.StepLR(opt, step_size=1, gamma=0.5)
    hist = fit(model, moons, opt, epochs=3, batch_size=128, scheduler=sched, progress=False)
    assert hist.eval_step == [3, 6, 9]
    assert hist.lr == pytest.approx([0.1, 0.05, 0.025])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0125)


def test_fit_with_a_custom_loss_and_a_batch_larger_than_the_data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 3)).astype(np.float32)
    w = np.array([[1.0], [-2.0], [0.5]], np.float32)
    ds = data.Dataset("linear", X, (X @ w)[:, 0], X, (X @ w)[:, 0])
    model = nn.Linear(3, 1, rng=0)
    seen = []

    def loss_fn(out, y):
        seen.append(len(y))
        return nn.functional.mse_loss(out[:, 0], y)

    # no accuracy for a regression: evaluate never (eval_every beyond the budget)
    hist = fit(model, ds, optim.SGD(model.parameters(), lr=0.1), loss_fn=loss_fn, epochs=200,
               batch_size=64, eval_every=10**6, max_steps=150, progress=False)
    assert seen[0] == 20  # the whole set, not an empty epoch
    assert hist.steps == 150
    assert hist.final_loss < 1e-4
    np.testing.assert_allclose(model.weight.data, w.T, atol=1e-2)


def test_fit_rejects_zero_epochs(moons):
    model = mlp(2, (4,), 2)
    with pytest.raises(ValueError, match="epochs"):
        fit(model, moons, optim.SGD(model.parameters(), lr=0.1), epochs=0, progress=False)


def test_fit_with_a_progress_bar(moons, capsys):
    pytest.importorskip("tqdm")
    model = mlp(2, (4,), 2)
    hist = fit(model, moons, optim.SGD(model.parameters(), lr=0.1), epochs=1,
               batch_size=128, progress=True)
    assert hist.steps == 3


def test_history_steps_to_and_friends():
    h = History(step_loss=[3.0, 2.0, 1.0, 0.5, 0.25], eval_step=[2, 4, 5],
                train_acc=[0.6, 0.95, 0.99], test_acc=[0.5, 0.8, 0.91])
    assert h.steps == 5 and h.final_loss == 0.25 and h.final_test_acc == 0.91
    assert h.steps_to(0.8) == 4
    assert h.steps_to(0.9) == 5
    assert h.steps_to(0.5) == 2
    assert h.steps_to(0.95) is None
    assert h.steps_to(0.9, on="train") == 4
    assert h.steps_to(0.999, on="train") is None
    np.testing.assert_allclose(h.smoothed_loss(2), [2.5, 1.5, 0.75, 0.375])
    np.testing.assert_allclose(h.smoothed_loss(10), h.step_loss)
    empty = History()
    assert empty.steps == 0 and math.isnan(empty.final_loss) and math.isnan(empty.final_test_acc)
    assert empty.steps_to(0.1) is None


def test_steps_to_on_a_real_run(moons):
    model = mlp(2, (32, 32), 2, norm="batch", rng=0)
    hist = fit(model, moons, optim.SGD(model.parameters(), lr=0.1, momentum=0.9), epochs=6,
               batch_size=32, eval_every=3, progress=False)
    s = hist.steps_to(0.9)
    assert s is not None and s in hist.eval_step
    i = hist.eval_step.index(s)
    assert hist.test_acc[i] >= 0.9 and all(a < 0.9 for a in hist.test_acc[:i])


def test_predict_uses_eval_mode_and_restores_training(moons):
    model = mlp(2, (8,), 2, norm="batch", rng=0)
    fit(model, moons, optim.SGD(model.parameters(), lr=0.1), epochs=1, batch_size=32,
        progress=False)
    model.train()
    out = predict(model, moons.X_test, batch_size=7)  # uneven chunks
    assert out.shape == (len(moons.y_test), 2)
    assert model.training
    model.eval()
    np.testing.assert_allclose(out, model(Tensor(moons.X_test)).data, rtol=1e-6, atol=1e-6)
    assert not model.training  # predict leaves eval mode alone too
    # eval mode: one row alone gives the same answer as inside the batch
    np.testing.assert_allclose(predict(model, moons.X_test[:1]), out[:1], rtol=1e-6, atol=1e-6)
    assert accuracy(model, moons.X_test, moons.y_test) == pytest.approx(
        (out.argmax(1) == moons.y_test).mean())
