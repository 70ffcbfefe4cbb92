"""What a campaign records each round: the round row (recall, batch quality, the model's metrics on the
unrevealed pool, wall times), the revealed candidates, and the tables written after every round.

The pool metrics are injectable: :func:`~recover_pyro.campaign.loop.run_campaign` takes any
:class:`PoolMetrics` (subclass it to record other numbers of the model on the unrevealed pool).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from recover_pyro.acquisition import unique_drugs
from recover_pyro.campaign.checkpoint import CampaignState
from recover_pyro.campaign.config import CampaignConfig
from recover_pyro.campaign.pool import Pool
from recover_pyro.metrics import evaluate, recall_at_top_k
from recover_pyro.models.base import FitReport, PredictiveSamples
from recover_pyro.records.files import atomic_write_csv, atomic_write_json, spreadsheet_safe

TIME_COLUMNS = ("train_s", "score_s", "acquire_s")
MODEL_METRICS = ("r2", "spearman", "nll", "sd_error_spearman", "coverage_90", "epistemic_sd", "aleatoric_sd")


@dataclass(frozen=True)
class PoolMetrics:
    """The model's metrics on the unrevealed pool, recorded before each round's acquisition.

    The default records :data:`MODEL_METRICS` of :func:`recover_pyro.metrics.evaluate`; a subclass may
    record other ``names`` by overriding :meth:`__call__`.

    Attributes:
        names: the metrics recorded (column names of ``rounds.csv``).
    """

    names: tuple[str, ...] = MODEL_METRICS

    def __call__(self, predictive: PredictiveSamples, y: torch.Tensor) -> dict[str, float]:
        """``{name: value}`` of the predictive (``f`` ``(S, U)``) against the pool's hidden scores ``y`` ``(U,)``."""
        metrics = evaluate(predictive, y)
        return {k: float(metrics[k]) for k in self.names}

    def missing(self) -> dict[str, float]:
        """NaN for every metric: rounds without a model (round 0 without pretraining, random acquisition)."""
        return {k: math.nan for k in self.names}


def recall_column(fraction: float) -> str:
    """Column name of the recall of the top ``fraction`` of the pool, e.g. ``0.01 -> recall_top1pct``."""
    return f"recall_top{fraction * 100:g}pct"


def batch_stats(chosen: np.ndarray, unrevealed: np.ndarray, pool: Pool) -> dict[str, float]:
    """True-score summary and immediate regret of a batch (module docstring)."""
    y = pool.y.double().numpy()
    regret = y[unrevealed].max() - y[chosen]
    return {
        "batch_size": int(len(chosen)),
        "batch_mean": float(y[chosen].mean()),
        "batch_max": float(y[chosen].max()),
        "regret_median": float(np.median(regret)),
        "regret_min": float(regret.min()),
        "unique_drugs": unique_drugs(torch.as_tensor(chosen), pool.drugs),
    }


def progress_row(round_: int, revealed: list[int], pool: Pool, config: CampaignConfig) -> dict[str, Any]:
    y = pool.y.double().numpy()
    row: dict[str, Any] = {
        "round": round_,
        "n_measured": len(revealed),
        "fraction_explored": len(revealed) / len(pool),
        "best_found": float(y[revealed].max()),
    }
    for fraction in config.top_fractions:
        row[recall_column(fraction)] = recall_at_top_k(np.asarray(revealed), y, fraction)
    return row


def selection_rows(
    round_: int, chosen: np.ndarray, pool: Pool, score: str, acq: np.ndarray, mean: np.ndarray, std: np.ndarray
) -> list[dict[str, Any]]:
    """One plain-Python record per revealed candidate (checkpoints accept no numpy scalars)."""
    columns = {
        c: pool.experiments[c].to_numpy()[chosen].astype(str).tolist()
        for c in ("drug_a", "drug_b", "cell_line", "study")
    }
    values = {
        score: pool.y.double().numpy()[chosen],
        "acquisition_value": acq,
        "predicted_mean": mean,
        "predicted_std": std,
    }
    columns.update({k: np.asarray(v, dtype=np.float64).tolist() for k, v in values.items()})
    return [
        {"round": round_, "pool_index": int(i), **{k: v[j] for k, v in columns.items()}} for j, i in enumerate(chosen)
    ]


def write_fit_curve(report: FitReport, out_dir: Path, round_: int) -> None:
    """``fit_curves/round_XX.csv``: the per-epoch curve of the round model's fit (rewritten on a resumed
    round, so a campaign killed mid-round leaves no duplicate rows)."""
    if report.curve:
        folder = out_dir / "fit_curves"
        folder.mkdir(exist_ok=True)
        atomic_write_csv(folder / f"round_{round_:02d}.csv", pd.DataFrame(report.curve))


def write_tables(state: CampaignState, out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    rounds, selections = pd.DataFrame(state.rows), pd.DataFrame(state.selections)
    atomic_write_csv(out_dir / "rounds.csv", rounds)
    # Drug ids and cell-line names come from the user's files: no spreadsheet formulas in what we write.
    atomic_write_csv(out_dir / "selections.csv", spreadsheet_safe(selections))
    atomic_write_json(out_dir / "rounds.json", {**state.meta, "rounds": state.rows})
    return rounds, selections
