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
campaign: the fingerprint of :mod:`recover_pyro.run_fingerprint`), score or pool is refused with a
:class:`~recover_pyro.data.errors.ResumeMismatchError` naming the keys, as is a checkpoint with more
completed rounds than ``n_rounds``; a damaged checkpoint raises
:class:`~recover_pyro.data.errors.DamagedFileError`. Every output file is written atomically.

Pretraining (``pretrain="other_cell_lines"``): one model is fitted on every screen experiment outside the
pool (e.g. ALMANAC's other cell lines, which the features must then cover, or the other studies of a
DrugComb table loaded with several studies and ``pool_studies`` set), and each round's model starts
from those weights via ``load_state_dict`` (parameters, guide scales and target scaler) before fitting on
the revealed pool candidates. The pretraining fit may use its own settings (``pretrain_factory``; from the
command line ``pretrain_overrides``, e.g. fewer epochs over the large outside set), and a pretrained
``state_dict`` (:attr:`CampaignResult.pretrained` of an earlier campaign with the same model, screen and
seed) can be passed in to skip the fit.

Command line (Hydra; outputs go to the run directory)::

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

import hashlib
import io
import json
import logging
import math
import random
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, cast

import hydra
import numpy as np
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from recover_pyro.acquisition import Acquisition, unique_drugs
from recover_pyro.builders import CONFIG_DIR, build_features, build_screen, model_factory
from recover_pyro.checks import validate_config
from recover_pyro.data.errors import DamagedFileError, EmptySelectionError, ResumeMismatchError, closest_names
from recover_pyro.data.featurize import Features
from recover_pyro.data.screen import Pairs, Screen
from recover_pyro.io import (
    atomic_torch_save,
    atomic_write,
    atomic_write_csv,
    atomic_write_json,
    load_torch_file,
    spreadsheet_safe,
)
from recover_pyro.logging_utils import cli_logging
from recover_pyro.metrics import evaluate, recall_at_top_k
from recover_pyro.models.base import FitReport, PredictiveSamples, SynergyModel
from recover_pyro.run_fingerprint import check_same_run, config_fingerprint, data_fingerprint, preserve_hydra_config

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_VERSION = 1
PRETRAIN_CHOICES = ("none", "other_cell_lines")
TRANSFER_CHOICES = ("weights", "posterior")
# Independent random streams derived from the campaign seed.
GENERATOR_STREAM, MODEL_STREAM, GLOBAL_STREAM = 0, 1, 2
TIME_COLUMNS = ("train_s", "score_s", "acquire_s")
MODEL_METRICS = ("r2", "spearman", "nll", "sd_error_spearman", "coverage_90", "epistemic_sd", "aleatoric_sd")
# What a campaign checkpoint must hold, with the type of each entry.
CHECKPOINT_KEYS = {
    "version": int,
    "completed": int,
    "revealed": torch.Tensor,
    "rows": list,
    "selections": list,
    "generator": torch.Tensor,
    "meta": dict,
}


@dataclass
class CampaignConfig:
    """How a simulated campaign runs (the batch size ``q`` is the acquisition's).

    Attributes:
        n_initial: candidates revealed at random before the first model is fitted (``>= 1``).
        n_rounds: acquisition rounds ``R``.
        warm_start: refit the same model object every round instead of a fresh one.
        num_samples: posterior samples ``S`` per candidate.
        seed: campaign seed (non-negative); every random choice derives from it.
        pool_cell_lines: cell lines whose experiments form the pool (``None``: all of the screen's).
        pool_studies: studies whose experiments form the pool (``None``: all of the screen's).
        pretrain: ``"none"`` or ``"other_cell_lines"``: pretrain on every experiment outside the pool (its
            other cell lines, or other studies with ``pool_studies``; see module docstring).
        transfer: what round models take from the pretrained model: ``"weights"`` (its parameters, as
            starting values) or ``"posterior"`` (also its posterior as their prior, for Bayesian models with
            ``posterior_as_prior``, e.g. :meth:`BNNSynergyModel.posterior_as_prior
            <recover_pyro.models.bnn.BNNSynergyModel.posterior_as_prior>`).
        transfer_widen: with ``transfer="posterior"``, the prior's standard deviations are the posterior's
            times this factor (``> 1`` lets the pool's cell lines differ more from the pretraining data).
        val_fraction: fraction of the revealed candidates held out each round for the model's early
            stopping (0: fit on all of them).
        progress: show a tqdm bar over rounds (and, from the command line, over the pretraining fit's epochs).
        random_fits_model: with ``random`` acquisition, still fit (and pretrain) the model every round, only
            for the pool metrics (``MODEL_METRICS``; otherwise NaN): it costs as much as a
            model-guided campaign and changes no pick.
        top_fractions: pool fractions whose recall is recorded (``recall_top{100 p}pct`` columns).
    """

    n_initial: int = 30
    n_rounds: int = 10
    warm_start: bool = False
    num_samples: int = 100
    seed: int = 0
    pool_cell_lines: list[str] | None = None
    pool_studies: list[str] | None = None
    pretrain: str = "none"
    transfer: str = "weights"
    transfer_widen: float = 1.0
    val_fraction: float = 0.0
    progress: bool = True
    random_fits_model: bool = False
    top_fractions: tuple[float, ...] = (0.01, 0.05)

    def __post_init__(self) -> None:
        self.pool_cell_lines = _names(self.pool_cell_lines, "pool_cell_lines", "cell lines")
        self.pool_studies = _names(self.pool_studies, "pool_studies", "studies")
        self.top_fractions = tuple(float(f) for f in self.top_fractions)
        if self.n_initial < 1:
            raise ValueError(f"n_initial must be >= 1 (the first model needs data), got {self.n_initial}")
        if self.n_rounds < 0 or self.num_samples < 1:
            raise ValueError(f"need n_rounds >= 0 and num_samples >= 1, got {self.n_rounds}, {self.num_samples}")
        if int(self.seed) != self.seed or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.pretrain not in PRETRAIN_CHOICES:
            raise ValueError(f"pretrain must be one of {list(PRETRAIN_CHOICES)}, got {self.pretrain!r}")
        if self.transfer not in TRANSFER_CHOICES:
            raise ValueError(f"transfer must be one of {list(TRANSFER_CHOICES)}, got {self.transfer!r}")
        if not self.transfer_widen > 0:
            raise ValueError(f"transfer_widen must be positive, got {self.transfer_widen}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        if not self.top_fractions or any(not 0.0 < f <= 1.0 for f in self.top_fractions):
            raise ValueError(f"top_fractions must be non-empty and lie in (0, 1], got {self.top_fractions}")


def _names(names: Sequence[str] | str | None, field_name: str, what: str) -> list[str] | None:
    if names is None:
        return None
    names = [names] if isinstance(names, str) else [str(n) for n in names]
    if not names:
        raise ValueError(f"{field_name} is empty; use None for all {what} of the screen")
    return names


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


def recall_column(fraction: float) -> str:
    """Column name of the recall of the top ``fraction`` of the pool, e.g. ``0.01 -> recall_top1pct``."""
    return f"recall_top{fraction * 100:g}pct"


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


# --- the pool ----------------------------------------------------------------------------------
@dataclass
class Pool:
    """The candidates of a campaign and their hidden scores.

    Attributes:
        experiments: ``N`` pool rows of ``screen.experiments`` (reset index = pool index).
        pairs: ``(N,)`` encoded candidates with ``y`` = measured score.
        outside: encoded experiments of the screen outside the pool (for pretraining), ``y`` measured.
        drugs: ``(N, 2)`` long drug indices of each candidate.
        digest: hash of keys and scores, to recognise the same pool when resuming.
    """

    experiments: pd.DataFrame
    pairs: Pairs
    outside: Pairs
    drugs: torch.Tensor
    digest: str

    @property
    def y(self) -> torch.Tensor:
        assert self.pairs.y is not None
        return self.pairs.y

    def __len__(self) -> int:
        return len(self.pairs)


def build_pool(
    screen: Screen,
    features: Features,
    score: str,
    cell_lines: Sequence[str] | None,
    studies: Sequence[str] | None = None,
) -> Pool:
    """Pool = experiments of ``screen`` in ``cell_lines`` and ``studies`` (default: all) with a finite ``score``."""
    if score not in screen.score_columns:
        raise ValueError(
            f"score {score!r} is not a score column of {screen.name}; choose one of {list(screen.score_columns)}"
        )
    if list(features.drug_ids) != list(screen.drugs.index) or list(features.cell_lines) != list(
        screen.cell_lines.index
    ):
        raise ValueError(
            f"features do not match {screen.name}: build them with featurize() on this screen "
            "(same drug and cell-line order)"
        )
    exp = screen.experiments
    finite = np.isfinite(exp[score].to_numpy(dtype=np.float64))
    if not finite.all():
        log.warning(
            "%s: %d experiments without a finite %r are left out of the campaign",
            screen.name,
            int((~finite).sum()),
            score,
        )
    in_pool = np.ones(len(exp), dtype=bool)
    for column, names, what, known in (
        ("cell_line", cell_lines, "cell line", screen.cell_lines.index),
        ("study", studies, "study", pd.Index(exp["study"].unique())),
    ):
        if names is None:
            continue
        for name in names:
            if name not in known:
                raise EmptySelectionError(
                    f"{screen.source or screen.name}: pool {what} {name!r} is not in this "
                    f"screen; closest: {closest_names(name, known)}"
                )
        in_pool &= exp[column].isin(list(names)).to_numpy()
    rows = exp[in_pool & finite].reset_index(drop=True)
    if rows.empty:
        raise EmptySelectionError(
            f"{screen.name}: no experiments with a {score!r} score in cell lines {cell_lines} and studies {studies}"
        )
    pairs = screen.to_pairs(score, experiments=rows)
    keys = rows[["drug_a", "drug_b", "cell_line", "study", score]].to_csv(index=False)
    return Pool(
        experiments=rows,
        pairs=pairs,
        outside=screen.to_pairs(score, experiments=exp[~in_pool & finite]),
        drugs=torch.stack([pairs.drug_a, pairs.drug_b], dim=1),
        digest=hashlib.sha256(keys.encode()).hexdigest(),
    )


# --- campaign state and checkpoint -------------------------------------------------------------
@dataclass
class _State:
    """Everything needed to continue a campaign after ``completed`` rounds."""

    completed: int
    revealed: list[int]
    rows: list[dict[str, Any]]
    selections: list[dict[str, Any]]
    generator: torch.Generator
    model_state: dict[str, Any] | None = None
    pretrained: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_checkpoint(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "completed": self.completed,
            "revealed": torch.tensor(self.revealed, dtype=torch.long),
            "rows": self.rows,
            "selections": self.selections,
            "generator": self.generator.get_state(),
            "model_state": self.model_state,
            "pretrained": self.pretrained,
            "meta": self.meta,
        }

    @staticmethod
    def from_checkpoint(ckpt: dict[str, Any]) -> "_State":
        generator = torch.Generator()
        generator.set_state(ckpt["generator"])
        return _State(
            completed=int(ckpt["completed"]),
            revealed=[int(i) for i in ckpt["revealed"].tolist()],
            rows=list(ckpt["rows"]),
            selections=list(ckpt["selections"]),
            generator=generator,
            model_state=ckpt["model_state"],
            pretrained=ckpt["pretrained"],
            meta=dict(ckpt["meta"]),
        )


def _plain(obj: Any) -> Any:
    """JSON-like copy of a dataclass (tuples become lists) for checkpoints and reports."""
    return json.loads(json.dumps(asdict(obj)))


def _meta(config: CampaignConfig, acquisition: Acquisition, score: str, pool: Pool) -> dict[str, Any]:
    return {
        "config": _plain(config),
        "acquisition": _plain(acquisition),
        "score": score,
        "pool_size": len(pool),
        "pool_digest": pool.digest,
    }


def save_checkpoint(path: Path, ckpt: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace`` (never a torn file)."""
    atomic_torch_save(path, ckpt)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read and check a campaign checkpoint (``weights_only=True``: tensors, numbers, strings, lists, dicts).

    Raises:
        DamagedFileError: the file is truncated, empty, not a checkpoint, of another version, or its
            entries are inconsistent (names the file and what to do).
    """
    advice = "move it away and rerun without resume=true (the campaign restarts), or restore it from a backup"
    ckpt = load_torch_file(path, "campaign checkpoint", advice)  # on the CPU: resumable on any device
    if not isinstance(ckpt, dict):
        raise DamagedFileError(f"not a campaign checkpoint (holds a {type(ckpt).__name__}); {advice}", file=str(path))
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise DamagedFileError(
            f"unsupported campaign checkpoint version {ckpt.get('version')!r} (expected "
            f"{CHECKPOINT_VERSION}); {advice}",
            file=str(path),
        )
    wrong = [k for k, kind in CHECKPOINT_KEYS.items() if not isinstance(ckpt.get(k), kind)]
    if wrong:
        raise DamagedFileError(f"campaign checkpoint lacks or has malformed entries {wrong}; {advice}", file=str(path))
    completed, revealed = ckpt["completed"], ckpt["revealed"]
    if (
        completed < 0
        or len(ckpt["rows"]) != completed + 1
        or revealed.dim() != 1
        or len(ckpt["selections"]) != len(revealed)
    ):
        raise DamagedFileError(
            f"campaign checkpoint is inconsistent ({completed} rounds completed, "
            f"{len(ckpt['rows'])} round rows, {len(revealed)} revealed, "
            f"{len(ckpt['selections'])} selections); {advice}",
            file=str(path),
        )
    return ckpt


# --- one round ---------------------------------------------------------------------------------
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


def _model_metrics(predictive: PredictiveSamples, y: torch.Tensor) -> dict[str, float]:
    metrics = evaluate(predictive, y)
    return {k: float(metrics[k]) for k in MODEL_METRICS}


def _batch_stats(chosen: np.ndarray, unrevealed: np.ndarray, pool: Pool) -> dict[str, float]:
    """True-score summary and immediate regret of a batch (module docstring)."""
    y = pool.y.double().numpy()
    regret = y[unrevealed].max() - y[chosen]
    return {
        "batch_size": int(len(chosen)),
        "batch_mean": float(y[chosen].mean()),
        "batch_max": float(y[chosen].max()),
        "regret_median": float(np.median(regret)),
        "regret_min": float(regret.min()),
        "unique_drugs": unique_drugs(torch.as_tensor(chosen), pool.drugs),
    }


def _progress_row(round_: int, revealed: list[int], pool: Pool, config: CampaignConfig) -> dict[str, Any]:
    y = pool.y.double().numpy()
    row: dict[str, Any] = {
        "round": round_,
        "n_measured": len(revealed),
        "fraction_explored": len(revealed) / len(pool),
        "best_found": float(y[revealed].max()),
    }
    for fraction in config.top_fractions:
        row[recall_column(fraction)] = recall_at_top_k(np.asarray(revealed), y, fraction)
    return row


def _selection_rows(
    round_: int, chosen: np.ndarray, pool: Pool, score: str, acq: np.ndarray, mean: np.ndarray, std: np.ndarray
) -> list[dict[str, Any]]:
    """One plain-Python record per revealed candidate (checkpoints accept no numpy scalars)."""
    columns = {
        c: pool.experiments[c].to_numpy()[chosen].astype(str).tolist()
        for c in ("drug_a", "drug_b", "cell_line", "study")
    }
    values = {
        score: pool.y.double().numpy()[chosen],
        "acquisition_value": acq,
        "predicted_mean": mean,
        "predicted_std": std,
    }
    columns.update({k: np.asarray(v, dtype=np.float64).tolist() for k, v in values.items()})
    return [
        {"round": round_, "pool_index": int(i), **{k: v[j] for k, v in columns.items()}} for j, i in enumerate(chosen)
    ]


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
    ) -> None:
        self.pool, self.factory, self.acquisition, self.config, self.score = (pool, factory, acquisition, config, score)
        self.pretrain_factory = pretrain_factory or factory
        self.given_pretrained = pretrained
        self.model: SynergyModel | None = None  # the warm-started object
        # Random picks need no model; fitting one only fills the pool metrics.
        self.fits_model = acquisition.kind != "random" or config.random_fits_model

    def start(self, meta: dict[str, Any]) -> _State:
        """Round 0: reveal ``n_initial`` random candidates and pretrain if asked."""
        cfg, pool = self.config, self.pool
        if cfg.n_initial > len(pool):
            raise ValueError(f"n_initial={cfg.n_initial} exceeds the pool of {len(pool)} candidates")
        generator = torch.Generator().manual_seed(derive_seed(cfg.seed, GENERATOR_STREAM))
        chosen = torch.randperm(len(pool), generator=generator)[: cfg.n_initial].numpy()
        state = _State(completed=0, revealed=[], rows=[], selections=[], generator=generator, meta=meta)
        row = {
            **_progress_row(0, chosen.tolist(), pool, cfg),
            **_batch_stats(chosen, np.arange(len(pool)), pool),
            **{k: math.nan for k in MODEL_METRICS},
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
                row.update(_model_metrics(predictive, pool.y[unseen]))
                row["score_s"] = time.perf_counter() - start
        state.revealed = chosen.tolist()
        state.rows.append(row)
        state.selections += _selection_rows(0, chosen, pool, self.score, nan, nan, nan)
        return state

    def _pretrain(self, generator: torch.Generator) -> SynergyModel:
        """A model fitted on every experiment outside the pool."""
        outside = self.pool.outside
        if len(outside) == 0:
            raise ValueError(
                "pretrain='other_cell_lines' needs experiments outside the pool (cell lines "
                f"{self.config.pool_cell_lines}, studies {self.config.pool_studies}), but the "
                "screen has none; load more cell lines "
                "(e.g. data.cell_lines=null) or set pretrain='none'"
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

    def _round_model(self, state: _State, round_: int) -> SynergyModel:
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

    def _from_pretrained(self, model: SynergyModel, state: _State) -> SynergyModel:
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

    def step(self, state: _State, round_: int) -> FitReport:
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
                metrics = _model_metrics(predictive, pool.y[unseen])
            else:  # random acquisition only reads the number of candidates
                predictive = PredictiveSamples(torch.zeros(1, len(unseen)), torch.tensor(math.nan))
                metrics = {k: math.nan for k in MODEL_METRICS}
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
                **_progress_row(round_, state.revealed, pool, cfg),
                **_batch_stats(chosen, unseen, pool),
                **metrics,
                **times,
            }
        )
        if model is not None:
            values = batch.scores.numpy(), predictive.mean[picked].numpy(), predictive.std[picked].numpy()
        else:
            values = (np.full(len(picked), math.nan),) * 3
        state.selections += _selection_rows(round_, chosen, pool, self.score, *values)
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


# --- outputs -----------------------------------------------------------------------------------
def _write_fit_curve(report: FitReport, out_dir: Path, round_: int) -> None:
    """``fit_curves/round_XX.csv``: the per-epoch curve of the round model's fit (rewritten on a resumed
    round, so a campaign killed mid-round leaves no duplicate rows)."""
    if report.curve:
        folder = out_dir / "fit_curves"
        folder.mkdir(exist_ok=True)
        atomic_write_csv(folder / f"round_{round_:02d}.csv", pd.DataFrame(report.curve))


def plot_recall(rounds: pd.DataFrame, pool_size: int, path: Path, title: str = "") -> Path:
    """Recall of each top fraction against experiments done, with random's expectation (explored fraction).

    Uses a bare :class:`matplotlib.figure.Figure` (Agg canvas): no pyplot state, no backend change.
    """
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    n = rounds["n_measured"].to_numpy()
    for column in [c for c in rounds.columns if c.startswith("recall_top")]:
        label = column.removeprefix("recall_top").replace("pct", " %")
        ax.plot(n, rounds[column], marker="o", label=f"top {label} recall")
    grid = np.linspace(0, max(n.max(), 1), 50)
    ax.plot(grid, grid / pool_size, color="grey", linestyle="--", label="random (expected)")
    ax.set(xlabel="experiments done", ylabel="recall", ylim=(0, 1.02), title=title)
    ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return atomic_write(path, lambda handle: handle.write(buffer.getvalue()))


def _write_tables(state: _State, out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    rounds, selections = pd.DataFrame(state.rows), pd.DataFrame(state.selections)
    atomic_write_csv(out_dir / "rounds.csv", rounds)
    # Drug ids and cell-line names come from the user's files: no spreadsheet formulas in what we write.
    atomic_write_csv(out_dir / "selections.csv", spreadsheet_safe(selections))
    atomic_write_json(out_dir / "rounds.json", {**state.meta, "rounds": state.rows})
    return rounds, selections


# --- entry points ------------------------------------------------------------------------------
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
            :func:`~recover_pyro.run_fingerprint.config_fingerprint` of the Hydra config), stored in the
            checkpoint with digests of ``screen`` and ``features`` and compared on resume.
        model_name: how logs and the plot title name the model (default: the factory's class name if it is
            a class or ``functools.partial`` of one; "no model" for a random campaign that fits none).

    Returns:
        :class:`CampaignResult` with ``rounds`` (``R + 1`` rows, fewer if the pool runs out) and
        ``selections`` (``n_measured`` rows).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    score = score or screen.score_columns[0]
    pool = build_pool(screen, features, score, config.pool_cell_lines, config.pool_studies)
    meta = _meta(config, acquisition, score, pool)
    meta["fingerprint"] = {**(fingerprint or {}), **data_fingerprint(screen, features)}
    ckpt_path = out_dir / CHECKPOINT
    if pretrained is not None and config.pretrain == "none":
        raise ValueError(
            "a pretrained state was given but config.pretrain is 'none'; set "
            "pretrain='other_cell_lines' to start the rounds from it"
        )
    runner = _Runner(pool, model_factory, acquisition, config, score, pretrain_factory, pretrained)
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
        state = _State.from_checkpoint(ckpt)
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
            acquisition.kind,
            model_name,
        )
        state = runner.start(meta)
        save_checkpoint(ckpt_path, state.to_checkpoint())
        _write_tables(state, out_dir)

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
            _write_fit_curve(report, out_dir, round_)
            save_checkpoint(ckpt_path, state.to_checkpoint())
            _write_tables(state, out_dir)
            row = state.rows[-1]
            bar.set_postfix({recall_column(f): f"{row[recall_column(f)]:.2f}" for f in config.top_fractions})
            bar.update()
            log.info(
                "round %d: %d measured, %s",
                round_,
                row["n_measured"],
                ", ".join(f"{recall_column(f)} {row[recall_column(f)]:.3f}" for f in config.top_fractions),
            )

    rounds, selections = _write_tables(state, out_dir)
    plot = plot_recall(
        rounds,
        len(pool),
        out_dir / "recall.png",
        title=f"{screen.name}: {model_name} + {acquisition.kind}, q={acquisition.q}",
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


def campaign_from_config(cfg: DictConfig, out_dir: str | Path) -> CampaignResult:
    """Build screen, features, model factory, acquisition and campaign settings from ``cfg`` and run."""
    validate_config(cfg)
    screen = build_screen(cfg)
    log.info("\n%s", screen.summary())
    features = build_features(cfg, screen)
    acquisition: Acquisition = instantiate(cfg.acquisition, _convert_="all")
    config: CampaignConfig = instantiate(cfg.campaign, _convert_="all")
    pretrain_factory = None
    if config.pretrain != "none":
        # One long fit: show its epochs whenever the campaign shows progress (round refits stay quiet).
        pretrain_cfg = OmegaConf.merge(cfg, {"fit_progress": config.progress})
        assert isinstance(pretrain_cfg, DictConfig)
        pretrain_factory = pretrain_model_factory(pretrain_cfg, features) or model_factory(pretrain_cfg, features)
    return run_campaign(
        screen,
        features,
        model_factory(cfg, features),
        acquisition,
        config,
        out_dir,
        score=cfg.data.score,
        resume=bool(cfg.resume),
        pretrain_factory=pretrain_factory,
        fingerprint=config_fingerprint(cfg),
        model_name=model_label(cfg),
    )


def model_label(cfg: DictConfig) -> str:
    """Short name of the configured model for logs and titles, e.g. ``BNNSynergyModel (LaplacePrior)``
    (``no model`` for a random campaign that fits none)."""
    if cfg.acquisition.kind == "random" and not cfg.campaign.get("random_fits_model", False):
        return "no model"
    name = str(cfg.model._target_).rsplit(".", 1)[-1]
    prior = cfg.model.get("prior")
    return f"{name} ({str(prior._target_).rsplit('.', 1)[-1]})" if prior is not None and "_target_" in prior else name


def pretrain_model_factory(cfg: DictConfig, features: Features) -> Callable[..., SynergyModel] | None:
    """The pretraining model's factory: ``cfg`` with ``cfg.pretrain_overrides`` applied (``None`` if empty).

    ``pretrain_overrides`` are dotted ``key=value`` strings on the root config, e.g.
    ``["inference.epochs=5", "inference.lr=0.003"]`` for a BNN or ``["model.training.epochs=3"]`` for the
    deep ensemble; only training settings may change (round models load the pretrained weights).
    """
    overrides = list(cfg.get("pretrain_overrides") or [])
    if not overrides:
        return None
    bad = [o for o in overrides if not isinstance(o, str) or "=" not in o]
    if bad:
        raise ValueError(f"pretrain_overrides must be 'key=value' strings, got {bad}")
    # Merging into a DictConfig gives a DictConfig (OmegaConf.merge is typed for either container).
    return model_factory(cast(DictConfig, OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))), features)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="campaign")
def main(cfg: DictConfig) -> float:
    """``python -m recover_pyro.campaign``; returns the final top-1 % recall (for sweepers)."""
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    preserve_hydra_config(out_dir, resuming=bool(cfg.resume) and (out_dir / CHECKPOINT).is_file())
    with cli_logging():
        result = campaign_from_config(cfg, out_dir)
    last = result.rounds.iloc[-1]
    recalls = ", ".join(f"{c} {last[c]:.3f}" for c in result.rounds.columns if c.startswith("recall_top"))
    log.info(
        "[%s / %s + %s] after %d experiments: %s",
        cfg.data.name,
        model_label(cfg),
        cfg.acquisition.kind,
        int(last["n_measured"]),
        recalls,
    )
    log.info("rounds:\n%s", result.rounds.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    log.info("outputs in %s", out_dir)
    return float(last[recall_column(cfg.campaign.top_fractions[0])])


if __name__ == "__main__":
    main()
