"""The one in-memory representation of a drug-combination screen.

A :class:`Screen` holds

* ``drugs``: one row per drug, indexed by ``drug_id`` (str), columns ``name`` and ``smiles``;
* ``cell_lines``: one row per cell line, indexed by name, columns ``tissue`` (may be empty);
* ``cell_features``: optional ``(C, G)`` frame of cell-line features indexed by cell-line name;
* ``drug_features``: optional ``(D, F)`` precomputed drug features indexed by drug id (synthetic screens),
  used instead of fingerprints computed from SMILES;
* ``experiments``: one row per unordered (drug pair, cell line, study) with columns
  ``drug_a, drug_b, cell_line, study, n_replicates`` plus one column per score (``score_columns``).

Pairs are unordered: ``drug_a <= drug_b`` (string order of drug ids) always holds. Measurements of the
same (pair, cell line, study), whether from both drug orders or from replicates, are aggregated by
:func:`aggregate_measurements`, and the number of merged rows is kept in ``n_replicates``.

Row order of ``drugs`` and ``cell_lines`` defines the integer indices used by the models
(see :meth:`Screen.to_pairs`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from recover_pyro.errors import ConflictingMeasurementError, EmptySelectionError, closest_names

log = logging.getLogger(__name__)

KEY_COLUMNS = ("drug_a", "drug_b", "cell_line", "study")

AGGREGATORS: dict[str, Callable[[pd.core.groupby.DataFrameGroupBy], pd.DataFrame]] = {
    "mean": lambda g: g.mean(),
    "median": lambda g: g.median(),
    "max": lambda g: g.max(),
    "min": lambda g: g.min(),
    "first": lambda g: g.first(),
}


def canonical_pair(a: pd.Series, b: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Order two drug-id columns so that ``a <= b`` element-wise (string order)."""
    a = a.astype(str)
    b = b.astype(str)
    swap = a > b
    return a.where(~swap, b), b.where(~swap, a)


def aggregate_measurements(
    rows: pd.DataFrame, score_columns: Sequence[str], how: str = "mean", file: str | None = None
) -> pd.DataFrame:
    """Merge rows of the same unordered (pair, cell line, study).

    Args:
        rows: raw measurements with columns ``drug_a, drug_b, cell_line, study`` and ``score_columns``
            (either drug order), indexed by file line when read by a loader (errors then name lines).
        score_columns: names of the score columns to aggregate.
        how: one of ``mean`` (default), ``median``, ``max``, ``min``, ``first``, or ``raise``: any repeated
            key raises :class:`ConflictingMeasurementError` naming its lines.
        file: the file the rows come from, for messages.

    Replicates that disagree by more than one standard deviation of the score over all rows are merged
    all the same, but logged as a warning naming the worst pair and its lines.

    Returns:
        One row per unordered key with ``n_replicates`` = number of merged rows.
    """
    if how not in AGGREGATORS and how != "raise":
        raise ValueError(f"unknown aggregation rule {how!r}; choose one of {sorted([*AGGREGATORS, 'raise'])}")
    rows = rows.copy()
    rows["drug_a"], rows["drug_b"] = canonical_pair(rows["drug_a"], rows["drug_b"])
    if "study" not in rows:
        rows["study"] = ""
    rows["cell_line"] = rows["cell_line"].astype(str)
    rows["study"] = rows["study"].fillna("").astype(str)
    grouped = rows.groupby(list(KEY_COLUMNS), sort=True, dropna=False)
    repeated = rows.duplicated(list(KEY_COLUMNS), keep=False).to_numpy()
    if repeated.any():
        _report_replicates(rows, repeated, score_columns, how, file)
    # Under "raise" every key is unique by now, so any aggregator returns the single row.
    scores = AGGREGATORS["first" if how == "raise" else how](grouped[list(score_columns)])
    scores["n_replicates"] = grouped.size()
    merged = scores.reset_index()
    n_merged = len(rows) - len(merged)
    if n_merged:
        log.info(
            "aggregated %d rows into %d unordered (pair, cell line, study) triples by %r", len(rows), len(merged), how
        )
    return merged[[*KEY_COLUMNS, "n_replicates", *score_columns]]


def _report_replicates(
    rows: pd.DataFrame, repeated: np.ndarray, score_columns: Sequence[str], how: str, file: str | None
) -> None:
    """Raise on repeats under ``how="raise"``; otherwise warn about replicates that disagree strongly."""
    reps = rows[repeated]
    keys = list(KEY_COLUMNS)
    first = reps.sort_values(keys, kind="stable").iloc[0]
    same = (reps[keys] == first[keys]).all(axis=1).to_numpy()
    lines = [str(i) for i in reps.index[same]]
    label = f"({first['drug_a']}, {first['drug_b']}) in {first['cell_line']}"
    if how == "raise":
        raise ConflictingMeasurementError(
            f"{label} is measured more than once in one file (lines {', '.join(lines)}; "
            f"{int(repeated.sum())} repeated rows in all); set on_duplicate=mean (or aggregate=mean) to "
            "average replicates",
            file=file,
            row=int(reps.index[same][1]),
            drug=f"{first['drug_a']} + {first['drug_b']}",
        )
    for col in score_columns:
        spread = reps.groupby(keys, dropna=False)[col].agg(lambda v: v.max() - v.min())
        scale = float(rows[col].std())
        if not np.isfinite(scale) or scale == 0 or not (spread > scale).any():
            continue
        worst = spread.idxmax()
        members = reps[(reps[keys] == pd.Series(worst, index=keys)).all(axis=1).to_numpy()]
        log.warning(
            "%s: %d repeated (pair, cell line, study) key(s) have %s replicates further apart than the "
            "score's standard deviation (%.3g); merged by %r all the same. Worst: (%s, %s) in %s, "
            "lines %s, values %s. Check them, or use on_duplicate=raise / aggregate=raise to reject "
            "repeats",
            file or "measurements",
            int((spread > scale).sum()),
            col,
            scale,
            how,
            worst[0],
            worst[1],
            worst[2],
            [str(i) for i in members.index],
            members[col].tolist(),
        )


@dataclass
class Pairs:
    """Integer-encoded experiments, ready for a model.

    Attributes:
        drug_a: ``(N,)`` long, row index into ``Screen.drugs``.
        drug_b: ``(N,)`` long, row index into ``Screen.drugs``.
        cell: ``(N,)`` long, row index into ``Screen.cell_lines``.
        y: ``(N,)`` float targets on the original scale, or ``None`` for unmeasured candidates.
    """

    drug_a: torch.Tensor
    drug_b: torch.Tensor
    cell: torch.Tensor
    y: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.drug_a.shape[0])

    def __getitem__(self, index: torch.Tensor | np.ndarray | slice) -> "Pairs":
        index = torch.as_tensor(index) if not isinstance(index, slice) else index
        return Pairs(
            self.drug_a[index],
            self.drug_b[index],
            self.cell[index],
            None if self.y is None else self.y[index],
        )

    def to(self, device: torch.device | str) -> "Pairs":
        """The same experiments with every tensor on ``device`` (no copy where already there)."""
        return Pairs(
            self.drug_a.to(device),
            self.drug_b.to(device),
            self.cell.to(device),
            None if self.y is None else self.y.to(device),
        )

    def swapped(self) -> "Pairs":
        """The same experiments with the two drugs exchanged."""
        return Pairs(self.drug_b, self.drug_a, self.cell, self.y)

    @staticmethod
    def concat(parts: Iterable["Pairs"]) -> "Pairs":
        parts = list(parts)
        ys = [p.y for p in parts]
        return Pairs(
            torch.cat([p.drug_a for p in parts]),
            torch.cat([p.drug_b for p in parts]),
            torch.cat([p.cell for p in parts]),
            None if any(y is None for y in ys) else torch.cat(ys),  # type: ignore[arg-type]
        )


@dataclass
class Screen:
    """A measured (or partially measured) combination screen. See the module docstring."""

    drugs: pd.DataFrame
    cell_lines: pd.DataFrame
    experiments: pd.DataFrame
    score_columns: tuple[str, ...]
    cell_features: pd.DataFrame | None = None
    drug_features: pd.DataFrame | None = None
    name: str = "screen"
    source: str = ""
    dropped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.score_columns = tuple(self.score_columns)
        self.drugs.index = self.drugs.index.astype(str)
        self.drugs.index.name = "drug_id"
        self.cell_lines.index = self.cell_lines.index.astype(str)
        self.cell_lines.index.name = "cell_line"
        missing = [c for c in (*KEY_COLUMNS, "n_replicates", *self.score_columns) if c not in self.experiments]
        if missing:
            raise ValueError(f"{self.name}: experiments lack columns {missing}")

    # --- sizes ---------------------------------------------------------------------------------
    @property
    def n_drugs(self) -> int:
        return len(self.drugs)

    @property
    def n_cell_lines(self) -> int:
        return len(self.cell_lines)

    def __len__(self) -> int:
        return len(self.experiments)

    def summary(self) -> str:
        """A short human-readable description (sizes and score statistics)."""
        lines = [
            f"{self.name}: {len(self)} unordered (pair, cell line) experiments, {self.n_drugs} drugs, "
            f"{self.n_cell_lines} cell lines, {self.experiments[['drug_a', 'drug_b']].drop_duplicates().shape[0]} "
            f"unordered pairs, studies: {sorted(self.experiments['study'].unique().tolist())}",
        ]
        if self.cell_features is not None:
            lines.append(
                f"  cell-line features: {self.cell_features.shape[1]} per line ({self.cell_features.shape[0]} lines)"
            )
        for col in self.score_columns:
            s = self.experiments[col]
            lines.append(f"  {col}: mean {s.mean():.3g}, sd {s.std():.3g}, min {s.min():.3g}, max {s.max():.3g}")
        if self.dropped:
            lines.append(f"  dropped by explicit rules: {self.dropped}")
        return "\n".join(lines)

    # --- selection -----------------------------------------------------------------------------
    def select(
        self,
        cell_lines: Sequence[str] | str | None = None,
        studies: Sequence[str] | str | None = None,
        keep_all_drugs: bool = False,
    ) -> "Screen":
        """Restrict to some cell lines and/or studies.

        Raises :class:`EmptySelectionError` listing the closest names when a requested name is absent.
        Drugs that no longer appear are dropped unless ``keep_all_drugs`` (cell lines always are).
        """
        exp = self.experiments
        if cell_lines is not None:
            cell_lines = [cell_lines] if isinstance(cell_lines, str) else list(cell_lines)
            _check_names(cell_lines, self.cell_lines.index, "cell line", self.source or self.name)
            exp = exp[exp["cell_line"].isin(cell_lines)]
        if studies is not None:
            studies = [studies] if isinstance(studies, str) else list(studies)
            _check_names(studies, pd.Index(self.experiments["study"].unique()), "study", self.source or self.name)
            exp = exp[exp["study"].isin(studies)]
        if exp.empty:
            raise EmptySelectionError(
                f"{self.source or self.name}: no experiments left for cell_lines={cell_lines}, studies={studies}"
            )
        present = set(exp["cell_line"])  # built once: a set per cell line would be O(C * N)
        used_cells = [c for c in self.cell_lines.index if c in present]
        drugs = self.drugs
        if not keep_all_drugs:
            used = set(exp["drug_a"]) | set(exp["drug_b"])
            drugs = drugs[drugs.index.isin(used)]
        feats = (
            None
            if self.cell_features is None
            else self.cell_features.loc[[c for c in used_cells if c in self.cell_features.index]]
        )
        dfeats = None if self.drug_features is None else self.drug_features.loc[drugs.index]
        return replace(
            self,
            drugs=drugs.copy(),
            drug_features=dfeats,
            cell_lines=self.cell_lines.loc[used_cells].copy(),
            experiments=exp.reset_index(drop=True),
            cell_features=feats,
        )

    # --- encoding ------------------------------------------------------------------------------
    def drug_index(self) -> dict[str, int]:
        return {d: i for i, d in enumerate(self.drugs.index)}

    def cell_index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.cell_lines.index)}

    def to_pairs(self, score: str | None = None, experiments: pd.DataFrame | None = None) -> Pairs:
        """Encode experiments (default: all of them) as integer :class:`Pairs`.

        Args:
            score: score column used as ``y`` (default: the first of ``score_columns``); ``None`` targets
                are allowed only when ``experiments`` lacks the column.
            experiments: a subset of rows (same columns) to encode instead of ``self.experiments``.
        """
        exp = self.experiments if experiments is None else experiments
        score = score or self.score_columns[0]
        di, ci = self.drug_index(), self.cell_index()
        # torch.tensor copies: pandas (copy-on-write) hands out read-only arrays that torch must not alias
        y = torch.tensor(exp[score].to_numpy(dtype=np.float32)) if score in exp else None
        return Pairs(
            _encode(exp["drug_a"], di, "drug"),
            _encode(exp["drug_b"], di, "drug"),
            _encode(exp["cell_line"], ci, "cell line"),
            y,
        )

    def all_candidates(self, cell_lines: Sequence[str] | None = None) -> pd.DataFrame:
        """Every unordered pair of distinct drugs crossed with the cell lines (default: all)."""
        ids = np.asarray(sorted(self.drugs.index))
        ia, ib = np.triu_indices(len(ids), k=1)
        cells = list(self.cell_lines.index if cell_lines is None else cell_lines)
        return pd.DataFrame(
            {
                "drug_a": np.tile(ids[ia], len(cells)),
                "drug_b": np.tile(ids[ib], len(cells)),
                "cell_line": np.repeat(cells, len(ia)),
            }
        )


def _encode(ids: pd.Series, index: dict[str, int], what: str) -> torch.Tensor:
    """``(N,)`` long row indices of ``ids``; a clear error for ids that are not in the screen."""
    codes = ids.map(index)
    if codes.isna().any():
        raise KeyError(f"{what}(s) not in this screen: {sorted(set(ids[codes.isna()]))[:5]}")
    return torch.tensor(codes.to_numpy(dtype=np.int64))


def _check_names(wanted: Sequence[str], present: pd.Index, what: str, where: str) -> None:
    for name in wanted:
        if name not in present:
            raise EmptySelectionError(
                f"{where}: {what} {name!r} is not in this screen; closest: {closest_names(name, present)}"
            )
