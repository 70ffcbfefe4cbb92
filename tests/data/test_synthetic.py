import numpy as np
import pandas as pd
import pytest
from scipy.stats import skew

from recover_pyro.data.featurize import featurize
from recover_pyro.data.splits import random_split, unseen_drug_split
from recover_pyro.data.synthetic import make_synthetic_screen, synthetic_landscape


@pytest.fixture(scope="module")
def screen():
    return make_synthetic_screen(seed=0)


def test_shape_and_columns(screen):
    assert len(screen) == 40 * 39 // 2 * 3
    assert (screen.n_drugs, screen.n_cell_lines) == (40, 3)
    assert screen.score_columns == ("synergy",)
    assert "synergy_true" in screen.experiments
    exp = screen.experiments
    assert (exp["drug_a"] < exp["drug_b"]).all()
    assert not exp.duplicated(["drug_a", "drug_b", "cell_line"]).any()
    assert (screen.drugs["smiles"] == "").all()
    assert screen.drug_features.shape == (40, 128)
    assert set(np.unique(screen.drug_features.to_numpy())) == {0, 1}
    assert not screen.drug_features.duplicated().any()
    assert screen.cell_features.shape == (3, 16)
    # Every unordered pair of distinct drugs in every cell line: the screen's own candidate grid.
    grid = screen.all_candidates().sort_values(["drug_a", "drug_b", "cell_line"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(grid, exp[["drug_a", "drug_b", "cell_line"]])


def test_deterministic_per_seed():
    a, b = make_synthetic_screen(seed=3), make_synthetic_screen(seed=3)
    pd.testing.assert_frame_equal(a.experiments, b.experiments)
    pd.testing.assert_frame_equal(a.drug_features, b.drug_features)
    pd.testing.assert_frame_equal(a.cell_features, b.cell_features)
    c = make_synthetic_screen(seed=4)
    assert not np.allclose(a.experiments["synergy"], c.experiments["synergy"])


def test_landscape_is_symmetric_and_matches_the_screen(screen):
    land = synthetic_landscape(seed=0)
    np.testing.assert_array_equal(land.truth, land.truth.transpose(0, 2, 1))
    p = screen.to_pairs()
    a, b, c = p.drug_a.numpy(), p.drug_b.numpy(), p.cell.numpy()
    np.testing.assert_array_equal(land(a, b, c), land(b, a, c))
    np.testing.assert_allclose(land(a, b, c), screen.experiments["synergy_true"])


def test_scale_noise_and_heavy_upper_tail(screen):
    truth = screen.experiments["synergy_true"].to_numpy()
    y = screen.experiments["synergy"].to_numpy()
    # The noiseless grid is standardised to ALMANAC-like location and scale exactly.
    assert truth.mean() == pytest.approx(-20.0)
    assert truth.std() == pytest.approx(40.0)
    # noise_sd is in units of scale: 0.3 * 40 = 12.
    assert (y - truth).std() == pytest.approx(12.0, rel=0.1)
    assert skew(truth) > 1.0
    assert np.percentile(truth, 99) - np.median(truth) > 3 * truth.std()
    assert truth.max() > 200
    # Without the tail transform the marginal is Gaussian (normal scores): no skew.
    gaussian = make_synthetic_screen(seed=0, tail=0.0).experiments["synergy_true"].to_numpy()
    assert abs(skew(gaussian)) < 0.1


def test_partial_measurement_is_a_subset_of_the_full_screen(screen):
    part = make_synthetic_screen(seed=0, fraction_measured=0.25)
    assert len(part) == round(0.25 * len(screen))
    assert part.n_drugs == 40 and part.n_cell_lines == 3
    keys = ["drug_a", "drug_b", "cell_line"]
    merged = part.experiments.merge(screen.experiments, on=keys, suffixes=("", "_full"))
    assert len(merged) == len(part)
    np.testing.assert_array_equal(merged["synergy"], merged["synergy_full"])
    np.testing.assert_array_equal(merged["synergy_true"], merged["synergy_true_full"])


def test_custom_score_name_and_invalid_arguments():
    s = make_synthetic_screen(n_drugs=6, n_cell_lines=1, seed=1, score_name="bliss")
    assert s.score_columns == ("bliss",) and "bliss_true" in s.experiments
    assert len(s) == 15
    with pytest.raises(ValueError, match="fraction_measured"):
        make_synthetic_screen(fraction_measured=0.0)
    with pytest.raises(ValueError, match="distinct"):
        make_synthetic_screen(n_drugs=40, n_bits=4, density=0.1)


def test_featurize_uses_the_precomputed_drug_features(screen):
    feats = featurize(screen, cell="expression", cache_dir=None)
    bits = screen.drug_features.to_numpy(dtype=np.float32)
    np.testing.assert_array_equal(feats.drug[:, :128].numpy(), bits)
    np.testing.assert_array_equal(feats.drug[:, 128:].numpy(), np.eye(40))
    assert feats.cell.shape == (3, 16)


def _ridge_r2(
    x: np.ndarray, y: np.ndarray, truth: np.ndarray, train: np.ndarray, test: np.ndarray, alpha: float = 10.0
) -> float:
    """Closed-form ridge on ``x`` (intercept = train mean); R^2 of predicting the noiseless ``truth``."""
    mu = y[train].mean()
    xt = x[train]
    w = np.linalg.solve(xt.T @ xt + alpha * np.eye(x.shape[1]), xt.T @ (y[train] - mu))
    pred = x[test] @ w + mu
    return 1 - ((truth[test] - pred) ** 2).mean() / ((truth[test] - mu) ** 2).mean()


def _kernel_ridge_r2(
    k: np.ndarray, y: np.ndarray, truth: np.ndarray, train: np.ndarray, test: np.ndarray, alpha: float = 10.0
) -> float:
    mu = y[train].mean()
    coef = np.linalg.solve(k[np.ix_(train, train)] + alpha * np.eye(len(train)), y[train] - mu)
    pred = k[np.ix_(test, train)] @ coef + mu
    return 1 - ((truth[test] - pred) ** 2).mean() / ((truth[test] - mu) ** 2).mean()


@pytest.mark.parametrize("kind", ["random", "unseen_drug"])
def test_landscape_is_learnable_from_features(screen, kind):
    x = screen.drug_features.to_numpy(dtype=float)
    p = screen.to_pairs()
    a, b, c = p.drug_a.numpy(), p.drug_b.numpy(), p.cell.numpy()
    y = p.y.numpy().astype(float)
    truth = screen.experiments["synergy_true"].to_numpy()
    split = random_split(screen, seed=0) if kind == "random" else unseen_drug_split(screen, n_test_drugs=4, seed=0)
    train, test = np.concatenate([split.train, split.val]), split.test

    # Additive drug effects: a linear ridge on symmetric pair features (bit sums) + cell one-hot.
    pair_x = np.hstack([x[a] + x[b], np.eye(3)[c]])
    linear = _ridge_r2(pair_x, y, truth, train, test)
    assert linear > 0.15

    # Pairwise interactions: kernel ridge with a symmetrised product kernel over the two drugs, modulated
    # by the cell line, plus the additive kernel.
    kd = x @ x.T
    same_cell = (c[:, None] == c[None, :]).astype(float)
    k_pair = kd[np.ix_(a, a)] * kd[np.ix_(b, b)] + kd[np.ix_(a, b)] * kd[np.ix_(b, a)]
    k_add = kd[np.ix_(a, a)] + kd[np.ix_(b, b)] + kd[np.ix_(a, b)] + kd[np.ix_(b, a)]
    kernel = _kernel_ridge_r2(k_pair * (1 + same_cell) + k_add, y, truth, train, test)
    assert kernel > 0.5
    if kind == "random":
        assert kernel > linear + 0.2  # the interaction part is real and learnable
