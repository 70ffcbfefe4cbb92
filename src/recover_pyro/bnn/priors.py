"""Weight priors for Bayesian layers.

A :class:`Prior` is a plain object (built by Hydra ``_target_`` with the same names, or directly in a
notebook) that answers one question: *which distribution does a weight site of this shape and fan-in get?*
Subclasses implement :meth:`Prior.base`, the scalar distribution of one weight; :meth:`Prior.distribution`
expands it to the site shape and declares every dimension an event dimension, which is what a
:class:`~pyro.nn.PyroSample` site needs.

Priors here:

* :class:`NormalPrior`: :math:`w \\sim N(0, s^2)`, optionally :math:`s / \\sqrt{\\text{fan-in}}`;
* :class:`LaplacePrior`: :math:`w \\sim \\text{Laplace}(0, b)` (sparsity-inducing);
* :class:`ScaleMixtureNormalPrior`: :math:`\\pi N(0, \\sigma_1^2) + (1 - \\pi) N(0, \\sigma_2^2)`
  (Blundell et al. 2015), backed by :class:`ScaleMixtureNormal`;
* :class:`LogUniformPrior`: the improper :math:`p(|w|) \\propto 1 / |w|` of sparse variational dropout
  (Molchanov et al. 2017), backed by :class:`LogUniform`.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Sequence

import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor
from torch.distributions.utils import broadcast_all


class ScaleMixtureNormal(TorchDistribution):
    r"""Zero-mean two-component scale mixture :math:`\pi N(0, \sigma_1^2) + (1 - \pi) N(0, \sigma_2^2)`.

    .. math:: \log p(w) = \mathrm{logsumexp}\big(\log \pi + \log N(w; 0, \sigma_1^2),\;
              \log(1 - \pi) + \log N(w; 0, \sigma_2^2)\big)

    Sampling picks the component with probability :math:`\pi`, then draws from it (not reparameterised).
    """

    arg_constraints = {"pi": constraints.unit_interval, "sigma1": constraints.positive, "sigma2": constraints.positive}
    support = constraints.real
    has_rsample = False

    def __init__(
        self, pi: Tensor | float, sigma1: Tensor | float, sigma2: Tensor | float, validate_args: bool | None = None
    ) -> None:
        self.pi, self.sigma1, self.sigma2 = broadcast_all(pi, sigma1, sigma2)
        super().__init__(self.pi.shape, validate_args=validate_args)

    def expand(self, batch_shape: Sequence[int], _instance: "ScaleMixtureNormal | None" = None) -> "ScaleMixtureNormal":
        new = self._get_checked_instance(ScaleMixtureNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.pi = self.pi.expand(batch_shape)
        new.sigma1 = self.sigma1.expand(batch_shape)
        new.sigma2 = self.sigma2.expand(batch_shape)
        super(ScaleMixtureNormal, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self) -> Tensor:
        return torch.zeros_like(self.pi)

    @property
    def variance(self) -> Tensor:
        return self.pi * self.sigma1.pow(2) + (1 - self.pi) * self.sigma2.pow(2)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        wide = torch.log(self.pi) + dist.Normal(0.0, self.sigma1).log_prob(value)
        narrow = torch.log1p(-self.pi) + dist.Normal(0.0, self.sigma2).log_prob(value)
        return torch.logaddexp(wide, narrow)

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            wide = torch.rand(shape, dtype=self.pi.dtype, device=self.pi.device) < self.pi.expand(shape)
            scale = torch.where(wide, self.sigma1.expand(shape), self.sigma2.expand(shape))
            return scale * torch.randn(shape, dtype=scale.dtype, device=scale.device)


class LogUniform(TorchDistribution):
    r"""Improper log-uniform density over the real line, :math:`\log p(w) = -\log |w|` (unnormalised).

    It is the prior of sparse variational dropout; it has no parameters, only a ``batch_shape``. Its KL
    divergence from the sparse-dropout posterior is registered in :mod:`recover_pyro.bnn.guides`. It cannot be
    sampled (see :meth:`sample`).
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    support = constraints.real

    def __init__(self, batch_shape: Sequence[int] = torch.Size(), validate_args: bool | None = None) -> None:
        super().__init__(torch.Size(batch_shape), validate_args=validate_args)

    def expand(self, batch_shape: Sequence[int], _instance: "LogUniform | None" = None) -> "LogUniform":
        new = self._get_checked_instance(LogUniform, _instance)
        super(LogUniform, new).__init__(torch.Size(batch_shape), validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        lp = -value.abs().log()
        return lp.expand(torch.broadcast_shapes(lp.shape, self.batch_shape))

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()) -> Tensor:
        raise NotImplementedError(
            "LogUniform is an improper prior (p(w) ~ 1/|w| does not integrate to 1) and cannot be "
            "sampled; use it only as the prior of a model whose weights come from a guide "
            "(e.g. SparseVariationalDropoutGuide), not for prior predictive sampling."
        )


class Prior(abc.ABC):
    """A prior over network weights: one scalar distribution per weight, i.i.d. within a site.

    Subclasses implement :meth:`base`; :meth:`distribution` builds the site distribution.
    """

    @abc.abstractmethod
    def base(
        self, fan_in: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> TorchDistribution:
        """Distribution of a single weight (``batch_shape == ()``) of a layer with this fan-in."""

    def distribution(
        self,
        shape: Sequence[int],
        fan_in: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> TorchDistribution:
        """Distribution of a whole weight site: ``event_shape == shape``, ``batch_shape == ()``.

        Args:
            shape: the site shape, e.g. ``(out, in)`` for a linear weight or ``(out,)`` for its bias.
            fan_in: number of inputs of the layer the site belongs to (used by fan-in scaled priors).
        """
        if fan_in < 1:
            raise ValueError(f"{type(self).__name__}: fan_in must be >= 1, got {fan_in}")
        shape = torch.Size(shape)
        return self.base(fan_in, dtype=dtype, device=device).expand(shape).to_event(len(shape))


def _check_positive(owner: str, **values: float) -> None:
    for name, value in values.items():
        if not value > 0 or not math.isfinite(value):
            raise ValueError(f"{owner}: {name} must be a positive finite number, got {value}")


@dataclass(frozen=True)
class NormalPrior(Prior):
    """:math:`w \\sim N(0, s^2)` with :math:`s` = ``scale``, or ``scale / sqrt(fan_in)`` if ``fan_in_scaled``.

    With ``empirical_bayes`` each Bayesian site's :math:`s` is a learned parameter (type-II maximum likelihood
    under the ELBO, :class:`~recover_pyro.bnn.layers.BayesianRegression`) that starts at that value: with a
    mean-field Normal posterior its optimum is :math:`s^2 = \\frac{1}{n}\\sum_i (\\mu_i^2 + \\sigma_i^2)` over the
    site's ``n`` weights, so the prior follows what the data make of the weights (on a first round of 60
    experiments, a prior no wider than the posterior it yields).
    """

    scale: float = 1.0
    fan_in_scaled: bool = False
    empirical_bayes: bool = False

    def __post_init__(self) -> None:
        _check_positive("NormalPrior", scale=self.scale)

    def site_scale(self, fan_in: int) -> float:
        """The standard deviation of each weight of a layer with this fan-in."""
        return self.scale / math.sqrt(fan_in) if self.fan_in_scaled else self.scale

    def base(
        self, fan_in: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> TorchDistribution:
        return dist.Normal(
            torch.zeros((), dtype=dtype, device=device),
            torch.tensor(self.site_scale(fan_in), dtype=dtype, device=device),
        )


@dataclass(frozen=True)
class LaplacePrior(Prior):
    """:math:`w \\sim \\text{Laplace}(0, b)`, density :math:`e^{-|w|/b} / 2b`, variance :math:`2b^2`.

    ``scale = sigma / sqrt(2)`` matches the variance of ``NormalPrior(sigma)``.
    """

    scale: float = 1.0

    def __post_init__(self) -> None:
        _check_positive("LaplacePrior", scale=self.scale)

    def base(
        self, fan_in: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> TorchDistribution:
        return dist.Laplace(
            torch.zeros((), dtype=dtype, device=device), torch.tensor(self.scale, dtype=dtype, device=device)
        )


@dataclass(frozen=True)
class ScaleMixtureNormalPrior(Prior):
    """:math:`\\pi N(0, \\sigma_1^2) + (1 - \\pi) N(0, \\sigma_2^2)` (Blundell et al. 2015, "Bayes by Backprop")."""

    pi: float = 0.5
    sigma1: float = 1.0
    sigma2: float = math.exp(-6.0)

    def __post_init__(self) -> None:
        if not 0.0 <= self.pi <= 1.0:
            raise ValueError(f"ScaleMixtureNormalPrior: pi must lie in [0, 1], got {self.pi}")
        _check_positive("ScaleMixtureNormalPrior", sigma1=self.sigma1, sigma2=self.sigma2)

    def base(
        self, fan_in: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> TorchDistribution:
        def t(v: float) -> Tensor:
            return torch.tensor(v, dtype=dtype, device=device)

        return ScaleMixtureNormal(t(self.pi), t(self.sigma1), t(self.sigma2))


@dataclass(frozen=True)
class LogUniformPrior(Prior):
    """Improper :math:`p(|w|) \\propto 1/|w|` for sparse variational dropout; pair it with
    :class:`~recover_pyro.bnn.guides.SparseVariationalDropoutGuide` and ``elbo="meanfield"`` so that the
    registered (Molchanov) KL is used."""

    def base(
        self, fan_in: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> TorchDistribution:
        return LogUniform()
