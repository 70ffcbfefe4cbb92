"""scripts/benchmark_accuracy.py: summary over seeds and merging the runs of parallel benchmark processes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from script_loader import load_script
from recover_pyro.records.manifest import read_manifest


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmark_accuracy")


def runs(experiment: str, seeds: list[int], r2: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"experiment": experiment, "seed": seeds, "r2": r2, "nll": [1.0] * len(seeds)})


def test_summary_is_mean_and_sample_sd_over_seeds(bench) -> None:
    table = bench.summarize(runs("a", [0, 1, 2], [0.1, 0.2, 0.6])).set_index("experiment")
    assert table.at["a", "n_runs"] == 3
    assert table.at["a", "r2_mean"] == pytest.approx(0.3)
    assert table.at["a", "r2_sd"] == pytest.approx(pd.Series([0.1, 0.2, 0.6]).std(ddof=1))
    assert "| a | 3 | 0.300 ± 0.265 |" in bench.to_markdown(bench.summarize(runs("a", [0, 1, 2], [0.1, 0.2, 0.6])))


def test_merge_command_combines_parallel_runs_and_keeps_the_last_duplicate(bench, tmp_path: Path) -> None:
    runs("a", [0, 1], [0.1, 0.2]).to_csv(tmp_path / "x_runs.csv", index=False)
    runs("b", [0], [0.5]).to_csv(tmp_path / "part1_runs.csv", index=False)
    runs("a", [1, 2], [0.3, 0.4]).to_csv(tmp_path / "part2_runs.csv", index=False)  # a seed 1 rerun
    table = bench.main(
        ["--merge", str(tmp_path / "part1_runs.csv"), str(tmp_path / "part2_runs.csv"), "--out", str(tmp_path / "x")]
    ).set_index("experiment")
    merged = pd.read_csv(tmp_path / "x_runs.csv")
    assert sorted(zip(merged["experiment"], merged["seed"])) == [("a", 0), ("a", 1), ("a", 2), ("b", 0)]
    assert table.at["a", "r2_mean"] == pytest.approx((0.1 + 0.3 + 0.4) / 3)
    assert table.at["b", "n_runs"] == 1
    assert pd.read_csv(tmp_path / "x.csv").set_index("experiment").at["a", "n_runs"] == 3
    # The folder records how its tables were made.
    manifest = read_manifest(tmp_path)
    assert manifest.status == "finished" and "--merge" in manifest.command and manifest.command.startswith("python ")
    assert {"x.csv", "x_runs.csv"} <= set(manifest.outputs) and manifest.extra["out"] == "x"


def test_rescore_redoes_rows_that_lack_a_metric_added_since(bench, tmp_path: Path) -> None:
    """``--rescore`` redoes the rows written without ``noise_df`` or ``sd_error_spearman`` (here gbt, which has no
    checkpoint and is re-run)
    and keeps the others; without ``--rescore`` finished rows are skipped."""
    stale = pd.concat([runs("gbt", [0], [0.123]), runs("other", [0], [0.5])])  # other: not asked for, kept
    stale.to_csv(tmp_path / "x_runs.csv", index=False)
    args = ["--data", "synthetic", "--experiments", "gbt", "--seeds", "0", "--out", str(tmp_path / "x")]
    bench.main(args)
    assert pd.read_csv(tmp_path / "x_runs.csv")["r2"].tolist() == [0.123, 0.5]  # finished: skipped
    bench.main([*args, "--rescore"])
    redone = pd.read_csv(tmp_path / "x_runs.csv").set_index("experiment")
    assert sorted(redone.index) == ["gbt", "other"] and redone.at["other", "r2"] == 0.5
    assert redone.at["gbt", "r2"] != 0.123 and redone.at["gbt", "noise_df"] > 2
    assert redone.at["gbt", "sd_error_spearman"] == 0.0  # a point prediction's sd ranks nothing
    redone = redone.reset_index()
    bench.main([*args, "--rescore"])  # nothing stale any more
    assert pd.read_csv(tmp_path / "x_runs.csv").equals(redone)
    # A row written before sd_error_spearman existed (noise_df present) is redone too.
    old = redone.set_index("experiment")
    old.loc["gbt", ["r2", "sd_error_spearman"]] = [0.123, None]
    old.reset_index().to_csv(tmp_path / "x_runs.csv", index=False)
    bench.main([*args, "--rescore"])
    again = pd.read_csv(tmp_path / "x_runs.csv").set_index("experiment")
    assert again.at["gbt", "r2"] != 0.123 and again.at["gbt", "sd_error_spearman"] == 0.0
    assert again.at["other", "r2"] == 0.5
    # A requested row that has every metric is kept as it is (not redone).
    kept = again.copy()
    kept.loc["gbt", "r2"] = 0.321
    kept.reset_index().to_csv(tmp_path / "x_runs.csv", index=False)
    bench.main([*args, "--rescore"])
    assert pd.read_csv(tmp_path / "x_runs.csv").set_index("experiment").at["gbt", "r2"] == 0.321


def test_rescore_refuses_rows_made_with_other_overrides(bench, tmp_path: Path) -> None:
    """A fit is re-scored on its own split: a stale row made with split.test_seed=3 is not redone without it."""
    runs("gbt", [0], [0.1]).assign(overrides="split.test_seed=3").to_csv(tmp_path / "x_runs.csv", index=False)
    args = ["--data", "synthetic", "--experiments", "gbt", "--seeds", "0", "--out", str(tmp_path / "x"), "--rescore"]
    with pytest.raises(SystemExit):
        bench.main(args)
    assert pd.read_csv(tmp_path / "x_runs.csv")["r2"].tolist() == [0.1]
    assert not (tmp_path / "manifest.json").exists()  # refused before anything ran: nothing to record
