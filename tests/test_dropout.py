"""``F.dropout`` (torch's signature) and ``nn.Dropout``, which is built on it."""
import numpy as np
import pytest

from tinygrad_bn import Tensor, nn
from tinygrad_bn.nn import functional as F


def test_dropout_scales_the_kept_and_masks_the_gradient(torch):
    x = Tensor(np.ones(20000), requires_grad=True)
    y = F.dropout(x, 0.25, rng=0)
    kept = y.data != 0
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(y.data[kept], 1 / 0.75)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, np.where(kept, 1 / 0.75, 0.0))
    # torch's expectation and edge values: p = 0 and training=False give the input, p = 1 zeros
    t = torch.nn.functional.dropout(torch.ones(20000, dtype=torch.float64), 0.25)
    assert abs(float(t.mean()) - float(y.data.mean())) < 0.05
    assert F.dropout(x, 0.0) is x and F.dropout(x, 0.7, training=False) is x
    assert not F.dropout(x, 1.0, rng=0).data.any()


def test_dropout_layer_is_the_function():
    x = Tensor(np.ones((4, 5)))
    layer = nn.Dropout(0.5, rng=3)
    np.testing.assert_array_equal(layer(x).data, F.dropout(x, 0.5, rng=3).data)
    assert layer.eval()(x) is x


@pytest.mark.parametrize("p", [-0.1, 1.5, True, "0.5"])
def test_dropout_probability_is_checked(p):
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.dropout(Tensor(np.ones(3)), p)


def test_inplace_dropout_says_how_to_write_it():
    with pytest.raises(ValueError, match=r"x = F.dropout\(x, p\)"):
        F.dropout(Tensor(np.ones(3)), 0.5, inplace=True)
