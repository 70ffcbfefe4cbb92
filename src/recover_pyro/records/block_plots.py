"""Pictures of scored dose-response blocks, the views SynergyFinder users expect.

Per block, two PNGs:

* ``<block>_response.png``: each drug's dose-response curve (the measured single-drug responses and the
  fitted curve that ZIP and Loewe used) and the dose-response matrix (% inhibition per well, annotated);
* ``<block>_synergy.png``: the synergy map of each score (ZIP, Bliss, HSA, Loewe): per-dose synergy on the
  dose grid, red for synergy, green for antagonism (SynergyFinder's colours), annotated, with the block's
  score in the title.

Each uses a bare :class:`matplotlib.figure.Figure` (Agg canvas): no pyplot state, no backend change; each PNG
is written atomically (a killed run leaves the previous picture or none, never half a file).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.colors import LinearSegmentedColormap, TwoSlopeNorm
from matplotlib.figure import Figure

from recover_pyro.data.synergy.scores import SCORES, BlockScores
from recover_pyro.records.files import atomic_write

#: SynergyFinder's palette: green (antagonism) - white - red (synergy).
SYNERGY_COLOURS = LinearSegmentedColormap.from_list("synergy", ["#2c7c3a", "#ffffff", "#c0262c"])
SCORE_TITLES = {"zip": "ZIP", "bliss": "Bliss", "hsa": "HSA", "loewe": "Loewe"}
DPI = 80


def safe_name(text: str) -> str:
    """``text`` as a file-name part: letters, digits, ``-``, ``_`` and ``.``; others become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "block"


def _dose_labels(doses: np.ndarray) -> list[str]:
    return [f"{d:.3g}" for d in doses]


def _save(fig: Figure, path: Path) -> Path:
    # fixed margins instead of tight_layout, which would lay the figure out twice (a large share of the time)
    return atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=DPI))


def plot_dose_response(scores: BlockScores, path: str | Path, unit: str | None = "uM") -> Path:
    """Write the single-drug curves and the dose-response matrix of one block to a PNG at ``path``.

    Args:
        scores: the scored block (its curves are the ones ZIP and Loewe used).
        path: the PNG to write.
        unit: molar unit for the dose labels (None: the file's).
    """
    block = scores.block
    rows, cols, unit_r, unit_c = block.conc_in(unit)
    fig = Figure(figsize=(14, 4.6))
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.25]})
    fig.subplots_adjust(left=0.05, right=0.97, bottom=0.2, top=0.9, wspace=0.3)
    for k, (ax, drug, doses, shown, unit_k, observed) in enumerate(
        (
            (axes[0], block.drug_row, block.conc_row, rows, unit_r, block.response[:, 0]),
            (axes[1], block.drug_col, block.conc_col, cols, unit_c, block.response[0, :]),
        )
    ):
        positive = doses > 0
        factor = shown[positive][0] / doses[positive][0]
        ax.scatter(shown[positive], observed[positive], color="black", zorder=3, label="measured")
        model = scores.single.model[k]
        if model:
            grid = np.geomspace(doses[positive].min() / 3, doses[positive].max() * 3, 200)
            curve = scores.single.predict(np.tile(grid, (2, 1)))[k]
            ax.plot(grid * factor, curve, color="#1f5fa8", label=f"fitted {model}")
        ax.axhline(observed[0], color="grey", linestyle=":", label="no drug")
        ax.set_xscale("log")
        ax.set(xlabel=f"{drug} ({unit_k})" if unit_k else drug, ylabel="% inhibition", title=drug)
        ax.legend(loc="best", fontsize="small")
    ax = axes[2]
    image = ax.imshow(block.response[::-1], cmap="viridis", aspect="auto")
    _annotate(ax, block.response[::-1], fmt="{:.1f}")
    ax.set_xticks(range(len(cols)), _dose_labels(cols), rotation=45)
    ax.set_yticks(range(len(rows)), _dose_labels(rows[::-1]))
    ax.set(
        xlabel=f"{block.drug_col} ({unit_c})" if unit_c else block.drug_col,
        ylabel=f"{block.drug_row} ({unit_r})" if unit_r else block.drug_row,
        title=f"% inhibition, block {block.block_id} ({block.cell_line})",
    )
    fig.colorbar(image, ax=ax, shrink=0.85)
    return _save(fig, Path(path))


def plot_synergy_maps(
    scores: BlockScores, path: str | Path, unit: str | None = "uM", which: Sequence[str] = SCORES
) -> Path:
    """Write the synergy map of each score in ``which`` for one block to a PNG at ``path``.

    Each panel shows the per-dose synergy on the combination wells (rows: drug A's doses, highest at the top;
    columns: drug B's), on a symmetric colour scale centred at 0, with the block's score (mean over the
    combination wells) in its title.
    """
    block = scores.block
    rows, cols, unit_r, unit_c = block.conc_in(unit)
    ncols = 2 if len(which) == 4 else len(which)
    nrows = -(-len(which) // ncols)
    fig = Figure(figsize=(6.0 * ncols, 4.8 * nrows + 0.6))
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    fig.subplots_adjust(left=0.09, right=0.97, bottom=0.1, top=0.9, wspace=0.35, hspace=0.5)
    for ax, score in zip(axes, which):
        values = scores.surfaces[score][1:, 1:][::-1]
        limit = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
        limit = max(limit, 1e-9)
        image = ax.imshow(values, cmap=SYNERGY_COLOURS, norm=TwoSlopeNorm(0.0, -limit, limit), aspect="auto")
        _annotate(ax, values, fmt="{:.1f}")
        ax.set_xticks(range(len(cols) - 1), _dose_labels(cols[1:]), rotation=45)
        ax.set_yticks(range(len(rows) - 1), _dose_labels(rows[1:][::-1]))
        ax.set(
            xlabel=f"{block.drug_col} ({unit_c})" if unit_c else block.drug_col,
            ylabel=f"{block.drug_row} ({unit_r})" if unit_r else block.drug_row,
            title=f"{SCORE_TITLES.get(score, score)} synergy {scores.mean(score):.2f}",
        )
        fig.colorbar(image, ax=ax, shrink=0.85)
    fig.suptitle(
        f"block {block.block_id}: {block.drug_row} + {block.drug_col} ({block.cell_line}), {scores.convention}"
    )
    return _save(fig, Path(path))


def _annotate(ax: object, values: np.ndarray, fmt: str) -> None:
    """Write each cell's value into a heatmap (``nan`` cells stay empty)."""
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=7)  # type: ignore[attr-defined]


def write_block_plots(results: Sequence[BlockScores], folder: str | Path, unit: str | None = "uM") -> list[Path]:
    """Both pictures of every block into ``folder`` (created): ``<block>_response.png`` and
    ``<block>_synergy.png``; returns the paths written."""
    folder = Path(folder)
    written = []
    used: set[str] = set()
    for k, scores in enumerate(results):
        stem = safe_name(f"block_{scores.block.block_id}")
        if stem in used:  # two ids that differ only in characters a file name cannot hold
            stem = f"{stem}_{k}"
        used.add(stem)
        written.append(plot_dose_response(scores, folder / f"{stem}_response.png", unit=unit))
        written.append(plot_synergy_maps(scores, folder / f"{stem}_synergy.png", unit=unit))
    return written
