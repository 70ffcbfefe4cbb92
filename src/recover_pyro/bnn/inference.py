"""Stochastic variational inference for a (:class:`BayesianRegression`, guide) pair.

:func:`fit_svi` runs two stages:

1. **Deterministic warm start** (``warm_start_epochs > 0``): the network with every Bayesian weight fixed to
   its guide mean is fitted by mean squared error (Adam, early-stopped on the validation MSE when validation
   data are given). The guide means then start at a fitted network instead of at random initial weights:
   far from its data the variational objective is dominated by the KL term (observed on ALMANAC MCF7: ~16
   nats per datum of KL against ~1.4 of data), and its stochastic gradients take thousands of steps to get
   there.
2. **SVI**: the negative ELBO of Pyro's :class:`~pyro.infer.Trace_ELBO` (Monte-Carlo KL) or
   :class:`~pyro.infer.TraceMeanField_ELBO` (analytic KL where one is registered) is minimised with Adam;
   the KL term comes from the ELBO, never from hand-written code. Guide scales get their own learning rate
   ``scale_lr`` (they live on a log scale, where Adam moves about ``lr`` per step: at ``lr = 3e-3`` a
   scale needs ~1,500 steps to change 100-fold). With a Bayesian head and ``freeze_trunk`` (default), the
   warm-started trunk is fixed and its output ``(N, K)`` is computed once: the ELBO is then that of a
   Bayesian head on fixed features, and each step costs a head pass. The stage stops when the ELBO has
   converged (``stopping="elbo"``: no significant decrease over ``window`` epochs, after ``lr_drops``
   learning-rate drops), not on a validation metric that a point-estimated trunk can drive up early.

With ``local_reparam`` the SVI loss is evaluated inside a :class:`~recover_pyro.bnn.local_reparam.LocalReparam`
messenger: the linear layers of :func:`local_reparam_sites` sample their pre-activations per datum from the
guide's Normal (local reparameterisation) instead of sharing one weight sample over the minibatch. Same ELBO,
a lower-variance estimate of its expected log-likelihood; the KL term and prediction are unchanged.

Identity random effects (:class:`~recover_pyro.bnn.layers.IdentityEffects`, if the model has them) are fitted
with the weights: the warm start fits their guide means with the network (their scales :math:`\\tau` stay at
their initial value there), SVI their whole guide factors; the guide's :math:`\\log\\tau` parameters are in the
learning-rate group of the guide scales (``scale_lr``).

Minibatches enter through the model's subsampled data plate, which scales the likelihood by ``N / batch``;
each step's loss is divided by ``N`` (a per-datum ELBO) so the learning rate does not depend on the data size.

KL annealing multiplies the log-densities of every latent site, in model *and* guide, by
:math:`\\beta_e = \\min(1, (e + 1) / E_{anneal})` in epoch ``e``. Under ``Trace_ELBO`` this scales
:math:`\\log p(w) - \\log q(w)`; under ``TraceMeanField_ELBO`` the analytic KL is scaled by the guide
site's scale, so both ELBOs see :math:`\\beta \\cdot KL`.

Every epoch of both stages is recorded in :attr:`FitReport.curve`: for SVI the per-datum negative ELBO split
into the expected negative log-likelihood (read off the model trace's observation site) and the KL part
(the rest of the ELBO), and the validation metric.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, cast

import pyro
import torch
import torch.nn.functional as F
from pyro.distributions import Distribution
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import Message
from pyro.poutine.util import is_validation_enabled
from torch import Tensor
from tqdm.auto import tqdm

from recover_pyro.bnn.guides import WeightGuide
from recover_pyro.bnn.layers import PRIOR_SCALE_SUFFIX, BayesianRegression, _TrunkHead, local_params
from recover_pyro.bnn.local_reparam import LocalReparam
from recover_pyro.bnn.predictive import HEAD_PREFIX, bayesian_head_only, has_trunk_head, sample_head, sample_predictive
from recover_pyro.data.screen import Pairs
from recover_pyro.logging_utils import announce_early_stop, epoch_postfix
from recover_pyro.models.base import FitReport
from recover_pyro.models.training import EarlyStopping, adam, checked_targets, forked_rng, minibatches

log = logging.getLogger(__name__)

ELBOS: dict[str, type[Trace_ELBO]] = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}
VAL_METRICS = ("nll", "mse")
STOPPING = ("elbo", "val", "none")


@dataclass(frozen=True)
class SVIConfig:
    """SVI settings.

    Args:
        elbo: ``"trace"`` (:class:`~pyro.infer.Trace_ELBO`) or ``"meanfield"``
            (:class:`~pyro.infer.TraceMeanField_ELBO`, analytic KLs; use it with sparse variational dropout).
        lr: Adam learning rate of the guide means and the point-estimated parameters.
        scale_lr: Adam learning rate of the guide scales (log scale); ``None``: ``lr``.
        lr_decay: multiply the learning rates by this factor after every SVI epoch (1: constant).
        epochs: maximum number of SVI passes over the training set.
        min_epochs: SVI epochs before the ELBO convergence rule may stop.
        batch_size: minibatch size.
        num_particles: ELBO particles per step.
        kl_anneal_epochs: ramp the KL weight linearly from ``1/E`` to 1 over this many epochs (0: off); the ELBO
            convergence rule counts only epochs at full weight.
        stopping: ``"elbo"`` (stop when the training ELBO has converged), ``"val"`` (early stopping on
            ``val_metric`` with the best epoch's parameters restored; needs validation data) or ``"none"``
            (run ``epochs``).
        window: epochs compared by the ELBO convergence rule: it stops when the mean loss of the last
            ``window`` epochs is not below that of the ``window`` before by more than ``tol`` (relative) or
            two standard errors, whichever is larger.
        tol: relative tolerance of the convergence rule.
        lr_drops: on convergence, multiply the learning rates by ``lr_drop`` and go on this many times
            before stopping (settles the stochastic iterates near the optimum).
        lr_drop: the factor of each drop.
        patience: with ``stopping="val"``, stop after this many epochs without a better ``val_metric``.
        warm_start_epochs: maximum epochs of the deterministic warm start (0: none).
        warm_start_patience: its early-stopping patience on the validation MSE (with validation data).
        freeze_trunk: with every Bayesian site in the head of a trunk / head predictor, keep the warm-started
            trunk fixed during SVI (its output is then computed once).
        clip_norm: clip the gradient norm to this value (None: no clipping).
        local_reparam: sample the pre-activations of the linear layers of :func:`local_reparam_sites` per
            datum from the guide (local reparameterisation) in the SVI loss; needs a Normal guide there.
        seed: seeds weight noise, minibatch order and validation samples.
        progress: show a tqdm bar over epochs.
        val_metric: ``"nll"`` (Gaussian NLL of the posterior predictive, mean and variance
            :math:`Var[f] + \\sigma^2`) or ``"mse"`` (of the posterior predictive mean), standardised scale.
        val_samples: posterior samples used for the validation metric.
        eval_batch_size: candidates per forward pass when predicting.
    """

    elbo: str = "trace"
    lr: float = 3e-3
    scale_lr: float | None = 0.05
    lr_decay: float = 1.0
    epochs: int = 500
    min_epochs: int = 20
    batch_size: int = 128
    num_particles: int = 1
    kl_anneal_epochs: int = 0
    stopping: str = "elbo"
    window: int = 20
    tol: float = 1e-3
    lr_drops: int = 1
    lr_drop: float = 0.1
    patience: int = 20
    warm_start_epochs: int = 200
    warm_start_patience: int = 20
    freeze_trunk: bool = True
    clip_norm: float | None = None
    local_reparam: bool = False
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
        if self.stopping not in STOPPING:
            raise ValueError(f"SVIConfig.stopping must be one of {STOPPING}, got {self.stopping!r}")
        if not self.lr > 0 or not 0 < self.lr_decay <= 1 or (self.scale_lr is not None and not self.scale_lr > 0):
            raise ValueError(
                f"SVIConfig: need lr > 0, scale_lr > 0 (or None) and 0 < lr_decay <= 1, got "
                f"{self.lr}, {self.scale_lr}, {self.lr_decay}"
            )
        if (
            min(
                self.epochs,
                self.batch_size,
                self.num_particles,
                self.patience,
                self.val_samples,
                self.eval_batch_size,
                self.window,
                self.warm_start_patience,
            )
            < 1
            or min(self.kl_anneal_epochs, self.min_epochs, self.lr_drops, self.warm_start_epochs) < 0
        ):
            raise ValueError(
                f"SVIConfig: epochs, batch_size, num_particles, patience, val_samples, "
                f"eval_batch_size, window and warm_start_patience must be >= 1 and kl_anneal_epochs, "
                f"min_epochs, lr_drops and warm_start_epochs >= 0: {self}"
            )
        if not 0 < self.lr_drop < 1 or not self.tol >= 0:
            raise ValueError(f"SVIConfig: need 0 < lr_drop < 1 and tol >= 0, got {self.lr_drop}, {self.tol}")
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


class ObservedLogLikelihood(Messenger):
    """Record the scaled log-likelihood of the observed sites of each model run (for the ELBO split).

    ``total`` sums :math:`s \\cdot \\log p(y \\mid \\ldots)` over observed sites and runs, where :math:`s` is
    the plate's subsampling scale, i.e. the Monte-Carlo estimate of :math:`E_q[\\log p(y \\mid w)]` that the
    ELBO itself uses, times the number of particles.
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0.0

    def _postprocess_message(self, msg: Message) -> None:
        if msg["type"] == "sample" and msg["is_observed"]:
            with torch.no_grad():
                fn = cast(Distribution, msg["fn"])  # a sample site's fn is its distribution
                self.total += float((fn.log_prob(msg["value"]) * msg["scale"]).sum())


def kl_weight(epoch: int, anneal_epochs: int) -> float:
    """:math:`\\beta_e = \\min(1, (e + 1) / E)` (1 when annealing is off)."""
    return 1.0 if anneal_epochs <= 0 else min(1.0, (epoch + 1) / anneal_epochs)


def local_reparam_sites(model: BayesianRegression) -> list[str]:
    """The Bayesian sites where local reparameterisation is exact: the head layers of a trunk / head predictor.

    Per-row noise matches the weight posterior only where each datum passes through the layer with one
    input row. The head sees one merged row per pair; the per-drug layers and their FiLM maps see both drugs
    of a pair, which must share one weight (their joint, not just their marginals, enters the bilinear
    merge), and a predictor without a trunk / head split (e.g. DeepSynergy, which averages both drug orders)
    runs every layer twice per datum. Those sites, and the bilinear merge, keep whole weight samples.
    """
    if not has_trunk_head(model):
        return []
    return [name for name in model.sites if name.startswith(HEAD_PREFIX)]


def make_elbo(config: SVIConfig) -> Trace_ELBO:
    """The configured ELBO (one data plate, particles in a loop)."""
    return ELBOS[config.elbo](num_particles=config.num_particles, max_plate_nesting=1)


def validation_metric(
    model: BayesianRegression, guide: WeightGuide, val: Pairs, config: SVIConfig, trunk: Tensor | None = None
) -> float:
    """The configured validation metric (standardised scale, lower is better), with a fixed seed so that
    epochs are compared on common random numbers. ``trunk``: the validation set's fixed trunk outputs
    ``(M, K)`` of a Bayesian-head model (then only the head runs)."""
    y = _targets(val, "validation")
    generator = torch.Generator(y.device).manual_seed(config.seed)
    with torch.no_grad():
        if trunk is None:
            f = sample_predictive(model, guide, val, config.val_samples, config.eval_batch_size, generator)
        else:
            f = sample_head(model, guide, trunk, val.cell, config.val_samples, generator, val.drug_a, val.drug_b)
        mean = f.mean(0)
        if config.val_metric == "mse":
            return float((mean - y).pow(2).mean())
        var = f.var(0, unbiased=False) + model.noise_scale().pow(2)
        return float((0.5 * torch.log(2 * math.pi * var) + 0.5 * (y - mean).pow(2) / var).mean())


def _targets(pairs: Pairs, what: str) -> Tensor:
    """``(N,)`` float targets of ``pairs``, whose values were checked once per fit (by :func:`fit_svi` or the
    model that standardised them), not once per stage or epoch."""
    if pairs.y is None:
        raise ValueError(f"fit_svi: {what} pairs have no targets (y is None)")
    return pairs.y.float()


def elbo_converged(losses: list[float], window: int, tol: float) -> bool:
    """Whether the mean of the last ``window`` losses is not below the mean of the ``window`` before by more
    than ``max(tol * max(1, |mean|), 2 standard errors of the difference)``: no significant progress."""
    if len(losses) < 2 * window:
        return False
    before = torch.tensor(losses[-2 * window : -window], dtype=torch.float64)
    last = torch.tensor(losses[-window:], dtype=torch.float64)
    gain = float(before.mean() - last.mean())
    se = math.sqrt(float(before.var() + last.var()) / window) if window > 1 else 0.0
    return gain < max(tol * max(1.0, abs(float(last.mean()))), 2.0 * se)


def _unique(params: Iterable[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    seen: dict[int, torch.nn.Parameter] = {}
    for p in params:
        seen.setdefault(id(p), p)
    return list(seen.values())


def _point_parameters(model: BayesianRegression) -> list[torch.nn.Parameter]:
    """The model's point-estimated network parameters (not the noise scale or learned prior scales)."""
    return [p for n, p in model.named_parameters() if not n.startswith("sigma") and PRIOR_SCALE_SUFFIX not in n]


def fit_svi(
    model: BayesianRegression,
    guide: WeightGuide,
    train: Pairs,
    val: Pairs | None = None,
    config: SVIConfig = SVIConfig(),
    *,
    targets_checked: bool = False,
) -> FitReport:
    """Warm-start, then fit ``guide`` (and the model's point-estimated parameters) by SVI, continuing from
    their current values.

    Args:
        model, guide: the pair to train; their parameters are updated in place.
        train: training experiments with **standardised** targets ``y``.
        val: optional validation experiments (standardised targets): early stopping of the warm start, the
            validation metric recorded per SVI epoch, and early stopping of SVI with ``stopping="val"`` (the
            parameters of the best epoch are then restored).
        config: see :class:`SVIConfig`.
        targets_checked: the caller has already checked that every target is finite (a model does so once
            per fit, :meth:`~recover_pyro.models.base.StandardisedModel.fit_data`); otherwise they are checked
            here, once, before any stage runs.

    Returns:
        :class:`FitReport` with the SVI stage's per-epoch mean per-datum negative ELBO in ``losses``, its
        validation metric per epoch in ``val_metric``, ``best_epoch`` (the last epoch unless ``stopping="val"``)
        and both stages' epochs in ``curve``.

    The global torch RNG is used only inside :func:`torch.random.fork_rng`, so the caller's RNG state is
    unchanged and equal seeds give equal fits.
    """
    start = time.perf_counter()
    if targets_checked:
        y = _targets(train, "training")
    else:
        y = checked_targets(train, "fit_svi: training")
        if val is not None:
            checked_targets(val, "fit_svi: validation")
    if config.stopping == "val" and val is None:
        raise ValueError("fit_svi: stopping='val' needs validation data; use stopping='elbo' without it")
    report = FitReport()
    generator = torch.Generator().manual_seed(config.seed)
    with forked_rng(y.device), local_params():
        torch.manual_seed(config.seed)
        if config.warm_start_epochs > 0:
            warm_start(model, guide, train, val, config, generator, report)
        _svi_stage(model, guide, train, val, config, generator, report)
    model.eval()
    report.seconds = time.perf_counter() - start
    return report


def warm_start(
    model: BayesianRegression,
    guide: WeightGuide,
    train: Pairs,
    val: Pairs | None,
    config: SVIConfig,
    generator: torch.Generator,
    report: FitReport,
) -> None:
    """Fit the network with its Bayesian weights at the guide means by mean squared error (standardised
    targets), updating the point-estimated parameters and the guide means in place.

    With ``val`` it early-stops on the validation MSE (patience ``warm_start_patience``) and restores the
    best epoch; without it runs ``warm_start_epochs``. Appends one ``stage="warm_start"`` row per epoch to
    ``report.curve``.
    """
    y = _targets(train, "training")
    params = _unique([*_point_parameters(model), *guide.loc_parameters()])
    optimizer = adam(params, lr=config.lr)
    stopper = None if val is None else EarlyStopping(config.warm_start_patience)
    model.train()
    # leave=None: a top-level bar stays (its line ends before the next log line); a nested one is cleared.
    bar = tqdm(range(config.warm_start_epochs), disable=not config.progress, desc="warm start", leave=None)
    for epoch in bar:
        total = 0.0
        for idx in minibatches(len(train), config.batch_size, generator):
            idx = idx.to(y.device)
            optimizer.zero_grad()
            f = model.mean_function(guide.locs(), train.drug_a[idx], train.drug_b[idx], train.cell[idx])
            # With components f is (K, B): every component is fitted to the targets.
            loss = F.mse_loss(f, y[idx]) if f.dim() == 1 else (f - y[idx]).pow(2).mean()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        row: dict[str, Any] = {"stage": "warm_start", "epoch": epoch, "train_mse": total / len(train)}
        if stopper is not None and val is not None:
            with torch.no_grad():
                f_val = _chunked(
                    lambda s: model.mean_function(guide.locs(), val.drug_a[s], val.drug_b[s], val.cell[s]),
                    len(val),
                    config.eval_batch_size,
                    dim=-1,
                )
                assert val.y is not None  # validation pairs carry targets (fit_svi checks them)
                row["val_mse"] = float((f_val - val.y.float()).pow(2).mean())
            report.curve.append(row)
            bar.set_postfix(epoch_postfix([row["train_mse"]], [row["val_mse"]], "val_mse"))
            if stopper.step(row["val_mse"], [p.detach() for p in params]):
                break
        else:
            report.curve.append(row)
            bar.set_postfix(epoch_postfix([row["train_mse"]], []))
    if stopper is not None and stopper.best_state is not None:
        with torch.no_grad():
            for p, best in zip(params, stopper.best_state):
                p.copy_(best)
        report.warm_start_epoch = stopper.best_epoch
        announce_early_stop(log, "warm start", stopper.best_epoch, len(report.curve), config.warm_start_epochs)
    else:
        report.warm_start_epoch = config.warm_start_epochs - 1


def _chunked(fn: Callable[[slice], Tensor], n: int, size: int, dim: int = 0) -> Tensor:
    return torch.cat([fn(slice(i, i + size)) for i in range(0, n, size)], dim=dim)


def _svi_stage(
    model: BayesianRegression,
    guide: WeightGuide,
    train: Pairs,
    val: Pairs | None,
    config: SVIConfig,
    generator: torch.Generator,
    report: FitReport,
) -> None:
    """The SVI stage of :func:`fit_svi` (see its docstring); fills ``report``."""
    y = _targets(train, "training")
    n = len(train)
    elbo = make_elbo(config)
    frozen = config.freeze_trunk and bayesian_head_only(model)
    z_val = None
    if frozen:
        # The trunk is fixed from here on: its output is computed once and each step runs the head only.
        predictor = cast(_TrunkHead, model.predictor)
        with torch.no_grad():
            z = _chunked(
                lambda s: predictor.trunk(train.drug_a[s], train.drug_b[s], train.cell[s]),
                n,
                8 * config.eval_batch_size,
            )
            if val is not None:
                z_val = _chunked(
                    lambda s: predictor.trunk(val.drug_a[s], val.drug_b[s], val.cell[s]),
                    len(val),
                    8 * config.eval_batch_size,
                )
        guide.update_on_features(model, z, train)
        run_model: Callable[..., Any] = model.head_model
        if model.identity is not None:
            run_model = functools.partial(model.head_model, drug_a=train.drug_a, drug_b=train.drug_b)
        args: tuple[Tensor, ...] = (z, train.cell, y)
        trained = [p for n_, p in model.named_parameters() if n_.startswith("sigma")]
    else:
        run_model = model
        args = (train.drug_a, train.drug_b, train.cell, y)
        trained = [p for n_, p in model.named_parameters() if PRIOR_SCALE_SUFFIX not in n_]
    # Empirical-Bayes prior scales (log-scale parameters) learn at the guide scales' rate.
    prior_scales = [p for n_, p in model.named_parameters() if PRIOR_SCALE_SUFFIX in n_]
    # What the guide sets in closed form on the frozen trunk (update_on_features) is not SVI's to move.
    held = guide.closed_form_parameters(model) if frozen else []
    fixed = {id(p) for p in held}
    scale_params = [p for p in [*guide.scale_parameters(), *prior_scales] if id(p) not in fixed]
    skip = {id(p) for p in scale_params} | fixed
    others = _unique([*trained, *(p for p in guide.parameters() if id(p) not in skip)])
    optimizer = adam(
        [{"params": others, "lr": config.lr}, {"params": scale_params, "lr": config.scale_lr or config.lr}], config.lr
    )
    all_params = [*others, *scale_params]
    reparam_sites = local_reparam_sites(model) if config.local_reparam else []
    if config.local_reparam and model.components > 1:
        raise ValueError("fit_svi: local_reparam takes one component; set model.components=1 or local_reparam=false")
    if config.local_reparam and not reparam_sites:
        raise ValueError(
            f"fit_svi: local_reparam needs Bayesian head layers ({HEAD_PREFIX}*) of a trunk / head predictor; "
            f"the Bayesian sites are {list(model.sites)}"
        )
    # One messenger for the stage, entered around every step's loss (it resets its records on entry).
    reparam = LocalReparam(reparam_sites) if reparam_sites else None
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_decay)
    stopper = EarlyStopping(config.patience) if config.stopping == "val" else None
    validate = is_validation_enabled()
    drops_left = config.lr_drops
    since_drop: list[float] = []
    converged = config.stopping != "elbo"
    model.train()
    # Held fixed: no gradients through them (with a GP head the (M, M) factor would cost most of each step).
    for p in held:
        p.requires_grad_(False)
    try:
        bar = tqdm(range(config.epochs), disable=not config.progress, desc="SVI epochs", leave=None)
        for epoch in bar:
            beta = kl_weight(epoch, config.kl_anneal_epochs)
            step_model, step_guide = _annealed(run_model, guide, beta)
            recorder = ObservedLogLikelihood()
            losses: list[float] = []
            for idx in minibatches(n, config.batch_size, generator):
                idx = idx.to(y.device)  # drawn on the CPU: the same minibatches on every device
                optimizer.zero_grad()
                # Pyro's checks (shapes, supports, mean-field order) run on the first step only: the
                # structure never changes afterwards, and they cost ~25% of a step.
                first_step = epoch == 0 and not losses
                with pyro.validation_enabled(validate and first_step), reparam or contextlib.nullcontext():
                    loss = elbo.differentiable_loss(recorder(step_model), step_guide, *args, subsample=idx) / n
                if first_step and reparam is not None and reparam.recorded != set(reparam_sites):
                    raise ValueError(
                        "fit_svi: local_reparam needs a Normal guide distribution at every head site; "
                        f"{sorted(set(reparam_sites) - reparam.recorded)} got none from {type(guide).__name__}. "
                        "Use a mean-field Normal (or sparse variational dropout) guide, or inference.local_reparam=false"
                    )
                loss.backward()
                if config.clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(all_params, config.clip_norm)
                optimizer.step()
                losses.append(float(loss.detach()))
            report.losses.append(sum(losses) / len(losses))
            if not math.isfinite(report.losses[-1]):
                raise FloatingPointError(
                    f"fit_svi: the ELBO became {report.losses[-1]} in epoch {epoch}; "
                    f"lower lr (now {config.lr}) or set clip_norm"
                )
            nll = -recorder.total / (n * len(losses) * config.num_particles)
            row: dict[str, Any] = {
                "stage": "svi",
                "epoch": epoch,
                "neg_elbo": report.losses[-1],
                "expected_nll": nll,
                "kl": report.losses[-1] - nll,
                "noise_scale": float(model.noise_scale().detach()),
            }
            schedule.step()
            if val is not None:
                report.val_metric.append(validation_metric(model, guide, val, config, z_val))
                row[f"val_{config.val_metric}"] = report.val_metric[-1]
            report.curve.append(row)
            bar.set_postfix(epoch_postfix(report.losses, report.val_metric, f"val_{config.val_metric}"))
            if stopper is not None:
                if stopper.step(report.val_metric[-1], [p.detach() for p in all_params]):
                    break
            elif config.stopping == "elbo" and beta >= 1.0:
                # Only the full ELBO counts: while the KL weight ramps up, the loss rises by design.
                since_drop.append(report.losses[-1])
                if epoch + 1 >= config.min_epochs and elbo_converged(since_drop, config.window, config.tol):
                    if drops_left == 0:
                        converged = True
                        log.info(
                            "SVI: the ELBO converged after %d epochs (negative ELBO %.4g per datum)",
                            epoch + 1,
                            report.losses[-1],
                        )
                        break
                    drops_left -= 1
                    since_drop = []
                    for group in optimizer.param_groups:
                        group["lr"] *= config.lr_drop

    finally:
        for p in held:
            p.requires_grad_(True)

    if stopper is not None:
        if stopper.best_state is None:
            raise FloatingPointError(f"fit_svi: the validation {config.val_metric} was never finite")
        with torch.no_grad():
            for p, best in zip(all_params, stopper.best_state):
                p.copy_(best)
        report.best_epoch = stopper.best_epoch
        announce_early_stop(log, "SVI epochs", report.best_epoch, len(report.losses), config.epochs)
    else:
        report.best_epoch = len(report.losses) - 1
    report.converged = converged
    if frozen:
        guide.update_on_features(model, z, train, model.noise_scale().detach() ** 2)


def _annealed(model: Callable, guide: Callable, beta: float) -> tuple[Callable, Callable]:
    """(model, guide) with every latent site's log-density scaled by ``beta`` (unchanged when 1)."""
    if beta >= 1.0:
        return model, guide
    return LatentScale(beta)(model), LatentScale(beta)(guide)
