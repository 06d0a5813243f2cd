"""The convolution's ndarray path against its plain definition.

``ConvNd`` computes ndarrays with ``_conv_array`` / ``_conv_grads_array`` (window copies
straight into the matmul's layout; dx on the flattened padded grid for stride 1) and Tensors
(graph mode) with ``_im2col`` / ``_conv_grads``, the definition. Both must give the same
values, for every stride, padding, dilation, group count and batch size (float64, up to
rounding): drawn by hypothesis, and each route of dx checked on its own.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinygrad_bn.core import conv_ops

from test_conv import conv_settings

TOL = dict(rtol=1e-10, atol=1e-12)
ALL = (True, True, True)


@st.composite
def convs(draw, stride_one=False):
    """A convolution's arrays (x, W, b, gy) in float64 and its (geometry, groups), with the
    settings of test_conv.py's property test and batches of 0 to 3 samples."""
    nd, xs, ws, _, kw = draw(conv_settings(batches=(0, 1, 2, 3), stride_one=stride_one))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    geo, _ = conv_ops.conv_geometry(x, w, kw["stride"], kw["padding"], kw["dilation"],
                                    kw["groups"], nd, "conv")
    b = rng.standard_normal(ws[0])
    g = rng.standard_normal((xs[0], ws[0]) + tuple(geo.out_size))
    return x, w, b, g, geo, kw["groups"]


def _conv_by_definition(x, w, b, geo, groups):
    """y[n, g·Og+o, p] = Σ_{c,j} W[g·Og+o, c, j] · unfold(x)[n, g·Cg+c, p, j] + b."""
    nd, n, o = geo.nd, x.shape[0], w.shape[0]
    u = conv_ops.unfold_array(x, geo)  # (N, C, *O, *K)
    k, p = int(np.prod(geo.kernel)), int(np.prod(geo.out_size))
    u = u.reshape((n, groups, x.shape[1] // groups, p, k))
    wg = w.reshape((groups, o // groups, w.shape[1], k))
    y = np.einsum("ngcpj,gocj->ngop", u, wg).reshape((n, o) + tuple(geo.out_size))
    return y + b.reshape((o,) + (1,) * nd)


@given(convs())
def test_im2col_copies_equal_the_window_view(case):
    x, _, _, _, geo, groups = case
    np.testing.assert_array_equal(conv_ops._im2col_array(x, geo, groups),
                                  conv_ops._im2col(x, geo, groups))


@given(convs())
def test_forward_equals_the_definition(case):
    x, w, b, _, geo, groups = case
    y = conv_ops._conv_array(x, w, b, geo, groups)
    np.testing.assert_allclose(y, _conv_by_definition(x, w, b, geo, groups), **TOL)
    y0 = conv_ops._conv_array(x, w, None, geo, groups)
    np.testing.assert_allclose(y0, _conv_by_definition(x, w, 0 * b, geo, groups), **TOL)


@given(convs())
def test_gradients_equal_the_plain_backward(case):
    x, w, _, g, geo, groups = case
    fast = conv_ops._conv_grads_array(x, w, g, geo, groups, ALL)
    plain = conv_ops._conv_grads(x, w, g, geo, groups, ALL)
    for name, a, ref in zip(("dx", "dW", "db"), fast, plain):
        assert a.shape == ref.shape, name
        np.testing.assert_allclose(a, ref, **TOL, err_msg=name)


@given(convs(stride_one=True))
def test_dx_on_the_padded_grid_equals_the_fold(case):
    """The stride-1 route, also where ``_dx_on_grid_pays`` would not choose it."""
    x, w, _, g, geo, groups = case
    (plain, _, _) = conv_ops._conv_grads(x, w, g, geo, groups, (True, False))
    np.testing.assert_allclose(conv_ops._conv_dx_grid(g, w, geo, groups), plain, **TOL)


@given(convs())
def test_dx_folded_equals_the_fold(case):
    x, w, _, g, geo, groups = case
    n, o = g.shape[:2]
    p = int(np.prod(geo.out_size))
    gm = g.reshape((n, groups, o // groups, p)).transpose(1, 2, 0, 3).reshape(
        (groups, o // groups, n * p))
    (plain, _, _) = conv_ops._conv_grads(x, w, g, geo, groups, (True, False))
    np.testing.assert_allclose(conv_ops._conv_dx_folded(gm, w, geo, groups, n), plain, **TOL)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_a_non_finite_weight_gives_the_definitions_nans_and_infs(bad):
    """The grid's zeros times inf would be NaN: dx then takes the folded route, so inf and
    NaN land where the definition puts them (torch's too)."""
    rng = np.random.default_rng(0)
    x, w, g = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 3)), \
        rng.standard_normal((2, 4, 6, 5))
    w[1, 2, 0, 2] = bad
    geo, _ = conv_ops.conv_geometry(x, w, 1, 1, 1, 1, 2, "conv2d")
    assert conv_ops._dx_on_grid_pays(geo, np.ones_like(w))
    assert not conv_ops._dx_on_grid_pays(geo, w)
    (fast, _, _) = conv_ops._conv_grads_array(x, w, g, geo, 1, (True, False))
    (plain, _, _) = conv_ops._conv_grads(x, w, g, geo, 1, (True, False))
    assert np.isfinite(plain).any() and not np.isfinite(plain).all()
    np.testing.assert_allclose(fast, plain, **TOL)  # NaN and ±inf at the same places


def test_the_benchmarks_convolution_takes_the_grid_route():
    """(32, 16, 28, 28), 16 → 32, kernel 3, padding 1: stride 1 and a grid 900/784 of the
    output positions."""
    x, w = np.zeros((32, 16, 28, 28), np.float32), np.ones((32, 16, 3, 3), np.float32)
    geo, _ = conv_ops.conv_geometry(x, w, 1, 1, 1, 1, 2, "conv2d")
    assert conv_ops._dx_on_grid_pays(geo, w)
