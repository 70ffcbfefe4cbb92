"""Paired difference in discovery between two campaign presets, by (cell line, seed), with 95 % intervals.

    python scripts/paired_discovery.py --runs MCF7=benchmarks/results/discovery/mcf7_v2/runs \\
        --runs-glob 'benchmarks/results/discovery/cells/*/runs' --a normal_thompson --b recover_ensemble_ucb \\
        --out benchmarks/results/discovery/cells/paired.csv

Reads each campaign's ``<experiment>_s<seed>.csv`` (``scripts/benchmark_discovery.py``), takes the recall of the
top 1 % / 5 % after its last round, and pairs ``a`` with ``b`` by cell line and seed (``b``'s runs may lie in other
folders: ``--b-runs`` / ``--b-runs-glob``). Prints per-cell-line means
and the mean difference ``a - b`` with two Student-t 95 % intervals: over all (cell line, seed) pairs, and over the
cell-line means (the conservative one: seeds within a cell line share its pool).
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

import pandas as pd
from recover_pyro.metrics import t_interval


def final_recalls(path: Path) -> tuple[float, float, float] | None:
    """(top-1 % recall, top-5 % recall, training seconds) after the last round, None if the file is missing."""
    if not path.exists():
        return None
    table = pd.read_csv(path)
    last = table[table["round"] == table["round"].max()].iloc[0]
    return float(last["recall_top1pct"]), float(last["recall_top5pct"]), float(table["train_s"].sum())


def run_folders(items: list[str], pattern: str | None) -> dict[str, str]:
    """``{cell line: runs folder}`` from ``CELL=DIR`` items and folders matching ``<tag>/<CELL>/runs``."""
    folders = dict(item.split("=", 1) for item in items)
    if pattern:
        folders |= {Path(d).parent.name: d for d in sorted(glob.glob(pattern))}
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="*", default=[], help="CELL=DIR of a tag's runs/ folder")
    parser.add_argument("--runs-glob", default=None, help="runs/ folders named <tag>/<CELL>/runs")
    parser.add_argument("--b-runs", nargs="*", default=[], help="CELL=DIR where b's runs are, if not in --runs")
    parser.add_argument("--b-runs-glob", default=None, help="b's runs/ folders named <tag>/<CELL>/runs")
    parser.add_argument("--a", required=True)
    parser.add_argument("--b", required=True)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    folders = run_folders(args.runs, args.runs_glob)
    b_folders = folders | run_folders(args.b_runs, args.b_runs_glob)
    rows = []
    for cell, folder in folders.items():
        for seed in args.seeds:
            a = final_recalls(Path(folder) / f"{args.a}_s{seed}.csv")
            b = final_recalls(Path(b_folders[cell]) / f"{args.b}_s{seed}.csv")
            if a is None or b is None:
                continue
            rows.append(
                {"cell_line": cell, "seed": seed, "a_top1": a[0], "b_top1": b[0], "a_top5": a[1], "b_top5": b[1]}
                | {"a_train_s": a[2], "b_train_s": b[2], "d_top1": a[0] - b[0], "d_top5": a[1] - b[1]}
            )
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, index=False)
    print(f"a = {args.a}, b = {args.b}; pairs per cell line: {table.groupby('cell_line').size().to_dict()}")
    print(table.groupby("cell_line").mean(numeric_only=True).drop(columns="seed").round(3).to_string())
    for key in ("d_top1", "d_top5"):
        x = table[key].to_numpy()
        per_cell = table.groupby("cell_line")[key].mean().to_numpy()
        lo, hi = t_interval(x)
        clo, chi = t_interval(per_cell)
        print(
            f"{key}: mean {x.mean():+.3f}; 95 % interval over {len(x)} pairs [{lo:+.3f}, {hi:+.3f}], "
            f"over {len(per_cell)} cell-line means [{clo:+.3f}, {chi:+.3f}]"
        )


if __name__ == "__main__":
    main()
