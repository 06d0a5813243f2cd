"""The depth study: per-layer gradient norms of deep MLPs without normalization, with BN and
with BN and residual connections, at initialization and early in training. Runs at quick
size once per module; asserts on the data what Yang et al. (2019) prove (BN without skips
explodes, geometrically in depth; skips tame it) and that the verdict follows the numbers."""
import json
import math

import numpy as np
import pytest

pytest.importorskip("sklearn")  # the digits data

from tinygrad_bn import Tensor, nn  # noqa: E402
from tinygrad_bn.nn.losses import cross_entropy  # noqa: E402
from tinygrad_bn.studies import depth  # noqa: E402


@pytest.fixture(scope="module")
def result():
    return depth.run(quick=True, progress=False)


# --------------------------------------------------------------------------- the pieces
def test_build_makes_the_three_arms():
    for arm in depth.ARMS:
        m = depth.build(arm, "relu", 4, 16, 8, 3, rng=0)
        assert len(m) == 5 and isinstance(m[-1], nn.Linear)
        assert len(depth.hidden_linears(m)) == 4
        n_bn = sum(isinstance(x, nn.BatchNorm1d) for x in m.modules())
        n_res = sum(isinstance(x, depth.Residual) for x in m.modules())
        assert n_bn == (0 if arm == "plain" else 4)
        assert n_res == (3 if arm == "resbn" else 0)  # the first block maps 8 -> 16: no skip
        assert m(Tensor(np.ones((5, 8), np.float32))).shape == (5, 3)
    with pytest.raises(ValueError, match="arm"):
        depth.build("layer", "relu", 3, 8, 8, 2)
    with pytest.raises(ValueError, match="activation"):
        depth.build("bn", "gelu", 3, 8, 8, 2)


def test_residual_adds_the_skip_path_to_the_gradient():
    lin = nn.Linear(3, 3, rng=0)
    res = depth.Residual(lin)
    x = Tensor(np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32),
               requires_grad=True)
    res(x).sum().backward()
    # d/dx of sum(x + x Wᵀ + b) = 1 + column sums of W
    expected = 1 + lin.weight.data.sum(axis=0)
    np.testing.assert_allclose(x.grad, np.broadcast_to(expected, (4, 3)), rtol=1e-6)


def test_layer_gradients_match_backward_and_change_nothing():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(32, 8)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    m = depth.build("bn", "tanh", 4, 16, 8, 3, rng=2)
    before = [t.data.copy() for t in list(m.parameters()) + list(m.buffers())]
    m.eval()
    gw, gh = depth.layer_gradients(m, X, y)
    assert not m.training  # its mode is kept; the gradients were taken in training mode
    m.train()
    assert gw.shape == gh.shape == (4,) and np.all(gw > 0) and np.all(gh > 0)
    after = [t.data for t in list(m.parameters()) + list(m.buffers())]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)  # running statistics put back too
    assert all(p.grad is None for p in m.parameters())
    m.zero_grad()
    cross_entropy(m(Tensor(X)), y).backward()
    np.testing.assert_allclose(gw, [np.linalg.norm(lin.weight.grad)
                                    for lin in depth.hidden_linears(m)], rtol=1e-5)


# --------------------------------------------------------------------------- the data
def test_shapes(result):
    r = result
    A, D, S, P, Lmax = (len(r.activations), len(r.depths), len(r.seeds),
                        len(r.probe_steps), max(r.depths))
    assert r.depths == [5, 10, 25] and r.probe_steps[0] == 0 and S >= 2
    for arm in depth.ARMS:
        for key in (r.grad_w, r.grad_h, r.weight_norm):
            g = np.asarray(key[arm])
            assert g.shape == (A, D, S, P, Lmax)
            for j, L in enumerate(r.depths):  # padded with NaN past each network's depth
                assert np.all(np.isfinite(g[:, j, :, :, :L]) & (g[:, j, :, :, :L] > 0))
                assert np.all(np.isnan(g[:, j, :, :, L:]))
        assert np.asarray(r.losses[arm]).shape == (A, D, S, r.config["steps"])
        assert np.asarray(r.diverged[arm]).shape == (A, D, S)
        assert not np.asarray(r.diverged[arm]).any()
        for a in r.activations:
            assert r.explosion(arm, a).shape == r.rate(arm, a).shape == (D,)


def test_bn_without_skips_explodes_geometrically_with_depth(result):
    r = result
    for a in r.activations:
        ef = r.explosion("bn", a)
        assert np.all(np.diff(ef) > 0), (a, ef)  # grows with depth ...
        assert ef[-1] > 5 and r.depth_rate("bn", a) >= depth.EXPLODES  # ... geometrically
        assert np.all(r.rate("bn", a)[1:] > 1.04)  # larger towards the input, every network
        # the hidden outputs' gradients say the same
        assert np.all(np.diff(r.explosion("bn", a, key="h")) > 0)
    # ReLU: close to Yang et al.'s √(π/(π−1)) ≈ 1.21 per layer
    assert r.rate("bn", "relu")[-1] == pytest.approx(depth.RELU_RATE, abs=0.05)
    assert r.explosion("bn", "relu")[-1] > 30


def test_residual_connections_tame_it(result):
    r = result
    for a in r.activations:
        ef_bn, ef_res = r.explosion("bn", a), r.explosion("resbn", a)
        assert ef_res[-1] < ef_bn[-1]
        assert r.depth_rate("resbn", a) - 1 < 0.5 * (r.depth_rate("bn", a) - 1)
        assert r.depth_rate("resbn", a) < depth.EXPLODES
    assert r.explosion("resbn", "relu")[-1] < r.explosion("bn", "relu")[-1] / 5


def test_without_normalization_gradients_vanish_towards_the_input(result):
    r = result
    for a in r.activations:
        ef = r.explosion("plain", a)
        assert np.all(np.diff(ef) < 0) and ef[-1] < 1e-3
        assert r.rate("plain", a)[-1] < 0.8


def test_training_shrinks_the_bn_explosion(result):
    r = result
    t = r.probe_steps[-1]
    for a in r.activations:
        assert r.explosion("bn", a, t)[-1] < r.explosion("bn", a, 0)[-1]


def test_verdict_and_summary_from_the_quick_run(result):
    v = depth.verdict(result)
    assert v.supported is False and "explode" in v.text
    text = depth.summary(result)
    assert "Verdict: not supported" in text and "explosion factor" in text


def test_strict_json_and_figure(result, tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    png, js = depth.STUDY.save(result, str(tmp_path))
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    def no_constants(name):
        raise ValueError(f"non-strict JSON constant {name}")

    with open(js) as f:
        rec = json.load(f, parse_constant=no_constants)
    assert rec["study"] == "depth" and rec["verdict"]["supported"] is False
    gw = rec["result"]["grad_w"]["bn"]
    assert gw[0][0][0][0][5] is None  # NaN padding became null
    fig = depth.plot(result)
    axes = fig.axes
    assert len(axes) == 6
    for ax in axes:
        assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
    import matplotlib.pyplot as plt

    plt.close(fig)


# --------------------------------------------------------------------------- the verdict flips
def _constructed(rates: dict, res_rate: float = 1.01, depths=(5, 10, 25)) -> depth.DepthResult:
    """A result with gradient profiles ‖∂L/∂W_l‖ = rate^(L − l) (BN: ``rates`` per
    activation; no norm: 0.5; residual: ``res_rate``) and losses that go down."""
    acts, seeds, probes, steps = list(rates), [0, 1], [0, 10], 20
    Lmax = max(depths)

    def profiles(rate_of):
        g = np.full((len(acts), len(depths), len(seeds), len(probes), Lmax), np.nan)
        for i, a in enumerate(acts):
            for j, L in enumerate(depths):
                g[i, j, :, :, :L] = rate_of(a) ** (L - 1 - np.arange(L))
        return g

    arm_rate = {"plain": lambda a: 0.5, "bn": lambda a: rates[a], "resbn": lambda a: res_rate}
    shape = (len(acts), len(depths), len(seeds))
    losses = np.broadcast_to(np.linspace(2.3, 0.1, steps), shape + (steps,)).copy()
    return depth.DepthResult(
        config=dict(depth.QUICK, depths=depths, activations=tuple(acts), steps=steps),
        seed=0, depths=list(depths), activations=acts, arms=list(depth.ARMS), seeds=seeds,
        probe_steps=probes, n_classes=10,
        grad_w={arm: profiles(f) for arm, f in arm_rate.items()},
        grad_h={arm: profiles(f) for arm, f in arm_rate.items()},
        weight_norm={arm: np.where(np.isnan(profiles(f)), np.nan, 1.0)
                     for arm, f in arm_rate.items()},
        losses={arm: losses.copy() for arm in depth.ARMS},
        diverged={arm: np.zeros(shape, bool) for arm in depth.ARMS},
        test_acc={arm: np.full(shape, 0.9) for arm in depth.ARMS})


def test_verdict_follows_the_numbers():
    exploding = _constructed({"relu": 1.2, "tanh": 1.1})
    assert exploding.rate("bn", "relu")[-1] == pytest.approx(1.2)
    assert exploding.explosion("bn", "tanh")[-1] == pytest.approx(1.1 ** 24)
    v = depth.verdict(exploding)
    assert v.supported is False and "the skips tame the explosion" in v.text
    even = _constructed({"relu": 1.0, "tanh": 1.01})
    v = depth.verdict(even)
    assert v.supported is True and "no vanishing, no explosion" in v.text
    mixed = _constructed({"relu": 1.2, "tanh": 1.0})
    v = depth.verdict(mixed)
    assert v.supported is None and "explode for ReLU but not for tanh" in v.text
    # skips that explode as fast as BN do not tame it
    v = depth.verdict(_constructed({"relu": 1.2, "tanh": 1.1}, res_rate=1.2))
    assert "do not tame it" in v.text
    # all training losses go down in the constructed data
    assert all(exploding.trains(arm, "relu").all() for arm in depth.ARMS)


def test_explosion_factor_is_nan_not_an_error_for_a_diverged_run():
    r = _constructed({"relu": 1.2, "tanh": 1.1})
    r.grad_w["bn"][0, -1, 0, 1, :] = np.nan  # seed 0 of the deepest ReLU net diverged
    r.diverged["bn"][0, -1, 0] = True
    r.losses["bn"][0, -1, 0, 5:] = np.nan
    assert math.isnan(r.explosion("bn", "relu", 10)[-1])
    assert r.explosion("bn", "relu", 0)[-1] == pytest.approx(1.2 ** 24)
    assert not r.trains("bn", "relu")[-1] and r.trains("bn", "relu")[0]
    assert np.isinf(r.final_loss("bn", "relu")[-1])
    depth.table(r)  # renders
