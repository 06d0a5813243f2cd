"""Timing helpers shared by the benchmark scripts: alternated medians, ratio and target tables."""
from __future__ import annotations

import os
import sys
import time
from typing import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


SETTLE = 0.2  # seconds of sleep before each block when several functions alternate


def alternate(fns: list, rounds: int, seconds: float = 0.05, warmup: int = 2,
              budget: float | None = None, settle: float = SETTLE) -> list[float]:
    """Median seconds per call of each of ``fns``, timed in turn, ``rounds`` times (or, given
    a ``budget`` in seconds of running, fewer once the budget is spent, but at least 3).

    Each function runs in blocks of about ``seconds`` (at least one call); the blocks of all
    functions alternate, every other round in reverse order, so that no function always runs
    first and a change of the machine's load falls on all of them alike.

    Libraries that compute on threads keep them spinning for a while after a call (NumPy's
    BLAS threads about 0.1 s; PyTorch's OpenMP pool), and on a 2-core machine the next block,
    of another library, shares the cores with them: measured here, PyTorch's training step
    ran 2-4x slower for its first calls right after NumPy's matrix products, ours 1.5x slower
    right after PyTorch's. So when several functions alternate, each block starts after
    ``settle`` seconds of sleep (not counted in the budget), then a quarter of its calls run
    untimed (caches, a library's allocator and thread pool warm up), then the block is
    timed.
    """
    numbers = []
    for fn in fns:  # calls per block from the median of single calls (a slow first call of
        for _ in range(warmup):  # a library would otherwise make every block one call long)
            fn()
        calls, t_end = [], time.perf_counter() + seconds
        while len(calls) < 3 or time.perf_counter() < t_end:
            t0 = time.perf_counter()
            fn()
            calls.append(time.perf_counter() - t0)
        calls.sort()
        numbers.append(max(1, round(seconds / calls[len(calls) // 2])))
    times = [[] for _ in fns]
    order = list(range(len(fns)))
    pause = settle if len(fns) > 1 else 0.0
    slept = 0.0
    t_start = time.perf_counter()
    for r in range(rounds):
        if budget is not None and r >= 3 and time.perf_counter() - t_start - slept > budget:
            break
        for i in order:
            fn, n = fns[i], numbers[i]
            if pause:
                time.sleep(pause)
                slept += pause
            for _ in range(max(1, n // 4)):
                fn()
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            times[i].append((time.perf_counter() - t0) / n)
        order.reverse()
    return [sorted(ts)[len(ts) // 2] for ts in times]


def timing(quick: bool) -> dict:
    """The keyword arguments of ``compare`` for a full run or a ``--quick`` one."""
    if quick:
        return {"rounds": 5, "seconds": 0.05, "budget": 1.5}
    return {"rounds": 11, "seconds": 0.1, "budget": 8.0}


def compare(fns: dict[str, Callable[[], object] | None], rounds: int, seconds: float = 0.05,
            budget: float | None = None) -> dict[str, float | None]:
    """``alternate`` over the named functions; ``None`` (a library not installed) stays None."""
    names = [k for k, f in fns.items() if f is not None]
    times = dict(zip(names, alternate([fns[k] for k in names], rounds, seconds,
                                      budget=budget)))
    return {k: times.get(k) for k in fns}


def fmt_time(t: float | None) -> str:
    if t is None:
        return "—"
    if t >= 1:
        return f"{t:.2f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.2f} ms"
    return f"{t * 1e6:.1f} µs"


def fmt_bytes(n: int) -> str:
    return f"{n / 2 ** 20:.4g} MiB" if n >= 2 ** 20 else f"{n / 2 ** 10:.4g} KiB"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def fmt_ratio(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}x"


def target_row(number: int, name: str, value: float | None, limit: float, unit: str = "x",
               detail: str = "") -> list[str]:
    """One row of a target table: the target's number in the project's list of performance
    targets (benchmarks/README.md), what it compares, the measured value, the limit,
    met / NOT met ("—" when a library it needs is not installed) and what the value is
    made of."""
    verdict = "—" if value is None else "met" if value <= limit else "NOT met"
    shown = "—" if value is None else f"{value:.2f}"
    if value is not None and value != limit and shown == f"{limit:.2f}":
        shown = f"{value:.4f}"  # 3.0002 is not met: never print it as 3.00
    return [str(number), name, shown if value is None else shown + unit, f"<= {limit:g}{unit}",
            verdict, detail]


def target_ratio(number: int, name: str, ours: float | None, other: float | None,
                 limit: float) -> list[str]:
    """A target on the ratio of two times measured in the same run (ours / the other's)."""
    return target_row(number, name, ratio(ours, other), limit,
                      detail=f"{fmt_time(ours)} / {fmt_time(other)}")


TARGET_HEADER = ["#", "target", "measured", "limit", "verdict", "from"]


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def caches() -> str:
    """The L2 and L3 cache sizes of CPU 0 as Linux reports them ("" elsewhere)."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    found = {}
    try:
        for entry in sorted(os.listdir(base)):
            path = os.path.join(base, entry)
            if not entry.startswith("index"):
                continue
            with open(os.path.join(path, "level")) as f:
                level = f.read().strip()
            with open(os.path.join(path, "size")) as f:
                size = f.read().strip()
            if level in ("2", "3"):
                found[level] = size.replace("K", " KiB").replace("M", " MiB")
    except OSError:
        return ""
    return ", ".join(f"L{k} {v}" for k, v in sorted(found.items()))


def environment() -> str:
    import numpy as np
    parts = [f"Python {sys.version.split()[0]}", f"NumPy {np.__version__}"]
    try:
        import torch
        parts.append(f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads)")
    except ImportError:
        parts.append("PyTorch not installed")
    try:
        from tinygrad_bn.norms._threads import num_threads
        fused = f"fused norms {num_threads()} threads"
    except ImportError:
        fused = "fused norms"
    try:
        from tinygrad_bn.norms import _kernels
        fused += ", numba kernels" if _kernels.available else ", NumPy kernels"
    except (ImportError, AttributeError):
        pass
    parts.append(fused)
    parts.append(f"{os.cpu_count()} CPUs")
    if caches():
        parts.append(caches())
    return ", ".join(parts)
