"""Batch builders: sequential greedy qEI / qPI, Thompson sampling, random batches and the batch constraints."""

from __future__ import annotations

import warnings

import pytest
import torch

from recover_pyro.acquisition import (
    BatchShortfallWarning,
    ConstrainedBatch,
    ei_scores,
    q_expected_improvement,
    q_probability_of_improvement,
    random_batch,
    select_batch,
    sequential_greedy_qei,
    sequential_greedy_qpi,
    thompson_batch,
    unique_drugs,
)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# Five candidates whose unconstrained top 3 all contain drug 0.
CROWDED_DRUGS = torch.tensor([[0, 1], [0, 2], [0, 3], [4, 5], [6, 7]])
CROWDED_SCORES = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])


# --------------------------------------------------------------------------------------- sequential greedy


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


def test_constrained_batch_is_the_building_block():
    """Growing a ConstrainedBatch by hand gives what select_batch gives (the recipe for a custom select())."""
    batch = ConstrainedBatch(5, candidate_drugs=CROWDED_DRUGS, max_per_drug=1)
    while len(batch.chosen) < 3 and (index := batch.pick(CROWDED_SCORES)) is not None:
        batch.add(index)
    assert batch.indices(3).tolist() == select_batch(CROWDED_SCORES, 3, CROWDED_DRUGS, max_per_drug=1).tolist()
    assert batch.pick(CROWDED_SCORES) is None  # drug 0's candidates are closed, the others chosen


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


def test_unique_drugs():
    assert unique_drugs(torch.tensor([0, 3, 4]), CROWDED_DRUGS) == 6
    assert unique_drugs(torch.tensor([0, 1, 3]), CROWDED_DRUGS) == 5
    assert unique_drugs(torch.tensor([0, 1, 2]), CROWDED_DRUGS) == 4


# --------------------------------------------------------------------------------------- errors


def test_clear_errors_of_batch_builders():
    samples = torch.randn(4, 5)
    with pytest.raises(ValueError, match="need candidate_drugs"):
        select_batch(samples[0], 2, max_per_drug=1)
    with pytest.raises(ValueError, match="bool mask of shape"):
        select_batch(samples[0], 2, exclude=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"shape \(5, 2\)"):
        select_batch(samples[0], 2, candidate_drugs=torch.zeros(5, 3, dtype=torch.long), max_per_drug=1)
    with pytest.raises(ValueError, match="positive integer"):
        select_batch(samples[0], 0)


def test_no_warning_when_batch_is_full():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        select_batch(CROWDED_SCORES, 5)
