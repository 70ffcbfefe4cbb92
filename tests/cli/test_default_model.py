"""Each command's default model is a named preset, and choosing any other model drops the default's settings."""

from __future__ import annotations

from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from recover_pyro.cli.builders import CONFIG_DIR


def _compose(config_name: str, overrides: list[str]) -> Any:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name, overrides=overrides)


@pytest.mark.parametrize(
    ("config_name", "preset"),
    [("config", "normal_gp_identity"), ("campaign", "normal_gp_identity_ucb"), ("recommend", "normal_gp_identity_ucb")],
)
def test_the_default_is_the_named_preset(config_name: str, preset: str) -> None:
    default = OmegaConf.to_container(_compose(config_name, []), resolve=False)
    named = OmegaConf.to_container(_compose(config_name, [f"+experiment={preset}"]), resolve=False)
    assert default == named
    # Cell-line effects are off on a single cell line (tests/bnn/test_identity_effects.py).
    assert default["model"]["predictor"]["gp_features"] > 0
    assert default["model"]["identity_effects"] == "drugs_and_cells"
    assert default["features"]["one_hot"] is False and default["inference"]["elbo"] == "meanfield"
    assert default["guide"]["_target_"].endswith("RowMultivariateNormalGuide")


@pytest.mark.parametrize("overrides", [["+experiment=normal"], ["model=bnn"], ["+experiment=ensemble"]])
def test_another_model_drops_every_setting_of_the_default(overrides: list[str]) -> None:
    cfg = _compose("config", overrides)
    assert cfg.features.one_hot is True and cfg.inference.elbo == "trace"
    assert cfg.model.get("identity_effects", "none") == "none"
    assert cfg.model.get("predictor", {}).get("gp_features", 0) == 0


@pytest.mark.parametrize("kind", ["thompson", "greedy", "ei", "ucb"])
def test_the_default_model_takes_any_acquisition(kind: str) -> None:
    cfg = _compose("campaign", [f"acquisition={kind}"])
    assert cfg.model.predictor.gp_features > 0
    assert instantiate(cfg.acquisition).name == kind  # builds: the default model sets no acquisition keys


def test_the_campaign_default_acquisition_is_the_ucb_schedule() -> None:
    acquisition = instantiate(_compose("campaign", []).acquisition)
    assert (acquisition.kappa, acquisition.kappa_decay) == (4.0, 0.8)
    assert instantiate(_compose("campaign", ["acquisition=ucb"]).acquisition).kappa == 1.0
