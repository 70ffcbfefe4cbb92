import math

import numpy as np
import pytest
import torch
from scipy import stats

from recover_pyro import metrics
from recover_pyro.records.plots import plot_calibration
from recover_pyro.models.base import PredictiveSamples


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def gaussian_crps(y, mu, s):
    """Closed form CRPS(N(mu, s^2), y) = s (z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi))."""
    z = (y - mu) / s
    return s * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi))


def test_correlations_match_scipy(rng):
    y = rng.normal(size=200)
    pred = y + rng.normal(size=200)
    assert metrics.pearson(y, pred) == pytest.approx(stats.pearsonr(y, pred)[0], abs=1e-12)
    assert metrics.r2_pearson(y, pred) == pytest.approx(stats.pearsonr(y, pred)[0] ** 2, abs=1e-12)
    assert metrics.spearman(y, pred) == pytest.approx(stats.spearmanr(y, pred)[0], abs=1e-12)
    # torch input gives the same numbers
    assert metrics.spearman(torch.tensor(y), torch.tensor(pred)) == pytest.approx(stats.spearmanr(y, pred)[0])


def test_spearman_with_ties_matches_scipy(rng):
    y = rng.integers(0, 5, size=100).astype(float)
    pred = rng.integers(0, 7, size=100).astype(float) + y
    assert metrics.spearman(y, pred) == pytest.approx(stats.spearmanr(y, pred)[0], abs=1e-12)


def test_r2_of_perfect_and_affine_predictions(rng):
    y = rng.normal(size=50)
    assert metrics.r2_pearson(y, y) == pytest.approx(1.0)
    assert metrics.r2_score(y, y) == pytest.approx(1.0)
    assert metrics.mse(y, y) == 0.0
    # an affine distortion keeps the squared correlation at 1 but not the coefficient of determination
    assert metrics.r2_pearson(y, 2 * y + 3) == pytest.approx(1.0)
    assert metrics.r2_score(y, 2 * y + 3) < 0
    # predicting the mean gives R2 = 0
    assert metrics.r2_score(y, np.full_like(y, y.mean())) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(metrics.r2_pearson(y, np.zeros_like(y)))


def test_r2_score_closed_form(rng):
    y, pred = rng.normal(size=30), rng.normal(size=30)
    expected = 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
    assert metrics.r2_score(y, pred) == pytest.approx(expected)
    assert metrics.mse(y, pred) == pytest.approx(np.mean((y - pred) ** 2))


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="equal shape"):
        metrics.mse(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match=r"samples \(S, N\)"):
        metrics.crps_from_samples(np.zeros(3), np.zeros((5, 4)))


def test_gaussian_nll_closed_form(rng):
    y, mu, s = rng.normal(size=20), rng.normal(size=20), rng.uniform(0.5, 2, size=20)
    assert np.allclose(metrics.gaussian_nll(y, mu, s), -stats.norm.logpdf(y, mu, s))
    assert np.allclose(metrics.gaussian_nll(y, mu, 1.5), -stats.norm.logpdf(y, mu, 1.5))
    assert np.array_equal(metrics.gaussian_nll([1.0, 2.0], [1.0, 0.0], 0.0), [-np.inf, np.inf])


def test_crps_of_gaussian_samples_matches_closed_form(rng):
    n, s_draws = 40, 4000
    mu, s = rng.normal(size=n), rng.uniform(0.5, 3.0, size=n)
    y = mu + s * rng.normal(size=n) * 1.5
    samples = mu + s * rng.normal(size=(s_draws, n))
    crps = metrics.crps_from_samples(y, samples)
    assert crps.shape == (n,)
    assert np.allclose(crps, gaussian_crps(y, mu, s), atol=0.03 * s.max())


def test_crps_sorted_formula_equals_pairwise_energy_form(rng):
    y, samples = rng.normal(size=6), rng.normal(size=(9, 6))
    pairwise = np.abs(samples[:, None, :] - samples[None, :, :]).mean((0, 1))
    energy = np.abs(samples - y).mean(0) - 0.5 * pairwise
    assert np.allclose(metrics.crps_from_samples(y, samples), energy)
    # a point mass reduces CRPS to the absolute error
    assert np.allclose(metrics.crps_from_samples(y, np.tile(y + 1.0, (5, 1))), 1.0)


def test_coverage_of_calibrated_gaussian_is_nominal(rng):
    n = 4000
    mu, s = rng.normal(size=n), rng.uniform(0.5, 2.0, size=n)
    y = mu + s * rng.normal(size=n)
    samples = mu + s * rng.normal(size=(500, n))
    cover = metrics.central_interval_coverage(y, samples)
    assert set(cover) == {0.5, 0.9, 0.95}
    for level, observed in cover.items():
        assert observed == pytest.approx(level, abs=0.03)
    # intervals half as wide are overconfident
    narrow = metrics.central_interval_coverage(y, mu + 0.5 * (samples - mu))
    assert narrow[0.9] < 0.75


def test_calibration_curve_near_diagonal_and_plot(rng, tmp_path):
    n = 3000
    mu = rng.normal(size=n)
    y = mu + rng.normal(size=n)
    samples = mu + rng.normal(size=(400, n))
    expected, observed = metrics.calibration_curve(y, samples)
    assert expected.shape == observed.shape == (19,)
    assert np.allclose(expected, np.linspace(0.05, 0.95, 19))
    assert np.abs(observed - expected).max() < 0.04
    assert np.all(np.diff(observed) >= 0)
    path = plot_calibration(expected, observed, tmp_path / "plots" / "calibration.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_recall_at_top_k_hand_built():
    scores = np.arange(200, dtype=float)  # top 1% = indices 198, 199; top 5% = 190..199
    assert metrics.recall_at_top_k([199, 198, 3], scores, fraction=0.01) == 1.0
    assert metrics.recall_at_top_k([199, 5], scores, fraction=0.01) == 0.5
    assert metrics.recall_at_top_k([], scores, fraction=0.01) == 0.0
    assert metrics.recall_at_top_k([199, 199, 199], scores, fraction=0.01) == 0.5  # duplicates count once
    assert metrics.recall_at_top_k(list(range(195, 200)), scores, fraction=0.05) == 0.5
    # k = ceil(fraction * N): 1% of 50 is one candidate
    assert metrics.recall_at_top_k([49], np.arange(50.0), fraction=0.01) == 1.0
    # a found candidate tied with the k-th best counts
    tied = np.array([0.0, 5.0, 5.0, 1.0])
    assert metrics.recall_at_top_k([2], tied, fraction=0.25) == 1.0
    with pytest.raises(IndexError):
        metrics.recall_at_top_k([200], scores)
    with pytest.raises(ValueError):
        metrics.recall_at_top_k([1], scores, fraction=0.0)


def test_evaluate_on_calibrated_predictive(rng):
    n, s_draws, noise = 2000, 64, 0.5
    truth = rng.normal(size=n)
    # epistemic spread 0.3 around the truth, plus observation noise 0.5
    f = torch.tensor(truth + 0.3 * rng.normal(size=(1, n)) + 0.3 * rng.normal(size=(s_draws, n)))
    y = truth + noise * rng.normal(size=n)
    predictive = PredictiveSamples(f, torch.tensor(noise))
    out = metrics.evaluate(predictive, y, seed=1)
    assert set(out) == {
        "r2",
        "r2_sklearn",
        "spearman",
        "mse",
        "nll",
        "crps",
        "epistemic_sd",
        "aleatoric_sd",
        "epistemic_ratio",
        "sd_error_spearman",
        "noise_df",
        "coverage_50",
        "coverage_90",
        "coverage_95",
    }
    assert out["noise_df"] == math.inf
    assert out["epistemic_sd"] == pytest.approx(0.3, rel=0.05) and out["aleatoric_sd"] == pytest.approx(noise)
    assert out["epistemic_ratio"] == pytest.approx(out["epistemic_sd"] / noise)
    total_sd = math.sqrt(0.3**2 + noise**2)
    assert out["mse"] == pytest.approx(total_sd**2, rel=0.1)
    assert out["nll"] == pytest.approx(0.5 * math.log(2 * math.pi * math.e * total_sd**2), abs=0.05)
    # CRPS of a calibrated Gaussian: E = s / sqrt(pi)
    assert out["crps"] == pytest.approx(total_sd / math.sqrt(math.pi), rel=0.05)
    for level in (50, 90, 95):
        assert out[f"coverage_{level}"] == pytest.approx(level / 100, abs=0.04)
    assert out["r2"] == pytest.approx(metrics.r2_pearson(y, f.mean(0)))
    # seeded: the same numbers twice
    assert metrics.evaluate(predictive, y, seed=1) == out


def test_evaluate_with_student_t_noise_is_calibrated_and_scores_the_t_density(rng):
    """Measurements y = f + sigma * t_4 with a known f (no epistemic part): the draws are that Student-t (its
    quantiles give nominal coverage, where a Gaussian of equal variance over-covers at 50 %), ``aleatoric_sd``
    is its sd sigma * sqrt(nu / (nu - 2)), and ``nll`` its mean negative log density (closed form)."""
    n, sigma, df = 20000, 2.0, 4.0
    truth = rng.normal(size=n)
    y = truth + sigma * rng.standard_t(df, size=n)
    predictive = PredictiveSamples(torch.tensor(truth).expand(8, n), torch.tensor(sigma), df)
    out = metrics.evaluate(predictive, y, seed=3)
    assert out["noise_df"] == df and out["aleatoric_sd"] == pytest.approx(sigma * math.sqrt(2.0))
    for level in (50, 90, 95):
        assert out[f"coverage_{level}"] == pytest.approx(level / 100, abs=0.015)
    assert out["nll"] == pytest.approx(-stats.t.logpdf(y, df, truth, sigma).mean())
    gaussian = metrics.evaluate(PredictiveSamples(predictive.f, torch.tensor(sigma * math.sqrt(2.0))), y, seed=3)
    assert gaussian["coverage_50"] > 0.57 and gaussian["nll"] > out["nll"] + 0.05  # too wide in the bulk
    np.testing.assert_allclose(metrics.student_t_nll(y, truth, sigma, math.inf), metrics.gaussian_nll(y, truth, sigma))
    with pytest.raises(ValueError, match="degrees of freedom must exceed 2"):
        PredictiveSamples(predictive.f, torch.tensor(sigma), 2.0)


def test_evaluate_without_noise_is_overconfident(rng):
    n = 1000
    truth = rng.normal(size=n)
    y = truth + rng.normal(size=n)
    predictive = PredictiveSamples(torch.tensor(truth).expand(5, n), torch.tensor(0.0))
    out = metrics.evaluate(predictive, y)
    assert out["coverage_95"] < 0.05
    assert out["nll"] == math.inf
    assert out["crps"] == pytest.approx(np.abs(y - truth).mean())


def test_enrichment_over_random_interpolates_the_recall_curve():
    n, recall = [10, 20, 40], [0.1, 0.3, 0.5]
    # 15 % of a pool of 200 = 30 experiments: recall 0.4 halfway between 20 and 40, i.e. 0.4 / 0.15.
    assert metrics.enrichment_over_random(n, recall, 200, 0.15) == pytest.approx(0.4 / 0.15)
    assert metrics.enrichment_over_random(n, recall, 200, 0.1) == pytest.approx(0.3 / 0.1)
    # random's expected curve (recall = fraction explored) has enrichment 1 everywhere
    assert metrics.enrichment_over_random([10, 50, 100], [0.05, 0.25, 0.5], 200, 0.3) == pytest.approx(1.0)
    assert math.isnan(metrics.enrichment_over_random(n, recall, 200, 0.5))  # beyond the curve's end
    with pytest.raises(ValueError, match="increasing"):
        metrics.enrichment_over_random([20, 10], [0.1, 0.2], 200, 0.1)


def test_constant_inputs_give_nan_without_library_warnings() -> None:
    """scipy / sklearn warn (or return 0 / 1) on constant inputs; the wrappers return NaN silently."""
    import warnings

    y, flat = np.array([1.0, 2.0, 3.0]), np.full(3, 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(metrics.pearson(y, flat)) and math.isnan(metrics.spearman(flat, y))
        assert math.isnan(metrics.r2_score(flat, y)) and math.isnan(metrics.r2_score(flat, flat))
        assert np.array_equal(metrics.gaussian_nll([1.0, 2.0], [1.0, 0.0], 0.0), [-np.inf, np.inf])


def test_sd_error_spearman_ranks_errors_by_the_predictive_sd(rng):
    n = 5000
    sd = rng.uniform(0.1, 3.0, size=n)
    mean = rng.normal(size=n)
    y = mean + sd * rng.normal(size=n)  # each error drawn with the sd the model states: an informative sd
    informative = metrics.sd_error_spearman(y, mean, sd)
    # |e| = sd |z|: the rank correlation of sd with sd |z|, z standard normal; by simulation with 10^6 draws 0.573
    assert 0.5 < informative < 0.6
    shuffled = metrics.sd_error_spearman(y, mean, rng.permutation(sd))  # the same sds, unrelated to the errors
    assert abs(shuffled) < 0.05
    assert metrics.sd_error_spearman(y, mean, 2.0) == 0.0  # a constant sd ranks nothing
    assert math.isnan(metrics.sd_error_spearman(np.ones(3), np.zeros(3), [1.0, 2.0, 3.0]))  # equal errors


def test_sd_error_spearman_on_real_oneil_bliss_sees_cell_line_noise(data_root) -> None:
    """Real O'Neil Bliss scores vary far more in some cell lines than in others (residual sd 4-14 around the
    cell-line means). A predictive whose sd is each cell line's residual sd (fitted on 8,000 experiments) ranks
    the errors of the other 14,737; the same sds given to the wrong cell lines, or one sd for all, rank nothing.
    evaluate() reports the same value from posterior samples with that spread."""
    from recover_pyro.data.loaders import load_oneil

    pairs = load_oneil(data_root).to_pairs("bliss")
    y, cell = pairs.y.double(), pairs.cell
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    fit, test = perm[:8000], perm[8000:]
    n_cells = int(cell.max()) + 1
    count = torch.bincount(cell[fit], minlength=n_cells).double()
    means = torch.zeros(n_cells, dtype=torch.float64).index_add_(0, cell[fit], y[fit]) / count
    residual = (y[fit] - means[cell[fit]]) ** 2
    sds = (torch.zeros(n_cells, dtype=torch.float64).index_add_(0, cell[fit], residual) / count).sqrt()
    mean, sd = means[cell[test]], sds[cell[test]]
    informative = metrics.sd_error_spearman(y[test], mean, sd)
    assert informative > 0.1
    wrong_cells = sds[torch.randperm(n_cells, generator=torch.Generator().manual_seed(1))][cell[test]]
    assert abs(metrics.sd_error_spearman(y[test], mean, wrong_cells)) < 0.05
    assert metrics.sd_error_spearman(y[test], mean, float(sds.mean())) == 0.0
    f = mean + sd * torch.randn(200, len(mean), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    predictive = PredictiveSamples(f, torch.tensor(0.1, dtype=torch.float64))
    assert metrics.evaluate(predictive, y[test])["sd_error_spearman"] == pytest.approx(informative, abs=0.01)
