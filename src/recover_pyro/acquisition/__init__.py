"""Acquisition: turn posterior predictive samples into the next batch of experiments.

The decision side only ever sees Monte-Carlo samples ``samples`` of shape ``(S, N)`` (posterior samples x
candidates) on the original target scale, where higher means more synergistic. Pass
``PredictiveSamples.f`` to explore on epistemic uncertainty only (as RECOVER does), or
``PredictiveSamples.y()`` to include observation noise.

Three layers, following BoTorch's ``monte_carlo.py`` conventions but without depending on it:

* :mod:`~recover_pyro.acquisition.scores`: single-point scores ``(S, N) -> (N,)`` (:func:`greedy_scores`,
  :func:`ucb_scores`, :func:`ei_scores`, :func:`pi_scores`) and joint Monte-Carlo batch values
  (:func:`q_expected_improvement`, :func:`q_probability_of_improvement`);
* :mod:`~recover_pyro.acquisition.batch`: batches grown one pick at a time under the constraints
  (:func:`select_batch` for top-``q`` of scores, :func:`thompson_batch`, :func:`sequential_greedy_qei`,
  :func:`sequential_greedy_qpi`, :func:`random_batch`; the building block :class:`ConstrainedBatch`);
* :mod:`~recover_pyro.acquisition.strategies`: the strategies configs build (Hydra ``_target_``), one
  class per rule: :class:`UCB`, :class:`Greedy`, :class:`Thompson`, :class:`ExpectedImprovement`,
  :class:`ProbabilityOfImprovement`, :class:`QExpectedImprovement`, :class:`QProbabilityOfImprovement`,
  :class:`RandomAcquisition`, all subclasses of the abstract :class:`Acquisition`.
  ``Acquisition.from_kind("ucb", q=30)`` builds one from its kind string (:data:`KINDS`).

Every batch shares the same constraints:

* ``exclude`` ``(N,)`` bool: already measured candidates; they are never proposed.
* ``max_per_drug`` (needs ``candidate_drugs`` ``(N, 2)``): hard cap on how often one drug may appear in
  the batch. A cap is a constraint the biologist set, so it is never relaxed: when fewer than ``q``
  candidates satisfy the constraints, the strategy returns the smaller batch and emits a
  :class:`BatchShortfallWarning` saying how many it could choose.
* ``diversity_penalty`` (needs ``candidate_drugs``): soft push towards unique drugs. At each slot the
  value being maximised is lowered by ``diversity_penalty * scale * m`` where ``m`` is the number of times
  the candidate's drugs already appear in the batch and ``scale`` is the standard deviation of that value
  across the still-allowed candidates (1 if it is zero), so one setting means the same for every strategy.

Your own strategy: subclass :class:`Acquisition` and implement one method, :meth:`Acquisition.scores`
``(S, N) -> (N,)`` for a single-point rule (the inherited ``select`` applies the constraints), or
:meth:`Acquisition.select` for a rule that builds the whole batch. Add parameters as dataclass fields::

    from dataclasses import dataclass

    from recover_pyro.acquisition import Acquisition


    @dataclass
    class LowerQuantile(Acquisition):
        \"\"\"Cautious: the ``level`` quantile of each candidate's samples.\"\"\"

        level: float = 0.2

        def scores(self, samples, best_f=None, round=0):  # (S, N) -> (N,)
            return samples.quantile(self.level, dim=0)

``LowerQuantile(q=30, max_per_drug=3).select(samples, exclude=measured, candidate_drugs=drugs)`` then
works like the built-ins, and a config names it with ``acquisition._target_=my_module.LowerQuantile``
(e.g. ``acquisition=greedy acquisition._target_=my_module.LowerQuantile +acquisition.level=0.1``). Its
``name`` (for logs and plot titles) defaults to ``"lowerquantile"``; set the class attribute ``name`` to
change it, and ``needs_model = False`` if its picks do not depend on the sample values.
"""

from __future__ import annotations

from recover_pyro.acquisition.batch import (
    BatchConstraints,
    BatchShortfallWarning,
    ConstrainedBatch,
    SelectedBatch,
    random_batch,
    select_batch,
    sequential_greedy_qei,
    sequential_greedy_qpi,
    thompson_batch,
    unique_drugs,
)
from recover_pyro.acquisition.scores import (
    Utility,
    ei_scores,
    greedy_scores,
    pi_scores,
    q_expected_improvement,
    q_probability_of_improvement,
    ucb_kappa,
    ucb_scores,
)
from recover_pyro.acquisition.strategies import (
    KINDS,
    STRATEGIES,
    UCB,
    Acquisition,
    ExpectedImprovement,
    Greedy,
    ProbabilityOfImprovement,
    QExpectedImprovement,
    QProbabilityOfImprovement,
    RandomAcquisition,
    Thompson,
)

__all__ = [
    "KINDS",
    "STRATEGIES",
    "UCB",
    "Acquisition",
    "BatchConstraints",
    "BatchShortfallWarning",
    "ConstrainedBatch",
    "ExpectedImprovement",
    "Greedy",
    "ProbabilityOfImprovement",
    "QExpectedImprovement",
    "QProbabilityOfImprovement",
    "RandomAcquisition",
    "SelectedBatch",
    "Thompson",
    "Utility",
    "ei_scores",
    "greedy_scores",
    "pi_scores",
    "q_expected_improvement",
    "q_probability_of_improvement",
    "random_batch",
    "select_batch",
    "sequential_greedy_qei",
    "sequential_greedy_qpi",
    "thompson_batch",
    "ucb_kappa",
    "ucb_scores",
    "unique_drugs",
]
