"""``recover-recommend``: measured CSVs in, the next plate out (the wet-lab loop of :mod:`recover_pyro.recommend`
driven by a Hydra config)."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from recover_pyro.cli.builders import CONFIG_DIR, build_acquisition
from recover_pyro.cli.checks import validate_config
from recover_pyro.logging_utils import cli_logging
from recover_pyro.recommend import recommend
from recover_pyro.records.files import atomic_write_csv, refuse_overwrite, spreadsheet_safe

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="recommend")
def main(cfg: DictConfig) -> None:
    """``recover-recommend`` / ``python -m recover_pyro.recommend``: measured CSVs -> next batch CSV."""
    with cli_logging():
        recommend_from_config(cfg)


def recommend_from_config(cfg: DictConfig) -> None:
    """Fit, choose the batch, write it and log the summary and the top of the table."""
    validate_config(cfg)
    out = Path(cfg.out) if cfg.out else Path(HydraConfig.get().runtime.output_dir) / "next_batch.csv"
    refuse_overwrite(out, bool(cfg.get("overwrite", False)))
    partial_model = instantiate(cfg.model)
    result = recommend(
        measured_paths=list(cfg.measured),
        smiles=cfg.smiles,
        cell_lines=list(cfg.cell_lines),
        score=cfg.score,
        model=partial_model,
        acquisition=build_acquisition(cfg),
        featurize=lambda screen: instantiate(cfg.features, screen),
        num_samples=cfg.num_samples,
        on_duplicate=cfg.on_duplicate,
        seed=cfg.seed,
    )
    atomic_write_csv(out, spreadsheet_safe(result.table))
    log.info("%s", result.summary())
    log.info("top of the batch:\n%s", result.table.head(10).to_string(index=False))
    log.info("next batch written to %s", out)
