"""Plots a run leaves behind: the calibration curve of ``recover-train`` and the recall curve of a campaign.

Each uses a bare :class:`matplotlib.figure.Figure` (Agg canvas): no pyplot state, no backend change; each PNG
is written atomically, so a killed run leaves the previous plot or none, never half a file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from recover_pyro.records.files import atomic_write


def plot_calibration(
    expected: np.ndarray | Sequence[float],
    observed: np.ndarray | Sequence[float],
    path: str | Path,
    label: str = "model",
) -> Path:
    """Write the calibration curve ``observed`` vs ``expected`` with the diagonal to a PNG at ``path``.

    Uses a bare :class:`matplotlib.figure.Figure` (Agg canvas), so no pyplot state or backend changes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="calibrated")
    ax.plot(np.asarray(expected, dtype=float), np.asarray(observed, dtype=float), marker="o", label=label)
    ax.set(xlabel="nominal central-interval level", ylabel="observed coverage", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    fig.tight_layout()
    # Atomically, like every result file: a killed run leaves the previous plot or none, never half a PNG.
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=100))
    return path


def plot_recall(rounds: pd.DataFrame, pool_size: int, path: Path, title: str = "") -> Path:
    """Recall of each top fraction against experiments done, with random's expectation (explored fraction).

    Uses a bare :class:`matplotlib.figure.Figure` (Agg canvas): no pyplot state, no backend change.
    """
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    n = rounds["n_measured"].to_numpy()
    for column in [c for c in rounds.columns if c.startswith("recall_top")]:
        label = column.removeprefix("recall_top").replace("pct", " %")
        ax.plot(n, rounds[column], marker="o", label=f"top {label} recall")
    grid = np.linspace(0, max(n.max(), 1), 50)
    ax.plot(grid, grid / pool_size, color="grey", linestyle="--", label="random (expected)")
    ax.set(xlabel="experiments done", ylabel="recall", ylim=(0, 1.02), title=title)
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()))
