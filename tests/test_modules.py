"""Module system: registration, state_dict, train/eval, Sequential, Linear, activations,
Dropout, init. PyTorch (float64) is the oracle for names, keys, values and gradients."""
import math
from collections import OrderedDict

import numpy as np
import pytest

from tinygrad_bn import Tensor, no_grad
from tinygrad_bn.core import ops
from tinygrad_bn import nn
from tinygrad_bn.nn import init

F64 = np.float64


# --------------------------------------------------------------------------- helpers
def _to_torch_state(torch, state):
    return OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in state.items())


def _ours_net():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4, dtype=F64, rng=1)
            self.act = nn.Tanh()

        def forward(self, x):
            return self.act(self.fc(x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(3, 4, dtype=F64, rng=0)
            self.scale = nn.Parameter(np.ones(4))
            self.block = Block()
            self.head = nn.Sequential(nn.ReLU(), nn.Linear(4, 2, bias=False, dtype=F64, rng=2))

        def forward(self, x):
            return self.head(self.block(self.fc1(x) * self.scale))

    return Net()


def _torch_net(torch):
    tnn = torch.nn

    class Block(tnn.Module):
        def __init__(self):
            super().__init__()
            self.fc = tnn.Linear(4, 4)
            self.act = tnn.Tanh()

        def forward(self, x):
            return self.act(self.fc(x))

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = tnn.Linear(3, 4)
            self.scale = tnn.Parameter(torch.ones(4))
            self.block = Block()
            self.head = tnn.Sequential(tnn.ReLU(), tnn.Linear(4, 2, bias=False))

        def forward(self, x):
            return self.head(self.block(self.fc1(x) * self.scale))

    return Net()


# ---------------------------------------------------------------------------- Parameter
def test_parameter_is_a_tensor_that_requires_grad():
    p = nn.Parameter(np.zeros((2, 3)))
    assert isinstance(p, Tensor) and p.requires_grad and p.is_leaf
    assert p.shape == (2, 3) and p.dtype == F64
    assert not nn.Parameter(np.zeros(2), requires_grad=False).requires_grad
    assert nn.Parameter.__slots__ == ()
    with pytest.raises(AttributeError):
        p.anything = 1  # no __dict__: a Parameter is as small as a Tensor
    assert "Parameter containing" in repr(p)


# ------------------------------------------------------------------------- registration
def test_named_parameters_match_torch(torch):
    ours, theirs = _ours_net(), _torch_net(torch)
    got = [(n, p.shape) for n, p in ours.named_parameters()]
    want = [(n, tuple(p.shape)) for n, p in theirs.named_parameters()]
    assert got == want
    assert [p.shape for p in ours.parameters()] == [s for _, s in want]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    assert [type(m).__name__ for m in ours.children()] == ["Linear", "Block", "Sequential"]
    assert [n for n, _ in ours.named_parameters(recurse=False)] == ["scale"]


def test_shared_parameters_and_modules_like_torch(torch):
    lin = nn.Linear(2, 2, dtype=F64)
    ours = nn.Sequential(lin, nn.ReLU(), lin)
    tlin = torch.nn.Linear(2, 2)
    theirs = torch.nn.Sequential(tlin, torch.nn.ReLU(), tlin)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert len(list(ours.parameters())) == 2  # shared: listed once
    assert list(ours.state_dict()) == list(theirs.state_dict())  # but keyed under both names
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]


def test_reassignment_and_deletion_update_the_registries():
    m = nn.Linear(2, 3, dtype=F64)
    m.bias = None
    assert [n for n, _ in m.named_parameters()] == ["weight"]
    assert list(m.state_dict()) == ["weight"]
    m.bias = nn.Parameter(np.zeros(3))
    assert [n for n, _ in m.named_parameters()] == ["weight", "bias"]
    del m.bias
    assert [n for n, _ in m.named_parameters()] == ["weight"]
    with pytest.raises(TypeError, match="weight"):
        m.weight = np.zeros((3, 2))  # a plain array cannot replace a parameter
    seq = nn.Sequential(nn.ReLU())
    seq.extra = nn.Tanh()
    assert [n for n, _ in seq.named_children()] == ["0", "extra"]
    with pytest.raises(TypeError, match="extra"):
        seq.extra = "not a module"


def test_buffers_and_persistence():
    m = nn.Module()
    m.register_buffer("count", Tensor(np.array(3, dtype=np.int64)))
    m.register_buffer("cache", Tensor(np.zeros(2)), persistent=False)
    m.register_buffer("absent", None)
    assert [n for n, _ in m.named_buffers()] == ["count", "cache"]
    assert list(m.state_dict()) == ["count"]
    m.count = Tensor(np.array(5, dtype=np.int64))  # reassigning keeps it a buffer
    assert int(m.state_dict()["count"]) == 5
    with pytest.raises(TypeError, match="count"):
        m.count = 5
    with pytest.raises(KeyError):
        m.register_buffer("a.b", None)
    with pytest.raises(TypeError):
        m.register_buffer("arr", np.zeros(2))
    with pytest.raises(KeyError, match="training"):
        m.register_buffer("training", None)  # an existing attribute
    assert list(m.parameters()) == []


def test_assigning_before_init_is_an_error():
    class Bad(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(2))

    with pytest.raises(AttributeError, match="__init__"):
        Bad()


def test_train_eval_propagate_and_return_self():
    net = _ours_net()
    assert net.training and all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    assert net.train() is net and all(m.training for m in net.modules())
    net.head.train(False)
    assert net.training and not net.head[0].training and not net.head[1].training
    with pytest.raises(ValueError, match="bool"):
        net.train("no")


def test_zero_grad_sets_grads_to_none():
    net = _ours_net()
    net(Tensor(np.ones((2, 3)))).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_requires_grad_and_apply():
    net = _ours_net()
    net.requires_grad_(False)
    assert not any(p.requires_grad for p in net.parameters())
    seen = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert seen[-1] == "Net" and seen.count("Linear") == 3


def test_call_opens_a_labelled_scope():
    net = _ours_net()
    y = net(Tensor(np.ones((2, 3))))
    assert y._ctx.scope.path() == ["Net", "Sequential (head)", "Linear (1)"]
    assert y._ctx.scope.kind == "module"
    t = net.block(net.fc1(Tensor(np.ones((2, 3)))))
    assert t._ctx.scope.path() == ["Block (block)", "Tanh (act)"]
    with no_grad():
        assert net(Tensor(np.ones((2, 3)))).grad_fn is None


def test_forward_must_be_defined():
    with pytest.raises(NotImplementedError, match="Module"):
        nn.Module()(1)


def test_repr_matches_torch(torch):
    ours = nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.ReLU(), nn.Tanh()),
                         nn.Linear(4, 2, bias=False), nn.Sigmoid(), nn.Identity())
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4),
                                 torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Tanh()),
                                 torch.nn.Linear(4, 2, bias=False), torch.nn.Sigmoid(),
                                 torch.nn.Identity())
    assert repr(ours) == repr(theirs)
    assert repr(nn.Dropout(0.25)) == "Dropout(p=0.25)"


# --------------------------------------------------------------------------- state_dict
def test_state_dict_keys_values_and_copies(torch):
    ours, theirs = _ours_net(), _torch_net(torch)
    sd = ours.state_dict()
    assert isinstance(sd, OrderedDict)
    assert list(sd) == list(theirs.state_dict())
    assert all(type(v) is np.ndarray for v in sd.values())
    sd["fc1.weight"][...] = 7.0  # a copy: the module is not affected
    assert not np.any(ours.fc1.weight.data == 7.0)
    np.testing.assert_array_equal(sd["scale"], ours.scale.data)


def test_weights_move_both_ways_with_torch(torch):
    ours, theirs = _ours_net(), _torch_net(torch)
    x = np.random.default_rng(0).standard_normal((5, 3))
    # torch -> ours (torch tensors are accepted as they are)
    result = ours.load_state_dict(theirs.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    yt.pow(2).sum().backward()
    xo = Tensor(x, requires_grad=True)
    yo = ours(xo)
    (yo ** 2).sum().backward()
    np.testing.assert_allclose(yo.data, yt.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), rtol=0, atol=1e-12)
    for (n, p), (tn, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert n == tn
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=0, atol=1e-12)
    # ours -> torch -> a fresh ours: the same numbers survive the round trip
    fresh_torch = _torch_net(torch)
    fresh_torch.load_state_dict(_to_torch_state(torch, ours.state_dict()))
    again = _ours_net()
    again.load_state_dict({k: v.numpy() for k, v in fresh_torch.state_dict().items()})
    for k, v in ours.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[k], v)


def test_load_state_dict_casts_to_the_module_dtype_in_place():
    m = nn.Linear(2, 3)  # float32
    w = m.weight.data
    m.load_state_dict({"weight": np.full((3, 2), 0.5), "bias": np.arange(3.0)})
    assert m.weight.data is w and w.dtype == np.float32
    np.testing.assert_array_equal(m.bias.data, np.arange(3, dtype=np.float32))


def test_strict_loading_names_missing_and_unexpected_keys():
    net = _ours_net()
    sd = net.state_dict()
    del sd["block.fc.bias"]
    sd["block.fc.gamma"] = np.zeros(4)
    with pytest.raises(RuntimeError, match=r'Missing key\(s\).*"block.fc.bias"'):
        net.load_state_dict(sd)
    with pytest.raises(ValueError, match=r'Unexpected key\(s\).*"block.fc.gamma"'):
        net.load_state_dict(sd)
    before = net.state_dict()
    sd["fc1.weight"] = sd["fc1.weight"] + 1.0
    result = net.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["block.fc.bias"]
    assert result.unexpected_keys == ["block.fc.gamma"]
    np.testing.assert_array_equal(net.fc1.weight.data, before["fc1.weight"] + 1.0)
    with pytest.raises(TypeError):
        net.load_state_dict([("fc1.weight", np.zeros((4, 3)))])


def test_shape_mismatch_names_key_and_shapes_and_changes_nothing():
    net = _ours_net()
    before = net.state_dict()
    sd = {k: v + 1.0 for k, v in before.items()}  # every other entry is valid
    sd["block.fc.weight"] = np.zeros((4, 5))
    with pytest.raises(nn.StateDictError) as info:
        net.load_state_dict(sd, strict=False)  # shapes are checked whatever strict says
    msg = str(info.value)
    assert "block.fc.weight" in msg and "(4, 5)" in msg and "(4, 4)" in msg
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k])  # untouched, even the valid entries
    sd["block.fc.weight"] = np.array(["a"] * 16).reshape(4, 4)
    with pytest.raises(ValueError, match="block.fc.weight"):
        net.load_state_dict(sd)


# ---------------------------------------------------------------------------- Sequential
def test_sequential_container():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    seq = nn.Sequential(a, b)
    assert len(seq) == 2 and seq[0] is a and seq[-1] is b and list(seq) == [a, b]
    assert seq.append(c) is seq and seq[2] is c and len(seq) == 3
    sub = seq[1:]
    assert isinstance(sub, nn.Sequential) and list(sub) == [b, c]
    assert [n for n, _ in sub.named_children()] == ["1", "2"]  # torch keeps the keys
    seq[1] = nn.Tanh()
    assert isinstance(seq[1], nn.Tanh)
    with pytest.raises(IndexError, match="3"):
        seq[3]
    with pytest.raises(TypeError):
        seq["0"]
    named = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.ReLU())]))
    assert [n for n, _ in named.named_parameters()] == ["fc.weight", "fc.bias"]
    with pytest.raises(TypeError):
        nn.Sequential(nn.ReLU(), "relu")
    x = Tensor(np.ones((4, 2), np.float32))
    np.testing.assert_array_equal(seq(x).data, c(seq[1](a(x))).data)


# -------------------------------------------------------------------------------- Linear
def test_linear_matches_torch_and_is_one_node(torch):
    rng = np.random.default_rng(3)
    for bias in (True, False):
        ours = nn.Linear(5, 3, bias=bias, dtype=F64)
        theirs = torch.nn.Linear(5, 3, bias=bias)
        ours.load_state_dict(theirs.state_dict())
        x = rng.standard_normal((2, 4, 5))  # extra leading axes
        g = rng.standard_normal((2, 4, 3))
        xo, xt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        yo, yt = ours(xo), theirs(xt)
        assert isinstance(yo.grad_fn, ops.Linear)
        yo.backward(g)
        yt.backward(torch.from_numpy(g))
        np.testing.assert_allclose(yo.data, yt.detach().numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(xo.grad, xt.grad.numpy(), rtol=0, atol=1e-12)
        for (n, p), (_, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
            np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=0, atol=1e-12, err_msg=n)
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        nn.Linear(5, 3)(Tensor(np.ones((2, 4), np.float32)))
    with pytest.raises(RuntimeError, match="same dtype"):  # torch names the dtypes first too
        nn.Linear(5, 3)(Tensor(np.ones((2, 4))))


def test_linear_init_follows_torch_formula():
    fan_in = 400
    m = nn.Linear(fan_in, 300, rng=0)
    bound = 1 / math.sqrt(fan_in)  # kaiming_uniform(a=√5): gain √(1/3) times √(3/fan_in)
    assert m.weight.dtype == np.float32 and m.bias.dtype == np.float32
    for t in (m.weight.data, m.bias.data):
        assert np.abs(t).max() <= bound
    assert np.abs(m.weight.data).max() > 0.99 * bound  # fills the interval
    np.testing.assert_allclose(m.weight.data.std(), bound / math.sqrt(3), rtol=0.02)
    assert abs(m.weight.data.mean()) < 0.01 * bound
    same = nn.Linear(fan_in, 300, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(m.weight.data, same.weight.data)
    np.testing.assert_array_equal(m.bias.data, same.bias.data)
    assert not np.array_equal(nn.Linear(fan_in, 300, rng=1).weight.data, m.weight.data)
    assert nn.Linear(3, 2, dtype=F64).weight.dtype == F64


# --------------------------------------------------------------------------- activations
@pytest.mark.parametrize("name", ["ReLU", "Tanh", "Sigmoid", "Identity"])
def test_activations_match_torch(torch, name):
    x = np.random.default_rng(4).standard_normal((3, 4)) * 3
    g = np.random.default_rng(5).standard_normal((3, 4))
    xo, xt = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yo, yt = getattr(nn, name)()(xo), getattr(torch.nn, name)()(xt)
    yo.backward(g)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(yo.data, yt.detach().numpy(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), rtol=0, atol=1e-14)


# ------------------------------------------------------------------------------- Dropout
def test_dropout_statistics_and_gradient():
    p = 0.3
    d = nn.Dropout(p, rng=0)
    x = Tensor(np.ones((200, 500)), requires_grad=True)
    y = d(x)
    kept = y.data != 0
    assert abs(1 - kept.mean() - p) < 0.01  # about p of the elements are dropped
    np.testing.assert_allclose(y.data[kept], 1 / (1 - p))  # the rest are scaled up
    assert abs(y.data.mean() - 1.0) < 0.02  # the expected value is preserved
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, y.data)  # the gradient is the (constant) mask
    assert not np.array_equal(d(x).data, y.data)  # a fresh mask each call
    np.testing.assert_array_equal(nn.Dropout(p, rng=0)(x).data, y.data)  # seeded


def test_dropout_eval_identity_and_limits():
    x = Tensor(np.random.default_rng(0).standard_normal((4, 5)))
    d = nn.Dropout(0.5).eval()
    assert d(x) is x
    assert nn.Dropout(0.0)(x) is x
    assert not nn.Dropout(1.0)(x).data.any()
    assert nn.Dropout(0.5)(Tensor(np.ones(3, dtype=np.float32))).dtype == np.float32
    for bad in (-0.1, 1.5, "0.5", None):
        with pytest.raises(ValueError, match="between 0 and 1"):
            nn.Dropout(bad)


# ---------------------------------------------------------------------------------- init
def _empty(*shape):
    return Tensor(np.zeros(shape))


def test_calculate_gain_matches_torch(torch):
    for name, param in [("linear", None), ("sigmoid", None), ("tanh", None), ("relu", None),
                        ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None),
                        ("conv2d", None)]:
        assert init.calculate_gain(name, param) == pytest.approx(
            torch.nn.init.calculate_gain(name, param), abs=1e-15)
    with pytest.raises(ValueError, match="swish"):
        init.calculate_gain("swish")


def test_kaiming_and_xavier_statistics():
    fan_out, fan_in = 300, 200
    t = init.kaiming_normal_(_empty(fan_out, fan_in), nonlinearity="relu", rng=0)
    np.testing.assert_allclose(t.data.std(), math.sqrt(2 / fan_in), rtol=0.02)
    t = init.kaiming_normal_(_empty(fan_out, fan_in), mode="fan_out", nonlinearity="relu", rng=0)
    np.testing.assert_allclose(t.data.std(), math.sqrt(2 / fan_out), rtol=0.02)
    t = init.kaiming_uniform_(_empty(fan_out, fan_in), nonlinearity="relu", rng=0)
    bound = math.sqrt(6 / fan_in)
    assert np.abs(t.data).max() <= bound and np.abs(t.data).max() > 0.99 * bound
    np.testing.assert_allclose(t.data.std(), math.sqrt(2 / fan_in), rtol=0.02)
    t = init.xavier_uniform_(_empty(fan_out, fan_in), gain=init.calculate_gain("tanh"), rng=0)
    bound = 5 / 3 * math.sqrt(6 / (fan_in + fan_out))
    assert np.abs(t.data).max() <= bound and np.abs(t.data).max() > 0.99 * bound
    t = init.xavier_normal_(_empty(fan_out, fan_in), rng=0)
    np.testing.assert_allclose(t.data.std(), math.sqrt(2 / (fan_in + fan_out)), rtol=0.02)
    conv = init.kaiming_normal_(_empty(64, 16, 3, 3), rng=0)  # fan_in = 16·3·3
    np.testing.assert_allclose(conv.data.std(), math.sqrt(2 / (1 + 0.01 ** 2) / 144), rtol=0.02)


def test_simple_inits_work_in_place():
    t = _empty(100, 100)
    arr = t.data
    assert init.normal_(t, 2.0, 0.5, rng=0) is t and t.data is arr
    assert abs(arr.mean() - 2.0) < 0.02 and abs(arr.std() - 0.5) < 0.01
    init.uniform_(t, -2.0, 3.0, rng=0)
    assert arr.min() >= -2.0 and arr.max() < 3.0 and abs(arr.mean() - 0.5) < 0.05
    init.constant_(t, 0.25)
    assert (arr == 0.25).all()
    init.zeros_(t)
    assert not arr.any()
    init.ones_(t)
    assert (arr == 1).all()
    a = init.xavier_normal_(_empty(5, 5), rng=7).data
    np.testing.assert_array_equal(a, init.xavier_normal_(_empty(5, 5), rng=7).data)


def test_init_errors():
    with pytest.raises(ValueError, match=r"\(5,\)"):
        init.kaiming_uniform_(_empty(5))
    with pytest.raises(ValueError, match="fan_avg"):
        init.kaiming_normal_(_empty(3, 3), mode="fan_avg")
    with pytest.raises(ValueError, match="a <= b"):
        init.uniform_(_empty(3), 1.0, 0.0)
    with pytest.raises(ValueError, match="std"):
        init.normal_(_empty(3), 0.0, -1.0)
    with pytest.raises(TypeError):
        init.zeros_(np.zeros(3))
