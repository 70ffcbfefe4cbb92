"""Loaders on the real shared data, and every bad-input case on real files corrupted in tmp_path."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recover_pyro.data import paths
from recover_pyro.errors import (
    ConflictingSmilesError,
    DataNotFoundError,
    EmptySelectionError,
    InvalidScoreError,
    InvalidSmilesError,
    MissingColumnsError,
    ScreenDataError,
    UnknownDrugError,
)
from recover_pyro.data.loaders import (
    DRUGCOMB_COLUMNS,
    load_almanac,
    load_csv,
    load_drugcomb,
    load_oneil,
    load_recover_inhouse,
    load_screen,
    save_drug_table,
    save_measurements_csv,
)
from recover_pyro.data.validation import read_smiles_table, read_table


@pytest.fixture(scope="module")
def oneil(data_root: Path):
    return load_oneil(data_root)


def _unordered(a: pd.Series, b: pd.Series) -> tuple[pd.Series, pd.Series]:
    a, b = a.astype(str), b.astype(str)
    return a.where(a <= b, b), b.where(a <= b, a)


# --- paths --------------------------------------------------------------------------------------------
def test_data_root_env_var_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.ENV_VAR, str(tmp_path))
    assert paths.data_root() == tmp_path
    with pytest.raises(FileNotFoundError, match="nowhere"):
        paths.require_data("nowhere")


def test_default_data_root_is_beside_the_checkout(monkeypatch):
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    repo = Path(paths.__file__).resolve().parents[3]
    assert (repo / "src" / "recover_pyro").is_dir()
    if (repo.parent / "shared" / "data").is_dir():
        assert paths.data_root() == repo.parent / "shared" / "data"


def test_installed_package_looks_for_data_beside_the_working_directory_only(monkeypatch, tmp_path):
    """A wheel lives in site-packages, beside no data: only $RECOVER_PYRO_DATA or ../shared/data of the cwd."""
    monkeypatch.delenv(paths.ENV_VAR, raising=False)
    monkeypatch.setattr(paths, "_source_checkout", lambda: None)
    monkeypatch.chdir(tmp_path)
    assert paths._candidates() == [tmp_path.parent / "shared" / "data"]
    with pytest.raises(DataNotFoundError, match=r"RECOVER_PYRO_DATA is not set; looked in") as err:
        paths.require_data("almanac")
    assert isinstance(err.value, FileNotFoundError) and "set root=/path/to/data" in str(err.value)
    with pytest.raises(DataNotFoundError, match="set root=/path/to/data, or the environment variable"):
        load_almanac(tmp_path / "nowhere")


def test_a_loaded_screen_becomes_a_measured_round(data_root, tmp_path):
    """The newcomer's first files: a drug table and 60 measured MCF7 pairs of ALMANAC."""
    screen = load_almanac(data_root, cell_lines=["MCF7"], cell_features=False)
    drugs = save_drug_table(screen, tmp_path / "drugs.csv")
    rows = screen.experiments.sample(60, random_state=0)
    round0 = save_measurements_csv(screen, tmp_path / "round0.csv", experiments=rows)
    back = load_csv(round0, drugs, score_columns=["comboscore"])
    assert len(back) == 60 and set(back.experiments["cell_line"]) == {"MCF7"}
    assert sorted(back.experiments["comboscore"]) == sorted(rows["comboscore"])
    with pytest.raises(ValueError, match="lack the column"):
        save_measurements_csv(screen, tmp_path / "x.csv", experiments=rows.drop(columns="n_replicates"))


def test_almanac_drug_table_as_is_reads_cid_measurements(data_root, tmp_path):
    """``name, pubchemid, isosmiles``: ids in ``name`` by default, ``pubchemid`` found from the measured ids."""
    table = data_root / "almanac" / "drug_smiles.csv"
    raw = pd.read_csv(data_root / "almanac" / "drug_synergy.csv", dtype=str, nrows=200)
    measured = raw[raw["cell_line"] == raw["cell_line"].iloc[0]].head(20)
    path = tmp_path / "round0.csv"
    measured.to_csv(path, index=False)
    screen = load_csv(path, table, score_columns=["synergy"])
    assert set(screen.drugs.index) <= set(pd.read_csv(table, dtype=str)["pubchemid"])
    with pytest.raises(UnknownDrugError, match="ids from its column 'name'.*drug_id_column=<column>"):
        load_csv(path, table, score_columns=["synergy"], drug_id_column="name")


# --- ALMANAC ------------------------------------------------------------------------------------------
def test_almanac_sizes(almanac):
    exp = almanac.experiments
    assert almanac.n_drugs == 87
    assert almanac.n_cell_lines == 55
    assert len(exp) == 74_139
    assert (exp["n_replicates"] == 2).sum() == 1_354
    assert set(exp["n_replicates"]) == {1, 2}
    assert exp["n_replicates"].sum() == 75_493
    assert almanac.score_columns == ("comboscore",)
    assert (exp["drug_a"] < exp["drug_b"]).all()
    assert set(exp["study"]) == {"ALMANAC"}
    assert almanac.cell_features.shape == (55, 651)
    assert list(almanac.cell_features.index) == list(almanac.cell_lines.index)
    assert almanac.dropped == {}
    assert almanac.drugs.loc["2478", "name"] == "Busulfan"


def test_almanac_mcf7_selection(data_root, almanac):
    mcf7 = load_almanac(data_root, cell_lines="MCF7")
    assert len(mcf7) == 1_476
    assert len(mcf7.experiments[["drug_a", "drug_b"]].drop_duplicates()) == 1_476
    assert mcf7.n_drugs == 86
    assert list(mcf7.cell_lines.index) == ["MCF7"]
    assert mcf7.cell_features.shape == (1, 651)
    selected = almanac.select(cell_lines="MCF7")
    pd.testing.assert_frame_equal(selected.experiments, mcf7.experiments)
    assert list(selected.drugs.index) == list(mcf7.drugs.index)


@pytest.mark.parametrize("how, reduce", [("mean", np.mean), ("max", np.max), ("min", np.min)])
def test_almanac_merges_both_drug_orders(data_root, how, reduce):
    raw = pd.read_csv(data_root / "almanac" / "drug_synergy.csv")
    raw = raw[raw["cell_line"] == "MCF7"]
    a, b = _unordered(raw["drug_a"], raw["drug_b"])
    counts = raw.groupby([a, b]).size()
    ((pair_a, pair_b),) = counts[counts == 2].index[:1]
    both = raw[(a == pair_a) & (b == pair_b)]
    assert set(both["drug_a"].astype(str)) == {pair_a, pair_b}  # really the two orders
    mcf7 = load_almanac(data_root, cell_lines=["MCF7"], aggregate=how, cell_features=False)
    exp = mcf7.experiments.set_index(["drug_a", "drug_b"])
    assert exp.loc[(pair_a, pair_b), "comboscore"] == pytest.approx(reduce(both["synergy"].to_numpy()))
    assert exp.loc[(pair_a, pair_b), "n_replicates"] == 2


def test_almanac_cell_line_typo_lists_closest(data_root):
    with pytest.raises(EmptySelectionError, match="MCF7") as err:
        load_almanac(data_root, cell_lines="MCF-7")
    assert "drug_synergy.csv" in str(err.value)


# --- O'Neil -------------------------------------------------------------------------------------------
def test_oneil_sizes(oneil, data_root):
    exp = oneil.experiments
    assert oneil.n_drugs == 38
    assert oneil.n_cell_lines == 39
    assert len(exp[["drug_a", "drug_b"]].drop_duplicates()) == 583
    assert len(exp) == 22_737
    assert oneil.score_columns == ("bliss", "zip", "hsa", "loewe")
    assert oneil.cell_features.shape == (31, 954)
    assert oneil.cell_features.columns[0].startswith("ENSG")
    assert oneil.cell_lines.loc["A2058", "tissue"] == "Melanoma"
    assert oneil.cell_lines.loc["ES2", "mutation"] == "BRAFV600E mutation"
    # the real value of the file's first data row comes through unchanged
    row = exp[(exp["drug_a"] == "5-FU") & (exp["drug_b"] == "ABT-888") & (exp["cell_line"] == "A2058")]
    assert row["bliss"].item() == pytest.approx(8.85)
    assert row["loewe"].item() == pytest.approx(7.6935301658)


def test_oneil_score_subset_and_cell_lines(data_root):
    screen = load_oneil(data_root, scores=["zip"], cell_lines=["A2058", "DLD1"])
    assert screen.score_columns == ("zip",)
    assert list(screen.cell_lines.index) == ["A2058", "DLD1"]
    assert list(screen.cell_features.index) == ["A2058"]  # DLD1 has no features
    with pytest.raises(MissingColumnsError, match="synergy_bliss"):
        load_oneil(data_root, scores=["synergy_bliss"])


# --- DrugComb -----------------------------------------------------------------------------------------
def _drugcomb_frame(data_root: Path) -> pd.DataFrame:
    """50 real O'Neil rows as DrugComb summary rows: two studies, 2 missing bliss, 1 single-drug block."""
    src = pd.read_csv(data_root / "oneil" / "oneil_4scores_merged.csv").iloc[::450].head(50)
    tissue = pd.read_csv(data_root / "oneil" / "oneil_cells_info.txt", sep="\t", header=None, index_col=0)[1]
    table = pd.DataFrame({c: np.nan for c in DRUGCOMB_COLUMNS}, index=range(len(src)))
    table = table.astype(object)
    table["block_id"] = np.arange(1, len(src) + 1)
    table["drug_row"] = src["drugname1"].to_numpy()
    table["drug_col"] = src["drugname2"].to_numpy()
    table["cell_line_name"] = src["cell_line"].to_numpy()
    table["study_name"] = ["ONEIL"] * 30 + ["OTHER"] * 20
    table["tissue_name"] = src["cell_line"].map(tissue).to_numpy()
    table["conc_r_unit"] = table["conc_c_unit"] = "uM"
    for ours, theirs in (
        ("synergy_bliss", "bliss"),
        ("synergy_zip", "zip"),
        ("synergy_hsa", "hsa"),
        ("synergy_loewe", "loewe"),
    ):
        table[ours] = src[theirs].to_numpy()
    table.loc[[3, 7], "synergy_bliss"] = np.nan
    table.loc[12, ["drug_col", "synergy_bliss", "synergy_zip", "synergy_hsa", "synergy_loewe"]] = np.nan
    table["drug_row_clinical_phase"] = "\\N"  # trailing extra columns are allowed
    table["drug_col_clinical_phase"] = "\\N"
    return table


def _write_drugcomb(table: pd.DataFrame, path: Path, sep: str, header: bool) -> Path:
    table.to_csv(path, sep=sep, header=header, index=False, na_rep="\\N")
    return path


def _expected_triples(table: pd.DataFrame, scores: list[str]) -> int:
    ok = table["drug_col"].notna() & table[scores].notna().all(axis=1)
    a, b = _unordered(table.loc[ok, "drug_row"], table.loc[ok, "drug_col"])
    return len(
        pd.DataFrame(
            {"a": a, "b": b, "c": table.loc[ok, "cell_line_name"], "s": table.loc[ok, "study_name"]}
        ).drop_duplicates()
    )


@pytest.mark.parametrize("sep", [",", "\t"])
@pytest.mark.parametrize("header", [True, False])
def test_drugcomb_summary_table(data_root, tmp_path, sep, header):
    table = _drugcomb_frame(data_root)
    path = _write_drugcomb(table, tmp_path / "summary.csv", sep, header)
    smiles = data_root / "oneil" / "oneil_drug_smiles.txt"
    screen = load_drugcomb(path, smiles)
    scores = ["synergy_bliss", "synergy_zip", "synergy_hsa", "synergy_loewe"]
    assert screen.dropped == {"single_drug": 1, "invalid_score": 2}
    assert len(screen) == _expected_triples(table, scores)
    assert screen.score_columns == tuple(scores)
    assert set(screen.experiments["study"]) == {"ONEIL", "OTHER"}
    first = table.iloc[0]
    a, b = sorted([first["drug_row"], first["drug_col"]])
    row = screen.experiments.query("drug_a == @a and drug_b == @b and cell_line == @first.cell_line_name")
    assert row["synergy_zip"].item() == pytest.approx(first["synergy_zip"])
    assert screen.cell_lines.loc[first["cell_line_name"], "tissue"] == first["tissue_name"]
    # only the chosen score columns decide what is invalid
    zip_only = load_drugcomb(path, smiles, scores=["synergy_zip"])
    assert zip_only.dropped == {"single_drug": 1}
    assert len(zip_only) == _expected_triples(table, ["synergy_zip"])


def test_drugcomb_filters_and_errors(data_root, tmp_path):
    table = _drugcomb_frame(data_root)
    path = _write_drugcomb(table, tmp_path / "summary.tsv", "\t", True)
    smiles = data_root / "oneil" / "oneil_drug_smiles.txt"
    other = load_drugcomb(path, smiles, studies="OTHER")
    assert set(other.experiments["study"]) == {"OTHER"}
    assert len(other) == _expected_triples(table[table["study_name"] == "OTHER"], ["synergy_bliss"])
    cell = table.loc[0, "cell_line_name"]
    one = load_drugcomb(path, smiles, cell_lines=[cell])
    assert list(one.cell_lines.index) == [cell]
    with pytest.raises(EmptySelectionError, match="OTHER"):
        load_drugcomb(path, smiles, studies="OTHRE")
    with pytest.raises(EmptySelectionError, match=cell):
        load_drugcomb(path, smiles, cell_lines=cell.lower() + "x")
    # line 1 is the header and block i sits on line i + 2, so bliss row 3 is line 5
    with pytest.raises(InvalidScoreError, match="row 5") as err:
        load_drugcomb(path, smiles, on_invalid="raise")
    assert table.loc[3, "drug_row"] in str(err.value)


def test_drugcomb_unknown_drug_raise_or_drop(data_root, tmp_path):
    table = _drugcomb_frame(data_root)
    path = _write_drugcomb(table, tmp_path / "summary.csv", ",", False)
    drug = table.loc[0, "drug_row"]
    smiles = tmp_path / "smiles.csv"
    full = read_smiles_table(data_root / "oneil" / "oneil_drug_smiles.txt")
    full[full["drug_id"] != drug][["drug_id", "smiles"]].rename(columns={"drug_id": "drug"}).to_csv(smiles, index=False)
    with pytest.raises(UnknownDrugError, match="row 1") as err:
        load_drugcomb(path, smiles)
    assert err.value.drug == drug
    screen = load_drugcomb(path, smiles, on_unknown_drug="drop")
    uses = (table["drug_row"] == drug) | (table["drug_col"] == drug)
    usable = table["drug_col"].notna() & table["synergy_bliss"].notna()
    assert screen.dropped["unknown_drug"] == int((uses & usable).sum())
    assert drug not in screen.drugs.index


def test_drugcomb_headerless_needs_documented_columns(tmp_path, data_root):
    path = tmp_path / "short.csv"
    path.write_text("1,5-FU,ABT-888,A2058\n")
    with pytest.raises(MissingColumnsError, match="22"):
        load_drugcomb(path, data_root / "oneil" / "oneil_drug_smiles.txt")


# --- generic CSV and the writer -----------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_csv_round_trip(oneil, tmp_path, suffix):
    screen = oneil.select(cell_lines=["A2058", "DLD1", "SW620"])
    measurements = save_measurements_csv(screen, tmp_path / f"m{suffix}")
    drugs = save_drug_table(screen, tmp_path / f"d{suffix}")
    back = load_csv(measurements, drugs)
    pd.testing.assert_frame_equal(back.experiments, screen.experiments)
    pd.testing.assert_frame_equal(back.drugs, screen.drugs)
    assert back.score_columns == screen.score_columns
    assert list(back.cell_lines.index) == list(screen.cell_lines.index)


def test_csv_round_trip_keeps_replicates_and_numeric_ids(data_root, tmp_path):
    screen = load_almanac(data_root, cell_lines="MCF7", cell_features=False)
    back = load_csv(
        save_measurements_csv(screen, tmp_path / "m.csv"), save_drug_table(screen, tmp_path / "d.csv"), name="again"
    )
    pd.testing.assert_frame_equal(back.experiments, screen.experiments)
    assert (back.experiments["n_replicates"] == 2).sum() == 16  # 1,492 rows -> 1,476 triples
    assert back.name == "again"


def test_csv_custom_mapping(data_root, oneil, tmp_path):
    exp = oneil.experiments.head(40)
    swapped = pd.DataFrame(
        {"Cell": exp["cell_line"], "D1": exp["drug_b"], "D2": exp["drug_a"], "Score": exp["bliss"], "note": "x"}
    )
    path = tmp_path / "custom.tsv"
    swapped.to_csv(path, sep="\t", index=False)
    smiles = data_root / "oneil" / "oneil_drug_smiles.txt"
    screen = load_csv(
        path,
        smiles,
        columns={"drug_a": "D1", "drug_b": "D2", "cell_line": "Cell"},
        score_columns={"bliss": "Score"},
        study="mine",
    )
    assert len(screen) == 40
    assert set(screen.experiments["study"]) == {"mine"}
    np.testing.assert_allclose(
        screen.experiments.set_index(["drug_a", "drug_b", "cell_line"])["bliss"].loc[
            list(zip(exp["drug_a"], exp["drug_b"], exp["cell_line"]))
        ],
        exp["bliss"],
    )
    # default: every other column holding numbers is a score; the text-only "note" is ignored
    guessed = load_csv(path, smiles, columns={"drug_a": "D1", "drug_b": "D2", "cell_line": "Cell"})
    assert guessed.score_columns == ("Score",)
    with pytest.raises(MissingColumnsError, match="Drug1"):
        load_csv(
            path, smiles, columns={"drug_a": "Drug1", "drug_b": "D2", "cell_line": "Cell"}, score_columns=["Score"]
        )


def test_load_screen_dispatch(data_root):
    screen = load_screen("almanac", root=data_root, cell_lines=["MCF7"], cell_features=False)
    assert len(screen) == 1_476
    with pytest.raises(ValueError, match="almanac"):
        load_screen("nci60")


def test_recover_inhouse(data_root):
    screen = load_recover_inhouse(data_root)
    assert len(screen) == 146
    assert list(screen.cell_lines.index) == ["MCF7"]
    assert screen.experiments["bliss_max"].max() == pytest.approx(93.3)
    assert screen.drugs.loc["RE-MOL-0000575642", "name"] == "cabazitaxel"
    assert screen.experiments.groupby("study").size().to_dict() == {
        "Calibration": 30,
        "SMO Round 1": 29,
        "SMO Round 2": 29,
        "SMO Round 3": 30,
        "Diversity": 28,
    }
    with_smiles = load_recover_inhouse(data_root, require_smiles=True)
    assert with_smiles.drugs["smiles"].notna().all()
    assert len(with_smiles) + with_smiles.dropped["no_smiles"] == 146


# --- bad input on real files corrupted in tmp_path ----------------------------------------------------
def _almanac_copy(data_root: Path, tmp_path: Path, n_lines: int = 300) -> Path:
    """``tmp_path/almanac`` with the first ``n_lines`` lines of the real synergy file and the real SMILES."""
    folder = tmp_path / "almanac"
    folder.mkdir()
    lines = (data_root / "almanac" / "drug_synergy.csv").read_text().splitlines()[:n_lines]
    (folder / "drug_synergy.csv").write_text("\n".join(lines) + "\n")
    shutil.copyfile(data_root / "almanac" / "drug_smiles.csv", folder / "drug_smiles.csv")  # not read-only
    return folder


def _edit_line(path: Path, line: int, edit) -> str:
    """Apply ``edit`` to 1-based ``line`` of ``path``; returns the original line."""
    lines = path.read_text().splitlines()
    original = lines[line - 1]
    lines[line - 1] = edit(original)
    path.write_text("\n".join(lines) + "\n")
    return original


def test_missing_required_column(data_root, tmp_path):
    folder = _almanac_copy(data_root, tmp_path)
    _edit_line(folder / "drug_synergy.csv", 1, lambda s: s.replace("synergy", "score"))
    with pytest.raises(MissingColumnsError, match="synergy") as err:
        load_almanac(tmp_path, cell_features=False)
    assert "drug_synergy.csv" in str(err.value) and "score" in str(err.value)


def test_unparsable_smiles_names_the_drug(data_root, tmp_path):
    folder = _almanac_copy(data_root, tmp_path)
    smiles = read_table(folder / "drug_smiles.csv", dtype=str)
    line = int(smiles.index[smiles["name"] == "Busulfan"][0])  # CID 2478 is used on line 2
    _edit_line(folder / "drug_smiles.csv", line, lambda s: s.rsplit(",", 1)[0] + ",CS(=O)(=O)OCC(((")
    with pytest.raises(InvalidSmilesError, match="Busulfan") as err:
        load_almanac(tmp_path, cell_features=False)
    assert err.value.row == line
    assert "drug_smiles.csv" in str(err.value)


def test_experiment_with_drug_lacking_smiles(data_root, tmp_path):
    folder = _almanac_copy(data_root, tmp_path)
    text = (folder / "drug_smiles.csv").read_text().splitlines()
    (folder / "drug_smiles.csv").write_text("\n".join(s for s in text if ",2478," not in s) + "\n")
    with pytest.raises(UnknownDrugError, match="2478") as err:
        load_almanac(tmp_path, cell_features=False)
    assert err.value.row == 2  # the first data line of drug_synergy.csv uses CID 2478
    assert "drug_synergy.csv" in str(err.value)


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "", "abc"])
def test_invalid_scores_raise_with_line(data_root, tmp_path, bad):
    folder = _almanac_copy(data_root, tmp_path)
    original = _edit_line(folder / "drug_synergy.csv", 41, lambda s: s.rsplit(",", 1)[0] + "," + bad)
    with pytest.raises(InvalidScoreError, match="row 41") as err:
        load_almanac(tmp_path, cell_features=False)
    drug_a, drug_b = original.split(",")[:2]
    assert drug_a in str(err.value) and drug_b in str(err.value)


def test_line_numbers_survive_blank_lines(data_root, tmp_path):
    folder = _almanac_copy(data_root, tmp_path)
    _edit_line(folder / "drug_synergy.csv", 10, lambda s: "\n" + s)  # old line 10 is now line 11
    _edit_line(folder / "drug_synergy.csv", 51, lambda s: s.rsplit(",", 1)[0] + ",inf")
    with pytest.raises(InvalidScoreError, match="row 51"):
        load_almanac(tmp_path, cell_features=False)


def test_drop_rule_counts_invalid_scores(data_root, tmp_path):
    folder = _almanac_copy(data_root, tmp_path)
    clean = load_almanac(tmp_path, cell_features=False)
    for line, bad in ((5, "nan"), (17, "inf"), (200, "")):
        _edit_line(folder / "drug_synergy.csv", line, lambda s, bad=bad: s.rsplit(",", 1)[0] + "," + bad)
    screen = load_almanac(tmp_path, cell_features=False, on_invalid="drop")
    assert screen.dropped == {"invalid_score": 3}
    assert screen.experiments["n_replicates"].sum() == clean.experiments["n_replicates"].sum() - 3
    assert np.isfinite(screen.experiments["comboscore"]).all()


def test_conflicting_smiles_for_one_drug(data_root, tmp_path):
    folder = _almanac_copy(data_root, tmp_path)
    path = folder / "drug_smiles.csv"
    path.write_text(path.read_text() + "Busulfan again,2478,CCCC\n")
    with pytest.raises(ConflictingSmilesError, match="2478") as err:
        load_almanac(tmp_path, cell_features=False)
    assert err.value.row == 89  # header + 87 drugs + the new line


def test_same_molecule_twice_is_not_a_conflict(data_root, tmp_path):
    folder = _almanac_copy(data_root, tmp_path)
    path = folder / "drug_smiles.csv"
    path.write_text(path.read_text() + "Busulfan,2478,CS(=O)(=O)OCCCCOS(C)(=O)=O\n")  # another spelling
    screen = load_almanac(tmp_path, cell_features=False)
    assert screen.drugs.loc["2478", "smiles"] == "CS(=O)(=O)OCCCCOS(=O)(=O)C"


def test_bad_cell_feature_names_line(data_root, tmp_path):
    folder = _almanac_copy(data_root, tmp_path)
    path = folder / "cell_line_gene_expression.csv"
    shutil.copyfile(data_root / "almanac" / path.name, path)
    _edit_line(path, 4, lambda s: s.split(",", 1)[0] + ",oops," + s.split(",", 2)[2])
    with pytest.raises(ScreenDataError, match="row 4") as err:
        load_almanac(tmp_path)
    assert "A549" in str(err.value)  # line 4 is the third cell line


def test_oneil_bad_headerless_smiles(data_root, tmp_path):
    folder = tmp_path / "oneil"
    folder.mkdir()
    for name in ("oneil_4scores_merged.csv", "oneil_drug_smiles.txt", "oneil_cells_info.txt"):
        shutil.copyfile(data_root / "oneil" / name, folder / name)  # copyfile: not read-only like the source
    path = folder / "oneil_drug_smiles.txt"
    _edit_line(path, 2, lambda s: s.split("\t")[0] + "\tnot-a-smiles")
    with pytest.raises(InvalidSmilesError, match="ABT-888") as err:
        load_oneil(tmp_path, cell_features=False)
    assert err.value.row == 2


def test_smiles_table_formats(tmp_path):
    rows = [("aspirin", "CC(=O)Oc1ccccc1C(=O)O"), ("caffeine", "Cn1cnc2c1c(=O)n(C)c(=O)n2C")]
    (tmp_path / "plain.tsv").write_text("".join(f"{d}\t{s}\n" for d, s in rows))
    (tmp_path / "named.csv").write_text("name,smiles\n" + "".join(f"{d},{s}\n" for d, s in rows))
    (tmp_path / "ids.csv").write_text(
        "drug_id,name,smiles\n" + "".join(f"D{i},{d},{s}\n" for i, (d, s) in enumerate(rows))
    )
    plain, named, ids = (read_smiles_table(tmp_path / f) for f in ("plain.tsv", "named.csv", "ids.csv"))
    assert list(plain["drug_id"]) == list(named["drug_id"]) == ["aspirin", "caffeine"]
    assert list(plain.index) == [1, 2] and list(named.index) == [2, 3]
    assert list(ids["drug_id"]) == ["D0", "D1"] and list(ids["name"]) == ["aspirin", "caffeine"]
    (tmp_path / "bad.csv").write_text("drug,structure\naspirin,CC\n")
    with pytest.raises(MissingColumnsError, match="SMILES"):
        read_smiles_table(tmp_path / "bad.csv")
