"""A small thread pool for the blocked norm kernels of ``fused.py``.

NumPy releases the GIL inside its ufunc loops, so independent blocks of one array run on
several cores at once. The number of threads follows the machine (the CPUs this process may
run on) and can be set with the environment variable ``TINYGRAD_BN_THREADS`` (or, failing
that, ``OMP_NUM_THREADS``); ``set_num_threads(n)`` changes it at run time. ``1`` turns the
pool off. The work is split into the same blocks whatever the thread count, and every result
is combined in block order, so the numbers do not depend on the number of threads.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

__all__ = ["num_threads", "set_num_threads", "run_blocks"]

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_threads: int | None = None


def _default_threads() -> int:
    """``TINYGRAD_BN_THREADS``, else ``OMP_NUM_THREADS``, else the usable CPUs (≥ 1)."""
    for var in ("TINYGRAD_BN_THREADS", "OMP_NUM_THREADS"):
        v = os.environ.get(var, "").strip()
        if v:
            try:
                return max(1, int(v.split(",")[0]))
            except ValueError:
                pass
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, n)


def num_threads() -> int:
    """The number of threads the blocked kernels use."""
    global _threads
    if _threads is None:
        _threads = _default_threads()
    return _threads


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads (``None``: back to the environment / machine default)."""
    global _threads
    if n is not None and int(n) < 1:
        raise ValueError(f"set_num_threads expects n >= 1, got {n}")
    _threads = None if n is None else int(n)


def _get_pool(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size < workers:
            old = _pool
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tinygrad_bn")
            _pool_size = workers
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def _forget_pool() -> None:
    """In a forked child the parent's worker threads do not exist: start a new pool."""
    global _pool, _pool_size
    _pool, _pool_size = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def run_blocks(fn: Callable[[int], object], count: int) -> list:
    """``[fn(0), ..., fn(count - 1)]``, the blocks shared among the threads in contiguous
    runs (the calling thread takes the first run). Results are in block order."""
    t = min(num_threads(), count)
    if t <= 1:
        return [fn(i) for i in range(count)]
    bounds = [count * j // t for j in range(t + 1)]

    def run(j):
        return [fn(i) for i in range(bounds[j], bounds[j + 1])]

    pool = _get_pool(t - 1)
    futures = [pool.submit(run, j) for j in range(1, t)]
    out = run(0)
    for f in futures:
        out.extend(f.result())
    return out
