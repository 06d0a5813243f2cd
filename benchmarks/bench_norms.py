"""BatchNorm forward+backward in training mode, float32: tinygrad_bn's composed and analytic
versions against a hand-fused NumPy BatchNorm, PyTorch, and (when installed, the ``bench``
extra) the NumPy-based peers MyGrad and HIPS autograd, in one process.

Targets: analytic <= 1.5x hand-fused NumPy at every size and <= 1.0x PyTorch at (64, 128);
composed <= 3x hand-fused NumPy; peak memory of a forward+backward at (4096, 1024) <= 6x the
input for composed and <= 4x for analytic (tracemalloc, which sees NumPy's allocations).

Then LayerNorm (4096, 1024) over 1024 features and GroupNorm (256, 64, 256) with 8 groups,
analytic and composed, against PyTorch.

Run: python benchmarks/bench_norms.py [--quick]
"""
from __future__ import annotations

import sys
import tracemalloc

import numpy as np

from _harness import environment, fmt_time, median_time, table

import tinygrad_bn as tb
from tinygrad_bn import Tensor, analytic
from tinygrad_bn.nn import functional as F

QUICK = "--quick" in sys.argv
SHAPES = ((64, 128), (256, 1024), (4096, 1024))
EPS = 1e-5


def numpy_bn(x, g, b, dy):
    """Hand-fused BatchNorm forward and backward over axis 0 (few passes, reused buffers)."""
    m = x.shape[0]
    mu = x.mean(0)
    xh = x - mu
    var = np.einsum("ij,ij->j", xh, xh) / m
    rstd = 1.0 / np.sqrt(var + EPS)
    xh *= rstd
    y = xh * g
    y += b
    db = dy.sum(0)
    dg = np.einsum("ij,ij->j", dy, xh)
    dx = xh * dg
    dx += db
    np.subtract(dy * m, dx, out=dx)
    dx *= g * rstd / m
    return y, dx, dg, db


def ours(fn, X, G, B, DY):
    x = Tensor(X, requires_grad=True)
    g = Tensor(G, requires_grad=True)
    b = Tensor(B, requires_grad=True)

    def step():
        x.grad = g.grad = b.grad = None
        fn(x, None, None, g, b, training=True).backward(DY)
    return step


def torch_fn(X, G, B, DY):
    import torch

    x = torch.tensor(X, requires_grad=True)
    g = torch.tensor(G, requires_grad=True)
    b = torch.tensor(B, requires_grad=True)
    dy = torch.tensor(DY)

    def step():
        x.grad = g.grad = b.grad = None
        torch.nn.functional.batch_norm(x, None, None, g, b, training=True, eps=EPS).backward(dy)
    return step


def mygrad_fns(X, G, B, DY):
    import mygrad as mg

    def composed():
        x, g, b = mg.tensor(X), mg.tensor(G), mg.tensor(B)
        mu = x.mean(axis=0, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=0, keepdims=True)
        y = (x - mu) / mg.sqrt(var + EPS) * g + b
        (y * DY).sum().backward()

    def fused():
        x, g, b = mg.tensor(X), mg.tensor(G), mg.tensor(B)
        y = mg.nnet.batchnorm(x, gamma=g, beta=b, eps=EPS)
        (y * DY).sum().backward()
    return composed, fused


def hips_fn(X, G, B, DY):
    import autograd.numpy as anp
    from autograd import make_vjp

    def bn(x, g, b):
        mu = anp.mean(x, axis=0, keepdims=True)
        var = anp.mean((x - mu) ** 2, axis=0, keepdims=True)
        return (x - mu) / anp.sqrt(var + EPS) * g + b

    def step():
        vjp, _ = make_vjp(lambda args: bn(*args))((X, G, B))
        vjp(DY)
    return step


def other_norms(reps: int) -> list:
    """LayerNorm over 1024 features at (4096, 1024) and GroupNorm (256, 64, 256) with 8
    groups: hand-derived (analytic) and composed against PyTorch, forward+backward."""
    try:
        import torch
    except ImportError:
        torch = None
    cases = [("LayerNorm 4096x1024", (4096, 1024), 1024,
              lambda m, x, g, b: m.layer_norm(x, (1024,), g, b)),
             ("GroupNorm 256x64x256 (8 groups)", (256, 64, 256), 64,
              lambda m, x, g, b: m.group_norm(x, 8, g, b))]
    rows = []
    for name, shape, c, call in cases:
        rng = np.random.default_rng(0)
        X = rng.standard_normal(shape).astype(np.float32)
        G = rng.uniform(0.5, 1.5, c).astype(np.float32)
        B = rng.standard_normal(c).astype(np.float32)
        DY = rng.standard_normal(shape).astype(np.float32)
        t = {}
        for label, mod in (("analytic", analytic), ("composed", F)):
            x, g, b = (Tensor(a, requires_grad=True) for a in (X, G, B))

            def step(mod=mod, x=x, g=g, b=b):
                x.grad = g.grad = b.grad = None
                call(mod, x, g, b).backward(DY)
            t[label] = median_time(step, repeats=reps)
        t["torch"] = None
        if torch is not None:
            tx, tg, tbias = (torch.tensor(a, requires_grad=True) for a in (X, G, B))
            tdy = torch.tensor(DY)

            def tstep():
                tx.grad = tg.grad = tbias.grad = None
                call(torch.nn.functional, tx, tg, tbias).backward(tdy)
            t["torch"] = median_time(tstep, repeats=reps)
        for label in ("analytic", "composed", "torch"):
            v = t[label]
            rows.append([name, label, fmt_time(v), "—" if v is None or t["torch"] is None
                         else f"{v / t['torch']:.2f}x"])
    return rows


def peak_ratio(step, nbytes) -> float:
    step()
    tracemalloc.start()
    tracemalloc.reset_peak()
    step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / nbytes


def main():
    print(f"tinygrad_bn {tb.__version__} BatchNorm benchmark (training forward+backward, "
          f"float32) — {environment()}\n")
    rows = []
    mem = []
    reps = 5 if QUICK else 9
    for shape in SHAPES:
        rng = np.random.default_rng(0)
        X = rng.standard_normal(shape).astype(np.float32)
        G = rng.uniform(0.5, 1.5, shape[1]).astype(np.float32)
        B = rng.standard_normal(shape[1]).astype(np.float32)
        DY = rng.standard_normal(shape).astype(np.float32)
        t = {}
        t["numpy"] = median_time(lambda: numpy_bn(X, G, B, DY), repeats=reps)
        comp = ours(F.batch_norm, X, G, B, DY)
        ana = ours(analytic.batch_norm, X, G, B, DY)
        t["composed"] = median_time(comp, repeats=reps)
        t["analytic"] = median_time(ana, repeats=reps)
        try:
            t["torch"] = median_time(torch_fn(X, G, B, DY), repeats=reps)
        except ImportError:
            t["torch"] = None
        try:
            mc, mf = mygrad_fns(X, G, B, DY)
            t["mygrad composed"] = median_time(mc, repeats=3)
            t["mygrad fused"] = median_time(mf, repeats=3)
        except ImportError:
            t["mygrad composed"] = t["mygrad fused"] = None
        try:
            t["autograd"] = median_time(hips_fn(X, G, B, DY), repeats=3)
        except ImportError:
            t["autograd"] = None
        for name in ("analytic", "composed", "torch", "mygrad fused", "mygrad composed",
                     "autograd"):
            v = t[name]
            rows.append([f"{shape[0]}x{shape[1]}", name, fmt_time(v),
                         "—" if v is None else f"{v / t['numpy']:.2f}x",
                         "—" if v is None or t["torch"] is None else f"{v / t['torch']:.2f}x"])
        rows.append([f"{shape[0]}x{shape[1]}", "hand-fused numpy", fmt_time(t["numpy"]), "1.00x",
                     "—" if t["torch"] is None else f"{t['numpy'] / t['torch']:.2f}x"])
        if shape == SHAPES[-1]:
            mem.append(["composed", f"{peak_ratio(comp, X.nbytes):.2f}x", "<= 6x"])
            mem.append(["analytic", f"{peak_ratio(ana, X.nbytes):.2f}x", "<= 4x"])
            mem.append(["hand-fused numpy",
                        f"{peak_ratio(lambda: numpy_bn(X, G, B, DY), X.nbytes):.2f}x", "—"])
    print(table(["shape", "implementation", "time", "vs numpy", "vs torch"], rows))
    print("\nTargets: analytic <= 1.5x numpy everywhere and <= 1.0x torch at 64x128; "
          "composed <= 3x numpy.\n")
    print(table(["peak memory, fwd+bwd at 4096x1024", "x input", "target"], mem))
    print()
    print(table(["norm", "implementation", "time", "vs torch"], other_norms(reps)))
    print("\nTargets: analytic LayerNorm and GroupNorm <= 2.0x torch.")


if __name__ == "__main__":
    main()
