"""``recover-recommend``: measured CSVs in, the next plate out (the wet-lab loop of :mod:`recover_pyro.wetlab`
driven by a Hydra config).

    recover-recommend measured=[round0.csv] smiles=drugs.csv cell_lines=[MCF7] score=comboscore \\
        candidates=pairs.csv exclude=[failed.csv] leave_out=[Gefitinib] acquisition.max_per_drug=3 out=plate1.csv

The output file is checked before the fit (an existing file is kept unless ``overwrite=true``; a folder is
refused), a named error is one message on stderr (:mod:`recover_pyro.cli.errors`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig

from recover_pyro.cli.builders import CONFIG_DIR, build_acquisition
from recover_pyro.cli.checks import validate_config
from recover_pyro.cli.errors import reported_errors
from recover_pyro.logging_utils import cli_logging
from recover_pyro.records.files import check_output_file
from recover_pyro.wetlab import recommend

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="recommend")
def main(cfg: DictConfig) -> None:
    """``recover-recommend`` / ``python -m recover_pyro.recommend``: measured CSVs -> next batch CSV."""
    with reported_errors(), cli_logging():
        recommend_from_config(cfg)


def _listed(value: Any) -> list[Any]:
    """A config value that may be one item or a list, as a list (``None`` -> ``[]``)."""
    if value is None:
        return []
    return list(value) if isinstance(value, (ListConfig, list, tuple)) else [value]


def recommend_from_config(cfg: DictConfig) -> Path:
    """Check the options and the output file, fit, choose the batch, write it and log the summary and the
    top of the plate; returns the plate's path."""
    validate_config(cfg)
    out = Path(cfg.out) if cfg.out else Path(HydraConfig.get().runtime.output_dir) / "next_batch.csv"
    overwrite = bool(cfg.get("overwrite", False))
    check_output_file(out, overwrite)
    result = recommend(
        measured_paths=[str(p) for p in _listed(cfg.measured)],
        smiles=cfg.smiles,
        cell_lines=[str(c) for c in _listed(cfg.cell_lines)],
        score=cfg.score,
        model=instantiate(cfg.model),
        acquisition=build_acquisition(cfg),
        featurize=lambda screen: instantiate(cfg.features, screen),
        num_samples=cfg.num_samples,
        on_duplicate=cfg.on_duplicate,
        seed=cfg.seed,
        candidates=[str(p) for p in _listed(cfg.get("candidates"))] or None,
        exclude=[str(p) for p in _listed(cfg.get("exclude"))] or None,
        leave_out=[str(d) for d in _listed(cfg.get("leave_out"))],
        max_per_drug=cfg.get("max_per_drug"),
        on_invalid=cfg.get("on_invalid", "raise"),
        on_unknown_drug=cfg.get("on_unknown_drug", "raise"),
        drug_id_column=cfg.get("drug_id_column"),
        check_scale=bool(cfg.get("check_scale", True)),
        scoring=instantiate(cfg.scoring, _convert_="all"),
    )
    result.save(out, overwrite=overwrite)
    log.info("%s", result.summary())
    log.info("top of the batch:\n%s", result.to_text(rows=10))
    log.info("next batch written to %s", out)
    return out
