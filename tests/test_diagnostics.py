"""Forward hooks on modules, and the per-layer statistics of ``tinygrad_bn.diagnostics``."""
import math

import numpy as np
import pytest

from tinygrad_bn import Tensor, data, nn, no_grad, optim
from tinygrad_bn import diagnostics as dg
from tinygrad_bn.models import mlp
from tinygrad_bn.nn.losses import cross_entropy
from tinygrad_bn.train import fit

H1 = 0.5 * math.log(2 * math.pi * math.e)


# --------------------------------------------------------------------------- forward hooks
def test_forward_hook_sees_module_inputs_and_output(rng):
    lin = nn.Linear(3, 2, rng=0)
    seen = []
    lin.register_forward_hook(lambda m, inp, out: seen.append((m, inp, out)))
    x = Tensor(rng.standard_normal((4, 3)).astype(np.float32))
    y = lin(x)
    assert len(seen) == 1
    m, inp, out = seen[0]
    assert m is lin and inp == (x,) and out is y


def test_forward_hook_runs_without_grad_and_in_children(rng):
    model = nn.Sequential(nn.Linear(3, 4, rng=0), nn.Tanh(), nn.Linear(4, 2, rng=1))
    calls = []
    for i, m in enumerate(model):
        m.register_forward_hook(lambda m, inp, out, i=i: calls.append(i))
    x = Tensor(rng.standard_normal((5, 3)).astype(np.float32))
    model(x)
    with no_grad():
        model(x)
    assert calls == [0, 1, 2, 0, 1, 2]


def test_forward_hook_can_replace_the_output_and_gradients_follow(rng):
    lin = nn.Linear(3, 2, rng=0)
    lin.register_forward_hook(lambda m, inp, out: out * 2.0)
    x = Tensor(rng.standard_normal((4, 3)).astype(np.float32))
    y = lin(x)
    np.testing.assert_allclose(y.data, 2 * (x.data @ lin.weight.data.T + lin.bias.data),
                               rtol=1e-6)
    y.sum().backward()
    np.testing.assert_allclose(lin.bias.grad, np.full(2, 8.0))  # 4 rows × 2


def test_hook_handle_removes_once_and_works_as_context_manager(rng):
    lin = nn.Linear(3, 2, rng=0)
    other = nn.Linear(3, 2, rng=0)
    calls = []
    h = lin.register_forward_hook(lambda *a: calls.append(1))
    x = Tensor(np.ones((2, 3), np.float32))
    lin(x)
    h.remove()
    h.remove()  # harmless
    lin(x)
    assert calls == [1]
    with lin.register_forward_hook(lambda *a: calls.append(2)):
        lin(x)
    lin(x)
    assert calls == [1, 2]
    assert not lin._forward_hooks and other._forward_hooks is None  # instances are separate


def test_register_forward_hook_rejects_non_callables():
    with pytest.raises(TypeError, match="callable"):
        nn.ReLU().register_forward_hook(3)


# --------------------------------------------------------------------------- entropy
def test_gaussian_entropy_formula():
    assert dg.gaussian_entropy(1.0) == pytest.approx(H1) == pytest.approx(1.4189385)
    assert dg.GAUSSIAN_UNIT_ENTROPY == pytest.approx(H1)
    np.testing.assert_allclose(dg.gaussian_entropy(np.array([2.0, 0.5])) - H1,
                               [math.log(2), math.log(0.5)])
    assert dg.gaussian_entropy(0.0) == -math.inf


def test_histogram_entropy_matches_known_distributions(rng):
    g = rng.standard_normal((4000, 6))
    np.testing.assert_allclose(dg.histogram_entropy(g), H1, atol=0.03)
    u = rng.uniform(0, 2, (4000, 6))
    np.testing.assert_allclose(dg.histogram_entropy(u), math.log(2), atol=0.03)
    e = rng.exponential(1.0, (4000, 6))  # entropy 1 nat
    np.testing.assert_allclose(dg.histogram_entropy(e), 1.0, atol=0.05)


def test_histogram_entropy_shifts_by_log_scale_and_handles_shapes(rng):
    x = rng.standard_normal((300, 4))
    np.testing.assert_allclose(dg.histogram_entropy(10 * x + 3),
                               dg.histogram_entropy(x) + math.log(10), atol=1e-9)
    # (N, C, L): channels on axis 1, statistics over N and L
    x3 = rng.standard_normal((50, 3, 8)) * np.array([1.0, 2.0, 4.0])[None, :, None]
    h = dg.histogram_entropy(x3)
    assert h.shape == (3,)
    assert h[1] - h[0] == pytest.approx(math.log(2), abs=0.15)
    col = np.ones((10, 2))
    col[:, 1] = np.arange(10)
    h = dg.histogram_entropy(col)
    assert h[0] == -math.inf and np.isfinite(h[1])
    with pytest.raises(ValueError, match="at least 2"):
        dg.histogram_entropy(np.ones((1, 3)))


def test_histogram_estimate_is_close_at_batch_sizes_used_in_training(rng):
    # 128 samples per unit, averaged over 64 units: the bias-corrected estimate is within 0.03
    g = rng.standard_normal((128, 64))
    assert np.mean(dg.histogram_entropy(g)) == pytest.approx(H1, abs=0.03)


# --------------------------------------------------------------------------- saturation
def test_saturation_counts_outputs_with_small_local_derivative():
    z = np.array([0.0, 1.0, 2.0, 2.5, -3.0, 5.0])
    assert dg.saturation(np.tanh(z), "tanh") == pytest.approx(3 / 6)  # |z| > ~2.19
    s = 1 / (1 + np.exp(-np.array([0.0, 3.0, 4.0, 4.5, -6.0])))
    assert dg.saturation(s, "sigmoid") == pytest.approx(2 / 5)  # |z| > ~4.36
    assert dg.saturation(np.maximum(z - 1.5, 0), "relu") == pytest.approx(3 / 6)
    assert dg.saturation(Tensor(np.tanh(z)), "tanh", tol=0.5) == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="unknown activation"):
        dg.saturation(z, "gelu")
    assert dg.activation_kind(nn.Sigmoid()) == "sigmoid"
    assert dg.activation_kind(nn.Linear(2, 2)) is None


def test_layer_stats_values(rng):
    x = rng.standard_normal((200, 5)) * np.arange(1, 6) + 2.0
    st = dg.layer_stats(x, q=(10, 50, 90), unit=2)
    assert st["mean"] == pytest.approx(x.mean())
    assert st["std"] == pytest.approx(x.std(axis=0).mean())
    np.testing.assert_allclose(st["percentiles"], np.percentile(x[:, 2], [10, 50, 90]))
    assert st["entropy_gaussian"] == pytest.approx(
        np.mean(0.5 * np.log(2 * np.pi * np.e * x.var(axis=0))))
    assert st["entropy_hist"] == pytest.approx(np.mean(dg.histogram_entropy(x)))
    assert math.isnan(st["saturation"])
    allq = dg.layer_stats(x, unit=None)["percentiles"]
    np.testing.assert_allclose(allq, np.percentile(x, [15, 50, 85]))
    assert dg.layer_stats(np.tanh(x), activation="tanh")["saturation"] > 0


# --------------------------------------------------------------------------- helpers
def test_param_grad_norms(rng):
    model = nn.Sequential(nn.Linear(3, 4, rng=0), nn.ReLU(), nn.Linear(4, 2, rng=1))
    x = Tensor(rng.standard_normal((6, 3)).astype(np.float32))
    cross_entropy(model(x), np.array([0, 1, 0, 1, 1, 0])).backward()
    norms = dg.param_grad_norms(model)
    assert set(norms) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert norms["2.weight"] == pytest.approx(np.linalg.norm(model[2].weight.grad))
    assert set(dg.param_grad_norms(model, weights_only=True)) == {"0.weight", "2.weight"}


def test_resolve_layers():
    model = mlp(4, [3], 2, norm="batch")
    assert list(dg.resolve_layers(model)) == ["0", "1", "2", "3"]
    got = dg.resolve_layers(model, ["1"])
    assert got["1"] is model[1]
    assert dg.resolve_layers(model, {"bn": model[1]})["bn"] is model[1]
    with pytest.raises(ValueError, match="no layer named"):
        dg.resolve_layers(model, ["7"])


def test_capture_returns_layer_outputs_and_leaves_the_model_untouched(rng):
    model = mlp(4, [8], 3, norm="batch", rng=0)
    model.eval()
    X = rng.standard_normal((32, 4)).astype(np.float32) * 3 + 1
    before = model.state_dict()
    outs = dg.capture(model, X, ["0", "1", "3"], training=True)
    lin = X @ model[0].weight.data.T + model[0].bias.data
    np.testing.assert_allclose(outs["0"], lin, rtol=1e-5, atol=1e-5)
    # training-mode BatchNorm: every unit standardized over the batch
    np.testing.assert_allclose(outs["1"].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(outs["1"].std(axis=0), 1, atol=1e-3)
    assert outs["3"].shape == (32, 3)
    assert model.training is False
    for k, v in model.state_dict().items():  # running statistics restored
        np.testing.assert_array_equal(v, before[k])
    assert not model[0]._forward_hooks


# --------------------------------------------------------------------------- recorder
def _tiny():
    model = nn.Sequential(nn.Linear(4, 6, rng=0), nn.Tanh(), nn.Linear(6, 3, rng=1))
    rng = np.random.default_rng(1)
    X = rng.standard_normal((16, 4)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    return model, X, y


def test_recorder_records_training_passes_only_and_reads_gradients():
    model, X, y = _tiny()
    opt = optim.SGD(model.parameters(), lr=0.1)
    expected = []
    with dg.Recorder(model, ["1"], every=2) as rec:
        for step in range(5):
            opt.zero_grad()
            logits = model(Tensor(X))
            # ∂(mean cross-entropy)/∂h = (softmax - onehot) / N @ W2
            p = np.exp(logits.data - logits.data.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(len(y)), y] -= 1
            expected.append(np.linalg.norm(p / len(y) @ model[2].weight.data))
            cross_entropy(logits, y).backward()
            opt.step()
            with no_grad():
                model(Tensor(X))  # an evaluation pass: not recorded
    assert not model[1]._forward_hooks
    t = rec.trace("1")
    assert t.kind == "Tanh" and t.step.tolist() == [0, 2, 4]
    np.testing.assert_allclose(t.grad_norm, np.array(expected)[[0, 2, 4]], rtol=1e-4)
    assert t.percentiles.shape == (3, 3)
    assert np.all(np.diff(t.percentiles, axis=1) >= 0)
    assert np.all((t.saturation >= 0) & (t.saturation <= 1))


def test_recorder_matches_layer_stats_in_any_mode():
    model, X, _ = _tiny()
    with dg.Recorder(model, ["0"], mode="any", unit=1, grads=False) as rec:
        with no_grad():
            out = model[0](Tensor(X))
            model(Tensor(X))
    t = rec.trace("0")
    assert t.step.tolist() == [0, 1]
    st = dg.layer_stats(out, unit=1)
    np.testing.assert_allclose(t.percentiles[0], st["percentiles"])
    assert t.entropy_gaussian[0] == pytest.approx(st["entropy_gaussian"])
    assert t.entropy_hist[0] == pytest.approx(st["entropy_hist"])
    assert np.isnan(t.grad_norm).all() and np.isnan(t.saturation).all()


def test_recorder_with_fit_counts_steps_and_bn_outputs_have_unit_gaussian_entropy():
    # Gaussian inputs, so the pre-activations are Gaussian and the histogram agrees with
    # the formula (on clustered data such as blobs it is far lower: BN does not make
    # activations Gaussian)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 8)).astype(np.float32)
    y = (X @ rng.standard_normal((8, 4))).argmax(1)
    ds = data.Dataset("gauss", X[:400], y[:400], X[400:], y[400:])
    model = mlp(8, [32, 32], 4, norm="batch", activation="tanh", rng=0)
    opt = optim.SGD(model.parameters(), lr=0.1)
    with dg.Recorder(model, ["1", "4"], every=1) as rec:
        hist = fit(model, ds, opt, epochs=2, batch_size=100, progress=False)
    t = rec.trace("1")
    assert len(t.step) == hist.steps == 8  # fit's evaluation passes are not recorded
    # BatchNorm output at init (γ = 1, β = 0): ½·log(2πe) up to ε
    assert t.entropy_gaussian[0] == pytest.approx(H1, abs=1e-3)
    assert abs(t.entropy_hist[0] - H1) < 0.15
    assert np.isfinite(rec.trace("4").grad_norm).all()
    assert set(rec.traces()) == {"1", "4"}
    with pytest.raises(KeyError):
        rec.trace("0")


def test_recorder_argument_checks():
    model, _, _ = _tiny()
    with pytest.raises(ValueError, match="every"):
        dg.Recorder(model, every=0)
    with pytest.raises(ValueError, match="mode"):
        dg.Recorder(model, mode="eval")
