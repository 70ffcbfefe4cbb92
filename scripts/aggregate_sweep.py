"""Aggregate a Hydra multirun of ``python -m recover_pyro.train`` into one results table.

    python scripts/aggregate_sweep.py multirun/2026-01-31/12-00-00
    python scripts/aggregate_sweep.py multirun/a multirun/b --group-by experiment --metrics r2 spearman nll

Every job directory below the given roots that holds a ``metrics.json`` is one run; its sweep settings are read
from the job's ``.hydra/overrides.yaml`` (e.g. ``+experiment=laplace``, ``seed=3`` -> columns ``experiment``,
``seed``). Runs are grouped by ``--group-by`` (default: every override that varies across the runs, except the
seed) and each metric is reported as mean +/- sd over the runs of a group (sd with ddof = 1, i.e. the spread
over seeds). Writes the grouped table as CSV (``--out``, default ``<first root>/results.csv``), optionally the
per-run table (``--runs-csv``), and prints the grouped table as markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

METRICS_FILE = "metrics.json"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
# Value recorded for an override key that some runs of the sweep did not set.
UNSET = "(default)"


def _natural_key(path: Path) -> list[Any]:
    """Sort ``multirun/2`` before ``multirun/10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.as_posix())]


def find_run_dirs(roots: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(finished, unfinished) job directories below ``roots``.

    A finished job has a ``metrics.json``; an unfinished one has ``.hydra/overrides.yaml`` but no metrics
    (the job failed or still runs).
    """
    finished: set[Path] = set()
    started: set[Path] = set()
    for root in roots:
        if not root.is_dir():
            raise FileNotFoundError(f"sweep directory {root} does not exist")
        finished.update(p.parent for p in root.rglob(METRICS_FILE))
        started.update(p.parent.parent for p in root.rglob(OVERRIDES_FILE.as_posix()))
    return sorted(finished, key=_natural_key), sorted(started - finished, key=_natural_key)


def parse_overrides(lines: Sequence[str]) -> dict[str, str]:
    """Map Hydra override strings of one job to ``{key: value}`` (values as strings, for grouping).

    ``+experiment=laplace`` -> ``{"experiment": "laplace"}``; ``++model.training.epochs=2`` ->
    ``{"model.training.epochs": "2"}``; ``group@pkg=opt`` keeps its key ``group@pkg``; a deletion ``~key``
    is recorded as ``"(deleted)"``.
    """
    parsed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(list(lines)):
        key = override.key_or_group + (f"@{override.package}" if override.package else "")
        if override.is_delete():
            parsed[key] = "(deleted)"
            continue
        value = override.value()
        # Lists / dicts keep Hydra's own spelling; scalars print plainly (QuotedString loses its quotes).
        parsed[key] = override.get_value_element_as_str() if isinstance(value, (list, dict)) else str(value)
    return parsed


def read_run(run_dir: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """(overrides, metrics) of one finished job directory."""
    overrides_path = run_dir / OVERRIDES_FILE
    if not overrides_path.is_file():
        raise FileNotFoundError(f"{run_dir} has {METRICS_FILE} but no {OVERRIDES_FILE}: not a Hydra job directory")
    lines = yaml.safe_load(overrides_path.read_text()) or []
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise ValueError(f"{overrides_path}: expected a YAML list of override strings, got {lines!r}")
    metrics_path = run_dir / METRICS_FILE
    try:
        metrics = json.loads(metrics_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{metrics_path} is not valid JSON: {err}") from err
    if not isinstance(metrics, dict):
        raise ValueError(f"{metrics_path}: expected a JSON object of metrics, got {type(metrics).__name__}")
    return parse_overrides(lines), metrics


def load_runs(roots: Sequence[Path]) -> tuple[pd.DataFrame, list[str], list[str]]:
    """One row per finished job: ``run`` (its directory), one column per override key, one per metric.

    Returns ``(runs, override_keys, measured)`` where ``measured`` are the metric keys whose values are
    floats in every run that reports them (counts such as ``n_train`` or ids such as ``seed`` are ints or
    strings and are not averaged by default). A metric named like an override key (``seed``, ``data``, ...)
    is stored as ``metrics.<key>``.
    """
    finished, unfinished = find_run_dirs(roots)
    if unfinished:
        print(f"warning: {len(unfinished)} job(s) without {METRICS_FILE} left out (failed or still running): "
              + ", ".join(str(d) for d in unfinished), file=sys.stderr)
    if not finished:
        raise FileNotFoundError(f"no {METRICS_FILE} below {', '.join(str(r) for r in roots)}: "
                                "is this a multirun directory of recover_pyro.train?")
    overrides_per_run, metrics_per_run = zip(*(read_run(d) for d in finished))
    override_keys = list(dict.fromkeys(k for o in overrides_per_run for k in o))
    metric_kinds: dict[str, bool] = {}
    for metrics in metrics_per_run:
        for key, value in metrics.items():
            is_float = isinstance(value, float)
            metric_kinds[key] = metric_kinds.get(key, True) and is_float
    rename = {key: f"metrics.{key}" if key in override_keys else key for key in metric_kinds}
    rows = []
    for run_dir, overrides, metrics in zip(finished, overrides_per_run, metrics_per_run):
        row: dict[str, Any] = {"run": str(run_dir)}
        row.update({key: overrides.get(key, UNSET) for key in override_keys})
        row.update({rename[key]: value for key, value in metrics.items()})
        rows.append(row)
    measured = [rename[key] for key, is_float in metric_kinds.items() if is_float]
    return pd.DataFrame(rows), override_keys, measured


def default_group_by(runs: pd.DataFrame, override_keys: Sequence[str], seed_key: str) -> list[str]:
    """Override keys that take more than one value across the runs, except ``seed_key``."""
    return [k for k in override_keys if k != seed_key and runs[k].nunique() > 1]


def summarize(runs: pd.DataFrame, group_by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Per group: ``n_runs`` and, for each metric m, ``m_mean`` and ``m_sd`` (sample sd, NaN for one run).

    With an empty ``group_by`` all runs form one group.
    """
    missing = [k for k in [*group_by, *metrics] if k not in runs.columns]
    if missing:
        raise ValueError(f"unknown column(s) {missing}; the runs have: {list(runs.columns)}")
    keyed = runs.assign(_all="all") if not group_by else runs
    grouped = keyed.groupby(list(group_by) or ["_all"], sort=True, dropna=False)
    table = grouped.size().rename("n_runs").to_frame()
    for metric in metrics:
        values = grouped[metric]
        table[f"{metric}_mean"] = values.mean()
        table[f"{metric}_sd"] = values.std(ddof=1)
    table = table.reset_index()
    return table.drop(columns="_all") if not group_by else table


def to_markdown(table: pd.DataFrame, group_by: Sequence[str], metrics: Sequence[str], digits: int = 3) -> str:
    """Markdown table: the group keys, ``n`` and one ``mean ± sd`` cell per metric."""

    def cell(mean: float, sd: float) -> str:
        if math.isnan(mean):
            return "–"
        return f"{mean:.{digits}f}" if math.isnan(sd) else f"{mean:.{digits}f} ± {sd:.{digits}f}"

    header = [*group_by, "n", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for _, row in table.iterrows():
        cells = [str(row[k]) for k in group_by] + [str(int(row["n_runs"]))]
        cells += [cell(float(row[f"{m}_mean"]), float(row[f"{m}_sd"])) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="+", type=Path, help="multirun (sweep) directories")
    parser.add_argument("--group-by", nargs="*", default=None,
                        help="columns to group by (default: the varying overrides except --seed-key); "
                             "give none for a single group")
    parser.add_argument("--seed-key", default="seed", help="override averaged over (default: seed)")
    parser.add_argument("--metrics", nargs="+", default=None,
                        help="metrics to summarise (default: every float-valued metric)")
    parser.add_argument("--out", type=Path, default=None, help="grouped CSV (default: <first root>/results.csv)")
    parser.add_argument("--runs-csv", type=Path, default=None, help="also write the per-run table here")
    parser.add_argument("--digits", type=int, default=3, help="decimals in the markdown table")
    args = parser.parse_args(argv)

    runs, override_keys, measured = load_runs(args.roots)
    group_by = default_group_by(runs, override_keys, args.seed_key) if args.group_by is None else args.group_by
    metrics = args.metrics or [m for m in measured if m not in group_by]
    table = summarize(runs, group_by, metrics)

    out = args.out or args.roots[0] / "results.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    if args.runs_csv:
        args.runs_csv.parent.mkdir(parents=True, exist_ok=True)
        runs.to_csv(args.runs_csv, index=False)
    print(f"{len(runs)} runs in {len(table)} group(s) by {group_by or '(none)'}; table written to {out}\n")
    print(to_markdown(table, group_by, metrics, args.digits))
    return table


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
