"""Local reparameterisation (Kingma, Salimans & Welling 2015) of linear layers during SVI.

With a mean-field Normal guide :math:`w_{ji} \\sim N(\\mu_{ji}, s_{ji}^2)`, :math:`b_j \\sim N(\\nu_j, t_j^2)`,
the pre-activation of one input row :math:`x` is exactly

.. math:: (x W^T + b)_j \\sim N\\big((x \\mu^T + \\nu)_j,\\; (x^2 (s^2)^T + t^2)_j\\big),

independently over output units :math:`j`. Sampling it per row instead of applying one shared weight sample
to a whole minibatch gives every row independent noise: the Monte-Carlo estimate of the expected
log-likelihood keeps its mean and loses the covariance between rows, so its variance falls.

:class:`LocalReparam` is a Pyro messenger active around one ELBO evaluation. It records the guide's samples
of the chosen sites together with their Normal distributions; the model, replaying those samples, runs its
layers with them, and :class:`~recover_pyro.models.predictor.Linear` asks :func:`weight_moments` whether its
weight is such a sample, in which case it samples the pre-activations from the closed form instead. The ELBO's
sites and the KL term are untouched (the model still samples every weight site; the KL is Pyro's), and
outside the messenger (warm start, validation, prediction) every layer uses whole weight samples.

Exactness needs each datum to pass through the layer with **one** input row: a layer applied to two rows of
one datum (e.g. the per-drug MLP of both drugs of a pair) must share one weight between them, which
independent per-row noise would not. Which sites qualify is the caller's choice (see
:func:`recover_pyro.inference.local_reparam_sites`).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, NamedTuple

import torch
from pyro.distributions import Independent, Normal
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import Message
from torch import Tensor


class Moments(NamedTuple):
    """Mean and standard deviation ``(*shape)`` of one Normal weight site."""

    loc: Tensor
    scale: Tensor


# The LocalReparam messengers now entered (innermost last); layers consult the innermost one.
_ACTIVE: list["LocalReparam"] = []


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
        _ACTIVE.append(self)
        super().__enter__()
        return self

    def __exit__(self, *args: Any) -> None:
        super().__exit__(*args)
        _ACTIVE.remove(self)
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


def weight_moments(value: Tensor | None) -> Moments | None:
    """The Normal that the innermost active :class:`LocalReparam` recorded for ``value``, else ``None``
    (no messenger active, a plain parameter, or a site not chosen)."""
    if value is None or not _ACTIVE:
        return None
    return _ACTIVE[-1].moments(value)


def local_reparam_linear(x: Tensor, weight: Moments, bias: Moments | Tensor | None) -> Tensor:
    """Pre-activations :math:`x W^T + b` sampled per row from their closed-form Normal.

    Args:
        x: ``(*S, N, in)`` inputs.
        weight: the weight's Normal, ``loc`` / ``scale`` ``(out, in)``.
        bias: the bias's Normal ``(out,)``, a fixed bias ``(out,)`` or ``None``.

    Returns:
        ``(*S, N, out)``: mean :math:`x \\mu^T + \\nu`, variance :math:`x^2 (s^2)^T + t^2`, independent over
        rows and units.
    """
    mean = torch.matmul(x, weight.loc.transpose(-1, -2))
    var = torch.matmul(x.pow(2), weight.scale.pow(2).transpose(-1, -2))
    # Biases broadcast over rows (-2), as in batched_linear, so sample-batched weights (*S, out, in) also work.
    if isinstance(bias, Moments):
        mean = mean + bias.loc.unsqueeze(-2)
        var = var + bias.scale.pow(2).unsqueeze(-2)
    elif bias is not None:
        mean = mean + bias.unsqueeze(-2)
    # An all-zero input row (e.g. after ReLU) with a fixed bias has variance 0, where sqrt has no gradient.
    std = var.clamp_min(torch.finfo(var.dtype).tiny).sqrt()
    return mean + std * torch.randn_like(mean)
