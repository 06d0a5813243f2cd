"""Losses against torch (float64, 1e-10): values, gradients, second derivatives, stability,
finite differences, and the errors for bad targets and arguments."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn import Tensor
from tinygrad_bn.nn import functional as F
from tinygrad_bn.nn.losses import log_softmax, softmax

TOL = 1e-10


def _close(a, b, tol=TOL):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def _logits(rng, n=6, c=4, scale=2.0):
    return rng.standard_normal((n, c)) * scale


# -- cross_entropy --------------------------------------------------------------------------

@pytest.mark.parametrize("classes", [4, 100])  # (a few classes: worked on transposed)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_value_and_gradient_match_torch(torch, rng, reduction, classes):
    z = _logits(rng, n=70, c=classes)
    t = rng.integers(0, classes, 70)
    x = Tensor(z, requires_grad=True)
    loss = F.cross_entropy(x, t, reduction=reduction)
    tx = torch.tensor(z, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(tx, torch.tensor(t), reduction=reduction)
    assert loss.shape == tuple(tloss.shape)
    assert loss.dtype == np.float64
    _close(loss.data, tloss.detach().numpy())
    g = rng.standard_normal(loss.shape)  # a non-trivial upstream gradient
    loss.backward(Tensor(g) if reduction == "none" else None)
    tloss.backward(torch.tensor(g) if reduction == "none" else None)
    _close(x.grad, tx.grad.numpy())


def test_cross_entropy_reductions_agree_with_each_other(rng):
    z, t = _logits(rng), rng.integers(0, 4, 6)
    per_row = F.cross_entropy(Tensor(z), t, reduction="none").data
    assert per_row.shape == (6,)
    _close(F.cross_entropy(Tensor(z), t, reduction="sum").data, per_row.sum())
    _close(F.cross_entropy(Tensor(z), t).data, per_row.mean())
    # the definition: logsumexp(z) - z[t]
    _close(per_row, np.log(np.exp(z).sum(1)) - z[np.arange(6), t])


def test_cross_entropy_accepts_float_integral_targets_and_tensors(rng):
    z, t = _logits(rng), rng.integers(0, 4, 6)
    ref = F.cross_entropy(Tensor(z), t).data
    _close(F.cross_entropy(Tensor(z), t.astype(np.float64)).data, ref)
    _close(F.cross_entropy(Tensor(z), Tensor(t)).data, ref)
    _close(F.cross_entropy(Tensor(z), list(t)).data, ref)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_is_stable_for_huge_logits(torch, reduction):
    z = np.array([[1e4, 0.0, -1e4], [1e4, 1e4 - 1.0, 3.0], [-1e4, -1e4, -1e4 + 2.0],
                  [5e3, -5e3, 1e4]])
    t = np.array([1, 1, 2, 0])
    x = Tensor(z, requires_grad=True)
    loss = F.cross_entropy(x, t, reduction=reduction)
    tx = torch.tensor(z, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(tx, torch.tensor(t), reduction=reduction)
    assert np.all(np.isfinite(loss.data))
    _close(loss.data, tloss.detach().numpy())
    # by hand: logsumexp(z) - z[t] = 1e4, 1 + log(1 + e^-1), 5e3
    per_row = F.cross_entropy(Tensor(z), t, reduction="none").data
    assert per_row[0] == pytest.approx(1e4, rel=1e-14)
    assert per_row[1] == pytest.approx(1.0 + np.log1p(np.exp(-1.0)), rel=1e-12)
    assert per_row[3] == pytest.approx(5e3, rel=1e-14)
    g = np.ones(loss.shape)
    loss.backward(Tensor(g) if reduction == "none" else None)
    tloss.backward(torch.tensor(g) if reduction == "none" else None)
    assert np.all(np.isfinite(x.grad))
    _close(x.grad, tx.grad.numpy())


def test_cross_entropy_float32_keeps_dtype_and_stays_finite():
    z = np.array([[1e4, -1e4, 0.0]], dtype=np.float32)
    x = Tensor(z, requires_grad=True)
    loss = F.cross_entropy(x, [1])
    assert loss.dtype == np.float32 and np.isfinite(loss.item())
    loss.backward()
    assert x.grad.dtype == np.float32 and np.all(np.isfinite(x.grad))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_second_derivatives_match_torch(torch, rng, reduction):
    """Hessian-vector products: grad(create_graph=True), then differentiate <grad, v>."""
    z = _logits(rng, 5, 4)
    t = rng.integers(0, 4, 5)
    v = rng.standard_normal(z.shape)
    w = rng.standard_normal(5)

    x = Tensor(z, requires_grad=True)
    loss = F.cross_entropy(x, t, reduction=reduction)
    if reduction == "none":
        loss = (loss * Tensor(w)).sum()
    (gx,) = tg.grad(loss, [x], create_graph=True)
    assert gx.requires_grad
    (hv,) = tg.grad((gx * Tensor(v)).sum(), [x])

    tx = torch.tensor(z, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(tx, torch.tensor(t), reduction=reduction)
    if reduction == "none":
        tloss = (tloss * torch.tensor(w)).sum()
    (tgx,) = torch.autograd.grad(tloss, tx, create_graph=True)
    (thv,) = torch.autograd.grad((tgx * torch.tensor(v)).sum(), tx)

    _close(gx.data, tgx.detach().numpy())
    _close(hv.data, thv.numpy())
    assert np.abs(hv.data).max() > 1e-3  # the Hessian is not zero


def test_cross_entropy_second_derivative_with_huge_logits_matches_torch(torch):
    z = np.array([[1e4, 1e4 - 0.5, 0.0], [-1e4, 2.0, 1.0]])
    t = np.array([0, 2])
    v = np.array([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0]])
    x = Tensor(z, requires_grad=True)
    (gx,) = tg.grad(F.cross_entropy(x, t), [x], create_graph=True)
    (hv,) = tg.grad((gx * Tensor(v)).sum(), [x])
    tx = torch.tensor(z, requires_grad=True)
    (tgx,) = torch.autograd.grad(torch.nn.functional.cross_entropy(tx, torch.tensor(t)), tx,
                                 create_graph=True)
    (thv,) = torch.autograd.grad((tgx * torch.tensor(v)).sum(), tx)
    assert np.all(np.isfinite(hv.data))
    _close(hv.data, thv.numpy())


def test_cross_entropy_gradcheck(rng):
    t = rng.integers(0, 3, 4)
    for reduction in ("mean", "sum", "none"):
        assert tg.gradcheck(lambda z: F.cross_entropy(z, t, reduction=reduction),
                            [Tensor(rng.standard_normal((4, 3)), requires_grad=True)])


def test_log_softmax_and_softmax_match_torch(torch, rng):
    z = _logits(rng, 4, 5)
    z[0] += 1e4
    for axis in (0, 1, -1):
        x = Tensor(z, requires_grad=True)
        tx = torch.tensor(z, requires_grad=True)
        _close(log_softmax(x, axis=axis).data,
               torch.log_softmax(tx, dim=axis).detach().numpy())
        s = softmax(x, axis=axis)
        ts = torch.softmax(tx, dim=axis)
        _close(s.data, ts.detach().numpy())
        g = rng.standard_normal(z.shape)
        s.backward(Tensor(g))
        ts.backward(torch.tensor(g))
        _close(x.grad, tx.grad.numpy())
    assert tg.gradcheck(lambda a: log_softmax(a, axis=1),
                        [Tensor(rng.standard_normal((3, 4)), requires_grad=True)])


# -- mse_loss -------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_matches_torch(torch, rng, reduction):
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    x, y = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    tx, ty = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    loss = F.mse_loss(x, y, reduction=reduction)
    tloss = torch.nn.functional.mse_loss(tx, ty, reduction=reduction)
    _close(loss.data, tloss.detach().numpy())
    g = rng.standard_normal(loss.shape)
    loss.backward(Tensor(g) if reduction == "none" else None)
    tloss.backward(torch.tensor(g) if reduction == "none" else None)
    _close(x.grad, tx.grad.numpy())
    _close(y.grad, ty.grad.numpy())


def test_mse_loss_with_array_target_and_gradcheck(rng):
    a, b = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))
    _close(F.mse_loss(Tensor(a), b).data, ((a - b) ** 2).mean())
    assert tg.gradcheck(lambda x, y: F.mse_loss(x, y, reduction="sum"),
                        [Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)])


# -- binary_cross_entropy_with_logits ----------------------------------------------------------

@pytest.mark.parametrize("with_weight", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_with_logits_matches_torch(torch, rng, reduction, with_weight):
    z = rng.standard_normal((4, 3)) * 3
    z[0] = [800.0, -800.0, 60.0]  # large |logits|: exp overflows unless written stably
    z[1] = [-60.0, 1e4, -1e4]
    t = rng.uniform(0, 1, (4, 3))
    t[0, 0], t[0, 1] = 0.0, 1.0  # the wrong side: losses of ~800
    w = rng.uniform(0.5, 2.0, (4, 3)) if with_weight else None
    x = Tensor(z, requires_grad=True)
    tx = torch.tensor(z, requires_grad=True)
    loss = F.binary_cross_entropy_with_logits(x, t, weight=w, reduction=reduction)
    tloss = torch.nn.functional.binary_cross_entropy_with_logits(
        tx, torch.tensor(t), weight=None if w is None else torch.tensor(w), reduction=reduction)
    assert np.all(np.isfinite(loss.data))
    _close(loss.data, tloss.detach().numpy())
    g = rng.standard_normal(loss.shape)
    loss.backward(Tensor(g) if reduction == "none" else None)
    tloss.backward(torch.tensor(g) if reduction == "none" else None)
    assert np.all(np.isfinite(x.grad))
    _close(x.grad, tx.grad.numpy())
    if reduction == "none":
        # wrong-side logits of ±800 cost 800 (times the weight)
        scale = w[0, :2] if with_weight else 1.0
        _close(loss.data[0, :2], 800.0 * scale)


def test_bce_with_logits_gradcheck(rng):
    t = rng.uniform(0, 1, (3, 4))
    w = rng.uniform(0.5, 2, (3, 4))
    z = rng.standard_normal((3, 4)) * 3
    z[np.abs(z) < 0.1] = 0.5  # stay away from the kink of |x| and max(x, 0) at 0
    assert tg.gradcheck(lambda a: F.binary_cross_entropy_with_logits(a, t),
                        [Tensor(z, requires_grad=True)])
    assert tg.gradcheck(lambda a: F.binary_cross_entropy_with_logits(a, t, weight=w,
                                                                      reduction="sum"),
                        [Tensor(z, requires_grad=True)])


# -- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("target", [np.zeros((3, 1), np.int64), np.zeros(4, np.int64),
                                    np.zeros((3, 4), np.int64), np.int64(0)])
def test_cross_entropy_wrong_target_shape(target):
    with pytest.raises(ValueError, match=r"target of shape .* \(3,\)"):
        F.cross_entropy(Tensor(np.zeros((3, 4))), target)


@pytest.mark.parametrize("bad", [4, 7, -1])
def test_cross_entropy_out_of_range_class_names_the_value(bad):
    t = np.array([0, bad, 1])
    with pytest.raises(ValueError, match=rf"target {bad} .*4 classes"):
        F.cross_entropy(Tensor(np.zeros((3, 4))), t)


def test_cross_entropy_rejects_fractional_or_non_numeric_targets():
    with pytest.raises(ValueError, match="integer"):
        F.cross_entropy(Tensor(np.zeros((2, 3))), np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="integer"):
        F.cross_entropy(Tensor(np.zeros((2, 3))), np.array(["a", "b"]))


def test_cross_entropy_rejects_non_2d_logits_and_empty_batches():
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        F.cross_entropy(Tensor(np.zeros(4)), np.array([0]))
    with pytest.raises(ValueError):
        F.cross_entropy(Tensor(np.zeros((0, 3))), np.zeros(0, np.int64))


@pytest.mark.parametrize("call", [
    lambda r: F.cross_entropy(Tensor(np.zeros((2, 3))), [0, 1], reduction=r),
    lambda r: F.mse_loss(Tensor(np.zeros(2)), np.zeros(2), reduction=r),
    lambda r: F.binary_cross_entropy_with_logits(Tensor(np.zeros(2)), np.zeros(2),
                                                 reduction=r),
])
@pytest.mark.parametrize("reduction", ["avg", "Mean", None, "batchmean"])
def test_bad_reduction_is_a_value_error(call, reduction):
    with pytest.raises(ValueError, match="reduction"):
        call(reduction)


def test_mse_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 1\).*\(4,\)"):
        F.mse_loss(Tensor(np.zeros((4, 1))), np.zeros(4))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        F.mse_loss(Tensor(np.zeros((2, 3))), Tensor(np.zeros((3, 2))))


def test_bce_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(5,\).*\(5, 1\)"):
        F.binary_cross_entropy_with_logits(Tensor(np.zeros(5)), np.zeros((5, 1)))
