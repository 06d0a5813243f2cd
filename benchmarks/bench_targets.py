"""Every performance target of the project, measured in one process and printed as one table.

The workloads are those of ``bench_norms.py``, ``bench_engine.py``, ``bench_train.py`` and
``bench_cnn.py`` (imported from them, with their limits); each ratio comes from the two
implementations timed in alternation in this run. The targets, numbered as in
``benchmarks/README.md`` (float32):

1. fused (hand-derived) BatchNorm, LayerNorm and GroupNorm training forward+backward
   <= 1.0x PyTorch at 64×128, <= 1.5x at 256×1024, <= 2.0x at 4096×1024;
2. composed BatchNorm <= 2.5x a hand-fused NumPy BatchNorm at 64×128, <= 1.5x at 4096×1024;
3. tiny MLP step <= 2.0x hand-written NumPy; 784-256-256-10 BatchNorm MLP step (composed and
   fused BatchNorm) <= 1.0x PyTorch;
4. building a 100k-op chain <= 1.5x PyTorch's build time;
5. Conv2d forward+backward, (32, 16, 28, 28) -> 32 channels, kernel 3, padding 1
   <= 3x PyTorch;
6. peak memory of one BatchNorm forward+backward at 4096×1024 (tracemalloc, NumPy's
   allocations, in units of the input): composed <= 5x, fused <= 3x.

The load average is printed at the start and the end: PyTorch's thread pool in particular
slows down by orders of magnitude when another process holds a core, so a run that did not
start idle is a rehearsal, not a measurement. The exit code is 0 whatever the verdicts.

Run: python benchmarks/bench_targets.py [--quick]   (2–3 minutes; --quick: about one)
"""
from __future__ import annotations

import gc
import os
import sys
import time

from _harness import TARGET_HEADER, environment, table

import bench_cnn
import bench_engine
import bench_norms
import bench_train
import tinygrad_bn as tb

QUICK = "--quick" in sys.argv
IDLE = 0.5  # a 1-minute load average above this at the start: the machine was not idle
SECTIONS = (bench_norms, bench_engine, bench_train, bench_cnn)


def fmt_load(avg: tuple) -> str:
    return " ".join(f"{v:.2f}" for v in avg)


def main() -> int:
    start = os.getloadavg()
    t0 = time.perf_counter()
    print(f"tinygrad_bn {tb.__version__} performance targets{' (--quick)' if QUICK else ''}"
          f" — {environment()}")
    print(f"load average at start (1, 5, 15 min): {fmt_load(start)}")
    if start[0] > IDLE:
        print(f"WARNING: not idle (1-minute load average {start[0]:.2f} > {IDLE}): the ratios "
              f"against PyTorch are unreliable")
    print()
    rows = []
    for module in SECTIONS:
        rows += module.measure_targets(QUICK)
        gc.collect()
    rows.sort(key=lambda r: int(r[0]))  # stable: the list's order within each number
    print(table(TARGET_HEADER, rows))
    met = sum(r[TARGET_HEADER.index("verdict")] == "met" for r in rows)
    print(f"\n{met} of {len(rows)} targets met in {time.perf_counter() - t0:.0f} s")
    print(f"load average at end (1, 5, 15 min): {fmt_load(os.getloadavg())}")
    return 0


if __name__ == "__main__":
    main()
    sys.exit(0)
