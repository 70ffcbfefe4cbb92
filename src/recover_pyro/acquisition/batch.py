r"""Batches under constraints: grow a batch of ``q`` distinct candidates one pick at a time.

Every builder here shares the same constraints (see :class:`ConstrainedBatch`):

* ``exclude`` ``(N,)`` bool: already measured candidates; they are never proposed.
* ``max_per_drug`` (needs ``candidate_drugs`` ``(N, 2)``): hard cap on how often one drug may appear in
  the batch. A cap is a constraint the biologist set, so it is never relaxed: when fewer than ``q``
  candidates satisfy the constraints, the builder returns the smaller batch and emits a
  :class:`BatchShortfallWarning` saying how many it could choose.
* ``diversity_penalty`` (needs ``candidate_drugs``): soft push towards unique drugs. At each slot the
  value being maximised is lowered by ``diversity_penalty * scale * m`` where ``m`` is the number of times
  the candidate's drugs already appear in the batch and ``scale`` is the standard deviation of that value
  across the still-allowed candidates (1 if it is zero), so one setting means the same for every strategy.

Builders: :func:`select_batch` (greedy top-``q`` of single-point scores ``(N,)``), :func:`thompson_batch`,
:func:`sequential_greedy_qei`, :func:`sequential_greedy_qpi` and :func:`random_batch`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TypedDict

import torch

from recover_pyro.acquisition.scores import (
    Utility,
    _check_q,
    _check_samples,
    _check_scalar,
    _check_tau,
    _ei_utility,
    _pi_utility,
)

__all__ = [
    "BatchConstraints",
    "BatchShortfallWarning",
    "ConstrainedBatch",
    "SelectedBatch",
    "random_batch",
    "select_batch",
    "sequential_greedy_qei",
    "sequential_greedy_qpi",
    "thompson_batch",
    "unique_drugs",
]


class BatchShortfallWarning(UserWarning):
    """Fewer than ``q`` candidates satisfy the batch constraints; a smaller batch was returned."""


@dataclass
class SelectedBatch:
    """A chosen batch.

    Attributes:
        indices: ``(q,)`` long candidate indices, in the order they were chosen (distinct).
        scores: ``(q,)`` the acquisition value behind each pick (see
            :meth:`~recover_pyro.acquisition.Acquisition.select`).
    """

    indices: torch.Tensor
    scores: torch.Tensor

    def __len__(self) -> int:
        return int(self.indices.shape[0])


class BatchConstraints(TypedDict):
    """The batch constraints, as keyword arguments of every builder (:func:`select_batch` and the others).

    Built by :meth:`~recover_pyro.acquisition.Acquisition.constraints`; see :class:`ConstrainedBatch`.
    """

    exclude: torch.Tensor | None
    candidate_drugs: torch.Tensor | None
    max_per_drug: int | None
    diversity_penalty: float


class ConstrainedBatch:
    """A batch grown one candidate at a time under exclusion, a per-drug cap and a diversity penalty.

    The building block of every batch builder, and of a user strategy that overrides
    :meth:`~recover_pyro.acquisition.Acquisition.select`: call :meth:`pick` with the ``(N,)`` values to
    maximise at this slot, :meth:`add` the pick, repeat ``q`` times (or until :meth:`pick` returns ``None``),
    then :meth:`indices`.

    Args:
        n: number of candidates ``N``.
        exclude: ``(N,)`` bool, True for already measured candidates (never picked).
        candidate_drugs: ``(N, 2)`` integer drug indices of each candidate (needed by the two options below).
        max_per_drug: hard cap on appearances of one drug in the batch (``None``: no cap).
        diversity_penalty: soft penalty per prior appearance, in units of the standard deviation of the
            values over the allowed candidates.
    """

    def __init__(
        self,
        n: int,
        exclude: torch.Tensor | None = None,
        candidate_drugs: torch.Tensor | None = None,
        max_per_drug: int | None = None,
        diversity_penalty: float = 0.0,
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

        Args:
            values: ``(N,)`` the value to maximise at this slot, higher is better.
            tiebreak: ``(N,)`` secondary key for candidates whose values are exactly equal (e.g. all-zero EI
                gains); without it ties go to the lowest index.

        Returns:
            a candidate index in ``[0, N)`` that is allowed and not yet chosen, or ``None``.
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
        """Put candidate ``index`` in the batch: it and, at the cap, every candidate of a full drug close.

        Args:
            index: a candidate index, normally the one :meth:`pick` returned.
        """
        self.chosen.append(index)
        self.available[index] = False
        if self.drugs is None:
            return
        for drug in set(self.drugs[index].tolist()):
            self.counts[drug] += 1
            if self.max_per_drug is not None and int(self.counts[drug]) >= self.max_per_drug:
                self.available &= ~(self.drugs == drug).any(1)

    def indices(self, q: int) -> torch.Tensor:
        """``(k,)`` long chosen indices in pick order, with a :class:`BatchShortfallWarning` when ``k < q``.

        Args:
            q: the batch size that was asked for.
        """
        if len(self.chosen) < q:
            cap = f" and at most {self.max_per_drug} per drug" if self.max_per_drug is not None else ""
            warnings.warn(
                f"only {len(self.chosen)} of q={q} candidates could be chosen ({self.n_open} of {self.n} "
                f"candidates unmeasured{cap}); returning a batch of {len(self.chosen)}",
                BatchShortfallWarning,
                stacklevel=3,
            )
        return torch.tensor(self.chosen, dtype=torch.long)


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
    batch = ConstrainedBatch(scores.shape[0], exclude, candidate_drugs, max_per_drug, diversity_penalty)
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
        exclude: ``(N,)`` bool, True for already measured candidates (never proposed).
        candidate_drugs: ``(N, 2)`` long drug indices of each candidate.
        max_per_drug: hard cap on appearances of one drug in the batch.
        diversity_penalty: soft penalty per prior appearance (module docstring).

    Returns:
        ``(q,)`` long indices in pick order (fewer, with a warning, if constraints leave fewer).
    """
    samples = _check_samples(samples)
    q = _check_q(q)
    batch = ConstrainedBatch(samples.shape[1], exclude, candidate_drugs, max_per_drug, diversity_penalty)
    for row in _thompson_rows(samples.shape[0], q, generator).tolist():
        index = batch.pick(samples[row])
        if index is None:
            break
        batch.add(index)
    return batch.indices(q)


def _sequential_greedy(samples: torch.Tensor, q: int, utility: Utility, batch: ConstrainedBatch) -> torch.Tensor:
    """``(q,)`` indices grown by adding, at each step, the candidate maximising the joint MC value
    :math:`\\frac1S \\sum_s u(\\max(m_s, Y_{sn}))` over ``(S, N)`` ``samples``, where :math:`m_s` is the
    running max of the batch so far. One step costs ``O(S N)``; exact ties (e.g. all-zero gains) go to the
    higher posterior mean."""
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
    """Sequential greedy maximisation of Monte-Carlo qEI (see
    :func:`~recover_pyro.acquisition.scores.q_expected_improvement`).

    Step ``k`` adds :math:`\\arg\\max_n \\mathrm{qEI}(B_{k-1} \\cup \\{n\\})` over allowed candidates,
    vectorised over ``n``; total cost ``O(q S N)``. The first pick is the argmax of
    :func:`~recover_pyro.acquisition.scores.ei_scores`.

    Args:
        samples: ``(S, N)`` posterior predictive samples.
        q: batch size.
        best_f: :math:`f^*`, the best value measured so far.
        exclude: ``(N,)`` bool, True for already measured candidates (never proposed).
        candidate_drugs: ``(N, 2)`` long drug indices of each candidate.
        max_per_drug: hard cap on appearances of one drug in the batch.
        diversity_penalty: soft penalty per prior appearance (module docstring).

    Returns:
        ``(q,)`` long indices in pick order (fewer, with a warning, if constraints leave fewer).
    """
    samples = _check_samples(samples)
    batch = ConstrainedBatch(samples.shape[1], exclude, candidate_drugs, max_per_drug, diversity_penalty)
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
    """Sequential greedy maximisation of Monte-Carlo qPI (see
    :func:`~recover_pyro.acquisition.scores.q_probability_of_improvement`).

    Same procedure as :func:`sequential_greedy_qei` with the (optionally smoothed) improvement indicator.

    Args:
        samples: ``(S, N)`` posterior predictive samples.
        q: batch size.
        best_f: :math:`f^*`, the best value measured so far.
        tau: ``None`` for the exact indicator, else a positive temperature.
        exclude: ``(N,)`` bool, True for already measured candidates (never proposed).
        candidate_drugs: ``(N, 2)`` long drug indices of each candidate.
        max_per_drug: hard cap on appearances of one drug in the batch.
        diversity_penalty: soft penalty per prior appearance (module docstring).

    Returns:
        ``(q,)`` long indices in pick order (fewer, with a warning, if constraints leave fewer).
    """
    samples = _check_samples(samples)
    utility = _pi_utility(_check_scalar("best_f", best_f), _check_tau(tau))
    batch = ConstrainedBatch(samples.shape[1], exclude, candidate_drugs, max_per_drug, diversity_penalty)
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
        n: number of candidates ``N``.
        q: batch size.
        generator: torch random generator (seed it for reproducibility).
        exclude: ``(N,)`` bool, True for already measured candidates (never proposed).
        candidate_drugs: ``(N, 2)`` long drug indices of each candidate.
        max_per_drug: hard cap on appearances of one drug in the batch.
        diversity_penalty: soft penalty per prior appearance (module docstring).

    Returns:
        ``(q,)`` long indices in pick order (fewer, with a warning, if constraints leave fewer).
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    q = _check_q(q)
    keys = torch.rand(int(n), generator=generator)
    batch = ConstrainedBatch(int(n), exclude, candidate_drugs, max_per_drug, diversity_penalty)
    for _ in range(q):
        index = batch.pick(keys)
        if index is None:
            break
        batch.add(index)
    return batch.indices(q)


def unique_drugs(indices: torch.Tensor, candidate_drugs: torch.Tensor) -> int:
    """Number of distinct drugs in a batch.

    Args:
        indices: ``(q,)`` candidate indices of the batch.
        candidate_drugs: ``(N, 2)`` drug indices of each candidate.

    Returns:
        the number of distinct drug indices among ``candidate_drugs[indices]``.
    """
    indices = torch.as_tensor(indices, dtype=torch.long)
    return int(torch.as_tensor(candidate_drugs)[indices].unique().numel())
