"""Acquisition functions: closed forms on hand-built sample matrices, constraints and reproducibility."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from recover_pyro.acquisition import (
    KINDS,
    Acquisition,
    BatchShortfallWarning,
    SelectedBatch,
    ei_scores,
    greedy_scores,
    pi_scores,
    q_expected_improvement,
    q_probability_of_improvement,
    random_batch,
    select_batch,
    sequential_greedy_qei,
    sequential_greedy_qpi,
    thompson_batch,
    ucb_kappa,
    ucb_scores,
    unique_drugs,
)
from recover_pyro.models.base import PredictiveSamples


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def normal_pdf(z: float) -> float:
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


# Five candidates whose unconstrained top 3 all contain drug 0.
CROWDED_DRUGS = torch.tensor([[0, 1], [0, 2], [0, 3], [4, 5], [6, 7]])
CROWDED_SCORES = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])


# --------------------------------------------------------------------------------------- point scores


def test_greedy_is_posterior_mean_and_ucb_with_kappa_zero_equals_greedy():
    samples = torch.randn(50, 7, generator=seeded())
    torch.testing.assert_close(greedy_scores(samples), samples.mean(0))
    torch.testing.assert_close(ucb_scores(samples, 0.0), greedy_scores(samples))


def test_ucb_prefers_high_variance_at_equal_mean():
    samples = torch.tensor([[1.0, -1.0], [1.0, 3.0], [1.0, -1.0], [1.0, 3.0]])  # both means are 1
    scores = ucb_scores(samples, kappa=1.0)
    std = math.sqrt(16.0 / 3.0)  # unbiased: 4 deviations of 2 over S - 1 = 3
    torch.testing.assert_close(scores, torch.tensor([1.0, 1.0 + std]))
    assert int(scores.argmax()) == 1
    assert ucb_scores(samples[:1], kappa=5.0).tolist() == samples[0].tolist()  # S = 1: no spread


def test_ei_closed_cases():
    samples = torch.tensor([[0.0, 5.0, 1.0], [1.0, 7.0, 4.0], [2.0, 6.0, 3.0]])
    ei = ei_scores(samples, best_f=3.0)
    assert ei[0] == 0.0  # every sample below best_f
    torch.testing.assert_close(ei[1], samples[:, 1].mean() - 3.0)  # every sample above: mean - best_f
    torch.testing.assert_close(ei[2], torch.tensor(1.0 / 3.0))  # only the 4 improves, by 1


def test_ei_and_pi_match_gaussian_closed_forms():
    mu = torch.tensor([0.0, 1.0, -1.0, 2.0])
    sigma = torch.tensor([1.0, 0.5, 2.0, 3.0])
    s = 200_000
    samples = mu + sigma * torch.randn(s, 4, generator=seeded(1), dtype=torch.float64)
    best = 0.5
    ei, pi = ei_scores(samples, best), pi_scores(samples, best)
    for n in range(4):
        m, sd = float(mu[n]), float(sigma[n])
        z = (m - best) / sd
        ei_exact = sd * normal_pdf(z) + (m - best) * normal_cdf(z)
        pi_exact = normal_cdf(z)
        # 5 Monte-Carlo standard errors; the EI sample std is bounded by sqrt(E[(Y - best)^2])
        assert abs(float(ei[n]) - ei_exact) < 5 * math.sqrt((sd**2 + (m - best) ** 2) / s)
        assert abs(float(pi[n]) - pi_exact) < 5 * math.sqrt(pi_exact * (1 - pi_exact) / s)


def test_pi_indicator_and_sigmoid():
    samples = torch.tensor([[0.0, 5.0], [4.0, 7.0], [3.0, 1.0], [3.5, 2.0]])
    torch.testing.assert_close(pi_scores(samples, 3.0), torch.tensor([0.5, 0.5]))  # 3.0 itself is no improvement
    expected = torch.sigmoid((samples - 3.0) / 2.0).mean(0)
    torch.testing.assert_close(pi_scores(samples, 3.0, tau=2.0), expected)
    torch.testing.assert_close(pi_scores(samples, 3.2, tau=1e-3), pi_scores(samples, 3.2), atol=1e-6, rtol=0)


def test_kappa_schedule_decays():
    assert ucb_kappa(0, 2.0, 0.5) == 2.0
    kappas = [ucb_kappa(r, 2.0, 0.5) for r in range(5)]
    assert kappas == [2.0 * 0.5**r for r in range(5)]
    assert all(a > b for a, b in zip(kappas, kappas[1:]))
    assert {ucb_kappa(r, 3.0, 1.0) for r in range(4)} == {3.0}
    with pytest.raises(ValueError, match="round"):
        ucb_kappa(-1, 1.0, 0.5)


def test_acquisition_ucb_uses_the_rounds_kappa():
    # candidate 0: mean 1, std 0; candidate 1: mean 0.5, unbiased std 2 / sqrt(3) ~ 1.15
    samples = torch.tensor([[1.0, -0.5], [1.0, 1.5], [1.0, -0.5], [1.0, 1.5]])
    acq = Acquisition(kind="ucb", q=1, kappa=1.0, kappa_decay=0.1)
    assert acq.select(samples, round=0).indices.tolist() == [1]  # exploring
    later = acq.select(samples, round=2)  # kappa = 0.01: exploiting
    assert later.indices.tolist() == [0]
    torch.testing.assert_close(later.scores, torch.tensor([1.0]))


# --------------------------------------------------------------------------------------- joint MC values


def test_qei_and_qpi_closed_forms():
    samples = torch.tensor([[0.0, 5.0, 1.0], [1.0, 2.0, 4.0], [2.0, 6.0, 3.0], [6.0, 0.0, 0.0]])
    best = 3.0
    ei = ei_scores(samples, best)
    for j in range(3):  # batch of one is the single-point value
        torch.testing.assert_close(q_expected_improvement(samples, torch.tensor([j]), best), ei[j])
        torch.testing.assert_close(
            q_probability_of_improvement(samples, torch.tensor([j]), best), pi_scores(samples, best)[j]
        )
    batch = torch.tensor([0, 1, 2])
    # per-sample batch max: 5, 4, 6, 6 -> improvements 2, 1, 3, 3
    qei = q_expected_improvement(samples, batch, best)
    torch.testing.assert_close(qei, torch.tensor(9.0 / 4.0))
    assert qei >= ei[batch].max()
    torch.testing.assert_close(q_probability_of_improvement(samples, batch, best), torch.tensor(1.0))
    torch.testing.assert_close(
        q_probability_of_improvement(samples, batch, best, tau=0.5),
        torch.sigmoid((torch.tensor([5.0, 4.0, 6.0, 6.0]) - best) / 0.5).mean(),
    )


def test_qei_never_below_best_single_ei_on_random_batches():
    samples = torch.randn(64, 20, generator=seeded(2))
    ei = ei_scores(samples, 0.8)
    gen = seeded(3)
    for _ in range(20):
        batch = torch.randperm(20, generator=gen)[:4]
        assert q_expected_improvement(samples, batch, 0.8) >= ei[batch].max() - 1e-7


@pytest.mark.parametrize("builder", ["qei", "qpi"])
def test_sequential_greedy_maximises_joint_value_at_each_step(builder):
    samples = torch.randn(32, 12, generator=seeded(4))
    best = 1.0
    if builder == "qei":
        chosen = sequential_greedy_qei(samples, 4, best)
        value = lambda idx: q_expected_improvement(samples, idx, best)  # noqa: E731
    else:
        chosen = sequential_greedy_qpi(samples, 4, best, tau=0.3)
        value = lambda idx: q_probability_of_improvement(samples, idx, best, tau=0.3)  # noqa: E731
    assert len(set(chosen.tolist())) == 4
    for k in range(4):
        prefix = chosen[:k].tolist()
        brute = [float(value(torch.tensor(prefix + [j]))) if j not in prefix else -1.0 for j in range(12)]
        assert float(value(chosen[: k + 1])) == pytest.approx(max(brute), abs=1e-6)
    if builder == "qei":
        assert int(chosen[0]) == int(ei_scores(samples, best).argmax())


def test_sequential_greedy_breaks_zero_gain_ties_by_posterior_mean():
    samples = torch.tensor([[0.0, 2.0, 1.0, 3.0], [1.0, 2.5, 0.5, 4.0]])  # nothing reaches best_f = 10
    assert sequential_greedy_qei(samples, 3, best_f=10.0).tolist() == [3, 1, 2]
    assert sequential_greedy_qpi(samples, 3, best_f=10.0).tolist() == [3, 1, 2]


# --------------------------------------------------------------------------------------- Thompson sampling


def test_thompson_distinct_not_excluded_and_reproducible():
    samples = torch.randn(8, 40, generator=seeded(5))
    exclude = torch.zeros(40, dtype=torch.bool)
    exclude[::3] = True
    for q in (5, 8, 20):  # 20 > S: rows are reused, picks stay distinct
        picks = thompson_batch(samples, q, generator=seeded(6), exclude=exclude)
        assert len(picks) == q and len(set(picks.tolist())) == q
        assert not exclude[picks].any()
        assert torch.equal(picks, thompson_batch(samples, q, generator=seeded(6), exclude=exclude))


def test_thompson_with_one_sample_is_argmax():
    row = torch.tensor([[0.3, 2.0, -1.0, 1.5, 0.9]])
    assert thompson_batch(row, 1, generator=seeded()).tolist() == [1]
    assert thompson_batch(row, 3, generator=seeded()).tolist() == [1, 3, 4]


def test_thompson_first_pick_follows_the_posterior_argmax_frequency():
    samples = torch.eye(4)  # row r's argmax is candidate r: each is chosen first with probability 1/4
    gen = seeded(7)
    counts = torch.zeros(4)
    for _ in range(800):
        counts[thompson_batch(samples, 1, generator=gen)] += 1
    assert ((counts - 200).abs() < 60).all(), counts  # > 4 binomial standard deviations


# --------------------------------------------------------------------------------------- batch constraints


def test_select_batch_unconstrained_is_topk_and_skips_excluded():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.7, 0.3])
    assert select_batch(scores, 3).tolist() == [1, 3, 2]
    exclude = torch.tensor([False, True, False, False, False])
    assert select_batch(scores, 3, exclude=exclude).tolist() == [3, 2, 4]


def test_per_drug_cap_holds_where_topk_would_violate_it():
    assert select_batch(CROWDED_SCORES, 3).tolist() == [0, 1, 2]  # drug 0 three times
    assert select_batch(CROWDED_SCORES, 3, CROWDED_DRUGS, max_per_drug=1).tolist() == [0, 3, 4]
    assert select_batch(CROWDED_SCORES, 3, CROWDED_DRUGS, max_per_drug=2).tolist() == [0, 1, 3]


def test_cap_that_makes_q_impossible_returns_fewer_and_warns():
    with pytest.warns(BatchShortfallWarning, match="only 3 of q=4"):
        picks = select_batch(CROWDED_SCORES, 4, CROWDED_DRUGS, max_per_drug=1)
    assert picks.tolist() == [0, 3, 4]
    with pytest.warns(BatchShortfallWarning, match="only 2 of q=3"):
        assert len(select_batch(CROWDED_SCORES, 3, exclude=torch.tensor([True, True, False, True, False]))) == 2


def test_diversity_penalty_increases_unique_drugs():
    plain = select_batch(CROWDED_SCORES, 3, CROWDED_DRUGS)
    diverse = select_batch(CROWDED_SCORES, 3, CROWDED_DRUGS, diversity_penalty=2.0)
    assert unique_drugs(plain, CROWDED_DRUGS) == 4
    assert unique_drugs(diverse, CROWDED_DRUGS) == 6
    assert diverse.tolist() == [0, 3, 4]
    # a small penalty only reorders near-ties: the gap 4 -> 2 is worth more than 0.1 std
    assert select_batch(CROWDED_SCORES, 2, CROWDED_DRUGS, diversity_penalty=0.1).tolist() == [0, 1]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_respects_exclusion_and_cap(kind):
    n_drugs, n = 12, 60
    gen = seeded(8)
    drugs = torch.stack(
        [torch.randint(0, n_drugs, (n,), generator=gen), torch.randint(0, n_drugs, (n,), generator=gen)], dim=1
    )
    samples = torch.randn(16, n, generator=gen) + torch.linspace(0, 2, n)
    exclude = torch.rand(n, generator=gen) < 0.5
    free = Acquisition(kind=kind, q=10, tau=0.2).select(samples, exclude=exclude, best_f=1.5, generator=seeded(9))
    assert isinstance(free, SelectedBatch) and len(free) == 10 and free.scores.shape == (10,)
    assert len(set(free.indices.tolist())) == 10 and not exclude[free.indices].any()

    capped = Acquisition(kind=kind, q=4, max_per_drug=1, diversity_penalty=0.5).select(
        samples, exclude=exclude, candidate_drugs=drugs, best_f=1.5, generator=seeded(9)
    )
    assert not exclude[capped.indices].any()
    appearances = torch.cat([drugs[i].unique() for i in capped.indices])  # a self-pair counts once
    assert len(capped) == 4 and int(appearances.bincount().max()) == 1


def test_random_batch_is_seeded_and_uniform():
    assert torch.equal(random_batch(30, 5, generator=seeded(10)), random_batch(30, 5, generator=seeded(10)))
    gen = seeded(11)
    exclude = torch.zeros(10, dtype=torch.bool)
    exclude[9] = True
    counts = torch.zeros(10)
    for _ in range(900):
        picks = random_batch(10, 3, generator=gen, exclude=exclude)
        assert len(set(picks.tolist())) == 3
        counts[picks] += 1
    assert counts[9] == 0
    assert ((counts[:9] - 300).abs() < 70).all(), counts  # each of 9 open candidates: 900 * 3 / 9


def test_qei_scores_are_prefix_values():
    samples = torch.randn(32, 15, generator=seeded(12))
    batch = Acquisition(kind="qei", q=4).select(samples, best_f=0.5)
    assert (batch.scores[1:] >= batch.scores[:-1]).all()
    torch.testing.assert_close(batch.scores[-1], q_expected_improvement(samples, batch.indices, 0.5))
    torch.testing.assert_close(batch.scores[0], ei_scores(samples, 0.5).max())


def test_select_accepts_predictive_samples():
    f = torch.randn(10, 6, generator=seeded(13))
    batch = Acquisition(kind="greedy", q=2).select(PredictiveSamples(f, torch.tensor(0.1)))
    assert batch.indices.tolist() == f.mean(0).topk(2).indices.tolist()


def test_unique_drugs():
    assert unique_drugs(torch.tensor([0, 3, 4]), CROWDED_DRUGS) == 6
    assert unique_drugs(torch.tensor([0, 1, 3]), CROWDED_DRUGS) == 5
    assert unique_drugs(torch.tensor([0, 1, 2]), CROWDED_DRUGS) == 4


# --------------------------------------------------------------------------------------- errors and config


def test_clear_errors():
    samples = torch.randn(4, 5)
    with pytest.raises(ValueError, match="unknown acquisition kind 'qie'.*qei"):
        Acquisition(kind="qie")
    with pytest.raises(ValueError, match="needs best_f"):
        Acquisition(kind="ei").select(samples)
    with pytest.raises(ValueError, match="need candidate_drugs"):
        select_batch(samples[0], 2, max_per_drug=1)
    with pytest.raises(ValueError, match=r"shape \(S, N\)"):
        greedy_scores(torch.randn(5))
    with pytest.raises(ValueError, match="sample 1, candidate 2"):
        greedy_scores(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, math.nan]]))
    with pytest.raises(ValueError, match="bool mask of shape"):
        select_batch(samples[0], 2, exclude=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"shape \(5, 2\)"):
        select_batch(samples[0], 2, candidate_drugs=torch.zeros(5, 3, dtype=torch.long), max_per_drug=1)
    with pytest.raises(ValueError, match="positive integer"):
        select_batch(samples[0], 0)
    with pytest.raises(IndexError, match=r"\[0, 5\)"):
        q_expected_improvement(samples, torch.tensor([7]), 0.0)


def test_no_warning_when_batch_is_full():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        select_batch(CROWDED_SCORES, 5)


def test_hydra_builds_acquisition():
    from hydra.utils import instantiate

    acq = instantiate(
        {"_target_": "recover_pyro.acquisition.Acquisition", "kind": "qpi", "q": 5, "tau": 0.1, "max_per_drug": 2}
    )
    assert acq == Acquisition(kind="qpi", q=5, tau=0.1, max_per_drug=2)
