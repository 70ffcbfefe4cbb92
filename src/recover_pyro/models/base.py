"""The one interface between the model side and the decision side.

Anything that can be fitted on encoded experiments and return posterior predictive samples of shape
``(S, N)`` (posterior samples x candidates) is a :class:`SynergyModel`: Bayesian networks, deep ensembles
and MC dropout alike. Acquisition functions only ever see :class:`PredictiveSamples`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Protocol, runtime_checkable

import torch
from scipy import stats
from torch import Tensor, nn

from recover_pyro.data.screen import Pairs
from recover_pyro.data.targets import TargetScaler
from recover_pyro.models.noise import Noise, holdout_split, variance_factor
from recover_pyro.models.training import checked_targets


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
    * Optional: ``fit_summary() -> dict[str, float]``, numbers about the fitted model worth reporting with
      its metrics (e.g. the pruned fraction of sparse variational dropout); :class:`StandardisedModel`
      returns none.
    """

    def fit(self, train: Pairs, val: Pairs | None = None) -> FitReport: ...

    def estimate_noise(self, train: Pairs, val: Pairs | None) -> Noise: ...

    def predict(self, pairs: Pairs, num_samples: int = 100) -> PredictiveSamples: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class FitData:
    """One fit's data after its single check: the experiments on the model's device, their original-scale
    targets and the standardised copies the network is fitted to.

    Attributes:
        train, val: training and validation experiments (``val`` may be the held-out part of the training set).
        y_train, y_val: ``(N,)`` / ``(M,)`` finite original-scale targets (``y_val`` ``None`` without ``val``).
        z_train, z_val: the same experiments with standardised targets ``z = (y - loc) / scale``.
    """

    train: Pairs
    val: Pairs | None
    y_train: Tensor
    y_val: Tensor | None
    z_train: Pairs
    z_val: Pairs | None


class StandardisedModel:
    """The bookkeeping every model of this package shares; subclass it to write a new :class:`SynergyModel`.

    It holds the ``seed`` and the CPU generator drawn from it (initial weights, held-out split, per-fit
    seeds), the ``device``, the :class:`TargetScaler` fitted on the first training set (kept for later,
    warm-started fits so the learned function keeps its meaning), the ``fitted`` flag and the noise's degrees
    of freedom. :meth:`fit_data` checks and standardises a fit's targets, once per fit.

    Args:
        standardize: fit standardised targets (otherwise raw ones).
        seed: seeds everything random the model does.
        device: where weights live and fitting / scoring run (``"cpu"``, ``"cuda"``, ...).
    """

    def __init__(self, *, standardize: bool = True, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.seed = seed
        self.device = torch.device(device)
        self.scaler = TargetScaler(standardize)
        self.fitted = False
        self.noise_df = math.inf
        self._generator = torch.Generator().manual_seed(seed)

    def _draw_seed(self) -> int:
        """A fresh 62-bit seed from the model's generator."""
        return int(torch.randint(2**62, (1,), generator=self._generator))

    def _build_network(self, factory: Callable[[Tensor, Tensor], nn.Module], drug: Tensor, cell: Tensor) -> nn.Module:
        """``factory(drug, cell)`` with initial weights drawn on the CPU from the model's generator (so they
        do not depend on the device), moved to the device; the caller's global RNG is left untouched."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._draw_seed())
            net = factory(drug, cell)
        return net.to(self.device)

    def fit_data(self, train: Pairs, val: Pairs | None, holdout: float) -> FitData:
        """Move a fit's data to the device, check its targets (once), set aside ``holdout`` of ``train`` as
        validation data when ``val`` is ``None``, fit the scaler on the first fit and standardise.

        Raises:
            ValueError: targets missing, empty or not finite (naming training or validation and the row).
        """
        what = type(self).__name__
        train = train.to(self.device)
        val = None if val is None else val.to(self.device)
        y_train = checked_targets(train, f"{what}: training")
        if val is None:
            train, val = holdout_split(train, holdout, self._generator)
            assert train.y is not None  # a subset of checked targets
            y_train = train.y.float()
        y_val = None if val is None else checked_targets(val, f"{what}: validation")
        if not self.fitted:
            self.scaler.fit(y_train)
        z_train = Pairs(train.drug_a, train.drug_b, train.cell, self.scaler.transform(y_train))
        z_val = (
            None
            if val is None or y_val is None
            else Pairs(val.drug_a, val.drug_b, val.cell, self.scaler.transform(y_val))
        )
        return FitData(train, val, y_train, y_val, z_train, z_val)

    def _check_fitted(self, method: str = "predict") -> None:
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__}.{method} called before fit (or load_state_dict)")

    def fit_summary(self) -> dict[str, float]:
        """Numbers about the fitted model worth reporting beside its metrics (none by default)."""
        return {}

    def scoring_session(self) -> ContextManager[None]:
        """A context for many ``predict`` calls on one fitted state (a library scored chunk by chunk,
        :func:`~recover_pyro.acquisition.streaming.model_chunks`), in which a model may keep work between calls;
        nothing by default. Do not fit inside it."""
        return contextlib.nullcontext()

    @staticmethod
    def _network_session(net: nn.Module) -> ContextManager[None]:
        """``net.drug_projection_cache()`` where the network has one (RECOVER's net), else nothing."""
        cache = getattr(net, "drug_projection_cache", None)
        return cache() if callable(cache) else contextlib.nullcontext()

    def _bookkeeping_state(self) -> dict[str, Any]:
        """Scaler, noise degrees of freedom, fitted flag and generator state (tensors / numbers only)."""
        return {
            "scaler": self.scaler.state_dict(),
            "noise_df": self.noise_df,
            "fitted": self.fitted,
            "generator": self._generator.get_state(),
        }

    def _load_bookkeeping_state(self, state: dict[str, Any]) -> None:
        self.scaler = TargetScaler(**state["scaler"])
        self.noise_df = float(state.get("noise_df", math.inf))
        self.fitted = bool(state["fitted"])
        self._generator.set_state(state["generator"])
