"""Aggregate Hydra multiruns of ``recover-train`` or ``recover-campaign`` into one results table.

    python scripts/aggregate_sweep.py multirun/2026-01-31/12-00-00
    python scripts/aggregate_sweep.py multirun/a multirun/b --group-by experiment --metrics r2 spearman nll
    python scripts/aggregate_sweep.py multirun/campaigns --metrics recall_top1pct recall_top5pct

Every job directory below the given roots that holds a ``metrics.json`` (train) or a finished campaign's
``rounds.json`` is one run (see :mod:`recover_pyro.cli.sweep_summary`, which also writes ``summary.csv`` at the
end of every multirun); its sweep settings are read from the job's ``.hydra/overrides.yaml`` (e.g.
``+experiment=laplace``, ``seed=3`` -> columns ``experiment``, ``seed``). Runs are grouped by ``--group-by``
(default: every override that varies across the runs, except the seed) and each metric is reported as mean +/- sd
over the runs of a group (sd with ddof = 1, i.e. the spread over seeds). Writes the grouped table as CSV
(``--out``, default ``<first root>/results.csv``), optionally the per-run table (``--runs-csv``), and prints
the grouped table as markdown. ``manifest.json`` beside the table records how it was made.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

from recover_pyro.cli.sweep_summary import (  # noqa: F401  (re-exported for tests and notebooks)
    METRICS_FILE,
    OVERRIDES_FILE,
    UNSET,
    default_group_by,
    find_run_dirs,
    load_runs,
    parse_overrides,
    read_run,
    summarize,
    summarize_sweep,
    to_markdown,
)
from recover_pyro.records.manifest import command_line, recording


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("roots", nargs="+", type=Path, help="multirun (sweep) directories")
    parser.add_argument(
        "--group-by",
        nargs="*",
        default=None,
        help="columns to group by (default: the varying overrides except --seed-key); give none for a single group",
    )
    parser.add_argument("--seed-key", default="seed", help="override averaged over (default: seed)")
    parser.add_argument(
        "--metrics", nargs="+", default=None, help="metrics to summarise (default: every float-valued metric)"
    )
    parser.add_argument("--out", type=Path, default=None, help="grouped CSV (default: <first root>/results.csv)")
    parser.add_argument("--runs-csv", type=Path, default=None, help="also write the per-run table here")
    parser.add_argument("--digits", type=int, default=3, help="decimals in the markdown table")
    args = parser.parse_args(argv)

    table, runs, group_by, metrics = summarize_sweep(args.roots, args.group_by, args.seed_key, args.metrics)

    out = args.out or args.roots[0] / "results.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with recording(
        out.parent,
        command=command_line(__file__, sys.argv[1:] if argv is None else argv),
        description=f"sweep summary ({out.name}: {len(runs)} runs by {', '.join(group_by) or 'one group'})",
        out=out.name,
        roots=[str(r) for r in args.roots],
    ):
        write_tables(table, runs, out, args.runs_csv)
    print(f"{len(runs)} runs in {len(table)} group(s) by {group_by or '(none)'}; table written to {out}\n")
    print(to_markdown(table, group_by, metrics, args.digits))
    return table


def write_tables(table: pd.DataFrame, runs: pd.DataFrame, out: Path, runs_csv: Path | None) -> None:
    """The grouped table to ``out`` and, if asked, the per-run table to ``runs_csv``."""
    table.to_csv(out, index=False)
    if runs_csv:
        runs_csv.parent.mkdir(parents=True, exist_ok=True)
        runs.to_csv(runs_csv, index=False)


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s: %(message)s")
    try:
        main()
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
