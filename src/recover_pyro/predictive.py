"""Vectorised posterior predictive of a Bayesian regression model.

All ``S`` weight samples are drawn from the guide at once (``(S, *shape)`` per site) and the predictor runs
once per chunk of candidates with these batched weights (sites fixed by ``poutine.condition``): no Python
loop over samples. Non-Bayesian layers before the first Bayesian one run once, unbatched, and
:class:`~recover_pyro.models.predictor.RecoverPredictor` computes its per-drug part once per unique
(drug, cell line) in a chunk.

When every Bayesian site is in the head of a predictor that splits as ``forward = head(trunk(...))``
(the default Bayesian-head RECOVER net), the deterministic trunk output ``z`` ``(N, K)`` is computed once,
in chunks ``S`` times larger (it holds no sample dimension), and only the head runs per sample:
``(N, K) -> (S, N)``. The result is the same function, evaluated with fewer, larger matrix products.
"""

from __future__ import annotations

import torch
from pyro import poutine
from torch import Tensor

from recover_pyro.data.screen import Pairs
from recover_pyro.guides import WeightGuide
from recover_pyro.models.bayesian import BayesianRegression, local_params

HEAD_PREFIX = "predictor.head_layers."
# The head's sample-batched activations (S, n, H) take ~3 K r / H (48 for the default net) times less memory
# per candidate than the (S, n, K, r) products of a Bayesian merge that ``chunk_size`` is sized for; chunks 8x
# larger stay well inside that bound and make the batched GEMMs about twice as fast on CPU.
HEAD_CHUNK_FACTOR = 8


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
            merge layer Bayesian, :class:`RecoverPredictor` holds about ``3 * S * chunk_size * K * r`` floats;
            with a Bayesian head only, see :func:`_head_predictive`.
        generator: RNG for the weight samples (default: torch's global RNG).
    """
    if num_samples < 1 or chunk_size < 1:
        raise ValueError(f"sample_predictive: need num_samples >= 1 and chunk_size >= 1, "
                         f"got {num_samples}, {chunk_size}")
    with torch.no_grad():
        weights = guide.sample_weights(num_samples, generator=generator)
        if _bayesian_head_only(model):
            parts = _head_predictive(model, weights, pairs, num_samples, chunk_size)
        else:
            parts = [model.mean_function(weights, chunk.drug_a, chunk.drug_b, chunk.cell)
                     for chunk in _chunks(pairs, chunk_size)]
    if not parts:
        dtype = next(iter(weights.values())).dtype
        return torch.zeros(num_samples, 0, dtype=dtype)
    return torch.cat([f.expand(num_samples, -1) for f in parts], dim=-1)


def _chunks(pairs: Pairs, size: int) -> list[Pairs]:
    return [pairs[i:i + size] for i in range(0, len(pairs), size)]


def _bayesian_head_only(model: BayesianRegression) -> bool:
    """Whether the predictor splits into ``trunk`` / ``head`` and every Bayesian site is in its head."""
    predictor = model.predictor
    return (callable(getattr(predictor, "trunk", None)) and callable(getattr(predictor, "head", None))
            and all(name.startswith(HEAD_PREFIX) for name in model.sites))


def _head_predictive(model: BayesianRegression, weights: dict[str, Tensor], pairs: Pairs, num_samples: int,
                     chunk_size: int) -> list[Tensor]:
    """``(S, n)`` chunks of ``f``: the deterministic trunk ``z`` ``(N, K)`` once, then the head per sample.

    The trunk runs in chunks of ``S * chunk_size`` candidates (unbatched, it holds no sample dimension), the
    head in chunks of ``HEAD_CHUNK_FACTOR * chunk_size``.
    """
    predictor = model.predictor
    if not len(pairs):
        return []
    with local_params():
        z = torch.cat([predictor.trunk(chunk.drug_a, chunk.drug_b, chunk.cell)
                       for chunk in _chunks(pairs, num_samples * chunk_size)])
        head = poutine.condition(predictor.head, data=weights)
        step = HEAD_CHUNK_FACTOR * chunk_size
        return [head(z[i:i + step], pairs.cell[i:i + step]) for i in range(0, len(pairs), step)]
