"""scripts/paired_accuracy.py: test seeds read from the overrides, pairing by (test set, seed), t intervals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from script_loader import load_script
from recover_pyro.records.manifest import read_manifest


@pytest.fixture(scope="module")
def script():
    return load_script("paired_accuracy")


def runs(experiment: str, test_seed: int, spearman: list[float]) -> pd.DataFrame:
    n = len(spearman)
    overrides = "" if test_seed == 0 else f"split.test_seed={test_seed}"
    return pd.DataFrame(
        {"experiment": experiment, "seed": range(n), "spearman": spearman, "nll": [5.0] * n, "r2": [0.1] * n}
        | {"coverage_90": [0.9] * n, "overrides": [overrides] * n}
    )


def test_pairs_by_test_set_and_seed_and_keeps_the_asked_seeds(script, tmp_path: Path) -> None:
    pd.concat([runs("a", 0, [0.3, 0.4, 0.9]), runs("b", 0, [0.2, 0.2, 0.0])]).to_csv(tmp_path / "t0_runs.csv")
    pd.concat([runs("a", 3, [0.5, 0.6]), runs("b", 3, [0.1, 0.4])]).to_csv(tmp_path / "t3_runs.csv")
    table, diff = script.main(
        ["--runs", str(tmp_path / "t0_runs.csv"), "--runs-glob", str(tmp_path / "t3_*"), "--seeds", "0", "1"]
        + ["--a", "a", "--b", "b", "--out", str(tmp_path / "s")]
    )
    assert sorted(zip(diff["test_seed"], diff["seed"])) == [(0, 0), (0, 1), (3, 0), (3, 1)]  # seed 2 dropped
    assert diff["spearman"].to_numpy() == pytest.approx([0.1, 0.2, 0.4, 0.2])
    row = table.set_index("experiment").loc["a"]
    assert row["n_runs"] == 4 and row["n_test_sets"] == 2 and row["spearman_mean"] == pytest.approx(0.45)
    mean, low, high = script.interval(diff["spearman"].to_numpy())
    half = 3.182446305284263 * np.std([0.1, 0.2, 0.4, 0.2], ddof=1) / 2
    assert (mean, low, high) == pytest.approx((0.225, 0.225 - half, 0.225 + half))
    assert (tmp_path / "s_paired.csv").is_file() and script.test_seed_of(float("nan")) == 0
    manifest = read_manifest(tmp_path)
    assert manifest.outputs == ["s.csv", "s_paired.csv"] and "--a a --b b" in manifest.command
    assert manifest.extra["inputs"] == [str(tmp_path / "t0_runs.csv"), str(tmp_path / "t3_runs.csv")]


def test_calibrated_range_is_the_binomial_central_95_percent(script) -> None:
    # 148 experiments (ALMANAC MCF7's pair test set): a calibrated model covers 126-140 of them 95 % of the time.
    assert script.calibrated_range(148) == pytest.approx((126 / 148, 140 / 148))
    low, high = script.calibrated_range(5000)
    assert 0.89 < low < 0.9 < high < 0.91


def test_coverage_range_over_test_sets_and_plot(script, tmp_path: Path) -> None:
    parts = [runs("a", 0, [0.3, 0.4]), runs("a", 2, [0.3, 0.4]), runs("b", 0, [0.2, 0.2])]
    parts[0]["coverage_90"] = [0.80, 0.84]  # test set 0: mean 0.82
    parts[1]["coverage_90"] = [0.95, 0.93]  # test set 2: mean 0.94
    frame = pd.concat(parts).assign(n_test=148)
    frame.to_csv(tmp_path / "x_runs.csv")
    table, _ = script.main(
        ["--runs", str(tmp_path / "x_runs.csv"), "--a", "a", "--b", "b", "--out", str(tmp_path / "s"), "--plot"]
    )
    row = table.set_index("experiment").loc["a"]
    assert (row["coverage_90_set_min"], row["coverage_90_set_max"]) == pytest.approx((0.82, 0.94))
    assert row["coverage_90_mean"] == pytest.approx(0.88)
    assert (tmp_path / "s_coverage.png").stat().st_size > 1000
    ax = script.coverage_figure(script.load_runs([tmp_path / "x_runs.csv"], [0, 1])).axes[0]
    dots, mean_bar = ax.lines[1], ax.lines[2]  # lines[0]: the nominal 0.9 line
    assert sorted(dots.get_ydata()) == pytest.approx([0.82, 0.94])
    assert list(mean_bar.get_ydata()) == pytest.approx([0.88, 0.88])
    band = ax.patches[0]  # the calibrated range at 148 experiments
    assert (band.get_y(), band.get_y() + band.get_height()) == pytest.approx(script.calibrated_range(148))
