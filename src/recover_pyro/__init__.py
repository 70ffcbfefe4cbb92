"""recover_pyro: RECOVER-style sequential drug-combination discovery with Bayesian neural networks in Pyro.

The public API is importable from the package root::

    from recover_pyro import BNNSynergyModel, Acquisition, load_almanac, featurize, make_split

Names are resolved lazily (PEP 562 ``__getattr__``): ``import recover_pyro`` stays cheap (no torch, Pyro or
RDKit import) until one of them is used, which matters for the console scripts' ``--help`` and for tools
that only read ``__version__``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("recover_pyro")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # data
    "Screen": "recover_pyro.data.screen",
    "Pairs": "recover_pyro.data.screen",
    "load_almanac": "recover_pyro.data.loaders",
    "load_oneil": "recover_pyro.data.loaders",
    "load_drugcomb": "recover_pyro.data.loaders",
    "load_csv": "recover_pyro.data.loaders",
    "make_synthetic_screen": "recover_pyro.data.synthetic",
    "Features": "recover_pyro.data.featurize",
    "featurize": "recover_pyro.data.featurize",
    "Split": "recover_pyro.data.splits",
    "make_split": "recover_pyro.data.splits",
    # models
    "PredictiveSamples": "recover_pyro.models.base",
    "SynergyModel": "recover_pyro.models.base",
    "RecoverPredictor": "recover_pyro.models.predictor",
    "BNNSynergyModel": "recover_pyro.bnn.model",
    "DeterministicModel": "recover_pyro.models.baselines",
    "MCDropoutModel": "recover_pyro.models.baselines",
    "DeepEnsemble": "recover_pyro.models.baselines",
    "TrainConfig": "recover_pyro.models.baselines",
    "NormalPrior": "recover_pyro.bnn.priors",
    "LaplacePrior": "recover_pyro.bnn.priors",
    "ScaleMixtureNormalPrior": "recover_pyro.bnn.priors",
    "LogUniformPrior": "recover_pyro.bnn.priors",
    "MeanFieldNormalGuide": "recover_pyro.bnn.guides",
    "RowMultivariateNormalGuide": "recover_pyro.bnn.guides",
    "SparseVariationalDropoutGuide": "recover_pyro.bnn.guides",
    "SVIConfig": "recover_pyro.bnn.inference",
    # acquisition, campaigns, metrics
    "Acquisition": "recover_pyro.acquisition",
    "CampaignConfig": "recover_pyro.campaign",
    "run_campaign": "recover_pyro.campaign",
    "evaluate": "recover_pyro.metrics",
    # the wet-lab loop: measured files in, the next plate out; a loaded screen as measured files
    "recommend": "recover_pyro.wetlab",
    "Recommendation": "recover_pyro.wetlab",
    "save_measurements_csv": "recover_pyro.data.loaders",
    "save_drug_table": "recover_pyro.data.loaders",
    # dose-response blocks -> synergy scores (SynergyFinder's rules), and a block file as a measured screen
    "read_blocks": "recover_pyro.data.blocks",
    "is_block_file": "recover_pyro.data.blocks",
    "score_blocks": "recover_pyro.data.synergy",
    "SynergyResult": "recover_pyro.data.synergy",
    "load_block_measurements": "recover_pyro.data.synergy",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # static checkers and IDEs see the real objects
    from recover_pyro.acquisition import Acquisition
    from recover_pyro.bnn.guides import MeanFieldNormalGuide, RowMultivariateNormalGuide, SparseVariationalDropoutGuide
    from recover_pyro.bnn.inference import SVIConfig
    from recover_pyro.bnn.model import BNNSynergyModel
    from recover_pyro.bnn.priors import LaplacePrior, LogUniformPrior, NormalPrior, ScaleMixtureNormalPrior
    from recover_pyro.campaign import CampaignConfig, run_campaign
    from recover_pyro.data.blocks import is_block_file, read_blocks
    from recover_pyro.data.featurize import Features, featurize
    from recover_pyro.data.loaders import (
        load_almanac,
        load_csv,
        load_drugcomb,
        load_oneil,
        save_drug_table,
        save_measurements_csv,
    )
    from recover_pyro.data.screen import Pairs, Screen
    from recover_pyro.data.splits import Split, make_split
    from recover_pyro.data.synergy import SynergyResult, load_block_measurements, score_blocks
    from recover_pyro.data.synthetic import make_synthetic_screen
    from recover_pyro.metrics import evaluate
    from recover_pyro.models.base import PredictiveSamples, SynergyModel
    from recover_pyro.models.baselines import DeepEnsemble, DeterministicModel, MCDropoutModel, TrainConfig
    from recover_pyro.models.predictor import RecoverPredictor
    from recover_pyro.wetlab import Recommendation, recommend


def __getattr__(name: str) -> Any:
    """Import the module defining public ``name`` on first access and cache the object in the package."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'recover_pyro' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
