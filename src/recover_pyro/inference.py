"""Stochastic variational inference for a (:class:`BayesianRegression`, guide) pair.

:func:`fit_svi` minimises the negative ELBO of Pyro's :class:`~pyro.infer.Trace_ELBO` (Monte-Carlo KL) or
:class:`~pyro.infer.TraceMeanField_ELBO` (analytic KL where one is registered) with Adam over the
parameters held by the two modules; the KL term comes from the ELBO, never from hand-written code.
Minibatches enter through the model's subsampled data plate, which scales the likelihood by
``N / batch``; each step's loss is divided by ``N`` (a per-datum ELBO) so the learning rate does not
depend on the data size.

KL annealing multiplies the log-densities of every latent site, in model *and* guide, by
:math:`\\beta_e = \\min(1, (e + 1) / E_{anneal})` in epoch ``e``. Under ``Trace_ELBO`` this scales
:math:`\\log p(w) - \\log q(w)`; under ``TraceMeanField_ELBO`` the analytic KL is scaled by the guide
site's scale, so both ELBOs see :math:`\\beta \\cdot KL`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import pyro
import torch
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import Message
from pyro.poutine.util import is_validation_enabled
from tqdm.auto import tqdm

from recover_pyro.data.screen import Pairs
from recover_pyro.guides import WeightGuide
from recover_pyro.logging_utils import announce_early_stop, epoch_postfix
from recover_pyro.models.base import FitReport
from recover_pyro.models.bayesian import BayesianRegression, local_params
from recover_pyro.predictive import sample_predictive
from recover_pyro.training import EarlyStopping, checked_targets, forked_rng, minibatches

log = logging.getLogger(__name__)

ELBOS: dict[str, type[ELBO]] = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}
VAL_METRICS = ("nll", "mse")


@dataclass(frozen=True)
class SVIConfig:
    """SVI settings.

    Args:
        elbo: ``"trace"`` (:class:`~pyro.infer.Trace_ELBO`) or ``"meanfield"``
            (:class:`~pyro.infer.TraceMeanField_ELBO`, analytic KLs; use it with sparse variational dropout).
        lr: Adam learning rate.
        lr_decay: multiply the learning rate by this factor after every epoch (1: constant).
        epochs: maximum number of passes over the training set.
        batch_size: minibatch size.
        num_particles: ELBO particles per step.
        kl_anneal_epochs: ramp the KL weight linearly from ``1/E`` to 1 over this many epochs (0: off).
        patience: with validation data, stop after this many epochs without a better ``val_metric``.
        clip_norm: clip the gradient norm to this value (None: no clipping).
        seed: seeds weight noise, minibatch order and validation samples.
        progress: show a tqdm bar over epochs.
        val_metric: ``"nll"`` (Gaussian NLL of the posterior predictive, mean and variance
            :math:`Var[f] + \\sigma^2`) or ``"mse"`` (of the posterior predictive mean), standardised scale.
        val_samples: posterior samples used for the validation metric.
        eval_batch_size: candidates per forward pass when predicting.
    """

    elbo: str = "trace"
    lr: float = 1e-3
    lr_decay: float = 1.0
    epochs: int = 200
    batch_size: int = 128
    num_particles: int = 1
    kl_anneal_epochs: int = 0
    patience: int = 20
    clip_norm: float | None = None
    seed: int = 0
    progress: bool = False
    val_metric: str = "nll"
    val_samples: int = 32
    eval_batch_size: int = 512

    def __post_init__(self) -> None:
        if self.elbo not in ELBOS:
            raise ValueError(f"SVIConfig.elbo must be one of {sorted(ELBOS)}, got {self.elbo!r}")
        if self.val_metric not in VAL_METRICS:
            raise ValueError(f"SVIConfig.val_metric must be one of {VAL_METRICS}, got {self.val_metric!r}")
        if not self.lr > 0 or not 0 < self.lr_decay <= 1:
            raise ValueError(f"SVIConfig: need lr > 0 and 0 < lr_decay <= 1, got {self.lr}, {self.lr_decay}")
        if min(self.epochs, self.batch_size, self.num_particles, self.patience, self.val_samples,
               self.eval_batch_size) < 1 or self.kl_anneal_epochs < 0:
            raise ValueError(f"SVIConfig: epochs, batch_size, num_particles, patience, val_samples and "
                             f"eval_batch_size must be >= 1 and kl_anneal_epochs >= 0: {self}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"SVIConfig.clip_norm must be positive or None, got {self.clip_norm}")


class LatentScale(Messenger):
    """Multiply the log-density scale of every unobserved sample site by ``factor`` (observations untouched)."""

    def __init__(self, factor: float) -> None:
        if not factor > 0:
            raise ValueError(f"LatentScale: factor must be positive, got {factor}")
        super().__init__()
        self.factor = factor

    def _process_message(self, msg: Message) -> None:
        if msg["type"] == "sample" and not msg["is_observed"]:
            msg["scale"] = self.factor * msg["scale"]


def kl_weight(epoch: int, anneal_epochs: int) -> float:
    """:math:`\\beta_e = \\min(1, (e + 1) / E)` (1 when annealing is off)."""
    return 1.0 if anneal_epochs <= 0 else min(1.0, (epoch + 1) / anneal_epochs)


def make_elbo(config: SVIConfig) -> ELBO:
    """The configured ELBO (one data plate, particles in a loop)."""
    return ELBOS[config.elbo](num_particles=config.num_particles, max_plate_nesting=1)




def validation_metric(model: BayesianRegression, guide: WeightGuide, val: Pairs, config: SVIConfig) -> float:
    """The configured validation metric (standardised scale, lower is better), with a fixed seed so that
    epochs are compared on common random numbers."""
    y = checked_targets(val, "fit_svi: validation")
    generator = torch.Generator(y.device).manual_seed(config.seed)
    with torch.no_grad():
        f = sample_predictive(model, guide, val, config.val_samples, config.eval_batch_size, generator)
        mean = f.mean(0)
        if config.val_metric == "mse":
            return float((mean - y).pow(2).mean())
        var = f.var(0, unbiased=False) + model.noise_scale().pow(2)
        return float((0.5 * torch.log(2 * math.pi * var) + 0.5 * (y - mean).pow(2) / var).mean())


def _parameters(*modules: torch.nn.Module) -> list[torch.nn.Parameter]:
    seen: dict[int, torch.nn.Parameter] = {}
    for module in modules:
        for p in module.parameters():
            seen.setdefault(id(p), p)
    return list(seen.values())


def fit_svi(
    model: BayesianRegression,
    guide: WeightGuide,
    train: Pairs,
    val: Pairs | None = None,
    config: SVIConfig = SVIConfig(),
) -> FitReport:
    """Fit ``guide`` (and the model's point-estimated parameters) by SVI, continuing from their current values.

    Args:
        model, guide: the pair to train; their parameters are updated in place.
        train: training experiments with **standardised** targets ``y``.
        val: optional validation experiments (standardised targets) for early stopping; the parameters of
            the best epoch are restored at the end.
        config: see :class:`SVIConfig`.

    Returns:
        :class:`FitReport` with the per-epoch mean per-datum negative ELBO in ``losses``, the validation
        metric per epoch in ``val_metric`` and ``best_epoch`` (the last epoch without validation data).

    The global torch RNG is used only inside :func:`torch.random.fork_rng`, so the caller's RNG state is
    unchanged and equal seeds give equal fits.
    """
    start = time.perf_counter()
    y = checked_targets(train, "fit_svi: training")
    if val is not None:
        checked_targets(val, "fit_svi: validation")
    n = len(train)
    elbo = make_elbo(config)
    params = _parameters(model, guide)
    optimizer = torch.optim.Adam(params, lr=config.lr)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_decay)
    stopper = None if val is None else EarlyStopping(config.patience)
    generator = torch.Generator().manual_seed(config.seed)
    report = FitReport()
    validate = is_validation_enabled()
    model.train()
    with forked_rng(y.device), local_params():
        torch.manual_seed(config.seed)
        # leave=None: a top-level bar stays (its line ends before the next log line); a nested one is cleared.
        bar = tqdm(range(config.epochs), disable=not config.progress, desc="SVI epochs", leave=None)
        for epoch in bar:
            step_model, step_guide = _annealed(model, guide, kl_weight(epoch, config.kl_anneal_epochs))
            losses = []
            for idx in minibatches(n, config.batch_size, generator):
                idx = idx.to(y.device)  # drawn on the CPU: the same minibatches on every device
                optimizer.zero_grad()
                # Pyro's checks (shapes, supports, mean-field order) run on the first step only: the
                # structure never changes afterwards, and they cost ~25% of a step.
                with pyro.validation_enabled(validate and epoch == 0 and not losses):
                    loss = elbo.differentiable_loss(step_model, step_guide, train.drug_a, train.drug_b, train.cell,
                                                    y, subsample=idx) / n
                loss.backward()
                if config.clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, config.clip_norm)
                optimizer.step()
                losses.append(float(loss.detach()))
            report.losses.append(sum(losses) / len(losses))
            if not math.isfinite(report.losses[-1]):
                raise FloatingPointError(f"fit_svi: the ELBO became {report.losses[-1]} in epoch {epoch}; "
                                         f"lower lr (now {config.lr}) or set clip_norm")
            schedule.step()
            if stopper is not None and val is not None:
                report.val_metric.append(validation_metric(model, guide, val, config))
            bar.set_postfix(epoch_postfix(report.losses, report.val_metric, f"val_{config.val_metric}"))
            if stopper is not None and stopper.step(report.val_metric[-1], [p.detach() for p in params]):
                break
    if stopper is not None:
        if stopper.best_state is None:
            raise FloatingPointError(f"fit_svi: the validation {config.val_metric} was never finite")
        with torch.no_grad():
            for p, best in zip(params, stopper.best_state):
                p.copy_(best)
        report.best_epoch = stopper.best_epoch
        announce_early_stop(log, "SVI epochs", report.best_epoch, len(report.losses), config.epochs)
    else:
        report.best_epoch = len(report.losses) - 1
    model.eval()
    report.seconds = time.perf_counter() - start
    return report


def _annealed(model: Callable, guide: Callable, beta: float) -> tuple[Callable, Callable]:
    """(model, guide) with every latent site's log-density scaled by ``beta`` (unchanged when 1)."""
    if beta >= 1.0:
        return model, guide
    return LatentScale(beta)(model), LatentScale(beta)(guide)
