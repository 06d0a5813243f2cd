"""The blocked, threaded NumPy path of the fused norm kernels (``norms/fused.py``,
``_threads.py``; taken when the compiled kernels of ``_kernels.py`` are not installed) against
the plain ops beside it: block boundaries that do not divide the batch, one thread
against several (identical numbers), odd shapes, float16/float32/float64, running
statistics, and inputs that stay on the plain path (small, empty, eval mode)."""
import numpy as np
import pytest

from tinygrad_bn import Tensor
from tinygrad_bn.nn import functional as F
from tinygrad_bn.norms import _threads, batch_norm_derived, fused


@pytest.fixture
def blocked(monkeypatch):
    """Every input takes the blocked path, in blocks of at most 96 elements (so most
    shapes below end in a short block) and at least 3 blocks."""
    monkeypatch.setattr(fused, "_USE_KERNELS", False)
    monkeypatch.setattr(fused, "_MIN_BLOCKED", 1)
    monkeypatch.setattr(fused, "_BLOCK_ELEMS", 96)
    monkeypatch.setattr(fused, "_MIN_BLOCKS", 3)
    yield
    _threads.set_num_threads(None)


def _bn(fn):
    def call(x, w, b, rm=None, rv=None):
        return fn(x, rm, rv, w, b, training=True)
    return call


def _in(fn):
    def call(x, w, b, rm=None, rv=None):
        return fn(x, rm, rv, w, b)
    return call


# name -> (fused call, plain call, shape, parameter shape)
CASES = {
    "batch_norm 2d": (_bn(fused.batch_norm), _bn(batch_norm_derived), (37, 11), (11,)),
    "batch_norm 3d": (_bn(fused.batch_norm), _bn(F.batch_norm), (13, 5, 7), (5,)),
    "batch_norm 4d": (_bn(fused.batch_norm), _bn(F.batch_norm), (7, 3, 4, 5), (3,)),
    "layer_norm": (lambda x, w, b: fused.layer_norm(x, (4, 9), w, b),
                   lambda x, w, b: F.layer_norm(x, (4, 9), w, b), (23, 4, 9), (4, 9)),
    "group_norm": (lambda x, w, b: fused.group_norm(x, 3, w, b),
                   lambda x, w, b: F.group_norm(x, 3, w, b), (19, 6, 5), (6,)),
    "instance_norm": (_in(fused.instance_norm), _in(F.instance_norm), (17, 3, 8), (3,)),
    "rms_norm": (lambda x, w, b: fused.rms_norm(x, (10,), w),
                 lambda x, w, b: F.rms_norm(x, (10,), w), (29, 10), (10,)),
}
TOL = {np.float64: 1e-10, np.float32: 2e-5, np.float16: 2e-2}


def _run(fn, arrays, u, dtype, affine=True):
    x = Tensor(arrays[0].astype(dtype), requires_grad=True)
    ps = [Tensor(a.astype(dtype), requires_grad=True) for a in arrays[1:]] if affine \
        else [None, None]
    y = fn(x, *ps)
    y.backward(u.astype(dtype))
    return [y.data, x.grad] + [None if p is None else p.grad for p in ps]


def _data(shape, pshape, seed=0):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(shape) * 3 + 5, rng.uniform(0.5, 1.5, pshape),
              rng.standard_normal(pshape)]
    return arrays, rng.standard_normal(shape)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("affine", [True, False])
def test_blocked_kernel_equals_the_plain_op(blocked, name, dtype, affine):
    fn, plain, shape, pshape = CASES[name]
    assert fused._blocks(_plan_of(name, shape))[1] >= 3  # really cut into blocks
    arrays, u = _data(shape, pshape)
    got = _run(fn, arrays, u, dtype, affine)
    ref = _run(plain, arrays, u, np.float64 if dtype is np.float16 else dtype, affine)
    for a, r in zip(got, ref):
        if r is None:
            assert a is None
            continue
        if dtype is not np.float16:
            assert a.dtype == r.dtype
        else:
            assert a.dtype == np.float16
        scale = max(1.0, float(np.max(np.abs(r))))
        np.testing.assert_allclose(a.astype(np.float64), r, rtol=TOL[dtype],
                                   atol=TOL[dtype] * scale)


def _plan_of(name, shape):
    if name.startswith("batch_norm"):
        return fused._channel_plan(shape, 1e-5, False)
    if name == "instance_norm":
        return fused._channel_plan(shape, 1e-5, True)
    if name == "group_norm":
        return fused._group_plan(shape, 3, 1e-5)
    k = 2 if name == "layer_norm" else 1
    return fused._trailing_plan(shape, k, 1e-5, name != "rms_norm")


@pytest.mark.parametrize("name", list(CASES))
def test_blocked_equals_unblocked_fused_kernel(monkeypatch, name):
    monkeypatch.setattr(fused, "_USE_KERNELS", False)
    fn, _, shape, pshape = CASES[name]
    arrays, u = _data(shape, pshape, seed=1)
    ref = _run(fn, arrays, u, np.float64)  # small: the plain path
    monkeypatch.setattr(fused, "_MIN_BLOCKED", 1)
    monkeypatch.setattr(fused, "_BLOCK_ELEMS", 64)
    got = _run(fn, arrays, u, np.float64)
    for a, r in zip(got, ref):
        if r is None:  # RMSNorm has no bias
            assert a is None
        else:
            np.testing.assert_allclose(a, r, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("name", list(CASES))
def test_one_thread_and_several_give_identical_results(blocked, name, dtype):
    fn, _, shape, pshape = CASES[name]
    arrays, u = _data(shape, pshape, seed=2)
    out = []
    for threads in (1, 2, 3, 8):
        _threads.set_num_threads(threads)
        out.append(_run(fn, arrays, u, dtype))
    for other in out[1:]:
        for a, r in zip(other, out[0]):
            assert (a is None and r is None) or (a.dtype == r.dtype and np.array_equal(a, r))


def test_batch_norm_running_statistics_on_the_blocked_path(blocked):
    arrays, u = _data((41, 6), (6,), seed=3)
    stats = []
    for fn in (fused.batch_norm, batch_norm_derived):
        rm, rv = np.zeros(6, np.float32), np.ones(6, np.float32)
        x = Tensor(arrays[0].astype(np.float32))
        fn(x, rm, rv, None, None, training=True, momentum=0.3)
        stats.append((rm, rv))
    np.testing.assert_allclose(stats[0][0], stats[1][0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats[0][1], stats[1][1], rtol=1e-5, atol=1e-5)


def test_instance_norm_running_statistics_on_the_blocked_path(blocked):
    arrays, u = _data((9, 3, 8), (3,), seed=4)
    stats = []
    for fn in (fused.instance_norm, F.instance_norm):
        rm, rv = np.zeros(3), np.ones(3)
        fn(Tensor(arrays[0]), rm, rv, None, None, momentum=0.3)
        stats.append((rm, rv))
    np.testing.assert_allclose(stats[0][0], stats[1][0], rtol=1e-10)
    np.testing.assert_allclose(stats[0][1], stats[1][1], rtol=1e-10)


def test_batch_norm_far_from_zero_keeps_its_variance(blocked):
    """The shifted sums of the blocked BatchNorm do not cancel for data far from 0."""
    rng = np.random.default_rng(5)
    x = (1e4 + rng.standard_normal((50, 4))).astype(np.float32)
    x[:3] += 30.0  # the first block (the shift) is not typical of the rest
    got = fused.batch_norm(Tensor(x), None, None, training=True).data
    x64 = x.astype(np.float64)
    ref = (x64 - x64.mean(0)) / np.sqrt(x64.var(0) + 1e-5)
    np.testing.assert_allclose(got, ref, atol=2e-3)


def test_only_requested_gradients_on_the_blocked_path(blocked):
    arrays, u = _data((37, 11), (11,), seed=6)
    for mask in ((True, False, False), (False, True, True), (False, True, False)):
        ts = [Tensor(a.astype(np.float64), requires_grad=r) for a, r in zip(arrays, mask)]
        fused.batch_norm(ts[0], None, None, ts[1], ts[2], training=True).backward(u)
        ref = [Tensor(a.astype(np.float64), requires_grad=True) for a in arrays]
        batch_norm_derived(ref[0], None, None, ref[1], ref[2], training=True).backward(u)
        for t, r, m in zip(ts, ref, mask):
            if m:
                np.testing.assert_allclose(t.grad, r.grad, rtol=1e-10, atol=1e-10)
            else:
                assert t.grad is None


def test_second_derivatives_on_the_blocked_path(blocked):
    """create_graph=True uses the Tensor formula whatever the forward path was."""
    from tinygrad_bn import grad
    arrays, u = _data((21, 5), (5,), seed=7)
    res = []
    for fn in (fused.batch_norm, F.batch_norm):  # F: composed, differentiable again
        x = Tensor(arrays[0], requires_grad=True)
        w = Tensor(arrays[1], requires_grad=True)
        y = fn(x, None, None, w, None, training=True)
        (gx,) = grad((y * Tensor(u)).sum(), [x], create_graph=True)
        (gw,) = grad((gx * gx).sum(), [w])
        res.append(gw.data if isinstance(gw, Tensor) else gw)
    np.testing.assert_allclose(res[0], res[1], rtol=1e-8, atol=1e-10)


def test_small_empty_and_eval_inputs_stay_on_the_plain_path(monkeypatch):
    calls = []
    monkeypatch.setattr(fused, "_blocked_forward",
                        lambda *a, **k: calls.append(1) or pytest.fail("blocked"))
    x = Tensor(np.ones((64, 128), np.float32), requires_grad=True)
    fused.batch_norm(x, None, None, training=True).sum().backward()  # small
    monkeypatch.setattr(fused, "_MIN_BLOCKED", 1)
    with np.errstate(all="raise"):
        empty = fused.layer_norm(Tensor(np.ones((0, 4), np.float32)), (4,))  # empty
    assert empty.shape == (0, 4)
    rm, rv = np.zeros(3), np.ones(3)
    y = fused.batch_norm(Tensor(np.ones((8, 3))), rm, rv, training=False)  # running stats
    np.testing.assert_allclose(y.data, np.ones((8, 3)) / np.sqrt(1 + 1e-5))
    assert not calls


def test_blocked_path_is_taken_for_large_inputs(monkeypatch):
    monkeypatch.setattr(fused, "_USE_KERNELS", False)
    seen = []
    real = fused._blocked_forward
    monkeypatch.setattr(fused, "_blocked_forward", lambda *a, **k: seen.append(1) or real(*a, **k))
    rng = np.random.default_rng(8)
    x = Tensor(rng.standard_normal((fused._MIN_BLOCKED // 64 + 3, 64)).astype(np.float32),
               requires_grad=True)
    fused.batch_norm(x, None, None, training=True).sum().backward()
    assert seen and np.abs(x.grad).max() < 1e-3  # d(Σy)/dx = 0


def test_thread_count_follows_the_environment(monkeypatch):
    monkeypatch.setenv("TINYGRAD_BN_THREADS", "3")
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert _threads._default_threads() == 3
    monkeypatch.delenv("TINYGRAD_BN_THREADS")
    assert _threads._default_threads() == 5
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert _threads._default_threads() >= 1
    with pytest.raises(ValueError):
        _threads.set_num_threads(0)
    _threads.set_num_threads(2)
    assert _threads.num_threads() == 2
    _threads.set_num_threads(None)
    assert _threads.run_blocks(lambda i: i * i, 7) == [i * i for i in range(7)]
