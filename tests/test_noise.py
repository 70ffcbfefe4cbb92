import pytest
import torch

from recover_pyro.data.screen import Pairs
from recover_pyro.models.noise import MIN_HOLDOUT_TRAIN, heldout_noise_variance, holdout_split


def pairs(n: int) -> Pairs:
    i = torch.arange(n)
    return Pairs(i, i, i, i.float())


def test_holdout_split_is_a_seeded_partition():
    rest, out = holdout_split(pairs(95), 0.1, torch.Generator().manual_seed(0))
    assert len(out) == 10 and len(rest) == 85  # ceil(9.5)
    assert sorted(torch.cat([rest.drug_a, out.drug_a]).tolist()) == list(range(95))
    again, out_again = holdout_split(pairs(95), 0.1, torch.Generator().manual_seed(0))
    assert torch.equal(out.drug_a, out_again.drug_a)
    assert holdout_split(pairs(MIN_HOLDOUT_TRAIN - 1), 0.1, torch.Generator())[1] is None
    assert holdout_split(pairs(50), 0.0, torch.Generator())[1] is None
    with pytest.raises(ValueError, match="holdout"):
        holdout_split(pairs(50), 1.0, torch.Generator())


def test_noise_is_the_heldout_error_not_explained_by_the_epistemic_spread():
    """A calibrated posterior: the truth and the samples f are draws of N(mu, v), and y = truth + N(0, s^2).
    The held-out squared error of the mean is ~ s^2 + v, which the old convention (validation RMS plus the
    spread on top) took for the noise; the estimate must return s^2 (up to 2 v / S)."""
    g = torch.Generator().manual_seed(0)
    m, samples, s, v = 20000, 400, 0.5, 0.8**2
    mu = torch.randn(m, generator=g)
    truth = mu + v**0.5 * torch.randn(m, generator=g)
    f = mu + v**0.5 * torch.randn(samples, m, generator=g)
    y = truth + s * torch.randn(m, generator=g)
    assert float((y - f.mean(0)).pow(2).mean()) == pytest.approx(s**2 + v, rel=0.05)
    assert heldout_noise_variance(f, y, train_variance=0.0) == pytest.approx(s**2, abs=0.03)


def test_noise_estimate_closed_form_and_floor():
    f = torch.tensor([[1.0, 2.0], [3.0, 2.0]])  # means (2, 2), population variances (1, 0)
    y = torch.tensor([4.0, 2.0])  # squared errors (4, 0)
    assert heldout_noise_variance(f, y, train_variance=0.0) == pytest.approx(((4 - 1) + (0 - 0)) / 2)
    assert heldout_noise_variance(f, y, train_variance=2.0) == pytest.approx(2.0)  # never below training
