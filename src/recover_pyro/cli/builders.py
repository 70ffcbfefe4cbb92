"""Build the pieces of a run (screen, features, split, model) from a Hydra config.

Each builder only calls ``hydra.utils.instantiate`` on a config group whose ``_target_`` is an ordinary
function or class of this package, so everything here can equally be built in plain Python with the same
names (see the README's tour).
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Callable

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from recover_pyro.acquisition import Acquisition
from recover_pyro.data.featurize import Features
from recover_pyro.errors import ConfigValueError
from recover_pyro.data.screen import Screen
from recover_pyro.data.splits import Split
from recover_pyro.models.base import SynergyModel

log = logging.getLogger(__name__)

# Configs ship inside the package, so a non-editable install finds them from any directory.
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


def build_screen(cfg: DictConfig) -> Screen:
    """Load ``cfg.data.screen`` and restrict it to ``cfg.data.cell_lines`` / ``cfg.data.studies``."""
    screen: Screen = instantiate(cfg.data.screen)
    if cfg.data.get("cell_lines") or cfg.data.get("studies"):
        screen = screen.select(cell_lines=cfg.data.get("cell_lines"), studies=cfg.data.get("studies"))
    if cfg.data.score not in screen.score_columns:
        raise ConfigValueError(
            "data.score",
            f"{cfg.data.score!r} is not a score column of {screen.name}; choose one of "
            f"{list(screen.score_columns)}, e.g. data.score={screen.score_columns[0]}",
        )
    return screen


def build_features(cfg: DictConfig, screen: Screen) -> Features:
    return instantiate(cfg.features, screen)


def build_split(cfg: DictConfig, screen: Screen) -> Split:
    return instantiate(cfg.split, screen)


def model_factory(cfg: DictConfig, features: Features) -> Callable[..., SynergyModel]:
    """A zero-argument callable building a fresh model on ``features`` (``seed`` may be overridden)."""
    partial_model = instantiate(cfg.model)

    def make(**overrides: object) -> SynergyModel:
        return partial_model(features.drug, features.cell, **overrides)

    return make


def build_acquisition(cfg: DictConfig) -> Acquisition:
    """The acquisition strategy of ``cfg.acquisition`` (any :class:`~recover_pyro.acquisition.Acquisition`
    subclass named by its ``_target_``, the package's or the user's).

    Settings the strategy does not take are left out with a warning: they are another strategy's, merged in
    when a preset's group is swapped (``+experiment=normal_ucb acquisition=greedy`` keeps the preset's
    ``kappa``)."""
    node = OmegaConf.to_container(cfg.acquisition, resolve=True)
    assert isinstance(node, dict)
    target = get_class(str(node["_target_"]))
    if not issubclass(target, Acquisition):
        raise TypeError(
            f"acquisition._target_={node['_target_']!r} is a {target.__name__}, not an Acquisition; name a "
            "subclass of recover_pyro.acquisition.Acquisition"
        )
    params = inspect.signature(target).parameters.values()
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        accepted = {p.name for p in params}
        unused = sorted(str(k) for k in node if k != "_target_" and k not in accepted)
        if unused:
            log.warning(
                "acquisition %s takes no %s; ignoring them (settings of another acquisition, e.g. a preset's)",
                target.__name__,
                ", ".join(unused),
            )
            node = {k: v for k, v in node.items() if k not in unused}
    acquisition: Acquisition = instantiate(node, _convert_="all")
    return acquisition
