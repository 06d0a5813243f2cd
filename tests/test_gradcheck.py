"""gradcheck itself: it passes correct gradients, and it has teeth.

The teeth: the tutorial's boxed "simplified" BatchNorm backward (with sqrt(m) where m belongs)
must be rejected for every batch size m > 1, while the correct formula passes and agrees with
torch's batch_norm.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn import Function, GradcheckError, Tensor
from tinygrad_bn.core.gradcheck import gradcheck_report

EPS = 1e-5


def _t(arr, requires_grad=True, name=None):
    return Tensor(np.array(arr, dtype=np.float64), requires_grad=requires_grad, name=name)


# --------------------------------------------------------------------- correct ops
def test_passes_on_correct_ops():
    rng = np.random.default_rng(0)
    x, w = _t(rng.standard_normal((3, 4))), _t(rng.standard_normal((4, 2)))
    b = _t(rng.uniform(0.5, 2.0, 2))
    assert tg.gradcheck(lambda x, w, b: ((x @ w).tanh() / b + b.log()).sigmoid(), [x, w, b])
    assert tg.gradcheck(lambda x: (x - x.mean(axis=0)) / x.std(axis=0), [x])
    assert tg.gradcheck(lambda x, w, b: x @ w * b, [x, w, b], raise_exception=False) is True


def test_checks_only_inputs_that_require_grad_and_passes_constants_through():
    x = _t([1.0, 2.0])
    c = _t([3.0, 4.0], requires_grad=False)
    assert tg.gradcheck(lambda x, c, k: x * c * k, [x, c, 2.0])
    report = gradcheck_report(lambda x, c, k: x * c * k, [x, c, 2.0])
    assert report.passed and report.input_index == 0 and report.n_checked == 4


def test_needs_an_input_that_requires_grad():
    with pytest.raises(ValueError, match="requires_grad"):
        tg.gradcheck(lambda x: x * 2, [_t([1.0], requires_grad=False)])


def test_runs_in_float64_and_leaves_the_inputs_alone():
    x32 = Tensor(np.array([0.3, 0.7], dtype=np.float32), requires_grad=True)
    seen = []

    def f(x):
        seen.append(x.dtype)
        return (x * 3.0).exp()

    # float32 central differences with eps=1e-6 would be far off; float64 copies pass
    assert tg.gradcheck(f, [x32])
    assert set(seen) == {np.dtype(np.float64)}
    assert x32.dtype == np.float32 and x32.grad is None
    np.testing.assert_array_equal(x32.data, np.array([0.3, 0.7], dtype=np.float32))


# ---------------------------------------------------------------- a wrong backward
class WrongOnOneElement(Function):
    """y = x * w, but d/dw is off at one element: the report must find it."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(x, w)
        return x * w

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        gw = (g * x).data.copy()
        gw[1, 2] *= 1.5  # wrong by half
        return g * w, Tensor(gw)


def _wrong_inputs():
    x = _t(np.arange(1.0, 7.0).reshape(2, 3) / 4, name="x")
    w = _t(np.linspace(-1, 1, 6).reshape(2, 3), name="weight")
    return x, w


def test_wrong_backward_raises_a_report_naming_input_element_values_and_criterion():
    x, w = _wrong_inputs()
    with pytest.raises(GradcheckError) as info:
        tg.gradcheck(WrongOnOneElement.apply, [x, w])
    r = info.value.report
    assert not r.passed
    assert r.input_index == 1 and r.input_name == "weight" and r.input_shape == (2, 3)
    assert r.input_element == (1, 2) and r.output_element == (1, 2)
    expected = x.data[1, 2]  # d y[1,2] / d w[1,2]
    assert r.autograd == pytest.approx(1.5 * expected, rel=1e-12)
    assert r.numeric == pytest.approx(expected, rel=1e-8)
    assert r.abs_error == pytest.approx(0.5 * expected, rel=1e-7)
    assert r.n_failed == 1 and r.n_checked == 2 * 36
    msg = str(info.value)
    assert "input 1" in msg and "'weight'" in msg and "(2, 3)" in msg
    assert re.search(r"worst element: d output\[1, 2\] / d input\[1, 2\]", msg)
    assert re.search(r"autograd = " + re.escape(f"{r.autograd:.10g}"), msg)
    assert re.search(r"numeric.*= " + re.escape(f"{r.numeric:.10g}"), msg)
    assert "criterion" in msg and "atol=1e-05" in msg and "rtol=0.001" in msg
    assert "1 of 72" in msg


def test_wrong_backward_with_raise_exception_false_returns_false():
    x, w = _wrong_inputs()
    assert tg.gradcheck(WrongOnOneElement.apply, [x, w], raise_exception=False) is False


def test_the_tolerance_decides():
    """A gradient off by a relative 1e-4 passes rtol=1e-3 and fails rtol=1e-6."""

    class SlightlyOff(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2.0

        @staticmethod
        def backward(ctx, g):
            return (g * 2.0 * (1 + 1e-4),)

    x = _t([1.0, -2.0, 3.0])
    assert tg.gradcheck(SlightlyOff.apply, [x])
    assert not tg.gradcheck(SlightlyOff.apply, [x], atol=0.0, rtol=1e-6, raise_exception=False)
    # with atol=0 the zero entries off the diagonal (0 <= 0) pass; the report names a
    # failing diagonal entry
    with pytest.raises(GradcheckError) as info:
        tg.gradcheck(SlightlyOff.apply, [x], atol=0.0, rtol=1e-6)
    r = info.value.report
    assert r.n_failed == 3 and r.n_checked == 9
    assert len(r.input_element) == 1 and r.input_element == r.output_element
    assert r.autograd == pytest.approx(2.0002, rel=1e-12)
    assert r.numeric == pytest.approx(2.0, rel=1e-8)


def test_nan_gradient_fails():
    class NanGrad(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1.0

        @staticmethod
        def backward(ctx, g):
            return (g * np.nan,)

    assert not tg.gradcheck(NanGrad.apply, [_t([1.0])], raise_exception=False)


def test_missing_gradient_fails():
    """A backward that returns None for an input that matters is caught (zeros vs numeric)."""

    class Forgetful(Function):
        @staticmethod
        def forward(ctx, x, y):
            return x * y

        @staticmethod
        def backward(ctx, g):
            return g, None

    x, y = _t([2.0, 3.0]), _t([4.0, 5.0])
    with pytest.raises(GradcheckError, match="input 1"):
        tg.gradcheck(Forgetful.apply, [x, y])


# -------------------------------------------------------------------- BatchNorm teeth
def _bn_forward(ctx, x, gamma, beta):
    xd = x.data
    mu = xd.mean(axis=0)
    var = ((xd - mu) ** 2).mean(axis=0)  # biased
    sigma = np.sqrt(var + EPS)
    xhat = (xd - mu) / sigma
    ctx.save_for_backward(xhat, sigma, gamma)
    ctx.m = xd.shape[0]
    return gamma.data * xhat + beta.data


class BatchNormCorrect(Function):
    """y = gamma * xhat + beta over axis 0 of (m, C);
    dx = gamma / (sigma m) (m dy - sum(dy) - xhat sum(dy xhat))."""

    forward = staticmethod(_bn_forward)

    @staticmethod
    def backward(ctx, dy):
        xhat, sigma, gamma = ctx.saved_tensors
        m = ctx.m
        s1 = dy.sum(axis=0)
        s2 = (dy * xhat).sum(axis=0)
        dx = gamma / (sigma * m) * (m * dy - s1 - xhat * s2)
        return dx, s2, s1


class BatchNormBoxed(Function):
    """The tutorial's boxed formula: dx = gamma / (sigma sqrt(m)) (sqrt(m) dy - sum(dy) -
    xhat sum(dy xhat)). Wrong for every m > 1."""

    forward = staticmethod(_bn_forward)

    @staticmethod
    def backward(ctx, dy):
        xhat, sigma, gamma = ctx.saved_tensors
        rm = np.sqrt(ctx.m)
        s1 = dy.sum(axis=0)
        s2 = (dy * xhat).sum(axis=0)
        dx = gamma / (sigma * rm) * (rm * dy - s1 - xhat * s2)
        return dx, s2, s1


def _bn_inputs(m, c=3, seed=0):
    rng = np.random.default_rng(seed + m)
    x = rng.standard_normal((m, c)) * rng.uniform(0.5, 2.0, c) + rng.standard_normal(c)
    return _t(x), _t(rng.uniform(0.5, 1.5, c)), _t(rng.standard_normal(c))


@pytest.mark.parametrize("m", [2, 3, 4, 7, 16])
def test_boxed_batchnorm_backward_is_rejected(m):
    x, gamma, beta = _bn_inputs(m)
    assert tg.gradcheck(BatchNormBoxed.apply, [x, gamma, beta], raise_exception=False) is False
    with pytest.raises(GradcheckError) as info:
        tg.gradcheck(BatchNormBoxed.apply, [x, gamma, beta])
    r = info.value.report
    assert r.input_index == 0  # only dx is wrong
    # far beyond the tolerance, not a near miss
    assert r.abs_error > 0.05
    assert r.abs_error > 1000 * (r.atol + r.rtol * abs(r.numeric))
    full = gradcheck_report(BatchNormBoxed.apply, [x, gamma, beta])
    assert full.n_failed >= m * 3  # most of the dx Jacobian is off


@pytest.mark.parametrize("m", [1, 2, 3, 4, 7, 16])
def test_correct_batchnorm_backward_passes(m):
    x, gamma, beta = _bn_inputs(m)
    if m == 1:  # var = 0: xhat = 0, the boxed and the correct formulas coincide
        assert tg.gradcheck(BatchNormBoxed.apply, [x, gamma, beta])
    assert tg.gradcheck(BatchNormCorrect.apply, [x, gamma, beta]) is True
    r = gradcheck_report(BatchNormCorrect.apply, [x, gamma, beta])
    assert r.passed and r.n_failed == 0 and r.n_checked == (m * 3) * (m * 3 + 3 + 3)


@pytest.mark.parametrize("m", [2, 5, 16])
def test_correct_batchnorm_matches_torch(torch, m):
    x, gamma, beta = _bn_inputs(m, c=4, seed=10)
    dy = np.random.default_rng(m).standard_normal((m, 4))
    y = BatchNormCorrect.apply(x, gamma, beta)
    y.backward(dy)
    tx, tg_, tb = (torch.tensor(t.data, requires_grad=True) for t in (x, gamma, beta))
    ty = torch.nn.functional.batch_norm(tx, None, None, weight=tg_, bias=tb, training=True,
                                        eps=EPS)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    for mine, ref in [(x, tx), (gamma, tg_), (beta, tb)]:
        np.testing.assert_allclose(mine.grad, ref.grad.numpy(), rtol=1e-10, atol=1e-10)
    # and the boxed formula does not
    x.grad = None
    BatchNormBoxed.apply(x, gamma, beta).backward(dy)
    assert np.abs(x.grad - tx.grad.numpy()).max() > 1e-2


def test_batchnorm_backward_differentiates_again():
    """The correct formula written with Tensor ops supports create_graph: d(dx)/d(gamma)
    (gamma enters the formula) matches finite differences of dx."""
    x, gamma, beta = _bn_inputs(4)
    dy = np.random.default_rng(1).standard_normal((4, 3))

    @tg.enable_grad()  # gradcheck's finite differences run under no_grad
    def dx_of(gamma):
        xx = Tensor(x.data, requires_grad=True)
        y = BatchNormCorrect.apply(xx, gamma, beta)
        (gx,) = tg.grad((y * dy).sum(), [xx], create_graph=True)
        return gx

    assert dx_of(gamma).requires_grad
    assert tg.gradcheck(dx_of, [gamma])
