"""The deliberate differences from PyTorch listed in the README ("Differences from PyTorch"),
one test each: what we do instead, and that PyTorch indeed does otherwise."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn import Tensor, no_grad


def test_grad_is_an_ndarray(torch):
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * x).sum().backward()
    assert type(x.grad) is np.ndarray and type(x.data) is np.ndarray
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])
    tx = torch.tensor([1.0, 2.0], requires_grad=True)
    (tx * tx).sum().backward()
    assert isinstance(tx.grad, torch.Tensor)


def test_tensor_constructor_dtypes(torch):
    # an ndarray keeps its dtype (torch.Tensor would make float32); lists become float32
    assert Tensor(np.array([1, 2])).dtype == np.int64
    assert Tensor(np.array([1.0, 2.0])).dtype == np.float64
    assert Tensor([1, 2]).dtype == np.float32
    assert torch.Tensor(np.array([1, 2])).dtype == torch.get_default_dtype()  # a float
    # tinygrad_bn.tensor follows torch.tensor; dtypes are NumPy's
    assert tg.tensor([1, 2]).dtype == np.int64
    assert torch.tensor([1, 2]).dtype == torch.int64
    assert tg.tensor([1.0]).dtype == np.float32
    assert Tensor([1.0], dtype=np.float16).dtype == np.dtype("float16")


def test_inplace_in_a_recorded_graph_raises(torch):
    w = Tensor(np.ones(3), requires_grad=True)
    h = w * 2.0
    before = h.data.copy()
    with pytest.raises(RuntimeError, match=r"x = x \+ y"):
        h += 1.0
    np.testing.assert_array_equal(h.data, before)  # a failed call changes nothing
    c = Tensor(np.zeros(3))
    with pytest.raises(RuntimeError, match="recorded graph"):
        c += w  # the right-hand side requires grad
    np.testing.assert_array_equal(c.data, 0.0)
    # torch records both; the out-of-place spelling works here and gives torch's gradient
    tw = torch.ones(3, dtype=torch.float64, requires_grad=True)
    th = tw * 2.0
    th += 1.0
    th.sum().backward()
    h = h + 1.0
    h.sum().backward()
    np.testing.assert_array_equal(w.grad, tw.grad.numpy())
    with no_grad():  # outside recording, in place is how parameters are updated
        w -= 0.5 * w.grad
    np.testing.assert_array_equal(w.data, 0.0)


def test_transpose_numpy_extensions(torch):
    x = Tensor(np.arange(24.0).reshape(2, 3, 4))
    tx = torch.arange(24.0, dtype=torch.float64).reshape(2, 3, 4)
    np.testing.assert_array_equal(x.transpose().data, tx.permute(2, 1, 0).numpy())
    np.testing.assert_array_equal(x.transpose(2, 0, 1).data, tx.permute(2, 0, 1).numpy())
    np.testing.assert_array_equal(x.transpose(0, 2).data, tx.transpose(0, 2).numpy())
    with pytest.raises(TypeError):
        tx.transpose()
    with pytest.raises(TypeError):
        tx.transpose(2, 0, 1)


def test_var_gradient_with_correction_at_least_n_follows_the_formula():
    # torch's values there are nan/inf, and so are ours; its gradients mix signs of inf.
    # Ours is the formula 2 (x - mean) / (n - correction), evaluated as written.
    x = Tensor(np.array([0.0, 2.0, 2.0]), requires_grad=True)
    with pytest.warns(RuntimeWarning, match="degrees of freedom"):
        v = x.var(correction=3)
    assert np.isinf(v.item())
    with np.errstate(divide="ignore", invalid="ignore"):
        v.backward()
    assert list(np.sign(x.grad)) == [-1.0, 1.0, 1.0] and np.isinf(x.grad).all()


def test_sign_of_negative_zero_to_a_negative_power():
    # NumPy's rule: (-0.0) ** -0.5 is +inf (torch special-cases the exponent as rsqrt: -inf)
    with np.errstate(divide="ignore"):
        assert (Tensor(np.array(-0.0)) ** -0.5).item() == np.inf


def test_second_backward_raises_even_without_saved_values(torch):
    x = Tensor(np.ones(3), requires_grad=True)
    y = (x + 1.0).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()
    tx = torch.ones(3, requires_grad=True)
    ty = (tx + 1.0).sum()
    ty.backward()
    ty.backward()  # torch: allowed, nothing was saved
    assert tx.grad.tolist() == [2.0, 2.0, 2.0]


def test_backward_create_graph_points_to_grad():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x ** 3).sum()
    with pytest.raises(RuntimeError, match=r"tinygrad_bn\.grad\(.*create_graph=True"):
        y.backward(create_graph=True)
    assert x.grad is None
    (g,) = tg.grad(y, x, create_graph=True)
    (h,) = tg.grad(g.sum(), x)
    np.testing.assert_array_equal(h.data, 6.0 * x.data)


def test_backward_inputs_accumulates_only_into_those(torch):
    a = Tensor(np.ones(2), requires_grad=True)
    b = Tensor(np.ones(2), requires_grad=True)
    (a * b * 3.0).sum().backward(inputs=[a])
    assert b.grad is None
    np.testing.assert_array_equal(a.grad, [3.0, 3.0])


def test_conv_constructors_check_their_kernel(torch):
    """A convolution kernel of size 0 fails when the layer is made; torch builds the layer
    (warning that its weight has no elements) and fails at its first forward."""
    import warnings

    from tinygrad_bn import nn

    with pytest.raises(ValueError, match="kernel_size must be positive"):
        nn.Conv2d(1, 1, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer = torch.nn.Conv2d(1, 1, 0)  # torch accepts it here...
    with pytest.raises(RuntimeError):  # ...and fails at the forward
        layer(torch.ones(1, 1, 4, 4))


def test_one_hot_takes_any_integer_dtype(torch):
    from tinygrad_bn.nn import functional as F

    idx = np.array([0, 2, 1], dtype=np.int32)
    np.testing.assert_array_equal(F.one_hot(Tensor(idx), 3).data, np.eye(3, dtype=np.int64)[idx])
    with pytest.raises(RuntimeError):
        torch.nn.functional.one_hot(torch.tensor(idx), 3)
