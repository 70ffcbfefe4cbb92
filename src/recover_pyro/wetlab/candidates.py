"""Which pairs a plate may hold: the candidate pool of ``recommend`` and the lab's control over it.

The pool starts as every unordered pair of distinct drugs of the drug table in each requested cell line, then

* ``candidates``: pair files whose pairs alone may be proposed (e.g. the pairs a screen covers, or what the
  lab can make);
* ``leave_out``: drugs never proposed (out of stock); their measurements are still used for the fit;
* ``exclude``: pair files never proposed (failed, infeasible, or a previous plate);
* measured and tried pairs: never proposed again (:func:`recover_pyro.wetlab.measured.tried_pairs`).

A pair file is CSV / TSV with two drug columns (``drug_a, drug_b``; also ``drug_row, drug_col`` or
``drug1, drug2``) and optionally ``cell_line``: without it a row stands for the pair in every cell line. A
plate written by ``recommend`` and a measured file are pair files. Drugs are named by id or, where a name
is unique, by name. :func:`check_same_molecules` refuses two pool drugs that are one molecule once salts are
stripped (a plate would pair the drug with itself).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd

from recover_pyro.data.featurize import standardize_smiles
from recover_pyro.data.screen import canonical_pair
from recover_pyro.data.validation import first_fields, read_table, sniff_separator
from recover_pyro.errors import (
    DuplicateMoleculeError,
    EmptySelectionError,
    MissingColumnsError,
    UnknownDrugError,
    closest_names,
    option,
)

log = logging.getLogger(__name__)

PathLike = str | Path
#: One pair file, several, or none.
PairFiles = PathLike | Sequence[PathLike] | None
OnUnknown = Literal["raise", "ignore"]

#: Accepted (first drug, second drug) headers of a pair file, in order of preference.
PAIR_HEADERS = (("drug_a", "drug_b"), ("drug_row", "drug_col"), ("drug1", "drug2"), ("drugname1", "drugname2"))
#: Accepted cell-line headers of a pair file.
CELL_HEADERS = ("cell_line", "cell_line_name")
PAIR_COLUMNS = ["drug_a", "drug_b", "cell_line"]


def as_paths(files: PairFiles) -> list[Path]:
    """``files`` as a list of paths (``None`` -> ``[]``; one path -> ``[path]``)."""
    if files is None:
        return []
    if isinstance(files, (str, Path)):
        return [Path(files)]
    return [Path(f) for f in files]


def drug_lookup(drugs: pd.DataFrame) -> dict[str, str]:
    """Spelling -> drug id: every id, and every name (case-insensitive) that belongs to exactly one drug.

    Args:
        drugs: the drug table, index drug id, column ``name``.
    """
    ids = [str(i) for i in drugs.index]
    names = drugs["name"].astype(str).str.strip().str.lower()
    unique = names[~names.duplicated(keep=False)]
    lookup = {name: str(i) for i, name in unique.items() if name not in ids}
    lookup.update({i: i for i in ids})
    return lookup


def resolve_drugs(spellings: Sequence[object], drugs: pd.DataFrame, what: str) -> list[str]:
    """Drug ids of ``spellings`` (ids, or names unique in the drug table) for the option ``what``.

    Raises:
        UnknownDrugError: a spelling that is neither, naming the closest ids and names and the option.
    """
    lookup = drug_lookup(drugs)
    out = []
    for raw in spellings:
        text = str(raw).strip()
        hit = lookup.get(text, lookup.get(text.lower()))
        if hit is None:
            close = closest_names(text, [*map(str, drugs.index), *drugs["name"].astype(str)])
            raise UnknownDrugError(
                f"{what} names a drug that is not in the drug table "
                f"({f'closest: {close}' if close else 'no similar id or name there'}); "
                "name drugs by their id or their name in the drug table",
                drug=text,
            )
        out.append(hit)
    return out


def read_pairs(path: PathLike, drugs: pd.DataFrame, what: str, on_unknown: OnUnknown = "raise") -> pd.DataFrame:
    """The pairs of the pair file ``path`` as drug ids (see the module docstring).

    Args:
        drugs: the drug table (index drug id, column ``name``).
        what: the option the file was given to (``candidates``, ``exclude``), for messages.
        on_unknown: a drug not in the drug table raises :class:`UnknownDrugError` (naming line and closest
            names) or, with ``"ignore"``, its rows are left out with a log line.

    Returns:
        ``(R, 3)`` frame ``drug_a, drug_b, cell_line`` (``drug_a < drug_b``; ``cell_line`` NaN when the file
        has none); self-pairs are left out.
    """
    fields = first_fields(path, sniff_separator(path))
    pair = next((p for p in PAIR_HEADERS if p[0] in fields and p[1] in fields), None)
    if pair is None:
        raise MissingColumnsError(
            f"{what} file needs two drug columns named {' or '.join('/'.join(p) for p in PAIR_HEADERS)} "
            f"(and optionally cell_line); line 1 reads {fields}",
            file=str(path),
        )
    cell = next((c for c in CELL_HEADERS if c in fields), None)
    raw = read_table(path, usecols=[*pair, *([cell] if cell else [])], dtype=str, na_values=[r"\N"])
    raw = raw.dropna(subset=list(pair))
    lookup = drug_lookup(drugs)

    def ids(column: str) -> pd.Series:
        text = raw[column].str.strip()
        return text.map(lookup).fillna(text.str.lower().map(lookup))

    a, b = ids(pair[0]), ids(pair[1])
    unknown = (a.isna() | b.isna()).to_numpy()
    if unknown.any():
        line = int(raw.index[unknown][0])
        bad_a = pd.isna(a.loc[line])
        drug = str(raw.at[line, pair[0] if bad_a else pair[1]]).strip()
        if on_unknown == "raise":
            close = closest_names(drug, [*map(str, drugs.index), *drugs["name"].astype(str)])
            raise UnknownDrugError(
                f"{what} file names a drug that is not in the drug table "
                f"({f'closest: {close}' if close else 'no similar id or name there'}; {int(unknown.sum())} such "
                "row(s)); name drugs by their id or their name in the drug table",
                file=str(path),
                row=line,
                drug=drug,
            )
        log.info(
            "%s: %d %s row(s) name drugs outside the drug table (e.g. %r); they cannot be proposed",
            path,
            int(unknown.sum()),
            what,
            drug,
        )
    keep = ~unknown & (a != b).to_numpy()
    lo, hi = canonical_pair(a[keep], b[keep])
    cells = raw.loc[keep, cell].str.strip() if cell else pd.Series(np.nan, index=lo.index, dtype=object)
    return pd.DataFrame({"drug_a": lo.to_numpy(), "drug_b": hi.to_numpy(), "cell_line": cells.to_numpy()})


def _matches(pool: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
    """``(N,)`` bool: pool rows named by ``pairs`` (a pair without a cell line matches every cell line)."""
    if pairs.empty:
        return np.zeros(len(pool), dtype=bool)
    keys = pd.MultiIndex.from_frame(pool[PAIR_COLUMNS])
    any_cell = pairs[pairs["cell_line"].isna()]
    per_cell = pairs[pairs["cell_line"].notna()]
    hit = keys.isin(pd.MultiIndex.from_frame(per_cell[PAIR_COLUMNS])) if len(per_cell) else np.zeros(len(pool), bool)
    if len(any_cell):
        pair_keys = pd.MultiIndex.from_frame(pool[["drug_a", "drug_b"]])
        hit = hit | pair_keys.isin(pd.MultiIndex.from_frame(any_cell[["drug_a", "drug_b"]]))
    return np.asarray(hit, dtype=bool)


@dataclass
class CandidateRules:
    """The lab's control over the pool (see the module docstring).

    Attributes:
        candidates: pair files; only their pairs may be proposed (``None`` or ``[]``: every pair of the drug table).
        exclude: pair files never proposed.
        leave_out: drugs (ids or names) never proposed.
    """

    candidates: PairFiles = None
    exclude: PairFiles = None
    leave_out: Sequence[object] = field(default_factory=list)


@dataclass
class Pool:
    """The untested candidates of a plate and the pairs kept out of it.

    Attributes:
        pairs: ``(N, 3)`` frame ``drug_a, drug_b, cell_line`` of proposable (pair, cell line) rows.
        forbidden: ``(M, 3)`` frame of every (pair, cell line) of the requested cell lines that must never be
            proposed: measured, tried or excluded (the plate is checked against it).
        counts: how many rows each rule removed, in order (for the log and messages).
    """

    pairs: pd.DataFrame
    forbidden: pd.DataFrame
    counts: dict[str, int]


def build_pool(
    all_pairs: pd.DataFrame,
    drugs: pd.DataFrame,
    measured: pd.DataFrame,
    tried: pd.DataFrame,
    rules: CandidateRules,
    source: str | None = None,
) -> Pool:
    """Apply ``rules`` to ``all_pairs`` (every pair of the drug table in the requested cell lines).

    Args:
        all_pairs: ``(N, 3)`` ``drug_a, drug_b, cell_line`` with ``drug_a < drug_b``.
        drugs: the drug table (index drug id, column ``name``).
        measured: measured ``drug_a, drug_b, cell_line`` rows (canonical order).
        tried: rows of the measured files whatever their score (:func:`~recover_pyro.wetlab.measured.tried_pairs`).
        source: the files the pool comes from (the drug table, the measured files), named by an empty pool's error.

    Raises:
        UnknownDrugError: ``leave_out`` or an ``exclude`` file names a drug outside the drug table.
        EmptySelectionError: no candidate is left, with what removed how many.
    """
    pool = all_pairs.reset_index(drop=True)
    counts: dict[str, int] = {"all pairs": len(pool)}
    left_out = set(resolve_drugs(list(rules.leave_out), drugs, "leave_out"))
    if left_out:
        keep = ~(pool["drug_a"].isin(left_out) | pool["drug_b"].isin(left_out)).to_numpy()
        counts["leave_out"] = int((~keep).sum())
        pool = pool[keep]
    candidate_files = as_paths(rules.candidates)
    if candidate_files:
        listed = pd.concat(
            [read_pairs(p, drugs, "candidates", on_unknown="ignore") for p in candidate_files], ignore_index=True
        )
        inside = _matches(pool, listed)
        counts["outside candidates"] = int((~inside).sum())
        pool = pool[inside]
    excluded = pd.concat(
        [pd.DataFrame(columns=PAIR_COLUMNS), *(read_pairs(p, drugs, "exclude") for p in as_paths(rules.exclude))],
        ignore_index=True,
    )
    gone = pd.concat([measured[PAIR_COLUMNS], tried[PAIR_COLUMNS]], ignore_index=True)
    for label, pairs in (("measured or tried", gone), ("exclude", excluded)):
        hit = _matches(pool, pairs)
        counts[label] = int(hit.sum())
        pool = pool[~hit]
    forbidden = all_pairs[_matches(all_pairs, gone) | _matches(all_pairs, excluded)]
    if pool.empty:
        removed = ", ".join(f"{k}: {v}" for k, v in counts.items())
        raise EmptySelectionError(
            f"no candidate combination is left to propose ({removed}); widen candidates, shorten exclude or "
            "leave_out, or add drugs to the drug table",
            file=source,
        )
    log.info("candidates: %s; %d left", ", ".join(f"{k} {v}" for k, v in counts.items()), len(pool))
    return Pool(pairs=pool.reset_index(drop=True), forbidden=forbidden.reset_index(drop=True), counts=counts)


def check_same_molecules(pool: pd.DataFrame, drugs: pd.DataFrame, smiles_file: PathLike) -> None:
    """Refuse two drugs of the pool that are one molecule once salts and counter-ions are stripped.

    "Gefitinib" and "Gefitinib hydrochloride" under two ids would give a plate pairing the drug with itself
    (and measure it twice under two names).

    Args:
        pool: ``drug_a, drug_b`` rows that may be proposed.
        drugs: the drug table (index drug id, columns ``name, smiles``).

    Raises:
        DuplicateMoleculeError: naming the ids, names and parent SMILES, and the ``leave_out`` option.
    """
    used = sorted(set(pool["drug_a"]) | set(pool["drug_b"]))
    parents = pd.Series({d: standardize_smiles(str(drugs.at[d, "smiles"]), drug=d) for d in used}, dtype=object)
    same = parents[parents.duplicated(keep=False)]
    if same.empty:
        return
    first = same[same == same.iloc[0]]
    listing = ", ".join(f"{d} ({drugs.at[d, 'name']})" for d in first.index)
    leave = option("leave_out", f"[{','.join(map(str, first.index[1:]))}]")
    raise DuplicateMoleculeError(
        f"drugs {listing} are the same molecule once salts are stripped ({first.iloc[0]}); a plate could pair the "
        f"drug with itself or test it twice under two names ({same.nunique()} such molecule(s)). Keep one id per "
        "molecule in the drug table" + (f", or set {leave} (their measurements are still used)" if leave else ""),
        file=str(smiles_file),
        drug=str(first.index[1]),
    )
