"""Engine overhead: tinygrad_bn against PyTorch and hand-written NumPy, in one process.

Workloads
- tiny MLP step: a 2-16-16-1 tanh MLP, batch 32, float32: forward, MSE loss, backward and an
  SGD update. Per-op overhead dominates. Targets: <= 0.4x PyTorch, <= 3x NumPy.
- 100k chain: y = y * 1.00001 applied 100,000 times to a 4-vector, then backward.
  Target: backward <= 1x PyTorch.

Run: python benchmarks/bench_engine.py [--quick]
"""
from __future__ import annotations

import sys
import time

import numpy as np

from _harness import environment, fmt_time, median_time, table

import tinygrad_bn as tb
from tinygrad_bn import Tensor
from tinygrad_bn.core import ops

QUICK = "--quick" in sys.argv
LR = 0.01


def mlp_workloads():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 2)).astype(np.float32)
    Y = rng.standard_normal((32, 1)).astype(np.float32)
    shapes = [(16, 2), (16,), (16, 16), (16,), (1, 16), (1,)]
    init = [(rng.standard_normal(s) * 0.5).astype(np.float32) for s in shapes]

    P = [Tensor(a, requires_grad=True) for a in init]
    Xt, Yt = Tensor(X), Tensor(Y)

    def ours():
        h = ops.Linear.apply(Xt, P[0], P[1]).tanh()
        h = ops.Linear.apply(h, P[2], P[3]).tanh()
        out = ops.Linear.apply(h, P[4], P[5])
        loss = ((out - Yt) ** 2).mean()
        loss.backward()
        for p in P:
            p.data -= LR * p.grad
            p.grad = None

    W = [a.copy() for a in init]

    def numpy_step():
        W1, b1, W2, b2, W3, b3 = W
        h1 = np.tanh(X @ W1.T + b1)
        h2 = np.tanh(h1 @ W2.T + b2)
        out = h2 @ W3.T + b3
        d = out - Y
        go = d * (2.0 / d.size)
        gW3 = go.T @ h2
        gb3 = go.sum(0)
        ga2 = (go @ W3) * (1 - h2 * h2)
        gW2 = ga2.T @ h1
        gb2 = ga2.sum(0)
        ga1 = (ga2 @ W2) * (1 - h1 * h1)
        gW1 = ga1.T @ X
        gb1 = ga1.sum(0)
        for p, g in zip(W, (gW1, gb1, gW2, gb2, gW3, gb3)):
            p -= LR * g

    torch_step = None
    try:
        import torch
        import torch.nn.functional as F

        TP = [torch.tensor(a, requires_grad=True) for a in init]
        TX, TY = torch.tensor(X), torch.tensor(Y)

        def torch_step():
            h = F.linear(TX, TP[0], TP[1]).tanh()
            h = F.linear(h, TP[2], TP[3]).tanh()
            out = F.linear(h, TP[4], TP[5])
            loss = ((out - TY) ** 2).mean()
            loss.backward()
            with torch.no_grad():
                for p in TP:
                    p -= LR * p.grad
                    p.grad = None
    except ImportError:
        pass
    return ours, torch_step, numpy_step


def _timed_chain(x, n: int):
    """(build, backward) seconds of ``y = y * 1.00001`` n times from leaf ``x``."""
    t0 = time.perf_counter()
    y = x
    for _ in range(n):
        y = y * 1.00001
    t1 = time.perf_counter()
    y.sum().backward()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def chain_workloads(n: int):
    def ours():
        return _timed_chain(Tensor(np.ones(4, np.float32), requires_grad=True), n)

    def numpy_chain():
        x = np.ones(4, np.float32)
        t0 = time.perf_counter()
        y = x
        for _ in range(n):
            y = y * np.float32(1.00001)
        t1 = time.perf_counter()
        g = np.ones(4, np.float32)
        for _ in range(n):
            g = g * np.float32(1.00001)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1

    torch_chain = None
    try:
        import torch

        def torch_chain():
            return _timed_chain(torch.ones(4, requires_grad=True), n)
    except ImportError:
        pass
    return ours, torch_chain, numpy_chain


def ratio(a, b):
    return "—" if a is None or b is None else f"{a / b:.2f}x"


def main():
    print(f"tinygrad_bn {tb.__version__} engine benchmark — {environment()}\n")
    ours, torch_step, numpy_step = mlp_workloads()
    reps = 5 if QUICK else 9
    t_ours = median_time(ours, repeats=reps)
    t_torch = median_time(torch_step, repeats=reps) if torch_step else None
    t_np = median_time(numpy_step, repeats=reps)

    n = 20_000 if QUICK else 100_000
    c_ours, c_torch, c_np = chain_workloads(n)
    runs = 3 if QUICK else 5
    res = {"ours": [], "torch": [], "numpy": []}
    for _ in range(runs):  # interleaved, median of each phase
        res["ours"].append(c_ours())
        if c_torch:
            res["torch"].append(c_torch())
        res["numpy"].append(c_np())

    def med(name, k):
        v = sorted(r[k] for r in res[name])
        return v[len(v) // 2] if v else None

    rows = [
        ["tiny MLP step (2-16-16-1, batch 32)", fmt_time(t_ours), fmt_time(t_torch),
         fmt_time(t_np), ratio(t_ours, t_torch), ratio(t_ours, t_np), "<= 0.4x torch, <= 3x numpy"],
        [f"{n // 1000}k chain: build", fmt_time(med("ours", 0)), fmt_time(med("torch", 0)),
         fmt_time(med("numpy", 0)), ratio(med("ours", 0), med("torch", 0)),
         ratio(med("ours", 0), med("numpy", 0)), "—"],
        [f"{n // 1000}k chain: backward", fmt_time(med("ours", 1)), fmt_time(med("torch", 1)),
         fmt_time(med("numpy", 1)), ratio(med("ours", 1), med("torch", 1)),
         ratio(med("ours", 1), med("numpy", 1)), "<= 1x torch"],
    ]
    print(table(["workload", "tinygrad_bn", "PyTorch", "NumPy", "vs torch", "vs numpy",
                 "target"], rows))
    print("\nMedians of repeated runs in this process; ratios are tinygrad_bn's time divided "
          "by the other's (lower is better).")


if __name__ == "__main__":
    main()
