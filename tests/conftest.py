"""Shared test helpers.

Tests that need PyTorch (the oracle), Graphviz's ``dot`` binary or a browser (Chromium driven by
Playwright) skip when those are missing, unless TINYGRAD_BN_STRICT=1 is set (as CI does): then
they fail instead of skipping.
"""
import os
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

STRICT = os.environ.get("TINYGRAD_BN_STRICT", "") not in ("", "0")

settings.register_profile(
    "default", max_examples=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def _missing(what: str):
    if STRICT:
        pytest.fail(f"{what} is required when TINYGRAD_BN_STRICT=1", pytrace=False)
    pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="session")
def torch():
    """The PyTorch module (float64 oracle)."""
    try:
        import torch as _torch
    except ImportError:
        _missing("torch")
    _torch.set_default_dtype(_torch.float64)
    # the oracle's tensors are tiny: one thread, so that a busy machine cannot turn torch's
    # thread pool into tens of milliseconds of waiting per call
    _torch.set_num_threads(1)
    return _torch


@pytest.fixture(scope="session")
def dot_binary():
    """Path of Graphviz's ``dot``."""
    path = shutil.which("dot")
    if path is None:
        _missing("the Graphviz `dot` binary")
    return path


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium (Debian's package) driven by Playwright, with every request that
    is not a local file or loopback blocked by the tests that use it."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright")
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        _missing("the chromium browser")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def interrupt_on_write(monkeypatch):
    """``interrupt_on_write(nth)`` makes the process receive a real SIGINT (Ctrl-C) just before
    the ``nth`` array write of ``tinygrad_bn._commit.commit``; returns the list of writes."""
    import signal

    from tinygrad_bn import _commit

    def arm(nth: int) -> list:
        real, calls = _commit._write, []

        def write(dst, src, casting):
            calls.append(1)
            if len(calls) == nth:
                signal.raise_signal(signal.SIGINT)
            real(dst, src, casting)
        monkeypatch.setattr(_commit, "_write", write)
        return calls
    return arm
