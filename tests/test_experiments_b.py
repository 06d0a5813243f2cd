"""The studies ics, smoothness and eval_mode: the measuring functions are checked against
direct computations, each study runs once at quick size, and the tests assert on its data
what the write-ups report. (variants: tests/test_study_variants.py; this file checks only
that it is registered.)"""
import json
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")  # the digits data

import tinygrad_bn as tg  # noqa: E402
from tinygrad_bn import Tensor, nn, no_grad, optim  # noqa: E402
from tinygrad_bn import diagnostics, experiments, studies  # noqa: E402
from tinygrad_bn.studies import eval_mode, ics, smoothness, variants  # noqa: E402
from tinygrad_bn.studies.framework import to_json  # noqa: E402
from tinygrad_bn.nn.losses import cross_entropy  # noqa: E402


@pytest.fixture(scope="module")
def ics_result():
    return ics.run(quick=True, progress=False)


@pytest.fixture(scope="module")
def smooth_result():
    return smoothness.run(quick=True, progress=False)


@pytest.fixture(scope="module")
def eval_result():
    return eval_mode.run(quick=True, progress=False)


def _data(n=32, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, k, n)


def _state(model):
    return [p.data.copy() for p in model.parameters()] + [b.data.copy()
                                                          for b in model.buffers()]


def _figure_ok(study, result, tmp_path, n_axes):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    fig = study.plot(result)
    axes = [a for a in fig.axes if a.has_data()]
    assert len(axes) >= n_axes
    for ax in axes:
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    path = tmp_path / "fig.png"
    study.plot(result, str(path))
    assert path.stat().st_size > 10_000


def test_studies_are_registered():
    for name, mod in [("ics", ics), ("smoothness", smoothness), ("variants", variants),
                      ("eval_mode", eval_mode)]:
        assert studies.get(name) is mod.STUDY and experiments.get(name) is mod.STUDY
        assert callable(mod.run) and callable(mod.plot) and callable(mod.summary)
    # the old module paths keep working
    from tinygrad_bn.experiments import eval_mode as old_eval_mode, ics as old_ics

    assert old_eval_mode is eval_mode and old_ics is ics


# ------------------------------------------------------------------------------------ ics
def test_measure_ics_matches_a_direct_computation():
    X, y = _data()
    model = ics.make_model("BatchNorm", 6, (8, 8), 3, rng=1)
    twin = ics.make_model("BatchNorm", 6, (8, 8), 3, rng=1)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    out = ics.measure_ics(model, opt, X, y)
    assert out["l2"].shape == out["cosine"].shape == out["grad_norm"].shape == (2,)
    # by hand for layer 2 (the Linear at index 3): block 1 (Linear 0 + BatchNorm 1) updated
    # by plain SGD (first step: the momentum buffer is the gradient), the rest as before
    loss = cross_entropy(twin(Tensor(X)), y)
    params = list(twin.parameters())
    grads = [g.data for g in tg.grad(loss, params)]
    G = grads[4]  # weight of the second Linear
    for p, g in zip(list(twin[0].parameters()) + list(twin[1].parameters()), grads[:4]):
        p.data -= 0.1 * g
    (G2,) = tg.grad(cross_entropy(twin(Tensor(X)), y), [twin[3].weight])
    assert out["l2"][0] == pytest.approx(np.linalg.norm(G - G2.data), rel=1e-4)
    cos = (G * G2.data).sum() / np.linalg.norm(G) / np.linalg.norm(G2.data)
    assert out["cosine"][0] == pytest.approx(cos, abs=1e-5)
    assert out["grad_norm"][0] == pytest.approx(np.linalg.norm(G), rel=1e-5)


def test_measure_ics_leaves_the_model_as_a_plain_step_would():
    X, y = _data()
    a = ics.make_model("BatchNorm", 6, (8, 8, 8), 3, rng=2)
    b = ics.make_model("BatchNorm", 6, (8, 8, 8), 3, rng=2)
    oa = optim.SGD(a.parameters(), lr=0.05, momentum=0.9)
    ob = optim.SGD(b.parameters(), lr=0.05, momentum=0.9)
    for _ in range(2):
        ics.measure_ics(a, oa, X, y)
        ob.zero_grad()
        cross_entropy(b(Tensor(X)), y).backward()
        ob.step()
    for u, v in zip(_state(a), _state(b)):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)


def test_no_update_means_no_shift():
    X, y = _data()
    model = ics.make_model("standard", 6, (8, 8, 8), 3, rng=3)
    out = ics.measure_ics(model, optim.SGD(model.parameters(), lr=0.0), X, y)
    np.testing.assert_allclose(out["l2"], 0, atol=1e-7)
    np.testing.assert_allclose(out["cosine"], 1, atol=1e-6)


def test_step_noise():
    x = Tensor(np.ones((4, 3), np.float32))
    noise = ics.StepNoise(3, strength=1.0, rng=0)
    a, b = noise(x).data, noise(x).data
    np.testing.assert_array_equal(a, b)  # one draw until resample()
    noise.resample()
    assert not np.allclose(noise(x).data, a)
    assert not np.allclose(a[0], a[1])  # every sample is perturbed differently
    noise.eval()
    np.testing.assert_allclose(noise(x).data, 1.5)  # eval: the expected scale 1 + a/2


def test_ics_result_shapes(ics_result):
    r = ics_result
    assert r.layers == list(range(2, len(r.config["hidden"]) + 2))
    assert r.seeds == [0]
    for label in ics.LABELS:
        shape = (1, len(r.steps), len(r.layers))
        assert np.asarray(r.l2[label]).shape == shape
        cos = np.asarray(r.cosine[label])
        assert cos.shape == shape and np.all(np.abs(cos) <= 1 + 1e-9)
        assert np.all(np.asarray(r.grad_norm[label]) > 0)
        assert np.asarray(r.loss[label]).shape == (1, r.config["steps"])
        assert np.all(np.isfinite(r.loss[label]))
        assert np.asarray(r.shift[label]).shape == (1, len(r.steps))
    assert set(r.cosine_redrawn) == {"noisy BatchNorm"}


def test_ics_findings(ics_result):
    r = ics_result
    # all three train; BatchNorm (noisy or not) at least as well as without it
    for label in ics.LABELS:
        assert r.acc(label) > 0.9
    assert r.acc("noisy BatchNorm") > r.acc("BatchNorm") - 0.03
    # BatchNorm keeps each layer's input distribution far steadier; the noise undoes that
    bn, nz, std = (float(np.median(r.shift[k]))
                   for k in ("BatchNorm", "noisy BatchNorm", "standard"))
    assert nz > 10 * bn and nz > std
    # by Def. 2.1 (noise shared by G and G') BatchNorm lowers ICS in this MLP
    assert ics.compare_ics(r, "BatchNorm", "standard") == "lower"
    assert r.median("cosine", "BatchNorm") > r.median("cosine", "standard")
    # with the noise redrawn for G', the gradient changes direction a lot
    assert r.median("cosine_redrawn", "noisy BatchNorm") < 0.6
    assert r.median("cosine_redrawn", "noisy BatchNorm") < r.median("cosine",
                                                                      "noisy BatchNorm") - 0.3
    text = ics.summary(r)
    assert "Verdict" in text and "Noisy BatchNorm" in text


def test_ics_plot_and_json(ics_result, tmp_path):
    _figure_ok(ics, ics_result, tmp_path, 6)
    json.dumps(to_json(ics_result), allow_nan=False)


# ----------------------------------------------------------------------------- smoothness
def test_probe_restores_parameters_and_buffers():
    X, y = _data()
    model = ics.make_model("BatchNorm", 6, (8, 8), 3, rng=4)
    before = _state(model)
    out = smoothness.probe_gradient_direction(model, X, y, [0.0, 0.1, 0.5])
    for u, v in zip(before, _state(model)):
        np.testing.assert_array_equal(u, v)
    assert out["loss_along"][0] == pytest.approx(out["loss_here"], rel=1e-6)
    assert out["grad_change"][0] == pytest.approx(0.0, abs=1e-6)
    assert out["grad_change"][2] > out["grad_change"][1] > 0


def test_top_hessian_eigenvalue_matches_the_explicit_hessian():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 3))
    y = rng.integers(0, 3, 20)
    model = nn.Sequential(nn.Linear(3, 3, dtype=np.float64, rng=0), nn.Tanh(),
                          nn.Linear(3, 3, dtype=np.float64, rng=1))
    params = list(model.parameters())
    sizes = [p.data.size for p in params]

    def flat_grad():
        gs = tg.grad(cross_entropy(model(Tensor(X)), y), params)
        return np.concatenate([g.data.ravel() for g in gs])

    # the Hessian by central differences of the gradient
    n = sum(sizes)
    H = np.zeros((n, n))
    flat = [(p, i) for p in params for i in range(p.data.size)]
    for k, (p, i) in enumerate(flat):
        old = p.data.flat[i]
        p.data.flat[i] = old + 1e-5
        gp = flat_grad()
        p.data.flat[i] = old - 1e-5
        gm = flat_grad()
        p.data.flat[i] = old
        H[:, k] = (gp - gm) / 2e-5
    ev = np.linalg.eigvalsh((H + H.T) / 2)
    top = ev[np.argmax(np.abs(ev))]
    lam = smoothness.top_hessian_eigenvalue(model, X, y, iterations=300)
    assert lam == pytest.approx(top, rel=1e-3)


def test_smoothness_result_shapes(smooth_result):
    r = smooth_result
    for label in smoothness.LABELS:
        shape = (1, len(r.steps), len(r.etas))
        assert np.asarray(r.loss_along[label]).shape == shape
        assert np.asarray(r.grad_change[label]).shape == shape
        assert np.all(np.isfinite(r.loss_along[label]))
        assert r.beta(label).shape == r.loss_range(label).shape == (1, len(r.steps))
        assert np.all(r.beta(label) > 0) and np.all(r.loss_range(label) >= 0)
        assert np.asarray(r.hessian_top[label]).shape == (1, len(r.hessian_steps))
        assert len(r.hessian_steps) > 0 and np.all(np.isfinite(r.hessian_top[label]))
    assert r.etas[0] == 0.5 and r.etas[-1] == 4.0


def test_batchnorm_smooths_the_landscape(smooth_result):
    r = smooth_result
    assert r.acc("standard") > 0.9 and r.acc("BatchNorm") > 0.9
    for what, factor in (("loss_range", 2.0), ("grad_change", 2.0),
                         ("relative_grad_change", 2.0), ("beta", 1.2)):
        assert r.median(what, "standard") > factor * r.median(what, "BatchNorm"), what
    assert r.median("hessian_top", "standard") > r.median("hessian_top", "BatchNorm")
    assert "Verdict" in smoothness.summary(r)


def test_smoothness_plot_and_json(smooth_result, tmp_path):
    _figure_ok(smoothness, smooth_result, tmp_path, 6)
    json.dumps(to_json(smooth_result), allow_nan=False)


# ------------------------------------------------------------------------------ eval_mode
def _bn_model():
    return eval_mode.make_model("BatchNorm", 6, (8,), 3, rng=0)


def test_check_eval_mode():
    model = _bn_model()
    with pytest.warns(diagnostics.TrainModeInferenceWarning, match=r"model\.eval\(\)") as rec:
        assert diagnostics.check_eval_mode(model) is False
    assert rec[0].filename == __file__  # points at the caller
    assert "BatchNorm1d" in str(rec[0].message)
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert diagnostics.check_eval_mode(model) is True
        # layers whose output does not depend on the mode never count
        plain = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3), nn.Dropout(0.0),
                              nn.InstanceNorm1d(3), nn.ReLU())
        assert diagnostics.check_eval_mode(plain) is True
    assert diagnostics.train_mode_layers(eval_mode.make_model("Dropout", 6, (8, 8), 3)) == \
        ["2", "5"]
    # the old home of the checks still has them
    assert eval_mode.check_eval_mode is diagnostics.check_eval_mode


def test_inference_check_warns_on_each_forward_in_training_mode():
    model = _bn_model()
    x = Tensor(_data()[0])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with diagnostics.inference_check(model):
            model(x)
            model(x)
        model(x)  # outside the block: no hook any more
    msgs = [r for r in rec if issubclass(r.category, diagnostics.TrainModeInferenceWarning)]
    assert len(msgs) == 2
    assert "(32, 6)" in str(msgs[0].message) and msgs[0].filename == __file__
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with diagnostics.inference_check(model):
            model(x)


def test_watch_warns_only_for_forward_passes_under_no_grad():
    model = _bn_model()
    x = Tensor(_data()[0])
    handle = diagnostics.watch_train_mode_inference(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(x)  # a training forward pass (recorded): fine
    with pytest.warns(diagnostics.TrainModeInferenceWarning):
        with no_grad():
            model(x)
    handle.remove()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with no_grad():
            model(x)


def test_train_mode_accuracy_leaves_running_stats_alone():
    X, y = _data(64)
    model = _bn_model()
    before = _state(model)
    diagnostics.train_mode_accuracy(model, X, y, 7)
    for u, v in zip(before, _state(model)):
        np.testing.assert_array_equal(u, v)
    diagnostics.train_mode_accuracy(model, X, y, 7, keep_running_stats=True)
    assert not np.allclose(model[1].running_mean.data, before[len(list(model.parameters()))])


def test_eval_mode_findings(eval_result):
    r = eval_result
    bn, do = "BatchNorm", "Dropout"
    assert r.eval_acc[bn] > 0.93 and r.eval_acc[do] > 0.9
    assert r.gap(bn, 2) > 0.25  # batches of two: far worse than eval mode
    assert r.gap(bn, r.batch_sizes[-1]) < 0.03  # one batch of the whole test set: fine
    sorted_acc = np.asarray(r.sorted_acc[bn])
    assert sorted_acc[r.batch_sizes.index(8)] < 0.5  # class-sorted batches: collapse
    assert np.all(np.diff(sorted_acc) >= -0.02)  # and it recovers as the batches grow
    assert "Expected more than 1 value per channel" in r.batch_of_one
    assert all(r.gap(do, b) > 0 for b in r.batch_sizes)  # dropout always costs a bit
    # the side effect: the train-mode pass overwrote the running statistics
    k = r.pollute_batches.index(2)
    assert r.eval_acc_after["sorted"][k] < r.eval_acc[bn] - 0.05
    assert r.running_mean_change["sorted"][k] > r.running_mean_change["shuffled"][k]
    for label in (bn, do):
        assert len(r.warnings[label]["training mode"]) == 3
        assert r.warnings[label]["after eval()"] == []
    assert "Verdict" in eval_mode.summary(r)


def test_eval_mode_plot_and_json(eval_result, tmp_path):
    _figure_ok(eval_mode, eval_result, tmp_path, 2)
    json.dumps(to_json(eval_result), allow_nan=False)
