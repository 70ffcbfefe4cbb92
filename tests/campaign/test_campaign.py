"""Simulated campaigns: recall bookkeeping on hand-built pools, exact resume, UCB vs random, outputs, pretraining
and the Hydra entry point.

Two test-local models implement the SynergyModel protocol cheaply:

* ``Oracle`` predicts the true score (no uncertainty), so greedy acquisition must find the top candidates at once;
* ``BayesianRidge`` is Bayesian linear regression on symmetric pair features with a closed-form Gaussian posterior,
  a genuine uncertainty-aware model that fits in milliseconds (the BNN is checked separately with tiny settings).
"""

from __future__ import annotations

import functools
from dataclasses import replace
import json
import math
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyro
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from recover_pyro.acquisition import Acquisition, BatchShortfallWarning, Greedy, RandomAcquisition, Thompson, UCB
from recover_pyro.cli.builders import CONFIG_DIR, build_features, build_screen, model_factory
from recover_pyro.campaign import (
    MODEL_METRICS,
    MODEL_STREAM,
    TIME_COLUMNS,
    CampaignConfig,
    build_pool,
    derive_seed,
    load_checkpoint,
    recall_column,
    run_campaign,
)
from recover_pyro.cli.campaign import campaign_from_config, model_label, pretrain_model_factory
from recover_pyro.errors import EmptySelectionError
from recover_pyro.data.featurize import Features, featurize
from recover_pyro.data.screen import Pairs, Screen
from recover_pyro.data.synthetic import make_synthetic_screen
from recover_pyro.data.targets import TargetScaler
from recover_pyro.bnn.inference import SVIConfig
from recover_pyro.models.base import FitReport, PredictiveSamples
from recover_pyro.bnn.model import BNNSynergyModel
from recover_pyro.models.predictor import RecoverPredictor

torch.set_num_threads(1)

TOP1, TOP5 = recall_column(0.01), recall_column(0.05)


# --- test-local models -------------------------------------------------------------------------
class Oracle:
    """Predicts the pool's true score exactly (``S`` identical rows): an upper bound for any model."""

    def __init__(self, truth: dict[tuple[int, int, int], float], seed: int = 0) -> None:
        self.truth = truth

    def fit(self, train: Pairs, val: Pairs | None = None) -> FitReport:
        return FitReport()

    def predict(self, pairs: Pairs, num_samples: int = 100) -> PredictiveSamples:
        f = torch.tensor(
            [self.truth[k] for k in zip(pairs.drug_a.tolist(), pairs.drug_b.tolist(), pairs.cell.tolist())]
        )
        return PredictiveSamples(f.expand(num_samples, -1), torch.tensor(1.0))

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class BayesianRidge:
    """Bayesian linear regression on :math:`\\phi(a, b, c) = [1, x_a + x_b, x_a \\odot x_b, g_c]` (symmetric).

    Prior :math:`w \\sim N(m_0, I/\\alpha)` with :math:`m_0 = 0` for a fresh model and the current posterior mean
    after a fit or ``load_state_dict`` (so refitting continues from the current weights, as the protocol asks);
    standardised targets :math:`z \\sim N(\\phi^T w, \\sigma^2)`. Posterior precision
    :math:`A = \\alpha I + \\Phi^T\\Phi/\\sigma^2 = LL^T`, mean :math:`A^{-1}(\\alpha m_0 + \\Phi^T z/\\sigma^2)`;
    samples :math:`w_s = \\mu + L^{-T}\\varepsilon_s`, seeded by ``seed``.
    """

    def __init__(
        self,
        drug_features: torch.Tensor,
        cell_features: torch.Tensor,
        *,
        alpha: float = 1.0,
        noise: float = 0.5,
        seed: int = 0,
    ) -> None:
        self.drug, self.cell = drug_features.double(), cell_features.double()
        self.alpha, self.noise, self.seed = alpha, noise, seed
        self.scaler = TargetScaler()
        dim = 1 + 2 * self.drug.shape[1] + self.cell.shape[1]
        self.mean = torch.zeros(dim, dtype=torch.float64)
        self.chol = torch.eye(dim, dtype=torch.float64) * math.sqrt(alpha)
        self.fitted = False
        self.fit_sizes: list[int] = []

    def _phi(self, pairs: Pairs) -> torch.Tensor:
        xa, xb = self.drug[pairs.drug_a], self.drug[pairs.drug_b]
        ones = torch.ones(len(pairs), 1, dtype=torch.float64)
        return torch.cat([ones, xa + xb, xa * xb, self.cell[pairs.cell]], dim=1)

    def fit(self, train: Pairs, val: Pairs | None = None) -> FitReport:
        assert train.y is not None
        self.fit_sizes.append(len(train))
        if not self.fitted:
            self.scaler.fit(train.y.double())
        z = self.scaler.transform(train.y.double())
        phi = self._phi(train)
        precision = self.alpha * torch.eye(phi.shape[1], dtype=torch.float64) + phi.T @ phi / self.noise**2
        self.chol = torch.linalg.cholesky(precision)
        rhs = self.alpha * self.mean + phi.T @ z / self.noise**2
        self.mean = torch.cholesky_solve(rhs[:, None], self.chol)[:, 0]
        self.fitted = True
        return FitReport()

    def predict(self, pairs: Pairs, num_samples: int = 100) -> PredictiveSamples:
        eps = torch.randn(
            self.mean.shape[0], num_samples, generator=torch.Generator().manual_seed(self.seed), dtype=torch.float64
        )
        w = self.mean[:, None] + torch.linalg.solve_triangular(self.chol.T, eps, upper=True)  # (P, S)
        f = self.scaler.inverse((self._phi(pairs) @ w).T)
        return PredictiveSamples(f.float(), self.scaler.inverse_scale(torch.tensor(self.noise)))

    def state_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean.clone(),
            "chol": self.chol.clone(),
            "scaler": self.scaler.state_dict(),
            "fitted": self.fitted,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.chol = state["mean"].clone(), state["chol"].clone()
        self.scaler = TargetScaler(**state["scaler"])
        self.fitted = bool(state["fitted"])


# --- fixtures ----------------------------------------------------------------------------------
def hand_screen(n_drugs: int, seed: int = 0) -> tuple[Screen, Features]:
    """All pairs of ``n_drugs`` drugs in one cell line with distinct scores (a seeded random permutation)."""
    ids = [f"d{i:02d}" for i in range(n_drugs)]
    ia, ib = np.triu_indices(n_drugs, k=1)
    scores = np.random.default_rng(seed).permutation(len(ia)).astype(float)
    experiments = pd.DataFrame(
        {
            "drug_a": np.asarray(ids)[ia],
            "drug_b": np.asarray(ids)[ib],
            "cell_line": "L1",
            "study": "s",
            "n_replicates": 1,
            "score": scores,
        }
    )
    screen = Screen(
        drugs=pd.DataFrame({"name": ids, "smiles": ""}, index=ids),
        cell_lines=pd.DataFrame({"tissue": ""}, index=["L1"]),
        experiments=experiments,
        score_columns=("score",),
        name="hand",
    )
    features = Features(drug=torch.eye(n_drugs), cell=torch.ones(1, 1), drug_ids=ids, cell_lines=["L1"])
    return screen, features


def oracle_factory(screen: Screen) -> Callable[..., Oracle]:
    pairs = screen.to_pairs("score")
    assert pairs.y is not None
    truth = dict(zip(zip(pairs.drug_a.tolist(), pairs.drug_b.tolist(), pairs.cell.tolist()), pairs.y.tolist()))
    return lambda seed=0: Oracle(truth, seed)


def ridge_factory(features: Features, made: list[BayesianRidge] | None = None) -> Callable[..., BayesianRidge]:
    def make(seed: int = 0) -> BayesianRidge:
        model = BayesianRidge(features.drug, features.cell, seed=seed)
        if made is not None:
            made.append(model)
        return model

    return make


def config(**kwargs: Any) -> CampaignConfig:
    return CampaignConfig(**{"progress": False, "num_samples": 32, **kwargs})


def without_times(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=list(TIME_COLUMNS))


# --- bookkeeping -------------------------------------------------------------------------------
def test_oracle_greedy_finds_the_top_at_once_and_rows_match_definitions(tmp_path: Path) -> None:
    screen, features = hand_screen(21)  # 210 candidates: top 1 % = 3, top 5 % = 11
    result = run_campaign(
        screen,
        features,
        oracle_factory(screen),
        Greedy(q=11),
        config(n_initial=5, n_rounds=3),
        tmp_path,
        score="score",
    )
    rounds, sel = result.rounds, result.selections
    y = screen.experiments["score"].to_numpy()
    assert rounds["round"].tolist() == [0, 1, 2, 3]
    assert rounds["n_measured"].tolist() == [5, 16, 27, 38]
    np.testing.assert_allclose(rounds["fraction_explored"], rounds["n_measured"] / 210)

    initial = sel.loc[sel["round"] == 0, "pool_index"].to_numpy()
    top3, top11 = np.argsort(-y)[:3], np.argsort(-y)[:11]
    assert rounds.at[0, TOP1] == pytest.approx(np.isin(top3, initial).sum() / 3)
    assert rounds.at[0, TOP5] == pytest.approx(np.isin(top11, initial).sum() / 11)
    assert (rounds.loc[1:, [TOP1, TOP5]] == 1.0).all().all()

    # Round 1 of a perfect greedy: the 11 best unrevealed candidates, best first.
    first = sel.loc[sel["round"] == 1, "pool_index"].to_numpy()
    unrevealed = np.setdiff1d(np.arange(210), initial)
    best_remaining = unrevealed[np.argsort(-y[unrevealed])]
    np.testing.assert_array_equal(first, best_remaining[:11])
    regret = y[unrevealed].max() - y[first]
    assert rounds.at[1, "regret_min"] == 0.0
    assert rounds.at[1, "regret_median"] == pytest.approx(np.median(regret))
    assert rounds.at[1, "batch_mean"] == pytest.approx(y[first].mean())
    assert rounds.at[1, "batch_max"] == pytest.approx(y[unrevealed].max())
    drugs_in_batch = screen.experiments.loc[first, ["drug_a", "drug_b"]].to_numpy().ravel()
    assert rounds.at[1, "unique_drugs"] == len(set(drugs_in_batch))
    assert rounds.at[3, "best_found"] == y.max()
    # Round 0's regret is against the best of the whole pool.
    assert rounds.at[0, "regret_min"] == pytest.approx(y.max() - y[initial].max())
    # Selections carry the true score and the acquisition value (the posterior mean for greedy).
    np.testing.assert_allclose(sel["score"], y[sel["pool_index"]])
    np.testing.assert_allclose(sel.loc[sel["round"] == 1, "acquisition_value"], y[first])
    assert sel.loc[sel["round"] == 0, "acquisition_value"].isna().all()
    assert rounds.loc[0, ["r2", "spearman", "nll"]].isna().all()
    np.testing.assert_allclose(rounds.loc[1:, "spearman"], 1.0, atol=1e-12)  # the oracle ranks the pool perfectly


def test_outputs_are_written(tmp_path: Path) -> None:
    screen, features = hand_screen(12)
    result = run_campaign(
        screen,
        features,
        oracle_factory(screen),
        UCB(q=4),
        config(n_initial=4, n_rounds=2),
        tmp_path / "run",
        score="score",
    )
    for path in (result.rounds_csv, result.rounds_json, result.selections_csv, result.plot, result.checkpoint):
        assert path.is_file() and path.parent == tmp_path / "run"
    assert result.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = pd.read_csv(result.rounds_csv)
    expected = {
        "round",
        "n_measured",
        TOP1,
        TOP5,
        "batch_mean",
        "regret_median",
        "regret_min",
        "unique_drugs",
        "r2",
        "spearman",
        "nll",
        "sd_error_spearman",
        "coverage_90",
        "epistemic_sd",
        "aleatoric_sd",
        *TIME_COLUMNS,
    }
    assert expected <= set(csv.columns)
    pd.testing.assert_frame_equal(csv, result.rounds, check_dtype=False)
    report = json.loads(result.rounds_json.read_text())  # strict JSON: NaN/inf written as null
    assert (
        report["config"]["n_initial"] == 4
        and report["acquisition"]["class"] == "recover_pyro.acquisition.strategies.UCB"
    )
    assert [r["round"] for r in report["rounds"]] == [0, 1, 2]
    assert report["rounds"][0]["r2"] is None
    assert len(pd.read_csv(result.selections_csv)) == 12


def test_random_recall_tracks_fraction_explored(tmp_path: Path) -> None:
    """E[recall] of uniformly random picks is exactly n / N; average over seeds and rounds."""
    screen, features = hand_screen(41)  # 820 candidates: top 5 % = 41
    gaps = []
    for seed in range(12):
        rounds = run_campaign(
            screen,
            features,
            oracle_factory(screen),
            RandomAcquisition(q=100),
            config(n_initial=20, n_rounds=5, seed=seed),
            tmp_path / str(seed),
            score="score",
        ).rounds
        gaps.append((rounds[TOP5] - rounds["fraction_explored"]).to_numpy())
    gaps = np.stack(gaps)  # (seeds, rounds)
    assert abs(gaps.mean()) < 0.03
    assert np.abs(gaps.mean(0)).max() < 0.08


def test_never_reproposes_and_stops_when_the_pool_is_exhausted(tmp_path: Path) -> None:
    screen, features = hand_screen(21)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BatchShortfallWarning)  # the last batch shrinks to what is left, silently
        result = run_campaign(
            screen,
            features,
            ridge_factory(features),
            Thompson(q=50),
            config(n_initial=5, n_rounds=10),
            tmp_path,
            score="score",
        )
    revealed = result.revealed
    assert len(revealed) == len(set(revealed.tolist())) == 210
    assert result.rounds["batch_size"].tolist() == [5, 50, 50, 50, 50, 5]
    assert result.rounds[TOP1].iloc[-1] == 1.0


def test_seeded_and_reproducible(tmp_path: Path) -> None:
    screen, features = hand_screen(15)

    def run(seed: int, name: str) -> pd.DataFrame:
        return run_campaign(
            screen,
            features,
            ridge_factory(features),
            Thompson(q=6),
            config(n_initial=6, n_rounds=3, seed=seed),
            tmp_path / name,
            score="score",
        ).selections

    pd.testing.assert_frame_equal(run(3, "a"), run(3, "b"))
    assert not run(4, "c")["pool_index"].equals(run(3, "a")["pool_index"])


# --- checkpoint and resume ---------------------------------------------------------------------
class Crash(RuntimeError):
    pass


def crashing(factory: Callable[..., Any], fail_at_fit: int) -> Callable[..., Any]:
    """Wrap ``factory`` so that the ``fail_at_fit``-th call of ``fit`` (over all models) raises ``Crash``."""
    calls = [0]

    def make(seed: int = 0) -> Any:
        model = factory(seed=seed)
        fit = model.fit

        def failing_fit(train: Pairs, val: Pairs | None = None) -> FitReport:
            calls[0] += 1
            if calls[0] == fail_at_fit:
                raise Crash(f"simulated kill in fit #{fail_at_fit}")
            return fit(train, val)

        model.fit = failing_fit
        return model

    return make


def assert_killed_and_resumed_equals_uninterrupted(
    screen: Screen,
    features: Features,
    make_factory: Callable[[], Callable[..., Any]],
    acquisition: Acquisition,
    cfg: CampaignConfig,
    tmp_path: Path,
    fail_at_fit: int,
) -> None:
    """Run uninterrupted; run again, killed in fit ``fail_at_fit``; resume: rows and selections must agree."""
    full = run_campaign(screen, features, make_factory(), acquisition, cfg, tmp_path / "full")
    with pytest.raises(Crash):
        run_campaign(screen, features, crashing(make_factory(), fail_at_fit), acquisition, cfg, tmp_path / "killed")
    resumed = run_campaign(screen, features, make_factory(), acquisition, cfg, tmp_path / "killed", resume=True)
    pd.testing.assert_frame_equal(without_times(resumed.rounds), without_times(full.rounds))
    pd.testing.assert_frame_equal(resumed.selections, full.selections)


@pytest.mark.parametrize("warm_start, kind, val_fraction", [(False, "thompson", 0.25), (True, "ucb", 0.0)])
def test_resume_after_a_kill_matches_an_uninterrupted_run(
    tmp_path: Path, warm_start: bool, kind: str, val_fraction: float
) -> None:
    screen, features = hand_screen(16, seed=1)
    acquisition = Acquisition.from_kind(kind, q=7, **({"kappa": 2.0, "kappa_decay": 0.8} if kind == "ucb" else {}))
    cfg = config(n_initial=8, n_rounds=5, warm_start=warm_start, val_fraction=val_fraction, seed=7)
    full = run_campaign(screen, features, ridge_factory(features), acquisition, cfg, tmp_path / "full", score="score")

    with pytest.raises(Crash):  # killed while fitting round 3
        run_campaign(
            screen, features, crashing(ridge_factory(features), 3), acquisition, cfg, tmp_path / "killed", score="score"
        )
    ckpt = load_checkpoint(tmp_path / "killed" / "checkpoint.pt")
    assert ckpt["completed"] == 2 and len(ckpt["rows"]) == 3 and ckpt["model_state"] is not None
    assert not list((tmp_path / "killed").glob(".tmp-*"))

    resumed = run_campaign(
        screen, features, ridge_factory(features), acquisition, cfg, tmp_path / "killed", score="score", resume=True
    )
    pd.testing.assert_frame_equal(without_times(resumed.rounds), without_times(full.rounds))
    pd.testing.assert_frame_equal(resumed.selections, full.selections)
    # The checkpoint holds the rows and timings of the rounds done before the kill.
    pd.testing.assert_series_equal(resumed.rounds["train_s"].iloc[:3], pd.DataFrame(ckpt["rows"])["train_s"])


def test_resume_can_extend_the_number_of_rounds(tmp_path: Path) -> None:
    screen, features = hand_screen(16, seed=2)
    acquisition = Thompson(q=5)

    def run(n_rounds: int, out: str, resume: bool = False) -> Any:
        return run_campaign(
            screen,
            features,
            ridge_factory(features),
            acquisition,
            config(n_initial=5, n_rounds=n_rounds, warm_start=True),
            tmp_path / out,
            score="score",
            resume=resume,
        )

    full = run(4, "full")
    run(2, "partial")
    extended = run(4, "partial", resume=True)
    pd.testing.assert_frame_equal(without_times(extended.rounds), without_times(full.rounds))


def test_resume_refuses_a_different_campaign(tmp_path: Path) -> None:
    screen, features = hand_screen(12)
    run_campaign(
        screen,
        features,
        ridge_factory(features),
        UCB(q=4),
        config(n_initial=4, n_rounds=1),
        tmp_path,
        score="score",
    )
    with pytest.raises(ValueError, match="n_initial"):
        run_campaign(
            screen,
            features,
            ridge_factory(features),
            UCB(q=4),
            config(n_initial=5, n_rounds=2),
            tmp_path,
            score="score",
            resume=True,
        )
    with pytest.raises(ValueError, match="acquisition"):
        run_campaign(
            screen,
            features,
            ridge_factory(features),
            Greedy(q=4),
            config(n_initial=4, n_rounds=2),
            tmp_path,
            score="score",
            resume=True,
        )


def test_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    screen, features = hand_screen(12)
    result = run_campaign(
        screen,
        features,
        ridge_factory(features),
        UCB(q=4),
        config(n_initial=4, n_rounds=2),
        tmp_path,
        score="score",
    )
    ckpt = torch.load(result.checkpoint, weights_only=True)
    assert ckpt["completed"] == 2
    assert ckpt["revealed"].tolist() == result.revealed.tolist()
    assert ckpt["meta"]["config"]["n_rounds"] == 2
    assert set(ckpt["model_state"]) == {"mean", "chol", "scaler", "fitted"}


# --- the property the whole project is for -----------------------------------------------------
def test_ucb_with_a_bayesian_model_beats_random_on_synthetic_screens(tmp_path: Path) -> None:
    recalls = {"ucb": [], "random": []}
    for seed in range(3):
        screen = make_synthetic_screen(n_drugs=30, n_cell_lines=2, seed=seed)  # 870 candidates, top 1 % = 9
        features = featurize(screen, one_hot=True, cell="onehot")
        for kind in recalls:
            rounds = run_campaign(
                screen,
                features,
                ridge_factory(features),
                Acquisition.from_kind(kind, q=20, **({"kappa": 1.0} if kind == "ucb" else {})),
                config(n_initial=20, n_rounds=6, seed=seed),
                tmp_path / f"{kind}{seed}",
            ).rounds
            recalls[kind].append(rounds[TOP1].iloc[-1])
    ucb, rnd = np.mean(recalls["ucb"]), np.mean(recalls["random"])
    assert ucb > rnd + 0.2, recalls


def small_bnn_factory(features: Features, epochs: int) -> Callable[..., BNNSynergyModel]:
    predictor = functools.partial(RecoverPredictor, drug_hidden=(64, 32), merge_dim=32, merge_rank=8, head_hidden=(32,))
    return lambda seed=0: BNNSynergyModel(
        features.drug, features.cell, predictor=predictor, inference=SVIConfig(epochs=epochs, lr=3e-3), seed=seed
    )


def test_bnn_with_ucb_beats_random_on_top1_recall_over_seeds(tmp_path: Path) -> None:
    """The product's claim on the synthetic screen: a real BNN + UCB against real random campaigns."""
    bnn, rnd = [], []
    for seed in (1, 2, 3):
        screen = make_synthetic_screen(n_drugs=30, n_cell_lines=2, seed=seed)  # 870 candidates
        features = featurize(screen, one_hot=True, cell="onehot")
        cfg = config(n_initial=20, n_rounds=5, seed=seed)
        rounds = run_campaign(
            screen,
            features,
            small_bnn_factory(features, epochs=40),
            UCB(q=20),
            cfg,
            tmp_path / f"bnn{seed}",
        ).rounds
        assert (
            rounds[["r2", "sd_error_spearman", "coverage_90"]].iloc[1:].notna().all().all()
        )  # pool metrics every round
        assert (rounds["epistemic_sd"].iloc[1:] > 0).all() and rounds["coverage_90"].iloc[1:].between(0, 1).all()
        bnn.append(rounds.iloc[-1][[TOP1, TOP5]].to_numpy(dtype=float))
        rounds = run_campaign(
            screen,
            features,
            small_bnn_factory(features, epochs=1),
            RandomAcquisition(q=20),
            cfg,
            tmp_path / f"random{seed}",
        ).rounds
        rnd.append(rounds.iloc[-1][[TOP1, TOP5]].to_numpy(dtype=float))
    bnn_mean, rnd_mean = np.mean(bnn, 0), np.mean(rnd, 0)
    # 120 of 870 explored: random finds ~0.14 of each top set; the BNN found ~0.5 of both when written.
    assert bnn_mean[0] > rnd_mean[0] + 0.2, (bnn, rnd)
    assert bnn_mean[1] > rnd_mean[1] + 0.2, (bnn, rnd)


def test_bnn_warm_started_campaign_resumes_exactly(tmp_path: Path) -> None:
    screen = make_synthetic_screen(n_drugs=10, n_cell_lines=1, seed=0)
    features = featurize(screen)
    cfg = config(n_initial=5, n_rounds=3, warm_start=True, num_samples=8)
    acquisition = Thompson(q=4)
    assert_killed_and_resumed_equals_uninterrupted(
        screen, features, lambda: small_bnn_factory(features, epochs=4), acquisition, cfg, tmp_path, fail_at_fit=2
    )


# --- pretraining -------------------------------------------------------------------------------
def test_pretraining_on_other_cell_lines_starts_every_round_from_its_weights(tmp_path: Path) -> None:
    screen = make_synthetic_screen(n_drugs=12, n_cell_lines=3, seed=0)  # 66 pairs per cell line
    features = featurize(screen, cell="onehot")
    made: list[BayesianRidge] = []
    events: list[list[tuple[str, Any]]] = []  # per model: ("load", state) / ("fit", n) in call order
    base = ridge_factory(features, made)

    def factory(seed: int = 0) -> BayesianRidge:
        model, log = base(seed=seed), []
        events.append(log)
        load, fit = model.load_state_dict, model.fit
        model.load_state_dict = lambda state: (log.append(("load", state)), load(state))[1]  # type: ignore
        model.fit = lambda train, val=None: (log.append(("fit", len(train))), fit(train, val))[1]  # type: ignore
        return model

    cfg = config(n_initial=6, n_rounds=3, pool_cell_lines=["cell_1"], pretrain="other_cell_lines")
    result = run_campaign(screen, features, factory, UCB(q=6), cfg, tmp_path)

    pretrained = made[0]
    assert pretrained.seed == derive_seed(cfg.seed, MODEL_STREAM, 0)
    # Every experiment of the two other cell lines (2 x 66), nothing of the pool.
    assert [e[0] for e in events[0]] == ["fit"] and events[0][0][1] == 132
    # One fresh model per round, loaded with the pretrained weights, then fitted on the revealed pool.
    assert len(events) == 4
    for log, n_revealed in zip(events[1:], (6, 12, 18)):
        (first, state), (second, n) = log
        assert (first, second, n) == ("load", "fit", n_revealed)
        torch.testing.assert_close(state["mean"], pretrained.state_dict()["mean"])
    assert set(result.selections["cell_line"]) == {"cell_1"}
    assert np.isfinite(result.rounds.at[0, "r2"])  # round 0 reports the pretrained model on the pool
    assert torch.load(result.checkpoint, weights_only=True)["pretrained"] is not None


def test_pretrain_factory_builds_only_the_pretraining_model(tmp_path: Path) -> None:
    """A separate pretraining model (here a stronger prior) is fitted once; rounds use the campaign factory."""
    screen = make_synthetic_screen(n_drugs=12, n_cell_lines=3, seed=0)
    features = featurize(screen, cell="onehot")
    rounds_made: list[BayesianRidge] = []

    def pretrain_factory(seed: int = 0) -> BayesianRidge:
        model = BayesianRidge(features.drug, features.cell, alpha=7.0, seed=seed)
        pretrain_made.append(model)
        return model

    pretrain_made: list[BayesianRidge] = []
    cfg = config(n_initial=6, n_rounds=2, pool_cell_lines=["cell_1"], pretrain="other_cell_lines")
    result = run_campaign(
        screen,
        features,
        ridge_factory(features, rounds_made),
        UCB(q=6),
        cfg,
        tmp_path,
        pretrain_factory=pretrain_factory,
    )
    assert [m.fit_sizes for m in pretrain_made] == [[132]]
    assert [m.alpha for m in rounds_made] == [1.0, 1.0] and [m.fit_sizes for m in rounds_made] == [[6], [12]]
    assert result.pretrained is not None
    torch.testing.assert_close(result.pretrained["mean"], pretrain_made[0].state_dict()["mean"])


def test_given_pretrained_state_skips_the_fit_and_reproduces_the_campaign(tmp_path: Path) -> None:
    screen = make_synthetic_screen(n_drugs=12, n_cell_lines=3, seed=0)
    features = featurize(screen, cell="onehot")
    cfg = config(n_initial=6, n_rounds=3, pool_cell_lines=["cell_1"], pretrain="other_cell_lines", val_fraction=0.2)
    acquisition = Thompson(q=5)
    first = run_campaign(screen, features, ridge_factory(features), acquisition, cfg, tmp_path / "a")
    made: list[BayesianRidge] = []
    again = run_campaign(
        screen, features, ridge_factory(features, made), acquisition, cfg, tmp_path / "b", pretrained=first.pretrained
    )
    assert made[0].fit_sizes == []  # the pretraining model only loaded the given state
    pd.testing.assert_frame_equal(without_times(again.rounds), without_times(first.rounds))
    pd.testing.assert_frame_equal(again.selections, first.selections)
    with pytest.raises(ValueError, match="pretrain"):
        run_campaign(
            screen,
            features,
            ridge_factory(features),
            acquisition,
            replace(cfg, pretrain="none"),
            tmp_path / "c",
            pretrained=first.pretrained,
        )


def test_posterior_transfer_gives_round_models_the_pretrained_posterior_as_prior(tmp_path: Path) -> None:
    screen = make_synthetic_screen(n_drugs=10, n_cell_lines=2, seed=0)
    features = featurize(screen, cell="onehot")
    made: list[BNNSynergyModel] = []
    base = small_bnn_factory(features, epochs=2)

    def factory(seed: int = 0) -> BNNSynergyModel:
        made.append(base(seed=seed))
        return made[-1]

    cfg = config(
        n_initial=5,
        n_rounds=2,
        num_samples=4,
        pool_cell_lines=["cell_1"],
        pretrain="other_cell_lines",
        transfer="posterior",
        transfer_widen=2.0,
    )
    run_campaign(screen, features, factory, UCB(q=5), cfg, tmp_path)
    pretrained, first_round = made[0], made[1]
    pairs = screen.to_pairs()[:3]
    trace = pyro.poutine.trace(first_round.model).get_trace(pairs.drug_a, pairs.drug_b, pairs.cell)
    for site in pretrained.model.sites:
        prior = trace.nodes[site]["fn"].base_dist
        q = pretrained.guide.site_distribution(site)
        torch.testing.assert_close(prior.loc, q.loc.detach())
        torch.testing.assert_close(prior.scale, 2.0 * q.scale.detach())
    with pytest.raises(TypeError, match="posterior_as_prior"):
        run_campaign(screen, features, ridge_factory(features), UCB(q=5), cfg, tmp_path / "ridge")
    with pytest.raises(ValueError, match="transfer"):
        CampaignConfig(transfer="everything")


def test_resume_with_a_transferred_posterior_prior_and_warm_start(tmp_path: Path) -> None:
    """Priors are not in a state_dict: a resumed warm-started model must rebuild them from the pretrained state."""
    screen = make_synthetic_screen(n_drugs=10, n_cell_lines=2, seed=0)
    features = featurize(screen, cell="onehot")
    cfg = config(
        n_initial=5,
        n_rounds=3,
        num_samples=4,
        pool_cell_lines=["cell_1"],
        pretrain="other_cell_lines",
        transfer="posterior",
        warm_start=True,
    )
    acquisition = UCB(q=5)
    # fit 1 is the pretraining, fit 3 round 2
    assert_killed_and_resumed_equals_uninterrupted(
        screen, features, lambda: small_bnn_factory(features, epochs=2), acquisition, cfg, tmp_path, fail_at_fit=3
    )


def test_pool_studies_pretrains_on_the_other_study(tmp_path: Path) -> None:
    """One screen with two studies of the same cell lines: pool = study "new", pretraining = study "old"."""
    base = make_synthetic_screen(n_drugs=10, n_cell_lines=2, seed=0)
    old, new = base.experiments.assign(study="old"), base.experiments.assign(study="new")
    new["synergy"] = new["synergy"] + 1.0
    screen = replace(base, experiments=pd.concat([old, new], ignore_index=True), name="two studies")
    features = featurize(screen, cell="onehot")
    made: list[BayesianRidge] = []
    cfg = config(n_initial=6, n_rounds=2, pool_studies="new", pretrain="other_cell_lines")
    result = run_campaign(screen, features, ridge_factory(features, made), UCB(q=5), cfg, tmp_path)
    assert made[0].fit_sizes == [len(old)]  # pretrained on every experiment of the other study
    assert set(result.selections["study"]) == {"new"} and len(result.selections) == 16
    with pytest.raises(EmptySelectionError, match="closest"):
        build_pool(screen, features, "synergy", None, ["nwe"])


def test_pretraining_needs_experiments_outside_the_pool(tmp_path: Path) -> None:
    screen = make_synthetic_screen(n_drugs=8, n_cell_lines=1, seed=0)
    features = featurize(screen)
    with pytest.raises(ValueError, match="outside the pool"):
        run_campaign(
            screen,
            features,
            ridge_factory(features),
            UCB(q=4),
            config(n_initial=4, n_rounds=1, pretrain="other_cell_lines"),
            tmp_path,
        )


def test_pool_errors_name_the_problem() -> None:
    screen, features = hand_screen(6)
    with pytest.raises(ValueError, match="closest"):
        build_pool(screen, features, "score", ["L2"])
    with pytest.raises(ValueError, match="not a score column"):
        build_pool(screen, features, "bliss", None)
    with pytest.raises(ValueError, match="n_initial"):
        CampaignConfig(n_initial=0)
    with pytest.raises(ValueError, match="pretrain"):
        CampaignConfig(pretrain="everything")


# --- Hydra -------------------------------------------------------------------------------------
EXPERIMENTS = {
    "laplace_ucb": ("bnn", "ucb"),
    "normal_ucb": ("bnn", "ucb"),
    "ensemble_ucb": ("DeepEnsemble", "ucb"),
    "random": ("bnn", "random"),
    "laplace_thompson": ("bnn", "thompson"),
    "laplace_greedy": ("bnn", "greedy"),
}


def compose_campaign(overrides: list[str]) -> Any:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="campaign", overrides=overrides)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_configs_pair_a_model_with_an_acquisition(name: str) -> None:
    cfg = compose_campaign([f"+experiment={name}"])
    model, kind = EXPERIMENTS[name]
    acquisition = instantiate(cfg.acquisition)
    assert model in cfg.model._target_ and isinstance(acquisition, Acquisition)
    assert (acquisition.name, acquisition.q) == (kind, 30)


def test_acquisition_and_campaign_groups_instantiate() -> None:
    for kind in ("ucb", "greedy", "thompson", "ei", "pi", "qei", "qpi", "random"):
        assert instantiate(compose_campaign([f"acquisition={kind}"]).acquisition).name == kind
    mcf7 = instantiate(compose_campaign(["campaign=almanac_mcf7", "data=almanac"]).campaign, _convert_="all")
    assert (mcf7.n_initial, mcf7.n_rounds, mcf7.pool_cell_lines) == (30, 10, ["MCF7"])
    default = instantiate(compose_campaign(["seed=3"]).campaign, _convert_="all")
    assert default == CampaignConfig(seed=3, top_fractions=(0.01, 0.05))


def test_pretrain_overrides_change_only_the_pretraining_model() -> None:
    small = ["data.screen.n_drugs=8", "data.screen.n_cell_lines=2"]
    cfg = compose_campaign(
        ["+experiment=normal_ucb", *small, 'pretrain_overrides=["inference.epochs=5","inference.lr=0.002"]']
    )
    features = build_features(cfg, build_screen(cfg))
    pretrain = pretrain_model_factory(cfg, features)(seed=0)
    rounds = model_factory(cfg, features)(seed=0)
    assert (pretrain.inference.epochs, pretrain.inference.lr) == (5, 0.002)
    assert (rounds.inference.epochs, rounds.inference.lr) == (500, 0.003)  # the presets keep the SVI defaults
    ensemble = compose_campaign(["+experiment=ensemble_ucb", *small, 'pretrain_overrides=["model.training.epochs=3"]'])
    assert all(m.config.epochs == 3 for m in pretrain_model_factory(ensemble, features)(seed=0).members)
    assert pretrain_model_factory(compose_campaign(small), features) is None
    with pytest.raises(ValueError, match="key=value"):
        pretrain_model_factory(compose_campaign([*small, 'pretrain_overrides=["epochs"]']), features)


def test_pretrained_experiment_config_runs_end_to_end(tmp_path: Path) -> None:
    cfg = compose_campaign(
        [
            "+experiment=scale_mixture_ucb_pretrained",
            "data.screen.n_drugs=8",
            "data.screen.n_cell_lines=2",
            "campaign.pool_cell_lines=[cell_1]",
            "campaign.n_initial=5",
            "campaign.n_rounds=1",
            "acquisition.q=4",
            "campaign.progress=false",
            "num_samples=4",
            "inference.epochs=2",
            'pretrain_overrides=["inference.epochs=1"]',
        ]
    )
    assert (cfg.campaign.pretrain, cfg.campaign.transfer, cfg.campaign.transfer_widen) == (
        "other_cell_lines",
        "posterior",
        3.0,
    )
    result = campaign_from_config(cfg, tmp_path)
    assert result.rounds["n_measured"].tolist() == [5, 9] and result.pretrained is not None
    assert np.isfinite(result.rounds.at[0, "r2"])


def test_default_pretrained_preset_keeps_the_trunk_and_updates_the_pretrained_posterior(tmp_path: Path) -> None:
    """``normal_gp_identity_ucb_pretrained``: round models keep the pretrained trunk (no warm start) and fit the head
    and the effects from the pretrained posterior, which is their prior (the effects' prior means included)."""
    cfg = compose_campaign(
        [
            "+experiment=normal_gp_identity_ucb_pretrained",
            "data.screen.n_drugs=8",
            "data.screen.n_cell_lines=3",
            "campaign.pool_cell_lines=[cell_1]",
            "campaign.n_initial=6",
            "campaign.n_rounds=1",
            "acquisition.q=4",
            "campaign.progress=false",
            "num_samples=4",
            "inference.epochs=2",
            'pretrain_overrides=["inference.warm_start_epochs=3","inference.epochs=2"]',
        ]
    )
    assert (cfg.campaign.pretrain, cfg.campaign.transfer, cfg.inference.warm_start_epochs) == (
        "other_cell_lines",
        "posterior",
        0,
    )
    result = campaign_from_config(cfg, tmp_path)
    assert result.rounds["n_measured"].tolist() == [6, 10] and result.pretrained is not None
    pretrained = result.pretrained
    last = torch.load(result.checkpoint, weights_only=True)["model_state"]
    trunk = [k for k in pretrained["model"] if k.startswith("predictor.") and "head_layers" not in k]
    assert trunk and all(torch.equal(last["model"][k], pretrained["model"][k]) for k in trunk)
    moved = [k for k in pretrained["guide"] if not torch.equal(last["guide"][k], pretrained["guide"][k])]
    assert any("head_layers" in k for k in moved) and any("identity" in k for k in moved), moved


def test_hydra_entry_composes_and_runs(tmp_path: Path) -> None:
    cfg = compose_campaign(
        [
            "+experiment=ensemble_ucb",
            "data.screen.n_drugs=10",
            "data.screen.n_cell_lines=1",
            "model.n_members=2",
            "model.training.epochs=3",
            "acquisition.q=5",
            "campaign.n_initial=5",
            "campaign.n_rounds=2",
            "campaign.progress=false",
            "num_samples=4",
        ]
    )
    result = campaign_from_config(cfg, tmp_path)
    assert result.rounds["n_measured"].tolist() == [5, 10, 15]
    assert (tmp_path / "recall.png").is_file()
    resumed = campaign_from_config(
        compose_campaign(
            [
                "+experiment=ensemble_ucb",
                "data.screen.n_drugs=10",
                "data.screen.n_cell_lines=1",
                "model.n_members=2",
                "model.training.epochs=3",
                "acquisition.q=5",
                "campaign.n_initial=5",
                "campaign.n_rounds=3",
                "campaign.progress=false",
                "num_samples=4",
                "resume=true",
            ]
        ),
        tmp_path,
    )
    pd.testing.assert_frame_equal(without_times(resumed.rounds.iloc[:3]), without_times(result.rounds))
    assert resumed.rounds["n_measured"].tolist() == [5, 10, 15, 20]


def test_recall_column_names() -> None:
    assert (recall_column(0.01), recall_column(0.05), recall_column(0.005)) == (
        "recall_top1pct",
        "recall_top5pct",
        "recall_top0.5pct",
    )


# --- random campaigns fit no model unless asked ------------------------------------------------
@pytest.mark.parametrize("pretrain", ["none", "other_cell_lines"])
def test_random_campaign_fits_no_model_and_picks_the_same(tmp_path: Path, pretrain: str) -> None:
    screen, features = hand_screen(16)
    # a second cell line outside the pool gives pretraining something to fit
    other = screen.experiments.assign(cell_line="L2")
    screen.experiments = pd.concat([screen.experiments, other], ignore_index=True)
    screen.cell_lines = pd.DataFrame({"tissue": ""}, index=pd.Index(["L1", "L2"]))
    features = Features(features.drug, torch.eye(2), features.drug_ids, ["L1", "L2"])
    made: list[BayesianRidge] = []
    kw = dict(n_initial=5, n_rounds=3, val_fraction=0.2, pool_cell_lines=["L1"], pretrain=pretrain)
    quiet = run_campaign(
        screen,
        features,
        ridge_factory(features, made),
        RandomAcquisition(q=6),
        config(**kw),
        tmp_path / "quiet",
        score="score",
    )
    assert made == [] and quiet.rounds[list(MODEL_METRICS)].isna().all().all()
    assert quiet.selections["predicted_mean"].isna().all()
    fitted = run_campaign(
        screen,
        features,
        ridge_factory(features, made),
        RandomAcquisition(q=6),
        config(**kw, random_fits_model=True),
        tmp_path / "fitted",
        score="score",
    )
    assert len(made) == 3 + (pretrain != "none")
    assert np.isfinite(fitted.rounds.loc[1:, "r2"]).all()
    np.testing.assert_array_equal(quiet.revealed, fitted.revealed)  # the model never changes a random pick


def test_random_experiment_preset_does_not_fit(tmp_path: Path) -> None:
    cfg = compose_campaign(
        [
            "+experiment=random",
            "data.screen.n_drugs=8",
            "data.screen.n_cell_lines=1",
            "campaign.n_initial=5",
            "campaign.n_rounds=2",
            "acquisition.q=4",
            "campaign.progress=false",
            "num_samples=4",
        ]
    )
    assert cfg.campaign.random_fits_model is False
    result = campaign_from_config(cfg, tmp_path)
    assert result.rounds["r2"].isna().all() and (result.rounds["train_s"] < 0.5).all()


def test_campaign_logs_name_model_and_acquisition(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = compose_campaign(
        [
            "+experiment=laplace_greedy",
            "data.screen.n_drugs=8",
            "data.screen.n_cell_lines=1",
            "campaign.n_initial=5",
            "campaign.n_rounds=1",
            "acquisition.q=4",
            "inference.epochs=2",
            "campaign.progress=false",
            "num_samples=4",
        ]
    )
    assert model_label(cfg) == "BNNSynergyModel (LaplacePrior)"
    with caplog.at_level("INFO", logger="recover_pyro.campaign"):
        campaign_from_config(cfg, tmp_path)
    assert "by greedy (BNNSynergyModel (LaplacePrior))" in caplog.text


def test_pretraining_fit_shows_progress_when_the_campaign_does(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Round refits stay quiet (fit_progress=false); the one long pretraining fit follows campaign.progress."""
    import recover_pyro.cli.campaign as campaign_module

    seen: dict[str, Any] = {}

    def spy(screen, features, factory, acquisition, config, out_dir, **kw):  # noqa: ANN001, ANN003, ANN202
        seen["rounds"] = factory(seed=0).inference.progress
        seen["pretrain"] = kw["pretrain_factory"](seed=0).inference.progress
        seen["model_name"] = kw["model_name"]

    monkeypatch.setattr(campaign_module, "run_campaign", spy)
    small = ["data.screen.n_drugs=8", "data.screen.n_cell_lines=2", "campaign.pretrain=other_cell_lines"]
    campaign_from_config(compose_campaign(["+experiment=normal_ucb", *small]), tmp_path)
    assert seen == {"rounds": False, "pretrain": True, "model_name": "BNNSynergyModel (NormalPrior)"}
    campaign_from_config(compose_campaign(["+experiment=normal_ucb", *small, "campaign.progress=false"]), tmp_path)
    assert seen["pretrain"] is False


@pytest.mark.parametrize("name", ["normal_ucb", "laplace_greedy", "scale_mixture_thompson", "sparse_dropout_ucb"])
def test_bnn_campaign_presets_use_the_library_defaults(name: str) -> None:
    """The documented campaign numbers come from the presets as shipped: the SVI defaults of svi.yaml (the
    settings tuned for the earlier optimiser were dropped with it), RECOVER's kappa 1 for UCB, except
    ``normal_ucb``'s schedule chosen on the pilot cell lines (kappa 2, x 0.8 per round)."""
    cfg = compose_campaign([f"+experiment={name}"])
    assert (cfg.inference.epochs, cfg.inference.lr) == (SVIConfig().epochs, SVIConfig().lr)
    expected = {"normal_ucb": (2.0, 0.8), "sparse_dropout_ucb": (1.0, 1.0)}.get(name, (None, None))
    assert (cfg.acquisition.get("kappa"), cfg.acquisition.get("kappa_decay")) == expected  # greedy / Thompson: none


def test_pretrained_preset_runs_rounds_to_convergence_with_its_own_kappa() -> None:
    """Its rounds use the library SVI (no epoch cap below the default: fits stop on the ELBO rule); the pilot's
    kappa 0.5 and the pretraining fit's own settings stay."""
    cfg = compose_campaign(["+experiment=scale_mixture_ucb_pretrained"])
    assert (cfg.inference.epochs, cfg.inference.lr, cfg.acquisition.kappa) == (SVIConfig().epochs, SVIConfig().lr, 0.5)
    assert list(cfg.pretrain_overrides) == ["inference.epochs=30", "inference.lr=0.003"]


def test_model_label_of_a_random_campaign_says_no_model() -> None:
    assert model_label(compose_campaign(["+experiment=random"])) == "no model"
    assert model_label(compose_campaign(["+experiment=random", "campaign.random_fits_model=true"])) == (
        "BNNSynergyModel (NormalPrior)"
    )
    assert model_label(compose_campaign(["+experiment=ensemble_ucb"])) == "DeepEnsemble"


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("sparse_dropout*.yaml")))
def test_sparse_dropout_presets_train_with_the_molchanov_kl(name: str) -> None:
    """The improper log-uniform prior has no usable Monte-Carlo KL (it made a campaign's ELBO NaN): every
    sparse-dropout preset uses the mean-field ELBO, i.e. the registered Molchanov KL."""
    root = "campaign" if name.endswith(("_ucb", "_greedy", "_thompson")) else "config"
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=root, overrides=[f"+experiment={name}"])
    assert cfg.prior._target_.endswith("LogUniformPrior") and cfg.inference.elbo == "meanfield"
