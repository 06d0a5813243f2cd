"""Normalization layers, training forward+backward (upstream gradient given), float32.

BatchNorm over axis 0 with γ and β: tinygrad_bn's hand-derived one (``analytic.batch_norm``,
the fused kernels of ``tinygrad_bn.norms.fused``) and its composed one
(``nn.functional.batch_norm``, gradient from the graph), against PyTorch, a hand-fused NumPy
BatchNorm (the floor for single-threaded NumPy) and, when installed (the ``bench`` extra),
the NumPy-based peers MyGrad and HIPS autograd. Then the scaling table: BatchNorm at five
sizes from 32 KiB to 64 MiB of input, time and nanoseconds per element, to see where each
implementation leaves the caches. Then LayerNorm and GroupNorm at the three target sizes.

Shapes. A "size" R×C is the element count of BatchNorm's (R, C) input:
- BatchNorm (R, C), statistics over R per feature;
- LayerNorm (R, C) over its C trailing features: (64, 128) over 128, (256, 1024) and
  (4096, 1024) over 1024;
- GroupNorm (N, 64, L) with 8 groups and N·64·L = R·C: (2, 64, 64), (16, 64, 256),
  (256, 64, 256).

Targets (ratios of times measured in the same run):
- fused BatchNorm, LayerNorm and GroupNorm <= 1.0x PyTorch at 64×128, <= 1.5x at 256×1024,
  <= 2.0x at 4096×1024;
- composed BatchNorm <= 2.5x hand-fused NumPy at 64×128, <= 1.5x at 4096×1024;
- peak memory of one BatchNorm forward+backward at 4096×1024 (tracemalloc, which sees
  NumPy's allocations, in units of the input's size): composed <= 5x, fused <= 3x.

Run: python benchmarks/bench_norms.py [--quick]
"""
from __future__ import annotations

import sys
import tracemalloc

import numpy as np

from _harness import (TARGET_HEADER, compare, environment, fmt_bytes, fmt_ratio, fmt_time,
                      ratio, table, target_ratio, target_row, timing)

import tinygrad_bn as tb
from tinygrad_bn import Tensor, analytic
from tinygrad_bn.nn import functional as F

QUICK = "--quick" in sys.argv
EPS = 1e-5
GROUPS = 8
NORMS = ("BatchNorm", "LayerNorm", "GroupNorm")
SIZES = ("64×128", "256×1024", "4096×1024")  # the sizes the targets name
SHAPES = {
    "BatchNorm": {"64×128": (64, 128), "256×1024": (256, 1024), "4096×1024": (4096, 1024)},
    "LayerNorm": {"64×128": (64, 128), "256×1024": (256, 1024), "4096×1024": (4096, 1024)},
    "GroupNorm": {"64×128": (2, 64, 64), "256×1024": (16, 64, 256),
                  "4096×1024": (256, 64, 256)},
}
SCALING = ((64, 128), (256, 1024), (1024, 1024), (4096, 1024), (8192, 2048))
FUSED_VS_TORCH = {"64×128": 1.0, "256×1024": 1.5, "4096×1024": 2.0}
COMPOSED_VS_NUMPY = {"64×128": 2.5, "4096×1024": 1.5}
PEAK_SIZE = "4096×1024"
PEAK_LIMIT = {"composed": 5.0, "fused": 3.0}
IMPLS = ("fused", "composed", "torch", "numpy")
PEERS_TIMING = {"rounds": 3 if QUICK else 5, "seconds": 0.05}  # slow: short groups
LABEL = {"fused": "fused (analytic)", "composed": "composed", "torch": "PyTorch",
         "numpy": "hand-fused NumPy"}

CALLS = {  # the same call on tinygrad_bn's analytic, its composed functional, or torch's
    "BatchNorm": lambda m, x, g, b: m.batch_norm(x, None, None, g, b, training=True, eps=EPS),
    "LayerNorm": lambda m, x, g, b: m.layer_norm(x, (x.shape[-1],), g, b, eps=EPS),
    "GroupNorm": lambda m, x, g, b: m.group_norm(x, GROUPS, g, b, eps=EPS),
}



def describe(norm: str, size: str) -> str:
    shape = SHAPES[norm][size]
    if norm == "LayerNorm":
        return f"LayerNorm {size} over {shape[-1]}"
    if norm == "GroupNorm":
        return f"GroupNorm {shape}, {GROUPS} groups"
    return f"BatchNorm {size}"


def data(norm: str, shape: tuple):
    """x, γ, β and the upstream gradient, float32, the same for every implementation."""
    rng = np.random.default_rng(0)
    c = shape[-1] if norm == "LayerNorm" else shape[1]
    X = rng.standard_normal(shape).astype(np.float32)
    G = rng.uniform(0.5, 1.5, c).astype(np.float32)
    B = rng.standard_normal(c).astype(np.float32)
    DY = rng.standard_normal(shape).astype(np.float32)
    return X, G, B, DY


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


def _ours(module, call, X, G, B, DY):
    x, g, b = (Tensor(a, requires_grad=True) for a in (X, G, B))

    def step():
        x.grad = g.grad = b.grad = None
        call(module, x, g, b).backward(DY)
    return step


def _torch(call, X, G, B, DY):
    try:
        import torch
    except ImportError:
        return None
    x, g, b = (torch.tensor(a, requires_grad=True) for a in (X, G, B))
    dy = torch.tensor(DY)

    def step():
        x.grad = g.grad = b.grad = None
        call(torch.nn.functional, x, g, b).backward(dy)
    return step


def steps(norm: str, shape: tuple, impls=IMPLS) -> dict:
    """One training forward+backward per implementation (None: torch not installed; the
    hand-fused NumPy version exists for BatchNorm only)."""
    X, G, B, DY = data(norm, shape)
    call = CALLS[norm]
    make = {"fused": lambda: _ours(analytic, call, X, G, B, DY),
            "composed": lambda: _ours(F, call, X, G, B, DY),
            "torch": lambda: _torch(call, X, G, B, DY),
            "numpy": lambda: (lambda: numpy_bn(X, G, B, DY)) if norm == "BatchNorm" else None}
    return {impl: make[impl]() for impl in impls}


def peer_steps(shape: tuple) -> dict:
    """BatchNorm in MyGrad (its fused ``batchnorm`` and the composition of ours) and HIPS
    autograd (composed); None for a peer that is not installed."""
    X, G, B, DY = data("BatchNorm", shape)
    out = {"MyGrad fused": None, "MyGrad composed": None, "HIPS autograd": None}
    try:
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
        out["MyGrad fused"], out["MyGrad composed"] = fused, composed
    except ImportError:
        pass
    try:
        import autograd.numpy as anp
        from autograd import make_vjp

        def bn(x, g, b):
            mu = anp.mean(x, axis=0, keepdims=True)
            var = anp.mean((x - mu) ** 2, axis=0, keepdims=True)
            return (x - mu) / anp.sqrt(var + EPS) * g + b

        def hips():
            vjp, _ = make_vjp(lambda args: bn(*args))((X, G, B))
            vjp(DY)
        out["HIPS autograd"] = hips
    except ImportError:
        pass
    return out


def peak_ratio(step, nbytes: int) -> float:
    """Peak traced allocation of one call of ``step`` (after one untraced call) / nbytes."""
    step()
    tracemalloc.start()
    tracemalloc.reset_peak()
    step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / nbytes


def peak_memory() -> dict:
    """Peak memory of one BatchNorm forward+backward at PEAK_SIZE, in units of the input."""
    shape = SHAPES["BatchNorm"][PEAK_SIZE]
    fns = steps("BatchNorm", shape, ("fused", "composed", "numpy"))
    nbytes = int(np.prod(shape)) * 4
    return {impl: peak_ratio(fn, nbytes) for impl, fn in fns.items()}


def target_rows(t: dict, mem: dict) -> list[list[str]]:
    """The targets of this script from times ``t[norm, size][impl]`` and ``peak_memory()``."""
    rows = []
    for norm in NORMS:
        for size in SIZES:
            tt = t.get((norm, size), {})
            rows.append(target_ratio(1, f"fused {describe(norm, size)} vs PyTorch",
                                     tt.get("fused"), tt.get("torch"), FUSED_VS_TORCH[size]))
    for size, limit in COMPOSED_VS_NUMPY.items():
        tt = t.get(("BatchNorm", size), {})
        rows.append(target_ratio(2, f"composed BatchNorm {size} vs hand-fused NumPy",
                                 tt.get("composed"), tt.get("numpy"), limit))
    nbytes = 4 * int(np.prod(SHAPES["BatchNorm"][PEAK_SIZE]))
    for impl, limit in PEAK_LIMIT.items():
        v = mem.get(impl)
        rows.append(target_row(6, f"peak memory, {impl} BatchNorm {PEAK_SIZE} fwd+bwd", v,
                               limit, "x input", "" if v is None else
                               f"{fmt_bytes(round(v * nbytes))} / {fmt_bytes(nbytes)}"))
    return rows


def measure_targets(quick: bool = False) -> list[list[str]]:
    """Only the workloads the targets need, each target's pair alternated in one group."""
    t = {}
    for norm in NORMS:
        for size in SIZES:
            impls = ("fused", "torch")
            if norm == "BatchNorm" and size in COMPOSED_VS_NUMPY:
                impls += ("composed", "numpy")
            t[norm, size] = compare(steps(norm, SHAPES[norm][size], impls), **timing(quick))
    return target_rows(t, peak_memory())


def main():
    print(f"tinygrad_bn {tb.__version__} normalization benchmark (training forward+backward, "
          f"float32) — {environment()}\n")
    bn = {}  # BatchNorm at every size of the scaling table, the four implementations
    for shape in SCALING:
        bn[shape] = compare(steps("BatchNorm", shape), **timing(QUICK))
    t = {("BatchNorm", size): bn[SHAPES["BatchNorm"][size]] for size in SIZES}
    for norm in ("LayerNorm", "GroupNorm"):
        for size in SIZES:
            fns = steps(norm, SHAPES[norm][size], ("fused", "composed", "torch"))
            t[norm, size] = compare(fns, **timing(QUICK))

    rows = []
    for size in SIZES:
        tt = t["BatchNorm", size]
        peers = compare(peer_steps(SHAPES["BatchNorm"][size]), **PEERS_TIMING)
        for name, v in [(LABEL[i], tt[i]) for i in IMPLS] + list(peers.items()):
            rows.append([size, name, fmt_time(v), fmt_ratio(ratio(v, tt["numpy"])),
                         fmt_ratio(ratio(v, tt["torch"]))])
    print(table(["BatchNorm", "implementation", "time", "vs numpy", "vs torch"], rows))
    print("\n(Peers timed in a group of their own; their ratios use the NumPy and PyTorch "
          "times above.)\n")

    rows = []
    for shape in SCALING:
        n = int(np.prod(shape))
        cells = [f"{fmt_time(v)} · {v / n * 1e9:.2f} ns" if v else "—"
                 for v in (bn[shape][i] for i in IMPLS)]
        rows.append([f"{shape[0]}×{shape[1]}", fmt_bytes(4 * n), fmt_bytes(16 * n)] + cells)
    print(table(["BatchNorm scaling", "input", "x,dy,y,dx"] + [LABEL[i] for i in IMPLS], rows))
    print("\nTime per forward+backward · nanoseconds per input element (input GB/s = 4 / ns). "
          "Flat ns/element: the same regime;\na step up: the working set has left a cache "
          "level.\n")

    rows = []
    for norm in ("LayerNorm", "GroupNorm"):
        for size in SIZES:
            tt = t[norm, size]
            for impl in ("fused", "composed", "torch"):
                rows.append([describe(norm, size), LABEL[impl], fmt_time(tt[impl]),
                             fmt_ratio(ratio(tt[impl], tt["torch"]))])
    print(table(["norm", "implementation", "time", "vs torch"], rows))
    print()

    mem = peak_memory()
    print(table([f"peak memory, BatchNorm fwd+bwd at {PEAK_SIZE}", "x input"],
                [[LABEL[k], f"{v:.2f}x"] for k, v in mem.items()]))
    print()
    print(table(TARGET_HEADER, target_rows(t, mem)))


if __name__ == "__main__":
    main()
