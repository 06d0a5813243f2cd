"""Matplotlib figures: loss curves, accuracy curves, decision boundaries.

matplotlib is optional (the ``plots`` extra); it is imported when a figure is made.
"""
from __future__ import annotations

import numpy as np


def _plt():
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'tinygrad-bn[plots]'") from None
    return plt


_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]


def plot_histories(histories: dict, path: str | None = None, title: str = "Training",
                   smooth: int = 25):
    """Loss per step (smoothed) and test accuracy for each labelled ``History``.

    Returns the matplotlib Figure; saves it to ``path`` when given.
    """
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for (label, h), c in zip(histories.items(), _COLORS * 4):
        loss = h.smoothed_loss(smooth)
        steps = np.arange(len(loss)) + (len(h.step_loss) - len(loss)) + 1
        finite = np.isfinite(loss)
        ax1.plot(steps[finite], loss[finite], color=c, label=label)
        if h.diverged_at is not None:
            ax1.axvline(h.diverged_at, color=c, ls=":", lw=1)
            ax1.annotate("diverged", (h.diverged_at, ax1.get_ylim()[1]), color=c, fontsize=8,
                         ha="right", va="top", rotation=90)
        if h.eval_step:
            ax2.plot(h.eval_step, h.test_acc, color=c, marker=".", label=label)
    ax1.set_xlabel("step")
    ax1.set_ylabel(f"training loss (moving average of {smooth})")
    ax1.set_yscale("log")
    ax1.grid(alpha=0.3)
    ax1.legend()
    ax2.set_xlabel("step")
    ax2.set_ylabel("test accuracy")
    ax2.set_ylim(0, 1.02)
    ax2.grid(alpha=0.3)
    if ax2.get_legend_handles_labels()[0]:  # a run that diverged before evaluating has none
        ax2.legend(loc="lower right")
    fig.suptitle(title)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


def plot_decision_boundaries(models: dict, dataset, path: str | None = None,
                             title: str = "Decision boundaries", resolution: int = 200):
    """Predicted class over the input plane for each labelled 2-D model, with the test points."""
    from ..training.train import accuracy, predict

    plt = _plt()
    X = np.concatenate([dataset.X_train, dataset.X_test])
    if X.shape[1] != 2:
        raise ValueError(f"decision boundaries need 2-D inputs, the data has {X.shape[1]} "
                         "features")
    lo, hi = X.min(0) - 0.5, X.max(0) + 0.5
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], resolution),
                         np.linspace(lo[1], hi[1], resolution))
    grid = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
    k = len(models)
    fig, axes = plt.subplots(1, k, figsize=(4.6 * k, 4.4), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (label, model) in zip(axes[0], models.items()):
        out = predict(model, grid)
        if np.all(np.isfinite(out)):
            z = out.argmax(1).reshape(gx.shape)
            ax.contourf(gx, gy, z, levels=np.arange(dataset.n_classes + 1) - 0.5,
                        cmap=cmap, alpha=0.25, vmin=0, vmax=9)
            acc = accuracy(model, dataset.X_test, dataset.y_test)
            ax.set_title(f"{label}\ntest accuracy {acc:.1%}", fontsize=10)
        else:
            ax.set_title(f"{label}\n(outputs are not finite)", fontsize=10)
        ax.scatter(dataset.X_test[:, 0], dataset.X_test[:, 1], c=dataset.y_test, cmap=cmap,
                   vmin=0, vmax=9, s=9, edgecolors="k", linewidths=0.3)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig
