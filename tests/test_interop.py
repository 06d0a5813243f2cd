"""``to_torch`` / ``from_torch``: the converted module is torch's (or ours) with the same settings,
weights, buffers, dtypes and modes, and it computes the same outputs, gradients and running
statistics; training continues in torch with the losses it would have had here."""
from __future__ import annotations

import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn import Tensor, nn
from tinygrad_bn.models import mlp
from tinygrad_bn.nn import functional as F

TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-5)}
DTYPES = [np.float64, np.float32]
# the layers whose constructors take dtype= (the others hold no tensors)
DTYPED = {"Linear", "Conv1d", "Conv2d", "BatchNorm1d", "BatchNorm2d", "InstanceNorm1d", "InstanceNorm2d",
          "LayerNorm", "GroupNorm", "RMSNorm"}
SETTINGS = ("in_features", "out_features", "p", "num_features", "eps", "momentum", "affine",
            "track_running_stats", "num_groups", "num_channels", "normalized_shape",
            "elementwise_affine")

# (id, class name in both libraries, args, kwargs, input shape)
CASES = [
    ("linear", "Linear", (5, 3), {}, (6, 5)),
    ("linear_no_bias", "Linear", (5, 3), {"bias": False}, (2, 6, 5)),
    ("relu", "ReLU", (), {}, (4, 5)),
    ("tanh", "Tanh", (), {}, (4, 5)),
    ("sigmoid", "Sigmoid", (), {}, (4, 5)),
    ("identity", "Identity", (), {}, (4, 5)),
    ("dropout_p0", "Dropout", (0.0,), {}, (4, 5)),  # Dropout(p > 0): test_dropout below
    ("bn1d", "BatchNorm1d", (4,), {}, (8, 4)),
    ("bn1d_seq_cma", "BatchNorm1d", (4,), {"momentum": None, "eps": 1e-3}, (8, 4, 5)),
    ("bn1d_no_affine", "BatchNorm1d", (4,), {"affine": False, "momentum": 0.3}, (8, 4)),
    ("bn1d_no_bias", "BatchNorm1d", (4,), {"bias": False}, (8, 4)),
    ("bn1d_untracked", "BatchNorm1d", (4,), {"track_running_stats": False}, (8, 4)),
    ("bn2d", "BatchNorm2d", (3,), {}, (4, 3, 5, 5)),
    ("in1d", "InstanceNorm1d", (3,), {}, (4, 3, 7)),
    ("in1d_tracked", "InstanceNorm1d", (3,), {"affine": True, "track_running_stats": True},
     (4, 3, 7)),
    ("in2d_tracked", "InstanceNorm2d", (3,), {"affine": True, "track_running_stats": True,
                                               "momentum": None, "bias": False}, (2, 3, 4, 5)),
    ("ln", "LayerNorm", (6,), {}, (4, 6)),
    ("ln_2d_no_affine", "LayerNorm", ((3, 4),), {"elementwise_affine": False, "eps": 1e-3},
     (2, 3, 4)),
    ("ln_no_bias", "LayerNorm", (6,), {"bias": False}, (4, 6)),
    ("gn", "GroupNorm", (2, 6), {}, (4, 6, 5)),
    ("gn_no_affine", "GroupNorm", (3, 6), {"affine": False, "eps": 1e-4}, (4, 6, 2)),
    ("gn_no_bias", "GroupNorm", (2, 6), {"bias": False}, (4, 6, 3)),
    ("rms", "RMSNorm", (6,), {}, (4, 6)),
    ("rms_2d_eps", "RMSNorm", ((3, 4),), {"eps": 1e-4}, (2, 3, 4)),
    ("rms_no_affine", "RMSNorm", (6,), {"elementwise_affine": False}, (4, 6)),
    ("conv2d", "Conv2d", (3, 4, 3), {"padding": 1}, (2, 3, 6, 6)),
    ("conv2d_strided_groups", "Conv2d", (4, 6, (3, 2)),
     {"stride": 2, "dilation": (1, 2), "groups": 2, "bias": False}, (2, 4, 9, 8)),
    ("conv2d_same", "Conv2d", (2, 2, 3), {"padding": "same"}, (1, 2, 5, 5)),
    ("conv1d", "Conv1d", (2, 3, 5), {"stride": 2, "padding": 2}, (3, 2, 11)),
    ("maxpool", "MaxPool2d", (3,), {"stride": 2, "padding": 1, "ceil_mode": True},
     (2, 3, 7, 7)),
    ("avgpool", "AvgPool2d", (2,), {"count_include_pad": False, "padding": 1}, (2, 3, 5, 5)),
    ("adaptive", "AdaptiveAvgPool2d", ((3, 2),), {}, (2, 3, 7, 5)),
    ("flatten", "Flatten", (), {"start_dim": 1, "end_dim": 2}, (2, 3, 4, 5)),
]


# ----------------------------------------------------------------------------- helpers
def _ours(name, args, kwargs, dtype):
    kw = dict(kwargs, dtype=dtype) if name in DTYPED else dict(kwargs)
    return getattr(nn, name)(*args, **kw)


def _theirs(torch, name, args, kwargs, dtype):
    kw = dict(kwargs)
    if name in DTYPED:
        kw["dtype"] = torch.from_numpy(np.empty(0, dtype=dtype)).dtype
    return getattr(torch.nn, name)(*args, **kw)


def _random_state(state: dict, rng) -> dict:
    """Values for every entry of a state_dict: weights N(0, 1), running variances in
    [0.5, 2], num_batches_tracked 3."""
    out = {}
    for k, v in state.items():
        v = np.asarray(v)
        if k.endswith("num_batches_tracked"):
            out[k] = np.array(3, dtype=v.dtype)
        elif k.endswith("running_var"):
            out[k] = rng.uniform(0.5, 2.0, v.shape).astype(v.dtype)
        else:
            out[k] = rng.normal(size=v.shape).astype(v.dtype)
    return out


def _state(m) -> "OrderedDict[str, np.ndarray]":
    """state_dict as ndarrays, for either library."""
    return OrderedDict((k, v.detach().numpy() if hasattr(v, "detach") else v)
                       for k, v in m.state_dict().items())


def _modules(m):
    return [sub for _, sub in m.named_modules()]


def _assert_same_module(ours, theirs):
    """Same classes, settings, modes, state_dict keys (in order), values, dtypes and
    requires_grad, module by module."""
    mine, other = _modules(ours), _modules(theirs)
    assert [type(m).__name__ for m in mine] == [type(m).__name__ for m in other]
    for m, t in zip(mine, other):
        assert m.training == t.training, type(m).__name__
        for attr in SETTINGS:
            if hasattr(t, attr):
                assert getattr(m, attr) == getattr(t, attr), (type(t).__name__, attr)
        assert (getattr(m, "bias", None) is None) == (getattr(t, "bias", None) is None)
    a, b = _state(ours), _state(theirs)
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ga = {k: p.requires_grad for k, p in ours.named_parameters()}
    gb = {k: p.requires_grad for k, p in theirs.named_parameters()}
    assert ga == gb


def _run_both(torch, ours, theirs, shape, dtype, rng):
    """Forward and backward on the same input: outputs, input and parameter gradients and the
    state afterwards (running statistics) agree."""
    tol = TOL[dtype]
    x = rng.normal(size=shape).astype(dtype)
    xo, xt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yo, yt = ours(xo), theirs(xt)
    assert yo.dtype == yt.detach().numpy().dtype
    np.testing.assert_allclose(yo.data, yt.detach().numpy(), **tol)
    g = rng.normal(size=yo.shape).astype(dtype)
    yo.backward(g)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), **tol)
    pt = dict(theirs.named_parameters())
    for k, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, pt[k].grad.numpy(), err_msg=k, **tol)
    a, b = _state(ours), _state(theirs)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], err_msg=k, **tol)


# ---------------------------------------------------------------------- every layer
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_to_torch_layer(torch, case, dtype, training):
    _, name, args, kwargs, shape = case
    rng = np.random.default_rng(1)
    ours = _ours(name, args, kwargs, dtype)
    ours.load_state_dict(_random_state(ours.state_dict(), rng))
    ours.train(training)
    theirs = tg.to_torch(ours)
    assert type(theirs) is getattr(torch.nn, name)
    _assert_same_module(ours, theirs)
    assert list(theirs.state_dict()) == list(_theirs(torch, name, args, kwargs,
                                                     dtype).state_dict())
    _run_both(torch, ours, theirs, shape, dtype, rng)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_from_torch_layer(torch, case, dtype, training):
    _, name, args, kwargs, shape = case
    rng = np.random.default_rng(2)
    theirs = _theirs(torch, name, args, kwargs, dtype)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in
                            _random_state(_state(theirs), rng).items()})
    theirs.train(training)
    ours = tg.from_torch(theirs)
    assert type(ours) is getattr(nn, name)
    _assert_same_module(ours, theirs)
    _run_both(torch, ours, theirs, shape, dtype, rng)


def test_dropout(torch):
    """p carries over both ways (torch's inplace= is dropped); masks come from each library's
    own generator, so they differ, but each output element is 0 or x / (1 - p)."""
    x = np.random.default_rng(0).normal(size=(50, 40)) + 5.0
    for ours, theirs in [(nn.Dropout(0.3), None), (None, torch.nn.Dropout(0.25, inplace=True))]:
        ours = tg.from_torch(theirs) if ours is None else ours
        theirs = tg.to_torch(ours) if theirs is None else theirs
        assert type(theirs) is torch.nn.Dropout and type(ours) is nn.Dropout
        assert ours.p == theirs.p
        for y in (ours(Tensor(x)).data, theirs(torch.tensor(x)).numpy()):
            kept = y != 0
            np.testing.assert_allclose(y[kept], x[kept] / (1 - ours.p), rtol=1e-12)
            assert 0.1 < 1 - kept.mean() < 0.45
        ours.eval(), theirs.eval()
        np.testing.assert_array_equal(ours(Tensor(x)).data, theirs(torch.tensor(x)).numpy())


# ------------------------------------------------------------------- models and state
def _bn_mlp(momentum, dtype=np.float64):
    return nn.Sequential(nn.Linear(3, 8, dtype=dtype, rng=0),
                         nn.BatchNorm1d(8, momentum=momentum, dtype=dtype), nn.ReLU(),
                         nn.Linear(8, 4, dtype=dtype, rng=1), nn.BatchNorm1d(4, dtype=dtype))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_statistics_carry_over_after_training(torch, momentum):
    """Five training batches here, convert, three more on each side: running statistics
    (and num_batches_tracked, which momentum=None averages by) stay equal; the same the other
    way round; eval outputs agree."""
    rng = np.random.default_rng(3)
    batches = [rng.normal(size=(16, 3)) * 2 + 1 for _ in range(8)]
    ours = _bn_mlp(momentum)
    with tg.no_grad():
        for x in batches[:5]:
            ours(Tensor(x))
    theirs = tg.to_torch(ours)
    assert int(theirs[1].num_batches_tracked) == 5
    _assert_same_module(ours, theirs)
    with tg.no_grad(), torch.no_grad():
        for x in batches[5:]:
            ours(Tensor(x)), theirs(torch.tensor(x))
    a, b = _state(ours), _state(theirs)
    assert int(b["1.num_batches_tracked"]) == 8
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-14, err_msg=k)
    ours.eval(), theirs.eval()
    x = rng.normal(size=(5, 3))
    np.testing.assert_allclose(ours(Tensor(x)).data, theirs(torch.tensor(x)).detach().numpy(),
                               rtol=1e-12, atol=1e-14)
    back = tg.from_torch(theirs.train())  # and back: a torch-trained model continues here
    with tg.no_grad(), torch.no_grad():
        for x in batches[:3]:
            back(Tensor(x)), theirs(torch.tensor(x))
    a, b = _state(back), _state(theirs)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-14, err_msg=k)


def test_round_trip_preserves_everything(torch):
    """to_torch(from_torch(m)) and from_torch(to_torch(m)): same repr (every setting), state,
    dtypes, requires_grad and per-module train/eval mode."""
    rng = np.random.default_rng(4)
    theirs = torch.nn.Sequential(OrderedDict([
        ("fc", torch.nn.Linear(4, 6, bias=False, dtype=torch.float32)),
        ("bn", torch.nn.BatchNorm1d(6, eps=1e-3, momentum=None, dtype=torch.float32)),
        ("act", torch.nn.Tanh()),
        ("block", torch.nn.Sequential(
            torch.nn.LayerNorm(6, elementwise_affine=True, bias=False),
            torch.nn.GroupNorm(3, 6, eps=1e-4, affine=False),
            torch.nn.RMSNorm(6, eps=None),
            torch.nn.Dropout(0.1), torch.nn.Identity(), torch.nn.Sigmoid())),
        ("inorm", torch.nn.InstanceNorm1d(6, momentum=0.2, affine=True,
                                          track_running_stats=True)),
        ("bn2", torch.nn.BatchNorm2d(2, affine=False, track_running_stats=False)),
        ("head", torch.nn.Linear(6, 2)),
    ]))
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in
                            _random_state(_state(theirs), rng).items()})
    theirs.block.eval()
    theirs.fc.weight.requires_grad_(False)
    ours = tg.from_torch(theirs)
    _assert_same_module(ours, theirs)
    assert ours.fc.weight.dtype == np.float32 and ours.head.weight.dtype == np.float64
    again = tg.to_torch(ours)
    assert repr(again) == repr(theirs)
    _assert_same_module(ours, again)
    for (k, a), (_, b) in zip(again.state_dict().items(), theirs.state_dict().items()):
        assert a.dtype == b.dtype and torch.equal(a, b), k
    assert [m.training for m in again.modules()] == [m.training for m in theirs.modules()]
    ours2 = tg.from_torch(again)
    assert repr(ours2) == repr(ours)
    _assert_same_module(ours2, again)


def test_shared_module_stays_shared(torch):
    lin = nn.Linear(4, 4, dtype=np.float64)
    theirs = tg.to_torch(nn.Sequential(lin, nn.ReLU(), lin))
    assert theirs[0] is theirs[2]
    assert list(theirs.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    ours = tg.from_torch(theirs)
    assert ours[0] is ours[2]
    assert len(list(ours.parameters())) == 2


def test_conversion_copies_data(torch):
    """No shared memory: changing one side afterwards leaves the other as it was."""
    ours = nn.BatchNorm1d(3, dtype=np.float64)
    theirs = tg.to_torch(ours)
    with torch.no_grad():
        theirs.weight.add_(1.0)
        theirs.running_mean.add_(1.0)
    assert np.all(ours.weight.data == 1.0) and np.all(ours.running_mean.data == 0.0)
    back = tg.from_torch(theirs)
    back.weight.data[...] = -5.0
    back.running_var.data[...] = 7.0
    assert torch.all(theirs.weight == 2.0) and torch.all(theirs.running_var == 1.0)


def test_analytic_flag_has_no_torch_counterpart(torch):
    """to_torch accepts analytic=True layers (same numbers); from_torch gives the default."""
    rng = np.random.default_rng(5)
    ours = nn.BatchNorm1d(4, dtype=np.float64, analytic=True)
    ours.load_state_dict(_random_state(ours.state_dict(), rng))
    theirs = tg.to_torch(ours)
    _run_both(torch, ours, theirs, (8, 4), np.float64, rng)
    assert tg.from_torch(theirs).analytic is False


def test_conversion_leaves_random_generators_alone(torch):
    """Building the layer does not draw from either library's default generator."""
    tg.manual_seed(7), torch.manual_seed(7)
    expected = tg.randn(3).data, torch.randn(3)
    tg.manual_seed(7), torch.manual_seed(7)
    tg.from_torch(tg.to_torch(nn.Linear(20, 30, rng=0)))
    np.testing.assert_array_equal(tg.randn(3).data, expected[0])
    assert torch.equal(torch.randn(3), expected[1])


# ------------------------------------------------------------- training continues in torch
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
def test_training_continues_in_torch_with_the_same_losses(torch, dtype):
    """An MLP with BatchNorm trained 5 SGD steps here, then 5 more either here
    (tinygrad_bn.optim.SGD) or in torch after to_torch (torch.optim.SGD): the same losses
    and weights. Plain SGD: momentum buffers are optimizer state, which is not converted (a
    fresh torch optimizer would start them from zero)."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(64, 2)).astype(dtype)
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64) + (x[:, 0] > 1)
    batches = [rng.choice(64, 16, replace=False) for _ in range(10)]
    model = mlp(2, [16, 16], 3, norm="batch", dtype=dtype, rng=0)
    opt = tg.optim.SGD(model.parameters(), lr=0.2)

    def step_here(idx):
        loss = F.cross_entropy(model(Tensor(x[idx])), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    for idx in batches[:5]:
        step_here(idx)
    theirs = tg.to_torch(model)
    topt = torch.optim.SGD(theirs.parameters(), lr=0.2)

    def step_torch(idx):
        loss = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x[idx])),
                                                 torch.from_numpy(y[idx]))
        topt.zero_grad()
        loss.backward()
        topt.step()
        return loss.item()

    here = [step_here(idx) for idx in batches[5:]]
    there = [step_torch(idx) for idx in batches[5:]]
    tol = dict(rtol=1e-12, atol=0) if dtype == np.float64 else dict(rtol=1e-5, atol=0)
    np.testing.assert_allclose(there, here, **tol)
    a, b = _state(model), _state(theirs)
    for k in a:
        assert a[k].dtype == b[k].dtype
        np.testing.assert_allclose(b[k], a[k], err_msg=k,
                                   **(tol if dtype == np.float64 else TOL[np.float32]))


# ------------------------------------------------------------------------------ errors
class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(x).relu()


class _MyLinear(nn.Linear):
    pass


def test_unsupported_types_raise_type_error(torch):
    with pytest.raises(TypeError, match=r"_Net.*user-defined.*children.*Supported types: "
                                        r"Sequential, Linear"):
        tg.to_torch(_Net())
    with pytest.raises(TypeError, match=r"_Net \(at '1\.0'\).*children"):
        tg.to_torch(nn.Sequential(nn.ReLU(), nn.Sequential(_Net())))
    with pytest.raises(TypeError, match="_MyLinear.*user-defined"):
        tg.to_torch(_MyLinear(2, 2))
    with pytest.raises(TypeError, match="expects a tinygrad_bn.nn.Module, got ndarray"):
        tg.to_torch(np.zeros(3))
    with pytest.raises(TypeError, match="use from_torch"):
        tg.to_torch(torch.nn.ReLU())
    with pytest.raises(TypeError, match=r"LSTM \(at '0'\) has no tinygrad_bn counterpart.*"
                                        r"Supported types: .*BatchNorm1d"):
        tg.from_torch(torch.nn.Sequential(torch.nn.LSTM(1, 1)))

    class TorchNet(torch.nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="TorchNet.*user-defined.*from_torch"):
        tg.from_torch(TorchNet())
    with pytest.raises(TypeError, match="use to_torch"):
        tg.from_torch(nn.ReLU())


def test_inconsistent_or_unrepresentable_torch_modules_raise(torch):
    lin = torch.nn.Linear(2, 3)
    lin.register_parameter("scale", torch.nn.Parameter(torch.ones(3)))
    with pytest.raises(ValueError, match=r"parameters \['bias', 'scale', 'weight'\]"):
        tg.from_torch(lin)
    lin = torch.nn.Linear(2, 3)
    lin.weight = torch.nn.Parameter(torch.ones(4, 2))
    with pytest.raises(ValueError, match=r"Linear.weight has shape \(4, 2\).*\(3, 2\)"):
        tg.from_torch(lin)
    with pytest.raises(TypeError, match=r"bfloat16.*module.float\(\)"):
        tg.from_torch(torch.nn.Linear(2, 3, dtype=torch.bfloat16))


def test_missing_torch_raises_import_error_with_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    for fn, arg in ((tg.to_torch, nn.ReLU()), (tg.from_torch, object())):
        with pytest.raises(ImportError, match="pip install torch") as err:
            fn(arg)
        assert "\n" not in str(err.value)


def test_import_does_not_import_torch():
    code = ("import sys; import tinygrad_bn as tg; assert 'torch' not in sys.modules\n"
            "sys.modules['torch'] = None\n"
            "try:\n    tg.to_torch(tg.nn.ReLU())\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install torch" in out.stdout


def test_embedding_both_ways(torch):
    ours = nn.Embedding(7, 3, padding_idx=-2, scale_grad_by_freq=True, dtype=np.float64)
    theirs = tg.to_torch(ours)
    assert type(theirs) is torch.nn.Embedding
    assert (theirs.padding_idx, theirs.scale_grad_by_freq) == (5, True)
    idx = np.array([[0, 5, 6], [5, 1, 1]])
    np.testing.assert_array_equal(ours(Tensor(idx)).data,
                                  theirs(torch.from_numpy(idx)).detach().numpy())
    back = tg.from_torch(theirs)
    assert (back.num_embeddings, back.embedding_dim, back.padding_idx) == (7, 3, 5)
    np.testing.assert_array_equal(back.weight.data, ours.weight.data)
    assert back.weight.dtype == np.float64
