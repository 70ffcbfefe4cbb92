"""Reading dose-response blocks: both long formats, replicates, viability, units, and a named error for every
kind of bad block (or a listed problem under on_bad_block="skip")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recover_pyro import errors
from recover_pyro.data.blocks import (
    DEFAULT_CELL_LINE,
    block_columns,
    block_pairs,
    convert_dose,
    is_block_file,
    r_mean,
    read_blocks,
)

HEADER = "block_id,drug_row,drug_col,conc_r,conc_c,response,conc_r_unit,conc_c_unit,cell_line_name"


def block_rows(
    block: str = "1",
    drugs: tuple[str, str] = ("A", "B"),
    rows: tuple[float, ...] = (0, 1, 10),
    cols: tuple[float, ...] = (0, 2, 20),
    cell: str = "MCF7",
    units: tuple[str, str] = ("uM", "uM"),
) -> list[str]:
    """One full grid: response = 10 * i + j (rows i, columns j)."""
    out = []
    for i, a in enumerate(rows):
        for j, b in enumerate(cols):
            out.append(f"{block},{drugs[0]},{drugs[1]},{a},{b},{10 * i + j},{units[0]},{units[1]},{cell}")
    return out


def write(tmp_path: Path, lines: list[str], header: str = HEADER, name: str = "plates.csv") -> Path:
    path = tmp_path / name
    path.write_text(header + "\n" + "\n".join(lines) + "\n")
    return path


def test_a_full_grid_is_read_with_doses_sorted_and_wells_in_file_order(tmp_path: Path) -> None:
    lines = block_rows()[::-1]  # the file lists the wells from the highest doses down
    blocks = read_blocks(write(tmp_path, lines))
    (b,) = blocks.blocks
    assert (b.drug_row, b.drug_col, b.cell_line, b.unit_row) == ("A", "B", "MCF7", "uM")
    assert b.conc_row.tolist() == [0, 1, 10] and b.conc_col.tolist() == [0, 2, 20]
    assert b.response.tolist() == [[0, 1, 2], [10, 11, 12], [20, 21, 22]]
    assert b.well_order.tolist() == list(range(8, -1, -1))
    assert b.line == 2 and b.study == "plates" and (b.n_replicates == 1).all()


def test_synergyfinder3_names_camel_case_and_inhibition_column(tmp_path: Path) -> None:
    header = "BlockId,Drug1,Drug2,Conc1,Conc2,Inhibition,ConcUnit"
    lines = [",".join(r.split(",")[:6]) + ",nM" for r in block_rows()]
    path = write(tmp_path, lines, header=header)
    assert block_columns(header.split(","))["response"] == "Inhibition"
    (b,) = read_blocks(path, cell_line="HeLa").blocks
    assert b.cell_line == "HeLa" and b.unit_row == b.unit_col == "nM"
    rows, cols, unit_r, _ = b.conc_in("uM")
    assert rows.tolist() == [0, 0.001, 0.01] and unit_r == "uM"


def test_replicates_are_averaged_as_r_does_and_viability_is_converted(tmp_path: Path) -> None:
    lines = block_rows()
    extra = lines[4].replace(",11,", ",13,")  # a second measurement of well (1, 1): 11 and 13
    (b,) = read_blocks(write(tmp_path, [*lines, extra]), response="viability").blocks
    assert b.n_replicates[1, 1] == 2 and b.n_replicates.sum() == 10
    assert b.response[1, 1] == pytest.approx(100 - 12) and b.response[0, 0] == 100
    assert r_mean(np.array([0.1, 0.2, 0.3])) == pytest.approx(0.2, abs=0)


def test_no_cell_line_column_gets_the_default_with_a_warning(tmp_path: Path, caplog) -> None:
    header = HEADER.rsplit(",", 1)[0]
    lines = [r.rsplit(",", 1)[0] for r in block_rows()]
    (b,) = read_blocks(write(tmp_path, lines, header=header)).blocks
    assert b.cell_line == DEFAULT_CELL_LINE and "cell_line" in caplog.text


def test_is_block_file_tells_blocks_from_summaries_and_measurement_csvs(tmp_path: Path) -> None:
    assert is_block_file(write(tmp_path, block_rows()))
    summary = tmp_path / "summary.csv"
    summary.write_text("block_id,drug_row,drug_col,cell_line_name,study_name,synergy_zip\n1,A,B,MCF7,X,3.0\n")
    ours = tmp_path / "ours.csv"
    ours.write_text("drug_a,drug_b,cell_line,synergy\nA,B,MCF7,1\n")
    assert not is_block_file(summary) and not is_block_file(ours) and not is_block_file(tmp_path / "none.csv")


def test_block_pairs_lists_each_block_once(tmp_path: Path) -> None:
    path = write(tmp_path, [*block_rows("1"), *block_rows("2", drugs=("C", "A"))])
    assert block_pairs(path).values.tolist() == [["A", "B", "MCF7"], ["C", "A", "MCF7"]]


def test_convert_dose_keeps_non_molar_units() -> None:
    assert convert_dose(np.array([1.0]), "mg/ml", "uM")[1] == "mg/ml"
    assert convert_dose(np.array([1.0]), "µM", "nM")[0].tolist() == [1000.0]


# Each bad-block class: how to make it, and the words its message must carry.
BAD = {
    "missing_single_drug_row": (
        lambda: [r for r in block_rows() if r.split(",")[3] != "0"],
        errors.MissingSingleDrugError,
        "alone",
    ),
    "missing_single_drug_column": (
        lambda: [r for r in block_rows() if r.split(",")[4] != "0"],
        errors.MissingSingleDrugError,
        "alone",
    ),
    "not_a_grid": (lambda: block_rows()[:-1], errors.IncompleteDoseGridError, "no well"),
    "mixed_units": (
        lambda: [*block_rows()[:-1], block_rows(units=("nM", "uM"))[-1]],
        errors.MixedUnitsError,
        "units",
    ),
    "negative_dose": (lambda: [r.replace(",10,", ",-10,") for r in block_rows()], errors.NegativeDoseError, ">= 0"),
    "non_numeric_response": (
        lambda: [*block_rows()[:-1], block_rows()[-1].replace(",22,", ",n/a,")],
        errors.NonNumericResponseError,
        "not a number",
    ),
    "non_numeric_dose": (
        lambda: [*block_rows()[:-1], block_rows()[-1].replace(",20,", ",twenty,")],
        errors.NonNumericDoseError,
        "number",
    ),
    "two_pairs_in_one_block": (
        lambda: [*block_rows()[:-1], block_rows(drugs=("A", "C"))[-1]],
        errors.MixedBlockError,
        "own block_id",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_bad_block_raises_its_named_error_naming_file_block_and_fix(tmp_path: Path, case: str) -> None:
    make, kind, words = BAD[case]
    path = write(tmp_path, [*block_rows("ok", drugs=("C", "D")), *make()])
    with pytest.raises(kind) as caught:
        read_blocks(path)
    err = caught.value
    assert isinstance(err, errors.BadBlockError) and isinstance(err, errors.ScreenDataError)
    assert err.block == "1" and err.file == str(path) and err.row is not None
    assert words in str(err) and "block 1" in str(err)


def test_skip_scores_the_good_blocks_and_lists_the_bad_ones(tmp_path: Path, caplog) -> None:
    path = write(tmp_path, [*block_rows("ok"), *block_rows()[:-1]])
    blocks = read_blocks(path, on_bad_block="skip")
    assert [b.block_id for b in blocks.blocks] == ["ok"]
    (problem,) = blocks.problems
    assert problem.block_id == "1" and problem.error == "IncompleteDoseGridError" and problem.line == 11
    assert "IncompleteDoseGridError" in caplog.text


def test_missing_columns_and_contradicting_response_name(tmp_path: Path) -> None:
    with pytest.raises(errors.MissingColumnsError, match="conc_row"):
        read_blocks(write(tmp_path, ["1,A,B,0,1"], header="block_id,drug_row,drug_col,conc_c,response"))
    header = HEADER.replace("response", "viability")
    with pytest.raises(errors.MissingColumnsError, match="response=viability"):
        read_blocks(write(tmp_path, block_rows(), header=header))
    with pytest.raises(ValueError, match="response"):
        read_blocks(write(tmp_path, block_rows()), response="percent")  # type: ignore[arg-type]


def test_reference_files_read_as_the_reference_was_computed(data_root: Path) -> None:
    folder = data_root / "dose_response"
    mathews = read_blocks(folder / "synergyfinder_mathews.csv", response="viability")
    assert [b.shape for b in mathews.blocks] == [(6, 6), (6, 6)]
    assert mathews.blocks[0].response[0, 0] == pytest.approx(100 - 122.956184)
    oneil = read_blocks(folder / "synergyfinder_oneil.csv")
    assert [b.shape for b in oneil.blocks] == [(5, 5), (5, 5)] and (oneil.blocks[0].n_replicates == 4).all()
    assert oneil.blocks[0].cell_line == "OCUBM" and oneil.blocks[0].unit_col == "uM"
    tidy = read_blocks(folder / "tidycomb_template.csv")
    assert [b.block_id for b in tidy.blocks] == ["62898", "62899", "62900", "1", "2", "7641", "64716"]
