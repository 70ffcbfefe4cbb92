"""Bayesian neural network synergy model behind the :class:`~recover_pyro.models.base.SynergyModel` interface.

:class:`BNNSynergyModel` = a predictor network (default: a small RECOVER net) made Bayesian in the chosen
layers (:class:`~recover_pyro.bnn.layers.BayesianRegression`), a guide (default
:class:`~recover_pyro.bnn.guides.MeanFieldNormalGuide`), SVI (:func:`~recover_pyro.bnn.inference.fit_svi`) on
standardised targets, and the vectorised posterior predictive
(:func:`~recover_pyro.bnn.predictive.sample_predictive`) mapped back to the original scale. Optionally
(``identity_effects``) the mean function gains random effects of the drugs' (and cell lines') identities
(:class:`~recover_pyro.bnn.layers.IdentityEffects`), with learned scales.

Randomness: initial weights, SVI noise, minibatch order and predictive samples derive from ``seed``; the
global torch RNG is used only inside :func:`torch.random.fork_rng`, so equal seeds give equal results and
the caller's RNG state is untouched. ``predict`` on the same state returns the same samples.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import replace
from typing import Any, Callable, ContextManager

import pyro.distributions as dist
import torch
from torch import Tensor, nn

from recover_pyro.bnn.guides import GuideFactory, MeanFieldNormalGuide, SparseVariationalDropoutGuide
from recover_pyro.bnn.inference import SVIConfig, fit_svi
from recover_pyro.bnn.layers import BayesianLayers, BayesianRegression
from recover_pyro.bnn.predictive import bayesian_head_only, sample_predictive
from recover_pyro.bnn.priors import NormalPrior, Prior
from recover_pyro.data.screen import Pairs
from recover_pyro.models.base import FitReport, PredictiveSamples, StandardisedModel
from recover_pyro.models.noise import Noise, heldout_noise
from recover_pyro.models.predictor import RecoverPredictor
from recover_pyro.models.training import checked_targets

log = logging.getLogger(__name__)

PredictorFactory = Callable[[Tensor, Tensor], nn.Module]
"""``factory(drug_features (D, F), cell_features (C, G)) -> module`` mapping index tensors
``(drug_a, drug_b, cell)`` ``(N,)`` to predictions ``(*S, N)``."""

DEFAULT_PREDICTOR: PredictorFactory = functools.partial(
    RecoverPredictor, drug_hidden=(256, 64), merge_dim=64, merge_rank=16, head_hidden=(64,)
)


class BNNSynergyModel(StandardisedModel):
    """A Bayesian neural network for drug-pair synergy, fitted by SVI.

    ``fit(train, val)`` standardises targets with a :class:`TargetScaler` fitted on the first training set
    (kept for later, warm-started fits so the learned function keeps its meaning) and runs
    :func:`fit_svi` from the current parameters (a deterministic warm start of the guide means, then SVI);
    the first fit starts from the seeded initial weights of the predictor and the guide's initial spread.
    Without ``val`` it sets aside ``holdout`` of ``train`` as validation data. The predictive noise follows
    the convention of :mod:`recover_pyro.models.noise` (Student-t fitted to the held-out experiments around
    the posterior spread; with few of them Gaussian, at least the likelihood's learned scale). ``predict``
    returns ``f`` ``(S, N)`` and a scalar ``noise_scale``, both on the original scale, and ``noise_df``.

    Args:
        drug_features: ``(D, F)`` drug features; cell_features: ``(C, G)`` cell-line features.
        predictor: factory ``(drug_features, cell_features) -> nn.Module`` (Hydra ``_partial_: true``).
        prior: weight prior of the Bayesian layers.
        guide: factory ``(BayesianRegression) -> guide`` (default :class:`MeanFieldNormalGuide`).
        bayesian_layers: ``"head"`` (default), ``"all"`` or a list of module-name prefixes.
        noise: ``"learned"`` or a fixed noise standard deviation on the model (standardised) scale.
        identity_effects: ``"none"`` (default; the model is then exactly the one without the option),
            ``"drugs"`` or ``"drugs_and_cells"``: add ``u[drug_a] + u[drug_b] (+ v[cell])`` to the mean function,
            ``u_d ~ N(0, tau_u^2)``, ``v_c ~ N(0, tau_v^2)`` (:class:`~recover_pyro.bnn.layers.IdentityEffects`),
            so that a drug without training data keeps the prior variance of its effect (with one cell line,
            ``"drugs_and_cells"`` adds no cell effect: it would be an offset that every experiment shares).
        identity_scale: how ``tau`` is learned: ``"empirical_bayes"`` (a point estimate maximising the ELBO,
            type-II maximum likelihood) or ``"hierarchical"`` (``tau ~ HalfNormal(identity_hyperprior)``, LogNormal
            posterior).
        identity_hyperprior: the hierarchical hyperprior's scale, on the standardised scale.
        components: ``K > 1``: a mixture of ``K`` posteriors sharing the point-estimated weights
            (:class:`~recover_pyro.bnn.layers.BayesianRegression`'s ``components``); sample ``s`` of ``predict``
            comes from component ``s mod K``.
        inference: SVI settings; its ``seed`` is replaced by one drawn from this model's ``seed``.
        standardize: fit standardised targets (otherwise raw ones).
        holdout: fraction of ``train`` set aside as validation data when ``fit`` gets none (0: none).
        seed: seeds everything random (see module docstring).
        device: where weights live and fitting / scoring run (``"cpu"``, ``"cuda"``, ...). Initial weights
            are drawn on the CPU, so they do not depend on it; SVI noise and predictive samples come from
            that device's generators, so CPU and GPU fits with one seed differ by random draws, not in kind.
    """

    def __init__(
        self,
        drug_features: Tensor,
        cell_features: Tensor,
        *,
        predictor: PredictorFactory = DEFAULT_PREDICTOR,
        prior: Prior = NormalPrior(),
        guide: GuideFactory = MeanFieldNormalGuide,
        bayesian_layers: BayesianLayers = "head",
        noise: str | float = "learned",
        identity_effects: str = "none",
        identity_scale: str = "empirical_bayes",
        identity_hyperprior: float = 1.0,
        components: int = 1,
        inference: SVIConfig = SVIConfig(),
        standardize: bool = True,
        holdout: float = 0.1,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if not 0.0 <= holdout < 1.0:
            raise ValueError(f"BNNSynergyModel: holdout must lie in [0, 1), got {holdout}")
        super().__init__(standardize=standardize, seed=seed, device=device)
        self.inference = inference
        self.holdout = holdout
        net = self._build_network(predictor, drug_features, cell_features)
        # Priors and guide parameters are built from the weights, so they follow the net onto the device.
        self.model = BayesianRegression(
            net,
            prior,
            bayesian_layers,
            noise,
            identity_effects=identity_effects,
            identity_scale=identity_scale,
            identity_hyperprior=identity_hyperprior,
            num_drugs=drug_features.shape[0],
            num_cells=cell_features.shape[0],
            components=components,
            # Drawn only with components, so that a one-component model's random stream is unchanged.
            generator=torch.Generator().manual_seed(self._draw_seed()) if components > 1 else None,
        )
        self.guide = guide(self.model)
        # Predictive observation-noise scale (model scale) and Student-t degrees of freedom, set by fit (see
        # recover_pyro.models.noise).
        self.noise = self.model.noise_scale().detach().clone()
        self.last_report: FitReport | None = None

    # --- training ------------------------------------------------------------------------------
    def fit(self, train: Pairs, val: Pairs | None = None) -> FitReport:
        """Warm start + SVI (:func:`fit_svi`) on ``train`` (standardised internally). ``val`` (without it: the
        ``holdout`` set aside from ``train``) early-stops the warm start and is where the noise is estimated.

        Returns the :class:`FitReport` of :func:`fit_svi` (per-datum negative ELBO, validation metric on
        the standardised scale, per-epoch curve of both stages).
        """
        data = self.fit_data(train, val, self.holdout)
        config = replace(self.inference, seed=self._draw_seed())
        self.last_report = fit_svi(self.model, self.guide, data.z_train, data.z_val, config, targets_checked=True)
        self.fitted = True
        self._set_noise(data.val, None if data.z_val is None else data.z_val.y)
        if not self.last_report.converged:
            log.warning(
                "BNN fit: the ELBO had not converged after %d SVI epochs; raise inference.epochs",
                len(self.last_report.losses),
            )
        return self.last_report

    def estimate_noise(self, train: Pairs, val: Pairs | None) -> Noise:
        """Set the predictive noise from the held-out experiments ``val`` (original-scale targets) by
        :func:`heldout_noise`, with the posterior samples drawn from ``seed``; without ``val`` or with a fixed
        noise, the likelihood's learned Gaussian scale. ``fit`` calls it; call it again to re-score a loaded
        fit. ``train`` is not used (the Gaussian floor is the likelihood's scale). Returns the noise on the
        model (standardised) scale."""
        self._check_fitted("estimate_noise")
        z_val = None
        if val is not None:
            val = val.to(self.device)
            z_val = self.scaler.transform(checked_targets(val, "BNNSynergyModel: validation"))
        return self._set_noise(val, z_val)

    def _set_noise(self, val: Pairs | None, z_val: Tensor | None) -> Noise:
        """:meth:`estimate_noise` on checked, standardised validation targets ``z_val`` ``(M,)``."""
        likelihood = float(self.model.noise_scale().detach())
        noise = Noise(likelihood)
        if val is not None and z_val is not None and self.model.learned_noise:
            generator = torch.Generator(self.device).manual_seed(self.seed)
            config = self.inference
            f = sample_predictive(self.model, self.guide, val, config.val_samples, config.eval_batch_size, generator)
            noise = heldout_noise(f, z_val, likelihood**2)
        self.noise, self.noise_df = self.noise.new_tensor(noise.scale), noise.df
        return noise

    # --- prediction ----------------------------------------------------------------------------
    def draw_posterior(self, num_samples: int = 100) -> dict[str, Tensor]:
        """``{site: (S, *shape)}``: the ``S`` joint weight samples :meth:`predict` uses (seeded by ``seed``), and
        those of the identity effects (``identity.drug`` ``(S, D)``, ...) when the model has them.

        Draw them once and pass them to :meth:`predict` (``draw=``) to score a candidate space chunk by chunk,
        or on several workers, with the very same posterior samples (:mod:`recover_pyro.acquisition.streaming`).
        """
        self._check_fitted("draw_posterior")
        generator = torch.Generator(self.device).manual_seed(self.seed)
        with torch.no_grad():
            return self.guide.sample_weights(num_samples, generator=generator)

    def predict(self, pairs: Pairs, num_samples: int = 100, draw: dict[str, Tensor] | None = None) -> PredictiveSamples:
        """``f`` ``(S, N)`` posterior samples of the mean function and scalar ``noise_scale``, original scale,
        on ``device``; ``draw``: weight samples of :meth:`draw_posterior` (default: drawn here, the same)."""
        self._check_fitted()
        generator = torch.Generator(self.device).manual_seed(self.seed)
        z = sample_predictive(
            self.model,
            self.guide,
            pairs.to(self.device),
            num_samples,
            self.inference.eval_batch_size,
            generator,
            weights=None if draw is None else {k: v.to(self.device) for k, v in draw.items()},
        )
        return PredictiveSamples(self.scaler.inverse(z), self.scaler.inverse_scale(self.noise), self.noise_df)

    def scoring_session(self) -> ContextManager[None]:
        """With a Bayesian head on a fixed trunk, the trunk's per-drug projections are computed once per cell line
        and reused across ``predict`` calls (:meth:`RecoverPredictor.drug_projection_cache
        <recover_pyro.models.predictor.RecoverPredictor.drug_projection_cache>`); otherwise nothing is kept."""
        if not bayesian_head_only(self.model):
            return contextlib.nullcontext()
        return self._network_session(self.model.predictor)

    def posterior_as_prior(self, widen: float = 1.0) -> None:
        r"""Make the current posterior approximation the prior of later fits (variational continual learning).

        Every Bayesian site gets the prior :math:`N(\mu, (c\,s)^2)` with :math:`\mu, s` the guide's current
        (unpruned) per-weight mean and standard deviation and :math:`c` = ``widen``. After a fit on data
        :math:`A`, a fit on :math:`B` then approximates the posterior given :math:`A \cup B` (exactly so for a
        conjugate model whose posterior factorises); ``widen > 1`` tempers what :math:`A` says, for data
        :math:`B` from a shifted distribution (e.g. a new cell line). The guide keeps its parameters, so the
        next fit starts at the old posterior. Priors are not part of :meth:`state_dict`. Identity effects keep
        their hierarchical or empirical-Bayes scale and take the posterior means as their prior means
        (:meth:`IdentityEffects.set_prior_locs <recover_pyro.bnn.layers.IdentityEffects.set_prior_locs>`): a new
        cell line's drug effects vary by a learned :math:`\tau` around the pretrained ones.
        """
        if not widen > 0:
            raise ValueError(f"posterior_as_prior: widen must be positive, got {widen}")
        if not self.fitted:
            raise RuntimeError("posterior_as_prior needs a fitted (or loaded) model")
        priors = {}
        for site in self.model.sites:
            q = self.guide.site_distribution(site)
            priors[site] = dist.Normal(q.mean.detach().clone(), widen * q.stddev.detach().clone())
        self.model.set_priors(priors)
        if self.model.identity is not None:
            locs = self.guide.identity_locs()
            self.model.identity.set_prior_locs({site.name: locs[site.name] for site in self.model.identity.sites})

    def fit_summary(self) -> dict[str, float]:
        """The guide's numbers worth reporting (e.g. ``pruned_fraction`` of sparse variational dropout) and,
        with identity effects, their learned scales on the original scale (:meth:`identity_scales`)."""
        summary = self.guide.fit_summary()
        if self.model.identity is not None:
            summary |= {f"identity_{group}_scale": value for group, value in self.identity_scales().items()}
        return summary

    def identity_scales(self) -> dict[str, float]:
        """``{group: tau}``, the identity effects' scales on the original scale (``"drug"``, ``"cell"``): the
        empirical-Bayes estimate, or the posterior mean of a hierarchical one; ``{}`` without identity effects."""
        identity = self.model.identity
        if identity is None:
            return {}
        with torch.no_grad():
            taus = self.guide.identity_scale_means()
            return {group: float(self.scaler.inverse_scale(tau)) for group, tau in taus.items()}

    def sparsity(self) -> float:
        """Fraction of pruned Bayesian weights (sparse variational dropout guide only)."""
        return self._sparse_guide().sparsity()

    def sparsity_by_site(self) -> dict[str, float]:
        """Fraction of pruned weights per Bayesian site (sparse variational dropout guide only)."""
        return self._sparse_guide().sparsity_by_site()

    def _sparse_guide(self) -> SparseVariationalDropoutGuide:
        if not isinstance(self.guide, SparseVariationalDropoutGuide):
            raise TypeError(
                f"sparsity is defined for SparseVariationalDropoutGuide only; this model's guide is "
                f"{type(self.guide).__name__}"
            )
        return self.guide

    # --- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Model and guide parameters, target scaler, fitted flag and RNG state (tensors / numbers only)."""
        return {
            "model": self.model.state_dict(),
            "guide": self.guide.state_dict(),
            "noise": self.noise,
            **self._bookkeeping_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.guide.load_state_dict(state["guide"])
        self.noise = state["noise"].to(self.device) if "noise" in state else self.model.noise_scale().detach()
        self._load_bookkeeping_state(state)
