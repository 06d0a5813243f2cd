"""Small helpers shared by the studies: single-threaded BLAS, progress bars, warnings."""
from __future__ import annotations

import contextlib
import warnings

import numpy as np


@contextlib.contextmanager
def study_context():
    """Run the studies' many small matrix products on one BLAS thread (several times faster
    for these sizes, and steady on a busy machine) and silence the overflow warnings of runs
    that diverge on purpose."""
    with contextlib.ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            pass
        else:
            stack.enter_context(threadpool_limits(limits=1, user_api="blas"))
        stack.enter_context(np.errstate(over="ignore", invalid="ignore", divide="ignore"))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr, or None when disabled or tqdm is missing."""
    from ..training.train import _progress

    return _progress(total, desc, enabled)


def save(fig, path):
    """Save ``fig`` to ``path`` (when given) and close it; returns ``fig``."""
    if path:
        import matplotlib.pyplot as plt

        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
    return fig


class SweepMixin:
    """For sweep results with ``test_acc`` and ``diverged`` (norm -> (settings, seeds)) and a
    ``threshold``: which settings train."""

    def mean_acc(self, norm: str) -> np.ndarray:
        """Test accuracy averaged over seeds, one value per swept setting."""
        return np.asarray(self.test_acc[norm], dtype=float).mean(axis=1)

    def trains(self, norm: str) -> np.ndarray:
        """Per setting: no seed diverged and the mean accuracy reached ``threshold``."""
        div = np.asarray(self.diverged[norm], dtype=bool).any(axis=1)
        return (~div) & (self.mean_acc(norm) >= self.threshold)
