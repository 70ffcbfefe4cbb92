"""Local reparameterisation (Kingma, Salimans & Welling 2015) of linear layers during SVI.

With a mean-field Normal guide :math:`w_{ji} \\sim N(\\mu_{ji}, s_{ji}^2)`, :math:`b_j \\sim N(\\nu_j, t_j^2)`,
the pre-activation of one input row :math:`x` is exactly

.. math:: (x W^T + b)_j \\sim N\\big((x \\mu^T + \\nu)_j,\\; (x^2 (s^2)^T + t^2)_j\\big),

independently over output units :math:`j`. Sampling it per row instead of applying one shared weight sample
to a whole minibatch gives every row independent noise: the Monte-Carlo estimate of the expected
log-likelihood keeps its mean and loses the covariance between rows, so its variance falls.

:class:`LocalReparam` is a Pyro messenger active around one ELBO evaluation. It records the guide's samples
of the chosen sites together with their Normal distributions; the model, replaying those samples, runs its
layers with them, and :class:`~recover_pyro.models.predictor.Linear` asks :func:`~recover_pyro.models.weight_moments.weight_moments` whether its
weight is such a sample, in which case it samples the pre-activations from the closed form instead. The ELBO's
sites and the KL term are untouched (the model still samples every weight site; the KL is Pyro's), and
outside the messenger (warm start, validation, prediction) every layer uses whole weight samples.

Exactness needs each datum to pass through the layer with **one** input row: a layer applied to two rows of
one datum (e.g. the per-drug MLP of both drugs of a pair) must share one weight between them, which
independent per-row noise would not. Which sites qualify is the caller's choice (see
:func:`recover_pyro.bnn.inference.local_reparam_sites`).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pyro.distributions import Independent, Normal
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import Message
from torch import Tensor

from recover_pyro.models.weight_moments import ACTIVE_LOOKUPS, Moments


def _normal(fn: Any) -> Normal | None:
    """The elementwise Normal behind ``fn`` (through ``Independent`` wrappers), or ``None``."""
    while isinstance(fn, Independent):
        fn = fn.base_dist
    return fn if isinstance(fn, Normal) else None


class LocalReparam(Messenger):
    """Record the guide's Normal samples of ``sites`` so that linear layers can sample their pre-activations.

    The first unobserved sample of a site seen while active (the guide's, since an ELBO runs the guide before
    the replayed model) is recorded with its distribution's ``loc`` and ``scale``; the model's replay of the
    same value adds nothing. Use one instance per ELBO evaluation (records are kept until it is left).

    Args:
        sites: Pyro site names eligible for local reparameterisation.

    Attributes:
        recorded: names of the sites recorded during the last use (kept after leaving, for checks: a site
            whose guide is not Normal is never recorded and keeps whole weight samples).
    """

    def __init__(self, sites: Collection[str]) -> None:
        super().__init__()
        self.sites = frozenset(sites)
        # id -> (the sample, its Normal or None when its distribution is not Normal); the sample is kept so that
        # an id reused by a later tensor cannot match.
        self._seen: dict[int, tuple[Tensor, Moments | None]] = {}
        self.recorded: set[str] = set()

    def __enter__(self) -> "LocalReparam":
        self._seen = {}
        self.recorded = set()
        ACTIVE_LOOKUPS.append(self.moments)
        super().__enter__()
        return self

    def __exit__(self, *args: Any) -> None:
        super().__exit__(*args)
        ACTIVE_LOOKUPS.remove(self.moments)
        self._seen = {}

    def _pyro_post_sample(self, msg: Message) -> None:
        if msg["is_observed"] or msg["name"] not in self.sites:
            return
        value = msg["value"]
        if not isinstance(value, Tensor) or id(value) in self._seen:
            # The model replaying the guide's sample: the guide's distribution (seen first) is what counts,
            # never the prior's (else a non-Normal guide would be read through a Normal prior's moments).
            return
        normal = _normal(msg["fn"])
        moments = None if normal is None else Moments(normal.loc.expand_as(value), normal.scale.expand_as(value))
        self._seen[id(value)] = (value, moments)
        if moments is not None:
            self.recorded.add(msg["name"])

    def moments(self, value: Tensor) -> Moments | None:
        """The recorded Normal of the sample ``value`` (the very tensor the guide drew), else ``None``."""
        seen = self._seen.get(id(value))
        return seen[1] if seen is not None and seen[0] is value else None
