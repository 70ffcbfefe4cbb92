"""The one interface between the model side and the decision side.

Anything that can be fitted on encoded experiments and return posterior predictive samples of shape
``(S, N)`` (posterior samples x candidates) is a :class:`SynergyModel`: Bayesian networks, deep ensembles
and MC dropout alike. Acquisition functions only ever see :class:`PredictiveSamples`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from scipy import stats

from recover_pyro.data.screen import Pairs
from recover_pyro.models.noise import Noise, variance_factor


@dataclass
class PredictiveSamples:
    """Posterior predictive samples on the original target scale.

    Attributes:
        f: ``(S, N)`` samples of the mean function (epistemic spread only).
        noise_scale: ``(S,)`` or scalar observation-noise scale :math:`\\sigma` (aleatoric), original scale.
        noise_df: degrees of freedom :math:`\\nu` of the Student-t noise :math:`\\sigma\\,t_\\nu` (> 2; ``inf``:
            Gaussian, where ``noise_scale`` is the noise standard deviation); see
            :mod:`recover_pyro.models.noise`.
    """

    f: torch.Tensor
    noise_scale: torch.Tensor
    noise_df: float = math.inf

    def __post_init__(self) -> None:
        variance_factor(self.noise_df)  # raises for noise_df <= 2 (no finite variance)

    @property
    def num_samples(self) -> int:
        return int(self.f.shape[0])

    @property
    def mean(self) -> torch.Tensor:
        """``(N,)`` posterior predictive mean."""
        return self.f.mean(0)

    @property
    def epistemic_std(self) -> torch.Tensor:
        """``(N,)`` standard deviation of the mean function across samples: the population (1/S) form, so
        ``mean`` and ``std`` are the moments of the mixture the samples represent (with K = 5 ensemble
        members the unbiased form would inflate the variance by 5/4)."""
        return self.f.std(0, unbiased=False)

    @property
    def aleatoric_std(self) -> torch.Tensor:
        """``(N,)`` noise standard deviation, :math:`\\sqrt{E[\\sigma^2]\\,\\nu / (\\nu - 2)}` (the factor is 1 for
        Gaussian noise)."""
        var = self.noise_scale.pow(2).mean() if self.noise_scale.dim() else self.noise_scale.pow(2)
        return (var * variance_factor(self.noise_df)).sqrt().expand(self.f.shape[1])

    @property
    def std(self) -> torch.Tensor:
        """``(N,)`` total predictive standard deviation, :math:`\\sqrt{Var[f] + E[\\sigma^2]}`."""
        return (self.epistemic_std.pow(2) + self.aleatoric_std.pow(2)).sqrt()

    def to(self, device: torch.device | str) -> "PredictiveSamples":
        """The same samples on ``device`` (models return them on the device they computed on)."""
        return PredictiveSamples(self.f.to(device), self.noise_scale.to(device), self.noise_df)

    def cpu(self) -> "PredictiveSamples":
        return self.to("cpu")

    def y(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(S, N)`` samples of a new measurement: ``f`` plus noise ``noise_scale * t(noise_df)``.

        Gaussian noise is drawn with :func:`torch.randn`; Student-t noise by inverting its CDF
        (:func:`scipy.stats.t.ppf`) at uniforms from ``generator`` (torch's own Student-t sampler takes no
        generator), on the CPU."""
        scale = self.noise_scale.reshape(-1, 1) if self.noise_scale.dim() else self.noise_scale
        if math.isinf(self.noise_df):
            noise = torch.randn(self.f.shape, generator=generator, dtype=self.f.dtype, device=self.f.device)
        else:
            # rand gives multiples of 2^-53 in [0, 1); the half-step shift keeps u strictly inside (0, 1).
            u = torch.rand(self.f.shape, generator=generator, dtype=torch.float64, device=self.f.device) + 2.0**-54
            quantile = stats.t.ppf(u.cpu().numpy(), self.noise_df)
            noise = torch.as_tensor(quantile, dtype=self.f.dtype, device=self.f.device)
        return self.f + scale * noise


@dataclass
class FitReport:
    """What a fit did.

    Attributes:
        losses: per-epoch training loss of the main stage (per-datum negative ELBO for SVI, MSE otherwise).
        val_metric: per-epoch validation metric of the main stage (empty without validation data).
        best_epoch: the epoch whose parameters were kept.
        seconds: wall time of the fit.
        curve: one dict per epoch of every stage (``stage``, ``epoch`` and what that stage measures, e.g.
            ``neg_elbo``, ``expected_nll``, ``kl``, ``val_nll``); written as ``fit_curve.csv`` by the entry points.
        warm_start_epoch: the deterministic warm start's kept epoch (-1: none).
        converged: whether the fit met its stopping rule before running out of epochs.
    """

    losses: list[float] = field(default_factory=list)
    val_metric: list[float] = field(default_factory=list)
    best_epoch: int = -1
    seconds: float = 0.0
    curve: list[dict[str, Any]] = field(default_factory=list)
    warm_start_epoch: int = -1
    converged: bool = True


@runtime_checkable
class SynergyModel(Protocol):
    """Fit on measured :class:`Pairs`; return ``(S, N)`` predictive samples for candidate :class:`Pairs`.

    Contract:

    * ``fit`` on a fresh object trains from scratch (nothing is inherited from another model, e.g. via
      Pyro's global param store); calling ``fit`` again on a fitted object continues from its current
      parameters (warm start).
    * ``predict`` returns samples on the original target scale (targets are standardised internally), on
      the device the model computes on (``PredictiveSamples.cpu()`` brings them back); ``fit`` and
      ``predict`` accept :class:`Pairs` on any device.
    * ``state_dict`` holds only tensors / numbers (loadable with ``torch.load(..., weights_only=True)``);
      ``load_state_dict`` on an object built with the same constructor arguments restores predictions exactly.
    * ``estimate_noise`` sets the observation noise of a fitted model from held-out experiments by the one
      convention of :mod:`recover_pyro.models.noise` (``fit`` calls it on its validation or held-out set).
    """

    def fit(self, train: Pairs, val: Pairs | None = None) -> FitReport: ...

    def estimate_noise(self, train: Pairs, val: Pairs | None) -> Noise: ...

    def predict(self, pairs: Pairs, num_samples: int = 100) -> PredictiveSamples: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
