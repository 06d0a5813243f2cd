"""Engine overhead: tinygrad_bn against PyTorch and hand-written NumPy, in one process.

Workloads
- tiny MLP step: a 2-16-16-1 tanh MLP, batch 32, float32: forward, MSE loss, backward and an
  SGD update. Per-op overhead dominates. Target: <= 2.0x the hand-written NumPy step.
- 100k chain: y = y * 1.00001 applied 100,000 times to a 4-vector, then backward.
  Target: building the chain <= 1.5x PyTorch's build time.

Run: python benchmarks/bench_engine.py [--quick]
"""
from __future__ import annotations

import sys
import time

import numpy as np

from _harness import (TARGET_HEADER, compare, environment, fmt_ratio, fmt_time, ratio, table,
                      target_ratio, timing)

import tinygrad_bn as tb
from tinygrad_bn import Tensor
from tinygrad_bn.core import ops

QUICK = "--quick" in sys.argv
LR = 0.01
CHAIN_N = 100_000
MLP_VS_NUMPY = 2.0
CHAIN_BUILD_VS_TORCH = 1.5



def mlp_workloads():
    # A process with the fast extra loads the compiled loops on its first large array, and
    # from then on they serve small ones too (tanh's gradient here). Loading them here makes
    # this step the same alone as after bench_norms' rows (TINYGRAD_BN_KERNELS=numpy: the
    # NumPy path).
    ops._loops()
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


def time_mlp(quick: bool) -> dict:
    """Median seconds of the tiny MLP step: ours, torch (None if not installed), numpy."""
    ours, torch_step, numpy_step = mlp_workloads()
    return compare({"ours": ours, "torch": torch_step, "numpy": numpy_step}, **timing(quick))


def time_chain(quick: bool, n: int = CHAIN_N) -> dict:
    """Median (build, backward) seconds of the n-op chain for ours, torch and numpy, the
    three run in turn (3 runs with --quick, else 5)."""
    fns = dict(zip(("ours", "torch", "numpy"), chain_workloads(n)))
    res = {k: [] for k, f in fns.items() if f is not None}
    for _ in range(3 if quick else 5):
        for k in res:
            res[k].append(fns[k]())
    out = {}
    for k in fns:
        runs = res.get(k)
        out[k] = None if not runs else tuple(sorted(r[i] for r in runs)[len(runs) // 2]
                                             for i in (0, 1))
    return out


def target_rows(mlp: dict, chain: dict, n: int = CHAIN_N) -> list[list[str]]:
    build = {k: None if v is None else v[0] for k, v in chain.items()}
    return [
        target_ratio(3, "tiny MLP step vs hand-written NumPy", mlp["ours"], mlp["numpy"],
                     MLP_VS_NUMPY),
        target_ratio(4, f"{n // 1000}k-op chain: build vs PyTorch", build["ours"],
                     build["torch"], CHAIN_BUILD_VS_TORCH),
    ]


def measure_targets(quick: bool = False) -> list[list[str]]:
    return target_rows(time_mlp(quick), time_chain(quick))


def main():
    print(f"tinygrad_bn {tb.__version__} engine benchmark — {environment()}\n")
    mlp = time_mlp(QUICK)
    chain = time_chain(QUICK)

    def phase(k, i):
        return None if chain[k] is None else chain[k][i]
    rows = [["tiny MLP step (2-16-16-1, batch 32)", fmt_time(mlp["ours"]),
             fmt_time(mlp["torch"]), fmt_time(mlp["numpy"]),
             fmt_ratio(ratio(mlp["ours"], mlp["torch"])),
             fmt_ratio(ratio(mlp["ours"], mlp["numpy"]))]]
    for i, name in enumerate(("build", "backward")):
        rows.append([f"{CHAIN_N // 1000}k chain: {name}", fmt_time(phase("ours", i)),
                     fmt_time(phase("torch", i)), fmt_time(phase("numpy", i)),
                     fmt_ratio(ratio(phase("ours", i), phase("torch", i))),
                     fmt_ratio(ratio(phase("ours", i), phase("numpy", i)))])
    print(table(["workload", "tinygrad_bn", "PyTorch", "NumPy", "vs torch", "vs numpy"], rows))
    print("\nMedians of alternated runs in this process; ratios are tinygrad_bn's time divided "
          "by the other's (lower is better).\n")
    print(table(TARGET_HEADER, target_rows(mlp, chain)))


if __name__ == "__main__":
    main()
