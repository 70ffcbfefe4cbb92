"""What determines a campaign's results, recorded in its checkpoint and compared on resume.

A campaign's checkpoint holds a *fingerprint*: the resolved settings of every config group that changes
results (data, features, model, prior, guide, inference, acquisition, campaign, seed, ``num_samples``,
``pretrain_overrides``), flattened to dotted keys, plus digests of the screen and of the feature matrices
actually used. ``resume=true`` compares it key by key with the current run and refuses any difference
(:class:`ResumeMismatchError` naming the keys), so two models' rounds never mix in one table.

Keys that cannot change results may differ: :data:`NON_RESULT_KEYS` (progress bars, device, evaluation
batch sizes, where the data and caches live: the data's *content* is in the digest) and
``campaign.n_rounds`` (a resume may extend a campaign).

:func:`settings_fingerprint` takes the resolved settings as plain nested dicts (the command line passes its
resolved Hydra config; :func:`recover_pyro.cli.run_config.config_fingerprint`)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from recover_pyro.data.featurize import Features
from recover_pyro.data.screen import Screen
from recover_pyro.errors import ResumeMismatchError

log = logging.getLogger(__name__)

#: Config groups / root keys whose values change a campaign's results.
RESULT_GROUPS = (
    "data",
    "features",
    "model",
    "prior",
    "guide",
    "inference",
    "acquisition",
    "campaign",
    "seed",
    "num_samples",
    "pretrain_overrides",
)
#: Last components of dotted keys that never change results (compared nowhere).
NON_RESULT_KEYS = frozenset(
    {"progress", "device", "eval_batch_size", "root", "data_root", "cache_dir", "path", "smiles_path", "summary_path"}
)
#: Dotted keys that a resume may change on purpose.
RESUMABLE_KEYS = frozenset({"campaign.n_rounds", "campaign.random_fits_model"})


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"a.b.c": leaf}``; lists are leaves."""
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def settings_fingerprint(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted key -> value of every result-determining setting of ``settings`` (resolved, plain nested dicts
    and lists, e.g. a resolved Hydra config as a container)."""
    plain = {k: settings[k] for k in RESULT_GROUPS if k in settings}
    return {k: v for k, v in flatten(plain).items() if not _ignored(k)}


def data_fingerprint(screen: Screen, features: Features) -> dict[str, str]:
    """SHA-256 digests of the screen (experiments, drugs) and of the drug / cell feature matrices."""
    experiments = pd.util.hash_pandas_object(screen.experiments, index=False).to_numpy()
    drugs = pd.util.hash_pandas_object(screen.drugs.reset_index(), index=False).to_numpy()
    return {
        "data.screen_digest": hashlib.sha256(experiments.tobytes() + drugs.tobytes()).hexdigest(),
        "features.drug_digest": _tensor_digest(features.drug),
        "features.cell_digest": _tensor_digest(features.cell),
    }


def _tensor_digest(tensor: Any) -> str:
    return hashlib.sha256(np.ascontiguousarray(tensor.detach().cpu().numpy()).tobytes()).hexdigest()


def _ignored(key: str) -> bool:
    return key in RESUMABLE_KEYS or key.rsplit(".", 1)[-1] in NON_RESULT_KEYS


def check_same_run(saved: Mapping[str, Any], current: Mapping[str, Any], path: Path) -> None:
    """Raise :class:`ResumeMismatchError` naming every result-determining key that differs.

    ``saved`` and ``current`` are campaign ``meta`` dicts (nested); they are flattened to dotted keys, the
    campaign settings under ``campaign.``.
    """
    if "fingerprint" not in saved:
        log.warning(
            "%s predates run fingerprints: only the campaign, acquisition, score and pool can be "
            "compared on resume (model, prior, inference and feature settings cannot)",
            path,
        )
        current = {k: v for k, v in current.items() if k != "fingerprint"}
    old, new = _comparable(saved), _comparable(current)
    diffs = [
        f"{k}: {old.get(k, '<absent>')!r} (checkpoint) -> {new.get(k, '<absent>')!r} (now)"
        for k in sorted(set(old) | set(new))
        if old.get(k, "<absent>") != new.get(k, "<absent>")
    ]
    if diffs:
        raise ResumeMismatchError(
            f"{path} was written by a campaign with different result-determining settings, so resuming would "
            f"mix two campaigns' rounds; differing keys: "
            + "; ".join(diffs[:20])
            + (f"; and {len(diffs) - 20} more" if len(diffs) > 20 else "")
            + ". Resume with the checkpoint's settings (the run folder's .hydra/config.yaml), or start a new "
            "campaign in another folder. Keys that do not change results may differ: progress bars, device, "
            "evaluation batch sizes, data / cache locations, campaign.n_rounds (to extend the campaign)"
        )


def _comparable(meta: Mapping[str, Any]) -> dict[str, Any]:
    """A campaign meta dict as dotted keys, without the keys a resume may change."""
    meta = dict(meta)
    config = meta.pop("config", {}) or {}
    fingerprint = meta.pop("fingerprint", None) or {}
    flat = {**flatten(meta), **{f"campaign.{k}": v for k, v in config.items()}, **fingerprint}
    # The campaign settings appear both as the checkpointed CampaignConfig and in the config fingerprint.
    flat = {k: v for k, v in flat.items() if not _ignored(k)}
    return flat
