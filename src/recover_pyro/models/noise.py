"""One observation-noise convention for every model, and the held-out split it is estimated on.

A model's predictive is its posterior samples :math:`f_s` (posterior samples, ensemble members or dropout
masks) plus observation noise :math:`\\sigma\\,\\varepsilon` with :math:`\\varepsilon` a standard Student-t
with :math:`\\nu` degrees of freedom (:math:`\\nu = \\infty`: Gaussian). Every model estimates
:math:`(\\sigma, \\nu)` the same way, on held-out experiments (the validation set, or ``holdout`` of the
training set that the model sets aside when it is given none, as RECOVER does):

* with at least :data:`MIN_HOLDOUT_TAILS` held-out experiments, by maximum held-out likelihood of the
  moment-matched predictive (:func:`heldout_noise`): for each :math:`\\nu` of :data:`DF_GRID` the best
  :math:`\\sigma`, then the best pair. Measured synergy scores are heavy-tailed (O'Neil Bliss residuals have
  excess kurtosis ~20): a Gaussian whose variance matches them is too wide in the bulk and too narrow in the
  tails (its 90 % intervals covered 0.95-0.97 of unseen-drug test pairs), and :math:`\\nu = \\infty` stays
  in the grid for residuals that are Gaussian;
* with fewer (campaign rounds with a few dozen experiments, where tails cannot be estimated) Gaussian, by
  moments:

  .. math:: \\hat\\sigma^2 = \\max\\Big(\\tfrac1M \\sum_m \\big[(y_m - \\bar f_m)^2 - Var[f_m]\\big],\\;
            \\hat\\sigma^2_{train}\\Big)

  the held-out squared error of the predictive mean that the epistemic variance does not already explain
  (so the epistemic part is not counted twice), and never below the model's own training estimate
  :math:`\\hat\\sigma^2_{train}` (a BNN's likelihood scale, a network's training residual variance), which
  keeps a small held-out set from driving the noise to zero.

The epistemic part is never counted twice: the moment-matched predictive of candidate :math:`m` is a
Student-t with location :math:`\\bar f_m` and variance :math:`Var[f_m] + \\sigma^2 \\nu / (\\nu - 2)`. So the
fitted :math:`(\\sigma, \\nu)` are those of that predictive: where the epistemic spread is large against the noise,
:math:`\\nu` also absorbs its shape (posterior samples are not Student-t), and ``noise_df`` / the aleatoric sd are
the convention's values rather than the measurement noise's own. Draws (coverage, CRPS) add the fitted noise to
each posterior sample. No floor applies above :data:`MIN_HOLDOUT_TAILS` held-out experiments: an over-dispersed
posterior can drive :math:`\\sigma` towards 0, which is then what the held-out data support.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize, stats
from torch import Tensor

from recover_pyro.data.screen import Pairs

# Below this many training experiments nothing is held out: a held-out estimate from 1-2 points is noise.
MIN_HOLDOUT_TRAIN = 10
# Below this many held-out experiments the tails (nu) are not estimated: the noise is Gaussian, by moments.
MIN_HOLDOUT_TAILS = 100
# Degrees of freedom the held-out fit chooses among; all > 2, so every predictive has a finite variance.
DF_GRID: tuple[float, ...] = (2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0, math.inf)


@dataclass(frozen=True)
class Noise:
    """Observation noise :math:`\\sigma\\,\\varepsilon`, :math:`\\varepsilon \\sim t_\\nu` (``df = inf``:
    Gaussian). ``scale`` is :math:`\\sigma` on the scale of the targets it was fitted on."""

    scale: float
    df: float = math.inf

    @property
    def variance(self) -> float:
        """:math:`\\sigma^2 \\nu / (\\nu - 2)` (:math:`\\sigma^2` for a Gaussian)."""
        return self.scale**2 * variance_factor(self.df)


def variance_factor(df: float) -> float:
    """Variance of a standard Student-t with ``df`` (> 2) degrees of freedom, ``df / (df - 2)``; 1 at inf."""
    if not df > 2:
        raise ValueError(f"noise degrees of freedom must exceed 2 (finite variance), got {df}")
    return 1.0 if math.isinf(df) else df / (df - 2.0)


def holdout_split(train: Pairs, fraction: float, generator: torch.Generator) -> tuple[Pairs, Pairs | None]:
    """Set aside ``ceil(fraction * n)`` random experiments of ``train`` (none when ``fraction == 0`` or
    ``n < MIN_HOLDOUT_TRAIN``). Returns ``(rest, held_out)``; the draw comes from ``generator`` (CPU)."""
    n = len(train)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout must lie in [0, 1), got {fraction}")
    if fraction == 0.0 or n < MIN_HOLDOUT_TRAIN:
        return train, None
    n_out = max(1, int(-(-fraction * n // 1)))
    perm = torch.randperm(n, generator=generator).to(train.drug_a.device)
    return train[perm[n_out:]], train[perm[:n_out]]


def heldout_noise_variance(f: Tensor, y: Tensor, train_variance: float) -> float:
    """:math:`\\hat\\sigma^2` of the module docstring (model scale).

    Args:
        f: ``(S, M)`` posterior samples of the mean function at the held-out experiments.
        y: ``(M,)`` their targets.
        train_variance: the model's own training estimate :math:`\\hat\\sigma^2_{train}` (the floor).
    """
    mean = f.mean(0)
    epistemic = f.var(0, unbiased=False)
    excess = float(((y - mean).pow(2) - epistemic).mean())
    return max(excess, float(train_variance))


def residual_noise(train_mean: Tensor, y_train: Tensor, f_val: Tensor | None, y_val: Tensor | None) -> Noise:
    """The convention for a model whose own training estimate is its training residual variance (a network, an
    ensemble, gradient-boosted trees): :func:`heldout_noise` of the held-out samples ``f_val`` ``(S, M)``
    against ``y_val`` ``(M,)``, with the residual variance of ``train_mean`` ``(N,)`` against ``y_train`` as
    the Gaussian floor; without held-out data (``f_val`` None) a Gaussian of that residual variance."""
    train_var = float((train_mean - y_train).pow(2).mean())
    if f_val is None or y_val is None:
        return Noise(train_var**0.5)
    return heldout_noise(f_val, y_val, train_var)


def student_t_logpdf(y: np.ndarray, mean: np.ndarray, var: np.ndarray, df: float) -> np.ndarray:
    """``(M,)`` log density of ``y`` under the Student-t with ``df`` (> 2; ``inf``: Gaussian) degrees of freedom,
    location ``mean`` and variance ``var`` (scale :math:`\\sqrt{var\\,(\\nu - 2)/\\nu}`)."""
    if math.isinf(df):
        return stats.norm.logpdf(y, mean, np.sqrt(var))
    return stats.t.logpdf(y, df, mean, np.sqrt(var / variance_factor(df)))


def moment_matched_logpdf(y: np.ndarray, mean: np.ndarray, epistemic_var: np.ndarray, noise: Noise) -> np.ndarray:
    """``(M,)`` log density of ``y`` under the moment-matched predictive: a Student-t (``noise.df``) with
    location ``mean`` and variance ``epistemic_var + noise.variance``."""
    return student_t_logpdf(y, mean, epistemic_var + noise.variance, noise.df)


def heldout_noise(f: Tensor, y: Tensor, train_variance: float) -> Noise:
    """:math:`(\\hat\\sigma, \\hat\\nu)` of the module docstring (model scale).

    With ``M >= MIN_HOLDOUT_TAILS``: for every :math:`\\nu` in :data:`DF_GRID`,
    :math:`\\hat\\sigma(\\nu) = \\arg\\max_\\sigma \\sum_m \\log p_\\nu(y_m \\mid \\bar f_m, Var[f_m], \\sigma)`
    (bounded scalar search on :math:`\\log\\sigma`), then the :math:`\\nu` with the highest held-out
    likelihood; ``train_variance`` is not used (no floor is needed with this many held-out experiments).
    Otherwise a Gaussian by :func:`heldout_noise_variance`.

    Args:
        f: ``(S, M)`` posterior samples of the mean function at the held-out experiments.
        y: ``(M,)`` their targets.
        train_variance: the model's own training estimate :math:`\\hat\\sigma^2_{train}` (the Gaussian floor).
    """
    if f.shape[-1] < MIN_HOLDOUT_TAILS:
        return Noise(heldout_noise_variance(f, y, train_variance) ** 0.5)
    f_np = f.detach().double().cpu().numpy()
    y_np = y.detach().double().cpu().numpy()
    mean, epistemic = f_np.mean(0), f_np.var(0)
    rms = max(float(np.sqrt(((y_np - mean) ** 2).mean())), 1e-12)
    best: tuple[float, Noise] | None = None
    for df in DF_GRID:

        def nll(log_scale: float, df: float = df) -> float:
            return -float(moment_matched_logpdf(y_np, mean, epistemic, Noise(math.exp(log_scale), df)).mean())

        # sigma lies below the residual RMS (the epistemic part and heavy tails only shrink it); e^-9 below it
        # is a noise-free fit for any practical purpose.
        found = optimize.minimize_scalar(nll, bounds=(math.log(rms) - 9.0, math.log(rms) + 1.0), method="bounded")
        if best is None or found.fun < best[0]:
            best = (float(found.fun), Noise(math.exp(float(found.x)), df))
    assert best is not None
    return best[1]
