"""scripts/small_data_uncertainty.py: a first round's fit scored on the rest of the screen."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from script_loader import load_script
from recover_pyro.records.manifest import read_manifest


@pytest.fixture(scope="module")
def script():
    return load_script("small_data_uncertainty")


def test_fit_on_a_few_pairs_scores_the_rest_and_resumes(script, tmp_path: Path) -> None:
    out = tmp_path / "small"
    args = [
        "--data",
        "synthetic",
        "--measured",
        "40",
        "--experiments",
        "deterministic",
        "--seeds",
        "0",
        "--out",
        str(out),
    ]
    script.main(args)
    runs = pd.read_csv(tmp_path / "small_runs.csv")
    row = runs.iloc[0]
    assert len(runs) == 1 and row.measured == 40 and row.measured_sd > 0
    assert row.sd_ratio == pytest.approx(row.predictive_sd / row.measured_sd)
    assert 0 <= row.coverage_90 <= 1 and -1 <= row.spearman <= 1
    assert read_manifest(tmp_path).outputs == ["small_runs.csv"]
    script.main(args)  # finished: nothing is fitted again
    assert len(pd.read_csv(tmp_path / "small_runs.csv")) == 1


def test_first_round_draws_differ_by_seed_and_never_overlap_the_scored_rest(script) -> None:
    a = script.first_round(100, 20, 0)
    b = script.first_round(100, 20, 1)
    assert len(set(a[:20].tolist())) == 20 and sorted(a.tolist()) == list(range(100))
    assert set(a[:20].tolist()) != set(b[:20].tolist())


def test_on_real_almanac_mcf7_an_empirical_bayes_prior_is_calibrated_after_one_round(script, data_root: Path) -> None:
    """60 measured ALMANAC MCF7 experiments from ../shared/data, the other 3,534 scored, seeds 0-2 (what
    docs/history.md reports): the shipped BNN's predictive is over twice as wide as the scores (issue #24), the
    empirical-Bayes prior gives a sd near the scores' and 90 % intervals that hold ~90 %."""

    def mean_over_seeds(extra: list[str]) -> pd.Series:
        rows = [script.run_one("almanac", None, "normal", seed, 60, extra) for seed in (0, 1, 2)]
        return pd.DataFrame(rows).mean()

    shipped = mean_over_seeds([])
    learned = mean_over_seeds(["prior.empirical_bayes=true"])
    assert shipped.sd_ratio > 2.0 and shipped.coverage_90 > 0.97
    assert learned.sd_ratio < 1.5 and 0.85 <= learned.coverage_90 <= 0.95


def test_on_real_almanac_mcf7_the_gp_identity_preset_is_sane_after_one_round(script, data_root: Path) -> None:
    """Issue #24's small-data target on the same draws: ``normal_gp_identity`` (GP head, exact posterior on the
    warm-started trunk) predicts a sd at most 2x the measured scores' (measured 0.92 over seeds 0-2) with 90 %
    intervals that hold 75-95 % (0.81: slightly narrow, docs/history.md)."""
    rows = pd.DataFrame([script.run_one("almanac", None, "normal_gp_identity", seed, 60, []) for seed in (0, 1, 2)])
    assert rows.sd_ratio.mean() <= 2.0 and 0.75 <= rows.coverage_90.mean() <= 0.95
