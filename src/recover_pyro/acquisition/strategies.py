r"""Acquisition strategies: the objects configs build and campaigns call, one class per rule.

:class:`Acquisition` is the abstract base (and the extension point); each built-in rule is a small
dataclass subclass that either supplies single-point :meth:`~Acquisition.scores` ``(S, N) -> (N,)``
(turned into a batch by greedy top-``q`` under the constraints) or overrides :meth:`~Acquisition.select`
to build the batch itself:

* :class:`UCB` (``ucb``): top-``q`` of :math:`\hat\mu_n + \kappa_r \hat\sigma_n`;
* :class:`Greedy` (``greedy``): top-``q`` of the posterior mean :math:`\hat\mu_n`;
* :class:`ExpectedImprovement` (``ei``), :class:`ProbabilityOfImprovement` (``pi``): top-``q`` of
  Monte-Carlo EI / PI over the best measured value ``best_f``;
* :class:`Thompson` (``thompson``): one posterior sample row per slot, its argmax;
* :class:`QExpectedImprovement` (``qei``), :class:`QProbabilityOfImprovement` (``qpi``): joint
  Monte-Carlo qEI / qPI of the batch, maximised greedily slot by slot;
* :class:`RandomAcquisition` (``random``): uniformly random candidates, the baseline
  (``needs_model`` is False).

:data:`STRATEGIES` maps each kind (the class's ``name``) to its class; :meth:`Acquisition.from_kind`
builds one from the kind string.
"""

from __future__ import annotations

import dataclasses
import types
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import torch

from recover_pyro.acquisition.batch import (
    BatchConstraints,
    SelectedBatch,
    random_batch,
    select_batch,
    sequential_greedy_qei,
    sequential_greedy_qpi,
    thompson_batch,
)
from recover_pyro.acquisition.scores import (
    _check_q,
    _check_samples,
    _check_scalar,
    _check_tau,
    _ei_utility,
    _pi_utility,
    _prefix_values,
    ei_scores,
    greedy_scores,
    pi_scores,
    ucb_kappa,
    ucb_scores,
)
from recover_pyro.errors import closest_names
from recover_pyro.models.base import PredictiveSamples

__all__ = [
    "KINDS",
    "STRATEGIES",
    "UCB",
    "Acquisition",
    "ExpectedImprovement",
    "Greedy",
    "ProbabilityOfImprovement",
    "QExpectedImprovement",
    "QProbabilityOfImprovement",
    "RandomAcquisition",
    "Thompson",
]


def _no_point_scores(
    self: Acquisition, samples: torch.Tensor, best_f: float | torch.Tensor | None = None, round: int = 0
) -> torch.Tensor:
    """Stands in for :meth:`Acquisition.scores` in a strategy that overrides :meth:`Acquisition.select`."""
    raise NotImplementedError(f"{type(self).__name__} chooses whole batches in select(); it has no single-point scores")


@dataclass
class Acquisition(ABC):
    """Base class of every acquisition strategy: turns posterior samples into the next batch.

    A strategy is a dataclass (Hydra builds it from ``_target_`` and its fields; campaign checkpoints store
    ``dataclasses.asdict`` of it; ``dataclasses.replace(acq, q=...)`` resizes it). Subclass it and implement
    ONE method:

    * :meth:`scores` ``(S, N) -> (N,)`` for a single-point rule: the inherited :meth:`select` then takes the
      greedy top-``q`` under the batch constraints (:func:`~recover_pyro.acquisition.batch.select_batch`);
    * or :meth:`select` for a rule that builds the batch itself (grow it with
      :class:`~recover_pyro.acquisition.batch.ConstrainedBatch`, or pass :meth:`constraints` to one of the
      builders in :mod:`recover_pyro.acquisition.batch`).

    Decorate the subclass with ``@dataclass`` when it adds parameters; a ``__post_init__`` of its own must
    call ``super().__post_init__()``. Set the class attributes ``name`` (short label; default: the class name
    in lower case) and ``needs_model`` as needed, without a type annotation (an annotated ``name`` would
    become a dataclass field).

    Attributes:
        q: batch size per round.
        max_per_drug: hard cap on appearances of one drug in a batch (``None``: no cap).
        diversity_penalty: soft penalty per prior appearance of a drug, in standard deviations of the
            value being maximised (:mod:`recover_pyro.acquisition.batch`).
        name: class attribute, short label for logs and plot titles (``"ucb"``, ``"random"``, ...).
        needs_model: class attribute, False when the picks do not depend on the sample values (only on
            ``N``), so a caller may skip fitting a model and pass any ``(S, N)`` tensor.
    """

    q: int = 30
    max_per_drug: int | None = None
    diversity_penalty: float = 0.0

    name: ClassVar[str] = "acquisition"
    needs_model: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__.lower()
        if cls.select is not Acquisition.select and getattr(cls.scores, "__isabstractmethod__", False):
            # A batch rule: select() is the strategy and scores() is never called, so it is not abstract.
            setattr(cls, "scores", _no_point_scores)

    def __post_init__(self) -> None:
        self.q = _check_q(self.q)
        if self.max_per_drug is not None and (int(self.max_per_drug) != self.max_per_drug or self.max_per_drug < 1):
            raise ValueError(f"max_per_drug must be None or a positive integer, got {self.max_per_drug!r}")
        if _check_scalar("diversity_penalty", self.diversity_penalty) < 0:
            raise ValueError(f"diversity_penalty must be >= 0, got {self.diversity_penalty}")

    @classmethod
    def from_kind(cls, kind: str, **kwargs: Any) -> Acquisition:
        """The built-in strategy called ``kind``, e.g. ``Acquisition.from_kind("ucb", q=30, kappa=1.0)``.

        Args:
            kind: one of :data:`KINDS` (``ucb``, ``greedy``, ``thompson``, ``ei``, ``pi``, ``qei``, ``qpi``,
                ``random``).
            **kwargs: the strategy's parameters (its dataclass fields, e.g. ``q``, ``kappa``, ``tau``).

        Returns:
            ``STRATEGIES[kind](**kwargs)``.

        Raises:
            ValueError: unknown ``kind`` (the message lists the kinds and the closest one).
            TypeError: a keyword the strategy does not take (the message lists those it does).
        """
        if kind not in STRATEGIES:
            raise ValueError(
                f"unknown acquisition kind {kind!r}; choose one of {list(KINDS)} "
                f"(closest: {closest_names(str(kind), KINDS, n=2)})"
            )
        strategy = STRATEGIES[kind]
        params = [f.name for f in dataclasses.fields(strategy) if f.init]
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise TypeError(
                f"acquisition kind {kind!r} ({strategy.__name__}) takes no {', '.join(map(repr, unknown))}; "
                f"its parameters: {', '.join(params)}"
            )
        return strategy(**kwargs)

    @staticmethod
    def as_samples(samples: torch.Tensor | PredictiveSamples) -> torch.Tensor:
        """The ``(S, N)`` sample matrix a strategy works on, checked (finite, floating point, ``S, N >= 1``).

        Args:
            samples: ``(S, N)`` posterior predictive samples, or :class:`PredictiveSamples` (its ``f``, the
                samples of the noise-free function, is used).

        Returns:
            ``(S, N)`` tensor.
        """
        if isinstance(samples, PredictiveSamples):
            samples = samples.f
        return _check_samples(samples)

    def constraints(
        self, exclude: torch.Tensor | None = None, candidate_drugs: torch.Tensor | None = None
    ) -> BatchConstraints:
        """The batch constraints of this strategy, as keyword arguments for the batch builders.

        Args:
            exclude: ``(N,)`` bool, True for already measured candidates.
            candidate_drugs: ``(N, 2)`` long drug indices of each candidate.

        Returns:
            ``{"exclude", "candidate_drugs", "max_per_drug", "diversity_penalty"}``.
        """
        return BatchConstraints(
            exclude=exclude,
            candidate_drugs=candidate_drugs,
            max_per_drug=self.max_per_drug,
            diversity_penalty=self.diversity_penalty,
        )

    @abstractmethod
    def scores(self, samples: torch.Tensor, best_f: float | torch.Tensor | None = None, round: int = 0) -> torch.Tensor:
        """Single-point acquisition scores, higher is better (implement this OR override :meth:`select`).

        Called by :meth:`select` with positional arguments, after the samples have been checked.

        Args:
            samples: ``(S, N)`` posterior predictive samples.
            best_f: best value measured so far (``None`` when the caller has none).
            round: acquisition round, ``0`` for the first batch after the initial one.

        Returns:
            ``(N,)`` finite scores.
        """

    def tiebreak(self, samples: torch.Tensor) -> torch.Tensor | None:
        """Secondary key for exactly tied :meth:`scores` (``None``: ties go to the lowest index).

        Args:
            samples: ``(S, N)`` posterior predictive samples.

        Returns:
            ``(N,)`` tensor or ``None``.
        """
        return None

    def select(
        self,
        samples: torch.Tensor | PredictiveSamples,
        exclude: torch.Tensor | None = None,
        candidate_drugs: torch.Tensor | None = None,
        best_f: float | torch.Tensor | None = None,
        round: int = 0,
        generator: torch.Generator | None = None,
    ) -> SelectedBatch:
        """Choose the next batch of ``q`` distinct candidates.

        The base implementation takes the greedy top-``q`` of :meth:`scores` under the constraints
        (exact ties ordered by :meth:`tiebreak`); strategies that build the batch themselves override it.

        Args:
            samples: ``(S, N)`` posterior predictive samples, or :class:`PredictiveSamples` (its ``f`` is used).
            exclude: ``(N,)`` bool, True for already measured candidates (never proposed).
            candidate_drugs: ``(N, 2)`` long drug indices (needed for ``max_per_drug`` / ``diversity_penalty``).
            best_f: best value measured so far; required by the improvement-based strategies.
            round: acquisition round (sets the UCB weight).
            generator: randomness for the stochastic strategies (Thompson, random).

        Returns:
            :class:`SelectedBatch` of ``(q,)`` indices in pick order (fewer, with a
            :class:`~recover_pyro.acquisition.batch.BatchShortfallWarning`, when the constraints leave
            fewer) and ``(q,)`` scores: here the single-point score of each pick.
        """
        samples = self.as_samples(samples)
        scores = self.scores(samples, best_f, round)
        n = samples.shape[1]
        if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (n,):
            got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise ValueError(f"{type(self).__name__}.scores must return a tensor of shape (N,) = ({n},), got {got}")
        indices = select_batch(
            scores, self.q, tiebreak=self.tiebreak(samples), **self.constraints(exclude, candidate_drugs)
        )
        return SelectedBatch(indices, scores[indices])

    def _require_best_f(self, best_f: float | torch.Tensor | None) -> float:
        """``best_f`` as a finite float; a clear error when the caller gave none."""
        if best_f is None:
            raise ValueError(f"acquisition {self.name!r} needs best_f, the best value measured so far")
        return _check_scalar("best_f", best_f)


# ---------------------------------------------------------------------------------------------------
# Single-point rules: implement scores()
# ---------------------------------------------------------------------------------------------------


@dataclass
class UCB(Acquisition):
    """Upper confidence bound: top-``q`` of :math:`\\hat\\mu_n + \\kappa_r \\hat\\sigma_n`
    (:func:`~recover_pyro.acquisition.scores.ucb_scores`), :math:`\\kappa_r = \\kappa \\cdot
    \\text{kappa\\_decay}^r` in round ``r``.

    Attributes:
        kappa: exploration weight at round 0, ``>= 0`` (RECOVER uses 1).
        kappa_decay: per-round multiplicative decay, ``>= 0`` (1: constant).
    """

    name = "ucb"

    kappa: float = field(default=1.0, kw_only=True)
    kappa_decay: float = field(default=1.0, kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        ucb_kappa(0, self.kappa, self.kappa_decay)  # validates both

    def kappa_at(self, round: int) -> float:
        """UCB weight :math:`\\kappa_r` for ``round`` (see :func:`~recover_pyro.acquisition.scores.ucb_kappa`).

        Args:
            round: acquisition round, ``>= 0``.
        """
        return ucb_kappa(round, self.kappa, self.kappa_decay)

    def scores(self, samples: torch.Tensor, best_f: float | torch.Tensor | None = None, round: int = 0) -> torch.Tensor:
        """``(N,)`` UCB scores of ``(S, N)`` ``samples`` with this round's weight (``best_f`` unused)."""
        return ucb_scores(samples, self.kappa_at(round))


@dataclass
class Greedy(Acquisition):
    """Pure exploitation: top-``q`` of the posterior mean (:func:`~recover_pyro.acquisition.scores.greedy_scores`)."""

    name = "greedy"

    def scores(self, samples: torch.Tensor, best_f: float | torch.Tensor | None = None, round: int = 0) -> torch.Tensor:
        """``(N,)`` posterior mean of ``(S, N)`` ``samples``."""
        return greedy_scores(samples)


@dataclass
class ExpectedImprovement(Acquisition):
    """Top-``q`` of Monte-Carlo expected improvement over ``best_f``
    (:func:`~recover_pyro.acquisition.scores.ei_scores`); exact ties (e.g. zero EI) go to the higher mean."""

    name = "ei"

    def scores(self, samples: torch.Tensor, best_f: float | torch.Tensor | None = None, round: int = 0) -> torch.Tensor:
        """``(N,)`` :math:`\\frac1S \\sum_s \\max(Y_{sn} - f^*, 0)` of ``(S, N)`` ``samples``; needs ``best_f``."""
        return ei_scores(samples, self._require_best_f(best_f))

    def tiebreak(self, samples: torch.Tensor) -> torch.Tensor:
        """``(N,)`` posterior mean of ``(S, N)`` ``samples``."""
        return samples.mean(0)


@dataclass
class ProbabilityOfImprovement(Acquisition):
    """Top-``q`` of Monte-Carlo probability of improvement over ``best_f``
    (:func:`~recover_pyro.acquisition.scores.pi_scores`); exact ties go to the higher mean.

    Attributes:
        tau: temperature of the smoothed indicator, in target units; ``None`` uses the exact indicator.
    """

    name = "pi"

    tau: float | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_tau(self.tau)

    def scores(self, samples: torch.Tensor, best_f: float | torch.Tensor | None = None, round: int = 0) -> torch.Tensor:
        """``(N,)`` :math:`\\frac1S \\sum_s 1[Y_{sn} > f^*]` of ``(S, N)`` ``samples``; needs ``best_f``."""
        return pi_scores(samples, self._require_best_f(best_f), tau=self.tau)

    def tiebreak(self, samples: torch.Tensor) -> torch.Tensor:
        """``(N,)`` posterior mean of ``(S, N)`` ``samples``."""
        return samples.mean(0)


# ---------------------------------------------------------------------------------------------------
# Batch rules: override select()
# ---------------------------------------------------------------------------------------------------


@dataclass
class Thompson(Acquisition):
    """Batch Thompson sampling: one posterior sample row per slot, its argmax among the allowed candidates
    (:func:`~recover_pyro.acquisition.batch.thompson_batch`). Its batch scores are the posterior means."""

    name = "thompson"

    def select(
        self,
        samples: torch.Tensor | PredictiveSamples,
        exclude: torch.Tensor | None = None,
        candidate_drugs: torch.Tensor | None = None,
        best_f: float | torch.Tensor | None = None,
        round: int = 0,
        generator: torch.Generator | None = None,
    ) -> SelectedBatch:
        """Thompson batch (see :meth:`Acquisition.select`; ``best_f`` and ``round`` unused), scored by the
        ``(q,)`` posterior mean of each pick; ``generator`` draws the sample rows."""
        samples = self.as_samples(samples)
        indices = thompson_batch(samples, self.q, generator=generator, **self.constraints(exclude, candidate_drugs))
        return SelectedBatch(indices, samples.mean(0)[indices])


@dataclass
class QExpectedImprovement(Acquisition):
    """Joint Monte-Carlo batch expected improvement (BoTorch's qEI), maximised greedily slot by slot
    (:func:`~recover_pyro.acquisition.batch.sequential_greedy_qei`).

    Its batch scores are the joint qEI of the batch up to and including each pick (non-decreasing).
    """

    name = "qei"

    def select(
        self,
        samples: torch.Tensor | PredictiveSamples,
        exclude: torch.Tensor | None = None,
        candidate_drugs: torch.Tensor | None = None,
        best_f: float | torch.Tensor | None = None,
        round: int = 0,
        generator: torch.Generator | None = None,
    ) -> SelectedBatch:
        """Sequential greedy qEI batch (see :meth:`Acquisition.select`; needs ``best_f``; ``round`` and
        ``generator`` unused), scored by the ``(q,)`` joint qEI of each prefix."""
        samples = self.as_samples(samples)
        f_star = self._require_best_f(best_f)
        indices = sequential_greedy_qei(samples, self.q, f_star, **self.constraints(exclude, candidate_drugs))
        values = _prefix_values(samples, indices, _ei_utility(f_star)) if len(indices) else samples.new_zeros(0)
        return SelectedBatch(indices, values)


@dataclass
class QProbabilityOfImprovement(Acquisition):
    """Joint Monte-Carlo batch probability of improvement (BoTorch's qPI), maximised greedily slot by slot
    (:func:`~recover_pyro.acquisition.batch.sequential_greedy_qpi`).

    Its batch scores are the joint qPI of the batch up to and including each pick (non-decreasing).

    Attributes:
        tau: temperature of the smoothed indicator, in target units; ``None`` uses the exact indicator.
    """

    name = "qpi"

    tau: float | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_tau(self.tau)

    def select(
        self,
        samples: torch.Tensor | PredictiveSamples,
        exclude: torch.Tensor | None = None,
        candidate_drugs: torch.Tensor | None = None,
        best_f: float | torch.Tensor | None = None,
        round: int = 0,
        generator: torch.Generator | None = None,
    ) -> SelectedBatch:
        """Sequential greedy qPI batch (see :meth:`Acquisition.select`; needs ``best_f``; ``round`` and
        ``generator`` unused), scored by the ``(q,)`` joint qPI of each prefix."""
        samples = self.as_samples(samples)
        f_star = self._require_best_f(best_f)
        indices = sequential_greedy_qpi(
            samples, self.q, f_star, tau=self.tau, **self.constraints(exclude, candidate_drugs)
        )
        utility = _pi_utility(f_star, self.tau)
        values = _prefix_values(samples, indices, utility) if len(indices) else samples.new_zeros(0)
        return SelectedBatch(indices, values)


@dataclass
class RandomAcquisition(Acquisition):
    """Uniformly random unmeasured candidates (:func:`~recover_pyro.acquisition.batch.random_batch`): the
    baseline every strategy must beat. Only ``N`` is read from the samples (``needs_model`` is False); its
    batch scores are the posterior means of the picks."""

    name = "random"
    needs_model = False

    def select(
        self,
        samples: torch.Tensor | PredictiveSamples,
        exclude: torch.Tensor | None = None,
        candidate_drugs: torch.Tensor | None = None,
        best_f: float | torch.Tensor | None = None,
        round: int = 0,
        generator: torch.Generator | None = None,
    ) -> SelectedBatch:
        """Random batch (see :meth:`Acquisition.select`; ``best_f`` and ``round`` unused), scored by the
        ``(q,)`` posterior mean of each pick; ``generator`` draws the random keys."""
        samples = self.as_samples(samples)
        n = samples.shape[1]
        indices = random_batch(n, self.q, generator=generator, **self.constraints(exclude, candidate_drugs))
        return SelectedBatch(indices, samples.mean(0)[indices])


STRATEGIES: Mapping[str, type[Acquisition]] = types.MappingProxyType(
    {
        strategy.name: strategy
        for strategy in (
            UCB,
            Greedy,
            Thompson,
            ExpectedImprovement,
            ProbabilityOfImprovement,
            QExpectedImprovement,
            QProbabilityOfImprovement,
            RandomAcquisition,
        )
    }
)
"""The built-in strategies by kind (their ``name``), as :meth:`Acquisition.from_kind` looks them up."""

KINDS: tuple[str, ...] = tuple(STRATEGIES)
"""The built-in kinds: ``ucb``, ``greedy``, ``thompson``, ``ei``, ``pi``, ``qei``, ``qpi``, ``random``."""
