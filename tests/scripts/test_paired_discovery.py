"""scripts/paired_discovery.py: recalls after the last round, pairing by (cell line, seed), t intervals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from script_loader import load_script
from recover_pyro.records.manifest import read_manifest


@pytest.fixture(scope="module")
def paired():
    return load_script("paired_discovery")


def write_run(path: Path, top1: float, top5: float) -> None:
    pd.DataFrame(
        {"round": [0, 1], "recall_top1pct": [0.0, top1], "recall_top5pct": [0.0, top5], "train_s": [1.0, 2.0]}
    ).to_csv(path, index=False)


def test_final_recalls_read_the_last_round(paired, tmp_path: Path) -> None:
    write_run(tmp_path / "a_s0.csv", 0.5, 0.25)
    top1, top5, train_s, pool = paired.final_recalls(tmp_path / "a_s0.csv")
    assert (top1, top5, train_s) == (0.5, 0.25, 3.0) and np.isnan(pool["sd_error"])  # not recorded by older campaigns
    frame = pd.read_csv(tmp_path / "a_s0.csv").assign(sd_error_spearman=[np.nan, 0.3], spearman=[0.2, 0.4])
    frame.to_csv(tmp_path / "b_s0.csv")
    pool = paired.final_recalls(tmp_path / "b_s0.csv")[3]
    assert pool["sd_error"] == pytest.approx(0.3)  # round 0 (no model) skipped
    assert pool["pool_spearman"] == pytest.approx(0.3) and np.isnan(pool["pool_r2"])
    assert paired.final_recalls(tmp_path / "missing.csv") is None


def test_t_interval_is_the_student_t_interval_of_the_mean(paired) -> None:
    x = np.array([0.1, -0.2, 0.3, 0.0])
    low, high = paired.t_interval(x)
    half = 3.182446305284263 * x.std(ddof=1) / 2  # t_{0.975, 3} x sd / sqrt(4)
    assert (low, high) == pytest.approx((x.mean() - half, x.mean() + half))
    assert np.isnan(paired.t_interval(np.array([1.0]))[0])


def test_run_folders_from_items_and_a_glob(paired, tmp_path: Path) -> None:
    for cell in ("A498", "KM12"):
        (tmp_path / "tag" / cell / "runs").mkdir(parents=True)
    folders = paired.run_folders(["MCF7=x/runs"], str(tmp_path / "tag" / "*" / "runs"))
    assert folders == {
        "MCF7": [Path("x/runs")],
        "A498": [tmp_path / "tag/A498/runs"],
        "KM12": [tmp_path / "tag/KM12/runs"],
    }
    assert paired.run_folders([], None) == {}
    assert paired.run_folders(["ONEIL=a/runs,b/runs"], None) == {"ONEIL": [Path("a/runs"), Path("b/runs")]}


def test_a_campaign_is_read_from_the_first_folder_that_has_it(paired, tmp_path: Path) -> None:
    old, new = tmp_path / "old" / "runs", tmp_path / "new" / "runs"
    old.mkdir(parents=True)
    new.mkdir(parents=True)
    write_run(old / "x_s0.csv", 0.5, 0.25)  # seeds 0-1 ran first, in another tag
    write_run(new / "x_s0.csv", 0.9, 0.9)
    write_run(new / "x_s3.csv", 0.7, 0.5)
    assert paired.find_run([old, new], "x_s0.csv") == old / "x_s0.csv"
    assert paired.find_run([old, new], "x_s3.csv") == new / "x_s3.csv"
    assert paired.final_recalls(paired.find_run([old, new], "x_s4.csv")) is None


def test_plot_paired_draws_a_png(paired, tmp_path: Path) -> None:
    table = pd.DataFrame(
        {"cell_line": ["MCF7", "MCF7", "KM12", "KM12"], "d_top1": [0.1, -0.1, 0.2, 0.0], "d_top5": [0.0, 0.1, 0.1, 0.0]}
    )
    path = paired.plot_paired(table, "a", "b", tmp_path / "p.png")
    assert path.stat().st_size > 1000
    top1 = paired.paired_figure(table, "a", "b").axes[0]
    mcf7_dots, mcf7_mean = top1.lines[0], top1.lines[1]
    assert list(mcf7_dots.get_ydata()) == pytest.approx([0.1, -0.1]) and list(mcf7_mean.get_ydata()) == [0.0, 0.0]
    # the "all" marker: mean 0.05 of the four pairs, at x = number of cell lines
    marker = next(line for line in top1.lines if list(line.get_xdata()) == [2])
    assert list(marker.get_ydata()) == pytest.approx([0.05])


def test_main_pairs_pool_metrics_where_both_campaigns_recorded_them(paired, tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    for seed, (a1, b1) in enumerate([(0.6, 0.5), (0.7, 0.5), (0.8, 0.4)]):
        write_run(runs / f"a_s{seed}.csv", a1, 0.3)
        write_run(runs / f"b_s{seed}.csv", b1, 0.2 + 0.05 * seed)
        if seed > 0:  # seed 0 ran before campaigns recorded pool metrics
            for name, spearman in (("a", 0.4), ("b", 0.3 - 0.1 * seed)):
                frame = pd.read_csv(runs / f"{name}_s{seed}.csv").assign(spearman=[np.nan, spearman])
                frame.to_csv(runs / f"{name}_s{seed}.csv", index=False)
    table = paired.main(["--runs", f"X={runs}", "--a", "a", "--b", "b", "--seeds", "0", "1", "2"])
    assert not (runs / "manifest.json").exists()  # no --out: prints only, no result folder
    assert table["d_top1"].to_numpy() == pytest.approx([0.1, 0.2, 0.4])
    assert np.isnan(table["d_pool_spearman"].iloc[0]) and table["d_pool_spearman"].iloc[1:].to_numpy() == pytest.approx(
        [0.2, 0.3]
    )
    out = capsys.readouterr().out
    assert "d_pool_spearman: mean +0.250; 95 % interval over 2 pairs" in out and "d_sd_error:" not in out
    paired.main(["--runs", f"X={runs}", "--a", "a", "--b", "b", "--out", str(tmp_path / "out" / "paired.csv")])
    manifest = read_manifest(tmp_path / "out")
    assert manifest.outputs == ["paired.csv"] and manifest.status == "finished"
