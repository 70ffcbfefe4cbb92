"""Training-loop utilities shared by SVI (:mod:`recover_pyro.bnn.inference`) and the baselines."""

from __future__ import annotations

import copy
import math
from typing import Any, ContextManager, Iterable, Iterator

import torch

from recover_pyro.data.screen import Pairs


def forked_rng(device: torch.device) -> ContextManager[None]:
    """Fork torch's global RNG of the CPU and, for a CUDA ``device``, of that GPU: seeding inside leaves
    the caller's RNG state as it was."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def adam(params: Iterable[Any], lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """:class:`torch.optim.Adam` over ``params`` (tensors or parameter groups), fused into one kernel per step.

    The fused implementation runs Adam's update of every parameter in a single operation instead of about
    ten per parameter tensor; the arithmetic is Adam's, so updates agree with the plain loop to float
    rounding. (On the CPU, a training step of the default network spent a third of its time in the plain
    loop.)
    """
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)


def minibatches(n: int, batch_size: int, generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Yield shuffled index tensors covering ``range(n)`` once, each of at most ``batch_size``."""
    perm = torch.randperm(n, generator=generator)
    for start in range(0, n, max(1, batch_size)):
        yield perm[start : start + batch_size]


def checked_targets(pairs: Pairs, what: str) -> torch.Tensor:
    """``(N,)`` float targets of ``pairs``; a clear error when they are missing, empty or not finite."""
    if pairs.y is None:
        raise ValueError(f"{what} pairs have no targets (y is None)")
    if len(pairs) == 0:
        raise ValueError(f"{what} pairs are empty")
    y = pairs.y.float()
    bad = torch.nonzero(~torch.isfinite(y)).flatten()
    if len(bad):
        raise ValueError(f"{what} targets contain {len(bad)} NaN/infinite values (first at row {int(bad[0])})")
    return y


class EarlyStopping:
    """Track a validation metric (lower is better), keep the best state, stop after ``patience`` misses.

    ``step(metric, state)`` returns True when training should stop; ``best_state`` is a deep copy of the
    state passed with the best metric so far, for the caller to restore.
    """

    def __init__(self, patience: int = 20, min_delta: float = 0.0) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.best = math.inf
        self.best_epoch = -1
        self.best_state: Any = None
        self._misses = 0
        self._epoch = -1

    def step(self, metric: float, state: Any) -> bool:
        self._epoch += 1
        if metric < self.best - self.min_delta:
            self.best, self.best_epoch, self._misses = metric, self._epoch, 0
            self.best_state = copy.deepcopy(state)
        else:
            self._misses += 1
        return self._misses >= self.patience
