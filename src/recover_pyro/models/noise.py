"""One observation-noise convention for every model, and the held-out split it is estimated on.

A model's predictive variance is :math:`Var[f] + \\sigma^2`: its epistemic part :math:`Var[f]` (spread of the
posterior samples, ensemble members or dropout masks) plus the observation noise :math:`\\sigma^2`. Every model
estimates :math:`\\sigma^2` the same way, on held-out experiments (the validation set, or ``holdout`` of the
training set that the model sets aside when it is given none, as RECOVER does):

.. math:: \\hat\\sigma^2 = \\max\\Big(\\tfrac1M \\sum_m \\big[(y_m - \\bar f_m)^2 - Var[f_m]\\big],\\;
          \\hat\\sigma^2_{train}\\Big)

the held-out squared error of the predictive mean that the epistemic variance does not already explain (so
the epistemic part is not counted twice), and never below the model's own training estimate
:math:`\\hat\\sigma^2_{train}` (a BNN's likelihood scale, a network's training residual variance), which keeps
a small held-out set from driving the noise to zero.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recover_pyro.data.screen import Pairs

# Below this many training experiments nothing is held out: a held-out estimate from 1-2 points is noise.
MIN_HOLDOUT_TRAIN = 10


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
