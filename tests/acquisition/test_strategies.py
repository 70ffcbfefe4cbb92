"""Strategy classes: each built-in rule, the configs that build them, and a user's own subclass."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

import recover_pyro
from recover_pyro.acquisition import (
    KINDS,
    STRATEGIES,
    UCB,
    Acquisition,
    ConstrainedBatch,
    ExpectedImprovement,
    Greedy,
    ProbabilityOfImprovement,
    QExpectedImprovement,
    QProbabilityOfImprovement,
    RandomAcquisition,
    SelectedBatch,
    Thompson,
    ei_scores,
    q_expected_improvement,
)
from recover_pyro.models.base import PredictiveSamples

CONFIG_DIR = Path(recover_pyro.__file__).parent / "conf"
# Parameters beyond q / max_per_drug / diversity_penalty, by kind.
EXTRA = {"ucb": {"kappa": 2.0, "kappa_decay": 0.8}, "pi": {"tau": 0.2}, "qpi": {"tau": 0.2}}


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_problem(seed: int, n: int = 60, n_drugs: int = 12) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(16, n)`` samples with a trend, ``(n, 2)`` drugs and a ``(n,)`` exclusion mask of about half."""
    gen = seeded(seed)
    drugs = torch.stack(
        [torch.randint(0, n_drugs, (n,), generator=gen), torch.randint(0, n_drugs, (n,), generator=gen)], dim=1
    )
    samples = torch.randn(16, n, generator=gen) + torch.linspace(0, 2, n)
    exclude = torch.rand(n, generator=gen) < 0.5
    return samples, drugs, exclude


def max_appearances(indices: torch.Tensor, drugs: torch.Tensor) -> int:
    """Largest number of batch members sharing one drug (a self-pair counts once)."""
    return int(torch.cat([drugs[i].unique() for i in indices]).bincount().max())


# --------------------------------------------------------------------------------------- built-in strategies


def test_ucb_uses_the_rounds_kappa():
    # candidate 0: mean 1, std 0; candidate 1: mean 0.5, unbiased std 2 / sqrt(3) ~ 1.15
    samples = torch.tensor([[1.0, -0.5], [1.0, 1.5], [1.0, -0.5], [1.0, 1.5]])
    acq = UCB(q=1, kappa=1.0, kappa_decay=0.1)
    assert acq.kappa_at(0) == 1.0 and acq.kappa_at(2) == pytest.approx(0.01)
    assert acq.select(samples, round=0).indices.tolist() == [1]  # exploring
    later = acq.select(samples, round=2)  # kappa = 0.01: exploiting
    assert later.indices.tolist() == [0]
    torch.testing.assert_close(later.scores, torch.tensor([1.0]))


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_respects_exclusion_and_cap(kind):
    samples, drugs, exclude = random_problem(8)
    tau = {"tau": 0.2} if kind in ("pi", "qpi") else {}
    free = STRATEGIES[kind](q=10, **tau).select(samples, exclude=exclude, best_f=1.5, generator=seeded(9))
    assert isinstance(free, SelectedBatch) and len(free) == 10 and free.scores.shape == (10,)
    assert len(set(free.indices.tolist())) == 10 and not exclude[free.indices].any()

    capped = STRATEGIES[kind](q=4, max_per_drug=1, diversity_penalty=0.5).select(
        samples, exclude=exclude, candidate_drugs=drugs, best_f=1.5, generator=seeded(9)
    )
    assert not exclude[capped.indices].any()
    assert len(capped) == 4 and max_appearances(capped.indices, drugs) == 1


def test_qei_scores_are_prefix_values():
    samples = torch.randn(32, 15, generator=seeded(12))
    batch = QExpectedImprovement(q=4).select(samples, best_f=0.5)
    assert (batch.scores[1:] >= batch.scores[:-1]).all()
    torch.testing.assert_close(batch.scores[-1], q_expected_improvement(samples, batch.indices, 0.5))
    torch.testing.assert_close(batch.scores[0], ei_scores(samples, 0.5).max())


def test_select_accepts_predictive_samples():
    f = torch.randn(10, 6, generator=seeded(13))
    batch = Greedy(q=2).select(PredictiveSamples(f, torch.tensor(0.1)))
    assert batch.indices.tolist() == f.mean(0).topk(2).indices.tolist()


@pytest.mark.parametrize("kind", KINDS)
def test_from_kind_gives_the_same_batch_as_the_class(kind):
    samples, drugs, exclude = random_problem(14)
    params = {"q": 6, "max_per_drug": 2, "diversity_penalty": 0.3, **EXTRA.get(kind, {})}
    built = Acquisition.from_kind(kind, **params)
    direct = STRATEGIES[kind](**params)
    assert type(built) is STRATEGIES[kind] and built == direct and built.name == kind
    picks = [
        acq.select(samples, exclude=exclude, candidate_drugs=drugs, best_f=1.0, round=2, generator=seeded(15))
        for acq in (built, direct)
    ]
    assert torch.equal(picks[0].indices, picks[1].indices) and torch.equal(picks[0].scores, picks[1].scores)


def test_names_and_needs_model():
    expected = {
        "ucb": UCB,
        "greedy": Greedy,
        "thompson": Thompson,
        "ei": ExpectedImprovement,
        "pi": ProbabilityOfImprovement,
        "qei": QExpectedImprovement,
        "qpi": QProbabilityOfImprovement,
        "random": RandomAcquisition,
    }
    assert dict(STRATEGIES) == expected and KINDS == tuple(expected)
    for kind, strategy in expected.items():
        assert strategy.name == kind == strategy().name
        assert strategy().needs_model is (kind != "random"), kind  # random's picks ignore the samples' values


def test_random_picks_do_not_depend_on_the_samples():
    n = 25
    a = RandomAcquisition(q=5).select(torch.randn(8, n), generator=seeded(3))
    b = RandomAcquisition(q=5).select(torch.zeros(1, n), generator=seeded(3))
    assert torch.equal(a.indices, b.indices)


def test_dataclass_replace_and_asdict():
    acq = UCB(q=30, kappa=2.0, kappa_decay=0.8, max_per_drug=3)
    smaller = dataclasses.replace(acq, q=5)
    assert type(smaller) is UCB and (smaller.q, smaller.kappa, smaller.kappa_decay, smaller.max_per_drug) == (
        5,
        2.0,
        0.8,
        3,
    )
    assert dataclasses.asdict(acq) == {
        "q": 30,
        "max_per_drug": 3,
        "diversity_penalty": 0.0,
        "kappa": 2.0,
        "kappa_decay": 0.8,
    }
    assert dataclasses.asdict(QProbabilityOfImprovement(q=4, tau=0.1))["tau"] == 0.1
    assert Greedy(q=5) != RandomAcquisition(q=5)  # same fields, different rules


# --------------------------------------------------------------------------------------- a user's strategy


@dataclass
class LowerQuantile(Acquisition):
    """A user's single-point rule: one method, the ``level`` quantile of each candidate's samples."""

    level: float = 0.2

    def scores(self, samples, best_f=None, round=0):
        return samples.quantile(self.level, dim=0)


class TopMeanThenSpread(Acquisition):
    """A user's batch rule (one method, ``select``): alternate the best mean and the widest spread."""

    name = "mean_spread"

    def select(self, samples, exclude=None, candidate_drugs=None, best_f=None, round=0, generator=None):
        samples = self.as_samples(samples)
        batch = ConstrainedBatch(samples.shape[1], **self.constraints(exclude, candidate_drugs))
        keys = (samples.mean(0), samples.std(0))
        for slot in range(self.q):
            index = batch.pick(keys[slot % 2])
            if index is None:
                break
            batch.add(index)
        indices = batch.indices(self.q)
        return SelectedBatch(indices, samples.mean(0)[indices])


def test_user_single_point_strategy_selects_under_the_constraints():
    samples, drugs, exclude = random_problem(16)
    acq = LowerQuantile(q=5, max_per_drug=1, level=0.1)
    assert (acq.name, acq.needs_model) == ("lowerquantile", True)
    batch = acq.select(samples, exclude=exclude, candidate_drugs=drugs)
    assert len(batch) == 5 and len(set(batch.indices.tolist())) == 5
    assert not exclude[batch.indices].any() and max_appearances(batch.indices, drugs) == 1
    lower = samples.quantile(0.1, dim=0)
    torch.testing.assert_close(batch.scores, lower[batch.indices])
    # the first pick is the best allowed candidate; later picks never beat an allowed one they skipped
    assert int(batch.indices[0]) == int(lower.masked_fill(exclude, -math.inf).argmax())
    # without constraints it is plain top-q of its scores
    assert LowerQuantile(q=5, level=0.1).select(samples).indices.tolist() == lower.topk(5).indices.tolist()
    assert dataclasses.replace(acq, q=2).select(samples, exclude=exclude, candidate_drugs=drugs).indices.tolist() == (
        batch.indices[:2].tolist()
    )


def test_user_batch_strategy_selects_under_the_constraints():
    samples, drugs, exclude = random_problem(17)
    acq = TopMeanThenSpread(q=6, max_per_drug=2)
    assert acq.name == "mean_spread" and isinstance(acq, Acquisition)
    batch = acq.select(PredictiveSamples(samples, torch.tensor(0.1)), exclude=exclude, candidate_drugs=drugs)
    assert len(batch) == 6 and len(set(batch.indices.tolist())) == 6
    assert not exclude[batch.indices].any() and max_appearances(batch.indices, drugs) <= 2
    mean = samples.mean(0).masked_fill(exclude, -math.inf)
    assert int(batch.indices[0]) == int(mean.argmax())


def test_an_acquisition_must_implement_scores_or_select():
    with pytest.raises(TypeError, match="abstract"):
        Acquisition(q=3)  # type: ignore[abstract]

    class Nothing(Acquisition):
        pass

    with pytest.raises(TypeError, match="abstract"):
        Nothing(q=3)  # type: ignore[abstract]

    class WrongShape(Acquisition):
        def scores(self, samples, best_f=None, round=0):
            return samples  # (S, N), not (N,)

    with pytest.raises(ValueError, match=r"WrongShape.scores must return a tensor of shape \(N,\) = \(5,\)"):
        WrongShape(q=2).select(torch.randn(3, 5))
    with pytest.raises(NotImplementedError, match="whole batches"):
        Thompson().scores(torch.randn(3, 5))


# --------------------------------------------------------------------------------------- errors and config


def test_clear_errors():
    samples = torch.randn(4, 5)
    with pytest.raises(ValueError, match="unknown acquisition kind 'qie'.*qei"):
        Acquisition.from_kind("qie")
    with pytest.raises(TypeError, match="'greedy'.*takes no 'kappa'.*q, max_per_drug, diversity_penalty"):
        Acquisition.from_kind("greedy", q=3, kappa=1.0)
    for strategy in (ExpectedImprovement, ProbabilityOfImprovement, QExpectedImprovement, QProbabilityOfImprovement):
        with pytest.raises(ValueError, match="needs best_f"):
            strategy().select(samples)
    with pytest.raises(ValueError, match="positive integer"):
        Greedy(q=0)
    with pytest.raises(ValueError, match="max_per_drug"):
        Greedy(max_per_drug=0)
    with pytest.raises(ValueError, match="diversity_penalty"):
        Thompson(diversity_penalty=-1.0)
    with pytest.raises(ValueError, match="kappa0 and decay"):
        UCB(kappa=-1.0)
    with pytest.raises(ValueError, match="tau"):
        QProbabilityOfImprovement(tau=0.0)


def test_hydra_builds_acquisition():
    acq = instantiate(
        {"_target_": "recover_pyro.acquisition.QProbabilityOfImprovement", "q": 5, "tau": 0.1, "max_per_drug": 2}
    )
    assert acq == QProbabilityOfImprovement(q=5, tau=0.1, max_per_drug=2)


@pytest.mark.parametrize("kind", KINDS)
def test_every_acquisition_config_builds_its_class(kind):
    cfg = OmegaConf.load(CONFIG_DIR / "acquisition" / f"{kind}.yaml")
    assert "kind" not in cfg and cfg._target_ == f"recover_pyro.acquisition.{STRATEGIES[kind].__name__}"
    acq = instantiate(cfg)
    assert type(acq) is STRATEGIES[kind] and acq.name == kind and acq.q == 30


def test_a_config_names_a_user_class_by_its_target():
    target = f"{LowerQuantile.__module__}.{LowerQuantile.__qualname__}"
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
            config_name="campaign",
            overrides=["acquisition=greedy", f"acquisition._target_={target}", "+acquisition.level=0.1"],
        )
    acq = instantiate(cfg.acquisition)
    assert type(acq).__name__ == "LowerQuantile" and (acq.q, acq.level) == (30, 0.1)
