"""A campaign's state after each completed round and its checkpoint file (atomic, exact resume)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from recover_pyro.acquisition import Acquisition
from recover_pyro.campaign.config import CampaignConfig
from recover_pyro.campaign.pool import Pool
from recover_pyro.errors import DamagedFileError
from recover_pyro.records.files import atomic_torch_save, load_torch_file

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_VERSION = 1
# What a campaign checkpoint must hold, with the type of each entry.
CHECKPOINT_KEYS = {
    "version": int,
    "completed": int,
    "revealed": torch.Tensor,
    "rows": list,
    "selections": list,
    "generator": torch.Tensor,
    "meta": dict,
}


@dataclass
class CampaignState:
    """Everything needed to continue a campaign after ``completed`` rounds."""

    completed: int
    revealed: list[int]
    rows: list[dict[str, Any]]
    selections: list[dict[str, Any]]
    generator: torch.Generator
    model_state: dict[str, Any] | None = None
    pretrained: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_checkpoint(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "completed": self.completed,
            "revealed": torch.tensor(self.revealed, dtype=torch.long),
            "rows": self.rows,
            "selections": self.selections,
            "generator": self.generator.get_state(),
            "model_state": self.model_state,
            "pretrained": self.pretrained,
            "meta": self.meta,
        }

    @staticmethod
    def from_checkpoint(ckpt: dict[str, Any]) -> "CampaignState":
        generator = torch.Generator()
        generator.set_state(ckpt["generator"])
        return CampaignState(
            completed=int(ckpt["completed"]),
            revealed=[int(i) for i in ckpt["revealed"].tolist()],
            rows=list(ckpt["rows"]),
            selections=list(ckpt["selections"]),
            generator=generator,
            model_state=ckpt["model_state"],
            pretrained=ckpt["pretrained"],
            meta=dict(ckpt["meta"]),
        )


def _plain(obj: Any) -> Any:
    """JSON-like copy of a dataclass (tuples become lists) for checkpoints and reports."""
    return json.loads(json.dumps(asdict(obj)))


def campaign_meta(config: CampaignConfig, acquisition: Acquisition, score: str, pool: Pool) -> dict[str, Any]:
    """What identifies a campaign besides its config fingerprint: settings, acquisition (class and fields),
    score and pool."""
    return {
        "config": _plain(config),
        "acquisition": {
            "class": f"{type(acquisition).__module__}.{type(acquisition).__qualname__}",
            **_plain(acquisition),
        },
        "score": score,
        "pool_size": len(pool),
        "pool_digest": pool.digest,
    }


def save_checkpoint(path: Path, ckpt: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace`` (never a torn file)."""
    atomic_torch_save(path, ckpt)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read and check a campaign checkpoint (``weights_only=True``: tensors, numbers, strings, lists, dicts).

    Raises:
        DamagedFileError: the file is truncated, empty, not a checkpoint, of another version, or its
            entries are inconsistent (names the file and what to do).
    """
    advice = "move it away and rerun without resume=true (the campaign restarts), or restore it from a backup"
    ckpt = load_torch_file(path, "campaign checkpoint", advice)  # on the CPU: resumable on any device
    if not isinstance(ckpt, dict):
        raise DamagedFileError(f"not a campaign checkpoint (holds a {type(ckpt).__name__}); {advice}", file=str(path))
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise DamagedFileError(
            f"unsupported campaign checkpoint version {ckpt.get('version')!r} (expected "
            f"{CHECKPOINT_VERSION}); {advice}",
            file=str(path),
        )
    wrong = [k for k, kind in CHECKPOINT_KEYS.items() if not isinstance(ckpt.get(k), kind)]
    if wrong:
        raise DamagedFileError(f"campaign checkpoint lacks or has malformed entries {wrong}; {advice}", file=str(path))
    completed, revealed = ckpt["completed"], ckpt["revealed"]
    if (
        completed < 0
        or len(ckpt["rows"]) != completed + 1
        or revealed.dim() != 1
        or len(ckpt["selections"]) != len(revealed)
    ):
        raise DamagedFileError(
            f"campaign checkpoint is inconsistent ({completed} rounds completed, "
            f"{len(ckpt['rows'])} round rows, {len(revealed)} revealed, "
            f"{len(ckpt['selections'])} selections); {advice}",
            file=str(path),
        )
    return ckpt
