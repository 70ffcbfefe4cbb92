"""Paired difference in discovery between two campaign presets, by (cell line, seed), with 95 % intervals.

    python scripts/paired_discovery.py --runs MCF7=benchmarks/results/discovery/mcf7_v2/runs \\
        --runs-glob 'benchmarks/results/discovery/cells/*/runs' --a normal_thompson --b recover_ensemble_ucb \\
        --out benchmarks/results/discovery/cells/paired.csv

Reads each campaign's ``<experiment>_s<seed>.csv`` (``scripts/benchmark_discovery.py``), takes the recall of the
top 1 % / 5 % after its last round, and pairs ``a`` with ``b`` by cell line and seed (``b``'s runs may lie in other
folders: ``--b-runs`` / ``--b-runs-glob``). Prints per-cell-line means
and the mean difference ``a - b`` with two Student-t 95 % intervals: over all (cell line, seed) pairs, and over the
cell-line means (which allows for seeds of a cell line sharing its pool; not necessarily the wider one); and, where
the campaigns recorded them, the same for the pool metrics averaged over the rounds (:data:`POOL_METRICS`: how well
the model's mean predicts the unrevealed pool, and how well its uncertainty ranks its errors there), over the
pairs that have them. ``--plot PNG`` draws every pair's difference per cell line with the mean and its interval
over all pairs. With ``--out``, ``manifest.json`` in its folder records how the table was made.
"""

from __future__ import annotations

import argparse
import glob
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from recover_pyro.metrics import t_interval
from recover_pyro.records.manifest import command_line, recording


# Pool metrics a campaign records each round (recover_pyro.campaign.MODEL_METRICS): the model's mean
# prediction of the unrevealed pool (spearman, r2, nll) and how its uncertainty ranks its errors there.
POOL_METRICS = {"sd_error": "sd_error_spearman", "pool_spearman": "spearman", "pool_r2": "r2", "pool_nll": "nll"}


def final_recalls(path: Path) -> tuple[float, float, float, dict[str, float]] | None:
    """(top-1 % recall, top-5 % recall after the last round, training seconds, ``{name: mean over the rounds}`` of
    :data:`POOL_METRICS`: NaN where the campaign did not record one), None if the file is missing."""
    if not path.exists():
        return None
    table = pd.read_csv(path)
    last = table[table["round"] == table["round"].max()].iloc[0]
    pool = {name: float(table[col].mean()) if col in table else math.nan for name, col in POOL_METRICS.items()}
    return float(last["recall_top1pct"]), float(last["recall_top5pct"]), float(table["train_s"].sum()), pool


def run_folders(items: list[str], pattern: str | None) -> dict[str, list[Path]]:
    """``{cell line: runs folders}`` from ``CELL=DIR[,DIR...]`` items (a campaign is read from the first folder
    that has it: seeds run at different times may lie in different tags) and folders matching
    ``<tag>/<CELL>/runs``."""
    folders = {cell: [Path(d) for d in dirs.split(",")] for cell, dirs in (item.split("=", 1) for item in items)}
    if pattern:
        folders |= {Path(d).parent.name: [Path(d)] for d in sorted(glob.glob(pattern))}
    return folders


def find_run(folders: list[Path], name: str) -> Path:
    """``name`` in the first of ``folders`` that has it (else in the first: a missing file)."""
    return next((f / name for f in folders if (f / name).exists()), folders[0] / name)


def plot_paired(table: pd.DataFrame, a: str, b: str, path: Path) -> Path:
    """Save :func:`paired_figure` as PNG to ``path``."""
    paired_figure(table, a, b).savefig(path, dpi=100)
    return path


def paired_figure(table: pd.DataFrame, a: str, b: str) -> Figure:
    """Per top fraction (panel) and cell line (x): each seed's ``a - b`` (dots), the cell line's mean (bar);
    at the right the mean over all pairs with its Student-t 95 % interval."""
    cells = list(dict.fromkeys(table["cell_line"]))
    fig = Figure(figsize=(2.0 + 0.9 * len(cells), 4.5))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, label in zip(axes, ("d_top1", "d_top5"), ("top-1 % recall", "top-5 % recall")):
        for i, cell in enumerate(cells):
            values = table.loc[table["cell_line"] == cell, key].to_numpy()
            ax.plot(np.full(len(values), i), values, "o", color="C0", alpha=0.5, markersize=4)
            ax.plot([i - 0.3, i + 0.3], [values.mean()] * 2, color="C0", linewidth=2)
        x = table[key].to_numpy()
        low, high = t_interval(x)
        ax.errorbar(
            [len(cells)], [x.mean()], yerr=[[x.mean() - low], [high - x.mean()]], fmt="s", color="C3", capsize=4
        )
        ax.axhline(0.0, color="grey", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(cells) + 1), [*cells, "all"], rotation=45, ha="right", fontsize="small")
        ax.set(title=label)
    axes[0].set(ylabel="paired difference after the last round")
    fig.suptitle(f"{a} - {b} (dots: seeds; red: mean, 95 % interval)", fontsize="medium")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="*", default=[], help="CELL=DIR[,DIR...] of tags' runs/ folders")
    parser.add_argument("--runs-glob", default=None, help="runs/ folders named <tag>/<CELL>/runs")
    parser.add_argument(
        "--b-runs", nargs="*", default=[], help="CELL=DIR[,DIR...] where b's runs are, if not in --runs"
    )
    parser.add_argument("--b-runs-glob", default=None, help="b's runs/ folders named <tag>/<CELL>/runs")
    parser.add_argument("--a", required=True)
    parser.add_argument("--b", required=True)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None, help="PNG of the paired differences")
    args = parser.parse_args(argv)
    if args.out is None:  # prints only: no result folder to record
        return paired_table(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with recording(
        args.out.parent,
        command=command_line(__file__, sys.argv[1:] if argv is None else argv),
        description=f"paired discovery ({args.out.name}: {args.a} - {args.b})",
        out=args.out.name,
    ):
        return paired_table(args)


def paired_table(args: argparse.Namespace) -> pd.DataFrame:
    """Pair ``args.a`` with ``args.b`` by (cell line, seed); write / plot / print as ``args`` asks."""
    folders = run_folders(args.runs, args.runs_glob)
    b_folders = folders | run_folders(args.b_runs, args.b_runs_glob)
    rows = []
    for cell, folder in folders.items():
        for seed in args.seeds:
            a = final_recalls(find_run(folder, f"{args.a}_s{seed}.csv"))
            b = final_recalls(find_run(b_folders[cell], f"{args.b}_s{seed}.csv"))
            if a is None or b is None:
                continue
            rows.append(
                {"cell_line": cell, "seed": seed, "a_top1": a[0], "b_top1": b[0], "a_top5": a[1], "b_top5": b[1]}
                | {"a_train_s": a[2], "b_train_s": b[2], "d_top1": a[0] - b[0], "d_top5": a[1] - b[1]}
                | {f"{side}_{name}": run[3][name] for name in POOL_METRICS for side, run in (("a", a), ("b", b))}
                | {f"d_{name}": a[3][name] - b[3][name] for name in POOL_METRICS}
            )
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, index=False)
    if args.plot:
        plot_paired(table, args.a, args.b, args.plot)
    print(f"a = {args.a}, b = {args.b}; pairs per cell line: {table.groupby('cell_line').size().to_dict()}")
    print(table.groupby("cell_line").mean(numeric_only=True).drop(columns="seed").round(3).to_string())
    for key in ["d_top1", "d_top5", *(f"d_{name}" for name in POOL_METRICS)]:
        recorded = table[table[key].notna()]  # older campaigns lack some pool metrics
        if len(recorded) < 2:
            continue
        x = recorded[key].to_numpy()
        per_cell = recorded.groupby("cell_line")[key].mean().to_numpy()
        lo, hi = t_interval(x)
        line = f"{key}: mean {x.mean():+.3f}; 95 % interval over {len(x)} pairs [{lo:+.3f}, {hi:+.3f}]"
        if len(per_cell) > 1:
            clo, chi = t_interval(per_cell)
            line += f", over {len(per_cell)} cell-line means [{clo:+.3f}, {chi:+.3f}]"
        print(line)
    return table


if __name__ == "__main__":
    main()
