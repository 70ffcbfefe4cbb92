"""The hook through which linear layers learn that a weight is a Normal sample, and the closed form they use then.

A layer of :mod:`recover_pyro.models.predictor` asks :func:`weight_moments` whether the weight tensor it is
about to apply is a sample whose Normal distribution someone recorded (the Pyro wing's
:class:`~recover_pyro.bnn.local_reparam.LocalReparam` during SVI). If so, it samples its pre-activations per
row from their closed-form Normal (:func:`local_reparam_linear`, local reparameterisation; Kingma, Salimans &
Welling 2015) instead of applying the one weight sample to every row. The models layer stays plain torch:
it only keeps the stack of active lookups; what a lookup knows is the caller's business.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor


class Moments(NamedTuple):
    """Mean and standard deviation ``(*shape)`` of one Normal weight site."""

    loc: Tensor
    scale: Tensor


MomentLookup = Callable[[Tensor], "Moments | None"]
"""``lookup(weight) -> Moments | None``: the Normal behind this very tensor, if recorded."""

# The lookups now active (innermost last); layers consult the innermost one.
ACTIVE_LOOKUPS: list[MomentLookup] = []


def weight_moments(value: Tensor | None) -> Moments | None:
    """The Normal that the innermost active lookup recorded for ``value``, else ``None`` (no lookup active, a
    plain parameter, or a site not chosen)."""
    if value is None or not ACTIVE_LOOKUPS:
        return None
    return ACTIVE_LOOKUPS[-1](value)


def local_reparam_linear(x: Tensor, weight: Moments, bias: Moments | Tensor | None) -> Tensor:
    """Pre-activations :math:`x W^T + b` sampled per row from their closed-form Normal.

    With :math:`w_{ji} \\sim N(\\mu_{ji}, s_{ji}^2)` and :math:`b_j \\sim N(\\nu_j, t_j^2)` independent,
    :math:`(x W^T + b)_j \\sim N\\big((x \\mu^T + \\nu)_j, (x^2 (s^2)^T + t^2)_j\\big)`.

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
