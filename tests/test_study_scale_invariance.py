"""The scale_invariance study (tutorial Theory 4, reparameterization): one quick run per
module, and the tests assert on its data that BatchNorm makes the weights before it
scale-invariant (output, 1/c gradient, orthogonality), that ‖W‖ grows under plain SGD and
settles with weight decay, and that the verdict is computed from those numbers."""
import copy
import json

import numpy as np
import pytest

pytest.importorskip("sklearn")  # the digits data

from tinygrad_bn import studies  # noqa: E402
from tinygrad_bn.studies import scale_invariance as si  # noqa: E402
from tinygrad_bn.training import data  # noqa: E402


@pytest.fixture(scope="module")
def result():
    return si.run(quick=True, progress=False)


def _at(r, c):
    return int(np.argmin(np.abs(np.log(np.asarray(r.scales) / c))))


def test_study_declaration():
    assert si.STUDY.name == "scale_invariance" and si.__name__.endswith(".scale_invariance")
    assert callable(si.run) and callable(si.plot) and callable(si.summary)
    assert set(si.FULL) <= set(si.QUICK) and si.FULL["steps"] > si.QUICK["steps"]
    if "scale_invariance" in studies.STUDIES:  # once registered
        assert studies.get("scale_invariance") is si.STUDY


def test_arms_and_shapes(result):
    r = result
    assert r.arms[:3] == ["no BN", "BN", "BN + wd"]
    assert r.arm_settings["no BN"]["bn"] is False and r.arm_settings["BN + wd"]["wd"] is True
    n_seeds, n_win = len(r.seeds), r.config["steps"] // r.config["every"]
    L = len(r.config["hidden"])
    for arm in r.arms:
        assert np.asarray(r.w_sq[arm]).shape == (n_seeds, n_win + 1, L)
        for key in ("abs_cos", "cos_max", "row_cos_max", "angle", "sgd_growth"):
            assert np.asarray(getattr(r, key)[arm]).shape == (n_seeds, n_win, L)
        assert np.asarray(r.loss[arm]).shape == (n_seeds, n_win)
        assert not np.any(r.diverged[arm])
        assert np.all(np.isfinite(np.asarray(r.w_sq[arm])))
    for arm in si.PROBE_ARMS:
        assert np.asarray(r.out_rel[arm]).shape == (n_seeds, len(r.scales))
        assert np.asarray(r.grad_ratio[arm]).shape == (n_seeds, len(r.scales), L)


def test_the_hidden_weights_start_at_their_scale(result):
    r = result
    w = {arm: np.asarray(r.w_sq[arm])[:, 0] for arm in r.arms}
    for c in r.config["init_scales"]:
        np.testing.assert_allclose(w[f"BN, W×{c:g}"], c * c * w["BN"], rtol=1e-5)
        np.testing.assert_allclose(w[f"BN + wd, W×{c:g}"], c * c * w["BN"], rtol=1e-5)


# -------------------------------------------------------------- 1. invariance of the output
def test_output_is_invariant_to_the_scale_of_w_for_moderate_c(result):
    r = result
    c = np.asarray(r.scales)
    err = np.asarray(r.out_rel["BN"])
    moderate = (c >= 0.3) & (c <= 1e5)
    assert np.all(err[:, moderate] <= 1e-3)
    assert np.all(err[:, c >= 3] <= 3e-4)  # above c = 1 only ε's effect at c = 1 remains
    lo, hi = r.invariance_window()
    assert lo <= 0.32 and hi >= 1e5 and r.decades() >= 5
    # without BN a factor 10 changes the logits by more than themselves
    assert np.all(np.asarray(r.out_rel["no BN"])[:, _at(r, 10)] > 1)


def test_eps_breaks_invariance_where_it_predicts(result):
    r = result
    c = np.asarray(r.scales)
    err = np.asarray(r.out_rel["BN"])
    assert np.all(err[:, c <= 1e-3] > 0.5)  # ε dominates: the output is no longer y(W)
    assert 0.005 < r.c_star() < 0.1
    # the first BN layer's change is the ε formula √((σ²+ε)/(σ²+ε/c²)), to 1%
    m, p = np.asarray(r.bn1_rel["BN"]), np.asarray(r.bn1_pred["BN"])
    ok = p > 1e-5
    np.testing.assert_allclose(m[ok], p[ok], rtol=1e-2)
    assert r.eps_prediction_error() < 0.005
    assert np.all(np.isnan(np.asarray(r.bn1_rel["no BN"])))


def test_bn_prediction_is_the_normalized_difference():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((200, 5)) * np.array([1e-3, 1e-2, 0.1, 1, 10])
    eps, c = 1e-5, 0.05

    def bn(x):
        return (x - x.mean(0)) / np.sqrt(x.var(0) + eps)

    a, b = bn(z), bn(c * z)
    want = np.linalg.norm(b - a) / np.linalg.norm(a)
    assert si.bn_prediction(z, c, eps) == pytest.approx(want, rel=1e-10)


# -------------------------------------------------------------- 2. the gradient
def test_gradient_scales_as_one_over_c(result):
    r = result
    c = np.asarray(r.scales)
    g = np.asarray(r.grad_ratio["BN"])
    np.testing.assert_allclose(g[:, (c >= 0.3) & (c <= 1e5)], 1.0, atol=1e-2)
    assert r.grad_ratio_error() < 1e-2
    assert np.all(g[:, c <= 1e-3] < 0.1)  # below c*, ε takes over
    assert np.all(np.asarray(r.grad_ratio["no BN"])[:, _at(r, 10)] > 10)


def test_gradient_is_orthogonal_to_w_during_training(result):
    r = result
    for arm in r.arms:
        if r.arm_settings[arm]["bn"]:
            assert r.median_cos(arm) < 1e-4, arm
            assert r.max_cos(arm) < 1e-2, arm
    assert r.median_cos("no BN") > 1e-2  # the control: not orthogonal at all
    # what is left of the cosine is ε's doing: with 10x larger weights (same ε) it is ~100x
    # smaller, with ε scaled as well it is the same as the BN run's
    c = r.config["twin_scale"]
    assert r.median_cos(si.twin_name(c, exact=False)) < 0.1 * r.median_cos("BN")
    assert r.median_cos(si.twin_name(c, exact=True)) == pytest.approx(r.median_cos("BN"),
                                                                      rel=0.2)


# -------------------------------------------------------------- 3. growth without weight decay
def test_norm_grows_without_weight_decay_by_pythagoras(result):
    r = result
    w = np.asarray(r.w_sq["BN"])
    assert np.all(np.diff(w, axis=1) >= 0)  # never shrinks
    assert np.all(r.norm_ratio("BN") >= 1.05)
    np.testing.assert_allclose(r.pythagoras("BN"), 1.0, atol=0.02)
    eff = r.eff_lr("BN")
    assert np.all(eff[:, -1] < 0.95 * eff[:, 0])  # the effective learning rate decays
    # from a 10x smaller init the effective lr is 100x larger and ‖W‖ grows much faster
    assert np.all(r.norm_ratio("BN, W×0.1") > 3 * r.norm_ratio("BN"))


# -------------------------------------------------------------- 4. equilibrium with wd
def test_norm_settles_with_weight_decay(result):
    r = result
    change = r.settle_change("BN + wd")  # (seeds, layers); a single seed fluctuates more
    assert np.all(np.median(change, axis=0) < 0.1) and np.all(change < 0.2)
    np.testing.assert_allclose(r.tail_angle("BN + wd"), r.predicted_angle(), rtol=0.25)
    assert r.predicted_angle() == pytest.approx(np.sqrt(2 * r.config["lr"] * r.config["wd"]),
                                                rel=0.01)
    w = np.asarray(r.w_sq["BN + wd"])
    assert np.all(w[:, -1] < w[:, 0])  # weight decay wins over the growth here
    # without weight decay the rotation keeps slowing down, far below the equilibrium
    assert np.all(r.tail_angle("BN") < 0.3 * r.predicted_angle())
    # from 10x the init, weight decay brings ‖W‖ down towards the same equilibrium
    assert np.all(r.norm_ratio("BN + wd, W×10") < 0.2)
    assert r.final_norm_spread(True) < 0.5 * r.final_norm_spread(False)


# -------------------------------------------------------------- what it buys
def test_init_scale_is_only_a_learning_rate_factor(result):
    r = result
    assert r.twin_gap(exact=True) < 5e-3  # float32 rounding only
    assert r.twin_gap(exact=False) > r.twin_gap(exact=True)  # ε tells the scale apart
    # at the same lr, a 10x init means a 100x smaller effective lr: slower training
    assert r.steps_to("BN, W×10") > r.steps_to("BN")
    np.testing.assert_allclose(r.eff_lr("BN, W×10")[:, 0], r.eff_lr("BN")[:, 0] / 100,
                               rtol=1e-5)


# -------------------------------------------------------------- verdict from the data
def test_verdict_is_supported_on_the_quick_run(result):
    v = si.verdict(result)
    assert v.supported is True
    assert all(c.supported for c in result.claims().values())
    text = si.summary(result)
    assert "Verdict: supported" in text and "√(2·lr·wd)" in text


def test_each_sub_claim_flips_with_the_data(result):
    bn_arms = [a for a in result.arms if result.arm_settings[a]["bn"]]

    r = copy.deepcopy(result)  # a gradient with a radial part
    for a in bn_arms:
        r.abs_cos[a] = np.full_like(np.asarray(r.abs_cos[a], dtype=float), 0.3)
    assert r.claims()["orthogonality"].supported is False
    assert r.claims()["invariance"].supported is True
    assert si.verdict(r).supported is None

    r2 = copy.deepcopy(r)  # ... and an output that depends on the scale
    r2.out_rel["BN"] = np.full_like(np.asarray(r2.out_rel["BN"], dtype=float), 0.5)
    assert r2.claims()["invariance"].supported is False
    assert si.verdict(r2).supported is False
    assert "Verdict: not supported" in str(si.verdict(r2))

    r3 = copy.deepcopy(result)  # ‖W‖ shrinking without weight decay
    r3.w_sq["BN"] = np.asarray(r3.w_sq["BN"], dtype=float)[:, ::-1].copy()
    assert r3.claims()["growth"].supported is False
    assert si.verdict(r3).supported is None

    r4 = copy.deepcopy(result)  # growth that is not Pythagorean
    r4.sgd_growth["BN"] = 3 * np.asarray(r4.sgd_growth["BN"], dtype=float)
    assert r4.claims()["growth"].supported is False

    r5 = copy.deepcopy(result)  # a rotation far from √(2·lr·wd)
    r5.angle["BN + wd"] = 3 * np.asarray(r5.angle["BN + wd"], dtype=float)
    assert r5.claims()["equilibrium"].supported is False

    r6 = copy.deepcopy(result)  # a norm still drifting at the end
    w = np.asarray(r6.w_sq["BN + wd"], dtype=float)
    r6.w_sq["BN + wd"] = w * np.geomspace(1, 100, w.shape[1])[None, :, None]
    assert r6.claims()["equilibrium"].supported is False
    assert si.verdict(r6).supported is None


def test_save_writes_strict_json_and_a_png(result, tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    png, js = si.STUDY.save(result, str(tmp_path))
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "scale_invariance.png").stat().st_size > 10_000

    def no_constants(name):
        raise ValueError(f"non-strict JSON constant {name}")

    with open(js) as f:
        record = json.load(f, parse_constant=no_constants)
    assert record["study"] == "scale_invariance"
    assert record["verdict"]["supported"] is True
    res = record["result"]
    assert res["arms"] == result.arms
    assert res["bn1_rel"]["no BN"][0][0] is None  # NaN -> null
    assert len(res["w_sq"]["BN"][0]) == result.config["steps"] // result.config["every"] + 1


def test_plot_has_labelled_panels(result):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    fig = si.plot(result)
    try:
        assert len(fig.axes) == 8
        for ax in fig.axes[:7]:
            assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_probe_puts_the_model_back():
    ds = data.load("digits", seed=0)
    model = si.make_model(ds.n_features, (16,), ds.n_classes, rng=0)
    before = [t.data.copy() for t in list(model.parameters()) + list(model.buffers())]
    out = si.probe(model, ds.X_train[:100], ds.y_train[:100], (0.1, 1.0, 10.0), 1e-5)
    after = [t.data for t in list(model.parameters()) + list(model.buffers())]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert out["out_rel"][1] == 0 and out["out_rel"][2] < 1e-3


def test_runs_are_deterministic_by_seed():
    small = dict(steps=20, every=10, n_seeds=1, probe_scales=(0.1, 1.0, 10.0))
    a = si.run(seed=3, progress=False, **small)
    b = si.run(seed=3, progress=False, **small)
    c = si.run(seed=4, progress=False, **small)
    for arm in a.arms:
        np.testing.assert_array_equal(a.w_sq[arm], b.w_sq[arm])
        np.testing.assert_array_equal(a.loss[arm], b.loss[arm])
        assert not np.array_equal(a.loss[arm], c.loss[arm])
