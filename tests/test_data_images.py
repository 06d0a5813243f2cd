"""Image-shaped datasets for CNNs: the 8×8 digits as (N, 1, 8, 8) and MNIST-1D, generated
offline by the ``mnist1d`` package, as (N, 40) or (N, 1, 40)."""
import random

import numpy as np
import pytest

from tinygrad_bn import data


def test_digits_as_images_are_the_flat_digits_reshaped():
    pytest.importorskip("sklearn")
    flat, img = data.load("digits"), data.load("digits", images=True)
    assert img.X_train.shape[1:] == (1, 8, 8) and img.input_shape == (1, 8, 8)
    assert img.n_features == flat.n_features == 64
    np.testing.assert_array_equal(img.X_train.reshape(len(img.X_train), 64), flat.X_train)
    np.testing.assert_array_equal(img.y_test, flat.y_test)
    assert img.X_train.dtype == np.float32 and img.y_train.dtype == np.int64


def test_mnist1d_is_the_published_split_and_leaves_global_generators_alone():
    pytest.importorskip("mnist1d")
    np.random.seed(123)
    random.seed(123)
    before = (np.random.random(), random.random())
    np.random.seed(123)
    random.seed(123)
    d = data.load("mnist1d")
    assert (np.random.random(), random.random()) == before  # not reseeded to 42
    assert d.X_train.shape == (4000, 40) and d.X_test.shape == (1000, 40)
    assert d.n_classes == 10 and d.input_shape == (40,)
    assert d.X_train.dtype == np.float32 and d.y_train.dtype == np.int64
    assert set(np.bincount(np.concatenate([d.y_train, d.y_test]))) == {500}
    assert abs(float(np.concatenate([d.X_train, d.X_test]).mean())) < 1e-3  # standardized
    img = data.load("mnist1d", images=True)
    assert img.X_train.shape == (4000, 1, 40)
    np.testing.assert_array_equal(img.X_train[:, 0], d.X_train)
    # deterministic, and the cache hands out copies
    d.X_train[:] = 0
    again = data.load("mnist1d")
    assert again.X_train.any()
    np.testing.assert_array_equal(again.X_train, img.X_train[:, 0])
    small = data.load("mnist1d", n=500)
    assert small.X_train.shape == (400, 40) and small.X_test.shape == (100, 40)


def test_images_option_and_unknown_names_are_checked():
    with pytest.raises(ValueError, match="images=True applies to digits and mnist1d"):
        data.load("moons", images=True)
    with pytest.raises(ValueError, match="mnist1d"):
        data.load("frob")
