"""Edge cases of the norms against torch 2.13, for both families (composed ``nn.functional``
and hand-derived ``analytic``) and the modules (``analytic=False/True``):

1. one value per statistic (GroupNorm, InstanceNorm, BatchNorm),
2. eps ≤ 0 in training BatchNorm,
3. empty batches (outputs, running statistics, gradients),
4. float16 inputs (float32 statistics, float16 outputs),
5. mixed dtypes (accepted or rejected exactly where torch does),
6. Principle 2: a failed call (or optimizer step) changes nothing, with injected failures; a
   Ctrl-C between the writes of a call or step lets every write finish, then interrupts.

torch is the oracle: every expected value, dtype and error below comes from running it.
"""
import signal

import numpy as np
import pytest

from tinygrad_bn import Tensor, analytic, nn, optim
from tinygrad_bn.core import ops
from tinygrad_bn.nn import functional as F
from tinygrad_bn.nn.module import Parameter

FAMILIES = {"composed": F, "analytic": analytic}
# torch warns that a float16 rms_norm with a float32 weight cannot use its fused kernel
pytestmark = pytest.mark.filterwarnings("ignore:Mismatch dtype:UserWarning")
F16, F32, F64 = np.float16, np.float32, np.float64
TOL = {F64: dict(rtol=1e-10, atol=1e-10), F32: dict(rtol=1e-4, atol=1e-4),
       F16: dict(rtol=4e-3, atol=4e-3)}


@pytest.fixture(params=list(FAMILIES))
def fam(request):
    return FAMILIES[request.param]


@pytest.fixture(params=[False, True], ids=["composed", "analytic"])
def fused(request):
    return request.param


def _tt(torch, a, grad=False):
    """A torch tensor with ``a``'s values and dtype."""
    return None if a is None else torch.tensor(np.asarray(a)).requires_grad_(grad)


def _ours(a, grad=False):
    return None if a is None else Tensor(np.asarray(a), requires_grad=grad)


def _np(t):
    return t.detach().numpy()


def _run_both(torch, fam, name, x, params, *args, g=None, **kwargs):
    """Call ``name`` on ours and torch with ``params`` (weight, bias: requires grad; other
    arrays constant) and backward with ``g``; returns ((y, grads), (yt, grads_t))."""
    xo, xt = _ours(x, True), _tt(torch, x, True)
    po = [_ours(p, grad=i < 2) for i, p in enumerate(params)]
    pt = [_tt(torch, p, grad=i < 2) for i, p in enumerate(params)]
    yo = getattr(fam, name)(xo, *args, **dict(kwargs, **_named(name, po)))
    yt = getattr(torch.nn.functional, name)(xt, *_targs(args), **dict(kwargs, **_named(name, pt)))
    g = np.ones(yo.shape, yo.dtype) if g is None else g
    yo.backward(g)
    yt.backward(_tt(torch, g))
    grads_o = [xo.grad] + [None if p is None else p.grad for p in po[:2]]
    grads_t = [None if xt.grad is None else _np(xt.grad)] + \
        [None if p is None or p.grad is None else _np(p.grad) for p in pt[:2]]
    return (yo, grads_o), (yt, grads_t)


def _targs(args):
    return tuple(tuple(a) if isinstance(a, list) else a for a in args)


def _named(name, ps):
    keys = {"batch_norm": ("weight", "bias", "running_mean", "running_var"),
            "instance_norm": ("weight", "bias", "running_mean", "running_var"),
            "layer_norm": ("weight", "bias"), "group_norm": ("weight", "bias"),
            "rms_norm": ("weight",)}[name]
    return dict(zip(keys, ps))


def _same(ours, theirs, dtype):
    (yo, go), (yt, gt) = ours, theirs
    assert yo.dtype == _np(yt).dtype and yo.shape == tuple(yt.shape)
    np.testing.assert_allclose(yo.data.astype(F64), _np(yt).astype(F64), **TOL[dtype])
    for a, b in zip(go, gt):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_allclose(a.astype(F64), b.astype(F64), **TOL[dtype])


# ------------------------------------------------------------ 1. one value per statistic
@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("shape,groups", [((2, 4), 4), ((2, 4, 1), 4), ((3, 6, 1, 1), 6),
                                          ((1, 8), 4)])
def test_group_norm_one_value_per_group_is_allowed_as_in_torch(torch, fam, dtype, shape,
                                                               groups):
    """torch only raises when N·(C/G)·L == 1; a group of one value gives x̂ = 0, y = β."""
    rng = np.random.default_rng(0)
    c = shape[1]
    x = rng.standard_normal(shape).astype(dtype)
    w, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    _same(*_run_both(torch, fam, "group_norm", x, [w, b], groups, g=g), dtype)


@pytest.mark.parametrize("shape,groups", [((1, 4), 4), ((1, 4, 1), 4), ((1, 2, 1, 1), 2)])
def test_group_norm_with_a_single_value_raises_like_torch(torch, fam, fused, shape, groups):
    x = np.ones(shape)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel") as e:
        torch.nn.functional.group_norm(_tt(torch, x), groups)
    with pytest.raises(ValueError, match=r"Expected more than 1 value per channel.*\[1, "):
        fam.group_norm(Tensor(x), groups)
    m = nn.GroupNorm(groups, shape[1], dtype=F64, analytic=fused)
    for mode in (m.train, m.eval):  # torch checks regardless of the mode
        mode()
        with pytest.raises(ValueError, match="more than 1 value"):
            m(Tensor(x))
    assert "[1, " in str(e.value)


@pytest.mark.parametrize("shape", [(2, 3, 1), (2, 3, 1, 1), (0, 3, 1)])
def test_instance_norm_one_value_per_channel_raises(torch, fam, fused, shape):
    x = np.ones(shape)
    rm, rv = np.zeros(3), np.ones(3)
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        torch.nn.functional.instance_norm(_tt(torch, x), _tt(torch, rm), _tt(torch, rv))
    with pytest.raises(ValueError, match="Expected more than 1 spatial element when training"):
        fam.instance_norm(Tensor(x), rm, rv)
    assert np.all(rm == 0) and np.all(rv == 1)
    # without input statistics there is nothing to compute: fine in torch and here
    y = fam.instance_norm(Tensor(x), rm, rv, use_input_stats=False)
    assert y.shape == shape
    cls = nn.InstanceNorm1d if len(shape) == 3 else nn.InstanceNorm2d
    m = cls(3, dtype=F64, analytic=fused)
    for mode in (m.train, m.eval):  # untracked: input statistics in eval mode too
        mode()
        with pytest.raises(ValueError, match="spatial"):
            m(Tensor(x))
    m = cls(3, track_running_stats=True, dtype=F64, analytic=fused).eval()
    assert m(Tensor(x)).shape == shape


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1), (1, 3, 1, 1)])
def test_batch_norm_of_one_value_per_channel_raises(torch, fam, fused, shape):
    x = np.ones(shape)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        torch.nn.functional.batch_norm(_tt(torch, x), None, None, training=True)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        fam.batch_norm(Tensor(x), None, None, training=True)
    m = (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(3, dtype=F64, analytic=fused)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        m(Tensor(x))
    assert int(m.num_batches_tracked.data) == 0


# ------------------------------------------------------------------------------ 2. eps
@pytest.mark.parametrize("eps", [0.0, -1.0, 0])
def test_training_batch_norm_needs_positive_eps(torch, fam, fused, eps):
    x = np.random.default_rng(1).standard_normal((4, 3))
    with pytest.raises(ValueError, match="eps must be positive during training"):
        torch.nn.functional.batch_norm(_tt(torch, x), None, None, training=True, eps=eps)
    rm, rv = np.zeros(3), np.ones(3)
    with pytest.raises(ValueError, match="batch_norm eps must be positive during training"):
        fam.batch_norm(Tensor(x), rm, rv, training=True, eps=eps)
    assert np.all(rm == 0) and np.all(rv == 1)
    m = nn.BatchNorm1d(3, eps=eps, dtype=F64, analytic=fused)
    with pytest.raises(ValueError, match="positive during training"):
        m(Tensor(x))
    assert int(m.num_batches_tracked.data) == 0 and np.all(m.running_mean.data == 0)


def test_eval_batch_norm_accepts_eps_0_and_rejects_negative_eps(torch, fam):
    rng = np.random.default_rng(2)
    x, rm, rv = rng.standard_normal((4, 3)), rng.standard_normal(3), rng.uniform(.5, 2, 3)
    yt = torch.nn.functional.batch_norm(_tt(torch, x), _tt(torch, rm), _tt(torch, rv), eps=0.0)
    np.testing.assert_allclose(fam.batch_norm(Tensor(x), rm, rv, eps=0.0).data, _np(yt),
                               **TOL[F64])
    with pytest.raises(ValueError, match="eps must be non-negative"):
        torch.nn.functional.batch_norm(_tt(torch, x), _tt(torch, rm), _tt(torch, rv), eps=-1.)
    with pytest.raises(ValueError, match="batch_norm eps must be non-negative"):
        fam.batch_norm(Tensor(x), rm, rv, eps=-1.0)


# ---------------------------------------------------------------------- 3. empty batches
@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(0, 3), (0, 3, 4), (2, 3, 0), (0, 3, 2, 2)])
def test_batch_norm_of_an_empty_batch(torch, fam, dtype, training, shape):
    """Empty output; running statistics untouched; zero dγ, dβ (torch)."""
    rng = np.random.default_rng(3)
    w, b = rng.standard_normal(3).astype(dtype), rng.standard_normal(3).astype(dtype)
    rm, rv = rng.standard_normal(3).astype(dtype), rng.uniform(.5, 2, 3).astype(dtype)
    rmt, rvt = _tt(torch, rm), _tt(torch, rv)
    x = np.zeros(shape, dtype)
    xo, xt = Tensor(x, requires_grad=True), _tt(torch, x, True)
    wo, bo = Tensor(w, requires_grad=True), Tensor(b, requires_grad=True)
    wt, bt = _tt(torch, w, True), _tt(torch, b, True)
    rm0, rv0 = rm.copy(), rv.copy()
    yo = fam.batch_norm(xo, rm, rv, wo, bo, training=training)
    yt = torch.nn.functional.batch_norm(xt, rmt, rvt, wt, bt, training=training)
    assert yo.shape == shape and yo.dtype == dtype == _np(yt).dtype
    yo.sum().backward()
    yt.sum().backward()
    np.testing.assert_array_equal(rm, rm0)
    np.testing.assert_array_equal(rv, rv0)
    np.testing.assert_array_equal(_np(rmt), rm0)
    assert xo.grad.shape == shape
    np.testing.assert_array_equal(wo.grad, _np(wt.grad))
    np.testing.assert_array_equal(bo.grad, _np(bt.grad))
    np.testing.assert_array_equal(wo.grad, 0)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm_module_counts_an_empty_batch_like_torch(torch, fused, momentum):
    """torch increments num_batches_tracked for an empty batch (so momentum=None's next
    average weighs differently) and leaves the statistics alone."""
    rng = np.random.default_rng(4)
    ours = nn.BatchNorm1d(3, momentum=momentum, dtype=F64, analytic=fused)
    theirs = torch.nn.BatchNorm1d(3, momentum=momentum)
    for x in (np.zeros((0, 3)), rng.standard_normal((5, 3)), np.zeros((0, 3, 2)),
              rng.standard_normal((4, 3))):
        yo, yt = ours(Tensor(x)), theirs(_tt(torch, x))
        assert yo.shape == tuple(yt.shape)
        for k, v in theirs.state_dict().items():
            np.testing.assert_allclose(ours.state_dict()[k], v.numpy(), **TOL[F64])
    assert int(ours.num_batches_tracked.data) == 4


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("name,shape,args,pshape", [
    ("layer_norm", (0, 4), ([4],), (4,)),
    ("layer_norm", (2, 0, 4), ([4],), (4,)),
    ("layer_norm", (3, 0), ([0],), (0,)),
    ("rms_norm", (0, 4), ([4],), (4,)),
    ("group_norm", (0, 4), (2,), (4,)),
    ("group_norm", (0, 4, 3), (2,), (4,)),
    ("group_norm", (0, 4, 1), (4,), (4,)),
    ("instance_norm", (2, 4, 0), (), (4,)),
])
def test_other_norms_of_empty_inputs(torch, fam, dtype, name, shape, args, pshape):
    rng = np.random.default_rng(5)
    w = rng.standard_normal(pshape).astype(dtype)
    b = None if name == "rms_norm" else rng.standard_normal(pshape).astype(dtype)
    _same(*_run_both(torch, fam, name, np.zeros(shape, dtype), [w, b], *args), dtype)


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("use_input_stats", [True, False])
def test_instance_norm_of_an_empty_batch(torch, fam, dtype, use_input_stats):
    """torch: N = 0 with input statistics writes nan into the running statistics (the mean
    over no samples); with a weight or bias it raises IndexError. L = 0 leaves them alone."""
    rng = np.random.default_rng(6)
    rm, rv = rng.standard_normal(4).astype(dtype), rng.uniform(.5, 2, 4).astype(dtype)
    rmt, rvt = _tt(torch, rm), _tt(torch, rv)
    x = np.zeros((0, 4, 3), dtype)
    yt = torch.nn.functional.instance_norm(_tt(torch, x), rmt, rvt,
                                           use_input_stats=use_input_stats)
    yo = fam.instance_norm(Tensor(x), rm, rv, use_input_stats=use_input_stats)
    assert yo.shape == tuple(yt.shape) and yo.dtype == dtype
    np.testing.assert_array_equal(rm, _np(rmt))  # nan where torch has nan
    np.testing.assert_array_equal(rv, _np(rvt))
    assert np.isnan(rm).all() == use_input_stats
    w = np.ones(4, dtype)
    with pytest.raises(IndexError):
        torch.nn.functional.instance_norm(_tt(torch, x), None, None, _tt(torch, w))
    rm2 = np.zeros(4, dtype)
    for kw in ({"weight": w}, {"bias": w}):
        with pytest.raises(IndexError, match="empty batch"):
            fam.instance_norm(Tensor(x), rm2, np.ones(4, dtype), **kw,
                              use_input_stats=use_input_stats)
    np.testing.assert_array_equal(rm2, 0)
    # L = 0: nothing normalized, running statistics unchanged (torch)
    rm3, rv3 = rm2.copy(), np.ones(4, dtype)
    rm3t, rv3t = _tt(torch, rm3), _tt(torch, rv3)
    torch.nn.functional.instance_norm(_tt(torch, np.zeros((2, 4, 0), dtype)), rm3t, rv3t)
    fam.instance_norm(Tensor(np.zeros((2, 4, 0), dtype)), rm3, rv3)
    np.testing.assert_array_equal(rm3, _np(rm3t))
    np.testing.assert_array_equal(rv3, _np(rv3t))


def test_norm_modules_of_empty_batches(torch, fused):
    x = np.zeros((0, 4, 3))
    ours = nn.InstanceNorm1d(4, track_running_stats=True, dtype=F64, analytic=fused)
    theirs = torch.nn.InstanceNorm1d(4, track_running_stats=True)
    ours(Tensor(x)), theirs(_tt(torch, x))
    for k, v in theirs.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[k], v.numpy())  # nan, nan, 0
    for cls, args in ((nn.GroupNorm, (2, 4)), (nn.LayerNorm, (3,)), (nn.RMSNorm, (3,)),
                      (nn.BatchNorm1d, (4,))):
        m = cls(*args, dtype=F64, analytic=fused)
        xo = Tensor(x, requires_grad=True)
        y = m(xo)
        assert y.shape == x.shape
        y.sum().backward()
        assert xo.grad.shape == x.shape
        for p in m.parameters():
            np.testing.assert_array_equal(p.grad, 0)


# --------------------------------------------------------------------------- 4. float16
def test_float16_batch_norm_keeps_float32_statistics(torch, fam, fused):
    rng = np.random.default_rng(7)
    # 4096 values of about 20: their float16 sum would overflow (inf)
    x = (rng.standard_normal((4096, 3)) + 20).astype(F16)
    rm, rv = np.zeros(3, F32), np.ones(3, F32)
    rmt, rvt = _tt(torch, rm), _tt(torch, rv)
    yt = torch.nn.functional.batch_norm(_tt(torch, x), rmt, rvt, training=True)
    y = fam.batch_norm(Tensor(x), rm, rv, training=True)
    assert y.dtype == F16 and np.isfinite(y.data).all()
    np.testing.assert_allclose(y.data.astype(F32), _np(yt).astype(F32), **TOL[F16])
    assert rm.dtype == F32 and rv.dtype == F32
    np.testing.assert_allclose(rm, _np(rmt), rtol=1e-6)
    np.testing.assert_allclose(rv, _np(rvt), rtol=1e-5)
    # std 300: squared deviations overflow float16; the output must not collapse to β
    x8 = (rng.standard_normal((8, 3)) * 300).astype(F16)
    w, b = np.ones(3, F32), np.full(3, 0.5, F32)
    g = np.arange(24, dtype=F16).reshape(8, 3)
    ours, theirs = _run_both(torch, fam, "batch_norm", x8, [w, b, None, None], training=True,
                             g=g)
    assert not np.all(ours[0].data == F16(0.5))
    _same(ours, theirs, F16)
    # float16 running statistics (and weight) stay float16
    rm16, rv16 = np.zeros(3, F16), np.ones(3, F16)
    rm16t, rv16t = _tt(torch, rm16), _tt(torch, rv16)
    fam.batch_norm(Tensor(x), rm16, rv16, training=True)
    torch.nn.functional.batch_norm(_tt(torch, x), rm16t, rv16t, training=True)
    assert rm16.dtype == F16
    np.testing.assert_allclose(rm16, _np(rm16t), rtol=1e-3)
    np.testing.assert_allclose(rv16, _np(rv16t), rtol=1e-3)
    # eval with float32 running statistics
    y = fam.batch_norm(Tensor(x), rm, rv)
    yt = torch.nn.functional.batch_norm(_tt(torch, x), rmt, rvt)
    assert y.dtype == F16
    np.testing.assert_allclose(y.data.astype(F32), _np(yt).astype(F32), **TOL[F16])


def test_float16_input_to_a_float32_batchnorm_module(torch, fused):
    """Buffers and parameters stay float32 (torch's rule for a float16 input on the CPU)."""
    rng = np.random.default_rng(8)
    ours = nn.BatchNorm1d(3, dtype=F32, analytic=fused)
    theirs = torch.nn.BatchNorm1d(3, dtype=torch.float32)
    x = (rng.standard_normal((64, 3)) * 300 + 20).astype(F16)
    xo, xt = Tensor(x, requires_grad=True), _tt(torch, x, True)
    yo, yt = ours(xo), theirs(xt)
    assert yo.dtype == F16
    np.testing.assert_allclose(yo.data.astype(F32), _np(yt).astype(F32), **TOL[F16])
    yo.sum().backward()
    yt.sum().backward()
    assert xo.grad.dtype == F16 and ours.weight.grad.dtype == F32
    np.testing.assert_allclose(ours.weight.grad, _np(theirs.weight.grad), atol=2e-2)
    for k, v in theirs.state_dict().items():
        assert ours.state_dict()[k].dtype == v.numpy().dtype
        np.testing.assert_allclose(ours.state_dict()[k], v.numpy(), rtol=1e-5)


@pytest.mark.parametrize("name,shape,args,pdtype", [
    ("layer_norm", (2, 4096), ([4096],), F16),
    ("layer_norm", (4, 8), ([8],), F32),
    ("group_norm", (2, 4, 1024), (2,), F16),
    ("group_norm", (2, 4, 3), (2,), F32),
    ("instance_norm", (2, 2, 4096), (), F16),
    ("instance_norm", (2, 2, 8), (), F32),
    ("rms_norm", (2, 4096), ([4096],), F16),
    ("rms_norm", (4, 8), ([8],), F32),
])
@pytest.mark.parametrize("spread", [1.0, 300.0])
def test_float16_other_norms(torch, fam, name, shape, args, pdtype, spread):
    rng = np.random.default_rng(9)
    x = (rng.standard_normal(shape) * spread + 20).astype(F16)
    pshape = (shape[-1],) if name in ("layer_norm", "rms_norm") else (shape[1],)
    w = rng.uniform(.5, 1.5, pshape).astype(pdtype)
    b = None if name == "rms_norm" else rng.standard_normal(pshape).astype(pdtype)
    ours, theirs = _run_both(torch, fam, name, x, [w, b], *args)
    assert np.isfinite(ours[0].data).all()
    (yo, go), (yt, gt) = ours, theirs
    assert yo.dtype == F16 and _np(yt).dtype == F16
    # some of torch's float16 CPU kernels round more than once (instance_norm's output of
    # 4096 values is off by ~0.01, LayerNorm's dx by ~0.02): compare both with the float64
    # result of the same float16 values and ask ours to be at least as close as torch's
    _, exact = _run_both(torch, fam, name, x.astype(F64),
                         [None if p is None else p.astype(F64) for p in (w, b)], *args)
    ye = _np(exact[0])
    err_ours, err_torch = np.abs(yo.data - ye).max(), np.abs(_np(yt) - ye).max()
    assert err_ours <= err_torch + 1e-3 * np.abs(ye).max(), (err_ours, err_torch)
    for a, t, e in zip(go, gt, exact[1]):
        if a is None:  # rms_norm has no bias
            assert t is None
            continue
        assert a.dtype == t.dtype
        err_ours = np.abs(a.astype(F64) - e).max()
        err_torch = np.abs(t.astype(F64) - e).max()
        assert err_ours <= err_torch + 2e-3 * (1 + np.abs(e).max()), (err_ours, err_torch)


# ------------------------------------------------------------------------ 5. mixed dtypes
_DT = {"h": F16, "f": F32, "d": F64, None: None}


def _torch_accepts(torch, fn):
    try:
        return fn(), None
    except RuntimeError as e:
        return None, e


@pytest.mark.parametrize("x_dt", ["h", "f", "d"])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_mixed_dtypes_as_torch(torch, fam, x_dt, training):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((6, 3)).astype(_DT[x_dt])
    for w_dt in (None, "h", "f", "d"):
        for r_dt in (None, "h", "f", "d"):
            if r_dt is None and not training:
                continue
            w = None if w_dt is None else rng.uniform(.5, 1.5, 3).astype(_DT[w_dt])
            rm = None if r_dt is None else np.zeros(3, _DT[r_dt])
            rv = None if r_dt is None else np.ones(3, _DT[r_dt])
            yt, err = _torch_accepts(torch, lambda: torch.nn.functional.batch_norm(
                _tt(torch, x), _tt(torch, rm), _tt(torch, rv), _tt(torch, w), _tt(torch, w),
                training=training))
            snap = None if rm is None else rm.copy()
            if err is not None:
                with pytest.raises(RuntimeError, match="mixed dtype") as e:
                    fam.batch_norm(Tensor(x), rm, rv, w, w, training=training)
                assert isinstance(e.value, ValueError)
                if rm is not None:
                    np.testing.assert_array_equal(rm, snap)
            else:
                y = fam.batch_norm(Tensor(x), rm, rv, w, w, training=training)
                assert y.dtype == _np(yt).dtype, (x_dt, w_dt, r_dt)
                np.testing.assert_allclose(y.data.astype(F64), _np(yt).astype(F64),
                                           **TOL[_DT[x_dt]])


@pytest.mark.parametrize("name", ["layer_norm", "group_norm", "instance_norm", "rms_norm"])
def test_other_norms_mixed_dtypes_as_torch(torch, fam, name):
    rng = np.random.default_rng(11)
    args = {"layer_norm": ([3],), "group_norm": (2,), "instance_norm": (),
            "rms_norm": ([3],)}[name]
    pshape = (3,) if name in ("layer_norm", "rms_norm") else (4,)
    for x_dt in "hfd":
        x = rng.standard_normal((2, 4, 3)).astype(_DT[x_dt])
        for w_dt in "hfd":
            for b_dt in ((None,) if name == "rms_norm" else (None, "h", "f", "d")):
                w = rng.uniform(.5, 1.5, pshape).astype(_DT[w_dt])
                b = None if b_dt is None else rng.standard_normal(pshape).astype(_DT[b_dt])
                params = [w] if name == "rms_norm" else [w, b]
                kw = _named(name, params)
                yt, err = _torch_accepts(torch, lambda: getattr(torch.nn.functional, name)(
                    _tt(torch, x), *_targs(args), **{k: _tt(torch, v) for k, v in kw.items()}))
                if err is not None:
                    with pytest.raises(RuntimeError, match="mixed dtype"):
                        getattr(fam, name)(Tensor(x), *args, **kw)
                else:
                    y = getattr(fam, name)(Tensor(x), *args, **kw)
                    assert y.dtype == _np(yt).dtype, (name, x_dt, w_dt, b_dt)
                    np.testing.assert_allclose(y.data.astype(F64), _np(yt).astype(F64),
                                               rtol=4e-3, atol=4e-3)


def test_instance_norm_running_stats_of_any_float_dtype(torch, fam):
    """torch's instance_norm does not check the running statistics' dtype."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 2, 5)).astype(F32)
    rm, rv = np.zeros(2, F64), np.ones(2, F64)
    rmt, rvt = _tt(torch, rm), _tt(torch, rv)
    yo = fam.instance_norm(Tensor(x), rm, rv)
    yt = torch.nn.functional.instance_norm(_tt(torch, x), rmt, rvt)
    assert yo.dtype == F32 and rm.dtype == F64
    np.testing.assert_allclose(yo.data, _np(yt), **TOL[F32])
    np.testing.assert_allclose(rm, _np(rmt), rtol=1e-6)
    np.testing.assert_allclose(rv, _np(rvt), rtol=1e-6)


# ------------------------------------------------- 6. a failed call changes nothing
def _bn_state(dtype=F64):
    rng = np.random.default_rng(13)
    return (rng.standard_normal((6, 3)).astype(dtype), rng.standard_normal(3).astype(dtype),
            rng.uniform(.5, 2, 3).astype(dtype))


@pytest.mark.parametrize("as_tensor", [False, True])
def test_read_only_running_var_changes_nothing(fam, as_tensor):
    x, rm, rv = _bn_state()
    rv.flags.writeable = False
    rm0 = rm.copy()
    rmx, rvx = (Tensor(rm), Tensor(rv)) if as_tensor else (rm, rv)
    if as_tensor:
        rvx.data.flags.writeable = False
        rm0 = rmx.data.copy()
    w = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(ValueError, match="running_var is read-only"):
        fam.batch_norm(Tensor(x), rmx, rvx, w, None, training=True)
    with pytest.raises(ValueError, match="read-only"):
        fam.instance_norm(Tensor(x.reshape(2, 3, 3)), rmx, rvx)
    np.testing.assert_array_equal(rmx.data if as_tensor else rm, rm0)
    assert w.grad is None
    # evaluation does not write: a read-only buffer is fine there
    fam.batch_norm(Tensor(x), rmx, rvx, w, None)


@pytest.mark.parametrize("name", ["batch_norm", "instance_norm"])
def test_interrupt_between_the_two_running_updates_writes_both(interrupt_on_write, monkeypatch,
                                                              fam, name):
    """Ctrl-C after the running mean was written: the running variance is written too, then
    KeyboardInterrupt is raised (the statistics never disagree). (BatchNorm's compiled loop
    writes both in one call, which no signal handler splits; this is the NumPy path.)"""
    monkeypatch.setattr(ops, "_KERNELS", False)
    x, rm, rv = _bn_state()
    x = x.reshape(2, 3, 3) if name == "instance_norm" else x

    def call(rm, rv):
        if name == "batch_norm":
            return fam.batch_norm(Tensor(x), rm, rv, training=True)
        return fam.instance_norm(Tensor(x), rm, rv)
    rm_ref, rv_ref = rm.copy(), rv.copy()
    call(rm_ref, rv_ref)
    calls = interrupt_on_write(2)
    with pytest.raises(KeyboardInterrupt):
        call(rm, rv)
    assert len(calls) == 2
    np.testing.assert_array_equal(rm, rm_ref)
    np.testing.assert_array_equal(rv, rv_ref)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def _module_state(m):
    return {k: v.copy() for k, v in m.state_dict().items()}


def _assert_module_unchanged(m, before):
    after = m.state_dict()
    assert after.keys() == before.keys()
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    for p in m.parameters():
        assert p.grad is None


@pytest.mark.parametrize("path,nth", [("numpy", 1), ("numpy", 2), ("numpy", 3), ("loop", 3)])
def test_batchnorm_module_updates_stats_and_count_together(monkeypatch, interrupt_on_write, fused,
                                                          path, nth):
    """running_mean, running_var and num_batches_tracked change together: Ctrl-C at any of
    the writes (the norm writes the two statistics, the module then counts the batch) is held
    until all three are written, then raised. nth 3: right after the norm returned, before
    the count. The NumPy path writes the statistics one by one (``commit``); the compiled
    loop writes both in one call, which no signal splits."""
    loops = ops._loops() if path == "loop" else None
    if path == "loop" and loops is None:
        pytest.skip("numba is not installed")
    if loops is None:
        monkeypatch.setattr(ops, "_KERNELS", False)
    m, ref = (nn.BatchNorm1d(3, momentum=None, dtype=F64, analytic=fused) for _ in range(2))
    x, _, _ = _bn_state()
    for mod in (m, ref):
        mod(Tensor(x))  # a first batch, so that nothing is at its initial value
    before = _module_state(m)
    ref(Tensor(x * 2 + 1))
    want = ref.state_dict()
    calls = interrupt_on_write(nth)
    if loops is not None:  # count the loop's calls instead
        real = loops.running_stats_
        monkeypatch.setattr(loops, "running_stats_", lambda *a: (calls.append(1), real(*a)))
    if nth == 3:
        norm = m._norm

        def norm_then_ctrl_c(*args):
            y = norm(*args)
            signal.raise_signal(signal.SIGINT)
            return y
        monkeypatch.setattr(m, "_norm", norm_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        m(Tensor(x * 2 + 1))
    after = m.state_dict()
    # both statistics by commit, or one call of the loop (the count is added in place)
    assert len(calls) == (2 if loops is None else 1)
    for k in want:
        np.testing.assert_array_equal(after[k], want[k], err_msg=k)
    for k in ("running_mean", "running_var", "num_batches_tracked"):
        assert not np.array_equal(want[k], before[k]), k
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.undo()
    m(Tensor(x * 2 + 1))
    assert int(m.num_batches_tracked.data) == 3


@pytest.mark.parametrize("breakage", ["weight shape", "read-only running_var",
                                      "read-only num_batches_tracked", "mixed dtype"])
def test_failed_module_call_changes_nothing(fused, breakage):
    m = nn.BatchNorm1d(3, dtype=F64, analytic=fused)
    x, _, _ = _bn_state()
    m(Tensor(x))
    if breakage == "weight shape":
        m.weight = Parameter(np.ones(4))
    elif breakage == "read-only running_var":
        m.running_var.data.flags.writeable = False
    elif breakage == "read-only num_batches_tracked":
        m.num_batches_tracked.data.flags.writeable = False
    else:
        m.weight = Parameter(np.ones(3, F32))
    before = _module_state(m)
    with pytest.raises(ValueError):
        m(Tensor(x + 1, requires_grad=True))
    _assert_module_unchanged(m, before)


@pytest.fixture(params=[
    lambda ps: optim.SGD(ps, lr=0.1),
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    lambda ps: optim.Adam(ps, lr=0.1, amsgrad=True),
    lambda ps: optim.AdamW(ps, lr=0.1),
], ids=["sgd", "sgd-momentum", "adam", "adamw"])
def make(request):
    """Makes one optimizer of each kind over a list of parameters."""
    return request.param


@pytest.mark.parametrize("breakage", ["read-only", "grad shape", "complex grad",
                                      "setting not a number"])
def test_failed_optimizer_step_changes_nothing(make, breakage):
    rng = np.random.default_rng(14)
    ps = [Tensor(rng.standard_normal(s), requires_grad=True) for s in ((3,), (2, 2), (4,))]
    opt = make(ps)
    for p in ps:
        p.grad = rng.standard_normal(p.shape)
    opt.step()  # a first step: the state exists and is not at its initial value
    for p in ps:
        p.grad = rng.standard_normal(p.shape)
    data = [p.data.copy() for p in ps]
    state = {k: {n: np.copy(v) for n, v in st.items()} for k, st in opt.state.items()}
    good = ps[2].grad
    if breakage == "read-only":
        ps[2].data.flags.writeable = False
    elif breakage == "grad shape":
        ps[2].grad = np.ones(5)
    elif breakage == "complex grad":
        ps[2].grad = good + 1j
    else:
        opt.param_groups[0]["lr"] = "0.1"
    with pytest.raises(ValueError if breakage in ("read-only", "grad shape") else TypeError):
        opt.step()
    for p, d in zip(ps, data):
        np.testing.assert_array_equal(p.data, d)
    assert opt.state.keys() == state.keys()
    for k, st in state.items():
        assert opt.state[k].keys() == st.keys()
        for n, v in st.items():
            np.testing.assert_array_equal(opt.state[k][n], v)
    ps[2].data.flags.writeable = True
    ps[2].grad = good
    opt.param_groups[0]["lr"] = 0.1
    opt.step()
    assert not np.array_equal(ps[0].data, data[0])


def _interrupting(a, nth):
    """``a`` as a gradient that sends this process a real SIGINT (Ctrl-C) at the ``nth``
    NumPy operation the optimizer does with it, i.e. in the middle of its update."""
    count = []

    class Interrupting(np.ndarray):
        def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
            count.append(1)
            if len(count) == nth:
                signal.raise_signal(signal.SIGINT)
            plain = [x.view(np.ndarray) if isinstance(x, Interrupting) else x for x in inputs]
            return getattr(ufunc, method)(*plain, **kwargs)
    return a.view(Interrupting), count


@pytest.mark.parametrize("which", [0, 1, 2])
def test_interrupted_optimizer_step_completes_then_raises(make, which):
    """Ctrl-C in the middle of the update of one of three parameters: every parameter and its
    state take the step (as an uninterrupted twin's do), then KeyboardInterrupt is raised."""
    rng = np.random.default_rng(15)
    init = [rng.standard_normal(s) for s in ((3,), (2, 2), (4,))]
    grads = [[rng.standard_normal(a.shape) for a in init] for _ in range(2)]
    ps, twin = ([Tensor(a, requires_grad=True) for a in init] for _ in range(2))
    opt, ref = make(ps), make(twin)
    for step, gs in enumerate(grads):
        for p, q, g in zip(ps, twin, gs):
            p.grad, q.grad = g.copy(), g.copy()
        ref.step()
        if step == 1:
            ps[which].grad, count = _interrupting(ps[which].grad, 1)
            with pytest.raises(KeyboardInterrupt):
                opt.step()
            assert count  # the signal was sent inside the step
        else:
            opt.step()
    for p, q in zip(ps, twin):
        np.testing.assert_array_equal(p.data, q.data)
    for p, q in zip(ps, twin):
        st, want = opt.state.get(id(p), {}), ref.state.get(id(q), {})
        assert st.keys() == want.keys()
        for n in want:
            np.testing.assert_array_equal(st[n], want[n])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
