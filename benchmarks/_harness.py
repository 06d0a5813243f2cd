"""Timing helpers shared by the benchmark scripts: medians of many repeats, ratio tables."""
from __future__ import annotations

import os
import sys
import time
from typing import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def median_time(fn: Callable[[], object], *, repeats: int = 7, number: int | None = None,
                min_time: float = 0.2, warmup: int = 3) -> float:
    """Median over ``repeats`` runs of the mean time of ``number`` calls (seconds per call).

    ``number`` is chosen so that one run lasts about ``min_time`` when not given.
    """
    for _ in range(warmup):
        fn()
    if number is None:
        number = 1
        while True:
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            dt = time.perf_counter() - t0
            if dt >= min_time / 4 or number >= 1 << 20:
                number = max(1, int(number * min_time / max(dt, 1e-9)))
                break
            number *= 4
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    times.sort()
    return times[len(times) // 2]


def fmt_time(t: float | None) -> str:
    if t is None:
        return "—"
    if t >= 1:
        return f"{t:.2f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.2f} ms"
    return f"{t * 1e6:.1f} µs"


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def environment() -> str:
    import numpy as np
    parts = [f"Python {sys.version.split()[0]}", f"NumPy {np.__version__}"]
    try:
        import torch
        parts.append(f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads)")
    except ImportError:
        parts.append("PyTorch not installed")
    parts.append(f"{os.cpu_count()} CPUs")
    return ", ".join(parts)
