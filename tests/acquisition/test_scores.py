"""Single-point scores and joint Monte-Carlo batch values: closed forms on hand-built sample matrices."""

from __future__ import annotations

import math

import pytest
import torch

from recover_pyro.acquisition import (
    ei_scores,
    greedy_scores,
    pi_scores,
    q_expected_improvement,
    q_probability_of_improvement,
    ucb_kappa,
    ucb_scores,
)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def normal_pdf(z: float) -> float:
    return math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


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


# --------------------------------------------------------------------------------------- errors


def test_clear_errors_of_scores():
    samples = torch.randn(4, 5)
    with pytest.raises(ValueError, match=r"shape \(S, N\)"):
        greedy_scores(torch.randn(5))
    with pytest.raises(ValueError, match="sample 1, candidate 2"):
        greedy_scores(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, math.nan]]))
    with pytest.raises(IndexError, match=r"\[0, 5\)"):
        q_expected_improvement(samples, torch.tensor([7]), 0.0)
