"""Simulated sequential campaigns on a measured screen (benchmark mode), with exact resume.

A campaign replays RECOVER's loop on a screen whose scores are all known but hidden from the model:

1. The *pool* is the screen's experiments in ``pool_cell_lines`` and ``pool_studies`` (all of them by
   default); each candidate is one (unordered pair, cell line, study) row. Rows with a missing score are
   left out.
2. Round 0 reveals ``n_initial`` pool candidates drawn uniformly at random (seeded).
3. Each round ``r = 1..R`` fits a model on the revealed candidates (a fresh ``model_factory(seed=...)``, or
   the same object refitted when ``warm_start``), draws ``S`` posterior samples of the mean function ``f``
   for every unrevealed candidate, lets the :class:`~recover_pyro.acquisition.Acquisition` pick ``q`` of
   them and reveals their measured scores.

Acquisition sees :attr:`PredictiveSamples.f` ``(S, U)`` (``U`` unrevealed candidates), not noisy draws of
a new measurement: the goal is candidates whose synergy itself (the mean function) is high, and noise
carries no information about which candidate that is (it would only blur UCB/Thompson rankings).

Per-round bookkeeping (one row each; round 0 describes the initial random reveal):

* ``recall_top{p}pct``: fraction of the pool's top ``p`` % by measured score revealed so far, initial
  reveal included (:func:`recover_pyro.metrics.recall_at_top_k`); random acquisition's expectation is the
  explored fraction ``fraction_explored = n_measured / N``.
* batch quality ("true" score = the screen's measured ``score``, the simulation's hidden truth):
  ``batch_mean`` / ``batch_max`` true score of the batch and its *immediate regret*. With
  :math:`U_r` the candidates still unrevealed when batch :math:`B_r` was selected,
  :math:`\\mathrm{regret}_i = \\max_{j \\in U_r} y_j - y_i` for :math:`i \\in B_r` (``>= 0``);
  ``regret_min`` is 0 exactly when the batch holds the best remaining candidate, ``regret_median`` is its
  median over the batch. ``unique_drugs`` counts distinct drugs in the batch, ``best_found`` the best
  score revealed so far.
* model quality on the unrevealed pool before acquisition: ``r2`` (squared Pearson), ``spearman``,
  ``nll``, ``sd_error_spearman`` (does the uncertainty acquisition uses rank the model's errors?),
  ``coverage_90`` and the mean ``epistemic_sd`` / ``aleatoric_sd`` (original scale;
  :func:`recover_pyro.metrics.evaluate`); NaN in round 0 unless a pretrained model exists, and
  NaN in every round of a ``random`` campaign, which fits no model (its picks do not depend on one) unless
  ``random_fits_model`` asks for these metrics.
* wall time ``train_s`` / ``score_s`` / ``acquire_s``.

Reproducibility and resume: all randomness derives from ``seed``. The campaign draws (initial reveal,
validation subsets, Thompson / random picks) come from one :class:`torch.Generator` whose state is
checkpointed; round ``r``'s model gets ``seed = derive_seed(seed, MODEL_STREAM, r)`` and runs with the
global torch / numpy / ``random`` RNGs seeded from ``(seed, r)`` (restored afterwards), which covers models
that sample from the global RNG (Pyro). After every round ``out_dir/checkpoint.pt`` is replaced atomically
(revealed indices, rows, selections, generator state, last model's ``state_dict``, pretrained weights,
configs; readable with ``torch.load(weights_only=True)``), so ``resume=True`` continues from the last
completed round and ends with the same rows as an uninterrupted run (wall times aside). With
``warm_start`` this relies on the model's ``state_dict`` holding everything its next ``fit`` depends on
(the :class:`~recover_pyro.models.base.SynergyModel` contract). Resuming may extend ``n_rounds``; any
other change of a result-determining setting (model, prior, guide, inference, features, data, acquisition,
campaign: the fingerprint of :mod:`recover_pyro.campaign.fingerprint`), score or pool is refused with a
:class:`~recover_pyro.errors.ResumeMismatchError` naming the keys, as is a checkpoint with more
completed rounds than ``n_rounds``; a damaged checkpoint raises
:class:`~recover_pyro.errors.DamagedFileError`. Every output file is written atomically.

Pretraining (``pretrain="other_cell_lines"``): one model is fitted on every screen experiment outside the
pool (e.g. ALMANAC's other cell lines, which the features must then cover, or the other studies of a
DrugComb table loaded with several studies and ``pool_studies`` set), and each round's model starts
from those weights via ``load_state_dict`` (parameters, guide scales and target scaler) before fitting on
the revealed pool candidates. The pretraining fit may use its own settings (``pretrain_factory``; from the
command line ``pretrain_overrides``, e.g. fewer epochs over the large outside set), and a pretrained
``state_dict`` (:attr:`CampaignResult.pretrained` of an earlier campaign with the same model, screen and
seed) can be passed in to skip the fit.

Command line (Hydra, :mod:`recover_pyro.cli.campaign`; outputs go to the run directory)::

    python -m recover_pyro.campaign                                      # synthetic screen, BNN + UCB
    python -m recover_pyro.campaign -m +experiment=laplace_ucb,ensemble_ucb,random seed=0,1,2
    python -m recover_pyro.campaign data=almanac campaign=almanac_mcf7
    python -m recover_pyro.campaign data=almanac data.cell_lines=null campaign=almanac_mcf7 \\
        campaign.pretrain=other_cell_lines         # pretrain on the other cell lines
    python -m recover_pyro.campaign +experiment=scale_mixture_ucb_pretrained   # tuned pretrained BNN
    python -m recover_pyro.campaign hydra.run.dir=<previous run dir> resume=true   # continue a killed run
    python -m recover_pyro.campaign -m hydra.sweep.dir=<previous sweep dir> resume=true <same sweep>

Outputs in ``out_dir``: ``rounds.csv``, ``rounds.json`` (rows plus configs), ``selections.csv`` (every
revealed candidate with its round, score, acquisition value and predicted mean / sd at selection),
``recall.png`` and ``checkpoint.pt``.
"""

from __future__ import annotations

import logging
import math
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from recover_pyro.acquisition import Acquisition
from recover_pyro.campaign.checkpoint import CHECKPOINT, CampaignState, campaign_meta, load_checkpoint, save_checkpoint
from recover_pyro.campaign.config import CampaignConfig
from recover_pyro.campaign.fingerprint import check_same_run, data_fingerprint
from recover_pyro.campaign.pool import Pool, build_pool
from recover_pyro.campaign.records import (
    TIME_COLUMNS,
    PoolMetrics,
    batch_stats,
    progress_row,
    recall_column,
    selection_rows,
    write_fit_curve,
    write_tables,
)
from recover_pyro.data.featurize import Features
from recover_pyro.data.screen import Pairs, Screen
from recover_pyro.errors import ConfigValueError, ResumeMismatchError, option
from recover_pyro.models.base import FitReport, PredictiveSamples, SynergyModel
from recover_pyro.records.plots import plot_recall

log = logging.getLogger(__name__)

# Independent random streams derived from the campaign seed.
GENERATOR_STREAM, MODEL_STREAM, GLOBAL_STREAM = 0, 1, 2


@dataclass
class CampaignResult:
    """What a campaign produced: per-round rows, per-candidate selections and the files written."""

    rounds: pd.DataFrame
    selections: pd.DataFrame
    out_dir: Path
    rounds_csv: Path
    rounds_json: Path
    selections_csv: Path
    plot: Path
    checkpoint: Path
    pretrained: dict[str, Any] | None = None
    """``state_dict`` of the pretrained model (``None`` without pretraining)."""

    @property
    def revealed(self) -> np.ndarray:
        """``(n_measured,)`` pool indices in the order they were revealed."""
        return self.selections["pool_index"].to_numpy()


def derive_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed for stream ``keys`` of ``seed`` (:class:`numpy.random.SeedSequence`, run-independent)."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1, np.uint32)[0])


@contextmanager
def seeded_global_rngs(seed: int) -> Iterator[None]:
    """Seed the global torch, numpy and ``random`` RNGs for the block; restore the caller's states after."""
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])


def _unlabelled(pairs: Pairs) -> Pairs:
    """The same candidates with their scores removed (what a model may see of the unrevealed pool)."""
    return Pairs(pairs.drug_a, pairs.drug_b, pairs.cell, None)


def _split_val(pairs: Pairs, fraction: float, generator: torch.Generator) -> tuple[Pairs, Pairs | None]:
    """Hold out ``round(fraction * n)`` random experiments (at least 1, leaving at least 1) for validation."""
    n = len(pairs)
    n_val = min(max(int(round(fraction * n)), 1), n - 1) if fraction > 0 else 0
    if n_val < 1:
        return pairs, None
    perm = torch.randperm(n, generator=generator)
    return pairs[perm[n_val:]], pairs[perm[:n_val]]


class _Runner:
    """Carries one campaign's fixed inputs through its rounds."""

    def __init__(
        self,
        pool: Pool,
        factory: Callable[..., SynergyModel],
        acquisition: Acquisition,
        config: CampaignConfig,
        score: str,
        pretrain_factory: Callable[..., SynergyModel] | None = None,
        pretrained: dict[str, Any] | None = None,
        pool_metrics: PoolMetrics = PoolMetrics(),
    ) -> None:
        self.pool, self.factory, self.acquisition, self.config, self.score = (pool, factory, acquisition, config, score)
        self.pool_metrics = pool_metrics
        self.pretrain_factory = pretrain_factory or factory
        self.given_pretrained = pretrained
        self.model: SynergyModel | None = None  # the warm-started object
        # Random picks need no model; fitting one only fills the pool metrics.
        self.fits_model = acquisition.needs_model or config.random_fits_model

    def start(self, meta: dict[str, Any]) -> CampaignState:
        """Round 0: reveal ``n_initial`` random candidates and pretrain if asked."""
        cfg, pool = self.config, self.pool
        if cfg.n_initial > len(pool):
            raise ValueError(f"n_initial={cfg.n_initial} exceeds the pool of {len(pool)} candidates")
        generator = torch.Generator().manual_seed(derive_seed(cfg.seed, GENERATOR_STREAM))
        chosen = torch.randperm(len(pool), generator=generator)[: cfg.n_initial].numpy()
        state = CampaignState(completed=0, revealed=[], rows=[], selections=[], generator=generator, meta=meta)
        row = {
            **progress_row(0, chosen.tolist(), pool, cfg),
            **batch_stats(chosen, np.arange(len(pool)), pool),
            **self.pool_metrics.missing(),
            **{k: 0.0 for k in TIME_COLUMNS},
        }
        nan = np.full(len(chosen), math.nan)
        if cfg.pretrain == "other_cell_lines" and not self.fits_model:
            _split_val(pool.outside, cfg.val_fraction, generator)  # the draw pretraining makes: same picks
        elif cfg.pretrain == "other_cell_lines":
            start = time.perf_counter()
            with seeded_global_rngs(derive_seed(cfg.seed, GLOBAL_STREAM, 0)):
                model = self._pretrain(generator)
                state.pretrained = model.state_dict()
                row["train_s"] = time.perf_counter() - start
                start = time.perf_counter()
                unseen = np.setdiff1d(np.arange(len(pool)), chosen)
                predictive = model.predict(_unlabelled(pool.pairs[unseen]), num_samples=cfg.num_samples).cpu()
                row.update(self.pool_metrics(predictive, pool.y[unseen]))
                row["score_s"] = time.perf_counter() - start
        state.revealed = chosen.tolist()
        state.rows.append(row)
        state.selections += selection_rows(0, chosen, pool, self.score, nan, nan, nan)
        return state

    def _pretrain(self, generator: torch.Generator) -> SynergyModel:
        """A model fitted on every experiment outside the pool."""
        outside = self.pool.outside
        if len(outside) == 0:
            none = option("pretrain", "none") or "pretrain='none'"
            raise ConfigValueError(
                none.split("=", 1)[0],
                "'other_cell_lines' needs experiments outside the pool (cell lines "
                f"{self.config.pool_cell_lines}, studies {self.config.pool_studies}), but the screen has none; "
                f"load a screen with more cell lines or studies, or set {none}",
            )
        model = self.pretrain_factory(seed=derive_seed(self.config.seed, MODEL_STREAM, 0))
        # Drawn even when the fit is skipped, so a given pretrained state leaves the campaign draws unchanged.
        train, val = _split_val(outside, self.config.val_fraction, generator)
        if self.given_pretrained is not None:
            log.info("starting from the given pretrained state (no pretraining fit)")
            model.load_state_dict(self.given_pretrained)
        else:
            log.info("pretraining on %d experiments outside the pool", len(outside))
            model.fit(train, val)
        return model

    def _round_model(self, state: CampaignState, round_: int) -> SynergyModel:
        """A fresh model (from pretrained weights if any), or the warm-started one."""
        cfg = self.config
        if not cfg.warm_start:
            return self._from_pretrained(self.factory(seed=derive_seed(cfg.seed, MODEL_STREAM, round_)), state)
        if self.model is None:
            # The warm-started object is always the one built for round 1; after a resume it gets the
            # checkpointed state of the last completed round (priors are not in a state_dict, so a
            # transferred posterior prior is rebuilt from the pretrained state first).
            self.model = self._from_pretrained(self.factory(seed=derive_seed(cfg.seed, MODEL_STREAM, 1)), state)
            if state.completed >= 1:
                # Every completed round of a model-fitting campaign checkpoints its model state.
                assert state.model_state is not None
                self.model.load_state_dict(state.model_state)
        return self.model

    def _from_pretrained(self, model: SynergyModel, state: CampaignState) -> SynergyModel:
        """``model`` loaded with the pretrained state (if any) and, if asked, its posterior as prior.

        The round model keeps its own seed and random generators (its SVI noise, minibatch order and held-out
        split): only what was learned is transferred, so rounds do not all replay the pretraining's draws.
        """
        if state.pretrained is None:
            return model
        model.load_state_dict(_with_own_randomness(state.pretrained, model.state_dict()))
        if self.config.transfer == "posterior":
            posterior_as_prior = getattr(model, "posterior_as_prior", None)
            if not callable(posterior_as_prior):
                raise TypeError(
                    f"transfer='posterior' needs a Bayesian model with posterior_as_prior(); "
                    f"{type(model).__name__} has none (use transfer='weights')"
                )
            posterior_as_prior(self.config.transfer_widen)
        return model

    def step(self, state: CampaignState, round_: int) -> FitReport:
        """Fit, score the unrevealed pool, acquire a batch and reveal it; append to ``state``. Returns the
        round model's fit report."""
        cfg, pool = self.config, self.pool
        revealed = np.asarray(state.revealed)
        unseen = np.setdiff1d(np.arange(len(pool)), revealed)  # sorted pool indices
        times = {}
        with seeded_global_rngs(derive_seed(cfg.seed, GLOBAL_STREAM, round_)):
            start = time.perf_counter()
            # The validation draw happens with or without a model, so random picks never depend on fitting.
            train, val = _split_val(pool.pairs[torch.as_tensor(revealed)], cfg.val_fraction, state.generator)
            model = self._round_model(state, round_) if self.fits_model else None
            report = model.fit(train, val) if model is not None else FitReport()
            times["train_s"] = time.perf_counter() - start

            start = time.perf_counter()
            if model is not None:
                candidates = _unlabelled(pool.pairs[torch.as_tensor(unseen)])
                predictive = model.predict(candidates, num_samples=cfg.num_samples).cpu()
                metrics = self.pool_metrics(predictive, pool.y[unseen])
            else:  # random acquisition only reads the number of candidates
                predictive = PredictiveSamples(torch.zeros(1, len(unseen)), torch.tensor(math.nan))
                metrics = self.pool_metrics.missing()
            times["score_s"] = time.perf_counter() - start

            start = time.perf_counter()
            acquisition = self.acquisition
            if acquisition.q > len(unseen):
                log.warning(
                    "round %d: acquisition.q=%d exceeds the %d unrevealed candidates; the batch holds %d",
                    round_,
                    acquisition.q,
                    len(unseen),
                    len(unseen),
                )
                acquisition = replace(acquisition, q=len(unseen))
            batch = acquisition.select(
                predictive.f,
                candidate_drugs=pool.drugs[unseen],
                # acquisition rounds count from 0 = the first batch after the
                # initial reveal (same UCB schedule as recommend)
                best_f=float(pool.y[revealed].max()),
                round=round_ - 1,
                generator=state.generator,
            )
            times["acquire_s"] = time.perf_counter() - start

        picked = batch.indices.numpy()
        chosen = unseen[picked]
        state.revealed += chosen.tolist()
        state.rows.append(
            {
                **progress_row(round_, state.revealed, pool, cfg),
                **batch_stats(chosen, unseen, pool),
                **metrics,
                **times,
            }
        )
        if model is not None:
            values = batch.scores.numpy(), predictive.mean[picked].numpy(), predictive.std[picked].numpy()
        else:
            values = (np.full(len(picked), math.nan),) * 3
        state.selections += selection_rows(round_, chosen, pool, self.score, *values)
        state.model_state = None if model is None else model.state_dict()
        state.completed = round_
        return report


RANDOMNESS_KEYS = ("seed", "generator")


def _with_own_randomness(learned: Any, own: Any) -> Any:
    """``learned`` (a state dict, possibly nested in dicts / lists) with every ``seed`` / ``generator`` entry
    taken from ``own``, the state of a model built with its own seed."""
    if isinstance(learned, dict) and isinstance(own, dict):
        return {
            k: own[k] if k in RANDOMNESS_KEYS and k in own else _with_own_randomness(v, own.get(k))
            for k, v in learned.items()
        }
    if isinstance(learned, list) and isinstance(own, list) and len(learned) == len(own):
        return [_with_own_randomness(a, b) for a, b in zip(learned, own)]
    return learned


def run_campaign(
    screen: Screen,
    features: Features,
    model_factory: Callable[..., SynergyModel],
    acquisition: Acquisition,
    config: CampaignConfig,
    out_dir: str | Path,
    score: str | None = None,
    resume: bool = False,
    pretrain_factory: Callable[..., SynergyModel] | None = None,
    pretrained: dict[str, Any] | None = None,
    fingerprint: dict[str, Any] | None = None,
    model_name: str = "",
    pool_metrics: PoolMetrics = PoolMetrics(),
) -> CampaignResult:
    """Run (or, with ``resume``, continue) a simulated campaign on ``screen``; see the module docstring.

    Args:
        screen: a measured screen; its ``score`` column is the hidden truth.
        features: features of ``screen`` (same drug / cell-line order).
        model_factory: ``model_factory(seed=...) -> SynergyModel``, a fresh untrained model per call.
        acquisition: batch selection rule; its ``q`` is the batch size.
        config: campaign settings.
        out_dir: folder for tables, plot and ``checkpoint.pt`` (created if needed).
        score: score column (default: the screen's first).
        resume: continue from ``out_dir/checkpoint.pt`` if it exists (otherwise start afresh).
        pretrain_factory: builds the model of the pretraining fit (``config.pretrain != "none"``; default
            ``model_factory``); it must have the same architecture, since round models load its
            ``state_dict``, but may train differently (epochs, learning rate).
        pretrained: a pretrained ``state_dict`` to start from instead of fitting one (e.g.
            :attr:`CampaignResult.pretrained` of a campaign with the same model, screen, pool and seed,
            which then gives identical results); needs ``config.pretrain != "none"``.
        fingerprint: result-determining settings (dotted key -> value, e.g.
            :func:`~recover_pyro.cli.run_config.config_fingerprint` of the Hydra config), stored in the
            checkpoint with digests of ``screen`` and ``features`` and compared on resume.
        model_name: how logs and the plot title name the model (default: the factory's class name if it is
            a class or ``functools.partial`` of one; "no model" for a random campaign that fits none).
        pool_metrics: what is recorded of the model on the unrevealed pool each round (default: the
            ``MODEL_METRICS`` of :func:`recover_pyro.metrics.evaluate`); see :class:`PoolMetrics`.

    Returns:
        :class:`CampaignResult` with ``rounds`` (``R + 1`` rows, fewer if the pool runs out) and
        ``selections`` (``n_measured`` rows).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    score = score or screen.score_columns[0]
    pool = build_pool(screen, features, score, config.pool_cell_lines, config.pool_studies)
    meta = campaign_meta(config, acquisition, score, pool)
    meta["fingerprint"] = {**(fingerprint or {}), **data_fingerprint(screen, features)}
    ckpt_path = out_dir / CHECKPOINT
    if pretrained is not None and config.pretrain == "none":
        raise ValueError(
            "a pretrained state was given but config.pretrain is 'none'; set "
            "pretrain='other_cell_lines' to start the rounds from it"
        )
    runner = _Runner(pool, model_factory, acquisition, config, score, pretrain_factory, pretrained, pool_metrics)
    if not runner.fits_model:
        model_name = "no model"
    elif not model_name:  # a class or functools.partial of one names itself; other factories stay "model"
        model_name = getattr(getattr(model_factory, "func", model_factory), "__name__", "model")

    if resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        check_same_run(ckpt["meta"], meta, ckpt_path)
        if ckpt["completed"] > config.n_rounds:
            raise ResumeMismatchError(
                f"{ckpt_path} has {ckpt['completed']} completed rounds but campaign.n_rounds={config.n_rounds}; "
                f"resume with campaign.n_rounds>={ckpt['completed']} (its tables are already complete) or start "
                "a new campaign in another folder"
            )
        state = CampaignState.from_checkpoint(ckpt)
        state.meta = meta
        log.info("resuming %s after round %d of %d", ckpt_path, state.completed, config.n_rounds)
    else:
        if resume:
            log.info("no checkpoint at %s; starting a new campaign", ckpt_path)
        elif ckpt_path.exists():
            log.warning("overwriting the campaign in %s (pass resume=True to continue it)", out_dir)
        log.info(
            "campaign on %d candidates (%s), %d initial, %d rounds of q=%d by %s (%s)",
            len(pool),
            score,
            config.n_initial,
            config.n_rounds,
            acquisition.q,
            acquisition.name,
            model_name,
        )
        state = runner.start(meta)
        save_checkpoint(ckpt_path, state.to_checkpoint())
        write_tables(state, out_dir)

    bar = tqdm(
        total=config.n_rounds,
        initial=min(state.completed, config.n_rounds),
        desc="campaign rounds",
        unit="round",
        disable=not config.progress,
    )
    with bar:
        for round_ in range(state.completed + 1, config.n_rounds + 1):
            if len(state.revealed) == len(pool):
                log.warning("pool exhausted after round %d; stopping", state.completed)
                break
            report = runner.step(state, round_)
            write_fit_curve(report, out_dir, round_)
            save_checkpoint(ckpt_path, state.to_checkpoint())
            write_tables(state, out_dir)
            row = state.rows[-1]
            bar.set_postfix({recall_column(f): f"{row[recall_column(f)]:.2f}" for f in config.top_fractions})
            bar.update()
            log.info(
                "round %d: %d measured, %s",
                round_,
                row["n_measured"],
                ", ".join(f"{recall_column(f)} {row[recall_column(f)]:.3f}" for f in config.top_fractions),
            )

    rounds, selections = write_tables(state, out_dir)
    plot = plot_recall(
        rounds,
        len(pool),
        out_dir / "recall.png",
        title=f"{screen.name}: {model_name} + {acquisition.name}, q={acquisition.q}",
    )
    return CampaignResult(
        rounds=rounds,
        selections=selections,
        out_dir=out_dir,
        rounds_csv=out_dir / "rounds.csv",
        rounds_json=out_dir / "rounds.json",
        selections_csv=out_dir / "selections.csv",
        plot=plot,
        checkpoint=ckpt_path,
        pretrained=state.pretrained,
    )
