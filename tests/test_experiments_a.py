"""The studies learning_rate, init, activations and entropy: each runs at quick size once per
module, and the tests assert on the data what the tutorial claims (and what it does not)."""
import math

import numpy as np
import pytest

pytest.importorskip("sklearn")  # the digits data

from tinygrad_bn import experiments, studies  # noqa: E402
from tinygrad_bn.diagnostics import GAUSSIAN_UNIT_ENTROPY  # noqa: E402
from tinygrad_bn.studies import activations, entropy, init, learning_rate  # noqa: E402


@pytest.fixture(scope="module")
def lr_result():
    return learning_rate.run(quick=True, progress=False)


@pytest.fixture(scope="module")
def init_result():
    return init.run(quick=True, progress=False)


@pytest.fixture(scope="module")
def act_result():
    return activations.run(quick=True, progress=False)


@pytest.fixture(scope="module")
def ent_result():
    return entropy.run(quick=True, progress=False)


def _figure_ok(study, result, tmp_path, n_axes):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    path = tmp_path / "fig.png"
    fig = study.plot(result, str(path))  # saved and closed, still inspectable
    assert path.stat().st_size > 10_000
    assert len([a for a in fig.axes if a.get_label() != "<colorbar>"]) >= n_axes
    for ax in fig.axes[:n_axes]:
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()


def test_studies_are_registered():
    for name, mod in [("learning_rate", learning_rate), ("init", init),
                      ("activations", activations), ("entropy", entropy)]:
        assert studies.get(name) is mod.STUDY and mod.__name__.endswith("." + name)
        assert callable(mod.run) and callable(mod.plot) and callable(mod.summary)
    # the old names keep working
    from tinygrad_bn.experiments import init_scale, lr_sweep

    assert lr_sweep is learning_rate and init_scale is init
    assert experiments.get("learning_rate") is learning_rate.STUDY


# --------------------------------------------------------------------------- learning rate
def test_lr_sweep_shapes_and_grid(lr_result):
    r = lr_result
    assert r.lrs[0] == pytest.approx(1e-3) and r.lrs[-1] == pytest.approx(3.0)
    assert len(r.seeds) >= 3
    for n in ("none", "batch"):
        assert np.asarray(r.test_acc[n]).shape == (len(r.lrs), len(r.seeds))
        assert np.all((np.asarray(r.test_acc[n]) >= 0) & (np.asarray(r.test_acc[n]) <= 1))


def test_bn_trains_at_10x_larger_learning_rates(lr_result):
    r = lr_result
    big_bn, big_none = r.largest_lr("batch"), r.largest_lr("none")
    assert np.isfinite(big_bn) and np.isfinite(big_none)
    assert big_bn >= 10 * big_none
    # at the largest rate that trains with BN, the model without BN is much worse
    i = r.lrs.index(big_bn)
    assert r.mean_acc("none")[i] < r.mean_acc("batch")[i] - 0.3
    assert r.mean_acc("none")[i] < r.threshold


def test_bn_trains_over_a_wider_range_of_rates(lr_result):
    r = lr_result
    assert r.trains("batch").sum() >= r.trains("none").sum() + 4
    # the best accuracy with BN is at least as good as the best without
    assert np.nanmax(r.mean_acc("batch")) >= np.nanmax(r.mean_acc("none"))


def test_lr_sweep_summary_and_plot(lr_result, tmp_path):
    text = learning_rate.summary(lr_result)
    assert "Verdict:" in text and "10x" in text
    _figure_ok(learning_rate, lr_result, tmp_path, 2)


def test_lr_sweep_is_deterministic_by_seed():
    a = learning_rate.run(lrs=(0.3,), epochs=1, n_seeds=1, seed=3, progress=False)
    b = learning_rate.run(lrs=(0.3,), epochs=1, n_seeds=1, seed=3, progress=False)
    c = learning_rate.run(lrs=(0.3,), epochs=1, n_seeds=1, seed=4, progress=False)
    for n in ("none", "batch"):
        np.testing.assert_array_equal(a.final_loss[n], b.final_loss[n])
        assert not np.array_equal(a.final_loss[n], c.final_loss[n])


# --------------------------------------------------------------------------- init
def test_bn_is_less_sensitive_to_the_init_scale(init_result):
    r = init_result
    assert r.stds[0] <= 1e-3 and r.stds[-1] >= 10  # four orders of magnitude and more
    assert r.decades("batch") >= r.decades("none") + 2
    # without BN both tiny and large scales fail; with BN tiny scales train fine
    i_small, i_big = 0, len(r.stds) - 1
    assert r.mean_acc("none")[i_small] < r.threshold
    assert r.mean_acc("none")[i_big] < r.threshold
    assert r.mean_acc("batch")[i_small] > 0.9


def test_bn_normalizes_the_signal_at_init(init_result):
    r = init_result
    a_bn = np.asarray(r.act_std["batch"])
    a_none = np.asarray(r.act_std["none"])
    ok = np.asarray(r.stds) >= 1e-2  # below that BN's ε (1e-5) is comparable to the variance
    np.testing.assert_allclose(a_bn[ok], 1.0, atol=0.05)
    # without BN the last ReLU's input scales like s³ over the grid
    assert a_none[-1, -1] / a_none[0, -1] > 1e10


def test_large_init_with_bn_trains_but_worse_in_the_same_budget(init_result):
    r = init_result
    acc = r.mean_acc("batch")
    big = np.asarray(r.stds) >= 3
    assert np.all(acc[big] < np.nanmax(acc) - 0.1)  # "just slower" costs accuracy here
    assert np.all(np.asarray(r.first_loss["batch"])[big] > 10)  # huge initial logits


def test_init_summary_and_plot(init_result, tmp_path):
    assert "Verdict:" in init.summary(init_result)
    _figure_ok(init, init_result, tmp_path, 3)


# --------------------------------------------------------------------------- activations
def test_activation_percentiles_are_ordered_and_bn_starts_standardized(act_result):
    r = act_result
    for n in ("none", "batch"):
        p = np.asarray(r.percentiles[n])
        assert p.shape == (len(r.steps), r.config["hidden"][-1], 3)
        assert np.all(np.diff(p, axis=2) >= 0)
    p0 = np.asarray(r.percentiles["batch"])[0]
    # a standardized unit: median ~0, 15th/85th percentiles near ∓1.04 (Gaussian)
    assert np.abs(np.median(p0[:, 1])) < 0.2
    assert 1.6 < np.median(p0[:, 2] - p0[:, 0]) < 2.5


def test_bn_sigmoid_inputs_are_more_stable_over_training(act_result):
    r = act_result
    assert r.drift("batch").mean() < 0.5 * r.drift("none").mean()
    assert np.median(r.relative_drift("batch")) < np.median(r.relative_drift("none"))
    assert r.median_drift("batch") < r.median_drift("none")


def test_bn_trains_the_sigmoid_mlp_faster(act_result):
    r = act_result
    steps = np.asarray(r.steps)
    i = int(np.searchsorted(steps, 500))
    assert r.test_acc["batch"][i] > r.test_acc["none"][i] + 0.2
    assert r.test_acc["batch"][-1] >= r.test_acc["none"][-1]


def test_activations_summary_and_plot(act_result, tmp_path):
    assert "Verdict:" in activations.summary(act_result)
    _figure_ok(activations, act_result, tmp_path, 3)


# --------------------------------------------------------------------------- entropy
def test_bn_output_entropy_is_1_42_nats_at_init(ent_result):
    r = ent_result
    for name in ("BN", "BN, N(0,1) init"):
        np.testing.assert_allclose(r.init_entropy_gaussian[name], GAUSSIAN_UNIT_ENTROPY,
                                   atol=0.01)
        np.testing.assert_allclose(r.init_entropy_hist[name], GAUSSIAN_UNIT_ENTROPY, atol=0.1)
        # and on the first training batch, as recorded during training
        np.testing.assert_allclose(np.asarray(r.entropy_hist[name])[0], 1.42, atol=0.1)
    assert r.target == pytest.approx(0.5 * math.log(2 * math.pi * math.e))


def test_entropy_without_bn_depends_on_scale_and_depth(ent_result):
    r = ent_result
    h = np.asarray(r.init_entropy_gaussian["no BN"])
    assert np.all(np.diff(h) < 0) and h[-1] < GAUSSIAN_UNIT_ENTROPY - 2  # shrinking signal
    big = np.asarray(r.init_entropy_gaussian["no BN, N(0,1) init"])
    assert np.all(big > GAUSSIAN_UNIT_ENTROPY + 0.5)  # large scale: high entropy ...


def test_bn_prevents_tanh_saturation(ent_result):
    r = ent_result
    sat_big = np.asarray(r.saturation["no BN, N(0,1) init"])
    sat_bn = np.asarray(r.saturation["BN, N(0,1) init"])
    assert sat_big[0].min() > 0.5  # ... and mostly saturated tanh units
    assert sat_bn.max() < 0.05


def test_bn_keeps_gradient_norms_even_across_layers(ent_result):
    r = ent_result

    def ratio(name):  # layer 1 over layer 4, at init
        g = np.asarray(r.grad_norm[name])[0]
        return g[0] / g[-1]

    assert 0.5 < ratio("BN") < 2 and 0.5 < ratio("BN, N(0,1) init") < 2
    assert ratio("no BN") < 0.3          # vanishing towards the input
    assert ratio("no BN, N(0,1) init") > 5  # exploding towards the input
    assert np.all(np.isfinite(np.asarray(r.grad_norm["BN"])))


def test_entropy_records_and_summary_and_plot(ent_result, tmp_path):
    r = ent_result
    steps = np.asarray(r.steps)
    assert steps[0] == 0 and np.all(np.diff(steps) > 0)
    for name in r.configs:
        assert np.asarray(r.entropy_gaussian[name]).shape == (len(steps),
                                                              len(r.config["hidden"]))
    assert "Verdict:" in entropy.summary(r)
    _figure_ok(entropy, r, tmp_path, 6)
