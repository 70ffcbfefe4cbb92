"""Accuracy and calibration over several test sets, and the paired difference between two models.

    python scripts/paired_accuracy.py --runs benchmarks/results/accuracy/almanac_mcf7_random_runs.csv \\
        --runs-glob 'benchmarks/results/accuracy/test_sets/almanac_mcf7_random_test_seed*_runs.csv' \\
        --seeds 0 1 2 --a normal --b recover_ensemble --out benchmarks/results/accuracy/test_sets/summary --plot

Reads ``<out>_runs.csv`` files of ``scripts/benchmark_accuracy.py`` made with different ``split.test_seed``
(the test seed is read from each run's ``overrides``; none means 0) and keeps the given training seeds. A
single test set of a small screen (148 experiments for ALMANAC MCF7's pair split) decides little: its coverage
has a sampling sd of ~0.025 and every model is scored on the same draw, so a hard test set moves all models
together. Writes ``<out>.csv`` (per model: mean and standard error over the (test set, seed) runs, and the
lowest and highest test-set mean of the 90 % coverage) and
``<out>_paired.csv`` (``a - b`` per (test set, seed) for Spearman, NLL, r2, 90 % coverage and the rank
correlation of predictive sd and error, ``sd_error_spearman``) and prints both
with Student-t 95 % intervals of the mean paired difference: over all pairs, and over the test-set means (which
allows for the seeds of one test set sharing it; not necessarily the wider one). ``--plot`` adds ``<out>_coverage.png``: each model's
90 % coverage per test set against the range a calibrated model shows on a test set of that size (central 95 %
of Binomial(n_test, 0.9) / n_test). ``manifest.json`` in ``<out>``'s folder records how the tables were made.
"""

from __future__ import annotations

import argparse
import glob
import re
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from recover_pyro.metrics import SUMMARY_METRICS, t_interval
from recover_pyro.records.manifest import command_line, recording
from scipy import stats

METRICS = [*SUMMARY_METRICS, "coverage_50"]
PAIRED = ["spearman", "nll", "r2", "coverage_90", "sd_error_spearman"]


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
    if "coverage_90" in runs:
        per_set = runs.groupby(["experiment", "test_seed"], sort=False)["coverage_90"].mean().groupby(level=0)
        table["coverage_90_set_min"], table["coverage_90_set_max"] = per_set.min(), per_set.max()
    return table.reset_index()


def calibrated_range(n_test: int, level: float = 0.9) -> tuple[float, float]:
    """Central 95 % range of the coverage of calibrated ``level`` intervals on ``n_test`` independent
    experiments: quantiles of Binomial(n_test, level) / n_test."""
    low, high = stats.binom.ppf([0.025, 0.975], n_test, level)
    return float(low) / n_test, float(high) / n_test


def plot_coverage(runs: pd.DataFrame, path: Path) -> Path:
    """Save :func:`coverage_figure` of ``runs`` as PNG to ``path``."""
    coverage_figure(runs).savefig(path, dpi=100)
    return path


def coverage_figure(runs: pd.DataFrame) -> Figure:
    """Per model (x), each test set's 90 % coverage (mean over seeds; dots) and the pooled mean (bar), with the
    calibrated range of :func:`calibrated_range` at the median test-set size (grey band)."""
    models = list(dict.fromkeys(runs["experiment"]))
    per_set = runs.groupby(["experiment", "test_seed"], sort=False)["coverage_90"].mean()
    fig = Figure(figsize=(1.5 + 0.8 * len(models), 4.5))
    ax = fig.subplots()
    if "n_test" in runs:
        low, high = calibrated_range(int(runs["n_test"].median()))
        ax.axhspan(low, high, color="0.9", label=f"calibrated, {int(runs['n_test'].median())} experiments")
    ax.axhline(0.9, color="grey", linestyle="--", linewidth=1)
    for i, model in enumerate(models):
        values = per_set.loc[model].to_numpy()
        ax.plot(np.full(len(values), i), values, "o", color="C0", alpha=0.5, markersize=4)
        ax.plot([i - 0.3, i + 0.3], [values.mean()] * 2, color="C3", linewidth=2)
    ax.set_xticks(range(len(models)), models, rotation=45, ha="right", fontsize="small")
    ax.set(ylabel="90 % coverage per test set", title="dots: test sets (mean over seeds); bar: mean")
    ax.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    return fig


def paired(runs: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """``a - b`` per (test seed, seed) present for both models."""
    key = ["test_seed", "seed"]
    columns = [m for m in PAIRED if m in runs]
    left = runs[runs["experiment"] == a].set_index(key)[columns]
    right = runs[runs["experiment"] == b].set_index(key)[columns]
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
    parser.add_argument("--plot", action="store_true", help="also write <out>_coverage.png")
    args = parser.parse_args(argv)
    paths = [*args.runs, *(Path(p) for p in sorted(glob.glob(args.runs_glob or "")))]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with recording(
        args.out.parent,
        command=command_line(__file__, sys.argv[1:] if argv is None else argv),
        description=f"paired accuracy over test sets ({args.out.name}: {args.a} - {args.b})",
        out=args.out.name,
        inputs=[str(p) for p in paths],
    ):
        return paired_tables(args, paths)


def paired_tables(args: argparse.Namespace, paths: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Summary and paired tables of the runs in ``paths`` (written next to ``args.out``; intervals printed)."""
    runs = load_runs(paths, args.seeds)
    table, diff = summarize(runs), paired(runs, args.a, args.b)
    table.to_csv(args.out.parent / f"{args.out.name}.csv", index=False)
    diff.to_csv(args.out.parent / f"{args.out.name}_paired.csv", index=False)
    if args.plot:
        plot_coverage(runs, args.out.parent / f"{args.out.name}_coverage.png")
    print(table.round(3).to_string(index=False))
    for metric in [m for m in PAIRED if m in diff]:
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
