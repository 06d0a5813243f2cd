"""Convolutions against PyTorch in the same run, float32:

1. ``Conv2d`` forward + backward, input (32, 16, 28, 28), 16 -> 32 channels, kernel 3,
   padding 1 (gradients of the input, the weight and the bias);
2. one SGD step (momentum 0.9) of a small BatchNorm CNN on (64, 1, 28, 28) images:
   Conv(1→16, 3) BN ReLU MaxPool(2)  Conv(16→32, 3) BN ReLU MaxPool(2)  Flatten Linear(→10),
   cross-entropy, with the composed and the fused (analytic) BatchNorm2d.

PyTorch runs with its default thread count (see the header line); ours is single-threaded
NumPy (one matmul per convolution, which NumPy's BLAS may thread).

Run: python benchmarks/bench_cnn.py [--quick]
"""
from __future__ import annotations

import sys

import numpy as np

from _harness import environment, fmt_time, median_time, table

import tinygrad_bn as tb
from tinygrad_bn import Tensor, nn, optim
from tinygrad_bn.nn import functional as F

QUICK = "--quick" in sys.argv


def conv_ours(X, W, B, G):
    x = Tensor(X, requires_grad=True)
    w = Tensor(W, requires_grad=True)
    b = Tensor(B, requires_grad=True)

    def step():
        x.grad = w.grad = b.grad = None
        F.conv2d(x, w, b, padding=1).backward(G)
    return step


def conv_torch(X, W, B, G):
    import torch

    x, w, b = (torch.tensor(a, requires_grad=True) for a in (X, W, B))
    g = torch.tensor(G)

    def step():
        x.grad = w.grad = b.grad = None
        torch.nn.functional.conv2d(x, w, b, padding=1).backward(g)
    return step


def cnn(lib, analytic=None):
    kw = {} if analytic is None else {"analytic": analytic}
    return lib.Sequential(
        lib.Conv2d(1, 16, 3, padding=1), lib.BatchNorm2d(16, **kw), lib.ReLU(), lib.MaxPool2d(2),
        lib.Conv2d(16, 32, 3, padding=1), lib.BatchNorm2d(32, **kw), lib.ReLU(), lib.MaxPool2d(2),
        lib.Flatten(), lib.Linear(32 * 7 * 7, 10))


def cnn_ours(analytic, X, y, state):
    model = cnn(nn, analytic)
    model.load_state_dict(state)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    xt = Tensor(X)

    def step():
        opt.zero_grad()
        F.cross_entropy(model(xt), y).backward()
        opt.step()
    return step


def cnn_torch(X, y, state):
    import torch

    model = cnn(torch.nn)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    return step


def main():
    print(f"tinygrad_bn {tb.__version__} CNN benchmark — {environment()}\n")
    rng = np.random.default_rng(0)
    reps = 5 if QUICK else 11
    X = rng.standard_normal((32, 16, 28, 28)).astype(np.float32)
    W = (rng.standard_normal((32, 16, 3, 3)) * 0.1).astype(np.float32)
    B = rng.standard_normal(32).astype(np.float32)
    G = rng.standard_normal((32, 32, 28, 28)).astype(np.float32)
    t_conv = median_time(conv_ours(X, W, B, G), repeats=reps)
    try:
        t_conv_torch = median_time(conv_torch(X, W, B, G), repeats=reps)
    except ImportError:
        t_conv_torch = None

    Xi = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    yi = rng.integers(0, 10, 64)
    state = cnn(nn).state_dict()
    t_comp = median_time(cnn_ours(False, Xi, yi, state), repeats=reps)
    t_fused = median_time(cnn_ours(True, Xi, yi, state), repeats=reps)
    try:
        t_cnn_torch = median_time(cnn_torch(Xi, yi, state), repeats=reps)
    except ImportError:
        t_cnn_torch = None

    def r(t, ref):
        return "—" if ref is None else f"{t / ref:.2f}x"
    rows = [
        ["Conv2d fwd+bwd (32,16,28,28) → 32, k3", fmt_time(t_conv), fmt_time(t_conv_torch),
         r(t_conv, t_conv_torch)],
        ["BN CNN step, batch 64, composed BN", fmt_time(t_comp), fmt_time(t_cnn_torch),
         r(t_comp, t_cnn_torch)],
        ["BN CNN step, batch 64, fused BN", fmt_time(t_fused), fmt_time(t_cnn_torch),
         r(t_fused, t_cnn_torch)],
    ]
    print(table(["workload", "tinygrad_bn", "PyTorch", "ratio"], rows))


if __name__ == "__main__":
    main()
