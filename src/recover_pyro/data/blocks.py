"""Dose-response blocks as a plate reader's results reach a lab: reading and checking them.

A *block* is one drug pair (in one cell line) measured on a grid: drug A (the row drug) at ``m`` doses x drug
B (the column drug) at ``n`` doses, including dose 0 of each, so that the single-drug responses (the first
column: drug A alone; the first row: drug B alone) are on the plate. Each well's response is % inhibition
(default) or % viability (``response="viability"``, converted as ``100 - viability``); replicate wells of the
same dose pair are averaged (the mean is taken in extended precision, as R's ``mean`` does, so the scores match
SynergyFinder's to the last digit) and their number is kept.

Two long formats are read (column names are matched case-insensitively; CamelCase is read as snake_case):

* DrugComb / SynergyFinder 2: ``block_id, drug_row, drug_col, conc_r, conc_c, response, conc_r_unit,
  conc_c_unit`` and optionally ``cell_line_name`` (``inhibition`` may stand for ``response``);
* SynergyFinder 3: ``block_id, drug1, drug2, conc1, conc2, response, conc_unit`` (or ``conc_unit1,
  conc_unit2``) and optionally ``cell_line_name``.

A ``study`` / ``study_name`` column is kept when present. Every block is checked before anything is scored;
a bad block raises a named error (:class:`~recover_pyro.errors.BadBlockError` and its subclasses) naming the
file, the block, its first line and what to fix, or, under ``on_bad_block="skip"``, is left out and listed in
:attr:`BlockSet.problems` (and logged), never silently. Concentrations stay in the file's units for the
curve fits (SynergyFinder fits the numbers as written); :meth:`DoseResponseBlock.conc_in` converts molar units
(M, mM, uM, nM, pM) for reports.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd

from recover_pyro.data.validation import first_fields, read_table, require_values, sniff_separator
from recover_pyro.errors import (
    BadBlockError,
    EmptySelectionError,
    IncompleteDoseGridError,
    MissingColumnsError,
    MissingSingleDrugError,
    MixedBlockError,
    MixedUnitsError,
    NegativeDoseError,
    NonNumericDoseError,
    NonNumericResponseError,
    option,
)

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
ResponseKind = Literal["inhibition", "viability"]
OnBadBlock = Literal["raise", "skip"]

#: Our role -> the column names that fill it (after lower-casing and CamelCase -> snake_case), first found wins.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "block_id": ("block_id", "pair_index", "blockid"),
    "drug_row": ("drug_row", "drug1"),
    "drug_col": ("drug_col", "drug2"),
    "conc_row": ("conc_r", "conc_row", "conc1"),
    "conc_col": ("conc_c", "conc_col", "conc2"),
    "response": ("response", "inhibition", "viability"),
    "unit_row": ("conc_r_unit", "conc_unit1", "conc_row_unit", "conc_unit"),
    "unit_col": ("conc_c_unit", "conc_unit2", "conc_col_unit", "conc_unit"),
    "cell_line": ("cell_line_name", "cell_line", "cellline"),
    "study": ("study_name", "study"),
}
REQUIRED_ROLES = ("block_id", "drug_row", "drug_col", "conc_row", "conc_col", "response")
#: Cell line given to blocks of a file without a cell-line column (``cell_line=`` sets another).
DEFAULT_CELL_LINE = "unspecified"
#: Molar units and their size in micromolar.
MOLAR_UNITS: dict[str, float] = {"m": 1e6, "mm": 1e3, "um": 1.0, "nm": 1e-3, "pm": 1e-6, "fm": 1e-9}


@dataclass(frozen=True)
class DoseResponseBlock:
    """One checked block: drug A (rows) at ``m`` doses x drug B (columns) at ``n`` doses.

    Attributes:
        block_id: the file's ``block_id`` (as text).
        drug_row, drug_col: drug A (varied down the rows) and drug B (across the columns), as spelled.
        cell_line, study: the block's cell line and study (file stem when the file has no study column).
        conc_row: ``(m,)`` drug A's doses, ascending, ``conc_row[0] == 0``, in ``unit_row``.
        conc_col: ``(n,)`` drug B's doses, ascending, ``conc_col[0] == 0``, in ``unit_col``.
        unit_row, unit_col: the concentration units as written ("" when the file has none).
        response: ``(m, n)`` mean % inhibition per well; ``response[i, j]`` is at ``(conc_row[i], conc_col[j])``.
        n_replicates: ``(m, n)`` number of measurements averaged per well.
        well_order: ``(m * n,)`` flat indices ``i * n + j`` of the wells in the order they first appear in the
            file (the order SynergyFinder hands the wells to its curve fits; sums over them follow it).
        line: the file line of the block's first well.
        source: the file.
    """

    block_id: str
    drug_row: str
    drug_col: str
    cell_line: str
    study: str
    conc_row: np.ndarray
    conc_col: np.ndarray
    unit_row: str
    unit_col: str
    response: np.ndarray
    n_replicates: np.ndarray
    well_order: np.ndarray
    line: int
    source: str

    @property
    def shape(self) -> tuple[int, int]:
        """``(m, n)``: doses of drug A (including 0) x doses of drug B."""
        m, n = self.response.shape
        return m, n

    def conc_in(self, unit: str | None) -> tuple[np.ndarray, np.ndarray, str, str]:
        """Doses of both drugs converted to ``unit`` (a molar unit), with the units they are then in.

        A drug whose own unit is not molar (or ``unit`` None) keeps its numbers and unit.
        """
        rows, row_unit = convert_dose(self.conc_row, self.unit_row, unit)
        cols, col_unit = convert_dose(self.conc_col, self.unit_col, unit)
        return rows, cols, row_unit, col_unit


@dataclass(frozen=True)
class BlockProblem:
    """A block left out under ``on_bad_block="skip"``: its id, first line, error class and message."""

    block_id: str
    line: int
    error: str
    message: str


@dataclass(frozen=True)
class BlockSet:
    """The blocks of a file, in the order they first appear, and the ones that were left out."""

    blocks: list[DoseResponseBlock]
    source: str
    problems: list[BlockProblem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.blocks)


def _snake(name: str) -> str:
    """``ConcRow`` -> ``conc_row``, ``Cell Line`` -> ``cell_line`` (what SynergyFinder's reader accepts)."""
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name.strip())
    return re.sub(r"[\s\-]+", "_", name).lower()


def block_columns(header: Sequence[str]) -> dict[str, str]:
    """Our role -> the header's column for each role found in ``header`` (see :data:`COLUMN_ALIASES`)."""
    by_snake = {_snake(h): h for h in header}
    roles: dict[str, str] = {}
    for role, names in COLUMN_ALIASES.items():
        hit = next((by_snake[n] for n in names if n in by_snake), None)
        if hit is not None:
            roles[role] = hit
    return roles


def is_block_file(path: PathLike) -> bool:
    """Whether ``path`` is a dose-response block file: its header names a block id, both drugs, both
    concentrations and a response (DrugComb's summary table, one score per block, has no concentrations)."""
    try:
        header = first_fields(path, sniff_separator(path))
    except (OSError, UnicodeError, ValueError):
        return False
    return set(REQUIRED_ROLES) <= set(block_columns(header))


def read_blocks(
    path: PathLike,
    response: ResponseKind = "inhibition",
    on_bad_block: OnBadBlock = "raise",
    cell_line: str | None = None,
    study: str | None = None,
) -> BlockSet:
    """Read and check the dose-response blocks of a long-format file (see the module docstring).

    Args:
        path: CSV or TSV (separator sniffed), one row per well measurement.
        response: what the response column holds: ``"inhibition"`` (% inhibition, default) or
            ``"viability"`` (% viability, converted to ``100 - viability``). A column named ``inhibition`` or
            ``viability`` must agree with it.
        on_bad_block: ``"raise"`` the first bad block's error, or ``"skip"`` bad blocks (listed in
            :attr:`BlockSet.problems` and logged).
        cell_line: cell line of every block when the file has no cell-line column (default
            :data:`DEFAULT_CELL_LINE`, with a warning).
        study: study label when the file has no study column (default: the file's stem).

    Returns:
        The checked :class:`BlockSet`.

    Raises:
        MissingColumnsError: the header lacks a required column.
        MixedBlockError: one ``block_id`` holds more than one drug pair or cell line.
        NonNumericDoseError: a concentration is missing or not a number.
        NegativeDoseError: a concentration is negative.
        NonNumericResponseError: a response is missing, not a number or infinite.
        MixedUnitsError: one drug's concentrations in one block come in more than one unit.
        MissingSingleDrugError: a block lacks the row or column where the other drug is at dose 0.
        IncompleteDoseGridError: a block's wells do not cover every pair of its doses.
    """
    if response not in ("inhibition", "viability"):
        raise ValueError(f"response must be 'inhibition' or 'viability', not {response!r}")
    if on_bad_block not in ("raise", "skip"):
        raise ValueError(f"on_bad_block must be 'raise' or 'skip', not {on_bad_block!r}")
    path = Path(path)
    sep = sniff_separator(path)
    header = first_fields(path, sep)
    roles = block_columns(header)
    missing = [r for r in REQUIRED_ROLES if r not in roles]
    if missing:
        wanted = {r: COLUMN_ALIASES[r][:2] for r in missing}
        raise MissingColumnsError(
            f"not a dose-response block file: no column for {missing} (accepted names: {wanted}); "
            f"line 1 reads {header}. Expected DrugComb's block_id, drug_row, drug_col, conc_r, conc_c, response, "
            "conc_r_unit, conc_c_unit or SynergyFinder 3's block_id, drug1, drug2, conc1, conc2, response, conc_unit",
            file=str(path),
        )
    named = _snake(roles["response"])
    if named in ("inhibition", "viability") and named != response:
        raise MissingColumnsError(
            f"the response column is named {roles['response']!r} but the responses are read as % {response}; "
            f"set {option('response', named)} if the column holds % {named}, or rename the column",
            file=str(path),
        )
    raw = read_table(path, sep=sep, dtype=str)
    if raw.empty:
        raise EmptySelectionError("the file has no wells below its header line", file=str(path))
    frame = pd.DataFrame({role: raw[col] for role, col in roles.items()}, index=raw.index)
    for col in frame.columns:
        frame[col] = frame[col].str.strip()
    require_values(frame.rename(columns={"block_id": roles["block_id"]}), [roles["block_id"]], path)
    if "cell_line" not in frame:
        chosen = cell_line or DEFAULT_CELL_LINE
        if cell_line is None:
            log.warning(
                "%s has no cell-line column; its blocks are given cell line %r (set %s to name it)",
                path,
                chosen,
                option("cell_line", "<name>") or "a cell_line_name column",
            )
        frame["cell_line"] = chosen
    if "study" not in frame:
        frame["study"] = study if study is not None else path.stem
    blocks: list[DoseResponseBlock] = []
    problems: list[BlockProblem] = []
    for block_id, rows in frame.groupby("block_id", sort=False, dropna=False):
        try:
            blocks.append(_check_block(str(block_id), rows, response, str(path)))
        except BadBlockError as err:
            if on_bad_block == "raise":
                raise
            problems.append(BlockProblem(str(block_id), int(rows.index[0]), type(err).__name__, str(err)))
            log.warning("skipped %s: %s", type(err).__name__, err)
    if not blocks and not problems:
        raise EmptySelectionError("the file has no blocks", file=str(path))
    return BlockSet(blocks=blocks, source=str(path), problems=problems)


def block_pairs(path: PathLike, cell_line: str | None = None) -> pd.DataFrame:
    """The ``drug_a, drug_b, cell_line`` of every block in ``path`` (unchecked, in file order, one row per
    block; ``drug_a`` is the row drug), e.g. for what a lab has already tried."""
    sep = sniff_separator(path)
    roles = block_columns(first_fields(path, sep))
    raw = read_table(path, sep=sep, dtype=str)
    cells = raw[roles["cell_line"]] if "cell_line" in roles else pd.Series(cell_line or DEFAULT_CELL_LINE, raw.index)
    table = pd.DataFrame(
        {
            "block_id": raw[roles["block_id"]],
            "drug_a": raw[roles["drug_row"]].str.strip(),
            "drug_b": raw[roles["drug_col"]].str.strip(),
            "cell_line": cells.str.strip(),
        }
    )
    return table.drop_duplicates("block_id")[["drug_a", "drug_b", "cell_line"]].reset_index(drop=True)


def r_mean(values: np.ndarray) -> float:
    """Mean as R computes it: the sum in extended precision divided by ``n``, plus the mean residual."""
    x = np.asarray(values, dtype=np.longdouble)
    mean = x.sum() / len(x)
    if np.isfinite(mean):
        mean = mean + (x - mean).sum() / len(x)
    return float(mean)


def _check_block(block_id: str, rows: pd.DataFrame, response: ResponseKind, file: str) -> DoseResponseBlock:
    """One block's rows (indexed by file line) -> a :class:`DoseResponseBlock`, or a named error."""
    first = int(rows.index[0])

    def fail(kind: type[BadBlockError], message: str, line: int | None = None) -> BadBlockError:
        return kind(message, file=file, row=first if line is None else line, block=block_id)

    identity = rows[["drug_row", "drug_col", "cell_line"]].fillna("").drop_duplicates()
    if len(identity) > 1:
        other = identity.iloc[1]
        line = int(rows.index[(rows[["drug_row", "drug_col", "cell_line"]].fillna("") == other).all(axis=1)][0])
        raise fail(
            MixedBlockError,
            f"holds {len(identity)} drug pairs / cell lines ({identity.to_dict('records')[:3]}); a block is one drug "
            "pair in one cell line: give each its own block_id",
            line,
        )
    drug_row, drug_col, cell = (str(v) for v in identity.iloc[0])
    if not drug_row or not drug_col:
        raise fail(MixedBlockError, "names no drug in drug_row / drug_col (a single-drug block is no combination)")
    doses = {}
    for axis, drug in (("conc_row", drug_row), ("conc_col", drug_col)):
        values = _numbers(rows[axis])
        bad = ~np.isfinite(values)
        if bad.any():
            line = int(rows.index[bad][0])
            raise fail(
                NonNumericDoseError,
                f"concentration of {drug} ({axis}) is {rows[axis].iloc[int(np.flatnonzero(bad)[0])]!r} at line {line} "
                f"({int(bad.sum())} such wells); give every well a number (0 for the drug's absence)",
                line,
            )
        if (values < 0).any():
            line = int(rows.index[values < 0][0])
            raise fail(
                NegativeDoseError,
                f"negative concentration {values[values < 0][0]:g} of {drug} at line {line}; concentrations are >= 0 "
                "(a log-concentration column? convert it back to concentrations)",
                line,
            )
        doses[axis] = values
    resp = _numbers(rows["response"])
    bad = ~np.isfinite(resp)
    if bad.any():
        line = int(rows.index[bad][0])
        shown = rows["response"].iloc[int(np.flatnonzero(bad)[0])]
        raise fail(
            NonNumericResponseError,
            f"response {shown!r} at line {line} is not a number ({int(bad.sum())} such wells); enter the measured "
            "% inhibition (or viability), or remove the well and its replicates are averaged without it",
            line,
        )
    if response == "viability":
        resp = 100.0 - resp
    units = {}
    for axis, col, drug in (("unit_row", "conc_row", drug_row), ("unit_col", "conc_col", drug_col)):
        if axis not in rows:
            units[col] = ""
            continue
        spelled = rows[axis].fillna("")
        distinct = pd.unique(spelled)
        if len(distinct) > 1:
            line = int(rows.index[(spelled != distinct[0]).to_numpy()][0])
            raise fail(
                MixedUnitsError,
                f"concentrations of {drug} are in {len(distinct)} units {sorted(map(str, distinct))} (first change at "
                f"line {line}); write all of one drug's doses in one unit (convert them) within a block",
                line,
            )
        units[col] = str(distinct[0])
    conc_row = np.unique(doses["conc_row"])
    conc_col = np.unique(doses["conc_col"])
    if conc_row[0] != 0 or conc_col[0] != 0:
        alone, other = (drug_col, drug_row) if conc_row[0] != 0 else (drug_row, drug_col)
        raise fail(
            MissingSingleDrugError,
            f"no wells with {other} at dose 0, so {alone} is never measured alone; every score needs the single-drug "
            f"responses: add the wells of {alone} alone ({other} = 0) at each of its doses",
        )
    if conc_row.size < 2 or conc_col.size < 2:
        alone = drug_row if conc_row.size < 2 else drug_col
        raise fail(
            MissingSingleDrugError,
            f"{alone} is only at dose 0, so the block has no combination wells; add its doses > 0",
        )
    i = np.searchsorted(conc_row, doses["conc_row"])
    j = np.searchsorted(conc_col, doses["conc_col"])
    m, n = conc_row.size, conc_col.size
    flat = i * n + j
    counts = np.bincount(flat, minlength=m * n)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0)
        shown = [(float(conc_row[k // n]), float(conc_col[k % n])) for k in missing[:5]]
        raise fail(
            IncompleteDoseGridError,
            f"{missing.size} of its {m} x {n} dose pairs have no well, e.g. ({drug_row}, {drug_col}) at {shown}; a "
            "block must measure every dose of one drug with every dose of the other: add those wells, correct "
            "mistyped doses (two spellings of one dose make two doses), or split the block",
        )
    order = pd.unique(flat)
    mean = np.empty(m * n)
    for k in range(m * n):
        mean[k] = r_mean(resp[flat == k])
    return DoseResponseBlock(
        block_id=block_id,
        drug_row=drug_row,
        drug_col=drug_col,
        cell_line=cell,
        study=str(rows["study"].iloc[0]) if "study" in rows else "",
        conc_row=conc_row,
        conc_col=conc_col,
        unit_row=units["conc_row"],
        unit_col=units["conc_col"],
        response=mean.reshape(m, n),
        n_replicates=counts.reshape(m, n),
        well_order=np.asarray(order, dtype=np.int64),
        line=first,
        source=file,
    )


def _numbers(text: pd.Series) -> np.ndarray:
    """Floats of a text column (NaN for empty or non-numeric cells; parsed exactly, as ``float()`` does)."""
    out = np.full(len(text), np.nan)
    for k, cell in enumerate(text.to_numpy()):
        if isinstance(cell, str) and cell:
            try:
                out[k] = float(cell)
            except ValueError:
                pass
    return out


def convert_dose(values: np.ndarray, unit: str, target: str | None) -> tuple[np.ndarray, str]:
    """``values`` in ``unit`` converted to the molar unit ``target``, and the unit they are then in (unchanged
    when either unit is not molar or ``target`` is None)."""
    if target is None:
        return values, unit
    src = MOLAR_UNITS.get(_unit_key(unit))
    dst = MOLAR_UNITS.get(_unit_key(target))
    if src is None or dst is None:
        return values, unit
    return values * (src / dst), target


def _unit_key(unit: str) -> str:
    """``µM`` / ``μM`` / ``uM`` / ``umol/L`` -> ``um`` (lower case, micro sign spelled ``u``)."""
    key = unit.strip().replace("µ", "u").replace("μ", "u").lower()
    return re.sub(r"mol/l$", "m", key)
