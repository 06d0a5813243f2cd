"""Regenerate the pictures, the stepper page and the numbers of ``follow-the-gradient.md``
and ``graphs.md``: ``python docs/stepper/generate.py`` (needs Graphviz's ``dot``).

Writes ``docs/stepper/bn_backward.html`` and ``docs/img/follow_bn_grad.svg`` and ``graph_*.svg``, and
prints the numbers that the pages quote, so that a change in the engine that moves them
shows up as a diff of this script's output against the pages. (MkDocs does not copy this
file into the site: ``exclude_docs`` in mkdocs.yml.)
"""
from pathlib import Path

import numpy as np

import tinygrad_bn as tb
from tinygrad_bn import Tensor, nn, viz
from tinygrad_bn.compare import compare
from tinygrad_bn.nn import functional as F
from tinygrad_bn.norms.batch_norm import batch_norm_derived, tutorial_boxed_batch_norm_derived

DOCS = Path(__file__).resolve().parents[1]
IMG = DOCS / "img"
np.set_printoptions(precision=4, suppress=True, floatmode="fixed")


# ------------------------------------------------------------ follow-the-gradient.md
def composed_bn(x, γ, β, eps=1e-5):
    """BatchNorm over axis 0, written with the engine's primitives."""
    μ = x.mean(axis=0, keepdims=True).named("μ")
    d = (x - μ).named("x - μ")
    σ2 = (d ** 2).mean(axis=0, keepdims=True).named("σ²")
    σ = (σ2 + eps).sqrt().named("σ")
    x̂ = (d / σ).named("x̂")
    return (γ * x̂ + β).named("y")


def inputs():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((4, 3)) * 2 + 1, requires_grad=True, name="x")
    γ = Tensor(rng.uniform(0.5, 1.5, 3), requires_grad=True, name="γ")
    β = Tensor(rng.standard_normal(3), requires_grad=True, name="β")
    g = rng.standard_normal((4, 3))  # the upstream gradient ∂L/∂y
    return x, γ, β, g


def follow_the_gradient():
    x, γ, β, g = inputs()
    y = composed_bn(x, γ, β)
    viz.render_graph(y, IMG / "follow_bn_grad.svg", rankdir="TB", show_grad=True,
                     grad_outputs=g)
    viz.render_backward(y, DOCS / "stepper" / "bn_backward.html", gradient=g,
                        title="Backward pass of a BatchNorm composed from primitives "
                              "(x of shape (4, 3))", rankdir="TB")

    print("x =\n", x.data, "\nγ =", γ.data, "\nβ =", β.data, "\ng =\n", g)
    parts = tb.grad_paths(y, x, via=("μ", "σ²", "x̂"), grad_output=g)
    for k, v in parts.items():
        print(f"--- {k}\n{v}")
    (full,) = tb.grad(y, x, grad_outputs=g, retain_graph=True)
    print("autograd ∂L/∂x =\n", full.data)
    print("max |sum of parts - autograd| =", np.abs(sum(parts.values()) - full.data).max())

    # the three terms from the derivation, in NumPy
    m = x.shape[0]
    xd, w = x.data, γ.data
    mu = xd.mean(0)
    var = ((xd - mu) ** 2).mean(0)
    s = np.sqrt(var + 1e-5)
    dxhat = g * w
    dvar = (dxhat * (xd - mu)).sum(0) * -0.5 * s ** -3
    dmu = -(dxhat / s).sum(0)
    terms = {"x̂": dxhat / s, "σ²": dvar * 2 * (xd - mu) / m, "μ": np.broadcast_to(dmu / m, xd.shape)}
    for k, t in terms.items():
        print(f"term {k}: max |grad_paths - formula| = {np.abs(parts[k] - t).max():.1e}")

    # the simplified formula, by hand, against autograd and central differences
    xhat = (xd - mu) / s
    dx = w / (m * s) * (m * g - g.sum(0) - xhat * (g * xhat).sum(0))
    boxed = w / (np.sqrt(m) * s) * (np.sqrt(m) * g - g.sum(0) - xhat * (g * xhat).sum(0))

    def loss(a):
        return float((composed_bn(Tensor(a), Tensor(w), Tensor(β.data)).data * g).sum())

    num = np.zeros_like(xd)
    h = 1e-6
    for i in np.ndindex(xd.shape):
        e = np.zeros_like(xd)
        e[i] = h
        num[i] = (loss(xd + e) - loss(xd - e)) / (2 * h)
    print("hand-derived ∂L/∂x =\n", dx)
    for name, a, b in (("hand-derived vs autograd", dx, full.data),
                       ("hand-derived vs numeric", dx, num),
                       ("autograd vs numeric", full.data, num),
                       ("boxed vs autograd", boxed, full.data)):
        print(f"{name:26s} max abs diff {np.abs(a - b).max():.2e}")

    def bn(x, w, b):
        return composed_bn(x, w, b)

    def derived(x, w, b):
        return batch_norm_derived(x, None, None, w, b, training=True)

    def boxed_op(x, w, b):
        return tutorial_boxed_batch_norm_derived(x, None, None, w, b, training=True)

    report = (compare(bn, (4, 3), derived=derived, label="composed_bn")
              + compare(bn, (4, 3), derived=boxed_op, label="tutorial's boxed",
                        expect_wrong_dx=True))
    print(report)


# ------------------------------------------------------------------------ graphs.md
def graphs():
    tb.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    inputs, target = Tensor.randn(16, 2), [0, 1, 2, 0] * 4
    with viz.trace():
        loss = F.cross_entropy(model(inputs), target)
    loss.backward(retain_graph=True)
    viz.render_graph(loss, IMG / "graph_mlp_grad.svg", params=model, show_grad=True,
                     rankdir="TB")
    viz.render_graph(loss, IMG / "graph_mlp_data.svg", params=model, show_data=True,
                     collapse="BatchNorm1d*", rankdir="TB")

    tb.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 10))
    images, labels = Tensor.randn(8, 1, 8, 8), list(range(8))
    loss = F.cross_entropy(cnn(images), labels)
    viz.render_graph(loss, IMG / "graph_cnn.svg", params=cnn)
    viz.render_graph(loss, IMG / "graph_cnn_collapsed.svg", params=cnn, collapse=True,
                     rankdir="TB")


if __name__ == "__main__":
    follow_the_gradient()
    graphs()
