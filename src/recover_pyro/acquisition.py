"""Acquisition functions: turn posterior predictive samples into the next batch of experiments.

The decision side only ever sees Monte-Carlo samples ``samples`` of shape ``(S, N)`` (posterior samples x
candidates) on the original target scale, where higher means more synergistic. Pass
``PredictiveSamples.f`` to explore on epistemic uncertainty only (as RECOVER does), or
``PredictiveSamples.y()`` to include observation noise.

Three families, following BoTorch's ``monte_carlo.py`` conventions but without depending on it:

* single-point scores ``(N,)`` (:func:`greedy_scores`, :func:`ucb_scores`, :func:`ei_scores`,
  :func:`pi_scores`), turned into a batch by greedy top-q under constraints (:func:`select_batch`);
* batch builders that pick slot by slot (:func:`thompson_batch`, :func:`sequential_greedy_qei`,
  :func:`sequential_greedy_qpi`, :func:`random_batch`);
* joint Monte-Carlo batch values (:func:`q_expected_improvement`, :func:`q_probability_of_improvement`).

Every batch builder shares the same constraints:

* ``exclude`` ``(N,)`` bool: already measured candidates; they are never proposed.
* ``max_per_drug`` (needs ``candidate_drugs`` ``(N, 2)``): hard cap on how often one drug may appear in
  the batch. A cap is a constraint the biologist set, so it is never relaxed: when fewer than ``q``
  candidates satisfy the constraints, the builder returns the smaller batch and emits a
  :class:`BatchShortfallWarning` saying how many it could choose.
* ``diversity_penalty`` (needs ``candidate_drugs``): soft push towards unique drugs. At each slot the
  value being maximised is lowered by ``diversity_penalty * scale * m`` where ``m`` is the number of times
  the candidate's drugs already appear in the batch and ``scale`` is the standard deviation of that value
  across the still-allowed candidates (1 if it is zero), so one setting means the same for every kind.

:class:`Acquisition` is the single entry point that configs (Hydra ``_target_``) build.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, TypedDict

import torch

from recover_pyro.data.errors import closest_names
from recover_pyro.models.base import PredictiveSamples

KINDS = ("ucb", "greedy", "thompson", "ei", "pi", "qei", "qpi", "random")

Utility = Callable[[torch.Tensor], torch.Tensor]


class BatchShortfallWarning(UserWarning):
    """Fewer than ``q`` candidates satisfy the batch constraints; a smaller batch was returned."""


@dataclass
class SelectedBatch:
    """A chosen batch.

    Attributes:
        indices: ``(q,)`` long candidate indices, in the order they were chosen (distinct).
        scores: ``(q,)`` the acquisition value behind each pick (see :meth:`Acquisition.select`).
    """

    indices: torch.Tensor
    scores: torch.Tensor

    def __len__(self) -> int:
        return int(self.indices.shape[0])


# ---------------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------------


def _check_samples(samples: torch.Tensor) -> torch.Tensor:
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
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _check_q(q: int) -> int:
    if int(q) != q or q < 1:
        raise ValueError(f"batch size q must be a positive integer, got {q!r}")
    return int(q)


def _check_tau(tau: float | None) -> float | None:
    if tau is not None and not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be None (indicator) or a positive temperature, got {tau!r}")
    return tau


def _std(samples: torch.Tensor) -> torch.Tensor:
    """``(N,)`` unbiased standard deviation over samples; zero when ``S == 1``."""
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
# Joint Monte-Carlo batch values
# ---------------------------------------------------------------------------------------------------


def _check_batch_idx(batch_idx: torch.Tensor, n: int) -> torch.Tensor:
    batch_idx = torch.as_tensor(batch_idx)
    if batch_idx.dim() != 1 or batch_idx.numel() == 0 or batch_idx.is_floating_point():
        raise ValueError(f"batch_idx must be a non-empty (q,) integer tensor, got shape {tuple(batch_idx.shape)}")
    if int(batch_idx.min()) < 0 or int(batch_idx.max()) >= n:
        raise IndexError(
            f"batch_idx must lie in [0, {n}), got values in [{int(batch_idx.min())}, {int(batch_idx.max())}]"
        )
    return batch_idx.long()


def _prefix_values(samples: torch.Tensor, batch_idx: torch.Tensor, utility: Utility) -> torch.Tensor:
    """``(q,)`` joint value of every prefix of the batch: entry ``k`` is
    :math:`\\frac1S \\sum_s u(\\max_{j \\le k} Y_{s, b_j})`."""
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
        scalar tensor.
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
        scalar tensor in ``[0, 1]``.
    """
    samples = _check_samples(samples)
    idx = _check_batch_idx(batch_idx, samples.shape[1])
    utility = _pi_utility(_check_scalar("best_f", best_f), _check_tau(tau))
    return _prefix_values(samples, idx, utility)[-1]


# ---------------------------------------------------------------------------------------------------
# Batch construction under constraints
# ---------------------------------------------------------------------------------------------------


class _Batch:
    """A batch grown one candidate at a time under exclusion, a per-drug cap and a diversity penalty."""

    def __init__(
        self,
        n: int,
        exclude: torch.Tensor | None,
        candidate_drugs: torch.Tensor | None,
        max_per_drug: int | None,
        diversity_penalty: float,
    ) -> None:
        if exclude is not None:
            if not isinstance(exclude, torch.Tensor) or exclude.dtype != torch.bool or exclude.shape != (n,):
                got = (
                    f"{exclude.dtype} of shape {tuple(exclude.shape)}"
                    if isinstance(exclude, torch.Tensor)
                    else type(exclude).__name__
                )
                raise ValueError(f"exclude must be a bool mask of shape ({n},) (True = already measured), got {got}")
        if max_per_drug is not None and (int(max_per_drug) != max_per_drug or max_per_drug < 1):
            raise ValueError(f"max_per_drug must be None or a positive integer, got {max_per_drug!r}")
        diversity_penalty = _check_scalar("diversity_penalty", diversity_penalty)
        if diversity_penalty < 0:
            raise ValueError(f"diversity_penalty must be >= 0, got {diversity_penalty}")
        if candidate_drugs is None:
            if max_per_drug is not None or diversity_penalty > 0:
                raise ValueError(
                    "max_per_drug and diversity_penalty need candidate_drugs, the (N, 2) drug indices of each candidate"
                )
        else:
            candidate_drugs = torch.as_tensor(candidate_drugs)
            if (
                candidate_drugs.shape != (n, 2)
                or candidate_drugs.is_floating_point()
                or candidate_drugs.dtype == torch.bool
            ):
                raise ValueError(
                    f"candidate_drugs must be an integer tensor of shape ({n}, 2), got "
                    f"{candidate_drugs.dtype} of shape {tuple(candidate_drugs.shape)}"
                )
            if n and int(candidate_drugs.min()) < 0:
                raise ValueError("candidate_drugs must hold non-negative drug indices")
            candidate_drugs = candidate_drugs.long()
        self.n = n
        self.available = torch.ones(n, dtype=torch.bool) if exclude is None else ~exclude.cpu()
        self.n_open = int(self.available.sum())
        self.drugs = None if candidate_drugs is None else candidate_drugs.cpu()
        self.max_per_drug = None if max_per_drug is None else int(max_per_drug)
        self.penalty = diversity_penalty
        num_drugs = 0 if self.drugs is None or n == 0 else int(self.drugs.max()) + 1
        self.counts = torch.zeros(num_drugs, dtype=torch.long)
        self.chosen: list[int] = []

    def _appearances(self) -> torch.Tensor:
        """``(N,)`` how often each candidate's drugs already appear in the batch (a self-pair counts once)."""
        assert self.drugs is not None
        a, b = self.counts[self.drugs[:, 0]], self.counts[self.drugs[:, 1]]
        return a + torch.where(self.drugs[:, 0] == self.drugs[:, 1], 0, b)

    def pick(self, values: torch.Tensor, tiebreak: torch.Tensor | None = None) -> int | None:
        """Index of the allowed candidate with the highest (penalised) value, or ``None`` if none is left.

        ``tiebreak`` ``(N,)`` orders candidates whose values are exactly equal (e.g. all-zero EI gains);
        otherwise ties go to the lowest index.
        """
        if not bool(self.available.any()):
            return None
        values = values.detach().cpu()
        if self.penalty > 0 and self.chosen:
            open_values = values[self.available]
            scale = float(open_values.std()) if open_values.numel() > 1 else 0.0
            values = values - self.penalty * (scale if scale > 0 else 1.0) * self._appearances().to(values.dtype)
        masked = values.masked_fill(~self.available, -math.inf)
        if tiebreak is None:
            return int(masked.argmax())
        ties = masked == masked.max()
        return int(tiebreak.detach().cpu().masked_fill(~ties, -math.inf).argmax())

    def add(self, index: int) -> None:
        self.chosen.append(index)
        self.available[index] = False
        if self.drugs is None:
            return
        for drug in set(self.drugs[index].tolist()):
            self.counts[drug] += 1
            if self.max_per_drug is not None and int(self.counts[drug]) >= self.max_per_drug:
                self.available &= ~(self.drugs == drug).any(1)

    def indices(self, q: int) -> torch.Tensor:
        """``(k,)`` chosen indices, warning when ``k < q``."""
        if len(self.chosen) < q:
            cap = f" and at most {self.max_per_drug} per drug" if self.max_per_drug is not None else ""
            warnings.warn(
                f"only {len(self.chosen)} of q={q} candidates could be chosen ({self.n_open} of {self.n} "
                f"candidates unmeasured{cap}); returning a batch of {len(self.chosen)}",
                BatchShortfallWarning,
                stacklevel=3,
            )
        return torch.tensor(self.chosen, dtype=torch.long)


class _BatchConstraints(TypedDict):
    """The batch constraints shared by the selection functions (keyword arguments of :func:`select_batch`)."""

    exclude: torch.Tensor | None
    candidate_drugs: torch.Tensor | None
    max_per_drug: int | None
    diversity_penalty: float


def select_batch(
    scores: torch.Tensor,
    q: int,
    candidate_drugs: torch.Tensor | None = None,
    exclude: torch.Tensor | None = None,
    max_per_drug: int | None = None,
    diversity_penalty: float = 0.0,
    tiebreak: torch.Tensor | None = None,
) -> torch.Tensor:
    """Greedy top-``q`` of single-point scores under the batch constraints (see module docstring).

    Without constraints this is ``scores.topk(q)``. With a cap, a candidate is skipped once one of its
    drugs has reached ``max_per_drug`` appearances; with a penalty, each slot maximises
    ``score - diversity_penalty * std(scores of allowed candidates) * appearances``.

    Args:
        scores: ``(N,)`` acquisition scores, higher is better.
        q: batch size.
        candidate_drugs: ``(N, 2)`` long drug indices of each candidate (needed by the two options below).
        exclude: ``(N,)`` bool, True for already measured candidates (never proposed).
        max_per_drug: hard cap on appearances of one drug in the batch.
        diversity_penalty: soft penalty per prior appearance, in units of the score standard deviation.
        tiebreak: ``(N,)`` secondary key for exactly tied scores (e.g. the posterior mean).

    Returns:
        ``(q,)`` long indices in pick order; fewer (with a :class:`BatchShortfallWarning`) when the
        constraints leave fewer than ``q`` candidates.
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() != 1:
        raise ValueError(f"scores must be a (N,) tensor, got shape {tuple(getattr(scores, 'shape', ()))}")
    if not torch.isfinite(scores).all():
        raise ValueError(
            f"scores contain NaN or infinite values (first at candidate {int((~torch.isfinite(scores)).nonzero()[0])})"
        )
    q = _check_q(q)
    batch = _Batch(scores.shape[0], exclude, candidate_drugs, max_per_drug, diversity_penalty)
    for _ in range(q):
        index = batch.pick(scores, tiebreak)
        if index is None:
            break
        batch.add(index)
    return batch.indices(q)


def _thompson_rows(num_samples: int, q: int, generator: torch.Generator | None) -> torch.Tensor:
    """``(q,)`` posterior-sample rows, one per slot: distinct rows while ``q <= S``; beyond that,
    independent random permutations of the ``S`` rows are concatenated (so rows repeat, each as evenly
    as possible)."""
    reps = -(-q // num_samples)
    return torch.cat([torch.randperm(num_samples, generator=generator) for _ in range(reps)])[:q]


def thompson_batch(
    samples: torch.Tensor,
    q: int,
    generator: torch.Generator | None = None,
    exclude: torch.Tensor | None = None,
    candidate_drugs: torch.Tensor | None = None,
    max_per_drug: int | None = None,
    diversity_penalty: float = 0.0,
) -> torch.Tensor:
    """Batch Thompson sampling: one posterior draw per slot.

    Slot ``k`` takes a posterior sample row :math:`Y_{r_k, \\cdot}` and picks its argmax among candidates
    that are allowed and not yet chosen, so picks are always distinct. Rows are drawn without replacement
    while ``q <= S``; when ``q > S`` rows are reused (concatenated random permutations), which is still
    valid because each slot excludes earlier picks.

    Args:
        samples: ``(S, N)`` posterior predictive samples.
        q: batch size.
        generator: torch random generator for the row draws (seed it for reproducibility).
        exclude, candidate_drugs, max_per_drug, diversity_penalty: batch constraints (module docstring).

    Returns:
        ``(q,)`` long indices in pick order (fewer, with a warning, if constraints leave fewer).
    """
    samples = _check_samples(samples)
    q = _check_q(q)
    batch = _Batch(samples.shape[1], exclude, candidate_drugs, max_per_drug, diversity_penalty)
    for row in _thompson_rows(samples.shape[0], q, generator).tolist():
        index = batch.pick(samples[row])
        if index is None:
            break
        batch.add(index)
    return batch.indices(q)


def _sequential_greedy(samples: torch.Tensor, q: int, utility: Utility, batch: _Batch) -> torch.Tensor:
    """Grow a batch by adding, at each step, the candidate maximising the joint MC value
    :math:`\\frac1S \\sum_s u(\\max(m_s, Y_{sn}))`, where :math:`m_s` is the running max of the batch so far.
    One step costs ``O(S N)``; exact ties (e.g. all-zero gains) go to the higher posterior mean."""
    mean = samples.mean(0)
    running = torch.full((samples.shape[0], 1), -math.inf, dtype=samples.dtype, device=samples.device)
    for _ in range(q):
        index = batch.pick(utility(torch.maximum(running, samples)).mean(0), tiebreak=mean)
        if index is None:
            break
        batch.add(index)
        running = torch.maximum(running, samples[:, index : index + 1])
    return batch.indices(q)


def sequential_greedy_qei(
    samples: torch.Tensor,
    q: int,
    best_f: float | torch.Tensor,
    exclude: torch.Tensor | None = None,
    candidate_drugs: torch.Tensor | None = None,
    max_per_drug: int | None = None,
    diversity_penalty: float = 0.0,
) -> torch.Tensor:
    """Sequential greedy maximisation of Monte-Carlo qEI (see :func:`q_expected_improvement`).

    Step ``k`` adds :math:`\\arg\\max_n \\mathrm{qEI}(B_{k-1} \\cup \\{n\\})` over allowed candidates,
    vectorised over ``n``; total cost ``O(q S N)``. The first pick is the argmax of :func:`ei_scores`.

    Args:
        samples: ``(S, N)`` posterior predictive samples.
        q: batch size.
        best_f: :math:`f^*`, the best value measured so far.
        exclude, candidate_drugs, max_per_drug, diversity_penalty: batch constraints (module docstring).

    Returns:
        ``(q,)`` long indices in pick order (fewer, with a warning, if constraints leave fewer).
    """
    samples = _check_samples(samples)
    batch = _Batch(samples.shape[1], exclude, candidate_drugs, max_per_drug, diversity_penalty)
    return _sequential_greedy(samples, _check_q(q), _ei_utility(_check_scalar("best_f", best_f)), batch)


def sequential_greedy_qpi(
    samples: torch.Tensor,
    q: int,
    best_f: float | torch.Tensor,
    tau: float | None = None,
    exclude: torch.Tensor | None = None,
    candidate_drugs: torch.Tensor | None = None,
    max_per_drug: int | None = None,
    diversity_penalty: float = 0.0,
) -> torch.Tensor:
    """Sequential greedy maximisation of Monte-Carlo qPI (see :func:`q_probability_of_improvement`).

    Same procedure as :func:`sequential_greedy_qei` with the (optionally smoothed) improvement indicator.

    Args:
        samples: ``(S, N)`` posterior predictive samples.
        q: batch size.
        best_f: :math:`f^*`, the best value measured so far.
        tau: ``None`` for the exact indicator, else a positive temperature.
        exclude, candidate_drugs, max_per_drug, diversity_penalty: batch constraints (module docstring).

    Returns:
        ``(q,)`` long indices in pick order (fewer, with a warning, if constraints leave fewer).
    """
    samples = _check_samples(samples)
    utility = _pi_utility(_check_scalar("best_f", best_f), _check_tau(tau))
    batch = _Batch(samples.shape[1], exclude, candidate_drugs, max_per_drug, diversity_penalty)
    return _sequential_greedy(samples, _check_q(q), utility, batch)


def random_batch(
    n: int,
    q: int,
    generator: torch.Generator | None = None,
    exclude: torch.Tensor | None = None,
    candidate_drugs: torch.Tensor | None = None,
    max_per_drug: int | None = None,
    diversity_penalty: float = 0.0,
) -> torch.Tensor:
    """Uniformly random batch of ``q`` distinct allowed candidates out of ``n`` (the baseline).

    Draws one uniform key per candidate and picks greedily by key, so without constraints the batch is a
    uniform random subset of the unmeasured candidates; a cap or penalty acts as for the other builders.

    Args:
        n: number of candidates.
        q: batch size.
        generator: torch random generator (seed it for reproducibility).
        exclude, candidate_drugs, max_per_drug, diversity_penalty: batch constraints (module docstring).

    Returns:
        ``(q,)`` long indices in pick order (fewer, with a warning, if constraints leave fewer).
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    q = _check_q(q)
    keys = torch.rand(int(n), generator=generator)
    batch = _Batch(int(n), exclude, candidate_drugs, max_per_drug, diversity_penalty)
    for _ in range(q):
        index = batch.pick(keys)
        if index is None:
            break
        batch.add(index)
    return batch.indices(q)


def unique_drugs(indices: torch.Tensor, candidate_drugs: torch.Tensor) -> int:
    """Number of distinct drugs among the candidates ``indices`` ``(q,)`` given ``candidate_drugs`` ``(N, 2)``."""
    indices = torch.as_tensor(indices, dtype=torch.long)
    return int(torch.as_tensor(candidate_drugs)[indices].unique().numel())


# ---------------------------------------------------------------------------------------------------
# Config entry point
# ---------------------------------------------------------------------------------------------------


@dataclass
class Acquisition:
    """One acquisition strategy, as built from a config (Hydra ``_target_: recover_pyro.acquisition.Acquisition``).

    Attributes:
        kind: one of ``ucb``, ``greedy``, ``thompson``, ``ei``, ``pi``, ``qei``, ``qpi``, ``random``.
        q: batch size per round.
        kappa: UCB exploration weight at round 0.
        kappa_decay: UCB per-round decay, :math:`\\kappa_r = \\kappa \\cdot \\text{kappa\\_decay}^r`.
        max_per_drug: hard cap on appearances of one drug in a batch (``None``: no cap).
        diversity_penalty: soft penalty per prior appearance of a drug (module docstring).
        tau: PI / qPI temperature; ``None`` uses the exact indicator.
    """

    kind: str = "ucb"
    q: int = 30
    kappa: float = 1.0
    kappa_decay: float = 1.0
    max_per_drug: int | None = None
    diversity_penalty: float = 0.0
    tau: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(
                f"unknown acquisition kind {self.kind!r}; choose one of {list(KINDS)} "
                f"(closest: {closest_names(str(self.kind), KINDS, n=2)})"
            )
        self.q = _check_q(self.q)
        ucb_kappa(0, self.kappa, self.kappa_decay)  # validates both
        _check_tau(self.tau)
        if self.max_per_drug is not None and (int(self.max_per_drug) != self.max_per_drug or self.max_per_drug < 1):
            raise ValueError(f"max_per_drug must be None or a positive integer, got {self.max_per_drug!r}")
        if _check_scalar("diversity_penalty", self.diversity_penalty) < 0:
            raise ValueError(f"diversity_penalty must be >= 0, got {self.diversity_penalty}")

    def kappa_at(self, round: int) -> float:
        """UCB weight for ``round`` (see :func:`ucb_kappa`)."""
        return ucb_kappa(round, self.kappa, self.kappa_decay)

    def select(
        self,
        samples: torch.Tensor | PredictiveSamples,
        exclude: torch.Tensor | None = None,
        candidate_drugs: torch.Tensor | None = None,
        best_f: float | torch.Tensor | None = None,
        round: int = 0,
        generator: torch.Generator | None = None,
    ) -> SelectedBatch:
        """Choose the next batch.

        Args:
            samples: ``(S, N)`` posterior predictive samples, or :class:`PredictiveSamples` (its ``f`` is used).
            exclude: ``(N,)`` bool, True for already measured candidates (never proposed).
            candidate_drugs: ``(N, 2)`` long drug indices (needed for ``max_per_drug`` / ``diversity_penalty``).
            best_f: best value measured so far; required by ``ei``, ``pi``, ``qei`` and ``qpi``.
            round: acquisition round (sets the UCB weight).
            generator: randomness for ``thompson`` and ``random``.

        Returns:
            :class:`SelectedBatch` whose ``scores`` are: the single-point score (``greedy``, ``ucb`` with the
            round's kappa, ``ei``, ``pi``); the joint qEI / qPI of the batch up to and including each pick
            (``qei``, ``qpi``; non-decreasing); the posterior mean (``thompson``, ``random``).
        """
        if isinstance(samples, PredictiveSamples):
            samples = samples.f
        samples = _check_samples(samples)
        n = samples.shape[1]
        constraints = _BatchConstraints(
            exclude=exclude,
            candidate_drugs=candidate_drugs,
            max_per_drug=self.max_per_drug,
            diversity_penalty=self.diversity_penalty,
        )
        if self.kind in ("greedy", "ucb", "ei", "pi"):
            scores, tiebreak = self._point_scores(samples, best_f, round)
            indices = select_batch(scores, self.q, tiebreak=tiebreak, **constraints)
            return SelectedBatch(indices, scores[indices])
        if self.kind in ("qei", "qpi"):
            f_star = self._best_f(best_f)
            if self.kind == "qei":
                indices = sequential_greedy_qei(samples, self.q, f_star, **constraints)
                utility = _ei_utility(f_star)
            else:
                indices = sequential_greedy_qpi(samples, self.q, f_star, tau=self.tau, **constraints)
                utility = _pi_utility(f_star, self.tau)
            values = _prefix_values(samples, indices, utility) if len(indices) else samples.new_zeros(0)
            return SelectedBatch(indices, values)
        if self.kind == "thompson":
            indices = thompson_batch(samples, self.q, generator=generator, **constraints)
        else:
            indices = random_batch(n, self.q, generator=generator, **constraints)
        return SelectedBatch(indices, samples.mean(0)[indices])

    def _best_f(self, best_f: float | torch.Tensor | None) -> float:
        if best_f is None:
            raise ValueError(f"acquisition kind {self.kind!r} needs best_f, the best value measured so far")
        return _check_scalar("best_f", best_f)

    def _point_scores(
        self, samples: torch.Tensor, best_f: float | torch.Tensor | None, round: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(N,)`` single-point scores and, for EI / PI (which tie easily), the posterior mean as tiebreak."""
        if self.kind == "greedy":
            return greedy_scores(samples), None
        if self.kind == "ucb":
            return ucb_scores(samples, self.kappa_at(round)), None
        if self.kind == "ei":
            return ei_scores(samples, self._best_f(best_f)), samples.mean(0)
        return pi_scores(samples, self._best_f(best_f), tau=self.tau), samples.mean(0)
