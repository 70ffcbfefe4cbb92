"""``recover-synergy`` end to end: a block file in, the per-block, per-dose, fit and summary tables and the plots
out; its per-block table read by ``recover-recommend``; a named error (one line, exit status 2) for each kind
of bad block, and the bad blocks listed under ``on_bad_block=skip``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra.core.global_hydra import GlobalHydra

from recover_pyro.cli import synergy as synergy_cli
from recover_pyro.data.synergy import MEASUREMENT_COLUMNS

DRUGS = {"A": "CCO", "B": "c1ccccc1O", "C": "CC(=O)O", "D": "CCN(CC)CC", "E": "OC1CCCCC1", "F": "CC(C)O"}
PAIRS = [("A", "B"), ("A", "C"), ("B", "C"), ("C", "D"), ("D", "E"), ("A", "E"), ("B", "F")]
HEADER = "block_id,drug_row,drug_col,conc_r,conc_c,response,conc_r_unit,conc_c_unit,cell_line_name"
# A tiny model and few samples: the test is about the files, not the fit.
TINY = [
    "+experiment=deterministic",
    "model.training.epochs=1",
    "model.predictor.drug_hidden=[8]",
    "model.predictor.merge_dim=4",
    "model.predictor.merge_rank=2",
    "model.predictor.head_hidden=[4]",
    "num_samples=4",
    "fit_progress=false",
]


@pytest.fixture(autouse=True)
def isolated():
    """The root logger and Hydra's global state restored after each run."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    GlobalHydra.instance().clear()


def plate_file(path: Path, pairs=PAIRS, drop_line: int | None = None, edit=None) -> Path:
    """One 4 x 4 block per pair: LL.4 single drugs, Bliss-like combinations with a pair-specific bonus."""
    rng = np.random.default_rng(0)
    doses = [0.0, 0.1, 1.0, 10.0]
    lines = [HEADER]
    for k, (a, b) in enumerate(pairs):
        for i, x in enumerate(doses):
            for j, y in enumerate(doses):
                fa, fb = 80 * x / (x + 1.0), 60 * y / (y + 0.5)
                value = fa + fb - fa * fb / 100 + (4 * k if i and j else 0) + rng.normal(0, 2)
                lines.append(f"{k + 1},{a},{b},{x},{y},{value:.4f},uM,uM,MCF7")
    if drop_line is not None:
        del lines[drop_line]
    if edit is not None:
        lines = edit(lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def run(overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    argv = ["recover-synergy", *overrides, f"hydra.run.dir={tmp_path / 'run'}"]
    old = sys.argv
    sys.argv = argv
    try:
        synergy_cli.main()
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    finally:
        sys.argv = old
    return code, capsys.readouterr().err


def test_blocks_in_scores_tables_and_plots_out(tmp_path: Path, capsys) -> None:
    pairs = PAIRS[:2]
    plates = plate_file(tmp_path / "plates.csv", pairs=pairs)
    out = tmp_path / "round1" / "scores.csv"
    code, err = run([f"plates={plates}", f"out={out}"], tmp_path, capsys)
    assert code == 0, err
    table = pd.read_csv(out)
    assert tuple(table.columns) == MEASUREMENT_COLUMNS and len(table) == len(pairs)
    assert table["synergy_bliss"].is_monotonic_increasing  # the bonus grows with the block number
    per_dose = pd.read_csv(tmp_path / "round1" / "scores.per_dose.csv")
    assert len(per_dose) == 16 * len(pairs) and per_dose["conc_row_unit"].eq("uM").all()
    fits = pd.read_csv(tmp_path / "round1" / "scores.fits.csv")
    assert len(fits) == 2 * len(pairs) and fits["model"].notna().all()
    summary = (tmp_path / "round1" / "scores.summary.txt").read_text()
    assert "ZIP" in summary and "Loewe" in summary and len(summary.splitlines()) == 1 + len(pairs)
    plots = sorted(p.name for p in (tmp_path / "round1" / "scores_plots").iterdir())
    assert plots == [f"block_{k}_{kind}.png" for k in (1, 2) for kind in ("response", "synergy")]
    assert "blocks scored" in (tmp_path / "run" / "synergy.log").read_text()


def test_recover_synergy_then_recover_recommend_from_the_block_file(tmp_path: Path, capsys) -> None:
    plates = plate_file(tmp_path / "plates.csv")
    scores = tmp_path / "round0_scores.csv"
    code, err = run([f"plates={plates}", f"out={scores}", "plots=false"], tmp_path, capsys)
    assert code == 0, err
    drugs = tmp_path / "drugs.csv"
    drugs.write_text("drug_id,smiles\n" + "".join(f"{k},{v}\n" for k, v in DRUGS.items()))
    plate = tmp_path / "plate1.csv"
    from recover_pyro.cli import recommend as recommend_cli

    argv = [
        "recover-recommend",
        f"measured=[{scores}]",
        f"smiles={drugs}",
        "cell_lines=[MCF7]",
        "score=synergy_zip",
        f"out={plate}",
        *TINY,
        "acquisition.q=3",
        f"hydra.run.dir={tmp_path / 'run_recommend'}",
    ]
    old = sys.argv
    sys.argv = argv
    try:
        recommend_cli.main()
    finally:
        sys.argv = old
    proposed = pd.read_csv(plate)
    assert len(proposed) == 3
    tried = {frozenset(p) for p in PAIRS}
    assert all(frozenset((a, b)) not in tried for a, b in zip(proposed["drug_a"], proposed["drug_b"]))


def test_existing_output_is_kept_unless_overwrite(tmp_path: Path, capsys) -> None:
    plates = plate_file(tmp_path / "plates.csv", pairs=PAIRS[:1])
    out = tmp_path / "scores.csv"
    out.write_text("keep me\n")
    code, err = run([f"plates={plates}", f"out={out}", "plots=false"], tmp_path, capsys)
    assert code == 2 and "OutputExistsError" in err and out.read_text() == "keep me\n"
    code, err = run([f"plates={plates}", f"out={out}", "plots=false", "overwrite=true"], tmp_path, capsys)
    assert code == 0 and out.read_text().startswith("drug_a,")


def _replace(column: int, old: str, new: str, row: int = 5):
    def edit(lines: list[str]) -> list[str]:
        fields = lines[row].split(",")
        assert fields[column] == old, fields
        fields[column] = new
        lines[row] = ",".join(fields)
        return lines

    return edit


# kind of bad block -> (how the file is spoiled, the error class printed)
BAD = {
    "missing_single_drug": (
        lambda lines: [line for line in lines if line.split(",")[3] != "0.0"],
        "MissingSingleDrugError",
    ),
    "not_a_grid": (lambda lines: lines[:-1], "IncompleteDoseGridError"),
    "mixed_units": (_replace(6, "uM", "nM"), "MixedUnitsError"),
    "negative_dose": (_replace(3, "0.0", "-1.0", row=1), "NegativeDoseError"),
    "non_numeric_response": (
        lambda lines: [
            *lines[:5],
            ",".join([*lines[5].split(",")[:5], "#DIV/0!", *lines[5].split(",")[6:]]),
            *lines[6:],
        ],
        "NonNumericResponseError",
    ),
    "non_numeric_dose": (_replace(4, "0.1", "0.1 uM", row=2), "NonNumericDoseError"),
    "two_pairs_in_one_block": (_replace(2, "B", "C", row=3), "MixedBlockError"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_bad_block_is_one_named_error_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture, case: str
) -> None:
    edit, name = BAD[case]
    plates = plate_file(tmp_path / "plates.csv", pairs=PAIRS[:2], edit=edit)
    out = tmp_path / "scores.csv"
    code, err = run([f"plates={plates}", f"out={out}", "plots=false"], tmp_path, capsys)
    assert code == 2, err
    assert err.startswith(f"Error: {name}: block ") and "Traceback" not in err and str(plates) in err
    assert not out.exists()


def test_skip_scores_the_good_blocks_and_reports_the_bad_one(tmp_path: Path, capsys) -> None:
    plates = plate_file(tmp_path / "plates.csv", pairs=PAIRS[:3], edit=lambda lines: lines[:-1])
    out = tmp_path / "scores.csv"
    code, err = run([f"plates={plates}", f"out={out}", "plots=false", "on_bad_block=skip"], tmp_path, capsys)
    assert code == 0, err
    assert pd.read_csv(out)["block_id"].tolist() == [1, 2]
    summary = (tmp_path / "scores.summary.txt").read_text()
    assert "not scored (IncompleteDoseGridError)" in summary


def test_bad_options_are_config_errors(tmp_path: Path, capsys) -> None:
    plates = plate_file(tmp_path / "plates.csv", pairs=PAIRS[:1])
    code, err = run([f"plates={plates}", "convention=sf4", "plots=false"], tmp_path, capsys)
    assert code == 2 and "ConfigValueError: option convention" in err
    code, err = run([f"plates={tmp_path / 'nothing.csv'}"], tmp_path, capsys)
    assert code == 2 and "option plates" in err


def test_recover_recommend_reads_raw_block_files_as_their_scores(tmp_path: Path, capsys) -> None:
    """A raw block file in measured=[...] is scored on the way in: the same plate as its recover-synergy output."""
    from recover_pyro.cli import recommend as recommend_cli
    from recover_pyro.wetlab import load_measured, measured_format, tried_pairs

    plates = plate_file(tmp_path / "plates.csv")
    scores = tmp_path / "scores.csv"
    code, err = run([f"plates={plates}", f"out={scores}", "plots=false"], tmp_path, capsys)
    assert code == 0, err
    drugs = tmp_path / "drugs.csv"
    drugs.write_text("drug_id,smiles\n" + "".join(f"{k},{v}\n" for k, v in DRUGS.items()))
    assert (measured_format(plates), measured_format(scores)) == ("blocks", "csv")
    raw = load_measured(plates, drugs, "synergy_zip").experiments.sort_values(["drug_a", "drug_b"])
    scored = load_measured(scores, drugs, "synergy_zip").experiments.sort_values(["drug_a", "drug_b"])
    np.testing.assert_allclose(raw["synergy_zip"].to_numpy(), scored["synergy_zip"].to_numpy(), atol=1e-9)
    assert len(tried_pairs(plates)) == len(PAIRS)

    def plate(measured: Path, name: str) -> pd.DataFrame:
        argv = ["recover-recommend", f"measured=[{measured}]", f"smiles={drugs}", "cell_lines=[MCF7]",
                "score=synergy_zip", f"out={tmp_path / name}", *TINY, "acquisition.q=3",
                f"hydra.run.dir={tmp_path / ('run_' + name)}"]  # fmt: skip
        old = sys.argv
        sys.argv = argv
        try:
            recommend_cli.main()
        finally:
            sys.argv = old
        return pd.read_csv(tmp_path / name)

    pd.testing.assert_frame_equal(plate(plates, "from_blocks.csv"), plate(scores, "from_scores.csv"))
