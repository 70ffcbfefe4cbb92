"""Summaries of Hydra multiruns of ``recover-train`` and ``recover-campaign``: one table, mean +/- sd over seeds.

Every job directory of a sweep is one run. A train job is finished when it holds ``metrics.json``; a campaign
job when its ``rounds.json`` reaches ``n_rounds`` (or the pool ran out), and its metrics are the final round's
recall, best score found and experiments measured, plus its mean wall time per round. The run's sweep settings
come from its ``.hydra/overrides.yaml`` (``+experiment=laplace``, ``seed=3`` -> columns ``experiment``,
``seed``). Runs are grouped by the overrides that vary (except the seed) and every float metric is reported
as mean and sample sd (ddof 1) over each group.

:class:`SweepSummary` is a Hydra callback (``hydra.callbacks.sweep_summary`` in the root configs) that writes
``summary.csv`` into the sweep directory and logs the table when a multirun ends;
``scripts/aggregate_sweep.py`` does the same for any sweep directories afterwards.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
ROUNDS_FILE = "rounds.json"
SUMMARY_FILE = "summary.csv"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
# Value recorded for an override key that some runs of the sweep did not set.
UNSET = "(default)"


def _natural_key(path: Path) -> list[Any]:
    """Sort ``multirun/2`` before ``multirun/10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.as_posix())]


def find_run_dirs(roots: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(finished, unfinished) job directories below ``roots``.

    A finished job has a ``metrics.json`` (train) or a complete ``rounds.json`` (campaign); an unfinished one
    has ``.hydra/overrides.yaml`` but neither (the job failed, was killed or still runs).
    """
    finished: set[Path] = set()
    started: set[Path] = set()
    for root in roots:
        if not root.is_dir():
            raise FileNotFoundError(f"sweep directory {root} does not exist")
        finished.update(p.parent for p in root.rglob(METRICS_FILE))
        finished.update(p.parent for p in root.rglob(ROUNDS_FILE) if campaign_finished(p.parent))
        started.update(p.parent.parent for p in root.rglob(OVERRIDES_FILE.as_posix()))
    return sorted(finished, key=_natural_key), sorted(started - finished, key=_natural_key)


def _rounds_report(run_dir: Path) -> dict[str, Any]:
    path = run_dir / ROUNDS_FILE
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(report, dict) or not report.get("rounds"):
        raise ValueError(f"{path}: expected a campaign report with its rounds")
    return report


def campaign_finished(run_dir: Path) -> bool:
    """Whether the campaign in ``run_dir`` completed its ``n_rounds`` (or revealed its whole pool)."""
    report = _rounds_report(run_dir)
    last = report["rounds"][-1]
    return last["round"] >= report["config"]["n_rounds"] or last["n_measured"] >= report["pool_size"]


def campaign_metrics(run_dir: Path) -> dict[str, Any]:
    """Final-round metrics of the campaign in ``run_dir``.

    ``recall_top*`` and ``best_found`` after the last round (floats), ``n_measured`` (int), the mean
    ``train_s`` / ``score_s`` per acquisition round, and the model metrics of the last round (NaN for a
    random campaign that fits no model).
    """
    report = _rounds_report(run_dir)
    rounds = pd.DataFrame(report["rounds"]).astype({"n_measured": int})
    last = rounds.iloc[-1]
    metrics: dict[str, Any] = {c: float(last[c]) for c in rounds.columns if c.startswith("recall_top")}
    metrics.update(best_found=float(last["best_found"]), n_measured=int(last["n_measured"]))
    acquiring = rounds[rounds["round"] >= 1]
    for column in ("train_s", "score_s"):
        metrics[f"{column}_per_round"] = float(acquiring[column].mean()) if len(acquiring) else math.nan
    for column in ("r2", "spearman", "nll"):
        value = last.get(column)
        metrics[f"last_round_{column}"] = math.nan if value is None or pd.isna(value) else float(value)
    return metrics


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
    """(overrides, metrics) of one finished job directory (train or campaign)."""
    overrides_path = run_dir / OVERRIDES_FILE
    if not overrides_path.is_file():
        result = METRICS_FILE if (run_dir / METRICS_FILE).is_file() else ROUNDS_FILE
        raise FileNotFoundError(f"{run_dir} has {result} but no {OVERRIDES_FILE}: not a Hydra job directory")
    lines = yaml.safe_load(overrides_path.read_text()) or []
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise ValueError(f"{overrides_path}: expected a YAML list of override strings, got {lines!r}")
    metrics_path = run_dir / METRICS_FILE
    if not metrics_path.is_file():
        return parse_overrides(lines), campaign_metrics(run_dir)
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
        log.warning(
            "%d job(s) without %s or a finished %s left out (failed, killed or still running): %s",
            len(unfinished),
            METRICS_FILE,
            ROUNDS_FILE,
            ", ".join(str(d) for d in unfinished),
        )
    if not finished:
        raise FileNotFoundError(
            f"no {METRICS_FILE} or finished {ROUNDS_FILE} below "
            f"{', '.join(str(r) for r in roots)}: is this a multirun directory of "
            "recover-train or recover-campaign?"
        )
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


def summarize_sweep(
    roots: Sequence[Path],
    group_by: Sequence[str] | None = None,
    seed_key: str = "seed",
    metrics: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[str]]:
    """``(table, runs, group_by, metrics)`` of the sweeps below ``roots`` (defaults as in the module docstring)."""
    runs, override_keys, measured = load_runs(roots)
    group_by = default_group_by(runs, override_keys, seed_key) if group_by is None else list(group_by)
    metrics = list(metrics) if metrics else [m for m in measured if m not in group_by]
    return summarize(runs, group_by, metrics), runs, group_by, metrics


class SweepSummary(Callback):
    """Hydra callback: at the end of a multirun, write ``<sweep dir>/summary.csv`` and log the table.

    Args:
        metrics: metrics to summarise (default: every float metric of the runs).
        seed_key: override averaged over rather than grouped by.
        digits: decimals in the logged markdown table.
    """

    def __init__(self, metrics: Sequence[str] | None = None, seed_key: str = "seed", digits: int = 3) -> None:
        self.metrics, self.seed_key, self.digits = metrics, seed_key, digits

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            table, runs, group_by, metrics = summarize_sweep([sweep_dir], seed_key=self.seed_key, metrics=self.metrics)
        except (FileNotFoundError, ValueError) as err:  # a summary must never fail the finished sweep
            log.warning("no sweep summary for %s: %s", sweep_dir, err)
            return
        table.to_csv(sweep_dir / SUMMARY_FILE, index=False)
        log.info(
            "sweep summary: %d runs in %d group(s) by %s, written to %s\n%s",
            len(runs),
            len(table),
            group_by or "(none)",
            sweep_dir / SUMMARY_FILE,
            to_markdown(table, group_by, metrics, self.digits),
        )
