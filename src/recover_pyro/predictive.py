"""Vectorised posterior predictive of a Bayesian regression model.

All ``S`` weight samples are drawn from the guide at once (``(S, *shape)`` per site) and the predictor runs
once per chunk of candidates with these batched weights (sites fixed by ``poutine.condition``): no Python
loop over samples. Non-Bayesian layers before the first Bayesian one run once, unbatched, and
:class:`~recover_pyro.models.predictor.RecoverPredictor` computes its per-drug part once per unique
(drug, cell line) in a chunk.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recover_pyro.data.screen import Pairs
from recover_pyro.guides import WeightGuide
from recover_pyro.models.bayesian import BayesianRegression


def sample_predictive(
    model: BayesianRegression,
    guide: WeightGuide,
    pairs: Pairs,
    num_samples: int,
    chunk_size: int = 512,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``(S, N)`` samples of the mean function ``f`` (model scale) at ``pairs``.

    Args:
        model, guide: a fitted (model, guide) pair.
        pairs: ``N`` candidates (``y`` is ignored).
        num_samples: ``S`` joint weight samples; sample ``s`` uses the same weights for every candidate.
        chunk_size: candidates per forward pass (bounds memory; results do not depend on it). With the
            merge layer Bayesian, :class:`RecoverPredictor` holds about ``3 * S * chunk_size * K * r`` floats.
        generator: RNG for the weight samples (default: torch's global RNG).
    """
    if num_samples < 1 or chunk_size < 1:
        raise ValueError(f"sample_predictive: need num_samples >= 1 and chunk_size >= 1, "
                         f"got {num_samples}, {chunk_size}")
    with torch.no_grad():
        weights = guide.sample_weights(num_samples, generator=generator)
        parts = [model.mean_function(weights, chunk.drug_a, chunk.drug_b, chunk.cell)
                 for chunk in (pairs[i:i + chunk_size] for i in range(0, len(pairs), chunk_size))]
    if not parts:
        dtype = next(iter(weights.values())).dtype
        return torch.zeros(num_samples, 0, dtype=dtype)
    return torch.cat([f.expand(num_samples, -1) for f in parts], dim=-1)
