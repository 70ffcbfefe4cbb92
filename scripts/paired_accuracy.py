"""Accuracy and calibration over several test sets, and the paired difference between two models.

    python scripts/paired_accuracy.py --runs benchmarks/results/accuracy/almanac_mcf7_random_runs.csv \\
        --runs-glob 'benchmarks/results/accuracy/test_sets/almanac_mcf7_random_test_seed*_runs.csv' \\
        --seeds 0 1 --a normal --b recover_ensemble --out benchmarks/results/accuracy/test_sets/summary

Reads ``<out>_runs.csv`` files of ``scripts/benchmark_accuracy.py`` made with different ``split.test_seed``
(the test seed is read from each run's ``overrides``; none means 0) and keeps the given training seeds. A
single test set of a small screen (148 experiments for ALMANAC MCF7's pair split) decides little: its coverage
has a sampling sd of ~0.025 and every model is scored on the same draw, so a hard test set moves all models
together. Writes ``<out>.csv`` (per model: mean and standard error over the (test set, seed) runs) and
``<out>_paired.csv`` (``a - b`` per (test set, seed) for Spearman, NLL, r2 and 90 % coverage) and prints both
with Student-t 95 % intervals of the mean paired difference: over all pairs, and over the test-set means (the
conservative one: the seeds of one test set share it).
"""

from __future__ import annotations

import argparse
import glob
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from recover_pyro.metrics import t_interval

METRICS = ["r2", "spearman", "nll", "crps", "coverage_90", "coverage_50", "epistemic_sd", "aleatoric_sd"]
PAIRED = ["spearman", "nll", "r2", "coverage_90"]


def test_seed_of(overrides: object) -> int:
    """``split.test_seed=<k>`` in a run's ``overrides`` (0, the split's default, when absent)."""
    found = re.search(r"split\.test_seed=(\d+)", overrides if isinstance(overrides, str) else "")
    return int(found.group(1)) if found else 0


def load_runs(paths: Sequence[Path], seeds: Sequence[int]) -> pd.DataFrame:
    """Every run of ``paths`` at the training ``seeds``, with a ``test_seed`` column; one row per
    (experiment, test seed, seed)."""
    runs = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    runs["test_seed"] = runs["overrides"].map(test_seed_of) if "overrides" in runs else 0
    runs = runs[runs["seed"].isin(list(seeds))]
    return runs.drop_duplicates(subset=["experiment", "test_seed", "seed"], keep="last").reset_index(drop=True)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per experiment: number of runs and test sets, ``<metric>_mean`` and ``<metric>_sem`` over runs."""
    grouped = runs.groupby("experiment", sort=False)
    table = pd.DataFrame({"n_runs": grouped.size(), "n_test_sets": grouped["test_seed"].nunique()})
    for metric in [m for m in METRICS if m in runs]:
        table[f"{metric}_mean"] = grouped[metric].mean()
        table[f"{metric}_sem"] = grouped[metric].sem()
    return table.reset_index()


def paired(runs: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """``a - b`` per (test seed, seed) present for both models."""
    key = ["test_seed", "seed"]
    left = runs[runs["experiment"] == a].set_index(key)[PAIRED]
    right = runs[runs["experiment"] == b].set_index(key)[PAIRED]
    both = left.index.intersection(right.index)
    return (left.loc[both] - right.loc[both]).reset_index()


def interval(x: np.ndarray) -> tuple[float, float, float]:
    """Mean and Student-t 95 % interval of the mean (NaN bounds for fewer than 2 values, the value itself for
    constant ones)."""
    if len(x) >= 2 and np.all(x == x[0]):
        return float(x[0]), float(x[0]), float(x[0])
    return (float(np.mean(x)) if len(x) else float("nan"), *t_interval(x))


def main(argv: Sequence[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="*", type=Path, default=[], help="<out>_runs.csv files")
    parser.add_argument("--runs-glob", default=None, help="more <out>_runs.csv files")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1], help="training seeds to keep")
    parser.add_argument("--a", required=True)
    parser.add_argument("--b", required=True)
    parser.add_argument("--out", type=Path, required=True, help="CSV path prefix")
    args = parser.parse_args(argv)
    paths = [*args.runs, *(Path(p) for p in sorted(glob.glob(args.runs_glob or "")))]
    runs = load_runs(paths, args.seeds)
    table, diff = summarize(runs), paired(runs, args.a, args.b)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out.parent / f"{args.out.name}.csv", index=False)
    diff.to_csv(args.out.parent / f"{args.out.name}_paired.csv", index=False)
    print(table.round(3).to_string(index=False))
    for metric in PAIRED:
        mean, low, high = interval(diff[metric].to_numpy())
        _, set_low, set_high = interval(diff.groupby("test_seed")[metric].mean().to_numpy())
        print(
            f"{args.a} - {args.b} {metric}: {mean:+.3f}; 95 % interval over {len(diff)} (test set, seed) pairs "
            f"[{low:+.3f}, {high:+.3f}], over {diff['test_seed'].nunique()} test-set means "
            f"[{set_low:+.3f}, {set_high:+.3f}]"
        )
    return table, diff


if __name__ == "__main__":
    main()
