"""``tinygrad_bn._commit``: several in-place writes as one step, with Ctrl-C held until the
last write is done (what keeps Principle 2 for the norms' running statistics and the
optimizers without copying every array for a rollback)."""
import signal
import threading

import numpy as np
import pytest

from tinygrad_bn import _commit


def _arrays():
    return [np.zeros(3), np.zeros((2, 2)), np.zeros(4, np.float32)], [
        np.arange(3.0), np.ones((2, 2)), np.full(4, 2.0)]


@pytest.mark.parametrize("nth", [1, 2, 3])
def test_ctrl_c_during_writes_finishes_them_then_raises(interrupt_on_write, nth):
    dsts, srcs = _arrays()
    calls = interrupt_on_write(nth)
    with pytest.raises(KeyboardInterrupt):
        _commit.commit(*zip(dsts, srcs))
    assert len(calls) == 3
    for d, s in zip(dsts, srcs):
        np.testing.assert_array_equal(d, s)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_without_a_signal_nothing_is_raised_and_the_handler_is_untouched():
    dsts, srcs = _arrays()
    _commit.commit(*zip(dsts, srcs), casting="same_kind")
    for d, s in zip(dsts, srcs):
        np.testing.assert_array_equal(d, s)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_python_handler_runs_once_after_the_writes(monkeypatch):
    seen = []
    dsts, srcs = _arrays()
    monkeypatch.setattr(_commit, "_write", _raising_at_every_write(_commit._write))
    old = signal.signal(signal.SIGINT, lambda s, f: seen.append(
        [np.array_equal(d, x) for d, x in zip(dsts, srcs)]))
    try:
        _commit.commit(*zip(dsts, srcs))
        assert seen == [[True, True, True]]  # once, and only after every write
    finally:
        signal.signal(signal.SIGINT, old)


def _raising_at_every_write(real):
    def write(dst, src, casting):
        signal.raise_signal(signal.SIGINT)
        real(dst, src, casting)
    return write


def test_an_ignored_sigint_stays_ignored(interrupt_on_write):
    dsts, srcs = _arrays()
    interrupt_on_write(2)
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _commit.commit(*zip(dsts, srcs))
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)
    np.testing.assert_array_equal(dsts[2], srcs[2])


def test_nested_holds_deliver_once_at_the_outer_end(interrupt_on_write):
    dsts, srcs = _arrays()
    interrupt_on_write(1)
    after = []
    with pytest.raises(KeyboardInterrupt):
        with _commit.interrupts_held():
            _commit.commit(*zip(dsts, srcs))
            after.append("inner commit returned")  # the inner block did not raise
    assert after == ["inner commit returned"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_handler_is_restored_when_the_block_raises():
    with pytest.raises(ZeroDivisionError):
        with _commit.interrupts_held():
            1 / 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_another_thread_writes_without_touching_signals():
    dsts, srcs = _arrays()
    errors = []

    def run():
        try:
            _commit.commit(*zip(dsts, srcs))
        except BaseException as e:  # signal.signal outside the main thread raises ValueError
            errors.append(e)
    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert errors == []
    for d, s in zip(dsts, srcs):
        np.testing.assert_array_equal(d, s)
