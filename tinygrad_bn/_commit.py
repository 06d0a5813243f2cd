"""Write several arrays in place as one step: all of them, even if Ctrl-C arrives midway.

Principle 2 ("a failed call changes nothing") is kept in two halves. The caller validates
everything that could make a write fail -- shapes, dtypes that cast, writable arrays -- and
computes every new value into fresh arrays first; only then does it call ``commit`` (or
write inside ``interrupts_held()``). What is left to interrupt the writes is a signal:
``KeyboardInterrupt`` between the running mean and the running variance, or between two
parameters of an optimizer step. ``commit`` holds SIGINT until the last write is done and
then delivers it, so the step is complete and the interrupt still stops the program.

No copy is taken for a rollback (an optimizer step over a 784-256-256-10 MLP spent about a
tenth of its time copying every parameter). In a thread other than the main one Python
delivers no signals, so there is nothing to hold.
"""
from __future__ import annotations

import signal
import threading

try:  # the C module: the same functions as ``signal`` without the enum wrapping (~10x faster)
    import _signal
except ImportError:  # pragma: no cover - other Pythons
    _signal = signal

import numpy as np


_SIGINT = int(signal.SIGINT)


def _write(dst: np.ndarray, src, casting: str) -> None:
    """``dst[...] = src`` (one place, so that tests can interrupt a commit between writes)."""
    np.copyto(dst, src, casting=casting)


class interrupts_held:
    """``with interrupts_held():`` holds SIGINT while the block runs and delivers it (once)
    when the block is done. Blocks nest: an inner one leaves the holding to the outer one
    (and costs next to nothing)."""

    __slots__ = ("held", "previous")

    def __enter__(self):
        global _holding
        self.held, self.previous = [], None
        if (_holding is None and threading.current_thread() is threading.main_thread()
                and _signal.getsignal(_SIGINT) is not None):  # None: set outside Python
            self.previous = _signal.signal(_SIGINT, self._hold)
            _holding = self
        return self

    def _hold(self, signum, frame) -> None:
        self.held.append(frame)

    def __exit__(self, *exc) -> None:
        global _holding
        if self.previous is not None:
            _holding = None
            _signal.signal(_SIGINT, self.previous)
            if self.held:
                _deliver(self.previous, self.held[0])


_holding = None  # the outermost open interrupts_held of the main thread, if any


def commit(*pairs, casting: str = "unsafe") -> None:
    """Write each ``(array, new value)`` pair in place, with SIGINT held until the last one is
    written. The caller has checked that every write can succeed."""
    with interrupts_held():
        for dst, src in pairs:
            _write(dst, src, casting)


def _deliver(handler, frame) -> None:
    """Run what SIGINT would have run had it not been held."""
    if callable(handler):
        handler(signal.SIGINT, frame)
    elif handler == signal.SIG_DFL:
        signal.raise_signal(_SIGINT)
    # SIG_IGN: nothing to do
