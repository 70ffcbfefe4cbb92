"""Simulated sequential campaigns on a measured screen, with exact resume (benchmark mode).

The package follows the campaign's seams: :mod:`~recover_pyro.campaign.config` (settings),
:mod:`~recover_pyro.campaign.pool` (candidates and hidden scores), :mod:`~recover_pyro.campaign.loop` (the
rounds: fit, score, acquire, reveal), :mod:`~recover_pyro.campaign.checkpoint` and
:mod:`~recover_pyro.campaign.fingerprint` (what is saved after each round and what must match on resume),
:mod:`~recover_pyro.campaign.records` (round rows, injectable pool metrics, tables). The command line lives
in :mod:`recover_pyro.cli.campaign`; ``python -m recover_pyro.campaign`` runs it.
"""

from recover_pyro.campaign.checkpoint import CHECKPOINT, CampaignState, load_checkpoint, save_checkpoint
from recover_pyro.campaign.config import CampaignConfig
from recover_pyro.campaign.fingerprint import check_same_run, data_fingerprint, settings_fingerprint
from recover_pyro.campaign.loop import (
    GENERATOR_STREAM,
    GLOBAL_STREAM,
    MODEL_STREAM,
    CampaignResult,
    derive_seed,
    run_campaign,
    seeded_global_rngs,
)
from recover_pyro.campaign.pool import Pool, build_pool
from recover_pyro.campaign.records import MODEL_METRICS, TIME_COLUMNS, PoolMetrics, recall_column
from recover_pyro.records.plots import plot_recall

__all__ = [
    "CHECKPOINT",
    "GENERATOR_STREAM",
    "GLOBAL_STREAM",
    "MODEL_METRICS",
    "MODEL_STREAM",
    "TIME_COLUMNS",
    "CampaignConfig",
    "CampaignResult",
    "CampaignState",
    "Pool",
    "PoolMetrics",
    "build_pool",
    "check_same_run",
    "data_fingerprint",
    "derive_seed",
    "load_checkpoint",
    "plot_recall",
    "recall_column",
    "run_campaign",
    "save_checkpoint",
    "seeded_global_rngs",
    "settings_fingerprint",
]
