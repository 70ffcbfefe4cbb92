"""Measured files in (issue #26, items 2 and 5): the plate passed back with its score, the formats a lab
exports, and the silent cases that are now named: scales that differ, too few or constant measurements."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from recover_pyro.errors import MissingColumnsError, ScaleMismatchError, TooFewMeasurementsError, UnknownDrugError
from recover_pyro.wetlab import MIN_MEASUREMENTS, load_measured, measured_format, tried_pairs

from labfiles import DRUGS, PLATE, drug_table, keys, measured, tiny_recommend, write

OTHER = [("A", "D", 2.0), ("A", "F", -3.0), ("B", "E", 1.0), ("B", "F", 0.5), ("C", "E", -1.5), ("C", "F", 2.5)]


def test_the_plate_with_its_measured_score_column_is_the_next_measured_file(tmp_path: Path) -> None:
    smiles = drug_table(tmp_path)
    first = tiny_recommend([measured(tmp_path)], smiles, q=4)
    plate = first.save(tmp_path / "plate1.csv")
    # the lab measures the plate and adds the score as a column, keeping every other column
    rows = pd.read_csv(plate, dtype={"drug_a": str, "drug_b": str})
    rows["synergy"] = [0.5, -1.0, 2.0, 3.5]
    rows.to_csv(plate, index=False)
    second = tiny_recommend([measured(tmp_path), plate], smiles, q=4)
    assert len(second.measured) == len(PLATE) + 4
    assert not keys(second.table) & (keys(rows) | keys(pd.DataFrame(PLATE, columns=["drug_a", "drug_b", "y"])))


def test_a_plate_without_the_score_column_names_the_score_option(tmp_path: Path) -> None:
    smiles = drug_table(tmp_path)
    plate = tiny_recommend([measured(tmp_path)], smiles, q=2).save(tmp_path / "plate1.csv")
    rows = pd.read_csv(plate).assign(synergi=[1.0, 2.0])
    rows.to_csv(plate, index=False)
    with pytest.raises(MissingColumnsError, match="set score=synergi if that is the measured score"):
        tiny_recommend([measured(tmp_path), plate], smiles)


def test_fractions_beside_percentages_are_refused_with_the_numbers(tmp_path: Path, caplog) -> None:
    smiles = drug_table(tmp_path)
    percent = measured(tmp_path, [(a, b, y * 40) for a, b, y in PLATE])
    fractions = measured(tmp_path, [(a, b, y * 0.4) for a, b, y in OTHER], name="round1.csv")
    with pytest.raises(ScaleMismatchError, match="differ in scale 100-fold") as err:
        tiny_recommend([percent, fractions], smiles)
    text = str(err.value)
    assert "round0.csv: 8 rows, median" in text and "round1.csv: 6 rows" in text and "check_scale=False" in text
    assert err.value.file.endswith("round1.csv")
    with caplog.at_level(logging.WARNING):
        tiny_recommend([percent, fractions], smiles, check_scale=False)
    assert "check_scale is off" in caplog.text
    same = measured(tmp_path, [(a, b, y * 60) for a, b, y in OTHER], name="round1b.csv")  # 1.5x: a real shift
    assert len(tiny_recommend([percent, same], smiles).measured) == len(PLATE) + len(OTHER)


@pytest.mark.parametrize(
    "rows, match",
    [
        ([("A", "B", 1.0)], f"1 measured combination.*at least {MIN_MEASUREMENTS}"),
        ([(a, b, 7.0) for a, b, _ in PLATE], "all 8 measurements have the same synergy"),
    ],
)
def test_too_few_or_constant_measurements_are_named(tmp_path: Path, rows, match: str) -> None:
    with pytest.raises(TooFewMeasurementsError, match=match) as err:
        tiny_recommend([measured(tmp_path, rows)], drug_table(tmp_path))
    assert err.value.file.endswith("round0.csv")


def test_few_measurements_warn(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        tiny_recommend([measured(tmp_path)], drug_table(tmp_path))
    assert "only 8 measured combinations" in caplog.text


def test_a_drug_table_with_names_first_is_read_by_the_column_holding_the_ids(tmp_path: Path, caplog) -> None:
    """ALMANAC's ``name, pubchemid, isosmiles``: measured files name drugs by CID."""
    cids = {k: str(1000 + i) for i, k in enumerate(DRUGS)}
    table = write(
        tmp_path / "drug_smiles.csv",
        "name,pubchemid,isosmiles\n" + "".join(f"{n},{cids[k]},{s}\n" for k, (n, s) in DRUGS.items()),
    )
    plate = measured(tmp_path, [(cids[a], cids[b], y) for a, b, y in PLATE])
    with caplog.at_level(logging.INFO):
        result = tiny_recommend([plate], table, q=3)
    assert "drug ids read from column 'pubchemid'" in caplog.text
    assert set(result.table["drug_a"]) <= set(cids.values())
    assert set(result.table["drug_a_name"]) <= {n for n, _ in DRUGS.values()}
    with pytest.raises(UnknownDrugError, match="ids from its column 'name'.*set drug_id_column=<column>"):
        tiny_recommend([plate], table, drug_id_column="name")
    with pytest.raises(MissingColumnsError, match="set drug_id_column=pubchemid"):
        tiny_recommend([plate], table, drug_id_column="pubchemid_")


def test_semicolon_separated_export_is_read(tmp_path: Path) -> None:
    plate = write(
        tmp_path / "excel.csv",
        "drug_a;drug_b;cell_line;synergy\n" + "".join(f"{a};{b};MCF7;{y}\n" for a, b, y in PLATE),
    )
    assert len(load_measured(plate, drug_table(tmp_path), "synergy")) == len(PLATE)


def test_drugcomb_summary_is_a_measured_format(tmp_path: Path) -> None:
    header = "block_id,drug_row,drug_col,cell_line_name,study_name,synergy_bliss\n"
    summary = write(
        tmp_path / "summary.csv", header + "".join(f"{i},{a},{b},MCF7,S,{y}\n" for i, (a, b, y) in enumerate(PLATE))
    )
    assert measured_format(summary) == "drugcomb" and measured_format(measured(tmp_path)) == "csv"
    assert len(load_measured(summary, drug_table(tmp_path), "synergy_bliss")) == len(PLATE)
    assert len(tried_pairs(summary)) == len(PLATE)


def test_tried_pairs_include_failed_wells(tmp_path: Path) -> None:
    plate = write(tmp_path / "p.csv", "drug_a,drug_b,cell_line,synergy\nF,A,MCF7,1\nB,G, MCF7 ,\n")
    assert tried_pairs(plate).values.tolist() == [["A", "F", "MCF7"], ["B", "G", "MCF7"]]
