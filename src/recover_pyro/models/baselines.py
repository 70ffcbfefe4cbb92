"""Non-Bayesian baselines behind the :class:`~recover_pyro.models.base.SynergyModel` interface.

* :class:`DeterministicModel`: one network trained by mean squared error (no epistemic uncertainty);
* :class:`DeepEnsemble`: ``K`` independently initialised and shuffled networks, RECOVER's own
  uncertainty estimate;
* :class:`MCDropoutModel`: one network trained with dropout and sampled with dropout left on.

All three fit standardised targets ``z = (y - loc) / scale`` (:class:`TargetScaler`) and report on the
original scale. Their observation noise follows the one convention of :mod:`recover_pyro.models.noise`: a
Student-t fitted to the held-out experiments around the model's own spread (member spread, dropout spread;
none for a single network); with few held-out experiments a Gaussian, the held-out squared error not
explained by that spread, at least the training residual variance. Held out is the
validation set, or ``training.holdout`` of the training set when ``fit`` gets no validation set (RECOVER's
own recipe sets aside 10 %), so the estimate is valid in campaigns too.

Randomness: a model's initial weights, minibatch order and dropout masks all derive from its ``seed``;
the global torch RNG is used only inside :func:`torch.random.fork_rng` blocks, so fitting or predicting
never changes the caller's RNG state, and equal seeds give equal results.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from recover_pyro.data.screen import Pairs
from recover_pyro.logging_utils import announce_early_stop, epoch_postfix
from recover_pyro.models.base import FitReport, PredictiveSamples, StandardisedModel
from recover_pyro.models.noise import Noise, holdout_split, residual_noise
from recover_pyro.models.predictor import RecoverPredictor
from recover_pyro.models.training import EarlyStopping, adam, forked_rng, minibatches

log = logging.getLogger(__name__)

PredictorFactory = Callable[..., nn.Module]
"""``factory(drug_features (D, F), cell_features (C, G), **kwargs) -> module`` mapping index tensors
``(drug_a, drug_b, cell)`` of shape ``(N,)`` to standardised predictions ``(N,)``."""

DEFAULT_PREDICTOR: PredictorFactory = functools.partial(
    RecoverPredictor, drug_hidden=(256, 64), merge_dim=64, merge_rank=16, head_hidden=(64,)
)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by the baselines (Adam on mean squared error of standardised targets).

    Args:
        lr: Adam learning rate.
        weight_decay: Adam (L2) weight decay.
        epochs: maximum number of passes over the training set.
        batch_size: minibatch size.
        patience: with a validation set, stop after this many epochs without a lower validation MSE.
        holdout: fraction of the training set held out for early stopping and the noise estimate when
            ``fit`` gets no validation set (0: none; train ``epochs`` and take the training residuals).
        noise_samples: dropout passes used for the MC-dropout noise estimate.
        progress: show a tqdm bar over epochs.
        eval_batch_size: candidates per forward pass when predicting (bounds memory, not results).
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 200
    batch_size: int = 128
    patience: int = 20
    holdout: float = 0.1
    noise_samples: int = 32
    progress: bool = False
    eval_batch_size: int = 4096

    def __post_init__(self) -> None:
        if not 0.0 <= self.holdout < 1.0 or self.noise_samples < 2:
            raise ValueError(
                f"TrainConfig: need 0 <= holdout < 1 and noise_samples >= 2, got {self.holdout}, {self.noise_samples}"
            )
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"TrainConfig: need lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if min(self.epochs, self.batch_size, self.patience, self.eval_batch_size) < 1:
            raise ValueError(f"TrainConfig: epochs, batch_size, patience and eval_batch_size must be >= 1: {self}")


class DeterministicModel(StandardisedModel):
    """One network trained with mean squared error; its predictive has no epistemic spread.

    ``fit(train, val)`` trains with Adam. With ``val`` it early-stops on the validation MSE (patience
    ``training.patience``) and restores the best weights; without ``val`` it runs ``training.epochs``
    epochs and keeps the final weights. ``predict`` returns ``num_samples`` identical rows ``f`` (an
    expanded view, shape ``(S, N)``) and a scalar ``noise_scale`` (the residual RMS, see module docstring).

    The target scaler is fitted on the first training set and kept for later fits, so that warm-started
    weights keep their meaning when the training set grows.

    Args:
        drug_features: ``(D, F)`` drug features; cell_features: ``(C, G)`` cell-line features.
        predictor: factory building the network (default: a small :class:`RecoverPredictor`).
        training: optimisation settings.
        standardize: fit standardised targets (otherwise raw ones).
        seed: seeds initial weights, minibatch order and dropout masks.
        device: where the network lives and trains (``"cpu"``, ``"cuda"``, ...); initial weights and
            minibatch order are drawn on the CPU, dropout masks on the device.
    """

    def __init__(
        self,
        drug_features: Tensor,
        cell_features: Tensor,
        *,
        predictor: PredictorFactory = DEFAULT_PREDICTOR,
        training: TrainConfig = TrainConfig(),
        standardize: bool = True,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(standardize=standardize, seed=seed, device=device)
        self.config = training
        # Name of this model's epoch bar and early-stopping line (ensembles number their members).
        self.progress_desc = f"{type(self).__name__} epochs"
        self.noise_scale = math.nan
        self.net = self._build_network(predictor, drug_features, cell_features)

    # --- training ------------------------------------------------------------------------------
    def fit(self, train: Pairs, val: Pairs | None = None) -> FitReport:
        """Train on ``train`` (from the current weights); early-stop on ``val`` if given.

        Returns a :class:`FitReport` with the per-epoch mean training MSE (standardised scale) in
        ``losses`` and the validation MSE (original scale) in ``val_metric``.
        """
        start = time.perf_counter()
        data = self.fit_data(train, val, self.config.holdout)
        train, val, y_val, z = data.train, data.val, data.y_val, data.z_train.y
        assert z is not None
        report = FitReport()
        stopper = None if val is None else EarlyStopping(self.config.patience)
        optimizer = adam(self.net.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)
        with forked_rng(self.device):
            torch.manual_seed(self._draw_seed())  # dropout masks while training
            # leave=None: a top-level bar stays; an ensemble member's (nested) bar is cleared.
            bar = tqdm(range(self.config.epochs), disable=not self.config.progress, desc=self.progress_desc, leave=None)
            for epoch in bar:
                report.losses.append(self._epoch(train, z, optimizer))
                row: dict[str, Any] = {"stage": "train", "epoch": epoch, "train_mse": report.losses[-1]}
                report.curve.append(row)
                if stopper is not None:
                    assert val is not None and y_val is not None
                    report.val_metric.append(float(F.mse_loss(self.predict_mean(val), y_val)))
                    row["val_mse"] = report.val_metric[-1]
                bar.set_postfix(epoch_postfix(report.losses, report.val_metric, "val_mse"))
                if stopper is not None and stopper.step(report.val_metric[-1], self.net.state_dict()):
                    break
        if stopper is not None:
            self.net.load_state_dict(stopper.best_state)
            report.best_epoch = stopper.best_epoch
            announce_early_stop(log, self.progress_desc, report.best_epoch, len(report.losses), self.config.epochs)
        else:
            report.best_epoch = len(report.losses) - 1
        self.fitted = True
        self.estimate_noise(train, val)
        report.seconds = time.perf_counter() - start
        return report

    def _spread_samples(self, pairs: Pairs) -> Tensor:
        """``(S, N)`` samples of the mean function whose spread is this model's epistemic part (original scale);
        one row for a single network."""
        return self.predict_mean(pairs).unsqueeze(0)

    def estimate_noise(self, train: Pairs, val: Pairs | None) -> Noise:
        """Set the observation noise (original scale) by the convention of :mod:`recover_pyro.models.noise`:
        held out ``val``, training residual variance of ``train`` as the Gaussian floor (the noise itself
        without ``val``). ``fit`` calls it; call it again to re-score a loaded fit. Returns the noise."""
        self._check_fitted()
        train = train.to(self.device)
        assert train.y is not None
        val = None if val is None else val.to(self.device)
        f_val = None if val is None else self._spread_samples(val)
        y_val = None if val is None or val.y is None else val.y.float()
        noise = residual_noise(self.predict_mean(train), train.y.float(), f_val, y_val)
        self.noise_scale, self.noise_df = noise.scale, noise.df
        return noise

    def _epoch(self, train: Pairs, z: Tensor, optimizer: torch.optim.Optimizer) -> float:
        """One pass over shuffled minibatches; returns the mean training MSE (standardised scale)."""
        self.net.train()
        total = 0.0
        for idx in minibatches(len(train), self.config.batch_size, self._generator):
            idx = idx.to(self.device)
            optimizer.zero_grad()
            loss = F.mse_loss(self.net(train.drug_a[idx], train.drug_b[idx], train.cell[idx]), z[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        return total / len(train)

    # --- prediction ----------------------------------------------------------------------------
    def _forward(self, pairs: Pairs) -> Tensor:
        """``(N,)`` network output (standardised scale) in chunks of ``eval_batch_size``, no gradients."""
        step = self.config.eval_batch_size
        pairs = pairs.to(self.device)
        with torch.no_grad():
            parts = [
                self.net(p.drug_a, p.drug_b, p.cell) for p in (pairs[i : i + step] for i in range(0, len(pairs), step))
            ]
        return torch.cat(parts) if parts else torch.zeros(0, device=self.device)

    def scoring_session(self) -> ContextManager[None]:
        """The network's per-drug projections computed once per cell line and reused across ``predict`` calls."""
        return self._network_session(self.net)

    def predict_mean(self, pairs: Pairs) -> Tensor:
        """``(N,)`` prediction of the network in eval mode (dropout off), original scale."""
        self.net.eval()
        return self.scaler.inverse(self._forward(pairs))

    def predict(self, pairs: Pairs, num_samples: int = 100) -> PredictiveSamples:
        """``f`` ``(S, N)``: the network's prediction repeated ``S`` times; scalar ``noise_scale``."""
        self._check_fitted()
        f = self.predict_mean(pairs)
        return PredictiveSamples(
            f.expand(num_samples, -1), torch.tensor(self.noise_scale, device=f.device), self.noise_df
        )

    # --- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Network weights, target scaler, noise estimate, seed and RNG state (tensors / numbers only).

        The seed is part of the state because it also seeds MC-dropout masks at prediction time.
        """
        return {
            "seed": self.seed,
            "net": self.net.state_dict(),
            "noise_scale": self.noise_scale,
            **self._bookkeeping_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        self.net.load_state_dict(state["net"])
        self.noise_scale = float(state["noise_scale"])
        self._load_bookkeeping_state(state)


class MCDropoutModel(DeterministicModel):
    """A network trained with dropout whose predictive samples are forward passes with dropout on.

    Training, early stopping and the noise estimate are those of :class:`DeterministicModel` (the noise
    uses the dropout-off network). ``predict`` runs ``S`` stochastic passes in a loop (each pass already
    batches all candidates, and a loop keeps memory at one pass); the masks are seeded by ``seed``, so
    repeated calls on the same state return the same samples.

    Args:
        dropout: dropout rate passed to the predictor factory (which must accept ``dropout`` and expose
            ``mc_dropout``, like :class:`RecoverPredictor` and ``DeepSynergyPredictor``).
        Other arguments as in :class:`DeterministicModel`.
    """

    def __init__(
        self,
        drug_features: Tensor,
        cell_features: Tensor,
        *,
        predictor: PredictorFactory = DEFAULT_PREDICTOR,
        dropout: float = 0.2,
        training: TrainConfig = TrainConfig(),
        standardize: bool = True,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if not 0.0 < dropout < 1.0:
            raise ValueError(f"MCDropoutModel needs 0 < dropout < 1, got {dropout}")
        super().__init__(
            drug_features,
            cell_features,
            predictor=functools.partial(predictor, dropout=dropout),
            training=training,
            standardize=standardize,
            seed=seed,
            device=device,
        )
        if not hasattr(self.net, "mc_dropout"):
            raise TypeError(f"{type(self.net).__name__} has no 'mc_dropout' switch; MC dropout needs one")

    def _spread_samples(self, pairs: Pairs) -> Tensor:
        return self._dropout_passes(pairs, self.config.noise_samples)

    def predict(self, pairs: Pairs, num_samples: int = 100) -> PredictiveSamples:
        """``f`` ``(S, N)``: ``S`` forward passes with independent dropout masks; scalar ``noise_scale``."""
        self._check_fitted()
        z = self._dropout_passes(pairs, num_samples)
        return PredictiveSamples(z, torch.tensor(self.noise_scale, device=z.device), self.noise_df)

    def scoring_session(self) -> ContextManager[None]:
        """Nothing is kept: every pass draws its own dropout masks, in the per-drug layers too."""
        return contextlib.nullcontext()

    def _dropout_passes(self, pairs: Pairs, num_samples: int) -> Tensor:
        """``(S, N)`` forward passes with dropout on (original scale), masks seeded by ``seed``."""
        self.net.eval()
        self.net.mc_dropout = True  # type: ignore[assignment]  # torch stub: Module.__setattr__ takes Tensor | Module only
        try:
            with forked_rng(self.device):
                torch.manual_seed(self.seed)
                z = torch.stack([self._forward(pairs) for _ in range(num_samples)])
        finally:
            self.net.mc_dropout = False  # type: ignore[assignment]  # torch stub (as above)
        return self.scaler.inverse(z)


class DeepEnsemble:
    """``K`` :class:`DeterministicModel` members with independent seeds (initial weights, batch order).

    All members see the same training and validation sets (without a validation set the ensemble sets
    aside ``training.holdout`` of the training set once, for all members, as RECOVER does). The observation
    noise is the ensemble's, by the convention of :mod:`recover_pyro.models.noise` around the members'
    predictions (their population variance is the epistemic part); each member also keeps its own noise
    estimate, which the ensemble does not use.

    ``predict`` returns exactly ``K`` rows whatever ``num_samples`` asks for: row ``k`` is member ``k``'s
    prediction, so the predictive is the uniform mixture of ``K`` copies of the ensemble's noise distribution
    around the members. This is the limit of the method, not of the interface: Thompson sampling with an
    ensemble draws among ``K`` functions only. Consumers of :class:`PredictiveSamples` accept any ``S``.

    Args:
        n_members: ensemble size ``K``.
        seed: member seeds are spawned from it (:class:`numpy.random.SeedSequence`), so ensembles with
            neighbouring seeds share no member; the held-out split is drawn from it too.
        Other arguments as in :class:`DeterministicModel`.
    """

    def __init__(
        self,
        drug_features: Tensor,
        cell_features: Tensor,
        *,
        predictor: PredictorFactory = DEFAULT_PREDICTOR,
        n_members: int = 5,
        training: TrainConfig = TrainConfig(),
        standardize: bool = True,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if n_members < 1:
            raise ValueError(f"DeepEnsemble needs n_members >= 1, got {n_members}")
        seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n_members + 1)]
        self.config = training
        self.members = [
            DeterministicModel(
                drug_features,
                cell_features,
                predictor=predictor,
                training=training,
                standardize=standardize,
                seed=s,
                device=device,
            )
            for s in seeds[1:]
        ]
        self._generator = torch.Generator().manual_seed(seeds[0])
        self.noise_scale = math.nan
        self.noise_df = math.inf
        self.member_reports: list[FitReport] = []

    def fit(self, train: Pairs, val: Pairs | None = None) -> FitReport:
        """Fit every member; the report averages per-epoch losses over the members still training.

        ``best_epoch`` is the latest of the members' best epochs; each member's own report is kept in
        ``member_reports``, and ``curve`` has one row per member and epoch.
        """
        start = time.perf_counter()
        if val is None:
            train, val = holdout_split(train, self.config.holdout, self._generator)
        self.member_reports = []
        for k, member in enumerate(
            tqdm(self.members, desc="ensemble members", disable=not self.config.progress, leave=None)
        ):
            member.progress_desc = f"member {k + 1}/{len(self.members)} epochs"
            self.member_reports.append(member.fit(train, val))
        self.estimate_noise(train, val)
        curve = [{"member": k, **row} for k, r in enumerate(self.member_reports) for row in r.curve]
        return FitReport(
            losses=_mean_ragged([r.losses for r in self.member_reports]),
            val_metric=_mean_ragged([r.val_metric for r in self.member_reports]),
            best_epoch=max(r.best_epoch for r in self.member_reports),
            seconds=time.perf_counter() - start,
            curve=curve,
        )

    def estimate_noise(self, train: Pairs, val: Pairs | None) -> Noise:
        """Set the ensemble's observation noise (original scale) by the convention of
        :mod:`recover_pyro.models.noise` around the members' predictions: held out ``val``, training residual
        variance of the ensemble mean on ``train`` as the Gaussian floor (the noise itself without ``val``).
        ``fit`` calls it; call it again to re-score a loaded fit. Returns the noise."""
        for m in self.members:
            m._check_fitted()
        assert train.y is not None
        mean_train = torch.stack([m.predict_mean(train) for m in self.members]).mean(0)
        f_val = None if val is None else torch.stack([m.predict_mean(val) for m in self.members])
        y_val = None if f_val is None or val is None or val.y is None else val.y.to(f_val.device).float()
        noise = residual_noise(mean_train, train.y.to(mean_train.device).float(), f_val, y_val)
        self.noise_scale, self.noise_df = noise.scale, noise.df
        return noise

    @contextlib.contextmanager
    def scoring_session(self) -> Iterator[None]:
        """Every member's :meth:`DeterministicModel.scoring_session` at once."""
        with contextlib.ExitStack() as stack:
            for m in self.members:
                stack.enter_context(m.scoring_session())
            yield

    def predict(self, pairs: Pairs, num_samples: int = 100) -> PredictiveSamples:
        """``f`` ``(K, N)`` member predictions and the scalar ensemble ``noise_scale``; ``num_samples`` is
        ignored (see the class docstring)."""
        for m in self.members:
            m._check_fitted()
        f = torch.stack([m.predict_mean(pairs) for m in self.members])
        return PredictiveSamples(f, torch.tensor(self.noise_scale, device=f.device), self.noise_df)

    def state_dict(self) -> dict[str, Any]:
        return {
            "members": [m.state_dict() for m in self.members],
            "noise_scale": self.noise_scale,
            "noise_df": self.noise_df,
            "generator": self._generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["members"]) != len(self.members):
            raise ValueError(f"state has {len(state['members'])} members, this ensemble {len(self.members)}")
        for m, s in zip(self.members, state["members"]):
            m.load_state_dict(s)
        self.noise_scale = float(state["noise_scale"])
        self.noise_df = float(state.get("noise_df", math.inf))
        self._generator.set_state(state["generator"])


def _mean_ragged(rows: list[list[float]]) -> list[float]:
    """Element-wise mean of lists of different lengths over the lists long enough to have the element."""
    longest = max((len(r) for r in rows), default=0)
    return [float(np.mean([r[i] for r in rows if len(r) > i])) for i in range(longest)]
