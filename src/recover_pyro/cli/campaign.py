"""``recover-campaign``: a simulated campaign (:mod:`recover_pyro.campaign`) built from a Hydra config.

recover-campaign +experiment=normal_ucb data=almanac campaign=almanac_mcf7
recover-campaign hydra.run.dir=<previous run dir> resume=true      # continue a killed run
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, cast

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from recover_pyro.campaign import CHECKPOINT, CampaignConfig, CampaignResult, recall_column, run_campaign
from recover_pyro.cli.builders import CONFIG_DIR, build_acquisition, build_features, build_screen, model_factory
from recover_pyro.cli.checks import validate_config
from recover_pyro.cli.errors import loader_spelling, reported_errors
from recover_pyro.cli.run_config import config_fingerprint, preserve_hydra_config
from recover_pyro.data.featurize import Features
from recover_pyro.logging_utils import cli_logging
from recover_pyro.models.base import SynergyModel

log = logging.getLogger(__name__)


def campaign_from_config(cfg: DictConfig, out_dir: str | Path) -> CampaignResult:
    """Build screen, features, model factory, acquisition and campaign settings from ``cfg`` and run."""
    validate_config(cfg)
    screen = build_screen(cfg)
    log.info("\n%s", screen.summary())
    features = build_features(cfg, screen)
    acquisition = build_acquisition(cfg)
    config: CampaignConfig = instantiate(cfg.campaign, _convert_="all")
    pretrain_factory = None
    if config.pretrain != "none":
        # One long fit: show its epochs whenever the campaign shows progress (round refits stay quiet).
        pretrain_cfg = OmegaConf.merge(cfg, {"fit_progress": config.progress})
        assert isinstance(pretrain_cfg, DictConfig)
        pretrain_factory = pretrain_model_factory(pretrain_cfg, features) or model_factory(pretrain_cfg, features)
    return run_campaign(
        screen,
        features,
        model_factory(cfg, features),
        acquisition,
        config,
        out_dir,
        score=cfg.data.score,
        resume=bool(cfg.resume),
        pretrain_factory=pretrain_factory,
        fingerprint=config_fingerprint(cfg),
        model_name=model_label(cfg),
    )


def model_label(cfg: DictConfig) -> str:
    """Short name of the configured model for logs and titles, e.g. ``BNNSynergyModel (LaplacePrior)``
    (``no model`` for a campaign whose acquisition needs none, e.g. random, and that fits none)."""
    if not build_acquisition(cfg).needs_model and not cfg.campaign.get("random_fits_model", False):
        return "no model"
    name = str(cfg.model._target_).rsplit(".", 1)[-1]
    prior = cfg.model.get("prior")
    return f"{name} ({str(prior._target_).rsplit('.', 1)[-1]})" if prior is not None and "_target_" in prior else name


def pretrain_model_factory(cfg: DictConfig, features: Features) -> Callable[..., SynergyModel] | None:
    """The pretraining model's factory: ``cfg`` with ``cfg.pretrain_overrides`` applied (``None`` if empty).

    ``pretrain_overrides`` are dotted ``key=value`` strings on the root config, e.g.
    ``["inference.epochs=5", "inference.lr=0.003"]`` for a BNN or ``["model.training.epochs=3"]`` for the
    deep ensemble; only training settings may change (round models load the pretrained weights).
    """
    overrides = list(cfg.get("pretrain_overrides") or [])
    if not overrides:
        return None
    bad = [o for o in overrides if not isinstance(o, str) or "=" not in o]
    if bad:
        raise ValueError(f"pretrain_overrides must be 'key=value' strings, got {bad}")
    # Merging into a DictConfig gives a DictConfig (OmegaConf.merge is typed for either container).
    return model_factory(cast(DictConfig, OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))), features)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="campaign")
def main(cfg: DictConfig) -> float:
    """``python -m recover_pyro.campaign``; returns the final top-1 % recall (for sweepers).

    A named error is one message on stderr and exit status 2 (:mod:`recover_pyro.cli.errors`)."""
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    preserve_hydra_config(out_dir, resuming=bool(cfg.resume) and (out_dir / CHECKPOINT).is_file())
    with reported_errors({**loader_spelling(cfg), "pretrain": "campaign.pretrain"}), cli_logging():
        result = campaign_from_config(cfg, out_dir)
    last = result.rounds.iloc[-1]
    recalls = ", ".join(f"{c} {last[c]:.3f}" for c in result.rounds.columns if c.startswith("recall_top"))
    log.info(
        "[%s / %s + %s] after %d experiments: %s",
        cfg.data.name,
        model_label(cfg),
        build_acquisition(cfg).name,
        int(last["n_measured"]),
        recalls,
    )
    log.info("rounds:\n%s", result.rounds.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    log.info("outputs in %s", out_dir)
    return float(last[recall_column(cfg.campaign.top_fractions[0])])
