"""Norm modules against torch.nn (float64): state_dict keys, weights loaded from torch giving
the same outputs, gradients and running statistics over several batches in train and eval,
for the composed (functional) and fused (analytic) versions."""
import numpy as np
import pytest

from tinygrad_bn import Tensor
from tinygrad_bn import nn

F64 = np.float64
TOL = dict(rtol=1e-10, atol=1e-10)

# (class name, positional args, keyword args, input shape)
VARIANTS = [
    ("BatchNorm1d", (3,), {}, (6, 3)),
    ("BatchNorm1d", (3,), {"momentum": None}, (4, 3, 5)),
    ("BatchNorm1d", (3,), {"affine": False}, (6, 3)),
    ("BatchNorm1d", (3,), {"bias": False}, (4, 3, 2)),
    ("BatchNorm1d", (3,), {"track_running_stats": False}, (5, 3, 2)),
    ("BatchNorm2d", (3,), {"momentum": 0.5}, (2, 3, 4, 3)),
    ("BatchNorm2d", (3,), {"affine": False, "track_running_stats": False}, (2, 3, 2, 2)),
    ("LayerNorm", (4,), {}, (3, 4)),
    ("LayerNorm", ((3, 4),), {"bias": False}, (2, 3, 4)),
    ("LayerNorm", ([4],), {"elementwise_affine": False, "eps": 1e-3}, (5, 4)),
    ("GroupNorm", (2, 6), {}, (3, 6, 4)),
    ("GroupNorm", (3, 6), {"affine": False}, (2, 6, 2, 2)),
    ("GroupNorm", (1, 4), {"bias": False}, (3, 4, 3)),
    ("InstanceNorm1d", (3,), {}, (2, 3, 5)),
    ("InstanceNorm1d", (3,), {"affine": True, "track_running_stats": True}, (4, 3, 6)),
    ("InstanceNorm2d", (3,), {"affine": True}, (2, 3, 3, 4)),
    ("InstanceNorm2d", (3,), {"track_running_stats": True, "momentum": None}, (2, 3, 3, 3)),
    ("RMSNorm", (4,), {}, (3, 4)),
    ("RMSNorm", ((2, 4),), {"eps": 1e-6}, (3, 2, 4)),
    ("RMSNorm", (4,), {"elementwise_affine": False}, (2, 5, 4)),
]
IDS = [f"{c}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}"
       for c, _, kw, _ in VARIANTS]


def _pair(torch, cls, args, kwargs, analytic=False, seed=0):
    """(ours, theirs) with the same random weights and running statistics (torch's)."""
    torch.manual_seed(seed)
    theirs = getattr(torch.nn, cls)(*args, **kwargs)
    with torch.no_grad():
        for name, t in theirs.state_dict(keep_vars=True).items():
            if name.endswith("weight") or name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            elif name.endswith("bias") or name.endswith("running_mean"):
                t.normal_()
    ours = getattr(nn, cls)(*args, **kwargs, dtype=F64, analytic=analytic)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def _step(torch, ours, theirs, x, g):
    """One forward/backward on both; outputs, every gradient and the whole state agree."""
    xo, xt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yo, yt = ours(xo), theirs(xt)
    np.testing.assert_allclose(yo.data, yt.detach().numpy(), **TOL)
    yo.backward(g)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), **TOL)
    for (n, p), (tn, tp) in zip(ours.named_parameters(), theirs.named_parameters(),
                                strict=True):
        assert n == tn
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), **TOL, err_msg=n)
    ours.zero_grad()
    theirs.zero_grad()
    _same_state(ours, theirs)


def _same_state(ours, theirs):
    so, st = ours.state_dict(), theirs.state_dict()
    assert list(so) == list(st)
    for k in so:
        assert so[k].dtype == st[k].numpy().dtype, k
        np.testing.assert_allclose(so[k], st[k].numpy(), **TOL, err_msg=k)


# ------------------------------------------------------------------- keys and printing
@pytest.mark.parametrize("cls,args,kwargs,shape", VARIANTS, ids=IDS)
def test_state_dict_keys_parameters_and_repr_match_torch(torch, cls, args, kwargs, shape):
    ours = getattr(nn, cls)(*args, **kwargs)
    theirs = getattr(torch.nn, cls)(*args, **kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [(n, p.shape) for n, p in ours.named_parameters()] == \
        [(n, tuple(p.shape)) for n, p in theirs.named_parameters()]
    assert [(n, b.shape) for n, b in ours.named_buffers()] == \
        [(n, tuple(b.shape)) for n, b in theirs.named_buffers()]
    assert repr(ours) == repr(theirs)
    for name, t in ours.state_dict().items():  # torch's initial values
        np.testing.assert_array_equal(t, theirs.state_dict()[name].numpy())
    assert ours.weight is None or ours.weight.dtype == np.float32  # the default dtype
    fused = getattr(nn, cls)(*args, **kwargs, analytic=True)
    assert repr(fused).endswith(", analytic=True)")


def test_num_batches_tracked_is_an_int64_scalar():
    sd = nn.BatchNorm1d(2).state_dict()
    assert sd["num_batches_tracked"].dtype == np.int64 and sd["num_batches_tracked"].shape == ()


# --------------------------------------------------------------- numbers against torch
@pytest.mark.parametrize("analytic", [False, True], ids=["composed", "analytic"])
@pytest.mark.parametrize("cls,args,kwargs,shape", VARIANTS, ids=IDS)
def test_train_then_eval_matches_torch(torch, cls, args, kwargs, shape, analytic):
    ours, theirs = _pair(torch, cls, args, kwargs, analytic)
    rng = np.random.default_rng(1)
    for mode in ("train", "train", "train", "eval", "train", "eval"):
        ours.train(mode == "train")
        theirs.train(mode == "train")
        x = rng.standard_normal(shape) * 2 + 0.5
        _step(torch, ours, theirs, x, rng.standard_normal(shape))


@pytest.mark.parametrize("analytic", [False, True], ids=["composed", "analytic"])
@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
@pytest.mark.parametrize("cls,shape", [("BatchNorm1d", (5, 3)), ("BatchNorm1d", (4, 3, 3)),
                                       ("BatchNorm2d", (3, 3, 2, 2))])
def test_batchnorm_running_stats_over_batches(torch, cls, shape, momentum, analytic):
    ours, theirs = _pair(torch, cls, (3,), {"momentum": momentum}, analytic, seed=2)
    rng = np.random.default_rng(2)
    axes = (0,) + tuple(range(2, len(shape)))
    means = []
    for _ in range(4):
        x = rng.standard_normal(shape) + 3.0
        means.append(x.mean(axis=axes))
        _step(torch, ours, theirs, x, rng.standard_normal(shape))
    assert int(ours.num_batches_tracked.data) == 4
    if momentum is None:  # a cumulative average: the first batch replaces the initial value
        np.testing.assert_allclose(ours.running_mean.data, np.mean(means, axis=0), **TOL)
    ours.eval()
    theirs.eval()
    for _ in range(2):
        x = rng.standard_normal(shape)
        _step(torch, ours, theirs, x, rng.standard_normal(shape))
    assert int(ours.num_batches_tracked.data) == 4  # eval does not count


def test_mlp_with_batchnorm_matches_torch(torch):
    tnn = torch.nn
    torch.manual_seed(3)
    theirs = tnn.Sequential(tnn.Linear(4, 8), tnn.BatchNorm1d(8, momentum=None), tnn.ReLU(),
                            tnn.Linear(8, 8), tnn.BatchNorm1d(8), tnn.Tanh(), tnn.Linear(8, 3))
    ours = nn.Sequential(nn.Linear(4, 8, dtype=F64), nn.BatchNorm1d(8, momentum=None, dtype=F64),
                         nn.ReLU(), nn.Linear(8, 8, dtype=F64), nn.BatchNorm1d(8, dtype=F64),
                         nn.Tanh(), nn.Linear(8, 3, dtype=F64))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    ours.load_state_dict(theirs.state_dict())
    rng = np.random.default_rng(3)
    for mode in ("train", "train", "eval", "train", "eval"):
        ours.train(mode == "train")
        theirs.train(mode == "train")
        _step(torch, ours, theirs, rng.standard_normal((6, 4)), rng.standard_normal((6, 3)))
    # and back: torch takes our trained state
    back = tnn.Sequential(tnn.Linear(4, 8), tnn.BatchNorm1d(8, momentum=None), tnn.ReLU(),
                          tnn.Linear(8, 8), tnn.BatchNorm1d(8), tnn.Tanh(), tnn.Linear(8, 3))
    back.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    _same_state(ours, back)
    assert int(back[1].num_batches_tracked) == 3


def test_no_batch_instance_norm_input_matches_torch(torch):
    ours, theirs = _pair(torch, "InstanceNorm1d", (3,), {"affine": True})
    x = np.random.default_rng(4).standard_normal((3, 5))
    _step(torch, ours, theirs, x, np.random.default_rng(5).standard_normal((3, 5)))


# ------------------------------------------------------------------ modes and switches
def test_eval_without_running_stats_uses_batch_stats():
    bn = nn.BatchNorm1d(2, track_running_stats=False, dtype=F64).eval()
    x = np.random.default_rng(6).standard_normal((8, 2)) * 3 + 1
    y = bn(Tensor(x)).data
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=0), 1, rtol=1e-5)
    assert bn.running_mean is None and list(bn.state_dict()) == ["weight", "bias"]


def test_analytic_is_one_node_and_can_be_switched():
    x = Tensor(np.random.default_rng(7).standard_normal((4, 3)), requires_grad=True)
    bn = nn.BatchNorm1d(3, dtype=F64)
    composed = bn(x)
    bn.analytic = True
    fused = bn(x)
    assert fused.grad_fn.parents[0] is x  # one node straight from the input
    assert composed.grad_fn.parents[0] is not x
    assert type(fused.grad_fn).__module__ == "tinygrad_bn.norms.fused"  # analytic re-exports it
    np.testing.assert_allclose(fused.data, composed.data, **TOL)
    assert int(bn.num_batches_tracked.data) == 2


def test_norm_calls_are_labelled_by_attribute_name():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn1 = nn.BatchNorm1d(3, dtype=F64)

        def forward(self, x):
            return self.bn1(x)

    y = Net()(Tensor(np.ones((4, 3)) + np.arange(3.0) * np.arange(4.0)[:, None],
                     requires_grad=True))
    path = y.grad_fn.scope.path()
    assert path[:2] == ["Net", "BatchNorm1d (bn1)"]
    assert y.grad_fn.scope.kind in ("module", "norm")


# -------------------------------------------------------------------------- errors
def _state(m):
    return {k: v.copy() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("analytic", [False, True], ids=["composed", "analytic"])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_failed_forward_changes_no_state(analytic, momentum):
    bn = nn.BatchNorm1d(3, momentum=momentum, dtype=F64, analytic=analytic)
    bn(Tensor(np.random.default_rng(8).standard_normal((4, 3))))
    before = _state(bn)
    bad_inputs = [
        ((1, 3), "1"),          # a batch of one in training
        ((1, 3, 1), "1"),       # one value per channel
        ((4, 5), r"\(4, 5\)"),  # wrong channels
        ((2, 3, 2, 2), r"\(2, 3, 2, 2\)"),  # wrong ndim for BatchNorm1d
        ((3,), r"\(3,\)"),
    ]
    for shape, pattern in bad_inputs:
        with pytest.raises(ValueError, match=pattern):
            bn(Tensor(np.ones(shape)))
        after = _state(bn)
        for k in before:
            np.testing.assert_array_equal(after[k], before[k], err_msg=f"{shape}: {k}")
    bn.eval()
    assert bn(Tensor(np.ones((1, 3)))).shape == (1, 3)  # eval takes a single sample


def test_input_dimension_errors_name_the_shape():
    with pytest.raises(ValueError, match=r"BatchNorm2d.*\(2, 3, 4\)"):
        nn.BatchNorm2d(3)(Tensor(np.ones((2, 3, 4))))
    with pytest.raises(ValueError, match=r"InstanceNorm1d.*\(2, 3, 4, 4\)"):
        nn.InstanceNorm1d(3)(Tensor(np.ones((2, 3, 4, 4))))
    with pytest.raises(ValueError, match=r"InstanceNorm2d.*\(2, 4, 3, 3\).*4 channels"):
        nn.InstanceNorm2d(3, affine=True)(Tensor(np.ones((2, 4, 3, 3))))
    with pytest.warns(UserWarning, match="num_features"):
        nn.InstanceNorm1d(3)(Tensor(np.random.default_rng(0).standard_normal((2, 4, 5))))
    with pytest.raises(ValueError, match=r"\(2, 5\)"):
        nn.LayerNorm(4)(Tensor(np.ones((2, 5))))
    with pytest.raises(ValueError, match="4"):
        nn.GroupNorm(2, 4)(Tensor(np.ones((2, 6, 3))))


def test_constructor_errors():
    with pytest.raises(ValueError, match=r"num_channels \(6\).*num_groups \(4\)"):
        nn.GroupNorm(4, 6)
    with pytest.raises(ValueError, match="num_features"):
        nn.BatchNorm1d(0)
    with pytest.raises(ValueError, match="momentum"):
        nn.BatchNorm2d(3, momentum=1.5)
    with pytest.raises(ValueError, match="normalized_shape"):
        nn.LayerNorm(())


def test_docstrings_state_the_variances():
    for cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm1d, nn.InstanceNorm2d):
        doc = cls.__doc__
        assert "**biased**" in doc and "**unbiased**" in doc, cls.__name__
        assert "(N, C" in doc
    for cls in (nn.LayerNorm, nn.GroupNorm):
        assert "**biased**" in cls.__doc__ and "shape" in cls.__doc__
