"""Accuracy, calibration and discovery metrics on the original target scale.

Every function takes torch tensors or numpy arrays (computed in float64 numpy) with shapes

* ``y``: ``(N,)`` observed targets of ``N`` candidates;
* ``pred`` / ``mean`` / ``std``: ``(N,)`` point predictions, predictive means and standard deviations;
* ``samples``: ``(S, N)`` predictive samples (``S`` draws per candidate).

Scalar metrics return a ``float``; the proper scoring rules (:func:`gaussian_nll`, :func:`student_t_nll`,
:func:`crps_from_samples`) return one score per candidate ``(N,)`` (lower is better; average for a score).
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import numpy as np
import scoringrules
import torch
from scipy import stats
from sklearn import metrics as sklearn_metrics

from recover_pyro.models.base import PredictiveSamples
from recover_pyro.models.noise import student_t_logpdf

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence[float]]
COVERAGE_LEVELS = (0.5, 0.9, 0.95)
CALIBRATION_LEVELS = tuple(np.round(np.linspace(0.05, 0.95, 19), 2))


# What an accuracy / calibration table summarises of :func:`evaluate` (scripts/benchmark_accuracy.py,
# scripts/paired_accuracy.py).
SUMMARY_METRICS = (
    "r2",
    "spearman",
    "nll",
    "crps",
    "coverage_90",
    "epistemic_sd",
    "aleatoric_sd",
    "sd_error_spearman",
)


def _np(x: ArrayLike | float) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _pair(y: ArrayLike, pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y, pred = _np(y), _np(pred)
    if y.ndim != 1 or pred.shape != y.shape:
        raise ValueError(f"expected y and predictions of equal shape (N,), got {y.shape} and {pred.shape}")
    return y, pred


def _samples(y: ArrayLike, samples: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y, samples = _np(y), _np(samples)
    if y.ndim != 1 or samples.ndim != 2 or samples.shape[1] != y.shape[0]:
        raise ValueError(f"expected y (N,) and samples (S, N), got {y.shape} and {samples.shape}")
    return y, samples


# --- accuracy ----------------------------------------------------------------------------------
# The numerics come from scipy / scikit-learn / scoringrules; these wrappers fix shapes, dtypes and the
# degenerate cases (constant inputs give NaN, without the libraries' warnings).
def pearson(y: ArrayLike, pred: ArrayLike) -> float:
    """Pearson correlation :math:`\\rho = \\mathrm{cov}(y, \\hat y) / (\\sigma_y \\sigma_{\\hat y})`
    (:func:`scipy.stats.pearsonr`); NaN if either is constant."""
    y, pred = _pair(y, pred)
    if _constant(y) or _constant(pred):
        return math.nan
    return float(stats.pearsonr(y, pred).statistic)


def r2_pearson(y: ArrayLike, pred: ArrayLike) -> float:
    """Squared Pearson correlation :math:`\\rho^2`, the "R2" RECOVER reports (invariant to affine
    miscalibration of ``pred``)."""
    return pearson(y, pred) ** 2


def r2_score(y: ArrayLike, pred: ArrayLike) -> float:
    """Coefficient of determination :math:`1 - \\sum (y - \\hat y)^2 / \\sum (y - \\bar y)^2`
    (:func:`sklearn.metrics.r2_score`; can be negative; NaN for constant ``y``)."""
    y, pred = _pair(y, pred)
    if _constant(y):
        return math.nan
    return float(sklearn_metrics.r2_score(y, pred))


def spearman(y: ArrayLike, pred: ArrayLike) -> float:
    """Spearman rank correlation (:func:`scipy.stats.spearmanr`: ties share their average rank); NaN if
    either input is constant."""
    y, pred = _pair(y, pred)
    if _constant(y) or _constant(pred):
        return math.nan
    return float(stats.spearmanr(y, pred).statistic)


def sd_error_spearman(y: ArrayLike, mean: ArrayLike, std: ArrayLike) -> float:
    """Spearman rank correlation between the predictive standard deviation ``std`` and the absolute error
    :math:`|y_n - \\bar f_n|` of the predictive mean: does the model know where it is wrong? (a ranking measure
    of uncertainty quality, as in Hirschfeld et al. 2020, J. Chem. Inf. Model. 60, 3770). Near 0 for an
    uninformative uncertainty, and exactly 0 when ``std`` is constant (a single network with a fixed noise
    ranks nothing: the expected value of an uninformative ranking, so models stay comparable); NaN only when
    every error is the same."""
    y, mean = _pair(y, mean)
    std = np.broadcast_to(_np(std), y.shape)
    if _constant(std) and not _constant(np.abs(y - mean)):
        return 0.0
    return spearman(std, np.abs(y - mean))


def mse(y: ArrayLike, pred: ArrayLike) -> float:
    """Mean squared error :math:`\\tfrac1N \\sum_n (y_n - \\hat y_n)^2`."""
    y, pred = _pair(y, pred)
    return float(((y - pred) ** 2).mean())


def _constant(x: np.ndarray) -> bool:
    return x.size < 2 or bool(np.all(x == x[0]))


# --- proper scoring rules ----------------------------------------------------------------------
def gaussian_nll(y: ArrayLike, mean: ArrayLike, std: ArrayLike | float) -> np.ndarray:
    """``(N,)`` negative log density of ``y`` under :math:`N(\\mu, \\sigma^2)` (the logarithmic score):
    :func:`student_t_nll` at ``df = inf``."""
    return student_t_nll(y, mean, std, math.inf)


def student_t_nll(y: ArrayLike, mean: ArrayLike, std: ArrayLike | float, df: float) -> np.ndarray:
    """``(N,)`` negative log density of ``y`` under the Student-t with ``df`` (> 2; ``inf``: Gaussian) degrees of
    freedom, location ``mean`` and standard deviation ``std`` (the density of
    :func:`recover_pyro.models.noise.student_t_logpdf`, which the noise is fitted with). ``std`` may be a scalar.

    A zero ``std`` is a point mass: ``+inf`` unless ``y == mean`` exactly (then ``-inf``).
    """
    y, mean = _pair(y, mean)
    std = np.broadcast_to(_np(std), y.shape)
    point = std == 0
    nll = -student_t_logpdf(y, mean, np.where(point, 1.0, std) ** 2, df)
    return np.where(point, np.where(y == mean, -np.inf, np.inf), nll)


def crps_from_samples(y: ArrayLike, samples: ArrayLike) -> np.ndarray:
    """``(N,)`` continuous ranked probability score of the empirical distribution of ``samples`` ``(S, N)``
    (:func:`scoringrules.crps_ensemble`).

    :math:`\\mathrm{CRPS} = E|X - y| - \\tfrac12 E|X - X'|` with :math:`X, X'` independent draws from the
    ``S`` samples: the empirical distribution's own CRPS, no finite-ensemble correction. The ``qd``
    (quantile decomposition) estimator computes exactly this in :math:`O(S \\log S)` per candidate; the
    pairwise ``nrg`` form gives the same numbers in :math:`O(S^2)`.
    """
    y, samples = _samples(y, samples)
    return np.asarray(scoringrules.crps_ensemble(y, samples, m_axis=0, estimator="qd"), dtype=np.float64)


# --- calibration -------------------------------------------------------------------------------
def _coverage(y: np.ndarray, samples: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """``(L,)`` fraction of ``y`` inside the central sample intervals
    :math:`[q_{(1-\\alpha)/2}, q_{(1+\\alpha)/2}]` (linearly interpolated quantiles, bounds included)."""
    if np.any((levels <= 0) | (levels >= 1)):
        raise ValueError(f"interval levels must lie in (0, 1), got {levels}")
    bounds = np.quantile(samples, np.concatenate([(1 - levels) / 2, (1 + levels) / 2]), axis=0)  # (2L, N)
    lo, hi = bounds[: len(levels)], bounds[len(levels) :]
    return ((lo <= y) & (y <= hi)).mean(1)


def central_interval_coverage(
    y: ArrayLike, samples: ArrayLike, levels: Sequence[float] = COVERAGE_LEVELS
) -> dict[float, float]:
    """Observed coverage of each nominal central interval level, ``{level: fraction of y inside}``."""
    y, samples = _samples(y, samples)
    levels = [float(level) for level in levels]
    return dict(zip(levels, map(float, _coverage(y, samples, np.asarray(levels)))))


def calibration_curve(
    y: ArrayLike, samples: ArrayLike, levels: ArrayLike = CALIBRATION_LEVELS
) -> tuple[np.ndarray, np.ndarray]:
    """``(expected, observed)``, both ``(L,)``: nominal central-interval levels and observed coverage.

    A calibrated predictive lies on the diagonal; below it the intervals are too narrow (overconfident).
    """
    y, samples = _samples(y, samples)
    expected = _np(levels)
    return expected, _coverage(y, samples, expected)


# --- discovery ---------------------------------------------------------------------------------
def recall_at_top_k(found_indices: ArrayLike, true_scores: ArrayLike, fraction: float = 0.01) -> float:
    """Fraction of the pool's top candidates that were found.

    The top set holds the :math:`k = \\lceil \\text{fraction} \\cdot N \\rceil` highest ``true_scores``
    ``(N,)``. A found candidate counts as a hit when its score is at least the ``k``-th largest (so ties at
    the boundary cannot be missed by index order); recall is ``min(hits, k) / k``. ``found_indices`` are
    pool indices (duplicates count once).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    scores = _np(true_scores)
    found = np.unique(np.asarray(found_indices, dtype=np.int64))
    if found.size and (found.min() < 0 or found.max() >= len(scores)):
        raise IndexError(f"found indices must lie in [0, {len(scores)}), got range [{found.min()}, {found.max()}]")
    k = math.ceil(fraction * len(scores))
    threshold = np.partition(scores, len(scores) - k)[len(scores) - k]
    hits = int((scores[found] >= threshold).sum())
    return min(hits, k) / k


def enrichment_over_random(n_measured: ArrayLike, recall: ArrayLike, pool_size: int, explored: float) -> float:
    r"""Recall at a fraction ``explored`` of the pool, divided by random acquisition's expected recall.

    A campaign's recall curve (``recall`` after ``n_measured`` experiments, increasing ``n_measured``) is
    interpolated linearly at :math:`n = \text{explored} \cdot N`; random picks find, in expectation, the
    fraction ``explored`` of any top set, so the result is :math:`\text{recall}(n) / \text{explored}` (1 = no
    better than random). NaN where ``n`` lies outside the curve.
    """
    n, r = _np(n_measured), _np(recall)
    if not 0.0 < explored <= 1.0:
        raise ValueError(f"explored must lie in (0, 1], got {explored}")
    if n.shape != r.shape or n.ndim != 1 or n.size == 0 or np.any(np.diff(n) <= 0):
        raise ValueError("n_measured and recall must be equal-length 1-D curves with increasing n_measured")
    target = explored * pool_size
    if not n[0] <= target <= n[-1]:
        return float("nan")
    return float(np.interp(target, n, r)) / explored


# --- comparisons -------------------------------------------------------------------------------
def t_interval(x: ArrayLike, level: float = 0.95) -> tuple[float, float]:
    """Student-t ``level`` interval of the mean of ``x`` ``(n,)`` (e.g. paired differences between two models);
    NaN bounds for fewer than 2 values."""
    x = _np(x)
    if len(x) < 2:
        return float("nan"), float("nan")
    low, high = stats.t.interval(level, len(x) - 1, loc=x.mean(), scale=x.std(ddof=1) / np.sqrt(len(x)))
    return float(low), float(high)


# --- all at once -------------------------------------------------------------------------------
def measurement_draws(predictive: PredictiveSamples, *, seed: int = 0, min_samples: int = 256) -> torch.Tensor:
    """``(S', N)`` draws of a new measurement, ``f`` plus noise (:meth:`PredictiveSamples.y`, seeded by
    ``seed``), with the ``S`` rows of ``f`` reused with fresh noise until ``S' >= min_samples`` (small
    ensembles otherwise give coarse quantiles). :func:`evaluate` and the calibration plot of ``train`` use these same draws."""
    predictive = predictive.cpu()  # the same draws whichever device the model scored on
    generator = torch.Generator().manual_seed(seed)
    return torch.cat([predictive.y(generator) for _ in range(math.ceil(min_samples / predictive.num_samples))])


def evaluate(predictive: PredictiveSamples, y: ArrayLike, *, seed: int = 0, min_samples: int = 256) -> dict[str, float]:
    """All scalar metrics of a predictive against observations ``y`` ``(N,)``, original scale.

    * ``r2`` (squared Pearson, RECOVER's R2), ``r2_sklearn``, ``spearman``, ``mse``: of the predictive
      mean;
    * ``nll``: mean :func:`student_t_nll` of the moment-matched predictive: the noise's family (Student-t
      with ``noise_df``, Gaussian at ``inf``) with mean ``mean`` and variance ``Var[f] + noise variance``;
    * ``crps``, ``coverage_50/90/95``: from :func:`measurement_draws` (``seed``, ``min_samples``);
    * ``epistemic_sd``, ``aleatoric_sd``: means over candidates of the two parts of the predictive standard
      deviation, and ``epistemic_ratio`` = their ratio (how much of the uncertainty is the model's own);
    * ``sd_error_spearman``: :func:`sd_error_spearman` of the predictive sd (0 without an epistemic part);
    * ``noise_df``: the noise's degrees of freedom (``inf``, written as ``null`` in JSON: Gaussian).
    """
    y_np = _np(y)
    predictive = predictive.cpu()  # the same draws whichever device the model scored on
    if predictive.f.ndim != 2 or predictive.f.shape[1] != len(y_np):
        raise ValueError(f"predictive f {tuple(predictive.f.shape)} does not match y {y_np.shape}")
    mean, sd = predictive.mean, predictive.std
    draws = measurement_draws(predictive, seed=seed, min_samples=min_samples)
    epistemic, aleatoric = float(predictive.epistemic_std.mean()), float(predictive.aleatoric_std.mean())
    metrics = {
        "r2": r2_pearson(y_np, mean),
        "r2_sklearn": r2_score(y_np, mean),
        "spearman": spearman(y_np, mean),
        "mse": mse(y_np, mean),
        "nll": float(student_t_nll(y_np, mean, sd, predictive.noise_df).mean()),
        "crps": float(crps_from_samples(y_np, draws).mean()),
        "epistemic_sd": epistemic,
        "aleatoric_sd": aleatoric,
        "epistemic_ratio": epistemic / aleatoric if aleatoric > 0 else math.inf,
        "sd_error_spearman": sd_error_spearman(y_np, mean, sd),
        "noise_df": float(predictive.noise_df),
    }
    for level, cover in central_interval_coverage(y_np, draws, COVERAGE_LEVELS).items():
        metrics[f"coverage_{round(100 * level)}"] = cover
    return metrics
