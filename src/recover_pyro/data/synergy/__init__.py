"""Synergy scores from dose-response blocks, as SynergyFinder computes them (Bliss, HSA, Loewe, ZIP).

    from recover_pyro import score_blocks
    result = score_blocks("plates.csv")                      # SynergyFinder 3.x rules
    result = score_blocks("plates.csv", convention="drugcomb")  # SynergyFinder 2.x: DrugComb's values
    result.per_block()   # one row per block, the project's measurement format (+ block_id)
    result.per_dose()    # one row per well: response, each score's reference and synergy
    result.fits()        # the single-drug curves that were used

Modules: :mod:`~recover_pyro.data.synergy.varmetric` (the minimiser R's drc uses),
:mod:`~recover_pyro.data.synergy.curves` (LL.4 fits as drc makes them), :mod:`~recover_pyro.data.synergy.newton`
(2.x's Loewe root finder), :mod:`~recover_pyro.data.synergy.scores` (the four scores and both conventions).
:func:`load_block_measurements` turns a block file straight into a :class:`~recover_pyro.data.screen.Screen`
of one score, for the wet-lab loop.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from recover_pyro.data.blocks import (
    BlockProblem,
    BlockSet,
    DoseResponseBlock,
    OnBadBlock,
    ResponseKind,
    convert_dose,
    read_blocks,
)
from recover_pyro.data.loaders import load_csv
from recover_pyro.data.screen import Screen
from recover_pyro.data.synergy.curves import ec50_log10
from recover_pyro.data.synergy.scores import (
    CONVENTIONS,
    SCORES,
    BlockScores,
    Convention,
    normalise_convention,
    score_all,
)
from recover_pyro.data.validation import OnInvalid
from recover_pyro.errors import InvalidScoreError, ScreenDataError, option

__all__ = [
    "CONVENTIONS",
    "MEASUREMENT_COLUMNS",
    "SCORE_COLUMNS",
    "SCORES",
    "SynergyResult",
    "load_block_measurements",
    "score_blocks",
    "score_column",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
#: Score -> its column in the per-block table (DrugComb's names).
SCORE_COLUMNS = {s: f"synergy_{s}" for s in SCORES}
#: Columns of :meth:`SynergyResult.per_block`: the project's measurement format, keyed by ``block_id`` too
#: (last, so the table is not taken for DrugComb's summary table, whose first column is ``block_id``).
MEASUREMENT_COLUMNS = (
    "drug_a",
    "drug_b",
    "drug_a_name",
    "drug_b_name",
    "cell_line",
    "study",
    "n_replicates",
    *SCORE_COLUMNS.values(),
    "block_id",
)


def score_column(score: str) -> str:
    """``"zip"``, ``"ZIP"`` or ``"synergy_zip"`` -> ``"synergy_zip"``; ``ValueError`` for anything else."""
    key = score.strip().lower().removeprefix("synergy_")
    if key not in SCORE_COLUMNS:
        raise ValueError(f"unknown synergy score {score!r}; choose one of {list(SCORE_COLUMNS.values())}")
    return SCORE_COLUMNS[key]


@dataclass(frozen=True)
class SynergyResult:
    """Scores of the blocks of one file (or list of blocks).

    Attributes:
        scores: one :class:`~recover_pyro.data.synergy.scores.BlockScores` per scored block, in file order.
        problems: blocks left out when reading (``on_bad_block="skip"``).
        convention: the rules used (``"synergyfinder3"`` or ``"drugcomb"``).
        unit: molar unit of the concentrations in :meth:`per_dose` and :meth:`fits` (None: as in the file).
    """

    scores: list[BlockScores]
    problems: list[BlockProblem] = field(default_factory=list)
    convention: str = "synergyfinder3"
    unit: str | None = "uM"

    def per_block(self) -> pd.DataFrame:
        """One row per block in the project's measurement format (:data:`MEASUREMENT_COLUMNS`).

        ``drug_a`` is the row drug, ``drug_b`` the column drug (ids and names as spelled in the file);
        ``n_replicates`` is the fewest measurements of any well; a score that is not defined (no curve could
        be fitted) is NaN (see :meth:`summary` for why).
        """
        rows = []
        for s in self.scores:
            b = s.block
            row = {
                "drug_a": b.drug_row,
                "drug_b": b.drug_col,
                "drug_a_name": b.drug_row,
                "drug_b_name": b.drug_col,
                "cell_line": b.cell_line,
                "study": b.study,
                "n_replicates": int(b.n_replicates.min()),
            }
            row.update({col: s.mean(score) for score, col in SCORE_COLUMNS.items()})
            row["block_id"] = b.block_id
            rows.append(row)
        return pd.DataFrame(rows, columns=list(MEASUREMENT_COLUMNS))

    def per_dose(self) -> pd.DataFrame:
        """One row per well: ``block_id, drug_row, drug_col, cell_line, conc_row, conc_col, conc_row_unit,
        conc_col_unit, n_replicates, response`` and, per score, ``<score>_ref`` and ``synergy_<score>``
        (plus ZIP's smoothed surface ``zip_fit``)."""
        frames = []
        for s in self.scores:
            b = s.block
            rows_c, cols_c, unit_r, unit_c = b.conc_in(self.unit)
            m, n = b.shape
            data: dict[str, object] = {
                "block_id": b.block_id,
                "drug_row": b.drug_row,
                "drug_col": b.drug_col,
                "cell_line": b.cell_line,
                "conc_row": np.repeat(rows_c, n),
                "conc_col": np.tile(cols_c, m),
                "conc_row_unit": unit_r,
                "conc_col_unit": unit_c,
                "n_replicates": b.n_replicates.ravel(),
                "response": b.response.ravel(),
            }
            for score in SCORES:
                if score == "zip":
                    data["zip_fit"] = s.surfaces["zip_fit"].ravel()
                data[f"{score}_ref"] = s.surfaces[f"{score}_ref"].ravel()
                data[f"synergy_{score}"] = s.surfaces[score].ravel()
            frames.append(pd.DataFrame(data))
        if not frames:
            return pd.DataFrame(columns=["block_id", "conc_row", "conc_col", "response"])
        return pd.concat(frames, ignore_index=True)

    def fits(self) -> pd.DataFrame:
        """The single-drug curves behind ZIP and Loewe: one row per (block, drug) with the model that was used
        (``LL.4``, SynergyFinder's ``L.4`` fallback on log dose, or empty: none), ``hill`` (b), ``bottom``
        (c), ``top`` (d), ``ec50`` (in the table's unit; from ``e``), the residual sum of squares and the
        optimiser's iterations."""
        rows = []
        for s in self.scores:
            b = s.block
            log_ec50 = ec50_log10(s.single.params, s.single.model)
            for k, (drug, role, own) in enumerate(((b.drug_row, "row", b.unit_row), (b.drug_col, "col", b.unit_col))):
                ec50, unit = convert_dose(np.array([10.0 ** log_ec50[k]]), own, self.unit)
                rows.append(
                    {
                        "block_id": b.block_id,
                        "drug": drug,
                        "role": role,
                        "model": s.single.model[k],
                        "hill": s.single.params[k, 0],
                        "bottom": s.single.params[k, 1],
                        "top": s.single.params[k, 2],
                        "ec50": float(ec50[0]),
                        "unit": unit,
                        "rss": s.single.rss[k],
                        "iterations": int(s.single.iterations[k]),
                    }
                )
        return pd.DataFrame(rows)

    def summary(self) -> pd.DataFrame:
        """One line per block for a person to scan: drugs, cell line, grid, replicates, the four scores, the
        single-drug curves' models and what went wrong; blocks left out when reading are listed too."""
        rows = []
        for s in self.scores:
            b = s.block
            rows.append(
                {
                    "block_id": b.block_id,
                    "drug_row": b.drug_row,
                    "drug_col": b.drug_col,
                    "cell_line": b.cell_line,
                    "grid": f"{b.shape[0]}x{b.shape[1]}",
                    "replicates": _replicates(b),
                    **{score.upper() if score != "hsa" else "HSA": round(s.mean(score), 3) for score in SCORES},
                    "curves": "/".join(m or "none" for m in s.single.model),
                    "notes": "; ".join(s.notes),
                }
            )
        for p in self.problems:
            rows.append({"block_id": p.block_id, "notes": f"not scored ({p.error}): {p.message}"})
        table = pd.DataFrame(rows)
        if "ZIP" in table:
            table = table.rename(columns={"BLISS": "Bliss", "LOEWE": "Loewe"})
        return table


def _replicates(block: DoseResponseBlock) -> str:
    lo, hi = int(block.n_replicates.min()), int(block.n_replicates.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"


def score_blocks(
    blocks: BlockSet | Sequence[DoseResponseBlock] | PathLike,
    convention: str = "synergyfinder3",
    response: ResponseKind = "inhibition",
    on_bad_block: OnBadBlock = "raise",
    cell_line: str | None = None,
    unit: str | None = "uM",
) -> SynergyResult:
    """Bliss, HSA, Loewe and ZIP of every block, per dose and per block (see :mod:`.scores`).

    Args:
        blocks: a block file (read with :func:`~recover_pyro.data.blocks.read_blocks`), a
            :class:`~recover_pyro.data.blocks.BlockSet` or a list of blocks.
        convention: ``"synergyfinder3"`` (SynergyFinder 3.x, default) or ``"drugcomb"`` (SynergyFinder 2.x,
            the rules of DrugComb's published scores; ``"synergyfinder2"`` is the same).
        response, on_bad_block, cell_line: passed to :func:`~recover_pyro.data.blocks.read_blocks` when
            ``blocks`` is a file.
        unit: molar unit for the concentrations of the per-dose and fit tables (None: as in the file). The
            curves are fitted on the file's numbers whatever this is.

    Returns:
        A :class:`SynergyResult`.
    """
    conv: Convention = normalise_convention(convention)
    if isinstance(blocks, (str, os.PathLike)):
        blocks = read_blocks(blocks, response=response, on_bad_block=on_bad_block, cell_line=cell_line)
    problems = list(blocks.problems) if isinstance(blocks, BlockSet) else []
    listed = list(blocks.blocks) if isinstance(blocks, BlockSet) else list(blocks)
    scores = score_all(listed, conv)
    for s in scores:
        for note in s.notes:
            log.warning("block %s (%s + %s): %s", s.block.block_id, s.block.drug_row, s.block.drug_col, note)
    return SynergyResult(scores=scores, problems=problems, convention=conv, unit=unit)


def load_block_measurements(
    path: PathLike,
    smiles: PathLike,
    score: str,
    on_duplicate: str = "mean",
    on_invalid: OnInvalid = "raise",
    on_unknown_drug: OnInvalid = "raise",
    drug_id_column: str | None = None,
    convention: str = "synergyfinder3",
    response: ResponseKind = "inhibition",
    cell_line: str | None = None,
) -> Screen:
    """A dose-response block file as a :class:`~recover_pyro.data.screen.Screen` of one synergy score.

    Each block is scored (:func:`score_blocks`) and becomes one measurement of ``score`` (``synergy_zip``,
    ``zip``, ...) for its drug pair and cell line; the rows then go through
    :func:`~recover_pyro.data.loaders.load_csv` like any measured file (drug ids must be in the SMILES table
    ``smiles``; repeated pairs merged by ``on_duplicate``). A block whose score is not defined raises
    :class:`~recover_pyro.errors.InvalidScoreError` naming it, or is dropped with a warning under
    ``on_invalid="drop"``. The arguments after ``path, smiles, score`` are those of the other measured-file
    readers, then the scoring options.

    Raises:
        InvalidScoreError: a block's score could not be computed (``on_invalid="raise"``).
    """
    path = Path(path)
    column = score_column(score)
    result = score_blocks(path, convention=convention, response=response, cell_line=cell_line)
    table = result.per_block()
    table.index = pd.Index([s.block.line for s in result.scores], name="line")
    undefined = table[column].isna().to_numpy()
    if undefined.any():
        first = result.scores[int(np.flatnonzero(undefined)[0])]
        why = "; ".join(first.notes) or "no value"
        drop = option("on_invalid", "drop")
        if on_invalid == "raise":
            raise InvalidScoreError(
                f"block {first.block.block_id} ({first.block.drug_row} + {first.block.drug_col}) has no {column}: "
                f"{why}; {int(undefined.sum())} block(s) like it"
                + (f"; set {drop} to leave them out (logged)" if drop else ""),
                file=str(path),
                row=first.block.line,
            )
        log.warning("%s: %d block(s) without %s left out (%s)", path, int(undefined.sum()), column, why)
        table = table[~undefined]
    keep = [c for c in MEASUREMENT_COLUMNS if c not in SCORE_COLUMNS.values() or c == column]
    with tempfile.TemporaryDirectory(prefix="recover-blocks-") as tmp:
        scored = Path(tmp) / f"{path.stem}.scores.csv"
        table[keep].to_csv(scored, index=False)
        try:
            screen = load_csv(
                scored,
                smiles,
                score_columns=[column],
                aggregate=on_duplicate,
                name=path.stem,
                on_invalid=on_invalid,
                on_unknown_drug=on_unknown_drug,
                drug_id_column=drug_id_column,
            )
        except ScreenDataError as err:
            raise _located(err, scored, path, table) from err
    return replace(screen, source=str(path))


def _located(err: ScreenDataError, scored: Path, path: Path, table: pd.DataFrame) -> ScreenDataError:
    """``err`` about the scored table re-aimed at the block file: its path, and the block's first line."""
    line = None
    if err.row is not None and 2 <= err.row < 2 + len(table):
        line = int(table.index[err.row - 2])
    text = str(err)
    where = [
        f"file {scored}",
        f"row {err.row}" if err.row is not None else "",
        f"drug {err.drug!r}" if err.drug else "",
    ]
    suffix = " (" + ", ".join(w for w in where if w) + ")"
    message = text[: -len(suffix)] if text.endswith(suffix) else text.replace(str(scored), str(path))
    cls = type(err)
    try:
        return cls(f"{message} [in the scores of the blocks of {path}]", file=str(path), row=line, drug=err.drug)
    except TypeError:  # a subclass with its own constructor
        return ScreenDataError(message, file=str(path), row=line, drug=err.drug)
