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
