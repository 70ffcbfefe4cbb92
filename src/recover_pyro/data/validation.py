"""Checks on raw screen tables, shared by the loaders.

Every table is read by :func:`read_table`, which sets the frame's index to the 1-based line number of each
row in the file as a human sees it (header = line 1). Checks keep that index through filtering, so an error
always names the line at fault. All checks are vectorised; only the offending rows are formatted.

Problems either raise a :class:`~recover_pyro.errors.ScreenDataError` subclass naming file, line and
drug, or, under an explicit rule (``on_invalid="drop"``, ``on_unknown_drug="drop"``), drop the rows, log
how many and record the count in a ``dropped`` dict that ends up in ``Screen.dropped``. Advice naming an
option is spelled by :func:`recover_pyro.errors.option`, i.e. as the running command takes it.
"""

from __future__ import annotations

import codecs
import csv
import functools
import logging
import os
import re
from typing import Iterable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
from rdkit import Chem
from rdkit.rdBase import BlockLogs

from recover_pyro.errors import (
    ConflictingSmilesError,
    EmptySelectionError,
    InvalidScoreError,
    InvalidSmilesError,
    MissingColumnsError,
    ScreenDataError,
    SelfPairError,
    UnknownDrugError,
    UnreadableTextError,
    closest_names,
    option,
)

log = logging.getLogger(__name__)

OnInvalid = Literal["raise", "drop"]
PathLike = str | os.PathLike[str]

# Header names accepted in a drug -> SMILES table, in order of preference.
SMILES_HEADERS = ("smiles", "isosmiles", "canonical_smiles", "isomeric_smiles")
DRUG_ID_HEADERS = ("drug_id", "drug", "name", "drug_name", "id")
DRUG_NAME_HEADERS = ("name", "drug_name")

# Input limits checked before RDKit sees a SMILES: RDKit's recursive writer overflows the C stack (a
# segfault, no message) on chains of some 10,000 atoms. Real drugs stay far below both limits.
MAX_SMILES_CHARS = 5_000
MAX_HEAVY_ATOMS = 1_000
# Scores are fitted in float32: a larger magnitude would become infinite inside the model.
MAX_ABS_SCORE = float(np.finfo(np.float32).max)


# --- encoding ---------------------------------------------------------------------------------------
def text_encoding(path: PathLike) -> str:
    """The encoding to read ``path`` with: ``utf-16`` (byte-order mark), ``utf-8-sig`` or ``utf-8``.

    The whole file is checked (streamed), once per version of the file: a foreign byte on line 40,000 would
    otherwise surface as a bare ``UnicodeDecodeError`` halfway through parsing.

    Raises:
        UnreadableTextError: the file is neither, naming the first line with a foreign byte and how to fix
            it. Guessing latin-1 instead could silently misspell drug names, so it is not attempted.
    """
    stat = os.stat(path)
    return _encoding_of(os.fspath(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _encoding_of(path: str, mtime_ns: int, size: int) -> str:
    """:func:`text_encoding` for one version (modification time, size) of a file."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with open(path, "rb") as handle:
        head = handle.read(3)
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            return "utf-16"
        handle.seek(0)
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                # err.start counts from the bytes the decoder held back plus this chunk.
                offset = max(err.start - (len(err.object) - len(chunk)), 0)
                raise UnreadableTextError(
                    f"file is not UTF-8 (byte {chunk[offset]:#04x}; probably latin-1 / Windows-1252 from a "
                    f"spreadsheet); save it as 'CSV UTF-8' or convert it, e.g. iconv -f latin1 -t utf-8",
                    file=path,
                    row=line + chunk.count(b"\n", 0, offset),
                ) from None
            line += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise UnreadableTextError("file ends inside a UTF-8 character (truncated?)", file=path, row=line) from None
    return "utf-8-sig" if head == b"\xef\xbb\xbf" else "utf-8"


def sniff_separator(path: PathLike) -> str:
    """``"\\t"`` if the first line of ``path`` holds a tab, ``";"`` if it holds more semicolons than commas
    (a spreadsheet's CSV export in a locale with decimal commas), else ``","``."""
    with open(path, encoding=text_encoding(path)) as handle:
        first = handle.readline()
    if "\t" in first:
        return "\t"
    return ";" if first.count(";") > first.count(",") else ","


def first_fields(path: PathLike, sep: str) -> list[str]:
    """The fields of the first line of ``path`` (quotes and surrounding spaces stripped)."""
    with open(path, encoding=text_encoding(path)) as handle:  # utf-8-sig / utf-16 drop a byte-order mark
        first = handle.readline().rstrip("\r\n")
    return [f.strip() for f in next(csv.reader([first], delimiter=sep), [])]


def read_table(
    path: PathLike,
    *,
    sep: str | None = None,
    header: bool = True,
    names: Sequence[str] | None = None,
    usecols: Sequence[str] | None = None,
    dtype: Mapping[str, type] | type | None = None,
    na_values: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Read a CSV/TSV, indexed by file line number (header = line 1, first data row = line 2).

    Blank lines are skipped without shifting the numbering (a quoted field spanning lines would shift it).

    Args:
        path: the file.
        sep: field separator; ``None`` sniffs tab vs comma from the first line.
        header: whether the first line names the columns.
        names: column names to use (with ``header=True`` they replace the file's header).
        usecols: read only these columns (names after ``names`` is applied).
        dtype: per-column dtypes, or one dtype for every column; drug ids and cell lines should be read as
            ``str`` so that ids like PubChem CIDs keep their spelling.
        na_values: extra strings meaning "missing" (e.g. DrugComb's ``\\N``).
    """
    sep = sep or sniff_separator(path)
    try:
        frame = pd.read_csv(
            path,
            sep=sep,
            header=0 if header else None,
            names=names,
            usecols=usecols,
            dtype=dtype,
            na_values=na_values,
            skip_blank_lines=False,
            encoding=text_encoding(path),
        )
    except (pd.errors.ParserError, ValueError) as err:
        raise _read_error(err, path, sep) from err
    first = 2 if header else 1
    frame.index = pd.RangeIndex(first, first + len(frame), name="line")
    blank = frame.isna().all(axis=1)
    if blank.any():
        log.debug("%s: skipped %d blank lines", path, int(blank.sum()))
        frame = frame[~blank]
    return frame


def _read_error(err: Exception, path: PathLike, sep: str) -> ScreenDataError:
    """pandas' parser error in words: which line, how many fields, what to do."""
    text = str(err).strip()
    ragged = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    shown = {"\t": "tab", ",": "comma", ";": "semicolon"}.get(sep, repr(sep))
    if ragged:
        expected, line, saw = (int(g) for g in ragged.groups())
        return ScreenDataError(
            f"line {line} has {saw} fields but the lines above have {expected} ({shown}-separated); a text cell "
            f"holding a {shown} must be in double quotes, or the line has a stray separator: correct that line",
            file=str(path),
            row=line,
        )
    if isinstance(err, pd.errors.EmptyDataError):
        return ScreenDataError("the file is empty; it needs a header line and one row per measurement", file=str(path))
    return ScreenDataError(f"cannot read the table ({shown}-separated): {text.splitlines()[-1]}", file=str(path))


def read_smiles_table(
    path: PathLike,
    *,
    id_column: str | None = None,
    name_column: str | None = None,
    smiles_column: str | None = None,
    sep: str | None = None,
) -> pd.DataFrame:
    """Read a drug -> SMILES table into columns ``drug_id, name, smiles`` (index = file line).

    The file is CSV or TSV (sniffed), either with a header naming an id column (``drug_id``, ``drug``,
    ``name``, ``drug_name`` or ``id``) and a SMILES column (``smiles``, ``isosmiles``, ...), or without a header:
    then the first column is the drug id and the second its SMILES (a first line whose second field is not a
    SMILES is taken for a header lacking a SMILES column, and raises). ``name`` is the ``name``/``drug_name``
    column when the table has one besides the id, else the id. Explicit ``*_column`` arguments override the
    detection (they imply a header). ``attrs["id_column"]`` of the result names the column the ids came from
    (``None``: the first column of a header-less table) and ``attrs["columns"]`` the header's columns.
    """
    sep = sep or sniff_separator(path)
    fields = first_fields(path, sep)
    lowered = [f.lower() for f in fields]
    explicit = any(c is not None for c in (id_column, name_column, smiles_column))
    if explicit or any(h in lowered for h in SMILES_HEADERS):
        by_lower = dict(zip(lowered, fields))
        smiles_column = smiles_column or _first_present(SMILES_HEADERS, by_lower)
        id_column = id_column or _first_present(DRUG_ID_HEADERS, by_lower)
        missing = [what for what, col in (("drug id", id_column), ("SMILES", smiles_column)) if col is None]
        if missing:
            raise MissingColumnsError(
                f"drug table lacks a {' and a '.join(missing)} column (accepted: ids {list(DRUG_ID_HEADERS)}, "
                f"SMILES {list(SMILES_HEADERS)}); columns present: {fields}",
                file=str(path),
            )
        assert id_column is not None and smiles_column is not None  # both checked just above
        if name_column is None:
            name_column = next(
                (by_lower[h] for h in DRUG_NAME_HEADERS if h in by_lower and by_lower[h] != id_column), id_column
            )
        table = read_table(path, sep=sep, dtype={id_column: str, name_column: str, smiles_column: str})
        require_columns(table, [id_column, name_column, smiles_column], path)
        out = pd.DataFrame({"drug_id": table[id_column], "name": table[name_column], "smiles": table[smiles_column]})
        attrs: dict[str, object] = {"id_column": id_column, "columns": list(fields)}
    else:
        if len(fields) < 2:
            raise MissingColumnsError(
                f"drug table without a header needs two columns (drug id, SMILES); first line has "
                f"{len(fields)}: {fields}",
                file=str(path),
            )
        with BlockLogs():
            looks_like_data = len(fields[1]) <= MAX_SMILES_CHARS and Chem.MolFromSmiles(fields[1]) is not None
        if not looks_like_data:
            raise MissingColumnsError(
                f"drug table has no SMILES column (accepted headers: {list(SMILES_HEADERS)}) and line 1 is not "
                f"'drug, SMILES' data; columns present: {fields}",
                file=str(path),
            )
        table = read_table(path, sep=sep, header=False, dtype=str)
        out = pd.DataFrame({"drug_id": table[0], "name": table[0], "smiles": table[1]})
        attrs = {"id_column": None, "columns": []}
    out["drug_id"] = out["drug_id"].str.strip()
    out["name"] = out["name"].str.strip().fillna(out["drug_id"])
    out["smiles"] = out["smiles"].str.strip()
    out.attrs.update(attrs)
    return out


def resolve_id_column(path: PathLike, ids: Iterable[str], id_column: str | None = None) -> str | None:
    """The column of the drug table ``path`` that holds the drug ids ``ids`` (e.g. of measured files).

    ``id_column`` given: checked to be a column, then returned. Otherwise the column that
    :func:`read_smiles_table` would pick is kept when it holds every id; else the first other column that holds
    them all is returned with a log line (ALMANAC's ``name, pubchemid, isosmiles`` table read with PubChem ids:
    ``pubchemid``). ``None``: the detected column (which may lack some ids; the loaders then name them).

    Raises:
        MissingColumnsError: ``id_column`` is not a column of the table.
    """
    if id_column is not None:
        columns = first_fields(path, sniff_separator(path))
        if id_column not in columns:
            close = closest_names(id_column, columns)
            spelled = option("drug_id_column", close[0] if close else "<column>")
            raise MissingColumnsError(
                f"the drug table has no column {id_column!r} to read drug ids from; columns present: {columns}"
                + (f"; set {spelled}" if spelled else ""),
                file=str(path),
            )
        return id_column
    default = read_smiles_table(path)
    columns = [str(c) for c in default.attrs.get("columns", [])]
    wanted = {str(i).strip() for i in ids}
    if not columns or wanted <= set(default["drug_id"]):
        return None
    smiles_like = {c for c in columns if c.lower() in SMILES_HEADERS}
    for col in columns:
        if col == default.attrs["id_column"] or col in smiles_like:
            continue
        values = set(read_table(path, dtype=str)[col].dropna().astype(str).str.strip())
        if wanted <= values:
            log.info(
                "%s: drug ids read from column %r (it holds every measured drug id; column %r does not)",
                path,
                col,
                default.attrs["id_column"],
            )
            return col
    return None


def _sentence(text: str) -> str:
    """``text`` with its first letter in upper case (the rest untouched, unlike ``str.capitalize``)."""
    return text[:1].upper() + text[1:]


def _first_present(candidates: Iterable[str], by_lower: Mapping[str, str]) -> str | None:
    return next((by_lower[c] for c in candidates if c in by_lower), None)


# --- structure --------------------------------------------------------------------------------------
def require_columns(frame: pd.DataFrame, required: Iterable[str], file: PathLike) -> None:
    """Raise :class:`MissingColumnsError` naming the file, the missing and the present columns."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise MissingColumnsError(
            f"missing required column(s) {missing}; columns present: {[str(c) for c in frame.columns]}", file=str(file)
        )


def require_values(frame: pd.DataFrame, columns: Iterable[str], file: PathLike) -> None:
    """Raise :class:`ScreenDataError` at the first line where one of ``columns`` is empty."""
    for col in columns:
        empty = frame[col].isna()
        if empty.any():
            line = int(frame.index[empty.to_numpy()][0])
            raise ScreenDataError(
                f"empty value in column {col!r} ({int(empty.sum())} such rows)", file=str(file), row=line
            )


def record_drop(dropped: dict[str, int], rule: str, n: int, file: PathLike, detail: str = "") -> None:
    """Count ``n`` rows dropped by ``rule`` into ``dropped`` and log it."""
    if n:
        dropped[rule] = dropped.get(rule, 0) + n
        log.info("%s: dropped %d rows by rule %r%s", file, n, rule, f" ({detail})" if detail else "")


# --- selection --------------------------------------------------------------------------------------
def filter_names(
    frame: pd.DataFrame, column: str, wanted: Sequence[str] | str | None, what: str, file: PathLike
) -> pd.DataFrame:
    """Keep rows whose ``column`` is in ``wanted`` (``None`` keeps all).

    Raises :class:`EmptySelectionError` listing the closest present names when a wanted name is absent,
    or when nothing is left.
    """
    if wanted is None:
        return frame
    wanted = [wanted] if isinstance(wanted, str) else [str(w) for w in wanted]
    present = pd.unique(frame[column].dropna())
    present_set = set(present)
    for name in wanted:
        if name not in present_set:
            close = closest_names(name, present)
            raise EmptySelectionError(
                f"{what} {name!r} not found; {f'closest: {close}' if close else f'present: {list(present)[:10]}'}",
                file=str(file),
            )
    kept = frame[frame[column].isin(wanted)]
    if kept.empty:
        raise EmptySelectionError(f"no rows left after selecting {what} {wanted}", file=str(file))
    return kept


# --- scores -----------------------------------------------------------------------------------------
def check_scores(
    frame: pd.DataFrame,
    score_columns: Sequence[str],
    file: PathLike,
    on_invalid: OnInvalid = "raise",
    dropped: dict[str, int] | None = None,
) -> pd.DataFrame:
    """Make ``score_columns`` numeric; rows with a missing, non-numeric or infinite score raise or drop.

    Args:
        frame: rows indexed by file line with ``drug_a, drug_b, cell_line`` and the score columns.
        on_invalid: ``"raise"`` -> :class:`InvalidScoreError` at the first bad line (naming its drugs);
            ``"drop"`` -> drop those rows, count them under ``"invalid_score"`` in ``dropped``.

    Returns:
        ``frame`` with float score columns and no invalid rows.
    """
    _check_rule(on_invalid)
    numeric = frame[list(score_columns)].apply(pd.to_numeric, errors="coerce").astype(float)
    values = numeric.to_numpy()
    bad = ~(np.isfinite(values) & (np.abs(values) <= MAX_ABS_SCORE)).all(axis=1)
    out = frame.copy()
    out[list(score_columns)] = numeric
    if not bad.any():
        return out
    if on_invalid == "raise":
        line = frame.index[bad][0]
        row = frame.loc[line]
        col = next(c for c in score_columns if not abs(numeric.at[line, c]) <= MAX_ABS_SCORE)
        decimal_comma = bool(re.fullmatch(r"\s*[+-]?\d+,\d+\s*", str(row[col])))
        hint = "; a decimal comma? write numbers with a decimal point (1.5, not 1,5)" if decimal_comma else ""
        drop = option("on_invalid", "drop")
        raise InvalidScoreError(
            f"score {col}={str(row[col])!r} is missing, non-numeric, infinite or beyond float32's range "
            f"(|score| <= {MAX_ABS_SCORE:.3g}) for drugs {row['drug_a']!r} and "
            f"{row['drug_b']!r} in cell line {row['cell_line']!r} ({int(bad.sum())} such row(s)"
            + (f"; set {drop} to drop them" if drop else "")
            + f"){hint}",
            file=str(file),
            row=int(line),
            drug=str(row["drug_a"]),
        )
    record_drop(
        dropped if dropped is not None else {},
        "invalid_score",
        int(bad.sum()),
        file,
        f"missing/non-numeric/infinite/out-of-range {list(score_columns)}, first at line {int(frame.index[bad][0])}",
    )
    return out[~bad]


def _check_rule(rule: str) -> None:
    if rule not in ("raise", "drop"):
        raise ValueError(f"unknown rule {rule!r}; use 'raise' or 'drop'")


# --- drugs ------------------------------------------------------------------------------------------
def check_known_drugs(
    frame: pd.DataFrame,
    known: pd.Index | Iterable[str],
    file: PathLike,
    smiles_file: PathLike,
    on_unknown: OnInvalid = "raise",
    dropped: dict[str, int] | None = None,
    id_column: str | None = None,
    id_option: bool = False,
) -> pd.DataFrame:
    """Experiments whose drugs are all in ``known`` (the drug table of ``smiles_file``).

    ``on_unknown="raise"`` -> :class:`UnknownDrugError` naming the first unknown drug, its line, the
    closest known names and the drug table's column the ids were read from (``id_column``; with
    ``id_option`` the message also names the ``drug_id_column`` option that picks another); ``"drop"`` -> drop
    those rows, counted under ``"unknown_drug"``.
    """
    _check_rule(on_unknown)
    known = pd.Index(known)
    bad_a = ~frame["drug_a"].isin(known).to_numpy()
    bad_b = ~frame["drug_b"].isin(known).to_numpy()
    bad = bad_a | bad_b
    if not bad.any():
        return frame
    unknown = pd.unique(pd.concat([frame.loc[bad_a, "drug_a"], frame.loc[bad_b, "drug_b"]]))
    if on_unknown == "raise":
        line = int(frame.index[bad][0])
        drug = str(frame.at[line, "drug_a"] if bad_a[bad][0] else frame.at[line, "drug_b"])
        close = closest_names(drug, known)
        where = [f"ids from its column {id_column!r}"] if id_column else []
        other = option("drug_id_column", "<column>") if id_option else None
        drop = option("on_unknown_drug", "drop")
        advice = [
            "add their SMILES",
            *([f"if the ids are in another column of the drug table, set {other}"] if other else []),
            *([f"set {drop} to drop those rows (counted and logged)"] if drop else []),
        ]
        raise UnknownDrugError(
            f"drug has no entry in the SMILES table {smiles_file} "
            f"({'; '.join([*where, f'closest: {close}' if close else 'no similar name there'])}); "
            f"{len(unknown)} unknown drug(s) in {int(bad.sum())} rows: {sorted(map(str, unknown))[:10]}. "
            + _sentence("; or ".join(advice)),
            file=str(file),
            row=line,
            drug=drug,
        )
    record_drop(
        dropped if dropped is not None else {},
        "unknown_drug",
        int(bad.sum()),
        file,
        f"{len(unknown)} drugs without SMILES, e.g. {sorted(map(str, unknown))[:5]}",
    )
    return frame[~bad]


def build_drug_table(table: pd.DataFrame, used: Iterable[str], file: PathLike) -> pd.DataFrame:
    """The drugs in ``used``, indexed by ``drug_id`` (sorted) with columns ``name, smiles``.

    Args:
        table: rows of a drug table (index = file line) with columns ``drug_id, name, smiles``.
        used: the drug ids referenced by experiments; the other rows are not checked.

    Raises:
        InvalidSmilesError: an empty SMILES or one RDKit cannot parse (names drug, file, line).
        ConflictingSmilesError: one id given SMILES of different molecules (compared as RDKit
            canonical SMILES, so two spellings of one molecule are not a conflict).
    """
    rows = table[table["drug_id"].isin(set(used))]
    canonical = canonical_smiles(rows, file)
    n_forms = canonical.groupby(rows["drug_id"].to_numpy()).nunique()
    if (n_forms > 1).any():
        drug = str(n_forms.index[(n_forms > 1).to_numpy()][0])
        clash = rows[rows["drug_id"] == drug]
        listing = "; ".join(f"line {line}: {smi}" for line, smi in clash["smiles"].items())
        raise ConflictingSmilesError(
            f"drug id has SMILES of different molecules: {listing}", file=str(file), row=int(clash.index[1]), drug=drug
        )
    first = rows.drop_duplicates("drug_id").set_index("drug_id").sort_index()
    return first[["name", "smiles"]]


def canonical_smiles(rows: pd.DataFrame, file: PathLike) -> pd.Series:
    """RDKit canonical SMILES of each row's ``smiles`` (same index); raises :class:`InvalidSmilesError`.

    Each distinct SMILES string is parsed once; errors name the first line (in file order) that holds it.
    """
    smiles = rows["smiles"].to_numpy(dtype=object)
    lines = rows.index.to_numpy()
    names = rows["name"].to_numpy(dtype=object)
    empty = pd.isna(smiles) | (rows["smiles"].astype(str).str.len() == 0).to_numpy()
    if empty.any():
        pos = int(np.argmax(empty))
        raise InvalidSmilesError(
            f"drug {names[pos]!r} has an empty SMILES", file=str(file), row=int(lines[pos]), drug=str(names[pos])
        )
    canon: dict[str, str] = {}
    inorganic: list[str] = []
    for pos, smi in enumerate(smiles):
        if smi in canon:
            continue
        mol = parse_smiles(smi, drug=str(names[pos]), file=file, row=int(lines[pos]))
        if not any(atom.GetAtomicNum() == 6 for atom in mol.GetAtoms()):
            inorganic.append(f"{names[pos]} (line {int(lines[pos])}: {smi})")
        canon[smi] = Chem.MolToSmiles(mol)
    if inorganic:
        # Kept (cisplatin-like drugs are real), but their fingerprints are nearly empty: say so.
        log.warning(
            "%s: %d drug(s) have no carbon atom (a salt or bare metal ion?); their Morgan features "
            "carry little information: %s",
            file,
            len(inorganic),
            "; ".join(inorganic[:10]),
        )
    return rows["smiles"].map(canon)


def parse_smiles(
    smiles: str, *, drug: str | None = None, file: PathLike | None = None, row: int | None = None
) -> Chem.Mol:
    """RDKit molecule of ``smiles`` after the input limits; :class:`InvalidSmilesError` otherwise.

    The length is checked before RDKit parses, the heavy-atom count before anything writes or walks the
    molecule (both would crash the process on a huge one).
    """
    name = None if file is None else str(file)
    if len(smiles) > MAX_SMILES_CHARS:
        raise InvalidSmilesError(
            f"SMILES of {len(smiles)} characters exceeds the limit of {MAX_SMILES_CHARS} "
            "(MAX_SMILES_CHARS); small-molecule drugs are far shorter: check the cell",
            file=name,
            row=row,
            drug=drug,
        )
    with BlockLogs():  # RDKit's own stderr message would not name the drug; ours does
        mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        raise InvalidSmilesError(
            f"RDKit cannot parse the SMILES {smiles!r} of drug {drug!r}", file=name, row=row, drug=drug
        )
    if mol.GetNumHeavyAtoms() > MAX_HEAVY_ATOMS:
        raise InvalidSmilesError(
            f"molecule has {mol.GetNumHeavyAtoms()} heavy atoms, over the limit of "
            f"{MAX_HEAVY_ATOMS} (MAX_HEAVY_ATOMS); not a small-molecule drug",
            file=name,
            row=row,
            drug=drug,
        )
    return mol


# --- pairs and names --------------------------------------------------------------------------------
def check_self_pairs(
    frame: pd.DataFrame, file: PathLike, on_invalid: OnInvalid = "raise", dropped: dict[str, int] | None = None
) -> pd.DataFrame:
    """Rows whose ``drug_a`` differs from ``drug_b``; a self-pair raises :class:`SelfPairError` or is dropped.

    ``on_invalid="drop"`` drops them, counted under ``"self_pair"``.
    """
    _check_rule(on_invalid)
    same = (frame["drug_a"] == frame["drug_b"]).to_numpy()
    if not same.any():
        return frame
    line = int(frame.index[same][0])
    if on_invalid == "raise":
        drop = option("on_invalid", "drop")
        raise SelfPairError(
            f"the drug is paired with itself ({int(same.sum())} such row(s)); a combination "
            "needs two different drugs (a single-agent response is not a synergy): remove "
            "or correct the row" + (f", or set {drop}" if drop else ""),
            file=str(file),
            row=line,
            drug=str(frame.at[line, "drug_a"]),
        )
    record_drop(
        dropped if dropped is not None else {},
        "self_pair",
        int(same.sum()),
        file,
        f"a drug paired with itself, first at line {line}",
    )
    return frame[~same]


def spelling_key(names: pd.Series) -> pd.Series:
    """Case-, space- and punctuation-free form of names (``" MCF-7 "`` and ``"mcf7"`` -> ``"mcf7"``)."""
    return names.astype(str).str.lower().str.replace(r"[^0-9a-z]", "", regex=True)


def check_spelling_variants(frame: pd.DataFrame, column: str, what: str, file: PathLike) -> None:
    """Raise :class:`ScreenDataError` when two spellings of ``column`` differ only in case or punctuation.

    ``"MCF7"`` and ``"mcf7"`` in one table are almost surely one cell line typed twice; treating them as
    two would split its measurements silently.
    """
    names = pd.Series(pd.unique(frame[column].dropna().astype(str)))
    key = spelling_key(names)
    clash = key.duplicated(keep=False)
    if clash.any():
        first = key[clash].iloc[0]
        spellings = names[key == first].tolist()
        lines = [int(frame.index[(frame[column] == s).to_numpy()][0]) for s in spellings]
        raise ScreenDataError(
            f"{what} names {spellings} (first at lines {lines}) differ only in case, spaces or punctuation; "
            f"spell each {what} the same way everywhere",
            file=str(file),
            row=lines[1],
        )
