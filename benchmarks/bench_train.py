"""One training step of a 784-256-256-10 MLP with BatchNorm1d + ReLU, batch 128, float32.

Forward, cross-entropy, backward, SGD (momentum 0.9) update, against PyTorch with the same
weights in the same process. Both the composed BatchNorm (gradient from the graph) and the
analytic one (hand-derived backward, fused) are timed. Target: each <= 1.0x PyTorch's time.

Run: python benchmarks/bench_train.py [--quick]
"""
from __future__ import annotations

import sys

import numpy as np

from _harness import (TARGET_HEADER, compare, environment, fmt_ratio, fmt_time, ratio, table,
                      target_ratio, timing)

import tinygrad_bn as tb
from tinygrad_bn import Tensor, nn, optim
from tinygrad_bn.nn.losses import cross_entropy

QUICK = "--quick" in sys.argv
SIZES = (784, 256, 256, 10)
BATCH = 128
LIMIT = 1.0  # each step <= 1.0x PyTorch's


def ours(analytic: bool, X, y, state):
    model = nn.Sequential(
        nn.Linear(784, 256), nn.BatchNorm1d(256, analytic=analytic), nn.ReLU(),
        nn.Linear(256, 256), nn.BatchNorm1d(256, analytic=analytic), nn.ReLU(),
        nn.Linear(256, 10))
    model.load_state_dict(state)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    Xt = Tensor(X)

    def step():
        opt.zero_grad()
        loss = cross_entropy(model(Xt), y)
        loss.backward()
        opt.step()
    return step


def torch_step(X, y, state):
    import torch

    model = torch.nn.Sequential(
        torch.nn.Linear(784, 256), torch.nn.BatchNorm1d(256), torch.nn.ReLU(),
        torch.nn.Linear(256, 256), torch.nn.BatchNorm1d(256), torch.nn.ReLU(),
        torch.nn.Linear(256, 10))
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    TX, TY = torch.from_numpy(X), torch.from_numpy(y)
    lossf = torch.nn.functional.cross_entropy

    def step():
        opt.zero_grad()
        loss = lossf(model(TX), TY)
        loss.backward()
        opt.step()
    return step


def workloads() -> dict:
    """The step with composed and with fused BatchNorm, and PyTorch's (None if not
    installed), all from the same weights and batch."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((BATCH, 784)).astype(np.float32)
    y = rng.integers(0, 10, BATCH)
    ref = nn.Sequential(nn.Linear(784, 256, rng=0), nn.BatchNorm1d(256), nn.ReLU(),
                        nn.Linear(256, 256, rng=1), nn.BatchNorm1d(256), nn.ReLU(),
                        nn.Linear(256, 10, rng=2))
    state = ref.state_dict()
    try:
        t = torch_step(X, y, state)
    except ImportError:
        t = None
    return {"composed": ours(False, X, y, state), "fused": ours(True, X, y, state), "torch": t}



def target_rows(t: dict) -> list[list[str]]:
    return [target_ratio(3, f"784-256-256-10 BatchNorm MLP step, {k} BN vs PyTorch", t[k],
                         t["torch"], LIMIT) for k in ("composed", "fused")]


def measure_targets(quick: bool = False) -> list[list[str]]:
    return target_rows(compare(workloads(), **timing(quick)))


def main():
    print(f"tinygrad_bn {tb.__version__} training-step benchmark — {environment()}\n")
    t = compare(workloads(), **timing(QUICK))
    rows = [[name, fmt_time(t[k]), fmt_time(t["torch"]), fmt_ratio(ratio(t[k], t["torch"]))]
            for name, k in (("BatchNorm1d composed from primitives", "composed"),
                            ("BatchNorm1d analytic (fused)", "fused"))]
    print(table(["784-256-256-10 MLP step, batch 128", "tinygrad_bn", "PyTorch", "ratio"],
                rows))
    print()
    print(table(TARGET_HEADER, target_rows(t)))


if __name__ == "__main__":
    main()
