"""Named errors on the command line: one message, exit status 2, the traceback only on request.

Every command wraps its work in :func:`reported_errors`. A named error (:data:`NAMED_ERRORS`: the classes of
:mod:`recover_pyro.errors`, which name the file, line, drug or option at fault and what to do) is printed
to stderr as one message, ``Error: <class>: <message>``, recorded in the run's ``<command>.log`` and ends
the command with exit status :data:`EXIT_CODE`; ``HYDRA_FULL_ERROR=1`` (Hydra's own switch) shows the
full traceback instead. In a multirun (``-m``) the job's error is raised as a :class:`CommandError`, which
Hydra prints without a traceback, so the sweeper still sees a failed job. Anything else (a bug) keeps
Hydra's report with its traceback.

Within the block, advice naming a library keyword is spelled as the command's option
(:func:`recover_pyro.errors.option`): ``recover-train data=csv`` reads ``+data.screen.on_invalid=drop``
where Python reads ``on_invalid=drop`` (:func:`loader_spelling`).
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Iterator, Mapping

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from recover_pyro.errors import (
    ConfigValueError,
    OutputPathError,
    ResumeMismatchError,
    ScreenDataError,
    option_spelling,
)

log = logging.getLogger(__name__)

#: The errors printed as one message; all of :mod:`recover_pyro.errors`.
NAMED_ERRORS: tuple[type[Exception], ...] = (ScreenDataError, ConfigValueError, ResumeMismatchError, OutputPathError)
#: Exit status of a command stopped by a named error (Hydra's own errors exit with 1).
EXIT_CODE = 2
#: Set to ``1`` for the full traceback of a named error (Hydra's switch for its own errors).
FULL_ERROR_ENV = "HYDRA_FULL_ERROR"
#: Keywords of the screen loaders that advice may name; a train or campaign run sets them under ``data.screen``.
LOADER_KEYWORDS = ("on_invalid", "on_unknown_drug", "header", "score_columns", "aggregate", "drug_id_column")


class CommandError(CompactHydraException):
    """A named error of one multirun job; Hydra prints its message without a traceback."""


def loader_spelling(cfg: DictConfig) -> dict[str, str | None]:
    """Library keyword -> option of ``recover-train`` / ``recover-campaign`` for the loader in ``cfg.data``.

    A key the data config already has is set as ``data.screen.<key>=...``; one it lacks is added with
    ``+data.screen.<key>=...`` (Hydra refuses the bare form for a key not in the config). The data folder of
    the loaders' ``root`` is the root option ``data_root``.
    """
    screen = OmegaConf.select(cfg, "data.screen", default=None) or {}
    spelling: dict[str, str | None] = {
        kw: f"data.screen.{kw}" if kw in screen else f"+data.screen.{kw}" for kw in LOADER_KEYWORDS
    }
    spelling["root"] = "data_root"
    return spelling


def named_error(err: BaseException) -> Exception | None:
    """``err`` if it is a named error, or the named error Hydra wrapped in an ``InstantiationException``
    (raised inside a ``_target_``, e.g. a loader); ``None`` for anything else."""
    if isinstance(err, NAMED_ERRORS):
        return err
    if isinstance(err, InstantiationException) and err.__cause__ is not None:
        return named_error(err.__cause__)
    return None


def _is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _to_log_files(message: str) -> None:
    """Record ``message`` in the log files of the root logger only (the console gets it once, on stderr)."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (message,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


@contextmanager
def reported_errors(spelling: Mapping[str, str | None] | None = None) -> Iterator[None]:
    """Run the block of a command; report a named error as the module docstring says.

    Args:
        spelling: library keyword -> the command's option, for the advice in messages (see
            :func:`recover_pyro.errors.option_spelling`); ``None``: the keywords are the options.
    """
    try:
        with option_spelling(spelling or {}, command_line=True):
            yield
    except Exception as raised:
        err = named_error(raised)
        if err is None or os.environ.get(FULL_ERROR_ENV) == "1":
            raise
        message = f"{type(err).__name__}: {err}"
        _to_log_files(message)
        if _is_multirun():
            raise CommandError(message) from err
        print(f"Error: {message}", file=sys.stderr)
        print(f"(Set the environment variable {FULL_ERROR_ENV}=1 for the traceback.)", file=sys.stderr)
        raise SystemExit(EXIT_CODE) from None
