"""Before/after in one run: the same workloads on an earlier revision of tinygrad_bn and on the
working tree, alternated in one process, with PyTorch alongside for the ratios.

Alternating the two packages call by call cancels most of the machine's drift (on a shared
2-core machine PyTorch's own time can swing by half between two runs), so a change of a few
percent is visible. The earlier revision is exported with ``git archive`` into a temporary
directory and imported as ``tinygrad_bn_before`` (the package imports itself relatively).

Workloads: BatchNorm forward+backward (composed and fused, three shapes, as
``bench_norms.py``), one training step of the 784-256-256-10 BatchNorm MLP (as
``bench_train.py``) and the SGD step of that step alone (momentum 0.9, fixed gradients).

Run: python benchmarks/ab.py REV [--quick]        e.g. python benchmarks/ab.py HEAD~5
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile

import numpy as np

from _harness import alternate, environment, fmt_time, table

import tinygrad_bn

QUICK = "--quick" in sys.argv
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SHAPES = ((64, 128), (256, 1024)) if QUICK else ((64, 128), (256, 1024), (4096, 1024))


def load_revision(rev: str, into: str):
    """``tinygrad_bn`` as it was at ``rev``, imported as ``tinygrad_bn_before``."""
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev, "tinygrad_bn"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    os.rename(os.path.join(into, "tinygrad_bn"), os.path.join(into, "tinygrad_bn_before"))
    sys.path.insert(0, into)
    return importlib.import_module("tinygrad_bn_before")


def norm_step(tb, fused: bool, shape):
    rng = np.random.default_rng(0)
    X = rng.standard_normal(shape).astype(np.float32)
    DY = rng.standard_normal(shape).astype(np.float32)
    x = tb.Tensor(X, requires_grad=True)
    g = tb.Tensor(np.ones(shape[1], np.float32), requires_grad=True)
    b = tb.Tensor(np.zeros(shape[1], np.float32), requires_grad=True)
    fn = tb.analytic.batch_norm if fused else tb.nn.functional.batch_norm

    def step():
        x.grad = g.grad = b.grad = None
        fn(x, None, None, g, b, training=True).backward(DY)
    return step


def train_step(tb, fused: bool):
    rng = np.random.default_rng(0)
    X = tb.Tensor(rng.standard_normal((128, 784)).astype(np.float32))
    y = rng.integers(0, 10, 128)
    nn = tb.nn
    model = nn.Sequential(
        nn.Linear(784, 256), nn.BatchNorm1d(256, analytic=fused), nn.ReLU(),
        nn.Linear(256, 256), nn.BatchNorm1d(256, analytic=fused), nn.ReLU(),
        nn.Linear(256, 10))
    opt = tb.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = importlib.import_module(tb.__name__ + ".nn.losses").cross_entropy

    def step():
        opt.zero_grad()
        loss_fn(model(X), y).backward()
        opt.step()
    return step


def optimizer_step(tb, fused: bool):
    """SGD (momentum 0.9) alone, on the MLP's parameters with fixed gradients."""
    rng = np.random.default_rng(0)
    params = [tb.Tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True)
              for s in ((256, 784), (256,), (256,), (256,), (256, 256), (256,), (256,),
                        (256,), (10, 256), (10,))]
    for p in params:
        p.grad = rng.standard_normal(p.shape).astype(np.float32)
    return tb.optim.SGD(params, lr=0.01, momentum=0.9).step


def torch_steps():
    """PyTorch's versions of the workloads (None when torch is not installed)."""
    try:
        import torch
    except ImportError:
        return {}
    rng = np.random.default_rng(0)
    out = {}
    for shape in SHAPES:
        x = torch.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)
        dy = torch.tensor(rng.standard_normal(shape).astype(np.float32))
        g = torch.ones(shape[1], requires_grad=True)
        b = torch.zeros(shape[1], requires_grad=True)

        def step(x=x, dy=dy, g=g, b=b):
            x.grad = g.grad = b.grad = None
            torch.nn.functional.batch_norm(x, None, None, g, b, training=True).backward(dy)
        out[f"BatchNorm {shape[0]}×{shape[1]}"] = step
    nn = torch.nn
    model = nn.Sequential(nn.Linear(784, 256), nn.BatchNorm1d(256), nn.ReLU(),
                          nn.Linear(256, 256), nn.BatchNorm1d(256), nn.ReLU(),
                          nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    X = torch.tensor(rng.standard_normal((128, 784)).astype(np.float32))
    Y = torch.tensor(rng.integers(0, 10, 128))

    def train():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X), Y).backward()
        opt.step()
    out["training step"] = train
    params = [torch.randn(p.shape, requires_grad=True) for p in model.parameters()]
    for p in params:
        p.grad = torch.randn(p.shape)
    out["SGD step"] = torch.optim.SGD(params, lr=0.01, momentum=0.9).step
    return out


def main() -> None:
    revs = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(revs) != 1:
        sys.exit(__doc__.rsplit("Run: ", 1)[1])
    rounds = 5 if QUICK else 15
    with tempfile.TemporaryDirectory() as tmp:
        before = load_revision(revs[0], tmp)
        torch_fns = torch_steps()
        rows = []
        workloads = [(f"BatchNorm {s[0]}×{s[1]}", lambda tb, f, s=s: norm_step(tb, f, s))
                     for s in SHAPES]
        workloads += [("training step", train_step), ("SGD step", optimizer_step)]
        for name, make in workloads:
            ref = torch_fns.get(name)
            for fused in (False,) if make is optimizer_step else (False, True):
                fns = [make(before, fused), make(tinygrad_bn, fused)] + ([ref] if ref else [])
                t = alternate(fns, rounds)
                ratio = [f"{x / t[2]:.2f}x" if ref else "—" for x in t[:2]]
                kind = "—" if make is optimizer_step else "fused" if fused else "composed"
                rows.append([name, kind, fmt_time(t[0]),
                             fmt_time(t[1]), f"{t[1] / t[0]:.3f}", fmt_time(t[2]) if ref
                             else "—", f"{ratio[0]} → {ratio[1]}"])
    print(f"before = {revs[0]}, after = working tree; {environment()}\n")
    print(table(["workload", "BatchNorm", "before", "after", "after/before", "PyTorch",
                 "vs PyTorch"], rows))


if __name__ == "__main__":
    main()
