"""One training step of a 784-256-256-10 MLP with BatchNorm1d + ReLU, batch 128, float32.

Forward, cross-entropy, backward, SGD (momentum 0.9) update, against PyTorch with the same
weights in the same process. Both the composed BatchNorm (gradient from the graph) and the
analytic one (hand-derived backward) are timed. Target: <= 1.2x PyTorch's time.

Run: python benchmarks/bench_train.py [--quick]
"""
from __future__ import annotations

import sys

import numpy as np

from _harness import environment, fmt_time, median_time, table

import tinygrad_bn as tb
from tinygrad_bn import Tensor, nn, optim
from tinygrad_bn.nn.losses import cross_entropy

QUICK = "--quick" in sys.argv
SIZES = (784, 256, 256, 10)
BATCH = 128


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


def main():
    print(f"tinygrad_bn {tb.__version__} training-step benchmark — {environment()}\n")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((BATCH, 784)).astype(np.float32)
    y = rng.integers(0, 10, BATCH)
    ref = nn.Sequential(nn.Linear(784, 256, rng=0), nn.BatchNorm1d(256), nn.ReLU(),
                        nn.Linear(256, 256, rng=1), nn.BatchNorm1d(256), nn.ReLU(),
                        nn.Linear(256, 10, rng=2))
    state = ref.state_dict()
    reps = 5 if QUICK else 11
    t_comp = median_time(ours(False, X, y, state), repeats=reps)
    t_an = median_time(ours(True, X, y, state), repeats=reps)
    try:
        t_torch = median_time(torch_step(X, y, state), repeats=reps)
    except ImportError:
        t_torch = None

    def r(t):
        return "—" if t_torch is None else f"{t / t_torch:.2f}x"
    rows = [
        ["BatchNorm1d composed from primitives", fmt_time(t_comp), fmt_time(t_torch), r(t_comp),
         "<= 1.2x"],
        ["BatchNorm1d analytic (fused)", fmt_time(t_an), fmt_time(t_torch), r(t_an), "<= 1.2x"],
    ]
    print(table(["784-256-256-10 MLP step, batch 128", "tinygrad_bn", "PyTorch", "ratio",
                 "target"], rows))


if __name__ == "__main__":
    main()
