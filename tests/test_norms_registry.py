"""Every registered norm: three-way comparison, drawable, usable as a layer; the plain
BatchNormOp against torch and the fused kernel; a toy norm added by one registration."""
import numpy as np
import pytest

from tinygrad_bn import Tensor, models, viz
from tinygrad_bn.compare import compare
from tinygrad_bn.norms import batch_norm_derived, fused, registry
from tinygrad_bn.norms.batch_norm import tutorial_boxed_batch_norm_derived

NAMES = registry.names()


@pytest.mark.parametrize("name", NAMES)
def test_registered_norm_compares_draws_and_trains(name):
    entry = registry.get(name)
    rng = np.random.default_rng(0)
    shape, settings = entry.example(rng)
    assert compare(name, shape, **settings).ok
    y, title = registry.get(name).example_call(rng)
    dot = viz.draw_graph(y)
    assert len(dot.body) > 3 and entry.label(shape, True, entry.settings(shape)) in title
    assert any(name in line or entry.composed.__name__ in line for line in dot.body)
    if entry.module is not None and not entry.variant:
        model = models.mlp(3, [8], 2, norm=entry.short or name)
        model(Tensor(rng.standard_normal((6, 3)).astype(np.float32))).sum().backward()


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
@pytest.mark.parametrize("shape,training", [((8, 3), True), ((4, 3, 5), True),
                                            ((3, 2, 3, 3), True), ((8, 3), False)])
def test_fused_batch_norm_equals_the_plain_op(dtype, tol, shape, training):
    rng = np.random.default_rng(1)
    arrays = [rng.standard_normal(shape), rng.uniform(0.5, 1.5, shape[1]),
              rng.standard_normal(shape[1])]
    u = rng.standard_normal(shape).astype(dtype)
    out = []
    for fn in (fused.batch_norm, batch_norm_derived):
        rm, rv = np.zeros(shape[1], dtype), np.ones(shape[1], dtype) * 1.5
        ts = [Tensor(a.astype(dtype), requires_grad=True) for a in arrays]
        y = fn(ts[0], rm, rv, ts[1], ts[2], training=training)
        y.backward(u)
        out.append([y.data, rm, rv] + [t.grad for t in ts])
    for a, b in zip(*out):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_plain_batch_norm_op_matches_torch_and_the_boxed_variant_does_not():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((10, 4)), rng.uniform(0.5, 1.5, 4), rng.standard_normal(4)
    u = rng.standard_normal((10, 4))
    tt = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    torch.nn.functional.batch_norm(tt[0], None, None, tt[1], tt[2], training=True).backward(
        torch.tensor(u))
    for fn, right in ((batch_norm_derived, True), (tutorial_boxed_batch_norm_derived, False)):
        ts = [Tensor(a, requires_grad=True) for a in (x, w, b)]
        fn(ts[0], None, None, ts[1], ts[2], training=True).backward(u)
        assert type(ts[0].grad) is np.ndarray
        assert np.allclose(ts[0].grad, tt[0].grad.numpy(), atol=1e-10) == right
        for t, r in zip(ts[1:], tt[1:]):  # dγ, dβ are right either way
            np.testing.assert_allclose(t.grad, r.grad.numpy(), atol=1e-10)


def _toy(x, weight, bias):  # divide by √(mean(x²) + 1) over the last axis
    return x / ((x * x).mean(-1, keepdim=True) + 1.0).sqrt() * weight + bias


def test_a_toy_norm_is_one_registration():
    from tinygrad_bn import nn

    class Toy(nn.Module):
        def __init__(self, features, dtype=np.float32, analytic=False):
            super().__init__()
            self.weight = nn.Parameter(np.ones(features, dtype=dtype))
            self.bias = nn.Parameter(np.zeros(features, dtype=dtype))

        def forward(self, x):
            return _toy(x, self.weight, self.bias)

    registry.register(
        "toy_norm", short="toy", composed=_toy, derived=_toy,
        call=lambda fn, x, w, b, training=True: fn(x, w, b),
        param_shape=lambda shape, s: shape[-1:], example=lambda rng: ((4, 5), {}),
        label=lambda shape, training, s: "toy_norm", module=Toy)
    try:
        assert "toy_norm" in registry.names() and "toy" in models.norm_names()
        assert compare("toy_norm", (4, 5)).ok
        y, title = registry.get("toy").example_call(np.random.default_rng(0))
        assert title.startswith("toy_norm") and len(viz.draw_graph(y).body) > 3
        model = models.mlp(3, [5], 2, norm="toy")
        assert any(isinstance(m, Toy) for m in model)
    finally:
        registry.unregister("toy_norm")
    assert "toy_norm" not in registry.names()
    with pytest.raises(ValueError, match="unknown norm"):
        registry.get("toy_norm")
