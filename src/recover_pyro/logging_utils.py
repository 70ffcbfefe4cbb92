"""Logging helpers shared by the command-line entry points and the training loops.

Everything a run reports goes through :mod:`logging`, so Hydra's ``<job>.log`` file in the run directory
holds the complete record (data summary, early stopping, metrics, tables). tqdm bars write to the terminal
only; :func:`cli_logging` routes console log records through ``tqdm.write`` while bars are open, so a log
line never lands in the middle of a bar.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from typing import Iterator, Sequence

from tqdm.contrib.logging import logging_redirect_tqdm


@contextmanager
def cli_logging() -> Iterator[None]:
    """Console handlers of the root logger write through tqdm for the block (file handlers are untouched).

    Entry points wrap their work in it after Hydra has configured logging.
    """
    with logging_redirect_tqdm():
        yield


def announce_early_stop(log: logging.Logger, what: str, best_epoch: int, epochs_run: int, max_epochs: int) -> None:
    """One INFO line: which epoch's parameters were kept, out of how many run (and the maximum)."""
    stopped = "stopped early" if epochs_run < max_epochs else "ran all epochs"
    log.info(
        "%s: early stopping kept epoch %d (0-based) of %d run, %s (max %d)",
        what,
        best_epoch,
        epochs_run,
        stopped,
        max_epochs,
    )


def epoch_postfix(losses: Sequence[float], val_metric: Sequence[float], val_name: str = "val") -> dict[str, str]:
    """tqdm postfix of a training loop: the last epoch's loss and, with validation, its metric."""
    postfix = {"loss": f"{losses[-1]:.4g}"} if losses else {}
    if val_metric and math.isfinite(val_metric[-1]):
        postfix[val_name] = f"{val_metric[-1]:.4g}"
    return postfix
