"""The five norms of ``nn.functional`` (composed) and ``analytic`` (fused) against PyTorch.

Float64 throughout, to 1e-10: outputs, gradients of x, γ, β, running statistics over several
training calls, evaluation with running statistics; property tests (hypothesis); the error
cases, after which nothing has changed.
"""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tinygrad_bn import Tensor, analytic, grad
from tinygrad_bn.nn import functional as F

TOL = dict(rtol=1e-10, atol=1e-10)
IMPLS = {"composed": F, "analytic": analytic}
# training BatchNorm needs eps > 0 (as torch); this one changes no float64 digit of σ² here
TINY_EPS = 1e-300


@pytest.fixture(params=list(IMPLS), ids=list(IMPLS))
def impl(request):
    return IMPLS[request.param]


# ------------------------------------------------------------------------------ helpers
def _pair(torch, a):
    """(ours, torch's) leaves requiring grad from one ndarray (None stays None)."""
    if a is None:
        return None, None
    return Tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)


def _check(torch, ours_fn, theirs_fn, arrays, rng):
    """Run both on the same leaves, backward a random upstream gradient, compare all."""
    pairs = [_pair(torch, a) for a in arrays]
    yo = ours_fn(*[p[0] for p in pairs])
    yt = theirs_fn(*[p[1] for p in pairs])
    np.testing.assert_allclose(yo.data, yt.detach().numpy(), **TOL)
    assert yo.dtype == np.float64 and yo.shape == tuple(yt.shape)
    g = rng.standard_normal(yo.shape)
    yo.backward(g)
    yt.backward(torch.tensor(g))
    for (o, t), name in zip(pairs, ["x", "weight", "bias"]):
        if o is not None:
            assert o.grad is not None, name
            np.testing.assert_allclose(o.grad, t.grad.numpy(), **TOL, err_msg=name)


def _affine(rng, shape, weight, bias):
    w = rng.uniform(0.5, 1.5, shape) if weight else None
    b = rng.standard_normal(shape) if bias else None
    return w, b


SHAPES_BN = [(5, 3), (2, 1), (7, 4, 1), (4, 3, 6), (2, 3, 4, 5), (1, 2, 3, 3), (3, 2, 1, 1)]
AFFINE = [(True, True), (True, False), (False, True), (False, False)]


# -------------------------------------------------------------------------- batch norm
@pytest.mark.parametrize("shape", SHAPES_BN, ids=str)
@pytest.mark.parametrize("weight,bias", AFFINE, ids=["affine", "weight", "bias", "plain"])
def test_batch_norm_training_matches_torch(torch, impl, shape, weight, bias):
    rng = np.random.default_rng(hash((shape, weight, bias)) % 2**32)
    c = shape[1]
    x = rng.standard_normal(shape) * 3 + 1
    w, b = _affine(rng, (c,), weight, bias)
    rm0, rv0 = rng.standard_normal(c), rng.uniform(0.5, 2, c)
    rm, rv = Tensor(rm0), Tensor(rv0)
    trm, trv = torch.tensor(rm0), torch.tensor(rv0)
    _check(torch,
           lambda x, w, b: impl.batch_norm(x, rm, rv, w, b, training=True, momentum=0.3),
           lambda x, w, b: torch.nn.functional.batch_norm(x, trm, trv, w, b, training=True,
                                                          momentum=0.3),
           [x, w, b], rng)
    np.testing.assert_allclose(rm.data, trm.numpy(), **TOL)
    np.testing.assert_allclose(rv.data, trv.numpy(), **TOL)


@pytest.mark.parametrize("shape", [(5, 3), (1, 4), (2, 3, 4), (1, 2, 3, 3)], ids=str)
@pytest.mark.parametrize("weight,bias", AFFINE[::3], ids=["affine", "plain"])
def test_batch_norm_eval_matches_torch(torch, impl, shape, weight, bias):
    rng = np.random.default_rng(1)
    c = shape[1]
    x = rng.standard_normal(shape)
    w, b = _affine(rng, (c,), weight, bias)
    rm0, rv0 = rng.standard_normal(c), rng.uniform(0.5, 2, c)
    rm, rv = Tensor(rm0), Tensor(rv0)
    _check(torch,
           lambda x, w, b: impl.batch_norm(x, rm, rv, w, b),
           lambda x, w, b: torch.nn.functional.batch_norm(
               x, torch.tensor(rm0), torch.tensor(rv0), w, b, training=False),
           [x, w, b], rng)
    np.testing.assert_array_equal(rm.data, rm0)  # eval leaves the statistics alone
    np.testing.assert_array_equal(rv.data, rv0)


@pytest.mark.parametrize("momentum", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (2, 3, 2, 3)], ids=str)
def test_batch_norm_running_stats_over_calls(torch, impl, momentum, shape):
    rng = np.random.default_rng(2)
    c = shape[1]
    rm, rv = Tensor(np.zeros(c)), Tensor(np.ones(c))
    trm, trv = torch.zeros(c), torch.ones(c)
    w, b = rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
    for step in range(4):
        x = rng.standard_normal(shape) * (step + 1) + step
        yo = impl.batch_norm(Tensor(x), rm, rv, Tensor(w), Tensor(b), True, momentum)
        yt = torch.nn.functional.batch_norm(torch.tensor(x), trm, trv, torch.tensor(w),
                                            torch.tensor(b), True, momentum)
        np.testing.assert_allclose(yo.data, yt.numpy(), **TOL)
        np.testing.assert_allclose(rm.data, trm.numpy(), **TOL)
        np.testing.assert_allclose(rv.data, trv.numpy(), **TOL)
    x = rng.standard_normal(shape)
    ye = impl.batch_norm(Tensor(x), rm, rv, Tensor(w), Tensor(b))
    yt = torch.nn.functional.batch_norm(torch.tensor(x), trm, trv, torch.tensor(w),
                                        torch.tensor(b))
    np.testing.assert_allclose(ye.data, yt.numpy(), **TOL)


def test_running_var_is_unbiased_and_updated_in_place(impl):
    x = np.array([[1.0], [2.0], [6.0]])  # mean 3, biased var 14/3, unbiased 7
    rm, rv = Tensor(np.zeros(1)), Tensor(np.ones(1))
    arrays = rm.data, rv.data
    y = impl.batch_norm(Tensor(x), rm, rv, training=True, momentum=1.0)
    assert rm.data is arrays[0] and rv.data is arrays[1]
    np.testing.assert_allclose(rm.data, [3.0])
    np.testing.assert_allclose(rv.data, [7.0])
    np.testing.assert_allclose(y.data[:, 0], (x[:, 0] - 3) / np.sqrt(14 / 3 + 1e-5))


def test_float32_stays_float32(impl):
    x = Tensor(np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32),
               requires_grad=True)
    rm, rv = Tensor(np.zeros(3, np.float32)), Tensor(np.ones(3, np.float32))
    w = Tensor(np.ones(3, np.float32), requires_grad=True)
    y = impl.batch_norm(x, rm, rv, w, None, training=True)
    assert y.dtype == np.float32 and rm.dtype == np.float32 and rv.dtype == np.float32
    y.backward(np.ones((6, 3), np.float32))
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float32
    ye = impl.batch_norm(x, rm, rv, w)
    assert ye.dtype == np.float32


@st.composite
def _bn_case(draw):
    nd = draw(st.integers(2, 4))
    shape = (draw(st.integers(1, 5)), draw(st.integers(1, 4))) + tuple(
        draw(st.integers(1, 4)) for _ in range(nd - 2))
    training = draw(st.booleans())
    if training:
        assume(np.prod(shape) // shape[1] > 1)
    return shape, training, draw(st.booleans()), draw(st.sampled_from([1e-5, 1e-3, 0.5])), \
        draw(st.integers(0, 2**31))


@given(case=_bn_case())
def test_batch_norm_any_shape_matches_torch(torch, case):
    shape, training, affine, eps, seed = case
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = rng.standard_normal(shape) * rng.uniform(0.1, 10) + rng.uniform(-5, 5)
    w, b = _affine(rng, (c,), affine, affine)
    rm0, rv0 = rng.standard_normal(c), rng.uniform(0.5, 2, c)
    for impl in IMPLS.values():
        rm, rv = Tensor(rm0), Tensor(rv0)
        trm, trv = torch.tensor(rm0), torch.tensor(rv0)
        _check(torch,
               lambda x, w, b: impl.batch_norm(x, rm, rv, w, b, training, 0.2, eps),
               lambda x, w, b: torch.nn.functional.batch_norm(x, trm, trv, w, b, training,
                                                              0.2, eps),
               [x, w, b], rng)
        np.testing.assert_allclose(rm.data, trm.numpy(), **TOL)
        np.testing.assert_allclose(rv.data, trv.numpy(), **TOL)


# -------------------------------------------------------------------------- layer norm
LN_CASES = [((4, 6), 6), ((4, 6), (6,)), ((2, 3, 4), (4,)), ((2, 3, 4), (3, 4)),
            ((3, 1), (1,)), ((2, 2, 3, 2), (2, 3, 2)), ((5,), 5)]


@pytest.mark.parametrize("shape,ns", LN_CASES, ids=str)
@pytest.mark.parametrize("weight,bias", AFFINE, ids=["affine", "weight", "bias", "plain"])
def test_layer_norm_matches_torch(torch, impl, shape, ns, weight, bias):
    rng = np.random.default_rng(3)
    nst = (ns,) if isinstance(ns, int) else ns
    x = rng.standard_normal(shape) * 2 - 1
    w, b = _affine(rng, nst, weight, bias)
    _check(torch,
           lambda x, w, b: impl.layer_norm(x, ns, w, b, eps=1e-4),
           lambda x, w, b: torch.nn.functional.layer_norm(x, nst, w, b, eps=1e-4),
           [x, w, b], rng)


@given(lead=st.lists(st.integers(1, 4), min_size=0, max_size=2),
       trail=st.lists(st.integers(1, 4), min_size=1, max_size=2),
       seed=st.integers(0, 2**31))
def test_layer_norm_any_shape_matches_torch(torch, lead, trail, seed):
    rng = np.random.default_rng(seed)
    shape, ns = tuple(lead + trail), tuple(trail)
    x = rng.standard_normal(shape)
    w, b = _affine(rng, ns, True, True)
    for impl in IMPLS.values():
        _check(torch, lambda x, w, b: impl.layer_norm(x, ns, w, b),
               lambda x, w, b: torch.nn.functional.layer_norm(x, ns, w, b), [x, w, b], rng)


# ---------------------------------------------------------------------------- rms norm
@pytest.mark.parametrize("shape,ns", [((4, 6), (6,)), ((2, 3, 4), (3, 4)), ((3, 2), 2)],
                         ids=str)
@pytest.mark.parametrize("eps", [None, 1e-6, 0.1])
@pytest.mark.parametrize("weight", [True, False], ids=["weight", "plain"])
def test_rms_norm_matches_torch(torch, impl, shape, ns, eps, weight):
    rng = np.random.default_rng(4)
    nst = (ns,) if isinstance(ns, int) else ns
    x = rng.standard_normal(shape) + 0.5
    w = rng.uniform(0.5, 1.5, nst) if weight else None
    _check(torch, lambda x, w: impl.rms_norm(x, ns, w, eps=eps),
           lambda x, w: torch.nn.functional.rms_norm(x, nst, w, eps=eps), [x, w], rng)


def test_rms_norm_default_eps_is_machine_epsilon(impl):
    x = np.zeros((2, 3), np.float32)
    x[0, 0] = 1e-4  # tiny values: the result shows which eps was added
    y = impl.rms_norm(Tensor(x), 3).data
    ms = np.float32(1e-8 / 3)
    expected = np.float32(1e-4) / np.sqrt(ms + np.finfo(np.float32).eps)
    np.testing.assert_allclose(y[0, 0], expected, rtol=1e-5)


# -------------------------------------------------------------------------- group norm
@pytest.mark.parametrize("shape", [(2, 6), (3, 6, 4), (2, 6, 3, 3), (1, 6, 5)], ids=str)
@pytest.mark.parametrize("groups", [1, 2, 3, 6])
@pytest.mark.parametrize("weight,bias", AFFINE[::3], ids=["affine", "plain"])
def test_group_norm_matches_torch(torch, impl, shape, groups, weight, bias):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape) * 2 + 3
    w, b = _affine(rng, (6,), weight, bias)
    _check(torch, lambda x, w, b: impl.group_norm(x, groups, w, b),
           lambda x, w, b: torch.nn.functional.group_norm(x, groups, w, b), [x, w, b], rng)


# ----------------------------------------------------------------------- instance norm
@pytest.mark.parametrize("shape", [(2, 3, 5), (1, 3, 4), (2, 3, 4, 4), (3, 2, 1, 2)], ids=str)
@pytest.mark.parametrize("weight,bias", AFFINE[::3], ids=["affine", "plain"])
@pytest.mark.parametrize("stats", [False, True], ids=["no-stats", "running-stats"])
def test_instance_norm_matches_torch(torch, impl, shape, weight, bias, stats):
    rng = np.random.default_rng(6)
    c = shape[1]
    x = rng.standard_normal(shape) * 2 - 1
    w, b = _affine(rng, (c,), weight, bias)
    rm0, rv0 = rng.standard_normal(c), rng.uniform(0.5, 2, c)
    rm, rv = (Tensor(rm0), Tensor(rv0)) if stats else (None, None)
    trm, trv = (torch.tensor(rm0), torch.tensor(rv0)) if stats else (None, None)
    _check(torch,
           lambda x, w, b: impl.instance_norm(x, rm, rv, w, b, momentum=0.3),
           lambda x, w, b: torch.nn.functional.instance_norm(x, trm, trv, w, b, momentum=0.3),
           [x, w, b], rng)
    if stats:
        np.testing.assert_allclose(rm.data, trm.numpy(), **TOL)
        np.testing.assert_allclose(rv.data, trv.numpy(), **TOL)


@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0])
def test_instance_norm_running_stats_then_eval(torch, impl, momentum):
    rng = np.random.default_rng(7)
    rm, rv = Tensor(np.zeros(3)), Tensor(np.ones(3))
    trm, trv = torch.zeros(3), torch.ones(3)
    for step in range(3):
        x = rng.standard_normal((4, 3, 5)) * (step + 1)
        impl.instance_norm(Tensor(x), rm, rv, momentum=momentum)
        torch.nn.functional.instance_norm(torch.tensor(x), trm, trv, momentum=momentum)
        np.testing.assert_allclose(rm.data, trm.numpy(), **TOL)
        np.testing.assert_allclose(rv.data, trv.numpy(), **TOL)
    x = rng.standard_normal((2, 3, 5))
    w, b = rng.uniform(0.5, 1.5, 3), rng.standard_normal(3)
    _check(torch,
           lambda x, w, b: impl.instance_norm(x, rm, rv, w, b, use_input_stats=False),
           lambda x, w, b: torch.nn.functional.instance_norm(x, trm, trv, w, b,
                                                             use_input_stats=False),
           [x, w, b], rng)


# ---------------------------------------------------------------------- property tests
_finite = st.floats(-1e3, 1e3, allow_nan=False, width=64)


@st.composite
def _batch(draw, min_n=2):
    n = draw(st.integers(min_n, 8))
    c = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31))
    scale = draw(st.floats(1e-2, 1e3))
    shift = draw(_finite)
    x = np.random.default_rng(seed).standard_normal((n, c)) * scale + shift
    return x


@given(x=_batch())
def test_bn_output_has_mean_0_and_biased_variance_1(x):
    assume(np.all(x.std(axis=0) > 1e-6 * (1 + np.abs(x).max())))
    for impl in IMPLS.values():
        y = impl.batch_norm(Tensor(x), None, None, training=True, eps=TINY_EPS).data
        np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-9)
        np.testing.assert_allclose(y.var(axis=0), 1.0, rtol=1e-9)  # ddof=0: biased


@given(x=_batch(), a=st.floats(1e-3, 1e3), b=_finite)
def test_bn_is_invariant_to_positive_affine_maps_of_the_input(x, a, b):
    assume(np.all(x.std(axis=0) > 1e-6 * (1 + np.abs(x).max())))
    for impl in IMPLS.values():
        y = impl.batch_norm(Tensor(x), None, None, training=True, eps=TINY_EPS).data
        y2 = impl.batch_norm(Tensor(a * x + b), None, None, training=True, eps=TINY_EPS).data
        np.testing.assert_allclose(y2, y, atol=1e-6)


@given(n=st.integers(3, 8), d_in=st.integers(1, 4), d_out=st.integers(1, 4),
       seed=st.integers(0, 2**31))
def test_grad_of_bn_of_linear_is_orthogonal_to_the_weights(n, d_in, d_out, seed):
    """z = BN(x·Wᵀ) does not change when a row of W is scaled, so ⟨∂L/∂W_i, W_i⟩ = 0."""
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal((n, d_in)))
    u = rng.standard_normal((n, d_out))
    for impl in IMPLS.values():
        w = Tensor(rng.standard_normal((d_out, d_in)), requires_grad=True)
        z = impl.batch_norm(F.linear(x, w), None, None, training=True, eps=TINY_EPS)
        (gw,) = grad((z * u).sum(), w)
        dots = (gw.data * w.data).sum(axis=1)
        norms = np.linalg.norm(gw.data, axis=1) * np.linalg.norm(w.data, axis=1)
        assert np.all(np.abs(dots) <= 1e-10 * (1 + norms)), (dots, norms)


def test_two_pass_variance_is_stable_in_float32(impl):
    """Mean 1e4, spread 1e-2, float32: E[x²] − E[x]² would lose every digit here."""
    rng = np.random.default_rng(8)
    x = (1e4 + 1e-2 * rng.standard_normal((64, 4))).astype(np.float32)
    true_var = x.astype(np.float64).var(axis=0, ddof=1)
    naive = ((x * x).mean(axis=0) - x.mean(axis=0) ** 2) * (64 / 63)  # one pass, float32
    assert np.all(np.abs(naive - true_var) > 0.5 * true_var)  # the test has teeth
    rm, rv = Tensor(np.zeros(4, np.float32)), Tensor(np.ones(4, np.float32))
    y = impl.batch_norm(Tensor(x), rm, rv, training=True, momentum=1.0, eps=TINY_EPS)
    np.testing.assert_allclose(rv.data, true_var, rtol=0.05)
    np.testing.assert_allclose(y.data.astype(np.float64).var(axis=0), 1.0, rtol=0.05)
    z = impl.layer_norm(Tensor(np.ascontiguousarray(x.T)), 64, eps=0.0)
    np.testing.assert_allclose(z.data.astype(np.float64).var(axis=1), 1.0, rtol=0.05)


# ---------------------------------------------------------------------------- errors
def _snapshot(*ts):
    return [None if t is None else t.data.copy() for t in ts]


def _unchanged(ts, snaps):
    for t, s in zip(ts, snaps):
        if t is not None:
            np.testing.assert_array_equal(t.data, s)


def _bn_state(c=4):
    rng = np.random.default_rng(9)
    return [Tensor(rng.standard_normal(c)), Tensor(rng.uniform(0.5, 2, c)),
            Tensor(rng.standard_normal(c), requires_grad=True),
            Tensor(rng.standard_normal(c), requires_grad=True)]


BN_ERRORS = [
    # (x shape, which state is replaced by a wrong shape, kwargs, message pattern)
    ((1, 4), None, {"training": True},
     r"Expected more than 1 value per channel when training, got input size \(1, 4\)"),
    ((1, 4, 1), None, {"training": True}, r"more than 1 value per channel.*\(1, 4, 1\)"),
    ((4,), None, {"training": True}, r"\(N, C\).*\(4,\)"),
    ((), None, {}, r"ndim 0"),
    ((3, 5), None, {"training": True}, r"running_mean of shape \(4,\).*5 channels.*\(3, 5\)"),
    ((3, 4), 2, {"training": True}, r"weight of shape \(3,\).*4 channels"),
    ((3, 4), 3, {}, r"bias of shape \(3,\).*4 channels"),
    ((3, 4), 1, {}, r"running_var of shape \(3,\)"),
    ((3, 4), None, {"training": True, "momentum": None}, r"momentum.*None"),
    ((3, 4), None, {"training": True, "eps": -1.0}, r"eps must be positive during training"),
]


@pytest.mark.parametrize("shape,bad,kwargs,pattern", BN_ERRORS,
                         ids=[p[:30] for *_, p in BN_ERRORS])
def test_batch_norm_errors_change_nothing(impl, shape, bad, kwargs, pattern):
    state = _bn_state()
    if bad is not None:
        state[bad] = Tensor(np.ones(3), requires_grad=bad >= 2)
    x = Tensor(np.random.default_rng(0).standard_normal(shape), requires_grad=True)
    snaps = _snapshot(x, *state)
    with pytest.raises(ValueError, match=pattern):
        impl.batch_norm(x, *state, **kwargs)
    _unchanged([x, *state], snaps)
    assert x.grad is None and state[2].grad is None


def test_batch_norm_eval_needs_running_stats(impl):
    with pytest.raises(ValueError, match="required when training=False"):
        impl.batch_norm(Tensor(np.ones((3, 2))), None, None)
    rm = Tensor(np.zeros(2))
    with pytest.raises(ValueError, match="given together"):
        impl.batch_norm(Tensor(np.ones((3, 2))), rm, None, training=True)
    np.testing.assert_array_equal(rm.data, 0.0)


def test_integer_running_stats_are_rejected(impl):
    rm, rv = Tensor(np.zeros(2, np.int64)), Tensor(np.ones(2, np.int64))
    with pytest.raises(ValueError, match="running_mean must be floating point"):
        impl.batch_norm(Tensor(np.ones((3, 2))), rm, rv, training=True)
    with pytest.raises(ValueError, match="running_mean must be floating point"):
        impl.instance_norm(Tensor(np.ones((3, 2, 4))), rm, rv)


def test_eval_with_batch_of_one_is_fine(impl):
    rm, rv = Tensor(np.zeros(4)), Tensor(np.ones(4))
    y = impl.batch_norm(Tensor(np.ones((1, 4))), rm, rv)
    np.testing.assert_allclose(y.data, 1 / np.sqrt(1 + 1e-5))


@pytest.mark.parametrize("call,pattern", [
    (lambda m, x, w, b: m.group_norm(x, 4, w, b), r"num_groups=4 does not divide the 6 "
                                                  r"channels.*\(2, 6, 3\)"),
    (lambda m, x, w, b: m.group_norm(x, 0, w, b), r"num_groups must be a positive int"),
    (lambda m, x, w, b: m.group_norm(x, 3, w[:4], b), r"weight of shape \(4,\)"),
    (lambda m, x, w, b: m.group_norm(x[0, 0], 3, w, b), r"\(N, C, \*\).*\(3,\)"),
    (lambda m, x, w, b: m.layer_norm(x, (6, 4), None, None),
     r"normalized_shape=\(6, 4\).*\(\*, 6, 4\).*\(2, 6, 3\)"),
    (lambda m, x, w, b: m.layer_norm(x, 3, w, None), r"weight of shape \(6,\).*normalized"),
    (lambda m, x, w, b: m.layer_norm(x, (), None, None), r"non-empty"),
    (lambda m, x, w, b: m.rms_norm(x, 4), r"normalized_shape=\(4,\)"),
    (lambda m, x, w, b: m.instance_norm(x[:, :, :1]),
     r"Expected more than 1 spatial element when training, got input size \(2, 6, 1\)"),
    (lambda m, x, w, b: m.instance_norm(x[:, :, 0]), r"\(N, C, L\).*\(2, 6\)"),
    (lambda m, x, w, b: m.instance_norm(x, None, None, w[:5], b), r"weight of shape \(5,\)"),
    (lambda m, x, w, b: m.instance_norm(x, use_input_stats=False), r"required"),
])
def test_other_norm_errors_change_nothing(impl, call, pattern):
    rng = np.random.default_rng(10)
    x = Tensor(rng.standard_normal((2, 6, 3)), requires_grad=True)
    w = Tensor(rng.standard_normal(6), requires_grad=True)
    b = Tensor(rng.standard_normal(6), requires_grad=True)
    snaps = _snapshot(x, w, b)
    with pytest.raises(ValueError, match=pattern):
        call(impl, x, w, b)
    _unchanged([x, w, b], snaps)


def test_instance_norm_failed_call_leaves_running_stats(impl):
    rm, rv = Tensor(np.zeros(3)), Tensor(np.ones(3))
    with pytest.raises(ValueError, match="spatial"):
        impl.instance_norm(Tensor(np.ones((2, 3, 1))), rm, rv)
    with pytest.raises(ValueError, match="momentum"):
        impl.instance_norm(Tensor(np.ones((2, 3, 4))), rm, rv, momentum=None)
    np.testing.assert_array_equal(rm.data, 0.0)
    np.testing.assert_array_equal(rv.data, 1.0)


# ------------------------------------------------------------------- graph and wrappers
def _nodes(t):
    seen, stack, out = set(), [t._ctx], []
    while stack:
        n = stack.pop()
        if n is None or id(n) in seen or not hasattr(n, "parents"):
            continue
        seen.add(id(n))
        out.append(n)
        stack.extend(p for p in n.parents if p is not None and not isinstance(p, Tensor))
    return out


def test_composed_batch_norm_graph_reads_like_the_tutorial():
    x = Tensor(np.random.default_rng(0).standard_normal((4, 3)), requires_grad=True)
    w, b = Tensor(np.ones(3), requires_grad=True), Tensor(np.zeros(3), requires_grad=True)
    y = F.batch_norm(x, None, None, w, b, training=True)
    nodes = _nodes(y)
    names = {n.out_name for n in nodes}
    assert {"μ", "x - μ", "σ²", "σ", "x̂", "y"} <= names
    ops = {n.name for n in nodes}
    assert ops <= {"mean", "sub", "pow", "add", "sqrt", "div", "mul", "reshape"}
    assert all(n.scope is not None and n.scope.label == "batch_norm"
               and n.scope.kind == "norm" for n in nodes)


@pytest.mark.parametrize("name,call", [
    ("layer_norm", lambda x: F.layer_norm(x, 3)),
    ("group_norm", lambda x: F.group_norm(x, 3)),
    ("instance_norm", lambda x: F.instance_norm(x.reshape(2, 3, 2))),
    ("rms_norm", lambda x: F.rms_norm(x, 3)),
])
def test_other_composed_norms_are_scoped_and_named(name, call):
    x = Tensor(np.random.default_rng(0).standard_normal((4, 3)), requires_grad=True)
    y = call(x)
    nodes = _nodes(y)
    assert "x̂" in {n.out_name for n in nodes}
    assert {n.scope.label for n in nodes if n.scope is not None} == {name}


def test_analytic_norms_are_one_node():
    x = Tensor(np.random.default_rng(0).standard_normal((4, 3)), requires_grad=True)
    w, b = Tensor(np.ones(3), requires_grad=True), Tensor(np.zeros(3), requires_grad=True)
    y = analytic.batch_norm(x, None, None, w, b, training=True)
    assert y.grad_fn.name == "batch_norm" and y.grad_fn.parents == (x, w, b)
    assert len(_nodes(y)) == 1


def test_linear_and_activations_match_torch(torch):
    rng = np.random.default_rng(11)
    x, w, b = rng.standard_normal((5, 3)), rng.standard_normal((4, 3)), rng.standard_normal(4)
    _check(torch, F.linear, torch.nn.functional.linear, [x, w, b], rng)
    _check(torch, lambda x, w: F.linear(x, w), lambda x, w: torch.nn.functional.linear(x, w),
           [x, w], rng)
    for ours, theirs in [(F.relu, torch.relu), (F.tanh, torch.tanh),
                         (F.sigmoid, torch.sigmoid)]:
        _check(torch, ours, theirs, [x], rng)
