"""Variational families over the Bayesian weight sites of a :class:`~recover_pyro.bnn.layers.BayesianRegression`.

Both guides are fully factorised (mean-field) :class:`~pyro.nn.PyroModule` s holding their variational
parameters, start from the deterministic predictor's initial weights, sample the sites in the model's
order, and can draw ``S`` samples of every weight at once (:meth:`WeightGuide.sample_weights`) for
vectorised prediction.

* :class:`MeanFieldNormalGuide`: :math:`q(w) = N(\\mu, s^2)` per weight.
* :class:`SparseVariationalDropoutGuide`: :math:`q(w) = N(\\theta, \\alpha \\theta^2)` with a learnable
  :math:`\\log \\alpha` per weight (Molchanov, Ashukha & Vetrov 2017), learned through
  :math:`\\log \\sigma^2 = \\log \\alpha + \\log \\theta^2`. Its distribution
  :class:`SparseDropoutNormal` has a registered KL to :class:`~recover_pyro.bnn.priors.LogUniform` (the
  paper's approximation), used by :class:`pyro.infer.TraceMeanField_ELBO`. Weights with
  :math:`\\log \\alpha >` ``threshold`` (3) are pruned (set to 0) when sampling for prediction.

Guides are built from the model by a factory (Hydra ``_partial_: true``), e.g.
``functools.partial(MeanFieldNormalGuide, init_scale=0.01)(model)``.

A model with identity random effects (:class:`~recover_pyro.bnn.layers.IdentityEffects`) gets the same
factors in every guide (:class:`WeightGuide` adds them), per group: :math:`q(\\tau)`, a point mass at
:math:`e^\\mu` (empirical Bayes) or :math:`\\text{LogNormal}(\\mu, \\rho^2)` (hierarchical), and
:math:`q(u_d) = N(m_d, s_d^2)`, starting at the prior :math:`N(0, \\tau_0^2)`. The effects' factors do not depend
on :math:`\\tau` (centred): a non-centred :math:`u = \\tau e`, :math:`q(e_d) = N(m_d, s_d^2)`, made the data's
hold on each :math:`u_d` tie :math:`\\tau` to the :math:`m_d` and :math:`\\tau` crawl along that ridge (0.48 for a
true 1.0 on a toy problem at ELBO convergence). A drug no datum informs gets :math:`m_d \\to 0, s_d \\to \\tau`
from the KL term alone (exactly with ``elbo="meanfield"``'s analytic KL, up to Monte-Carlo noise with
``Trace_ELBO``). ``locs`` and ``sample_weights`` cover these sites too.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Sequence, cast

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.distributions import TorchDistribution, constraints
from pyro.nn import PyroParam
from torch import Tensor
from torch.distributions import register_kl

from recover_pyro.bnn.layers import (
    IDENTITY_INIT_LOG_SD,
    IDENTITY_INIT_SCALE,
    BayesianRegression,
    IdentitySite,
    LocalPyroModule,
)
from recover_pyro.bnn.priors import LogUniform
from recover_pyro.data.screen import Pairs

# Molchanov et al. (2017), eq. 14: -KL(q || p) ~ k1 sigmoid(k2 + k3 log a) - 0.5 log(1 + 1/a) - k1.
MOLCHANOV_K1, MOLCHANOV_K2, MOLCHANOV_K3 = 0.63576, 1.87320, 1.48695
LOG_ALPHA_RANGE = (-10.0, 10.0)  # log-alpha is clamped to this range, as in the paper's code
# Floor of the initial sigma: zero-initialised weights (biases, FiLM) would otherwise start at sigma ~ 0,
# where gradients of log(sigma) overflow.
MIN_INIT_SCALE = 1e-4


class SparseDropoutNormal(dist.Normal):
    r"""The sparse variational dropout posterior :math:`N(\theta, \sigma^2) = N(\theta, \alpha\theta^2)`.

    A Normal with ``loc`` :math:`\theta` and ``scale`` :math:`\sigma`, read as dropout rate
    :math:`\alpha = \sigma^2 / \theta^2` (Molchanov et al.'s additive reparameterisation: learning
    :math:`\sigma` rather than :math:`\alpha` keeps :math:`\alpha`'s noise out of the gradient of
    :math:`\theta`). Analytic KLs: to :class:`~recover_pyro.bnn.priors.LogUniform` the registered Molchanov
    approximation; to a Normal the Normal-Normal closed form (inherited).
    """

    @property
    def log_alpha(self) -> Tensor:
        r""":math:`\log \alpha = \log \sigma^2 - \log \theta^2`, clamped to ``LOG_ALPHA_RANGE``."""
        tiny = torch.finfo(self.loc.dtype).tiny
        return (2.0 * (self.scale.log() - self.loc.abs().clamp_min(tiny).log())).clamp(*LOG_ALPHA_RANGE)

    def expand(
        self, batch_shape: Sequence[int], _instance: "SparseDropoutNormal | None" = None
    ) -> "SparseDropoutNormal":
        new = self._get_checked_instance(SparseDropoutNormal, _instance)
        return super().expand(batch_shape, _instance=new)


def molchanov_kl(log_alpha: Tensor) -> Tensor:
    r"""Elementwise approximate :math:`KL(N(\theta, \alpha\theta^2) \| \text{LogUniform})`, which
    depends on :math:`\alpha` only and tends to 0 as :math:`\alpha \to \infty`."""
    neg_kl = (
        MOLCHANOV_K1 * torch.sigmoid(MOLCHANOV_K2 + MOLCHANOV_K3 * log_alpha)
        - 0.5 * F.softplus(-log_alpha)
        - MOLCHANOV_K1
    )
    return -neg_kl


@register_kl(SparseDropoutNormal, LogUniform)
def _kl_sparse_dropout_log_uniform(q: SparseDropoutNormal, p: LogUniform) -> Tensor:
    kl = molchanov_kl(q.log_alpha)
    return kl.expand(torch.broadcast_shapes(kl.shape, p.batch_shape))


def _key(site: str) -> str:
    """Attribute name for a site name (module attribute names cannot contain dots)."""
    return site.replace(".", "__")


class WeightGuide(LocalPyroModule):
    """Base class: a fully factorised guide over ``model.sites``.

    Subclasses define the per-site distribution (:meth:`site_distribution`), posterior ``locs`` / ``scales``
    and :meth:`sample_weights` of the weight sites; ``locs`` and ``sample_weights`` add the identity sites
    (:meth:`identity_locs`, :meth:`identity_samples`), whose factors this base class holds.
    """

    def __init__(self, model: BayesianRegression) -> None:
        super().__init__()
        if not model.sites:
            raise ValueError("the model has no Bayesian weight sites")
        self.site_shapes: dict[str, torch.Size] = {name: s.shape for name, s in model.sites.items()}
        # K > 1: every site's factors carry a leading component dimension; q is their uniform mixture.
        self.components: int = model.components
        identity = model.identity
        self.identity_sites: tuple[IdentitySite, ...] = () if identity is None else identity.sites
        self.identity_hierarchical = identity is not None and identity.hierarchical
        like = next(iter(model.sites.values())).init
        for site in self.identity_sites:
            # log tau: the point estimate (empirical Bayes) or the LogNormal's loc (hierarchical) ...
            setattr(self, f"{_key(site.scale_name)}_loc", PyroParam(like.new_tensor(math.log(IDENTITY_INIT_SCALE))))
            if self.identity_hierarchical:  # ... and its scale
                setattr(
                    self,
                    f"{_key(site.scale_name)}_scale",
                    PyroParam(like.new_tensor(IDENTITY_INIT_LOG_SD), constraints.positive),
                )
            # q(u) = N(m, s^2) starts at the prior N(0, tau_0^2).
            setattr(self, f"{_key(site.name)}_loc", PyroParam(like.new_zeros(site.size)))
            setattr(
                self,
                f"{_key(site.name)}_scale",
                PyroParam(like.new_full((site.size,), IDENTITY_INIT_SCALE), constraints.positive),
            )

    def _param(self, site: str, what: str) -> Tensor:
        return getattr(self, f"{_key(site)}_{what}")

    def loc_parameters(self) -> list[torch.nn.Parameter]:
        """The (unconstrained) parameters behind the per-weight means, in site order, then the means :math:`m` of
        the identity effects (the warm start fits them with the weights)."""
        return [
            *(self._unconstrained(site, "loc") for site in self.site_shapes),
            *(self._unconstrained(site.name, "loc") for site in self.identity_sites),
        ]

    def scale_parameters(self) -> list[torch.nn.Parameter]:
        """The (unconstrained, log-scale) parameters behind the per-weight scales, in site order, then those of
        the identity effects: :math:`\\log\\tau` (the point estimate or the LogNormal's loc), the LogNormal's
        scale (hierarchical) and the effects' scales :math:`s`."""
        identity = []
        for site in self.identity_sites:
            identity.append(self._unconstrained(site.scale_name, "loc"))
            if self.identity_hierarchical:
                identity.append(self._unconstrained(site.scale_name, "scale"))
            identity.append(self._unconstrained(site.name, "scale"))
        return [*(self._unconstrained(site, "scale") for site in self.site_shapes), *identity]

    def _unconstrained(self, site: str, what: str) -> torch.nn.Parameter:
        name = f"{_key(site)}_{what}"
        # PyroParam stores the free parameter as `<name>_unconstrained`, read by name (Pyro's own convention).
        return getattr(self, f"{name}_unconstrained") if hasattr(self, f"{name}_unconstrained") else getattr(self, name)

    def site_distribution(self, site: str) -> TorchDistribution:
        """Variational distribution of one site, ``batch_shape + event_shape == shape`` (mean-field guides: no
        event dims)."""
        raise NotImplementedError(f"{type(self).__name__} must implement site_distribution")

    def locs(self) -> dict[str, Tensor]:
        """``{site: (*shape)}`` posterior means used for prediction (and :meth:`identity_locs`)."""
        raise NotImplementedError(f"{type(self).__name__} must implement locs")

    def scales(self) -> dict[str, Tensor]:
        """``{site: (*shape)}`` posterior standard deviations of the weight sites."""
        raise NotImplementedError(f"{type(self).__name__} must implement scales")

    def sample_weights(self, num_samples: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``{site: (S, *shape)}``: ``S`` joint samples of every Bayesian weight, for prediction, then of the
        identity sites (:meth:`identity_samples`, drawn after the weights from the same generator)."""
        raise NotImplementedError(f"{type(self).__name__} must implement sample_weights")

    def fit_summary(self) -> dict[str, float]:
        """Numbers about the fitted posterior worth reporting with a fit's metrics (none by default)."""
        return {}

    def update_on_features(
        self, model: BayesianRegression, z: Tensor, train: Pairs, noise_var: Tensor | None = None
    ) -> None:
        """Called by SVI with a frozen trunk before its first step and after its last, with the trunk outputs
        ``z`` ``(N, K)`` of the training pairs ``train`` (standardised targets) and, after the last step, the
        learned noise variance ``noise_var``: a guide whose head is conjugate to the likelihood may set it to its
        exact posterior given everything else (nothing by default; an extension point)."""

    def closed_form_parameters(self, model: BayesianRegression) -> list[torch.nn.Parameter]:
        """Parameters that :meth:`update_on_features` sets in closed form, so SVI leaves them alone (none)."""
        return []

    def forward(self, *args: Any, **kwargs: Any) -> None:
        """Sample every site, the weights then the identity effects (model arguments are accepted and ignored)."""
        with poutine.scale(scale=1.0 / self.components) if self.components > 1 else contextlib.nullcontext():
            for site, shape in self.site_shapes.items():
                q = self.site_distribution(site)
                pyro.sample(site, q.to_event(len(shape) - len(q.event_shape)))
        for group in self.identity_sites:
            pyro.sample(group.scale_name, self.scale_distribution(group))
            pyro.sample(group.name, self.effect_distribution(group))

    def scale_distribution(self, site: IdentitySite) -> TorchDistribution:
        """:math:`q(\\tau)` of an identity group: a point mass at :math:`e^\\mu` (empirical Bayes) or
        LogNormal(:math:`\\mu, \\rho^2`) (hierarchical)."""
        mu = self._param(site.scale_name, "loc")
        if self.identity_hierarchical:
            return dist.LogNormal(mu, self._param(site.scale_name, "scale"))
        return dist.Delta(mu.exp())

    def effect_distribution(self, site: IdentitySite) -> TorchDistribution:
        """:math:`q(u) = N(m, s^2)` over the ``(size,)`` effects of a group (one event)."""
        return dist.Normal(self._param(site.name, "loc"), self._param(site.name, "scale")).to_event(1)

    def identity_locs(self) -> dict[str, Tensor]:
        """``{site: value}`` where one value of each identity site is needed (the warm start): the means
        :math:`m` of the effects and the median :math:`e^\\mu` of :math:`\\tau` (its point estimate under empirical
        Bayes)."""
        out = {}
        for site in self.identity_sites:
            out[site.scale_name] = self._param(site.scale_name, "loc").exp()
            out[site.name] = self._param(site.name, "loc")
        return out

    def identity_samples(self, num_samples: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``{site: (S, *shape)}`` joint samples of the identity sites (``tau``: ``(S,)``), per group the scale
        then the effects."""
        out = {}
        for site in self.identity_sites:
            mu = self._param(site.scale_name, "loc")
            if self.identity_hierarchical:
                eps = torch.randn((num_samples,), generator=generator, dtype=mu.dtype, device=mu.device)
                out[site.scale_name] = (mu + self._param(site.scale_name, "scale") * eps).exp()
            else:
                out[site.scale_name] = mu.exp().expand(num_samples)
            loc, scale = self._param(site.name, "loc"), self._param(site.name, "scale")
            eps = torch.randn((num_samples, site.size), generator=generator, dtype=loc.dtype, device=loc.device)
            out[site.name] = loc + scale * eps
        return out

    def identity_scale_means(self) -> dict[str, Tensor]:
        """``{group: E_q[tau]}`` (0-d, model scale): :math:`e^\\mu` (empirical Bayes) or :math:`e^{\\mu + \\rho^2/2}`."""
        out = {}
        for site in self.identity_sites:
            log_tau = self._param(site.scale_name, "loc")
            if self.identity_hierarchical:
                log_tau = log_tau + 0.5 * self._param(site.scale_name, "scale") ** 2
            out[site.group] = log_tau.exp()
        return out

    def _noise(self, site: str, num_samples: int, generator: torch.Generator | None) -> Tensor:
        """``(S, *shape)`` standard normal draws (``(S, *shape[1:])`` with components: one value per sample)."""
        loc = self._param(site, "loc")
        shape = self.site_shapes[site][1:] if self.components > 1 else self.site_shapes[site]
        return torch.randn((num_samples, *shape), generator=generator, dtype=loc.dtype, device=loc.device)

    def _per_sample(self, value: Tensor, num_samples: int) -> Tensor:
        """With components, sample ``s`` takes component ``s mod K`` of ``value`` ``(K, *shape)`` -> ``(S, *shape)``
        (the uniform mixture, stratified); otherwise ``value`` as it is (it broadcasts)."""
        if self.components == 1:
            return value
        return value[torch.arange(num_samples, device=value.device) % self.components]


class MeanFieldNormalGuide(WeightGuide):
    r""":math:`q(w) = \prod_i N(w_i; \mu_i, s_i^2)`, ``mu`` from the predictor's initial weights,
    ``s = init_scale`` initially (a positive :class:`~pyro.nn.PyroParam`).

    Args:
        model: the Bayesian model whose ``sites`` this guide covers.
        init_scale: initial posterior standard deviation of every weight.
        random_effect_init_scale: that of the random effects (drug codes, rank-1 factors); ``None``: their
            prior's standard deviation.
    """

    def __init__(
        self, model: BayesianRegression, init_scale: float = 0.01, random_effect_init_scale: float | None = None
    ) -> None:
        super().__init__(model)
        if not init_scale > 0 or not (random_effect_init_scale is None or random_effect_init_scale > 0):
            raise ValueError(
                f"MeanFieldNormalGuide: init_scale and random_effect_init_scale must be positive, got {init_scale}, "
                f"{random_effect_init_scale}"
            )
        for name, site in model.sites.items():
            setattr(self, f"{_key(name)}_loc", PyroParam(site.init.clone()))
            # A random effect starts at its prior's spread (a drug no datum informs then never moves from it), or
            # narrow like the weights (the warm-started net is not drowned in noise when SVI starts; the KL alone
            # then widens what no datum informs, towards the prior).
            if site.random_effect:
                scale = site.prior_scale if random_effect_init_scale is None else float(random_effect_init_scale)
            else:
                scale = float(init_scale)
            setattr(self, f"{_key(name)}_scale", PyroParam(torch.full_like(site.init, scale), constraints.positive))

    def site_distribution(self, site: str) -> TorchDistribution:
        return dist.Normal(self._param(site, "loc"), self._param(site, "scale"))

    def locs(self) -> dict[str, Tensor]:
        return {site: self._param(site, "loc") for site in self.site_shapes} | self.identity_locs()

    def scales(self) -> dict[str, Tensor]:
        return {site: self._param(site, "scale") for site in self.site_shapes}

    def sample_weights(self, num_samples: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``mu + s * eps`` with ``eps`` ``(S, *shape)`` standard normal (then the identity sites)."""
        weights = {
            site: self._per_sample(self._param(site, "loc"), num_samples)
            + self._per_sample(self._param(site, "scale"), num_samples) * self._noise(site, num_samples, generator)
            for site in self.site_shapes
        }
        return weights | self.identity_samples(num_samples, generator)


class RowMultivariateNormalGuide(WeightGuide):
    r"""A full-covariance Normal per row of every weight site: :math:`q(w_{j\cdot}) = N(\mu_j, L_j L_j^T)` over
    the ``in`` weights of output unit :math:`j` (a 1-d site, e.g. a bias: one Normal over all of it), rows
    independent. :math:`L_j = \mathrm{diag}(s_j) U_j` with :math:`s_j > 0` (``<site>_scale``, learned at the scale
    rate) and :math:`U_j` unit lower triangular (``<site>_tril``, at the means' rate), Pyro's parameterisation of
    :class:`~pyro.infer.autoguide.AutoMultivariateNormal`.

    For a Bayesian output layer on fixed features (e.g. a random-feature GP head,
    ``RecoverPredictor(gp_features=M)``) this family holds the exact posterior of a Gaussian likelihood, whose
    covariance is what makes the predictive variance :math:`\phi^T \Sigma \phi` grow away from the data; a
    mean-field guide keeps only its diagonal. Rows of ``in`` weights cost ``in^2`` parameters each: meant for
    heads, not trunks (``max_row`` bounds it). One component only.

    Args:
        model: the Bayesian model whose ``sites`` this guide covers.
        init_scale: initial posterior standard deviation of every weight (:math:`U = I` at first).
        max_row: the largest row length accepted.
    """

    def __init__(self, model: BayesianRegression, init_scale: float = 0.01, max_row: int = 4096) -> None:
        super().__init__(model)
        if not init_scale > 0:
            raise ValueError(f"RowMultivariateNormalGuide: init_scale must be positive, got {init_scale}")
        if self.components > 1:
            raise ValueError("RowMultivariateNormalGuide: one component only (set model.components=1)")
        self._tril_cache: dict[str, tuple[tuple[tuple[int, int], ...], Tensor] | None] = {}
        for name, site in model.sites.items():
            init = site.init
            row = init.shape[-1] if init.dim() else 0
            if not 0 < row <= max_row:
                raise ValueError(
                    f"RowMultivariateNormalGuide: site {name} has rows of {row} weights; need 1 to max_row={max_row} "
                    "(a full covariance per row): make fewer layers Bayesian (model.bayesian_layers=head)"
                )
            setattr(self, f"{_key(name)}_loc", PyroParam(init.clone()))
            setattr(
                self, f"{_key(name)}_scale", PyroParam(torch.full_like(init, float(init_scale)), constraints.positive)
            )
            eye = torch.eye(row, dtype=init.dtype, device=init.device).expand(*init.shape[:-1], row, row)
            setattr(self, f"{_key(name)}_tril", PyroParam(eye.clone(), constraints.unit_lower_cholesky))

    def _closed_form_site(self, model: BayesianRegression) -> str | None:
        """The output weights of a random-feature GP head, when they are the model's only Bayesian site."""
        site = "predictor.head_layers.0.weight"
        if getattr(model.predictor, "gp_features", 0) and set(model.sites) == {site}:
            return site
        return None

    def closed_form_parameters(self, model: BayesianRegression) -> list[torch.nn.Parameter]:
        """With a GP head, every parameter of :math:`q(\\beta)` (:meth:`update_on_features` sets them)."""
        site = self._closed_form_site(model)
        return [] if site is None else [self._unconstrained(site, what) for what in ("loc", "scale", "tril")]

    def update_on_features(
        self, model: BayesianRegression, z: Tensor, train: Pairs, noise_var: Tensor | None = None
    ) -> None:
        r"""With a random-feature GP head (``RecoverPredictor(gp_features=M)``, its single Bayesian site the output
        weights :math:`\beta`), set :math:`q(\beta)` to the posterior of the linear-Gaussian model on the frozen trunk:

        .. math:: \Sigma = (\Phi^T\Phi / \sigma^2 + S_0^{-1})^{-1}, \qquad \mu = \Sigma (\Phi^T r / \sigma^2 + S_0^{-1} m_0)

        with :math:`\Phi = \phi(z)` ``(N, M)``, :math:`N(m_0, S_0)` the prior (diagonal; a Gaussian prior makes it exact;
        :math:`m_0 \ne 0` after :meth:`~recover_pyro.bnn.model.BNNSynergyModel.posterior_as_prior`) and
        :math:`r` the targets less the identity effects' posterior means (if the model has them; :math:`q(\beta)` is
        then the mean-field optimum given :math:`q(u)`). SNGP's Laplace step (Liu et al. 2020): before SVI with
        :math:`\sigma^2` the warm-started fit's mean squared residual (the learned noise starts there), after it with
        the learned :math:`\sigma^2` and prior scale. In between SVI leaves :math:`q(\beta)` alone
        (:meth:`closed_form_parameters`): Adam's steps of about ``lr`` on each of the :math:`M^2/2` factor entries blur
        the posterior's small directions, the ones along the data (measured on a toy: the predictive sd of training
        pairs 0.63 after one epoch from the exact 0.08). Without a GP head: nothing."""
        site = self._closed_form_site(model)
        if site is None:
            return
        assert train.y is not None  # SVI's training pairs
        with torch.no_grad(), poutine.block():
            phi = model.predictor.random_features(z)  # type: ignore[operator]
            target = train.y
            if model.identity is not None:
                target = target - model.identity.effect(self.identity_locs(), train.drug_a, train.drug_b, train.cell)
            if noise_var is None:
                noise_var = (target - phi @ self._param(site, "loc")[0]).pow(2).mean().clamp_min(1e-6)
                if model.learned_noise:
                    model.sigma_unconstrained.copy_(noise_var.sqrt().log())
            trace = poutine.trace(model.head_model).get_trace(
                z[:1], train.cell[:1], drug_a=train.drug_a[:1], drug_b=train.drug_b[:1]
            )
            prior = cast(TorchDistribution, trace.nodes[site]["fn"])
            precision = 1.0 / prior.variance.reshape(-1)
            chol = torch.linalg.cholesky(phi.t() @ phi / noise_var + torch.diag(precision))
            shift = phi.t() @ target / noise_var + precision * prior.mean.reshape(-1)
            loc = torch.cholesky_solve(shift.unsqueeze(-1), chol)
            tril = torch.linalg.cholesky(torch.cholesky_inverse(chol))
            diag = tril.diagonal()
            self._unconstrained(site, "loc").copy_(loc.t())
            self._set_constrained(site, "scale", diag.unsqueeze(0))
            self._set_constrained(site, "tril", (tril / diag.unsqueeze(-1)).unsqueeze(0))

    def _set_constrained(self, site: str, what: str, value: Tensor) -> None:
        """Set a constrained parameter to ``value`` through its constraint's inverse transform."""
        name = f"{_key(site)}_{what}"
        constraint = self._pyro_params[name][0]  # as the PyroParam was declared
        getattr(self, f"{name}_unconstrained").copy_(torch.distributions.transform_to(constraint).inv(value))

    def _scale_tril(self, site: str) -> Tensor:
        """``(rows, in, in)`` Cholesky factors :math:`L_j`; while their parameters are held (no gradients, e.g. a GP
        head during SVI) built once and reused until a parameter changes in place."""
        raw = (self._unconstrained(site, "scale"), self._unconstrained(site, "tril"))
        held = not any(p.requires_grad for p in raw)
        key = tuple((id(p), p._version) for p in raw)
        cached = self._tril_cache.get(site)
        if held and cached is not None and cached[0] == key:
            return cached[1]
        value = self._param(site, "scale").unsqueeze(-1) * self._param(site, "tril")
        self._tril_cache[site] = (key, value.detach()) if held else None
        return value

    def site_distribution(self, site: str) -> TorchDistribution:
        """A MultivariateNormal with ``batch_shape`` the site's rows and ``event_shape`` ``(in,)``."""
        return dist.MultivariateNormal(self._param(site, "loc"), scale_tril=self._scale_tril(site))

    def locs(self) -> dict[str, Tensor]:
        return {site: self._param(site, "loc") for site in self.site_shapes} | self.identity_locs()

    def scales(self) -> dict[str, Tensor]:
        """Marginal posterior standard deviations :math:`\\sqrt{\\mathrm{diag}(L L^T)}`."""
        return {site: self._scale_tril(site).pow(2).sum(-1).sqrt() for site in self.site_shapes}

    def covariance(self, site: str) -> Tensor:
        """``(rows, in, in)`` posterior covariance :math:`L_j L_j^T` of each row of ``site``."""
        tril = self._scale_tril(site)
        return tril @ tril.transpose(-1, -2)

    def sample_weights(self, num_samples: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``mu + L eps`` per row with ``eps`` ``(S, *shape)`` standard normal (then the identity sites)."""
        weights = {}
        for site in self.site_shapes:
            loc = self._param(site, "loc")
            eps = torch.randn((num_samples, *loc.shape), generator=generator, dtype=loc.dtype, device=loc.device)
            # One product per row over all samples: broadcasting L against (S, ..., in, 1) would copy it S times.
            weights[site] = loc + torch.einsum("...ij,s...j->s...i", self._scale_tril(site), eps)
        return weights | self.identity_samples(num_samples, generator)


class SparseVariationalDropoutGuide(WeightGuide):
    r"""Sparse variational dropout: :math:`q(w_i) = N(\theta_i, \alpha_i \theta_i^2)`.

    Learned per weight: :math:`\theta` (starting at the predictor's initial weights) and
    :math:`\sigma = \sqrt{\alpha}|\theta|` (a positive :class:`~pyro.nn.PyroParam`, starting at
    :math:`\log\alpha` = ``init_log_alpha``, floored at ``MIN_INIT_SCALE``), i.e. :math:`\log\alpha` is
    learned through :math:`\log\sigma^2` (the paper's additive reparameterisation; learning
    :math:`\log\alpha` directly made the gradient of :math:`\theta` so noisy that almost no weight got
    pruned on our toy problem).
    :math:`\log\alpha` is clamped to [-10, 10] when used. At prediction time (:meth:`sample_weights`,
    :meth:`locs`, :meth:`scales`) weights with :math:`\log\alpha >` ``threshold`` are set to 0: their
    signal-to-noise ratio :math:`1/\sqrt{\alpha}` is below :math:`e^{-1.5} \approx 0.22`.

    Pair with :class:`~recover_pyro.bnn.priors.LogUniformPrior` and ``elbo="meanfield"`` to train with the
    registered Molchanov KL.
    """

    def __init__(self, model: BayesianRegression, init_log_alpha: float = -6.0, threshold: float = 3.0) -> None:
        super().__init__(model)
        self.threshold = float(threshold)
        self.random_effects = {name for name, site in model.sites.items() if site.random_effect}
        for name, site in model.sites.items():
            scale = math.exp(0.5 * init_log_alpha) * site.init.abs()
            if site.random_effect:  # starts at its prior's spread, as in MeanFieldNormalGuide
                scale = torch.full_like(site.init, site.prior_scale)
            setattr(self, f"{_key(name)}_loc", PyroParam(site.init.clone()))
            setattr(self, f"{_key(name)}_scale", PyroParam(scale.clamp_min(MIN_INIT_SCALE), constraints.positive))

    def site_distribution(self, site: str) -> SparseDropoutNormal:
        return SparseDropoutNormal(self._param(site, "loc"), self._param(site, "scale"))

    def log_alpha(self, site: str) -> Tensor:
        r"""``(*shape)`` clamped :math:`\log\alpha` of one site."""
        return self.site_distribution(site).log_alpha

    def kept(self, site: str) -> Tensor:
        """``(*shape)`` bool mask of the weights that survive pruning (all of a random effect: a code near 0 with
        its prior's spread is a drug the data say little about, not a weight to drop)."""
        if site in self.random_effects:
            return torch.ones(self.site_shapes[site], dtype=torch.bool, device=self._param(site, "loc").device)
        return self.log_alpha(site) <= self.threshold

    def locs(self) -> dict[str, Tensor]:
        r"""Pruned posterior means :math:`\theta \cdot 1[\log\alpha \le \text{threshold}]` (then the identity
        sites, never pruned)."""
        return {site: self._param(site, "loc") * self.kept(site) for site in self.site_shapes} | self.identity_locs()

    def scales(self) -> dict[str, Tensor]:
        r"""Pruned posterior standard deviations :math:`\sigma` (0 where pruned)."""
        return {site: self._param(site, "scale") * self.kept(site) for site in self.site_shapes}

    def sample_weights(self, num_samples: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``(theta + sigma * eps) * kept`` with ``eps`` ``(S, *shape)`` standard normal (then the identity sites)."""
        locs, scales = self.locs(), self.scales()
        weights = {
            site: self._per_sample(locs[site], num_samples)
            + self._per_sample(scales[site], num_samples) * self._noise(site, num_samples, generator)
            for site in self.site_shapes
        }
        return weights | self.identity_samples(num_samples, generator)

    def sparsity_by_site(self) -> dict[str, float]:
        """Fraction of pruned weights per site."""
        return {site: float((~self.kept(site)).float().mean()) for site in self.site_shapes}

    def sparsity(self) -> float:
        """Fraction of pruned weights over all Bayesian weight sites (random effects are never pruned)."""
        weights = [site for site in self.site_shapes if site not in self.random_effects]
        pruned = sum(int((~self.kept(site)).sum()) for site in weights)
        return pruned / sum(self.site_shapes[site].numel() for site in weights)

    def fit_summary(self) -> dict[str, float]:
        """``pruned_fraction``: the fraction of pruned Bayesian weights (:meth:`sparsity`)."""
        return {"pruned_fraction": self.sparsity()}


GuideFactory = Callable[[BayesianRegression], WeightGuide]
"""Builds a guide for a model, e.g. ``MeanFieldNormalGuide`` or ``functools.partial(..., init_scale=...)``."""
