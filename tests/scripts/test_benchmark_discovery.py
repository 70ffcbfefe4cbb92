"""scripts/benchmark_discovery.py: aggregation over seeds, enrichment, and the pretraining-cache key."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from script_loader import load_script
from recover_pyro.records.manifest import read_manifest


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmark_discovery")


def campaign(experiment: str, seed: int, recall: list[float], pool: int = 100) -> pd.DataFrame:
    n = np.arange(1, len(recall) + 1) * 10
    return pd.DataFrame(
        {
            "experiment": experiment,
            "seed": seed,
            "round": np.arange(len(recall)),
            "n_measured": n,
            "fraction_explored": n / pool,
            "recall_top1pct": recall,
            "recall_top5pct": recall,
            "train_s": 1.0,
            "score_s": 0.1,
            "acquire_s": 0.01,
        }
    )


def test_aggregate_means_over_seeds_and_enrichment(bench):
    runs = pd.concat(
        [
            campaign("a", 0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0]),
            campaign("a", 1, [0.0, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
            campaign("random", 0, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]),
        ]
    )
    per_round, final = bench.aggregate(runs, mid_round=5)
    a = final.set_index("experiment").loc["a"]
    assert a["n_seeds"] == 2 and a["last_round"] == 6
    assert a["recall_top1pct_r5_mean"] == pytest.approx(0.9) and a["recall_top1pct_final_mean"] == pytest.approx(1.0)
    # 10 % of a pool of 100 = 10 experiments = round 0; 5 % lies before the first point of the curve.
    assert a["enrich_10pct_mean"] == pytest.approx(0.0) and np.isnan(a["enrich_5pct_mean"])
    rnd = final.set_index("experiment").loc["random"]
    assert rnd["enrich_10pct_mean"] == pytest.approx(1.0)  # recall = fraction explored
    assert a["total_s_per_round"] == pytest.approx(1.11)
    assert per_round.query("experiment == 'a' and round == 2")["recall_top1pct_mean"].item() == pytest.approx(0.3)


def test_pretrain_key_ignores_the_acquisition_but_not_model_or_seed(bench):
    pre = ["inference.epochs=3"]
    key = bench.pretrain_key
    ucb = bench.compose_config("mcf7", "normal_ucb", 0, [], [], pre)
    assert key(ucb) == key(bench.compose_config("mcf7", "normal_greedy", 0, [], [], pre))
    assert key(ucb) != key(bench.compose_config("mcf7", "normal_ucb", 1, [], [], pre))
    assert key(ucb) != key(bench.compose_config("mcf7", "laplace_ucb", 0, [], [], pre))
    assert key(ucb) != key(bench.compose_config("mcf7", "normal_ucb", 0, [], [], ["inference.epochs=4"]))
    # round-fit settings overridden by the pretraining fit's own do not matter
    assert key(ucb) == key(bench.compose_config("mcf7", "normal_ucb", 0, [], ["inference.epochs=100"], pre))
    # a fit on the cell lines outside one pool holds another pool's experiments: never shared across pools
    other_pool = bench.compose_config("mcf7", "normal_ucb", 0, ["campaign.pool_cell_lines=[HCC2998]"], [], pre)
    assert key(ucb) != key(other_pool)


def test_a_killed_campaign_resumes_from_its_run_folder(bench, data_root: Path, tmp_path: Path) -> None:
    """Campaigns keep their checkpoint in ``--runs-dir``: rerunning continues after the last finished round."""
    tiny = [f"data_root={data_root}", "campaign.n_initial=10", "acquisition.q=5", "num_samples=4", "inference.epochs=1"]
    cache, run_dir = bench.ScreenCache(), tmp_path / "run"

    def run(rounds: int) -> pd.DataFrame:
        return bench.run_one(
            "mcf7",
            "normal_ucb",
            0,
            [*tiny, f"campaign.n_rounds={rounds}"],
            [],
            cache,
            tmp_path / f"rounds{rounds}.csv",
            [],
            tmp_path / "cache",
            run_dir,
        )

    first = run(1)
    assert (run_dir / "checkpoint.pt").is_file() and first["n_measured"].tolist() == [10, 15]
    # The campaign's rounds.json is kept beside its rows (its run folder lives outside the repository).
    kept = json.loads((tmp_path / "rounds1.rounds.json").read_text())
    assert [r["n_measured"] for r in kept["rounds"]] == [10, 15]
    assert kept["fingerprint"]["seed"] == 0 and kept["fingerprint"]["acquisition.q"] == 5  # the whole config
    longer = run(2)  # as if the first run had been killed after round 1 of 2
    assert longer["n_measured"].tolist() == [10, 15, 20]
    pd.testing.assert_frame_equal(longer.iloc[:2], first)  # rounds 0-1 read back, not recomputed


def test_kappa_overrides_reach_every_ucb_preset_and_skip_the_others(bench):
    """A UCB setting applies to every preset whose acquisition is UCB, whatever its name (a pilot once
    compared scale_mixture_ucb_pretrained with itself because only names ending in _ucb got it)."""
    bnn = ["acquisition.kappa=2", "acquisition.kappa_decay=0.8", "inference.epochs=7"]
    for preset in ("normal_ucb", "scale_mixture_ucb_pretrained"):
        cfg = bench.compose_config("mcf7", preset, 0, [], bnn)
        assert (cfg.acquisition.kappa, cfg.acquisition.kappa_decay, cfg.inference.epochs) == (2, 0.8, 7)
    thompson = bench.compose_config("mcf7", "normal_thompson", 0, [], bnn)
    assert "kappa" not in thompson.acquisition and thompson.inference.epochs == 7
    assert bench.is_ucb(bench.compose_config("mcf7", "normal_ucb", 0, [], []).acquisition)
    assert not bench.is_ucb(thompson.acquisition)


def test_aggregate_only_writes_tables_and_a_manifest(bench, tmp_path: Path) -> None:
    runs = tmp_path / "tag" / "runs"
    runs.mkdir(parents=True)
    campaign("a", 0, [0.0, 0.5, 1.0]).to_csv(runs / "a_s0.csv", index=False)
    campaign("a", 1, [0.0, 0.4, 0.8]).to_csv(runs / "a_s1.csv", index=False)
    bench.main(["--tag", "tag", "--results", str(tmp_path), "--aggregate-only"])
    manifest = read_manifest(tmp_path / "tag")
    assert manifest.status == "finished" and "--aggregate-only" in manifest.command
    assert manifest.outputs == ["final.csv", "per_round.csv"] and manifest.description.startswith("discovery")
    with pytest.raises(SystemExit):  # nothing to aggregate: refused before a manifest is written
        bench.main(["--tag", "empty", "--results", str(tmp_path), "--aggregate-only"])
    assert not (tmp_path / "empty").exists()
