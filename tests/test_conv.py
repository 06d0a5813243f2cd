"""Convolution, pooling, Flatten, Embedding and one_hot against PyTorch.

Values and gradients (input, weight, bias) are compared with torch (the ``torch`` fixture:
float64 by default, one thread) over many settings and over hypothesis-drawn ones; every op
passes ``gradcheck`` in float64 and matches torch's second derivatives
(``create_graph=True``); errors name the shapes; state_dict keys, loading from torch and
reprs match torch; each layer call is one graph node.
"""
from __future__ import annotations

import math
import re
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_bn as tg
from tinygrad_bn import Tensor, nn
from tinygrad_bn.core import conv_ops
from tinygrad_bn.nn import functional as F

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")

TOL64 = dict(rtol=1e-10, atol=1e-10)
TOL32 = dict(rtol=2e-4, atol=2e-5)


def _np(t):
    if isinstance(t, Tensor):
        return t.data
    if hasattr(t, "detach"):
        return t.detach().numpy()
    return np.asarray(t)


def _arrays(seed, *shapes, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def _compare(torch, ours, theirs, arrays, tol=TOL64, grad=True, seed=1):
    """Run ``ours`` on Tensors and ``theirs`` on torch tensors made from ``arrays`` (None
    stays None); compare outputs, and the gradients of every input for a random upstream."""
    mine = [None if a is None else Tensor(a, requires_grad=grad) for a in arrays]
    ref = [None if a is None else torch.tensor(a, requires_grad=grad) for a in arrays]
    y, ty = ours(*mine), theirs(*ref)
    assert y.shape == tuple(ty.shape)
    assert y.dtype == arrays[0].dtype
    np.testing.assert_allclose(y.data, _np(ty), **tol)
    if not grad:
        return y
    up = np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)
    y.backward(up)
    ty.backward(torch.tensor(up))
    for i, (a, b) in enumerate(zip(mine, ref)):
        if a is None:
            continue
        assert a.grad is not None and a.grad.shape == a.shape and a.grad.dtype == a.dtype
        np.testing.assert_allclose(a.grad, _np(b.grad), **tol, err_msg=f"gradient {i}")
    return y


# ------------------------------------------------------------------------ the windows
@pytest.mark.parametrize("kw", [
    dict(kernel=(3, 2), stride=(2, 1), dilation=(1, 2), pads=((1, 2), (0, 1))),
    dict(kernel=(4,), stride=(3,), dilation=(2,), pads=((2, 3),)),
], ids=str)
def test_fold_is_the_adjoint_of_unfold(kw):
    """<unfold(x), u> = <x, fold(u)>: each is the other's backward."""
    nd = len(kw["kernel"])
    size = (7, 6)[:nd]
    padded = [s + lo + hi for s, (lo, hi) in zip(size, kw["pads"])]
    out = tuple((p - (d * (k - 1) + 1)) // s + 1 for p, k, d, s in
                zip(padded, kw["kernel"], kw["dilation"], kw["stride"]))
    geo = conv_ops.Geometry(kw["kernel"], kw["stride"], kw["dilation"], kw["pads"], size, out)
    x, u = _arrays(40, (2, 3) + size, (2, 3) + out + kw["kernel"])
    lhs = np.sum(conv_ops.unfold_array(x, geo) * u)
    rhs = np.sum(x * conv_ops.fold_array(u, geo))
    assert abs(lhs - rhs) < 1e-10 * max(1.0, abs(lhs))
    assert issubclass(conv_ops.LayerInputError, ValueError)
    assert issubclass(conv_ops.LayerInputError, RuntimeError)


# ------------------------------------------------------------------------ convolutions
CONV2D = {  # name: (input shape, weight shape, bias, settings)
    "basic": ((2, 3, 7, 8), (4, 3, 3, 3), True, {}),
    "stride2": ((2, 3, 9, 8), (4, 3, 3, 3), True, dict(stride=2)),
    "stride_pair": ((2, 3, 9, 8), (4, 3, 3, 2), True, dict(stride=(2, 3))),
    "padding1": ((2, 3, 5, 6), (4, 3, 3, 3), True, dict(padding=1)),
    "padding_pair": ((2, 3, 5, 6), (4, 3, 3, 3), True, dict(padding=(0, 2))),
    "same_odd": ((2, 3, 6, 5), (4, 3, 3, 5), True, dict(padding="same")),
    "same_even": ((2, 3, 6, 5), (4, 3, 4, 2), True, dict(padding="same")),
    "same_dilated": ((1, 3, 9, 9), (2, 3, 2, 3), True, dict(padding="same", dilation=(3, 2))),
    "valid": ((2, 3, 6, 5), (4, 3, 3, 3), True, dict(padding="valid")),
    "dilation": ((2, 3, 9, 9), (4, 3, 3, 3), True, dict(dilation=2)),
    "dilation_pair": ((2, 3, 9, 9), (4, 3, 3, 2), True, dict(dilation=(1, 3), padding=1)),
    "groups2": ((2, 4, 6, 6), (6, 2, 3, 3), True, dict(groups=2)),
    "depthwise": ((2, 4, 6, 6), (8, 1, 3, 3), True, dict(groups=4, padding=1)),
    "everything": ((2, 6, 11, 9), (9, 2, 3, 2), True,
                   dict(stride=(2, 1), padding=(2, 1), dilation=(2, 3), groups=3)),
    "no_bias": ((2, 3, 6, 6), (4, 3, 3, 3), False, dict(padding=1)),
    "non_square": ((2, 3, 5, 9), (4, 3, 2, 4), True, {}),
    "kernel_1x1": ((2, 5, 4, 4), (3, 5, 1, 1), True, {}),
    "kernel_is_input": ((2, 3, 4, 5), (4, 3, 4, 5), True, {}),
    "stride_past_kernel": ((2, 3, 9, 9), (4, 3, 2, 2), True, dict(stride=3)),
    "batch1": ((1, 3, 5, 5), (2, 3, 3, 3), True, dict(padding=1)),
    "unbatched": ((3, 6, 5), (4, 3, 3, 3), True, dict(padding=1, stride=2)),
    "unbatched_groups": ((4, 6, 5), (4, 2, 2, 2), False, dict(groups=2, padding="same")),
    "empty_batch": ((0, 3, 5, 5), (2, 3, 3, 3), True, {}),
}


@pytest.mark.parametrize("name", list(CONV2D))
def test_conv2d_matches_torch(torch, name):
    xs, ws, bias, kw = CONV2D[name]
    arrays = _arrays(0, xs, ws, (ws[0],))
    if not bias:
        arrays[2] = None
    _compare(torch, lambda x, w, b: F.conv2d(x, w, b, **kw),
             lambda x, w, b: torch.nn.functional.conv2d(x, w, b, **kw), arrays)


CONV1D = {
    "basic": ((2, 3, 9), (4, 3, 3), True, {}),
    "stride_padding": ((2, 3, 10), (4, 3, 4), True, dict(stride=2, padding=2)),
    "dilation_groups": ((2, 4, 11), (6, 2, 3), True, dict(dilation=3, groups=2)),
    "same_even": ((2, 3, 8), (4, 3, 4), False, dict(padding="same", dilation=2)),
    "tuple_args": ((2, 3, 9), (4, 3, 2), True, dict(stride=(2,), padding=(1,), dilation=(2,))),
    "unbatched": ((3, 9), (4, 3, 3), True, dict(padding=1)),
}


@pytest.mark.parametrize("name", list(CONV1D))
def test_conv1d_matches_torch(torch, name):
    xs, ws, bias, kw = CONV1D[name]
    arrays = _arrays(2, xs, ws, (ws[0],))
    if not bias:
        arrays[2] = None
    _compare(torch, lambda x, w, b: F.conv1d(x, w, b, **kw),
             lambda x, w, b: torch.nn.functional.conv1d(x, w, b, **kw), arrays)


@pytest.mark.parametrize("name", ["basic", "everything", "same_even", "unbatched"])
def test_conv2d_float32_keeps_dtype_and_matches_torch(torch, name):
    xs, ws, bias, kw = CONV2D[name]
    arrays = _arrays(3, xs, ws, (ws[0],), dtype=np.float32)
    _compare(torch, lambda x, w, b: F.conv2d(x, w, b, **kw),
             lambda x, w, b: torch.nn.functional.conv2d(x, w, b, **kw), arrays, tol=TOL32)


def test_conv2d_integer_input_as_torch(torch):
    rng = np.random.default_rng(0)
    x = rng.integers(-5, 5, (2, 3, 5, 5))
    w = rng.integers(-3, 3, (4, 3, 3, 3))
    y = F.conv2d(Tensor(x), Tensor(w), padding=1)
    ty = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), padding=1)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y.data, ty.numpy())


def test_conv2d_float16_forward_close_to_torch(torch):
    x, w = _arrays(4, (2, 3, 6, 6), (4, 3, 3, 3), dtype=np.float16)
    y = F.conv2d(Tensor(x), Tensor(w), padding=1)
    ty = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), padding=1)
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.data.astype(np.float64), ty.double().numpy(), rtol=2e-2,
                               atol=2e-2)


@pytest.mark.parametrize("cls, args, kw, shape", [
    ("Conv2d", (3, 6, 3), dict(stride=2, padding=1), (2, 3, 8, 7)),
    ("Conv2d", (4, 6, (3, 2)), dict(padding="same", dilation=2, groups=2, bias=False),
     (2, 4, 7, 7)),
    ("Conv2d", (3, 4, 3), {}, (3, 6, 6)),
    ("Conv1d", (3, 6, 3), dict(stride=2, padding=1, groups=3), (2, 3, 9)),
    ("Conv1d", (3, 6, 4), dict(padding="same"), (3, 9)),
])
def test_conv_module_loads_torch_state_dict_and_matches(torch, cls, args, kw, shape):
    tm = getattr(torch.nn, cls)(*args, **kw)
    m = getattr(nn, cls)(*args, **kw, dtype=np.float64)
    sd = tm.state_dict()
    assert list(m.state_dict()) == list(sd)
    m.load_state_dict(sd)
    (x,) = _arrays(5, shape)
    X, tx = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ty = m(X), tm(tx)
    np.testing.assert_allclose(y.data, _np(ty), **TOL64)
    up = np.random.default_rng(6).standard_normal(y.shape)
    y.backward(up)
    ty.backward(torch.tensor(up))
    np.testing.assert_allclose(X.grad, _np(tx.grad), **TOL64)
    for (n, p), (tn, tp) in zip(m.named_parameters(), tm.named_parameters()):
        assert n == tn
        np.testing.assert_allclose(p.grad, _np(tp.grad), **TOL64, err_msg=n)


def test_state_dict_keys_as_torch(torch):
    assert list(nn.Conv2d(3, 4, 3).state_dict()) == ["weight", "bias"]
    assert list(nn.Conv2d(3, 4, 3, bias=False).state_dict()) == ["weight"]
    assert list(nn.Conv1d(3, 4, 3).state_dict()) == ["weight", "bias"]
    assert list(nn.Embedding(5, 3).state_dict()) == ["weight"]
    for mod in (nn.MaxPool2d(2), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten()):
        assert list(mod.state_dict()) == []
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(2, 3))
    tmodel = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(),
                                 torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                                 torch.nn.Linear(2, 3))
    assert list(model.state_dict()) == list(tmodel.state_dict())
    model.load_state_dict(tmodel.state_dict())
    (x,) = _arrays(7, (4, 1, 4, 4))
    np.testing.assert_allclose(model(Tensor(x.astype(np.float32))).data,
                               _np(tmodel(torch.tensor(x))), rtol=1e-5, atol=1e-6)


def test_conv_shapes_and_dtype_of_parameters():
    m = nn.Conv2d(4, 6, (3, 2), groups=2, dtype=np.float64)
    assert m.weight.shape == (6, 2, 3, 2) and m.bias.shape == (6,)
    assert m.weight.dtype == np.float64 and m.bias.dtype == np.float64
    assert nn.Conv1d(3, 5, 4).weight.shape == (5, 3, 4)
    assert nn.Conv1d(3, 5, 4).weight.dtype == np.float32
    assert m.kernel_size == (3, 2) and m.stride == (1, 1) and m.padding == (0, 0)
    assert nn.Conv2d(1, 1, 3, padding="same").padding == "same"


def test_conv_initialization_is_torchs_scheme():
    m = nn.Conv2d(8, 64, 5, groups=2, rng=0)
    fan_in = 4 * 5 * 5
    bound = 1 / math.sqrt(fan_in)  # kaiming_uniform(a=√5): √(6 / ((1 + 5) fan_in))
    w, b = m.weight.data, m.bias.data
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.98 * bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.03 * bound
    assert np.abs(b).max() <= bound
    assert not np.array_equal(w, nn.Conv2d(8, 64, 5, groups=2, rng=1).weight.data)
    np.testing.assert_array_equal(w, nn.Conv2d(8, 64, 5, groups=2, rng=0).weight.data)
    tg.manual_seed(3)
    a = nn.Conv1d(3, 4, 3)
    tg.manual_seed(3)
    c = nn.Conv1d(3, 4, 3)
    np.testing.assert_array_equal(a.weight.data, c.weight.data)
    np.testing.assert_array_equal(a.bias.data, c.bias.data)


def test_embedding_initialization_is_standard_normal_with_zero_padding_row():
    e = nn.Embedding(400, 50, padding_idx=-1, rng=0)
    assert e.padding_idx == 399
    np.testing.assert_array_equal(e.weight.data[399], 0)
    body = e.weight.data[:399]
    assert abs(body.mean()) < 0.02 and abs(body.std() - 1) < 0.02
    assert e.weight.dtype == np.float32
    np.testing.assert_array_equal(nn.Embedding(5, 3, rng=4).weight.data,
                                  nn.Embedding(5, 3, rng=4).weight.data)


# ------------------------------------------------------------------------------ pools
MAXPOOL = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=1),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=2, stride=2, ceil_mode=True),
    dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 1), dilation=(2, 1)),
    dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 0), dilation=2, ceil_mode=True),
    dict(kernel_size=4),
]


@pytest.mark.parametrize("unbatched", [False, True])
@pytest.mark.parametrize("kw", MAXPOOL, ids=str)
def test_max_pool2d_matches_torch(torch, kw, unbatched):
    (x,) = _arrays(8, (3, 7, 9) if unbatched else (2, 3, 7, 9))
    _compare(torch, lambda t: F.max_pool2d(t, **kw),
             lambda t: torch.nn.functional.max_pool2d(t, **kw), [x])
    y, idx = F.max_pool2d(Tensor(x), return_indices=True, **kw)
    ty, tidx = torch.nn.functional.max_pool2d(torch.tensor(x), return_indices=True, **kw)
    assert idx.dtype == np.int64
    np.testing.assert_array_equal(idx.data, tidx.numpy())


def test_max_pool2d_float32(torch):
    (x,) = _arrays(9, (2, 3, 8, 8), dtype=np.float32)
    _compare(torch, lambda t: F.max_pool2d(t, 3, 2, 1),
             lambda t: torch.nn.functional.max_pool2d(t, 3, 2, 1), [x], tol=TOL32)


@pytest.mark.parametrize("x", [
    np.ones((1, 1, 4, 4)),  # every window is one tie
    np.array([[[[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]]]),
    np.array([[[[2.0, 5.0, 5.0, 1.0], [5.0, 5.0, 2.0, 5.0], [0.0, 5.0, 5.0, 5.0],
                [5.0, 1.0, 5.0, 5.0]]]]),
    np.full((1, 1, 3, 3), -np.inf),  # the lowest value ties with the padding
    np.array([[[[np.nan, 1.0, np.nan], [1.0, np.nan, 0.0], [0.0, 0.0, 0.0]]]]),
], ids=["ones", "block", "many", "all_-inf", "nans"])
@pytest.mark.parametrize("kw", [dict(kernel_size=2, stride=1), dict(kernel_size=3, stride=2,
                                                                     padding=1),
                                dict(kernel_size=2, stride=1, padding=1, dilation=2)],
                         ids=str)
def test_max_pool2d_ties_send_the_gradient_where_torch_does(torch, x, kw):
    """torch gives each window's gradient to its first maximum (row-major), to its last NaN,
    and to its first element inside the input when the maximum is the lowest value."""
    X, tx = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, idx = F.max_pool2d(X, return_indices=True, **kw)
    ty, tidx = torch.nn.functional.max_pool2d(tx, return_indices=True, **kw)
    np.testing.assert_array_equal(idx.data, tidx.numpy())
    np.testing.assert_array_equal(y.data, _np(ty))
    y.sum().backward()
    ty.sum().backward()
    np.testing.assert_array_equal(X.grad, _np(tx.grad))


def test_max_pool2d_window_wholly_in_padding_has_no_gradient(torch):
    """With dilation a window can miss the input: torch gives -inf and an index that names
    another element (here row 1), then sends that window's gradient there. We give the
    same value and index, and no gradient (the output does not depend on the input)."""
    x = np.array([[[0.5], [2.0]]])
    kw = dict(kernel_size=(1, 2), stride=1, padding=(0, 1), dilation=(1, 2))
    X = Tensor(x, requires_grad=True)
    y, idx = F.max_pool2d(X, return_indices=True, **kw)
    ty, tidx = torch.nn.functional.max_pool2d(torch.tensor(x), return_indices=True, **kw)
    np.testing.assert_array_equal(y.data, _np(ty))
    np.testing.assert_array_equal(idx.data, tidx.numpy())
    assert np.isneginf(y.data).all()
    y.sum().backward()
    np.testing.assert_array_equal(X.grad, 0.0)


def test_max_pool2d_integers_as_torch(torch):
    x = np.array([[[[-3, -4], [-5, -6]]]])
    y = F.max_pool2d(Tensor(x), 2, 1, padding=1)
    np.testing.assert_array_equal(
        y.data, torch.nn.functional.max_pool2d(torch.tensor(x), 2, 1, padding=1).numpy())
    u = np.array([[[[3, 4], [5, 6]]]], dtype=np.uint8)
    yu = F.max_pool2d(Tensor(u), 2, 1, padding=1)
    assert yu.dtype == np.uint8
    np.testing.assert_array_equal(yu.data, torch.nn.functional.max_pool2d(
        torch.tensor(u), 2, 1, padding=1).numpy())


AVGPOOL = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=(2, 3), stride=(3, 1), padding=(1, 1), ceil_mode=True),
    dict(kernel_size=2, stride=3, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=3, padding=1, divisor_override=4),
]


@pytest.mark.parametrize("unbatched", [False, True])
@pytest.mark.parametrize("kw", AVGPOOL, ids=str)
def test_avg_pool2d_matches_torch(torch, kw, unbatched):
    (x,) = _arrays(10, (3, 7, 8) if unbatched else (2, 3, 7, 8))
    _compare(torch, lambda t: F.avg_pool2d(t, **kw),
             lambda t: torch.nn.functional.avg_pool2d(t, **kw), [x])


def test_avg_pool2d_float32_and_int64(torch):
    (x,) = _arrays(11, (2, 3, 6, 6), dtype=np.float32)
    _compare(torch, lambda t: F.avg_pool2d(t, 3, 2, 1, ceil_mode=True),
             lambda t: torch.nn.functional.avg_pool2d(t, 3, 2, 1, ceil_mode=True), [x],
             tol=TOL32)
    xi = np.array([[[[-3, -4], [0, 0]], [[3, 4], [0, 0]], [[-9, 2], [1, -1]]]])
    y = F.avg_pool2d(Tensor(xi), 2)  # integer division truncates toward 0, as C++
    np.testing.assert_array_equal(y.data, torch.nn.functional.avg_pool2d(
        torch.tensor(xi), 2).numpy())
    with pytest.raises(NotImplementedError, match="int32"):
        F.avg_pool2d(Tensor(xi.astype(np.int32)), 2)


@pytest.mark.parametrize("size", [1, 3, (4, None), (None, 2), (5, 2), (7, 6), (10, 9),
                                  (3, 4)], ids=str)
@pytest.mark.parametrize("unbatched", [False, True])
def test_adaptive_avg_pool2d_matches_torch(torch, size, unbatched):
    """Non-divisible sizes give torch's overlapping bins ⌊i·S/n⌋ … ⌈(i+1)·S/n⌉."""
    (x,) = _arrays(12, (3, 7, 6) if unbatched else (2, 3, 7, 6))
    _compare(torch, lambda t: F.adaptive_avg_pool2d(t, size),
             lambda t: torch.nn.functional.adaptive_avg_pool2d(t, size), [x])
    _compare(torch, nn.AdaptiveAvgPool2d(size), torch.nn.AdaptiveAvgPool2d(size), [x])


def test_adaptive_avg_pool2d_to_nothing(torch):
    (x,) = _arrays(12, (2, 3, 7, 6))
    y = F.adaptive_avg_pool2d(Tensor(x), (0, 2))
    assert y.shape == tuple(torch.nn.functional.adaptive_avg_pool2d(torch.tensor(x),
                                                                     (0, 2)).shape)


def test_adaptive_avg_pool2d_float32(torch):
    (x,) = _arrays(13, (2, 3, 9, 7), dtype=np.float32)
    _compare(torch, lambda t: F.adaptive_avg_pool2d(t, (4, 3)),
             lambda t: torch.nn.functional.adaptive_avg_pool2d(t, (4, 3)), [x], tol=TOL32)


def test_pool_modules_match_torch(torch):
    (x,) = _arrays(14, (2, 3, 9, 8))
    pairs = [(nn.MaxPool2d(3, 2, 1, ceil_mode=True), torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True)),
             (nn.MaxPool2d(2), torch.nn.MaxPool2d(2)),
             (nn.AvgPool2d(3, 2, 1, True, False), torch.nn.AvgPool2d(3, 2, 1, True, False)),
             (nn.AvgPool2d((2, 3)), torch.nn.AvgPool2d((2, 3)))]
    for m, tm in pairs:
        _compare(torch, m, tm, [x])
    y, i = nn.MaxPool2d(2, return_indices=True)(Tensor(x))
    ty, ti = torch.nn.MaxPool2d(2, return_indices=True)(torch.tensor(x))
    np.testing.assert_array_equal(i.data, ti.numpy())


# --------------------------------------------------------------------------- Flatten
@pytest.mark.parametrize("dims", [(), (0, -1), (0, 1), (2, 3), (-2, -1), (1, 1), (3, 3),
                                  (1, -2)], ids=str)
def test_flatten_matches_torch(torch, dims):
    (x,) = _arrays(15, (2, 3, 4, 5))
    _compare(torch, nn.Flatten(*dims), torch.nn.Flatten(*dims), [x])


def test_flatten_errors_as_torch():
    with pytest.raises(IndexError):
        nn.Flatten()(Tensor(np.zeros(3)))
    with pytest.raises(IndexError):
        nn.Flatten(0, 3)(Tensor(np.zeros((2, 3, 4))))
    with pytest.raises((RuntimeError, ValueError), match="start_dim"):
        nn.Flatten(2, 1)(Tensor(np.zeros((2, 3, 4))))


# ------------------------------------------------------------------------- Embedding
@pytest.mark.parametrize("indices", [
    [[1, 2, 1], [0, 4, 1]],  # repeated indices: the gradient accumulates
    [3, 3, 3, 3],
    2,  # a 0-d index
    [[[0]], [[4]]],
], ids=["repeats", "one_row", "scalar", "3d"])
@pytest.mark.parametrize("kw", [{}, dict(padding_idx=1), dict(padding_idx=-2),
                                dict(scale_grad_by_freq=True),
                                dict(padding_idx=3, scale_grad_by_freq=True)], ids=str)
def test_embedding_matches_torch(torch, indices, kw):
    idx = np.array(indices)
    (w,) = _arrays(16, (5, 3))
    _compare(torch, lambda t: F.embedding(Tensor(idx), t, **kw),
             lambda t: torch.nn.functional.embedding(torch.tensor(idx), t, **kw), [w])


def test_embedding_module_repeated_indices_and_padding_row(torch):
    e = nn.Embedding(6, 4, padding_idx=2, dtype=np.float64)
    te = torch.nn.Embedding(6, 4, padding_idx=2)
    e.load_state_dict(te.state_dict())
    idx = np.array([[2, 5, 5], [5, 0, 2]], dtype=np.int32)
    y, ty = e(Tensor(idx)), te(torch.tensor(idx))
    np.testing.assert_allclose(y.data, _np(ty), **TOL64)
    y.sum().backward()
    ty.sum().backward()
    np.testing.assert_allclose(e.weight.grad, _np(te.weight.grad), **TOL64)
    np.testing.assert_array_equal(e.weight.grad[5], 3.0)  # three uses add up
    np.testing.assert_array_equal(e.weight.grad[2], 0.0)  # the padding row gets none


def test_embedding_from_pretrained(torch):
    (w,) = _arrays(17, (4, 3))
    e = nn.Embedding.from_pretrained(Tensor(w))
    te = torch.nn.Embedding.from_pretrained(torch.tensor(w))
    assert not e.weight.requires_grad and repr(e) == repr(te)
    np.testing.assert_array_equal(e(Tensor(np.array([3, 1]))).data, w[[3, 1]])
    assert nn.Embedding.from_pretrained(w, freeze=False).weight.requires_grad


# --------------------------------------------------------------------------- one_hot
@pytest.mark.parametrize("indices, n", [([1, 2], -1), ([1, 2], 5), ([[0, 3], [2, 2]], 4),
                                        ([], 3), (2, 3)], ids=str)
def test_one_hot_matches_torch(torch, indices, n):
    idx = np.array(indices, dtype=np.int64)
    y = F.one_hot(Tensor(idx), n)
    ty = torch.nn.functional.one_hot(torch.tensor(idx), n)
    assert y.dtype == np.int64 and not y.requires_grad
    np.testing.assert_array_equal(y.data, ty.numpy())


# ------------------------------------------------------------------------- gradcheck
def _leaves(seed, *shapes):
    return [Tensor(a, requires_grad=True) for a in _arrays(seed, *shapes)]


GRADCHECKS = {
    "conv2d": (lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=(1, 2),
                                        dilation=(1, 2), groups=2),
               ((2, 4, 5, 6), (4, 2, 3, 2), (4,))),
    "conv2d_same": (lambda x, w: F.conv2d(x, w, padding="same"), ((3, 4, 5), (2, 3, 2, 3))),
    "conv1d": (lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=1, dilation=2),
               ((2, 3, 8), (2, 3, 3), (2,))),
    "max_pool2d": (lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True), ((2, 2, 6, 5),)),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True,
                                          count_include_pad=False), ((2, 2, 6, 5),)),
    "adaptive_avg_pool2d": (lambda x: F.adaptive_avg_pool2d(x, (4, 3)), ((2, 2, 7, 5),)),
    # (padding_idx and scale_grad_by_freq change the gradient on purpose: not checked here)
    "embedding": (lambda w: F.embedding(np.array([[0, 2], [2, 3]]), w), ((4, 3),)),
}


@pytest.mark.parametrize("name", list(GRADCHECKS))
def test_gradcheck(name):
    fn, shapes = GRADCHECKS[name]
    assert tg.gradcheck(fn, _leaves(20, *shapes), atol=1e-6, rtol=1e-5)


SECOND_ORDER = {
    "conv2d": (lambda F_, x, w, b: F_.conv2d(x, w, b, stride=(2, 1), padding=1,
                                             dilation=(1, 2), groups=2),
               ((2, 4, 6, 5), (6, 2, 3, 2), (6,))),
    "conv1d": (lambda F_, x, w: F_.conv1d(x, w, padding="same"), ((4, 7), (3, 4, 4))),
    "max_pool2d": (lambda F_, x: F_.max_pool2d(x, 3, 2, 1, ceil_mode=True), ((2, 3, 6, 5),)),
    "avg_pool2d": (lambda F_, x: F_.avg_pool2d(x, 3, 2, 1, ceil_mode=True,
                                               count_include_pad=False), ((2, 3, 6, 5),)),
    "adaptive_avg_pool2d": (lambda F_, x: F_.adaptive_avg_pool2d(x, (4, 3)), ((2, 3, 6, 5),)),
}


@pytest.mark.parametrize("name", list(SECOND_ORDER))
def test_second_derivatives_match_torch(torch, name):
    """grad(create_graph=True) records the backward with unfold/fold nodes: the gradient of
    Σ (∂L/∂inputs)² matches torch's double backward."""
    fn, shapes = SECOND_ORDER[name]
    arrays = _arrays(21, *shapes)
    ts = [Tensor(a, requires_grad=True) for a in arrays]
    tts = [torch.tensor(a, requires_grad=True) for a in arrays]
    y, ty = fn(F, *ts), fn(torch.nn.functional, *tts)
    gs = tg.grad((y * y * y).sum(), ts, create_graph=True)
    tgs = torch.autograd.grad((ty * ty * ty).sum(), tts, create_graph=True)
    sum(((g * g).sum() for g in gs), Tensor(0.0)).backward()
    sum((g * g).sum() for g in tgs).backward()
    for t, tt in zip(ts, tts):
        np.testing.assert_allclose(t.grad, _np(tt.grad), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kw", [dict(padding_idx=1), dict(scale_grad_by_freq=True)], ids=str)
def test_embedding_second_derivatives_match_torch(torch, kw):
    idx = np.array([[1, 2, 1], [0, 4, 1]])
    (w,) = _arrays(22, (5, 3))
    W, tw = Tensor(w, requires_grad=True), torch.tensor(w, requires_grad=True)
    y = F.embedding(idx, W, **kw)
    ty = torch.nn.functional.embedding(torch.tensor(idx), tw, **kw)
    (g,) = tg.grad((y * y * y).sum(), [W], create_graph=True)
    (tgr,) = torch.autograd.grad((ty * ty * ty).sum(), tw, create_graph=True)
    (g * g).sum().backward()
    (tgr * tgr).sum().backward()
    np.testing.assert_allclose(W.grad, _np(tw.grad), rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------- hypothesis
@st.composite
def conv_settings(draw, batches=(None, 1, 2), stride_one=False):
    """A convolution's (nd, input shape, weight shape, bias?, keyword arguments): batch size
    from ``batches`` (None: unbatched); ``stride_one``: stride 1 only. (Also drawn by
    test_conv_fast.py.)"""
    nd = draw(st.sampled_from([1, 2]))
    groups = draw(st.sampled_from([1, 2, 3]))
    cin = groups * draw(st.integers(1, 2))
    cout = groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    same = draw(st.booleans()) and draw(st.booleans())
    stride = (1,) * nd if same or stride_one else tuple(draw(st.integers(1, 3))
                                                        for _ in range(nd))
    padding = "same" if same else tuple(draw(st.integers(0, 2)) for _ in range(nd))
    pads = (0,) * nd if same else padding
    size = tuple(max(draw(st.integers(1, 7)), d * (k - 1) + 1 - 2 * p)
                 for k, d, p in zip(kernel, dilation, pads))
    batch = draw(st.sampled_from(batches))
    shape = ((batch,) if batch is not None else ()) + (cin,) + size
    bias = draw(st.booleans())
    return nd, shape, (cout, cin // groups) + kernel, bias, dict(
        stride=stride, padding=padding, dilation=dilation, groups=groups)


@settings(max_examples=25, deadline=None)
@given(conv_settings(), st.integers(0, 2 ** 16))
def test_conv_property_matches_torch(torch, case, seed):
    nd, xs, ws, bias, kw = case
    arrays = _arrays(seed, xs, ws, (ws[0],))
    if not bias:
        arrays[2] = None
    name = f"conv{nd}d"
    _compare(torch, lambda x, w, b: getattr(F, name)(x, w, b, **kw),
             lambda x, w, b: getattr(torch.nn.functional, name)(x, w, b, **kw), arrays)


@st.composite
def pool_settings(draw):
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)  # torch's limit
    ceil_mode = draw(st.booleans())
    size = tuple(draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), 7))
                 for k, d, p in zip(kernel, dilation, padding))
    batch = draw(st.sampled_from([None, 1, 2]))
    shape = ((batch,) if batch is not None else ()) + (draw(st.integers(1, 2)),) + size
    return shape, dict(kernel_size=kernel, stride=stride, padding=padding,
                       dilation=dilation, ceil_mode=ceil_mode)


@settings(max_examples=25, deadline=None)
@given(pool_settings(), st.booleans(), st.booleans(), st.integers(0, 2 ** 16))
def test_pool_property_matches_torch(torch, case, count_include_pad, ties, seed):
    shape, kw = case
    (x,) = _arrays(seed, shape)
    if ties:  # three values: most windows hold several maxima
        x = np.sign(np.round(x))
    whole_window_in_padding = np.isinf(
        _np(torch.nn.functional.max_pool2d(torch.tensor(x), **kw))).any()
    _compare(torch, lambda t: F.max_pool2d(t, **kw),
             lambda t: torch.nn.functional.max_pool2d(t, **kw), [x],
             grad=not whole_window_in_padding)  # (see the test after the next)
    del kw["dilation"]  # avg_pool2d has none; without it the windows still fit
    _compare(torch, lambda t: F.avg_pool2d(t, count_include_pad=count_include_pad, **kw),
             lambda t: torch.nn.functional.avg_pool2d(t, count_include_pad=count_include_pad,
                                                      **kw), [x])


@settings(max_examples=25, deadline=None)
@given(st.tuples(st.integers(1, 9), st.integers(1, 9)),
       st.tuples(st.one_of(st.none(), st.integers(1, 10)), st.one_of(st.none(),
                                                                      st.integers(1, 10))),
       st.integers(0, 2 ** 16))
def test_adaptive_pool_property_matches_torch(torch, size, out, seed):
    (x,) = _arrays(seed, (2, 2) + size)
    _compare(torch, lambda t: F.adaptive_avg_pool2d(t, out),
             lambda t: torch.nn.functional.adaptive_avg_pool2d(t, out), [x])


# ----------------------------------------------------------------------------- errors
def _x(*shape, dtype=np.float64):
    return Tensor(np.zeros(shape, dtype=dtype))


ERRORS = {  # name: (call, exception types, pattern the message must match)
    "conv_channels": (lambda: nn.Conv2d(3, 16, 3)(_x(2, 4, 8, 8)), RuntimeError,
                      r"weight of shape \(16, 3, 3, 3\).*input of shape \(2, 4, 8, 8\).*3 "
                      r"channels, but got 4"),
    "conv_channels_unbatched": (lambda: nn.Conv2d(3, 16, 3)(_x(4, 8, 8)), ValueError,
                                r"input of shape \(4, 8, 8\)"),
    "conv_too_small": (lambda: nn.Conv2d(3, 16, 3)(_x(2, 3, 2, 2, dtype=np.float32)),
                       RuntimeError,
                       r"padded input size per channel: \(2 x 2\)\. Kernel size: \(3 x 3\).*"
                       r"\(2, 3, 2, 2\)"),
    "conv_too_small_dilated": (lambda: F.conv1d(_x(1, 2, 4), _x(1, 2, 2), dilation=4),
                               ValueError, r"Kernel size: \(5\)"),
    "conv_ndim": (lambda: nn.Conv2d(3, 16, 3)(_x(3, 8)), RuntimeError,
                  r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d.*\(3, 8\)"),
    "conv_ndim_5d": (lambda: nn.Conv2d(3, 16, 3)(_x(1, 2, 3, 8, 8)), ValueError,
                     r"\(1, 2, 3, 8, 8\)"),
    "conv1d_ndim": (lambda: nn.Conv1d(3, 4, 3)(_x(2, 3, 5, 5)), RuntimeError,
                    r"2D \(unbatched\) or 3D \(batched\) input to conv1d.*\(2, 3, 5, 5\)"),
    "groups_in": (lambda: nn.Conv2d(3, 16, 3, groups=2), ValueError,
                  r"in_channels must be divisible by groups \(in_channels=3, groups=2\)"),
    "groups_out": (lambda: nn.Conv2d(4, 15, 3, groups=2), ValueError,
                   r"out_channels must be divisible by groups \(out_channels=15"),
    "groups_zero": (lambda: nn.Conv2d(4, 4, 3, groups=0), ValueError, r"groups"),
    "groups_weight": (lambda: F.conv2d(_x(1, 4, 5, 5), _x(6, 2, 3, 3), groups=4),
                      RuntimeError, r"divisible by 4 at dimension 0.*\(6, 2, 3, 3\)"),
    "groups_weight_channels": (lambda: F.conv2d(_x(1, 4, 5, 5), _x(6, 2, 3, 3), groups=3),
                               RuntimeError, r"groups=3.*\(6, 2, 3, 3\).*\(1, 4, 5, 5\) to "
                               r"have 6 channels"),
    "bias_shape": (lambda: F.conv2d(_x(1, 4, 5, 5), _x(6, 4, 3, 3), _x(5)), RuntimeError,
                   r"bias to be 1-dimensional with 6 elements.*\(5,\)"),
    "weight_ndim": (lambda: F.conv2d(_x(1, 4, 5, 5), _x(6, 4, 3)), ValueError,
                    r"weight of shape \(6, 4, 3\) must be 4-D"),
    "dtype_mix": (lambda: F.conv2d(_x(1, 4, 5, 5, dtype=np.float32), _x(6, 4, 3, 3)),
                  RuntimeError, r"float32.*float64"),
    "bias_dtype": (lambda: F.conv2d(_x(1, 4, 5, 5), _x(6, 4, 3, 3),
                                    _x(6, dtype=np.float32)), ValueError, r"bias \(float32\)"),
    "bool_input": (lambda: F.conv2d(_x(1, 4, 5, 5, dtype=bool), _x(6, 4, 3, 3, dtype=bool)),
                   NotImplementedError, r"bool"),
    "same_strided": (lambda: nn.Conv2d(4, 4, 3, stride=2, padding="same"), ValueError,
                     r"padding='same' is not supported for strided convolutions"),
    "same_strided_f": (lambda: F.conv2d(_x(1, 4, 5, 5), _x(6, 4, 3, 3), stride=2,
                                        padding="same"), RuntimeError, r"strided"),
    "padding_string": (lambda: nn.Conv2d(4, 4, 3, padding="full"), ValueError,
                       r"Invalid padding string 'full'"),
    "padding_mode_bad": (lambda: nn.Conv2d(4, 4, 3, padding_mode="mirror"), ValueError,
                         r"padding_mode must be one of"),
    "padding_mode_reflect": (lambda: nn.Conv2d(4, 4, 3, padding_mode="reflect"),
                             NotImplementedError, r"padding_mode='reflect' is not supported"),
    "padding_mode_circular": (lambda: nn.Conv1d(4, 4, 3, padding_mode="circular"),
                              NotImplementedError, r"only 'zeros'"),
    "negative_padding": (lambda: F.conv2d(_x(1, 4, 5, 5), _x(6, 4, 3, 3), padding=-1),
                         RuntimeError, r"negative padding"),
    "zero_stride": (lambda: F.conv2d(_x(1, 4, 5, 5), _x(6, 4, 3, 3), stride=0),
                    RuntimeError, r"non-positive stride"),
    "zero_dilation": (lambda: F.conv2d(_x(1, 4, 5, 5), _x(6, 4, 3, 3), dilation=0),
                      RuntimeError, r"dilation should be greater than zero"),
    "stride_length": (lambda: F.conv2d(_x(1, 4, 5, 5), _x(6, 4, 3, 3), stride=(1, 2, 3)),
                      RuntimeError, r"list of 2 values.*stride=\[1, 2, 3\]"),
    "zero_kernel": (lambda: F.conv2d(_x(1, 4, 5, 5), _x(6, 4, 0, 3)), RuntimeError,
                    r"kernel size should be greater than zero.*\(6, 4, 0, 3\)"),
    "kernel_arity": (lambda: nn.Conv2d(4, 4, (3, 3, 3)), ValueError, r"tuple of 2 ints"),
    "input_type": (lambda: F.conv2d([[1.0]], _x(1, 1, 1, 1)), TypeError, r"list"),
    "maxpool_small": (lambda: F.max_pool2d(_x(1, 2, 5, 5), 6), RuntimeError,
                      r"Given input size: \(2x5x5\)\. Calculated output size: \(2x0x0\)"),
    "maxpool_pad": (lambda: F.max_pool2d(_x(1, 2, 5, 5), 3, 2, padding=2), RuntimeError,
                    r"pad should be at most half of effective kernel size, but got pad=2, "
                    r"kernel_size=3"),
    "maxpool_ndim": (lambda: nn.MaxPool2d(2)(_x(5, 5)), ValueError, r"shape \(5, 5\)"),
    "maxpool_empty_channels": (lambda: F.max_pool2d(_x(1, 0, 4, 4), 2), RuntimeError,
                               r"\(1, 0, 4, 4\)"),
    "maxpool_stride0": (lambda: F.max_pool2d(_x(1, 1, 4, 4), 2, 0), RuntimeError,
                        r"stride should be greater than zero"),
    "maxpool_kernel_arity": (lambda: F.max_pool2d(_x(1, 1, 4, 4), (2, 2, 2)), RuntimeError,
                             r"kernel_size must either be a single int, or a tuple of two"),
    "maxpool_bool": (lambda: F.max_pool2d(_x(1, 1, 4, 4, dtype=bool), 2),
                     NotImplementedError, r"bool"),
    "avgpool_small": (lambda: nn.AvgPool2d(6)(_x(2, 5, 5)), RuntimeError,
                      r"Output size is too small.*\(2, 5, 5\)"),
    "avgpool_pad": (lambda: F.avg_pool2d(_x(1, 1, 5, 5), 2, padding=2), ValueError,
                    r"pad should be at most half"),
    "avgpool_divisor": (lambda: F.avg_pool2d(_x(1, 1, 4, 4), 2, divisor_override=0),
                        RuntimeError, r"divisor must be not zero"),
    "adaptive_ndim": (lambda: F.adaptive_avg_pool2d(_x(5, 5), 2), RuntimeError,
                      r"Expected 3D or 4D tensor.*\(5, 5\)"),
    "adaptive_empty": (lambda: F.adaptive_avg_pool2d(_x(1, 2, 0, 5), 2), RuntimeError,
                       r"non-zero size for non-batch dimensions.*\(1, 2, 0, 5\)"),
    "adaptive_arity": (lambda: F.adaptive_avg_pool2d(_x(1, 2, 4, 4), (1, 2, 3)),
                       RuntimeError, r"output_size must be 2"),
    "adaptive_negative": (lambda: nn.AdaptiveAvgPool2d(-1)(_x(1, 2, 4, 4)), RuntimeError,
                          r"greater than or equal to 0"),
    "adaptive_int": (lambda: F.adaptive_avg_pool2d(_x(1, 1, 4, 4, dtype=np.int64), 2),
                     NotImplementedError, r"int64"),
    "embedding_range": (lambda: nn.Embedding(5, 3)(Tensor(np.array([1, 5]))), IndexError,
                        r"index 5 is out of range for an embedding of 5 rows.*\(5, 3\)"),
    "embedding_negative": (lambda: nn.Embedding(5, 3)(Tensor(np.array([-1]))), IndexError,
                           r"index -1 is out of range"),
    "embedding_float": (lambda: nn.Embedding(5, 3)(Tensor(np.array([1.0]))), RuntimeError,
                        r"integer indices.*float64"),
    "embedding_weight": (lambda: F.embedding(np.array([1]), _x(5)), RuntimeError,
                         r"'weight' must be 2-D.*\(5,\)"),
    "padding_idx": (lambda: nn.Embedding(5, 3, padding_idx=5), AssertionError,
                    r"Padding_idx must be within num_embeddings"),
    "padding_idx_negative": (lambda: F.embedding(np.array([1]), _x(5, 3), padding_idx=-6),
                             ValueError, r"padding_idx=-6 for 5 embeddings"),
    "max_norm": (lambda: nn.Embedding(5, 3, max_norm=1.0), NotImplementedError,
                 r"max_norm is not supported"),
    "sparse": (lambda: F.embedding(np.array([1]), _x(5, 3), sparse=True),
               NotImplementedError, r"sparse"),
    "one_hot_small": (lambda: F.one_hot(Tensor(np.array([1, 2])), 2), RuntimeError,
                      r"Class values must be smaller than num_classes"),
    "one_hot_negative": (lambda: F.one_hot(Tensor(np.array([-1, 2])), 5), RuntimeError,
                         r"non-negative"),
    "one_hot_float": (lambda: F.one_hot(Tensor(np.array([1.0]))), RuntimeError,
                      r"integer index"),
    "one_hot_empty": (lambda: F.one_hot(Tensor(np.zeros(0, np.int64))), RuntimeError,
                      r"Can not infer total number of classes from empty tensor"),
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_errors_name_the_problem(name):
    call, exc, pattern = ERRORS[name]
    with pytest.raises(exc, match=pattern):
        call()


@pytest.mark.parametrize("name", ["conv_channels", "conv_too_small", "maxpool_small",
                                  "adaptive_ndim", "embedding_range"])
def test_same_errors_in_torch(torch, name):
    """The cases above that torch also rejects (so these are not our inventions)."""
    calls = {
        "conv_channels": lambda: torch.nn.Conv2d(3, 16, 3)(torch.zeros(2, 4, 8, 8)),
        "conv_too_small": lambda: torch.nn.Conv2d(3, 16, 3)(torch.zeros(2, 3, 2, 2)),
        "maxpool_small": lambda: torch.nn.functional.max_pool2d(torch.zeros(1, 2, 5, 5), 6),
        "adaptive_ndim": lambda: torch.nn.functional.adaptive_avg_pool2d(torch.zeros(5, 5),
                                                                          2),
        "embedding_range": lambda: torch.nn.Embedding(5, 3)(torch.tensor([1, 5])),
    }
    with pytest.raises(ERRORS[name][1]):
        calls[name]()


def test_a_failed_call_records_nothing():
    m = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError):
        m(_x(2, 5, 8, 8))
    assert m.weight.grad is None and m.weight.grad_fn is None


# ------------------------------------------------------------------------------ reprs
REPRS = [
    ("Conv2d", (3, 16, 3), dict(padding=1)),
    ("Conv2d", (3, 16, 3), dict(stride=2, dilation=2, bias=False)),
    ("Conv2d", (4, 16, (3, 5)), dict(padding="same", groups=2)),
    ("Conv2d", (4, 16, 3), dict(padding="valid")),
    ("Conv2d", (4, 16, 3), dict(padding=(1, 2), stride=(2, 1))),
    ("Conv1d", (3, 16, 3), {}),
    ("Conv1d", (3, 16, 3), dict(padding="valid", dilation=2, groups=1)),
    ("MaxPool2d", (2,), {}),
    ("MaxPool2d", (3, 2, 1), dict(ceil_mode=True, dilation=2)),
    ("MaxPool2d", ((2, 3),), dict(stride=(1, 2))),
    ("AvgPool2d", (2,), {}),
    ("AvgPool2d", ((2, 3), 1, 1, True, False), {}),
    ("AdaptiveAvgPool2d", ((5, None),), {}),
    ("AdaptiveAvgPool2d", (3,), {}),
    ("Flatten", (), {}),
    ("Flatten", (0, 2), {}),
    ("Embedding", (10, 3), dict(padding_idx=0)),
    ("Embedding", (10, 3), dict(padding_idx=-1, scale_grad_by_freq=True)),
    ("Embedding", (10, 3), {}),
]


@pytest.mark.parametrize("cls, args, kw", REPRS, ids=lambda v: str(v))
def test_repr_as_torch(torch, cls, args, kw):
    assert repr(getattr(nn, cls)(*args, **kw)) == repr(getattr(torch.nn, cls)(*args, **kw))


def test_repr_example_from_the_contract():
    assert repr(nn.Conv2d(3, 16, 3, padding=1)) == (
        "Conv2d(3, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))")


# ------------------------------------------------------------------------ graph nodes
def test_each_layer_is_one_node():
    from tinygrad_bn import viz

    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32),
               requires_grad=True)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, rng=0)
    cases = [
        (conv, conv(x), (x, conv.weight, conv.bias), "conv2d", "3×3, stride 2, padding 1"),
        (None, nn.MaxPool2d(3, 2, 1)(x), (x,), "max_pool2d", "3×3, stride 2, padding 1"),
        (None, nn.AvgPool2d(2, count_include_pad=False)(x), (x,), "avg_pool2d",
         "2×2, stride 2, count_include_pad=False"),
        (None, nn.AdaptiveAvgPool2d((3, None))(x), (x,), "adaptive_avg_pool2d", "→ 3×8"),
    ]
    e = nn.Embedding(10, 3, padding_idx=0)
    cases.append((e, e(tg.tensor([[1, 2], [0, 0]])), (e.weight,), "embedding",
                  "10 rows, padding_idx 0"))
    c1 = nn.Conv1d(3, 6, 3, padding="same", groups=3)
    x1 = Tensor(np.ones((2, 3, 8), np.float32), requires_grad=True)
    cases.append((c1, c1(x1), (x1, c1.weight, c1.bias), "conv1d",
                  "kernel 3, padding same, groups 3"))
    for module, y, parents, op, detail in cases:
        node = y.grad_fn
        assert node.name == op and node.describe() == detail
        assert len(node.parents) == len(parents)
        assert all(p is q for p, q in zip(node.parents, parents))
        source = viz.draw_graph(y, params=module).source
        ops = re.findall(r"\top\d+ \[label=<<b>([^<]*)</b>", source)
        assert ops.count(op) == 1, source
        assert detail in source
    # the unbatched conv: one node as well (the batch axis is added inside the op)
    (x3,) = _arrays(30, (3, 8, 8))
    y3 = conv(Tensor(x3.astype(np.float32), requires_grad=True))
    assert y3.shape == (4, 4, 4) and y3.grad_fn.name == "conv2d"
    assert all(isinstance(p, Tensor) for p in y3.grad_fn.parents)


def test_layers_without_grad_record_nothing():
    with tg.no_grad():
        y = nn.Conv2d(3, 4, 3)(_x(1, 3, 5, 5, dtype=np.float32))
    assert y.grad_fn is None and not y.requires_grad


def test_saved_input_changed_in_place_makes_backward_raise():
    conv = nn.Conv2d(2, 2, 3, dtype=np.float64)
    x = Tensor(np.ones((1, 2, 4, 4)))  # saved: dW reads it
    y = conv(x)
    x += 1.0
    with pytest.raises(RuntimeError, match="conv2d"):
        y.sum().backward()


# ------------------------------------------------------------------------ performance
def test_no_python_loop_per_pixel():
    """A 64×64 conv2d of batch 8, 16 → 16 channels, forward and backward: loops run over
    the 9 kernel offsets only, so this takes tens of milliseconds (a per-pixel loop would
    take seconds)."""
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((8, 16, 64, 64)).astype(np.float32), requires_grad=True)
    conv = nn.Conv2d(16, 16, 3, padding=1, rng=0)
    pool = nn.MaxPool2d(2)
    start = time.perf_counter()
    y = pool(conv(x))
    y.sum().backward()
    elapsed = time.perf_counter() - start
    assert x.grad.shape == x.shape and conv.weight.grad.shape == conv.weight.shape
    assert elapsed < 5.0, f"conv2d + max_pool2d forward+backward took {elapsed:.2f} s"
