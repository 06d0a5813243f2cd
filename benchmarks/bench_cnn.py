"""Convolutions against PyTorch in the same run, float32:

1. ``Conv2d`` forward + backward, input (32, 16, 28, 28), 16 -> 32 channels, kernel 3,
   padding 1 (gradients of the input, the weight and the bias);
2. one SGD step (momentum 0.9) of a small BatchNorm CNN on (64, 1, 28, 28) images:
   Conv(1→16, 3) BN ReLU MaxPool(2)  Conv(16→32, 3) BN ReLU MaxPool(2)  Flatten Linear(→10),
   cross-entropy, with the composed and the fused (analytic) BatchNorm2d.

PyTorch runs with its default thread count (see the header line); ours is single-threaded
NumPy (one matmul per convolution, which NumPy's BLAS may thread). Target: the Conv2d
forward + backward <= 3x PyTorch's time.

Run: python benchmarks/bench_cnn.py [--quick]
"""
from __future__ import annotations

import sys

import numpy as np

from _harness import (TARGET_HEADER, compare, environment, fmt_ratio, fmt_time, ratio, table,
                      target_ratio, timing)

import tinygrad_bn as tb
from tinygrad_bn import Tensor, nn, optim
from tinygrad_bn.nn import functional as F

QUICK = "--quick" in sys.argv
CONV_VS_TORCH = 3.0



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


def conv_workloads() -> dict:
    """Conv2d forward + backward on (32, 16, 28, 28), 16 -> 32 channels, kernel 3, padding 1:
    ours and PyTorch's (None if not installed)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 16, 28, 28)).astype(np.float32)
    W = (rng.standard_normal((32, 16, 3, 3)) * 0.1).astype(np.float32)
    B = rng.standard_normal(32).astype(np.float32)
    G = rng.standard_normal((32, 32, 28, 28)).astype(np.float32)
    try:
        t = conv_torch(X, W, B, G)
    except ImportError:
        t = None
    return {"ours": conv_ours(X, W, B, G), "torch": t}


def cnn_workloads() -> dict:
    """One step of the BatchNorm CNN, composed and fused BN, and PyTorch's (or None)."""
    rng = np.random.default_rng(1)
    Xi = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    yi = rng.integers(0, 10, 64)
    state = cnn(nn).state_dict()
    try:
        t = cnn_torch(Xi, yi, state)
    except ImportError:
        t = None
    return {"composed": cnn_ours(False, Xi, yi, state), "fused": cnn_ours(True, Xi, yi, state),
            "torch": t}


def target_rows(conv: dict) -> list[list[str]]:
    return [target_ratio(5, "Conv2d fwd+bwd (32,16,28,28) → 32, k3 vs PyTorch",
                         conv["ours"], conv["torch"], CONV_VS_TORCH)]


def measure_targets(quick: bool = False) -> list[list[str]]:
    return target_rows(compare(conv_workloads(), **timing(quick)))


def main():
    print(f"tinygrad_bn {tb.__version__} CNN benchmark — {environment()}\n")
    conv = compare(conv_workloads(), **timing(QUICK))
    step = compare(cnn_workloads(), **timing(QUICK))
    rows = [
        ["Conv2d fwd+bwd (32,16,28,28) → 32, k3", fmt_time(conv["ours"]),
         fmt_time(conv["torch"]), fmt_ratio(ratio(conv["ours"], conv["torch"]))],
        ["BN CNN step, batch 64, composed BN", fmt_time(step["composed"]),
         fmt_time(step["torch"]), fmt_ratio(ratio(step["composed"], step["torch"]))],
        ["BN CNN step, batch 64, fused BN", fmt_time(step["fused"]),
         fmt_time(step["torch"]), fmt_ratio(ratio(step["fused"], step["torch"]))],
    ]
    print(table(["workload", "tinygrad_bn", "PyTorch", "ratio"], rows))
    print()
    print(table(TARGET_HEADER, target_rows(conv)))


if __name__ == "__main__":
    main()
