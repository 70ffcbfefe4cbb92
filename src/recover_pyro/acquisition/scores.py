r"""Single-point acquisition scores and joint Monte-Carlo batch values.

Everything here is a pure function of posterior predictive samples ``samples`` of shape ``(S, N)``
(posterior samples x candidates, original target scale, higher = more synergistic):

* single-point scores ``(S, N) -> (N,)``: :func:`greedy_scores`, :func:`ucb_scores`, :func:`ei_scores`,
  :func:`pi_scores` (and the UCB schedule :func:`ucb_kappa`);
* joint Monte-Carlo values of a batch ``(S, N), (q,) -> ()``: :func:`q_expected_improvement`,
  :func:`q_probability_of_improvement`.

A Monte-Carlo utility :math:`u` maps sample values elementwise to improvements; the value of a batch
:math:`B` is :math:`\frac1S \sum_s u(\max_{j \in B} Y_{sj})` (BoTorch's ``monte_carlo.py`` convention).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

__all__ = [
    "Utility",
    "ei_scores",
    "greedy_scores",
    "pi_scores",
    "q_expected_improvement",
    "q_probability_of_improvement",
    "ucb_kappa",
    "ucb_scores",
]

Utility = Callable[[torch.Tensor], torch.Tensor]
"""A Monte-Carlo utility: maps sample values of any shape to improvements of the same shape, elementwise."""


# ---------------------------------------------------------------------------------------------------
# Input checks (shared by the batch builders and the strategies)
# ---------------------------------------------------------------------------------------------------


def _check_samples(samples: torch.Tensor) -> torch.Tensor:
    """``samples`` itself after checking it is a finite floating-point ``(S, N)`` tensor with ``S, N >= 1``."""
    if not isinstance(samples, torch.Tensor):
        raise TypeError(f"samples must be a torch.Tensor of shape (S, N), got {type(samples).__name__}")
    if samples.dim() != 2 or samples.shape[0] < 1 or samples.shape[1] < 1:
        raise ValueError(f"samples must have shape (S, N) with S, N >= 1, got {tuple(samples.shape)}")
    if not samples.is_floating_point():
        raise TypeError(f"samples must be floating point, got {samples.dtype}")
    if not torch.isfinite(samples).all():
        bad = (~torch.isfinite(samples)).nonzero()[0].tolist()
        raise ValueError(f"samples contain NaN or infinite values (first at sample {bad[0]}, candidate {bad[1]})")
    return samples


def _check_scalar(name: str, value: float | torch.Tensor) -> float:
    """``value`` as a finite Python float (``name`` is used in the error message)."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _check_q(q: int) -> int:
    """The batch size ``q`` as a positive ``int``."""
    if int(q) != q or q < 1:
        raise ValueError(f"batch size q must be a positive integer, got {q!r}")
    return int(q)


def _check_tau(tau: float | None) -> float | None:
    """``tau`` unchanged after checking it is ``None`` or a positive finite temperature."""
    if tau is not None and not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be None (indicator) or a positive temperature, got {tau!r}")
    return tau


def _check_batch_idx(batch_idx: torch.Tensor, n: int) -> torch.Tensor:
    """``batch_idx`` as a non-empty ``(q,)`` long tensor of indices in ``[0, n)``."""
    batch_idx = torch.as_tensor(batch_idx)
    if batch_idx.dim() != 1 or batch_idx.numel() == 0 or batch_idx.is_floating_point():
        raise ValueError(f"batch_idx must be a non-empty (q,) integer tensor, got shape {tuple(batch_idx.shape)}")
    if int(batch_idx.min()) < 0 or int(batch_idx.max()) >= n:
        raise IndexError(
            f"batch_idx must lie in [0, {n}), got values in [{int(batch_idx.min())}, {int(batch_idx.max())}]"
        )
    return batch_idx.long()


def _std(samples: torch.Tensor) -> torch.Tensor:
    """``(N,)`` unbiased standard deviation over the ``S`` samples of ``(S, N)`` ``samples``; zero when ``S == 1``."""
    return samples.std(0) if samples.shape[0] > 1 else torch.zeros_like(samples[0])


# ---------------------------------------------------------------------------------------------------
# Single-point scores, (S, N) -> (N,)
# ---------------------------------------------------------------------------------------------------


def greedy_scores(samples: torch.Tensor) -> torch.Tensor:
    """Posterior mean, :math:`\\hat\\mu_n = \\frac1S \\sum_s Y_{sn}`.

    Args:
        samples: ``(S, N)`` posterior predictive samples.

    Returns:
        ``(N,)`` scores.
    """
    return _check_samples(samples).mean(0)


def ucb_scores(samples: torch.Tensor, kappa: float) -> torch.Tensor:
    """Upper confidence bound, :math:`\\hat\\mu_n + \\kappa \\hat\\sigma_n`.

    :math:`\\hat\\sigma_n` is the unbiased sample standard deviation across the ``S`` samples (zero when
    ``S == 1``); ``kappa = 0`` is :func:`greedy_scores`.

    Args:
        samples: ``(S, N)`` posterior predictive samples.
        kappa: exploration weight, ``>= 0``.

    Returns:
        ``(N,)`` scores.
    """
    kappa = _check_scalar("kappa", kappa)
    if kappa < 0:
        raise ValueError(f"kappa must be >= 0, got {kappa}")
    samples = _check_samples(samples)
    return samples.mean(0) + kappa * _std(samples)


def ucb_kappa(round: int, kappa0: float, decay: float = 1.0) -> float:
    """Per-round UCB exploration weight, :math:`\\kappa_r = \\kappa_0 \\cdot \\text{decay}^r`.

    Round ``0`` uses ``kappa0``; ``decay < 1`` shifts from exploration to exploitation as rounds go by,
    ``decay = 1`` keeps ``kappa`` constant and ``decay = 0`` is greedy from round 1 on.

    Args:
        round: acquisition round, ``>= 0``.
        kappa0: weight at round 0, ``>= 0``.
        decay: per-round multiplicative factor, ``>= 0``.

    Returns:
        :math:`\\kappa_r`, a float ``>= 0``.
    """
    if int(round) != round or round < 0:
        raise ValueError(f"round must be a non-negative integer, got {round!r}")
    kappa0 = _check_scalar("kappa0", kappa0)
    decay = _check_scalar("decay", decay)
    if kappa0 < 0 or decay < 0:
        raise ValueError(f"kappa0 and decay must be >= 0, got kappa0={kappa0}, decay={decay}")
    return kappa0 * decay ** int(round)


def _ei_utility(best_f: float) -> Utility:
    """:math:`u(y) = \\max(y - f^*, 0)`, elementwise."""
    return lambda y: (y - best_f).clamp_min(0.0)


def _pi_utility(best_f: float, tau: float | None) -> Utility:
    """:math:`u(y) = 1[y > f^*]`, or its smooth version :math:`\\mathrm{sigmoid}((y - f^*) / \\tau)`."""
    if tau is None:
        return lambda y: (y > best_f).to(y.dtype)
    return lambda y: torch.sigmoid((y - best_f) / tau)


def ei_scores(samples: torch.Tensor, best_f: float | torch.Tensor) -> torch.Tensor:
    """Monte-Carlo expected improvement, :math:`\\frac1S \\sum_s \\max(Y_{sn} - f^*, 0)`.

    Args:
        samples: ``(S, N)`` posterior predictive samples.
        best_f: :math:`f^*`, the best value measured so far (original scale).

    Returns:
        ``(N,)`` scores, ``>= 0``.
    """
    return _ei_utility(_check_scalar("best_f", best_f))(_check_samples(samples)).mean(0)


def pi_scores(samples: torch.Tensor, best_f: float | torch.Tensor, tau: float | None = None) -> torch.Tensor:
    """Monte-Carlo probability of improvement, :math:`\\frac1S \\sum_s 1[Y_{sn} > f^*]`.

    With a temperature ``tau`` the indicator is replaced by :math:`\\mathrm{sigmoid}((Y_{sn} - f^*)/\\tau)`
    (BoTorch's qPI smoothing), which tends to the indicator as ``tau -> 0``; ``tau`` is in target units.

    Args:
        samples: ``(S, N)`` posterior predictive samples.
        best_f: :math:`f^*`, the best value measured so far (original scale).
        tau: ``None`` for the exact indicator, else a positive temperature.

    Returns:
        ``(N,)`` scores in ``[0, 1]``.
    """
    utility = _pi_utility(_check_scalar("best_f", best_f), _check_tau(tau))
    return utility(_check_samples(samples)).mean(0)


# ---------------------------------------------------------------------------------------------------
# Joint Monte-Carlo batch values, (S, N), (q,) -> ()
# ---------------------------------------------------------------------------------------------------


def _prefix_values(samples: torch.Tensor, batch_idx: torch.Tensor, utility: Utility) -> torch.Tensor:
    """``(q,)`` joint value of every prefix of the batch ``batch_idx`` ``(q,)`` over ``(S, N)`` ``samples``:
    entry ``k`` is :math:`\\frac1S \\sum_s u(\\max_{j \\le k} Y_{s, b_j})`."""
    running_max = samples[:, batch_idx].cummax(dim=1).values  # (S, q)
    return utility(running_max).mean(0)


def q_expected_improvement(
    samples: torch.Tensor, batch_idx: torch.Tensor, best_f: float | torch.Tensor
) -> torch.Tensor:
    """Monte-Carlo batch expected improvement (BoTorch's qEI) of a given batch.

    :math:`\\mathrm{qEI}(B) = \\frac1S \\sum_s \\max(\\max_{j \\in B} Y_{sj} - f^*, 0)`; for ``|B| = 1`` this
    is :func:`ei_scores` of that candidate, and it never falls below the best single EI in ``B``.

    Args:
        samples: ``(S, N)`` posterior predictive samples.
        batch_idx: ``(q,)`` candidate indices of the batch.
        best_f: :math:`f^*`, the best value measured so far.

    Returns:
        ``()`` scalar tensor.
    """
    samples = _check_samples(samples)
    idx = _check_batch_idx(batch_idx, samples.shape[1])
    return _prefix_values(samples, idx, _ei_utility(_check_scalar("best_f", best_f)))[-1]


def q_probability_of_improvement(
    samples: torch.Tensor, batch_idx: torch.Tensor, best_f: float | torch.Tensor, tau: float | None = None
) -> torch.Tensor:
    """Monte-Carlo batch probability of improvement (BoTorch's qPI) of a given batch.

    :math:`\\mathrm{qPI}(B) = \\frac1S \\sum_s 1[\\max_{j \\in B} Y_{sj} > f^*]`, or with temperature
    :math:`\\mathrm{sigmoid}((\\max_j Y_{sj} - f^*)/\\tau)` (the sigmoid is monotone, so taking it before or
    after the max over the batch is the same).

    Args:
        samples: ``(S, N)`` posterior predictive samples.
        batch_idx: ``(q,)`` candidate indices of the batch.
        best_f: :math:`f^*`, the best value measured so far.
        tau: ``None`` for the exact indicator, else a positive temperature.

    Returns:
        ``()`` scalar tensor in ``[0, 1]``.
    """
    samples = _check_samples(samples)
    idx = _check_batch_idx(batch_idx, samples.shape[1])
    utility = _pi_utility(_check_scalar("best_f", best_f), _check_tau(tau))
    return _prefix_values(samples, idx, utility)[-1]
