"""Exceptions for bad screen input. Each carries the file, row and drug at fault where known."""

from __future__ import annotations

import difflib
from typing import Iterable


class ScreenDataError(ValueError):
    """Base class: a problem with input data, located by ``file``, ``row`` (1-based line) and ``drug``."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None,
                 drug: str | None = None) -> None:
        self.file, self.row, self.drug = file, row, drug
        where = ", ".join(p for p in (
            f"file {file}" if file else "",
            f"row {row}" if row is not None else "",
            f"drug {drug!r}" if drug is not None else "",
        ) if p)
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
    """Names in ``candidates`` closest to ``name`` (case-insensitive), for error messages."""
    candidates = [str(c) for c in candidates]
    lower = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(name.lower(), list(lower), n=n, cutoff=0.3)
    return [lower[h] for h in hits] or candidates[:n]
