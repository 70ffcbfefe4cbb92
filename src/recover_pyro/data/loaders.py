"""Loaders: public combination screens -> a validated :class:`~recover_pyro.data.screen.Screen`.

Every loader runs the same pipeline (see :mod:`recover_pyro.data.validation`):

1. read the measurements (index = file line) and check the required columns;
2. apply explicit drop rules (counted in ``Screen.dropped`` and logged);
3. filter by study / cell line (:class:`EmptySelectionError` with the closest names for unknown names);
4. check scores (NaN / inf / non-numeric: raise, or drop under ``on_invalid="drop"``);
5. check every drug has a SMILES, that SMILES parse with RDKit and that no drug id has two molecules;
6. merge both drug orders and replicates into one row per unordered (pair, cell line, study)
   with :func:`aggregate_measurements` (``aggregate="mean"`` by default).

Only drugs and cell lines that appear in the kept experiments are in the returned screen.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from recover_pyro.data.paths import require_data
from recover_pyro.data.screen import KEY_COLUMNS, Screen, aggregate_measurements, canonical_pair
from recover_pyro.data.validation import (
    OnInvalid,
    build_drug_table,
    check_known_drugs,
    check_scores,
    check_self_pairs,
    check_spelling_variants,
    filter_names,
    first_fields,
    read_smiles_table,
    read_table,
    record_drop,
    require_columns,
    require_values,
    resolve_id_column,
    sniff_separator,
)
from recover_pyro.errors import (
    ConflictingMeasurementError,
    DataNotFoundError,
    EmptySelectionError,
    MissingColumnsError,
    ScreenDataError,
    closest_names,
    option,
    option_spelling,
)

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
Names = Sequence[str] | str | None

#: Column order of DrugComb's summary table (``summary_v_1_5.csv``); a header-less file is read with
#: these names, and any further trailing columns are named ``column_23``, ``column_24``, ...
DRUGCOMB_COLUMNS = (
    "block_id",
    "drug_row",
    "drug_col",
    "cell_line_name",
    "study_name",
    "tissue_name",
    "conc_r_unit",
    "conc_c_unit",
    "ic50_row",
    "ic50_col",
    "ri_row",
    "ri_col",
    "css_row",
    "css_col",
    "css_ri",
    "S_sum",
    "S_mean",
    "S_max",
    "synergy_zip",
    "synergy_loewe",
    "synergy_hsa",
    "synergy_bliss",
)
DRUGCOMB_SCORES = ("synergy_bliss", "synergy_zip", "synergy_hsa", "synergy_loewe")

#: Our own measurement CSV (written by :func:`save_measurements_csv`): our name -> file column.
CSV_COLUMNS = {
    "drug_a": "drug_a",
    "drug_b": "drug_b",
    "cell_line": "cell_line",
    "study": "study",
    "drug_a_name": "drug_a_name",
    "drug_b_name": "drug_b_name",
    "n_replicates": "n_replicates",
}
CSV_REQUIRED = ("drug_a", "drug_b", "cell_line")
# The public screens' loaders take no on_unknown_drug: their errors must not advise it.
NO_UNKNOWN_DRUG_RULE: dict[str, str | None] = {"on_unknown_drug": None}


# --- public screens -----------------------------------------------------------------------------------
def load_almanac(
    root: PathLike | None = None,
    cell_lines: Names = None,
    aggregate: str = "mean",
    cell_features: bool = True,
    on_invalid: OnInvalid = "raise",
) -> Screen:
    """NCI-ALMANAC from ``<root>/almanac/`` (``root`` defaults to :func:`data_root`).

    Files: ``drug_synergy.csv`` (``drug_a, drug_b`` = PubChem CIDs, ``cell_line``, ``synergy``),
    ``drug_smiles.csv`` (``name, pubchemid, isosmiles``) and ``cell_line_gene_expression.csv``
    (first column ``Cellline``, then one column per gene).

    The score column is ``comboscore``: the upstream ``synergy`` column, which by its integer values and
    range is the NCI ALMANAC ComboScore (sum over the dose matrix of expected - observed percent growth,
    expected from a modified Bliss independence). It is not DrugComb's ``synergy_bliss`` nor a Bliss max.
    Drug ids are the CIDs as strings; study is ``"ALMANAC"``. Rows measured in both drug orders (1,354
    triples) are merged by ``aggregate``.

    Args:
        cell_lines: keep only these cell lines (e.g. ``"MCF7"``).
        cell_features: attach the ``(C, 651)`` gene-expression table as ``Screen.cell_features``.
        on_invalid: what to do with missing / non-numeric / infinite scores (``"raise"`` or ``"drop"``).
    """
    folder = _folder(root, "almanac")
    synergy = folder / "drug_synergy.csv"
    smiles = folder / "drug_smiles.csv"
    raw = read_table(synergy, dtype={"drug_a": str, "drug_b": str, "cell_line": str})
    require_columns(raw, ["drug_a", "drug_b", "cell_line", "synergy"], synergy)
    rows = raw[["drug_a", "drug_b", "cell_line", "synergy"]].rename(columns={"synergy": "comboscore"})
    rows["study"] = "ALMANAC"
    dropped: dict[str, int] = {}
    rows = _clean_rows(rows, ("comboscore",), synergy, cell_lines=cell_lines, on_invalid=on_invalid, dropped=dropped)
    table = read_smiles_table(smiles, id_column="pubchemid", name_column="name", smiles_column="isosmiles")
    with option_spelling(NO_UNKNOWN_DRUG_RULE):
        rows, drugs = _drugs_for(rows, table, synergy, smiles, "raise", dropped)
    features = (
        _read_cell_features(folder / "cell_line_gene_expression.csv", index_column="Cellline")
        if cell_features
        else None
    )
    return _finish(
        rows, drugs, ("comboscore",), aggregate, name="ALMANAC", source=synergy, dropped=dropped, features=features
    )


def load_oneil(
    root: PathLike | None = None,
    scores: Sequence[str] = ("bliss", "zip", "hsa", "loewe"),
    cell_lines: Names = None,
    aggregate: str = "mean",
    cell_features: bool = True,
    on_invalid: OnInvalid = "raise",
) -> Screen:
    """O'Neil et al. 2016 (DrugComb scores) from ``<root>/oneil/``.

    Files: ``oneil_4scores_merged.csv`` (``drugname1, drugname2, cell_line, bliss, hsa, loewe, zip, subset``),
    ``oneil_drug_smiles.txt`` (``name<TAB>smiles``, no header; drug id = name),
    ``oneil_cell_features.csv`` (CCLE TPM; line 1 = gene ids, line 2 = transcript ids, then one row per
    cell line) and ``oneil_cells_info.txt`` (``cell, tissue, mutation``, no header).

    Scores are DrugComb's replicate-averaged ``bliss`` (a mean Bliss excess, not a max), ``zip``, ``hsa``
    and ``loewe``; ``scores`` picks which to keep. Study is ``"ONEIL"``. Cell features (columns = Ensembl
    gene ids) exist for 31 of the 39 cell lines only: ``Screen.cell_features`` holds those 31 rows, so a
    model using cell features must encode the other 8 otherwise (e.g. one-hot). ``cell_lines["tissue"]``
    and ``cell_lines["mutation"]`` come from ``oneil_cells_info.txt``.
    """
    folder = _folder(root, "oneil")
    merged = folder / "oneil_4scores_merged.csv"
    smiles = folder / "oneil_drug_smiles.txt"
    scores = tuple(scores)
    raw = read_table(merged, dtype={"drugname1": str, "drugname2": str, "cell_line": str})
    require_columns(raw, ["drugname1", "drugname2", "cell_line", *scores], merged)
    rows = raw[["drugname1", "drugname2", "cell_line", *scores]].rename(
        columns={"drugname1": "drug_a", "drugname2": "drug_b"}
    )
    rows["study"] = "ONEIL"
    dropped: dict[str, int] = {}
    rows = _clean_rows(rows, scores, merged, cell_lines=cell_lines, on_invalid=on_invalid, dropped=dropped)
    with option_spelling(NO_UNKNOWN_DRUG_RULE):
        rows, drugs = _drugs_for(rows, read_smiles_table(smiles), merged, smiles, "raise", dropped)
    info = read_table(
        folder / "oneil_cells_info.txt", sep="\t", header=False, names=["cell_line", "tissue", "mutation"], dtype=str
    )
    features = (
        _read_cell_features(folder / "oneil_cell_features.csv", index_column="gene_id", skip_lines=(2,))
        if cell_features
        else None
    )
    return _finish(
        rows,
        drugs,
        scores,
        aggregate,
        name="ONEIL",
        source=merged,
        dropped=dropped,
        cell_info=info.drop_duplicates("cell_line").set_index("cell_line"),
        features=features,
    )


def load_drugcomb(
    summary_path: PathLike,
    smiles_path: PathLike,
    studies: Names = None,
    cell_lines: Names = None,
    scores: Sequence[str] = DRUGCOMB_SCORES,
    aggregate: str = "mean",
    header: bool | str = "infer",
    sep: str | None = None,
    on_invalid: OnInvalid = "drop",
    on_unknown_drug: OnInvalid = "raise",
) -> Screen:
    """DrugComb's summary table (one row per dose-response block).

    Args:
        summary_path: CSV or TSV (sniffed unless ``sep``), with or without a header row; ``header="infer"``
            takes the first line as a header when it starts with ``block_id``. Without a header the columns
            are :data:`DRUGCOMB_COLUMNS` in that order (extra trailing columns are allowed). ``\\N`` = missing.
        smiles_path: drug name -> SMILES table (see :func:`~recover_pyro.data.validation.read_smiles_table`);
            drug ids are DrugComb's drug names as spelled in ``drug_row`` / ``drug_col``.
        studies: keep only these ``study_name`` values (e.g. ``"ONEIL"``, ``"ALMANAC"``).
        cell_lines: keep only these ``cell_line_name`` values.
        scores: score columns kept (names unchanged).
        on_invalid: missing (``\\N``), non-numeric or infinite scores are common in DrugComb, so the default
            drops those rows (counted under ``"invalid_score"``); ``"raise"`` reports the first one.
        on_unknown_drug: a drug with no SMILES raises by default; ``"drop"`` drops its rows
            (counted under ``"unknown_drug"``).

    Blocks with only one drug (``drug_col`` or ``drug_row`` missing) are always dropped, counted under
    ``"single_drug"``. ``cell_lines["tissue"]`` is the block's ``tissue_name``.
    """
    scores = tuple(scores)
    sep = sep or sniff_separator(summary_path)
    fields = first_fields(summary_path, sep)
    has_header = bool(fields) and fields[0].lower() == "block_id" if header == "infer" else bool(header)
    if has_header:
        names, columns = None, fields
    else:
        if len(fields) < len(DRUGCOMB_COLUMNS):
            raise MissingColumnsError(
                f"a header-less DrugComb summary needs at least the {len(DRUGCOMB_COLUMNS)} documented columns "
                f"{list(DRUGCOMB_COLUMNS)}; line 1 has {len(fields)}",
                file=str(summary_path),
            )
        extra = [f"column_{i + 1}" for i in range(len(DRUGCOMB_COLUMNS), len(fields))]
        names = columns = [*DRUGCOMB_COLUMNS, *extra]
    required = ["drug_row", "drug_col", "cell_line_name", "study_name", *scores]
    require_columns(pd.DataFrame(columns=columns), required, summary_path)
    usecols = [*required, *(["tissue_name"] if "tissue_name" in columns else [])]
    text = dict.fromkeys(("drug_row", "drug_col", "cell_line_name", "study_name", "tissue_name"), str)
    raw = read_table(
        summary_path, sep=sep, header=has_header, names=names, usecols=usecols, dtype=text, na_values=[r"\N"]
    )
    dropped: dict[str, int] = {}
    single = (raw["drug_row"].isna() | raw["drug_col"].isna()).to_numpy()
    record_drop(dropped, "single_drug", int(single.sum()), summary_path, "blocks without a second drug")
    raw = raw[~single]
    rows = raw.rename(
        columns={"drug_row": "drug_a", "drug_col": "drug_b", "cell_line_name": "cell_line", "study_name": "study"}
    )
    rows = _clean_rows(
        rows[["drug_a", "drug_b", "cell_line", "study", *scores]],
        scores,
        summary_path,
        studies=studies,
        cell_lines=cell_lines,
        on_invalid=on_invalid,
        dropped=dropped,
    )
    rows, drugs = _drugs_for(rows, read_smiles_table(smiles_path), summary_path, smiles_path, on_unknown_drug, dropped)
    info = None
    if "tissue_name" in raw:
        tissue = raw.loc[rows.index, "tissue_name"].groupby(rows["cell_line"]).first()
        info = tissue.rename("tissue").to_frame()
    return _finish(
        rows, drugs, scores, aggregate, name="DrugComb", source=summary_path, dropped=dropped, cell_info=info
    )


def load_csv(
    path: PathLike,
    smiles_path: PathLike,
    columns: Mapping[str, str] | None = None,
    score_columns: Sequence[str] | Mapping[str, str] | None = None,
    sep: str | None = None,
    studies: Names = None,
    cell_lines: Names = None,
    aggregate: str = "mean",
    study: str | None = None,
    name: str | None = None,
    on_invalid: OnInvalid = "raise",
    on_unknown_drug: OnInvalid = "raise",
    header: bool = True,
    drug_id_column: str | None = None,
) -> Screen:
    """A generic CSV/TSV of measurements; by default the format written by :func:`save_measurements_csv`.

    Args:
        path: the measurements, CSV, TSV or semicolon-separated (sniffed unless ``sep``), one row per measured
            (pair, cell line).
        smiles_path: drug id -> SMILES table (see :func:`~recover_pyro.data.validation.read_smiles_table`),
            e.g. written by :func:`save_drug_table`.
        columns: our name -> file column, for ``drug_a``, ``drug_b``, ``cell_line`` (required) and
            optionally ``study``, ``drug_a_name``, ``drug_b_name``, ``n_replicates``. ``None`` uses
            :data:`CSV_COLUMNS` (optional ones only when the file has them).
        score_columns: file columns holding scores (kept under their own names), or a mapping our score name
            -> file column. ``None``: every column not used by ``columns`` that holds a number (a column of
            text only, e.g. ``notes``, is ignored with a logged warning).
        study: study label when there is no study column (default: the file's stem).
        name: the screen's name (default: the file's stem).
        header: ``False`` for a file without a header line: its columns are then ``drug_a, drug_b,
            cell_line`` and the scores (``score_columns`` as a list, default one column ``score``), in order.
        drug_id_column: the drug table's column holding the drug ids of ``path``. ``None``: the column
            :func:`~recover_pyro.data.validation.read_smiles_table` detects, or, when that one lacks some of
            the file's ids, the column that holds them all (e.g. ``pubchemid`` of ALMANAC's
            ``name, pubchemid, isosmiles`` table; see :func:`~recover_pyro.data.validation.resolve_id_column`).

    If the file has an ``n_replicates`` column, the loaded ``n_replicates`` is its sum over the merged rows
    (the scores are still merged by ``aggregate``, unweighted), so a saved screen reads back unchanged.
    Drug names come from ``drug_a_name`` / ``drug_b_name`` when present, else from the SMILES table.
    """
    sep = sep or sniff_separator(path)
    if not header:
        if columns is not None or isinstance(score_columns, Mapping):
            raise ValueError("header=False reads columns by position; pass score_columns as a list, no columns")
        score_list = list(score_columns or ["score"])
        score_columns = score_list
        positional = [*CSV_REQUIRED, *score_list]
        width = len(first_fields(path, sep))
        if width != len(positional):
            raise MissingColumnsError(
                f"a header-less file needs {len(positional)} columns {positional}; line 1 has {width}", file=str(path)
            )
    names = None if header else positional
    header_fields = names or first_fields(path, sep)
    if columns is None:
        mapping = {
            ours: theirs for ours, theirs in CSV_COLUMNS.items() if ours in CSV_REQUIRED or theirs in header_fields
        }
    else:
        unknown = sorted(set(columns) - set(CSV_COLUMNS))
        if unknown:
            raise ValueError(f"unknown column role(s) {unknown}; roles are {list(CSV_COLUMNS)}")
        mapping = dict(columns)
    if score_columns is None:
        used = set(mapping.values())
        scores = {c: c for c in header_fields if c not in used}
    elif isinstance(score_columns, Mapping):
        scores = dict(score_columns)
    else:
        scores = {c: c for c in score_columns}
    missing = [c for c in [*mapping.values(), *scores.values()] if c not in header_fields]
    if missing or not scores:
        if set(header_fields) & set(mapping.values()):  # a header, lacking some columns
            close = {c: closest_names(c, header_fields, n=2) for c in missing}
            advice = f"closest present: {close}" if any(close.values()) else "name the columns in the header"
        else:
            headerless = option("header", False)
            advice = (
                "the first line must be a header naming the columns (e.g. drug_a,drug_b,cell_line,synergy): "
                "add one"
                + (
                    f", or load the file with {headerless} if its columns are drug_a, drug_b, cell_line "
                    "and the scores in that order"
                    if headerless
                    else ""
                )
            )
        raise MissingColumnsError(
            f"missing column(s) {missing or 'holding scores'}; line 1 reads {header_fields}; {advice}", file=str(path)
        )
    text = {theirs: str for ours, theirs in mapping.items() if ours != "n_replicates"}
    raw = read_table(path, sep=sep, dtype=text, header=header, names=names)
    if score_columns is None and not raw.empty:  # (an empty table is reported below, as such)
        scores = _numeric_columns(raw, scores, path)
    rows = pd.DataFrame({ours: raw[theirs] for ours, theirs in mapping.items()}, index=raw.index)
    for ours, theirs in scores.items():
        rows[ours] = raw[theirs]
    if "study" not in rows:
        rows["study"] = study if study is not None else Path(path).stem
    score_names = tuple(scores)
    dropped: dict[str, int] = {}
    rows = _clean_rows(
        rows, score_names, path, studies=studies, cell_lines=cell_lines, on_invalid=on_invalid, dropped=dropped
    )
    id_column = resolve_id_column(smiles_path, pd.concat([rows["drug_a"], rows["drug_b"]]).unique(), drug_id_column)
    table = read_smiles_table(smiles_path, id_column=id_column)
    rows, drugs = _drugs_for(rows, table, path, smiles_path, on_unknown_drug, dropped, id_option=True)
    if "drug_a_name" in rows and "drug_b_name" in rows:
        given = pd.concat(
            [
                pd.Series(rows["drug_a_name"].to_numpy(), index=rows["drug_a"].to_numpy()),
                pd.Series(rows["drug_b_name"].to_numpy(), index=rows["drug_b"].to_numpy()),
            ]
        ).dropna()
        given = given[~given.index.duplicated()]
        drugs["name"] = given.reindex(drugs.index).fillna(drugs["name"])
    screen = _finish(rows, drugs, score_names, aggregate, name=name or Path(path).stem, source=path, dropped=dropped)
    if "n_replicates" in rows:
        screen.experiments["n_replicates"] = _summed_replicates(rows, screen.experiments, path)
    return screen


def load_recover_inhouse(root: PathLike | None = None, require_smiles: bool = False) -> Screen:
    """RECOVER's own 146 measured MCF7 combinations from ``<root>/recover_inhouse/`` (CC BY-NC 4.0).

    Score ``bliss_max`` = ``synergy_bliss_max`` of ``Sankey_output.csv`` (measured Bliss max, x100 scale).
    Drug ids are RECOVER ids (``RE-MOL-...``), names from ``name_x`` / ``name_y``. The study column holds
    the acquisition round (``Calibration``, ``SMO Round 1``..``3``, ``Diversity``), so
    ``screen.select(studies=...)`` picks a round.

    SMILES are known only for the drugs of ``combos_with_predictions_round1.csv`` (57 of 91 drugs); the
    others have an empty (NA) ``smiles``. ``require_smiles=True`` keeps only experiments whose two drugs
    both have SMILES (61 of 146), counting the rest under ``"no_smiles"``.
    """
    folder = _folder(root, "recover_inhouse")
    sankey = folder / "Sankey_output.csv"
    round1 = folder / "combos_with_predictions_round1.csv"
    ids = ("drug_col_recover_id", "drug_row_recover_id", "recover_id_x", "recover_id_y")
    raw = read_table(sankey, dtype=dict.fromkeys((*ids, "name_x", "name_y", "cell_line_name", "round"), str))
    require_columns(raw, [*ids, "name_x", "name_y", "synergy_bliss_max", "cell_line_name", "round"], sankey)
    rows = pd.DataFrame(
        {
            "drug_a": raw["drug_col_recover_id"],
            "drug_b": raw["drug_row_recover_id"],
            "cell_line": raw["cell_line_name"],
            "study": raw["round"],
            "bliss_max": raw["synergy_bliss_max"],
        },
        index=raw.index,
    )
    dropped: dict[str, int] = {}
    rows = _clean_rows(rows, ("bliss_max",), sankey, on_invalid="raise", dropped=dropped)
    names = pd.concat(
        [
            pd.Series(raw["name_x"].to_numpy(), index=raw["recover_id_x"].to_numpy()),
            pd.Series(raw["name_y"].to_numpy(), index=raw["recover_id_y"].to_numpy()),
        ]
    )
    names = names[~names.index.duplicated()]
    smiles = _round1_smiles(round1)
    known = build_drug_table(smiles, smiles["drug_id"], round1)["smiles"]
    if require_smiles:
        both = (rows["drug_a"].isin(known.index) & rows["drug_b"].isin(known.index)).to_numpy()
        record_drop(dropped, "no_smiles", int((~both).sum()), sankey, "a drug has no SMILES in round 1")
        rows = rows[both]
    used = sorted(set(rows["drug_a"]) | set(rows["drug_b"]))
    missing = sorted(set(used) - set(names.index))
    if missing:
        raise ScreenDataError(f"drug ids {missing[:5]} have no name_x/name_y entry", file=str(sankey), drug=missing[0])
    drugs = pd.DataFrame({"name": names.reindex(used), "smiles": known.reindex(used)}, index=pd.Index(used))
    return _finish(rows, drugs, ("bliss_max",), "mean", name="RECOVER_MCF7", source=sankey, dropped=dropped)


LOADERS: dict[str, Callable[..., Screen]] = {
    "almanac": load_almanac,
    "oneil": load_oneil,
    "drugcomb": load_drugcomb,
    "csv": load_csv,
    "recover_inhouse": load_recover_inhouse,
}


def load_screen(kind: str, **kwargs: object) -> Screen:
    """Dispatch by name (``almanac``, ``oneil``, ``drugcomb``, ``csv``, ``recover_inhouse``), e.g. from Hydra."""
    try:
        loader = LOADERS[kind.lower()]
    except KeyError:
        raise ValueError(f"unknown screen kind {kind!r}; choose one of {sorted(LOADERS)}") from None
    return loader(**kwargs)


# --- writers ------------------------------------------------------------------------------------------
def save_measurements_csv(screen: Screen, path: PathLike, experiments: pd.DataFrame | None = None) -> Path:
    """Write ``screen.experiments`` in the project's CSV format (tab-separated if ``path`` ends in .tsv).

    Columns: ``drug_a, drug_b, drug_a_name, drug_b_name, cell_line, study, n_replicates`` and one column per
    score. :func:`load_csv` with its default mapping reads it back (with a drug table from
    :func:`save_drug_table`), and so does ``recover-recommend measured=[...]``: this is how a loaded screen
    becomes a measured round, e.g. 60 random MCF7 rows of ALMANAC::

        screen = load_almanac(cell_lines=["MCF7"])
        save_drug_table(screen, "drugs.csv")
        save_measurements_csv(screen, "round0.csv", experiments=screen.experiments.sample(60, random_state=0))

    Args:
        screen: the screen whose drug names and score columns are written.
        path: the output file.
        experiments: rows of ``screen.experiments`` to write (default: all of them).
    """
    path = Path(path)
    exp = screen.experiments if experiments is None else experiments
    missing = [c for c in (*KEY_COLUMNS, "n_replicates", *screen.score_columns) if c not in exp.columns]
    if missing:
        raise ValueError(f"experiments lack the column(s) {missing}; pass rows of screen.experiments")
    names = screen.drugs["name"]
    out = pd.DataFrame(
        {
            "drug_a": exp["drug_a"],
            "drug_b": exp["drug_b"],
            "drug_a_name": exp["drug_a"].map(names),
            "drug_b_name": exp["drug_b"].map(names),
            "cell_line": exp["cell_line"],
            "study": exp["study"],
            "n_replicates": exp["n_replicates"],
        }
    )
    for col in screen.score_columns:
        out[col] = exp[col]
    out.to_csv(path, sep="\t" if path.suffix == ".tsv" else ",", index=False)
    return path


def save_drug_table(screen: Screen, path: PathLike) -> Path:
    """Write ``drug_id, name, smiles`` for every drug of ``screen`` (readable by :func:`read_smiles_table`)."""
    path = Path(path)
    table = screen.drugs[["name", "smiles"]].reset_index()
    table.to_csv(path, sep="\t" if path.suffix == ".tsv" else ",", index=False)
    return path


# --- shared steps -------------------------------------------------------------------------------------
def _folder(root: PathLike | None, name: str) -> Path:
    if root is None:
        return require_data(name)
    folder = Path(root) / name
    if not folder.is_dir():
        spelled = option("root", "/path/to/data")
        raise DataNotFoundError(
            f"screen data folder not found: {folder}; set "
            + (f"{spelled}, or " if spelled else "")
            + f"the environment variable RECOVER_PYRO_DATA, to the folder that holds {name}/"
        )
    return folder


def _clean_rows(
    rows: pd.DataFrame,
    score_columns: Sequence[str],
    file: PathLike,
    *,
    studies: Names = None,
    cell_lines: Names = None,
    on_invalid: OnInvalid,
    dropped: dict[str, int],
) -> pd.DataFrame:
    """Key values present and stripped, selection applied, no self-pairs, one spelling per cell line,
    scores finite (rows indexed by file line)."""
    if rows.empty:
        raise EmptySelectionError(
            "the table has no data rows (only a header?); add measurements below the header line", file=str(file)
        )
    rows = rows.copy()
    require_values(rows, ["drug_a", "drug_b", "cell_line"], file)
    rows["study"] = rows["study"].fillna("")
    for col in ("drug_a", "drug_b", "cell_line", "study"):
        rows[col] = rows[col].astype(str).str.strip()
    rows = filter_names(rows, "study", studies, "study", file)
    rows = filter_names(rows, "cell_line", cell_lines, "cell line", file)
    check_spelling_variants(rows, "cell_line", "cell line", file)
    rows = check_self_pairs(rows, file, on_invalid, dropped)
    rows = check_scores(rows, score_columns, file, on_invalid, dropped)
    if rows.empty:
        raise EmptySelectionError(f"no rows left after dropping {dropped} (rule: count of rows)", file=str(file))
    return rows


def _drugs_for(
    rows: pd.DataFrame,
    table: pd.DataFrame,
    file: PathLike,
    smiles_file: PathLike,
    on_unknown: OnInvalid,
    dropped: dict[str, int],
    id_option: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows whose drugs all have SMILES, and the validated drug table of the drugs they use (``id_option``:
    the loader takes ``drug_id_column``, which an unknown-drug error then names)."""
    rows = check_known_drugs(
        rows, table["drug_id"], file, smiles_file, on_unknown, dropped, table.attrs.get("id_column"), id_option
    )
    if rows.empty:
        raise EmptySelectionError(f"no rows left after dropping: {dropped}", file=str(file))
    used = set(rows["drug_a"]) | set(rows["drug_b"])
    return rows, build_drug_table(table, used, smiles_file)


def _finish(
    rows: pd.DataFrame,
    drugs: pd.DataFrame,
    score_columns: Sequence[str],
    aggregate: str,
    *,
    name: str,
    source: PathLike,
    dropped: dict[str, int],
    cell_info: pd.DataFrame | None = None,
    features: pd.DataFrame | None = None,
) -> Screen:
    """Aggregate the clean rows and wrap everything in a :class:`Screen`."""
    try:
        experiments = aggregate_measurements(
            rows[[*KEY_COLUMNS, *score_columns]], score_columns, how=aggregate, file=str(source)
        )
    except ConflictingMeasurementError as err:
        raise _respelled(err) from err
    cells = pd.Index(sorted(experiments["cell_line"].unique()), name="cell_line")
    cell_lines = pd.DataFrame(index=cells)
    info = cell_info if cell_info is not None else pd.DataFrame(columns=["tissue"])
    for col in info.columns:
        cell_lines[col] = info[col].reindex(cells).fillna("").astype(str)
    if "tissue" not in cell_lines:
        cell_lines["tissue"] = ""
    if features is not None:
        lacking = cells[~cells.isin(features.index)]
        if len(lacking):
            log.info(
                "%s: %d of %d cell lines have no features (%s); encode them otherwise (e.g. one-hot)",
                name,
                len(lacking),
                len(cells),
                list(lacking),
            )
        features = features.loc[cells[cells.isin(features.index)]]
    return Screen(
        drugs=drugs,
        cell_lines=cell_lines,
        experiments=experiments,
        score_columns=tuple(score_columns),
        cell_features=features,
        name=name,
        source=str(source),
        dropped=dropped,
    )


def _respelled(err: ConflictingMeasurementError) -> ConflictingMeasurementError:
    """``err`` with its advice spelled as the running command takes it (:func:`recover_pyro.errors.option`)."""
    head, found, _ = str(err.args[0]).partition("; set on_duplicate=mean (or aggregate=mean)")
    if not found:
        return err
    spelled = option("aggregate", "mean")
    return ConflictingMeasurementError(
        head + (f"; set {spelled} to average replicates" if spelled else "; remove the repeated rows"),
        file=err.file,
        row=err.row,
        drug=err.drug,
    )


def _read_cell_features(path: Path, index_column: str, skip_lines: Sequence[int] = ()) -> pd.DataFrame:
    """A ``(C, G)`` float table indexed by cell-line name; ``skip_lines`` are 1-based lines to ignore."""
    table = read_table(path, dtype={index_column: str})
    table = table.drop(index=[n for n in skip_lines if n in table.index])
    require_columns(table, [index_column], path)
    lines = table.index
    cells = table[index_column].str.strip()
    if cells.duplicated().any():
        line = int(lines[cells.duplicated().to_numpy()][0])
        raise ScreenDataError(
            f"cell line {cells[cells.duplicated()].iloc[0]!r} has two feature rows", file=str(path), row=line
        )
    values = table.drop(columns=[index_column]).apply(pd.to_numeric, errors="coerce").astype(float)
    bad = ~np.isfinite(values.to_numpy()).all(axis=1)
    if bad.any():
        line = int(lines[bad][0])
        raise ScreenDataError(
            f"missing or non-numeric cell-line feature for {cells[bad].iloc[0]!r}", file=str(path), row=line
        )
    values.index = pd.Index(cells.to_numpy(), name="cell_line")
    values.columns = values.columns.astype(str)
    return values


def _round1_smiles(path: Path) -> pd.DataFrame:
    """``drug_id, name, smiles`` rows (index = file line) from RECOVER's round-1 file, both drug columns."""
    raw = read_table(path, dtype=str)
    parts = []
    for role in ("studied", "new"):
        cols = [f"{role}_drug_id", f"{role}_drug_name", f"{role}_drug_smiles"]
        require_columns(raw, cols, path)
        part = raw[cols].set_axis(["drug_id", "name", "smiles"], axis=1)
        parts.append(part[part["smiles"].notna()])
    return pd.concat(parts)


def _numeric_columns(raw: pd.DataFrame, scores: dict[str, str], file: PathLike) -> dict[str, str]:
    """The guessed score columns that hold at least one number; text-only columns are dropped with a warning."""
    kept = {
        ours: theirs for ours, theirs in scores.items() if pd.to_numeric(raw[theirs], errors="coerce").notna().any()
    }
    ignored = [theirs for theirs in scores.values() if theirs not in kept.values()]
    if ignored:
        log.warning(
            "%s: column(s) %s hold no number, so they are not scores; ignored (name the score columns "
            "with score_columns to choose them yourself)",
            file,
            ignored,
        )
    if not kept:
        commas = [
            c for c in ignored if raw[c].astype(str).str.fullmatch(r"\s*[+-]?\d+,\d+\s*").any()
        ]  # "1,5": a spreadsheet's decimal comma
        hint = (
            f"; column(s) {commas} hold decimal commas (1,5): write numbers with a decimal point (1.5)"
            if commas
            else ""
        )
        raise MissingColumnsError(
            f"no column besides {list(CSV_COLUMNS)} holds a number; nothing to use as a score{hint}", file=str(file)
        )
    return kept


def _summed_replicates(rows: pd.DataFrame, experiments: pd.DataFrame, file: PathLike) -> np.ndarray:
    """Per experiment, the sum of the file's ``n_replicates`` over the rows merged into it."""
    counts = pd.to_numeric(rows["n_replicates"], errors="coerce")
    bad = ~(counts.notna() & (counts >= 1) & (counts == counts.round())).to_numpy()
    if bad.any():
        line = int(rows.index[bad][0])
        raise ScreenDataError(
            f"n_replicates {rows.at[line, 'n_replicates']!r} is not a positive integer", file=str(file), row=line
        )
    keys = rows[list(KEY_COLUMNS)].copy()
    keys["drug_a"], keys["drug_b"] = canonical_pair(rows["drug_a"], rows["drug_b"])
    sums = counts.groupby([keys[c] for c in KEY_COLUMNS]).sum()
    return sums.reindex(pd.MultiIndex.from_frame(experiments[list(KEY_COLUMNS)])).to_numpy(dtype=np.int64)
