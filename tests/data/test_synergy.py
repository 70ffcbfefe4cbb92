"""Synergy scores against SynergyFinder: the reference blocks of ../shared/data/dose_response (block means of
3.7.3 and 2.3.5, per-dose values of 3.7.3, the vignettes' published values), plus the pieces on their own:
the minimiser, the curve fits, the formulas on a hand-made block, and the block file -> Screen reader."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recover_pyro import errors
from recover_pyro.data import synergy
from recover_pyro.data.blocks import read_blocks
from recover_pyro.data.loaders import load_csv
from recover_pyro.data.synergy import (
    MEASUREMENT_COLUMNS,
    load_block_measurements,
    score_blocks,
    score_column,
    varmetric,
)
from recover_pyro.data.synergy.curves import fit_curves, ll4
from recover_pyro.data.synergy.scores import r_pow

FILES = {
    "synergyfinder_mathews.csv": "viability",
    "synergyfinder_oneil.csv": "inhibition",
    "tidycomb_template.csv": "inhibition",
}
CONVENTIONS = {"synergyfinder3": "synergyfinder3", "drugcomb": "synergyfinder2"}


@pytest.fixture(scope="module")
def scored(data_root: Path) -> dict[tuple[str, str], synergy.SynergyResult]:
    """Every reference file under both conventions (scored once for the module)."""
    logging.disable(logging.WARNING)
    try:
        return {
            (name, conv): score_blocks(data_root / "dose_response" / name, convention=conv, response=kind, unit=None)
            for name, kind in FILES.items()
            for conv in CONVENTIONS
        }
    finally:
        logging.disable(logging.NOTSET)


@pytest.fixture(scope="module")
def reference(data_root: Path) -> pd.DataFrame:
    return pd.read_csv(data_root / "dose_response" / "reference_block_scores.csv")


def _compare(scored: dict, reference: pd.DataFrame, convention: str) -> pd.DataFrame:
    """Our block means minus the reference's, one row per reference block."""
    rows = []
    for _, ref in reference[reference.convention == CONVENTIONS[convention]].iterrows():
        ours = scored[(ref.file, convention)].per_block().set_index("block_id").loc[str(ref.block_id)]
        rows.append(
            {"block": f"{ref.file}:{ref.block_id}", **{s: ours[f"synergy_{s}"] - ref[s] for s in synergy.SCORES}}
        )
    return pd.DataFrame(rows).set_index("block")


def test_bliss_and_hsa_equal_the_reference_to_1e6_under_both_conventions(scored, reference) -> None:
    for convention in CONVENTIONS:
        diff = _compare(scored, reference, convention)
        assert diff[["bliss", "hsa"]].abs().max().max() <= 1e-6, convention


def test_zip_and_loewe_within_0_1_of_synergyfinder_3_7_3_on_every_block(scored, reference) -> None:
    diff = _compare(scored, reference, "synergyfinder3")
    assert len(diff) == 8
    assert diff[["zip", "loewe"]].abs().max().max() <= 0.1, diff
    # in fact all but one ZIP (a degenerate curve of O'Neil's block 2) agree to the reference's 6 decimals
    assert (diff[["zip", "loewe"]].abs() <= 1e-6).sum().sum() >= 15


def test_vignette_values_19_57_and_minus_2_98(scored) -> None:
    table = scored[("synergyfinder_mathews.csv", "synergyfinder3")].per_block()
    assert table["synergy_zip"].round(2).tolist() == [19.57, -2.98]


def test_tidycomb_published_zips_under_convention_drugcomb(scored) -> None:
    table = scored[("tidycomb_template.csv", "drugcomb")].per_block().set_index("block_id")
    published = {"1": 2.951, "2": 8.969, "7641": 10.088, "64716": 16.331}
    for block, value in published.items():
        assert table.loc[block, "synergy_zip"] == pytest.approx(value, abs=0.05)


def test_drugcomb_zip_equals_synergyfinder_2_3_5_and_loewe_agrees_on_seven_of_eight(scored, reference) -> None:
    diff = _compare(scored, reference, "drugcomb")
    assert diff["zip"].abs().max() <= 1e-6
    assert (diff["loewe"].abs() <= 1e-6).sum() >= 7


def test_per_dose_at_least_75_percent_within_0_01_of_3_7_3(scored, data_root: Path) -> None:
    per = pd.read_csv(data_root / "dose_response" / "reference_per_dose_synergyfinder3.csv")
    close = {s: [] for s in synergy.SCORES}
    for (name, block), ref in per.groupby(["file", "block_id"]):
        ours = scored[(name, "synergyfinder3")].per_dose()
        ours = ours[ours.block_id == str(block)]
        for _, well in ref[(ref.conc1 > 0) & (ref.conc2 > 0)].iterrows():
            # the reference rounds doses to 6 decimals: match the nearest well
            k = np.argmin(np.abs(ours.conc_row.to_numpy() - well.conc1) + np.abs(ours.conc_col.to_numpy() - well.conc2))
            for s in close:
                close[s].append(abs(ours.iloc[k][f"synergy_{s}"] - well[f"{s}_synergy"]) <= 0.01)
    fractions = {s: float(np.mean(v)) for s, v in close.items()}
    assert len(close["zip"]) == 155
    assert min(fractions.values()) >= 0.75, fractions
    assert fractions["bliss"] == fractions["hsa"] == fractions["loewe"] == 1.0 and fractions["zip"] >= 0.97


def test_the_tables_have_the_documented_columns(scored) -> None:
    result = scored[("synergyfinder_oneil.csv", "synergyfinder3")]
    table = result.per_block()
    assert tuple(table.columns) == MEASUREMENT_COLUMNS and table.columns[-1] == "block_id"
    assert table["n_replicates"].tolist() == [4, 4] and table["cell_line"].tolist() == ["OCUBM", "NCIH2122"]
    per_dose = result.per_dose()
    assert len(per_dose) == 50 and {"zip_fit", "loewe_ref", "synergy_bliss", "conc_row_unit"} <= set(per_dose)
    single = per_dose[(per_dose.conc_row == 0) | (per_dose.conc_col == 0)]
    assert (single[[f"synergy_{s}" for s in synergy.SCORES]] == 0).all().all()
    fits = result.fits()
    assert len(fits) == 4 and set(fits["model"]) <= {"LL.4", "L.4"} and (fits["iterations"] > 0).all()
    assert "ZIP" in result.summary().columns


def test_hand_made_block_bliss_and_hsa() -> None:
    block = _block([[0.0, 20.0, 40.0], [10.0, 50.0, 60.0], [30.0, 70.0, 90.0]])
    (result,) = synergy.scores.score_all([block])
    # Bliss at (1, 1): 100 (1 - 0.9 * 0.8) = 28 -> 50 - 28 = 22; HSA: 50 - max(10, 20) = 30
    assert result.surfaces["bliss"][1, 1] == pytest.approx(22.0)
    assert result.surfaces["hsa"][1, 1] == pytest.approx(30.0)
    assert result.mean("hsa") == pytest.approx(np.mean([50 - 20, 60 - 40, 70 - 30, 90 - 40]))


def _block(response: list[list[float]]):
    from recover_pyro.data.blocks import DoseResponseBlock

    y = np.array(response)
    m, n = y.shape
    return DoseResponseBlock(
        block_id="x",
        drug_row="A",
        drug_col="B",
        cell_line="C",
        study="s",
        conc_row=np.array([0.0, 1.0, 10.0][:m]),
        conc_col=np.array([0.0, 2.0, 20.0][:n]),
        unit_row="uM",
        unit_col="uM",
        response=y,
        n_replicates=np.ones((m, n), dtype=int),
        well_order=np.arange(m * n),
        line=2,
        source="made",
    )


def test_curve_fit_recovers_a_noise_free_ll4() -> None:
    dose = np.array([[0.0, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0]])
    resp = ll4(dose, -1.5, 2.0, 85.0, 1.7)
    fits = fit_curves(dose, resp)
    assert fits.model.tolist() == ["LL.4"]
    np.testing.assert_allclose(fits.params[0], [-1.5, 2.0, 85.0, 1.7], rtol=2e-3)
    np.testing.assert_allclose(fits.fitted(dose), resp, atol=0.05)
    fixed = fit_curves(dose, resp, bottom=2.0, top=85.0)
    assert fixed.params[0, 1:3].tolist() == [2.0, 85.0]


def test_lock_step_and_one_at_a_time_minimisation_take_the_same_steps(monkeypatch) -> None:
    rng = np.random.default_rng(1)
    dose = np.tile([0.0, 0.1, 0.3, 1.0, 3.0, 10.0], (12, 1))
    resp = ll4(dose, -1.2, 0.0, 90.0, 1.0) + rng.normal(0, 8, dose.shape)
    monkeypatch.setattr(varmetric, "SEQUENTIAL_BELOW", 0)  # every problem in the vectorised lock step
    batched = fit_curves(dose, resp)
    monkeypatch.setattr(varmetric, "SEQUENTIAL_BELOW", 100)  # every problem on the plain-float path
    alone = fit_curves(dose, resp)
    np.testing.assert_array_equal(batched.params, alone.params)
    np.testing.assert_array_equal(batched.iterations, alone.iterations)


def test_minimise_a_quadratic_bowl() -> None:
    target = np.array([[1.0, -2.0], [3.0, 0.5]])

    def objective(rows: np.ndarray, points: np.ndarray) -> np.ndarray:
        return ((points - target[rows][:, None, :]) ** 2).sum(axis=-1)

    start = np.zeros((2, 2))
    result = varmetric.minimise(objective, start, np.ones((2, 2)), np.ones((2, 2), dtype=bool))
    np.testing.assert_allclose(result.par, target, atol=1e-4)
    assert not result.failed.any()


def test_r_pow_follows_r_for_negative_and_infinite_bases() -> None:
    out = r_pow(np.array([-8.0, -np.inf, 0.0, 4.0, -3.0]), np.array([1 / 3, 0.5, -1.0, 0.5, 2.0]))
    assert np.isnan(out[0]) and np.isnan(out[1]) and out[2] == np.inf and out[3] == 2.0 and out[4] == 9.0


def test_score_column_spellings() -> None:
    assert score_column("ZIP") == score_column("synergy_zip") == "synergy_zip"
    with pytest.raises(ValueError, match="synergy_loewe"):
        score_column("css")
    with pytest.raises(ValueError, match="drugcomb"):
        score_blocks([], convention="synergyfinder4")


def test_block_file_to_screen_and_its_errors(tmp_path: Path, data_root: Path) -> None:
    plates = data_root / "dose_response" / "synergyfinder_oneil.csv"
    drugs = tmp_path / "drugs.csv"
    drugs.write_text("drug_id,smiles\nMK-1775,CCO\nNiraparib,c1ccccc1O\nPaclitaxel,CC(=O)O\n")
    with pytest.raises(errors.UnknownDrugError, match="L-778123") as caught:
        load_block_measurements(plates, drugs, "zip")
    assert caught.value.file == str(plates) and caught.value.row == 102  # block 2 starts at line 102
    drugs.write_text(drugs.read_text() + "L-778123 free base,CCN(CC)CC\n")
    screen = load_block_measurements(plates, drugs, "synergy_zip")
    assert screen.source == str(plates) and len(screen) == 2 and screen.score_columns == ("synergy_zip",)
    # O'Neil's two blocks: SynergyFinder 3.7.3 gives ZIP 35.420827 and -74.785045
    values = sorted(screen.experiments["synergy_zip"])
    assert values == pytest.approx([-74.785045, 35.420827], abs=0.01)


def test_per_block_table_reads_back_with_load_csv(scored, tmp_path: Path) -> None:
    table = scored[("tidycomb_template.csv", "synergyfinder3")].per_block()
    path = tmp_path / "scores.csv"
    table.to_csv(path, index=False)
    drugs = tmp_path / "drugs.csv"
    ids = sorted(set(table.drug_a) | set(table.drug_b))
    drugs.write_text("drug_id,smiles\n" + "".join(f'"{d}",{"C" * (k + 1)}\n' for k, d in enumerate(ids)))
    screen = load_csv(path, drugs, score_columns=["synergy_loewe"])
    assert len(screen) == 7 and screen.experiments["n_replicates"].tolist() == [1] * 7


def test_undefined_score_raises_or_is_dropped(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "plates.csv"
    lines = ["block_id,drug_row,drug_col,conc_r,conc_c,response,cell_line_name"]
    for block, (a, b) in enumerate([("A", "B"), ("A", "C")]):
        for i, x in enumerate([0, 1, 10]):
            for j, y in enumerate([0, 1, 10]):
                lines.append(f"{block},{a},{b},{x},{y},{10 * i + 5 * j + block},MCF7")
    path.write_text("\n".join(lines) + "\n")
    drugs = tmp_path / "drugs.csv"
    drugs.write_text("drug_id,smiles\nA,CCO\nB,CCN\nC,CCC\n")
    real = synergy.BlockScores.mean

    def no_zip_in_block_0(self, score):  # a block whose curves could not be fitted
        return float("nan") if (score == "zip" and self.block.block_id == "0") else real(self, score)

    monkeypatch.setattr(synergy.BlockScores, "mean", no_zip_in_block_0)
    with pytest.raises(errors.InvalidScoreError, match="block 0"):
        load_block_measurements(path, drugs, "zip")
    screen = load_block_measurements(path, drugs, "zip", on_invalid="drop")
    assert len(screen) == 1


def test_reading_then_scoring_a_block_set_and_a_list_agree(data_root: Path) -> None:
    blocks = read_blocks(data_root / "dose_response" / "synergyfinder_mathews.csv", response="viability")
    a = score_blocks(blocks).per_block()
    b = score_blocks(blocks.blocks[:1]).per_block()
    assert a.iloc[0].equals(b.iloc[0])


def test_odd_blocks_give_scores_or_say_why_never_an_exception() -> None:
    """Random small blocks (2 x 2 to 5 x 5, constant rows, all zeros, wild values) under both conventions."""
    from recover_pyro.data.blocks import DoseResponseBlock

    rng = np.random.default_rng(5)
    blocks = []
    for k in range(150):
        m, n = rng.integers(2, 6, 2)
        y = rng.normal(30, 30, (m, n))
        if k % 5 == 1:
            y[:, 0] = 5.0
        elif k % 5 == 2:
            y[:] = 0.0
        elif k % 5 == 3:
            y = rng.uniform(-200, 300, (m, n))
        rows = np.concatenate([[0], np.sort(rng.uniform(0.001, 100, m - 1))])
        cols = np.concatenate([[0], np.sort(rng.uniform(0.001, 100, n - 1))])
        ones = np.ones((m, n), dtype=int)
        blocks.append(
            DoseResponseBlock(str(k), "A", "B", "C", "s", rows, cols, "uM", "uM", y, ones, np.arange(m * n), 2, "")
        )
    for convention in CONVENTIONS:
        for result in synergy.scores.score_all(blocks, convention):
            for score in synergy.SCORES:
                assert np.isfinite(result.mean(score)) or any(score in note.lower() for note in result.notes)
