"""PNG figures saved in the package: confusion matrix and precision/recall curves."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def _pyplot():  # noqa: ANN202 - matplotlib module
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix_png(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path) -> None:
    plt = _pyplot()
    data = np.asarray(matrix)
    size = max(3.5, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(data, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = data.max() if data.size else 0
    for (i, j), value in np.ndenumerate(data):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > peak / 2 else "black")
    ax.set_title("Confusion matrix (held-out images)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def pr_curves_png(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> None:
    """``curves`` maps tag -> (precision, recall) arrays."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for tag, (precision, recall) in curves.items():
        ax.step(np.r_[0.0, recall], np.r_[precision[:1] if len(precision) else [1.0], precision], where="post", label=tag)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
