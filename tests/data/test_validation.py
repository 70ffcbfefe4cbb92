"""Raw reader errors named (issue #26, item 7): a semicolon export is read, a ragged row and an empty file are
named by line, a decimal comma is pointed out, and a drug table's id column is found by the ids it holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from recover_pyro.data.loaders import load_csv
from recover_pyro.data.validation import read_smiles_table, read_table, resolve_id_column, sniff_separator
from recover_pyro.errors import InvalidScoreError, MissingColumnsError, ScreenDataError, option, option_spelling

DRUGS = "drug_id,smiles\nA,CCO\nB,c1ccccc1O\nC,CC(=O)O\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_semicolon_separated_files_are_read(tmp_path: Path) -> None:
    path = write(tmp_path / "excel.csv", "drug_a;drug_b;cell_line;synergy\nA;B;MCF7;1.5\nA;C;MCF7;-2\n")
    assert sniff_separator(path) == ";"
    assert sniff_separator(write(tmp_path / "c.csv", "drug_a,drug_b,note\nA,B,x;y;z\n")) == ","
    screen = load_csv(path, write(tmp_path / "drugs.csv", DRUGS))
    assert len(screen) == 2 and screen.experiments["synergy"].tolist() == [1.5, -2.0]


def test_decimal_comma_is_pointed_out(tmp_path: Path) -> None:
    path = write(tmp_path / "excel.csv", "drug_a;drug_b;cell_line;synergy\nA;B;MCF7;1,5\n")
    drugs = write(tmp_path / "drugs.csv", DRUGS)
    with pytest.raises(InvalidScoreError, match="decimal comma") as err:
        load_csv(path, drugs, score_columns=["synergy"])
    assert err.value.row == 2
    with pytest.raises(MissingColumnsError, match=r"\['synergy'\] hold decimal commas"):
        load_csv(path, drugs)


def test_ragged_row_is_named_by_line_without_parser_text(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", "drug_a,drug_b,cell_line,synergy\nA,B,MCF7,1\nA,C,MCF7,2,oops\n")
    with pytest.raises(ScreenDataError, match="line 3 has 5 fields but the lines above have 4") as err:
        read_table(path)
    assert err.value.row == 3 and "tokenizing" not in str(err.value) and "double quotes" in str(err.value)


def test_empty_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ScreenDataError, match="the file is empty"):
        read_table(write(tmp_path / "e.csv", ""), sep=",")


def test_id_column_is_the_one_holding_the_ids(tmp_path: Path) -> None:
    table = write(tmp_path / "drug_smiles.csv", "name,pubchemid,isosmiles\nethanol,702,CCO\nphenol,996,c1ccccc1O\n")
    assert read_smiles_table(table).attrs["id_column"] == "name"
    assert resolve_id_column(table, ["702", "996"]) == "pubchemid"
    assert resolve_id_column(table, ["ethanol"]) is None  # the detected column holds them
    assert resolve_id_column(table, ["702", "nope"]) is None  # none holds all: the loader names the unknown one
    with pytest.raises(MissingColumnsError, match="drug_id_column=pubchemid"):
        resolve_id_column(table, [], id_column="pubchemids")
    rows = write(tmp_path / "m.csv", "drug_a,drug_b,cell_line,synergy\n702,996,MCF7,1\n")
    assert list(load_csv(rows, table).drugs["name"]) == ["ethanol", "phenol"]


def test_advice_follows_the_running_command() -> None:
    assert option("on_invalid", "drop") == "on_invalid=drop"
    assert option("header", False) == "header=False"
    with option_spelling({"on_invalid": "+data.screen.on_invalid", "header": None}, command_line=True):
        assert option("on_invalid", "drop") == "+data.screen.on_invalid=drop"
        assert option("header", False) is None
        assert option("overwrite", True) == "overwrite=true"
        with option_spelling({"on_invalid": None, "aggregate": "on_duplicate"}):
            assert option("on_invalid", "drop") is None  # an inner None: the function has no such option
            assert option("aggregate", "mean") == "on_duplicate=mean"
    assert option("header", False) == "header=False"
