"""Exceptions for bad screen input. Each carries the file, row and drug at fault where known."""

from __future__ import annotations

import difflib
from typing import Iterable


class ScreenDataError(ValueError):
    """Base class: a problem with input data, located by ``file``, ``row`` (1-based line) and ``drug``."""

    def __init__(
        self, message: str, *, file: str | None = None, row: int | None = None, drug: str | None = None
    ) -> None:
        self.file, self.row, self.drug = file, row, drug
        where = ", ".join(
            p
            for p in (
                f"file {file}" if file else "",
                f"row {row}" if row is not None else "",
                f"drug {drug!r}" if drug is not None else "",
            )
            if p
        )
        super().__init__(f"{message} ({where})" if where else message)


class MissingColumnsError(ScreenDataError):
    """A required column is absent."""


class InvalidSmilesError(ScreenDataError):
    """RDKit cannot parse a drug's SMILES."""


class UnknownDrugError(ScreenDataError):
    """An experiment references a drug that has no SMILES / no entry in the drug table."""


class InvalidScoreError(ScreenDataError):
    """A score is NaN, infinite or not a number."""


class ConflictingSmilesError(ScreenDataError):
    """One drug id is given two different SMILES."""


class ConflictingMeasurementError(ScreenDataError):
    """The same (pair, cell line) is measured twice with incompatible values under a strict rule."""


class EmptySelectionError(ScreenDataError):
    """Filtering left nothing (e.g. a cell-line name that is not present)."""


def closest_names(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Names in ``candidates`` close to ``name`` (case-insensitive), for error messages; ``[]`` when none is.

    The cutoff is strict on purpose: listing unrelated names as "closest" misleads more than listing none.
    """
    candidates = [str(c) for c in candidates]
    lower = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(name.lower(), list(lower), n=n, cutoff=0.6)
    return [lower[h] for h in hits]


class DamagedFileError(ScreenDataError):
    """A file the library wrote earlier (checkpoint, cache, table) is truncated, empty or not what it claims."""


class SelfPairError(ScreenDataError):
    """A combination names the same drug twice."""


class UnreadableTextError(ScreenDataError):
    """A text file is not UTF-8 (or UTF-16 with a byte-order mark)."""


class ConfigValueError(ValueError):
    """A configuration value has the wrong type or range; the message names the option key."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"option {key}: {message}")


class ResumeMismatchError(ValueError):
    """``resume=true`` was asked for a checkpoint written by a campaign with different result-relevant settings."""
