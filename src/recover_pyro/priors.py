"""Weight priors, at the path notebooks use (``from recover_pyro.priors import LaplacePrior``).

The priors live in the Pyro wing, :mod:`recover_pyro.bnn.priors`; this module only re-exports them.
"""

from recover_pyro.bnn.priors import (
    LaplacePrior,
    LogUniform,
    LogUniformPrior,
    NormalPrior,
    Prior,
    ScaleMixtureNormal,
    ScaleMixtureNormalPrior,
)

__all__ = [
    "LaplacePrior",
    "LogUniform",
    "LogUniformPrior",
    "NormalPrior",
    "Prior",
    "ScaleMixtureNormal",
    "ScaleMixtureNormalPrior",
]
