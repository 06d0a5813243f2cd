"""The compiled loop kernels of the fused norms (``norms/_kernels.py``, the ``fast`` extra)
against the plain NumPy ops beside them (``fused.py`` with the kernels switched off) and the
composed norms: every family and layout, float32/float64, with and without γ, β; blocks and
threads; running statistics; edge points (one value per statistic, zero variance, data far
from 0, nan and inf, non-contiguous inputs); what the node keeps; and the cases that stay on
the NumPy path (float16, mixed dtypes, eval mode, empty inputs)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from tinygrad_bn import Tensor, grad
from tinygrad_bn.nn import functional as F
from tinygrad_bn.norms import _kernels, _threads, fused

from conftest import STRICT


@pytest.fixture
def kernels(monkeypatch):
    """The compiled kernels, switched on (numba must be installed: the ``fast`` extra)."""
    if not _kernels.available:
        if STRICT:
            pytest.fail("numba (the fast extra) is required when TINYGRAD_BN_STRICT=1",
                        pytrace=False)
        pytest.skip("numba is not installed")
    monkeypatch.setattr(fused, "_USE_KERNELS", True)
    yield
    _threads.set_num_threads(None)


def _bn(x, w, b, rm=None, rv=None):
    return fused.batch_norm(x, rm, rv, w, b, training=True)


def _in(x, w, b, rm=None, rv=None):
    return fused.instance_norm(x, rm, rv, w, b)


# name -> (call, shape, parameter shape)
CASES = {
    "batch_norm 2d": (_bn, (37, 11), (11,)),
    "batch_norm 3d": (_bn, (13, 5, 7), (5,)),
    "batch_norm 4d": (_bn, (7, 3, 4, 5), (3,)),
    "layer_norm": (lambda x, w, b: fused.layer_norm(x, (4, 9), w, b), (23, 4, 9), (4, 9)),
    "group_norm": (lambda x, w, b: fused.group_norm(x, 3, w, b), (19, 6, 5), (6,)),
    "group_norm 2d": (lambda x, w, b: fused.group_norm(x, 2, w, b), (9, 6), (6,)),
    "instance_norm": (_in, (17, 3, 8), (3,)),
    "rms_norm": (lambda x, w, b: fused.rms_norm(x, (10,), w), (29, 10), (10,)),
}
TOL = {np.float64: 1e-11, np.float32: 2e-5}


def _data(shape, pshape, seed=0, offset=5.0):
    rng = np.random.default_rng(seed)
    return ([rng.standard_normal(shape) * 3 + offset, rng.uniform(0.5, 1.5, pshape),
             rng.standard_normal(pshape)], rng.standard_normal(shape))


def _run(fn, arrays, u, dtype, affine=True, name=""):
    x = Tensor(arrays[0].astype(dtype), requires_grad=True)
    ps = [Tensor(a.astype(dtype), requires_grad=True) for a in arrays[1:]] if affine \
        else [None, None]
    if name == "rms_norm" and affine:
        ps[1] = None
    y = fn(x, *ps)
    y.backward(u.astype(dtype))
    return [y.data, x.grad] + [None if p is None else p.grad for p in ps]


def _plain(monkeypatch, fn, *args, **kw):
    """``fn`` with the kernels switched off (the NumPy path)."""
    monkeypatch.setattr(fused, "_USE_KERNELS", False)
    try:
        return fn(*args, **kw)
    finally:
        monkeypatch.setattr(fused, "_USE_KERNELS", True)


def _close(got, ref, dtype):
    for a, r in zip(got, ref):
        if r is None:
            assert a is None
            continue
        assert a.dtype == r.dtype and a.shape == r.shape
        scale = max(1.0, float(np.max(np.abs(r)))) if r.size else 1.0
        np.testing.assert_allclose(a, r, rtol=TOL[dtype], atol=TOL[dtype] * scale)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("affine", [True, False])
def test_kernel_equals_the_numpy_path(kernels, monkeypatch, name, dtype, affine):
    fn, shape, pshape = CASES[name]
    arrays, u = _data(shape, pshape)
    taken = []
    real = fused._kernel_forward
    monkeypatch.setattr(fused, "_kernel_forward", lambda *a: taken.append(1) or real(*a))
    got = _run(fn, arrays, u, dtype, affine, name)
    assert taken  # the compiled path really ran
    ref = _plain(monkeypatch, _run, fn, arrays, u, dtype, affine, name)
    _close(got, ref, dtype)


@pytest.mark.parametrize("name", list(CASES))
def test_blocks_and_threads_give_identical_results(kernels, monkeypatch, name):
    """Cut into many blocks (a short last one), results equal the one-block run closely and
    do not depend on the number of threads at all."""
    fn, shape, pshape = CASES[name]
    arrays, u = _data(shape, pshape, seed=3)
    one = _run(fn, arrays, u, np.float64, name=name)
    monkeypatch.setattr(fused, "_MIN_BLOCKED", 1)
    monkeypatch.setattr(fused, "_BLOCK_ELEMS", 20)
    plan_count = fused._kernel_bounds(_plan(name, shape))[0]
    assert plan_count >= 3
    runs = []
    for threads in (1, 2, 3):
        _threads.set_num_threads(threads)
        runs.append(_run(fn, arrays, u, np.float64, name=name))
    for r in runs[1:]:
        for a, b in zip(runs[0], r):
            assert (a is None and b is None) or np.array_equal(a, b)
    _close(runs[0], one, np.float64)


def _plan(name, shape):
    if name.startswith("batch_norm"):
        return fused._channel_plan(shape, 1e-5, False)
    if name == "instance_norm":
        return fused._channel_plan(shape, 1e-5, True)
    if name.startswith("group_norm"):
        return fused._group_plan(shape, 3 if len(shape) == 3 else 2, 1e-5)
    k = 2 if name == "layer_norm" else 1
    return fused._trailing_plan(shape, k, 1e-5, name != "rms_norm")


def test_against_the_composed_norms_and_torch(kernels, torch):
    """Large enough for several blocks on several threads: the kernels agree with torch."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 40, 100)).astype(np.float32) * 2 + 1
    u = rng.standard_normal(x.shape).astype(np.float32)
    w = rng.uniform(0.5, 1.5, 40).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)
    tf = torch.nn.functional
    calls = {
        "batch_norm": (lambda X, W, B: fused.batch_norm(X, None, None, W, B, training=True),
                       lambda X, W, B: tf.batch_norm(X, None, None, W, B, training=True)),
        "group_norm": (lambda X, W, B: fused.group_norm(X, 8, W, B),
                       lambda X, W, B: tf.group_norm(X, 8, W, B)),
        "instance_norm": (lambda X, W, B: fused.instance_norm(X, None, None, W, B),
                          lambda X, W, B: tf.instance_norm(X, None, None, W, B)),
        "layer_norm": (lambda X, W, B: fused.layer_norm(X.reshape(-1, 40), (40,), W, B),
                       lambda X, W, B: tf.layer_norm(X.reshape(-1, 40), (40,), W, B)),
    }
    assert x.size >= fused._MIN_BLOCKED  # blocks on the thread pool
    for name, (ours, theirs) in calls.items():
        X, W, B = (Tensor(a, requires_grad=True) for a in (x, w, b))
        y = ours(X, W, B)
        y.backward(u.reshape(y.shape))
        tx, tw, tb = (torch.tensor(a.astype(np.float64), requires_grad=True)
                      for a in (x, w, b))
        ty = theirs(tx, tw, tb)
        ty.backward(torch.tensor(u.astype(np.float64)).reshape(ty.shape))
        for a, r in ((y.data, ty), (X.grad, tx.grad), (W.grad, tw.grad), (B.grad, tb.grad)):
            r = r.detach().numpy()
            np.testing.assert_allclose(a, r, rtol=2e-4, atol=2e-4 * max(1, np.abs(r).max()),
                                       err_msg=name)


@given(rows=st.integers(1, 6), feats=st.integers(1, 9), offset=st.sampled_from([0.0, 1e4]),
       kind=st.sampled_from(["constant", "ties", "normal"]), seed=st.integers(0, 2 ** 16))
def test_edge_points_layer_norm(rows, feats, offset, kind, seed):
    """One value per row, constant rows (zero variance), ties, data far from 0: the kernel
    equals the NumPy path (float64) — no cancellation from the shift or the sums."""
    if not _kernels.available:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(seed)
    x = {"constant": np.full((rows, feats), 3.0), "ties": rng.integers(0, 2, (rows, feats)),
         "normal": rng.standard_normal((rows, feats))}[kind] + offset
    u = rng.standard_normal((rows, feats))
    res = []
    for on in (True, False):
        fused._USE_KERNELS = on
        try:
            X = Tensor(x.astype(np.float64), requires_grad=True)
            y = fused.layer_norm(X, (feats,))
            y.backward(u)
            res.append((y.data, X.grad))
        finally:
            fused._USE_KERNELS = _kernels.available
    for a, b in zip(*res):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-7)


@given(n=st.integers(2, 40), c=st.integers(1, 5), offset=st.sampled_from([0.0, 1e3, -1e4]),
       constant=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_edge_points_batch_norm_float32(n, c, offset, constant, seed):
    """BatchNorm in float32 far from 0 and with zero variance: the shifted float64 sums keep
    the variance (the kernel is at least as close to the float64 truth as the NumPy path)."""
    if not _kernels.available:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(seed)
    x64 = (np.full((n, c), 2.0) if constant else rng.standard_normal((n, c))) + offset
    x = x64.astype(np.float32)
    truth = (x.astype(np.float64) - x.astype(np.float64).mean(0)) / np.sqrt(
        x.astype(np.float64).var(0) + 1e-5)
    errs = []
    for on in (True, False):
        fused._USE_KERNELS = on
        try:
            y = fused.batch_norm(Tensor(x), None, None, training=True).data
        finally:
            fused._USE_KERNELS = _kernels.available
        errs.append(np.abs(y - truth).max())
    assert errs[0] <= max(2 * errs[1], 1e-3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_spread_as_on_the_numpy_path(kernels, monkeypatch, bad):
    for name in ("batch_norm 2d", "batch_norm 3d", "layer_norm", "group_norm"):
        fn, shape, pshape = CASES[name]
        arrays, u = _data(shape, pshape)
        arrays[0].flat[7] = bad
        with np.errstate(all="ignore"):
            got = _run(fn, arrays, u, np.float64, name=name)
            ref = _plain(monkeypatch, _run, fn, arrays, u, np.float64, name=name)
        for a, r in zip(got, ref):
            np.testing.assert_array_equal(np.isnan(a), np.isnan(r), err_msg=name)
            ok = ~np.isnan(r)
            np.testing.assert_allclose(a[ok], r[ok], rtol=1e-9, atol=1e-9, err_msg=name)


def test_running_statistics_match_the_numpy_path(kernels, monkeypatch):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((16, 4, 6)).astype(np.float32) * 2 + 3
    out = []
    for on in (True, False):
        monkeypatch.setattr(fused, "_USE_KERNELS", on)
        stats = [np.zeros(4, np.float32), np.ones(4, np.float32), np.zeros(4, np.float32),
                 np.ones(4, np.float32)]
        fused.batch_norm(Tensor(x), stats[0], stats[1], training=True, momentum=0.3)
        fused.instance_norm(Tensor(x), stats[2], stats[3], momentum=0.3)
        out.append(stats)
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_only_the_requested_gradients(kernels):
    rng = np.random.default_rng(4)
    for name, (fn, shape, pshape) in CASES.items():
        x = Tensor(rng.standard_normal(shape))
        w = Tensor(rng.uniform(0.5, 1.5, pshape), requires_grad=True)
        b = None if name == "rms_norm" else Tensor(rng.standard_normal(pshape))
        fn(x, w, b).sum().backward()
        assert x.grad is None and w.grad is not None and w.grad.shape == pshape
        x = Tensor(rng.standard_normal(shape), requires_grad=True)
        fn(x, w.detach(), b).sum().backward()
        assert x.grad is not None and x.grad.shape == shape


def test_non_contiguous_input(kernels, monkeypatch):
    rng = np.random.default_rng(6)
    base = rng.standard_normal((12, 30)) + 2
    u = rng.standard_normal((30, 12))
    res = []
    for on in (True, False):
        monkeypatch.setattr(fused, "_USE_KERNELS", on)
        x = Tensor(base.T, requires_grad=True)  # a transposed view
        fused.batch_norm(x, None, None, training=True).backward(u)
        y = fused.layer_norm(x, (12,))
        y.backward(u)
        res.append((y.data, x.grad))
    for a, b in zip(*res):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_the_node_keeps_statistics_not_an_x_hat_array(kernels):
    """The backward recomputes x̂ from the saved input: the node holds μ and rstd only."""
    x = Tensor(np.random.default_rng(0).standard_normal((64, 32)), requires_grad=True)
    for y in (fused.batch_norm(x, None, None, training=True), fused.layer_norm(x, (32,))):
        saved = y._ctx.saved_tensors
        assert sum(np.asarray(a).size for a in saved) <= 2 * 64


def test_second_derivatives_through_a_kernel_forward(kernels, monkeypatch):
    """create_graph recomputes the backward with Tensor ops from the inputs."""
    rng = np.random.default_rng(7)
    arrays, u = _data((9, 4), (4,), seed=7)
    res = []
    for on in (True, False):
        monkeypatch.setattr(fused, "_USE_KERNELS", on)
        x = Tensor(arrays[0], requires_grad=True)
        w = Tensor(arrays[1], requires_grad=True)
        y = fused.batch_norm(x, None, None, w, None, training=True)
        (gx,) = grad((y * Tensor(u)).sum(), [x], create_graph=True)
        (gw,) = grad((gx * gx).sum(), [w])
        res.append(gw.data)
    np.testing.assert_allclose(res[0], res[1], rtol=1e-10)
    del rng


def test_cases_that_stay_on_the_numpy_path(kernels, monkeypatch):
    called = []
    monkeypatch.setattr(fused, "_kernel_forward",
                        lambda *a: called.append(1) or pytest.fail("kernel path"))
    rng = np.random.default_rng(1)
    x16 = Tensor(rng.standard_normal((8, 4)).astype(np.float16), requires_grad=True)
    y = fused.batch_norm(x16, None, None, training=True)  # float16
    assert y.dtype == np.float16
    rm, rv = np.zeros(4), np.ones(4)
    fused.batch_norm(Tensor(rng.standard_normal((8, 4))), rm, rv, training=False)  # eval
    empty = fused.layer_norm(Tensor(np.ones((0, 4))), (4,))  # empty
    assert empty.shape == (0, 4)
    half = fused.layer_norm(Tensor(rng.standard_normal((3, 4)).astype(np.float16)), (4,),
                            Tensor(np.ones(4, np.float32)))  # float16 with float32 γ
    np.testing.assert_allclose(half.data, F.layer_norm(Tensor(half.data), (4,)).data,
                               atol=5e-3)
    assert not called


def test_peak_memory_of_a_large_batch_norm(kernels):
    """A (2048, 256) BatchNorm forward+backward allocates the output and dx, which becomes
    x.grad without a copy: about 2x the input at the peak (the NumPy kernels also keep x̂)."""
    import tracemalloc
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2048, 256)).astype(np.float32), requires_grad=True)
    w = Tensor(np.ones(256, np.float32), requires_grad=True)
    b = Tensor(np.zeros(256, np.float32), requires_grad=True)
    u = rng.standard_normal((2048, 256)).astype(np.float32)

    def step():
        x.grad = w.grad = b.grad = None
        fused.batch_norm(x, None, None, w, b, training=True).backward(u)

    step()
    tracemalloc.start()
    step()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2.2 * x.data.nbytes
    assert x.grad.base is None  # adopted, not copied
