"""Exceptions for bad input. Each carries the file, row and drug at fault where known.

Every error says what to do, and where the advice is an option (``on_invalid=drop``) it is spelled as the
running command takes it: :func:`option` gives ``key=value`` in the spelling that :func:`option_spelling`
set (a command-line entry point sets it for its call; Python code gets the keyword argument's name), or
``None`` when the command has no such option, so that a message never advises an option its reader cannot
set.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
from typing import Iterable, Iterator, Mapping

# Library keyword -> how the running command spells it (None: the command has no such option), and whether a
# command line (YAML values: true, null) is running. A keyword missing from the mapping is spelled as it is.
_SPELLING: contextvars.ContextVar[tuple[Mapping[str, str | None], bool]] = contextvars.ContextVar(
    "option_spelling", default=({}, False)
)


def option(keyword: str, value: object) -> str | None:
    """``"<option>=<value>"`` for the library keyword ``keyword`` as the running command spells it.

    ``None`` when the running command has no such option (see :func:`option_spelling`); in plain Python the
    keyword argument itself, e.g. ``option("on_invalid", "drop") == "on_invalid=drop"`` and
    ``option("header", False) == "header=False"`` (on a command line: ``false``).
    """
    mapping, command_line = _SPELLING.get()
    spelled = mapping.get(keyword, keyword)
    if spelled is None:
        return None
    if command_line and (value is None or isinstance(value, bool)):
        return f"{spelled}={'null' if value is None else str(value).lower()}"
    return f"{spelled}={value}"


@contextlib.contextmanager
def option_spelling(mapping: Mapping[str, str | None], command_line: bool = False) -> Iterator[None]:
    """Within the block, :func:`option` spells library keywords as ``mapping`` says (a command's options).

    Nested blocks merge: an outer block's spelling wins (a command line knows its own options best), but an
    inner ``None`` stays (a library function knows which keywords it lacks); a command line anywhere outside
    makes values YAML (``true``, ``null``). Example: ``{"on_invalid": "+data.screen.on_invalid", "header":
    "+data.screen.header"}`` with ``command_line=True`` for ``recover-train data=csv``.
    """
    outer, outer_command_line = _SPELLING.get()
    merged = {**mapping, **outer, **{k: None for k, v in mapping.items() if v is None}}
    token = _SPELLING.set((merged, command_line or outer_command_line))
    try:
        yield
    finally:
        _SPELLING.reset(token)


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


class DuplicateMoleculeError(ScreenDataError):
    """Two candidate drug ids are the same molecule once salts are stripped (e.g. a drug and its hydrochloride)."""


class ScaleMismatchError(ScreenDataError):
    """Measured files whose scores are on different scales (e.g. fractions in one, percentages in another)."""


class TooFewMeasurementsError(ScreenDataError):
    """Too few measurements, or all of one value, to fit a model that could rank a plate."""


class DataNotFoundError(ScreenDataError, FileNotFoundError):
    """The shared screen data (ALMANAC, O'Neil, ...) is not where it was looked for."""


class OutputPathError(ValueError):
    """An output path that cannot be written: an existing file (without overwrite), a folder, no permission."""


class OutputExistsError(OutputPathError, FileExistsError):
    """The output file exists and the command was not asked to overwrite it."""


class ConfigValueError(ValueError):
    """A configuration value has the wrong type or range; the message names the option key."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"option {key}: {message}")


class ResumeMismatchError(ValueError):
    """``resume=true`` was asked for a checkpoint written by a campaign with different result-relevant settings."""


class BadBlockError(ScreenDataError):
    """A dose-response block (one drug pair on one plate: drug A doses x drug B doses) that cannot be scored
    as it stands; ``block`` is its ``block_id`` and ``row`` the file line where it starts."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        drug: str | None = None,
        block: str | None = None,
    ) -> None:
        self.block = block
        super().__init__(f"block {block}: {message}" if block is not None else message, file=file, row=row, drug=drug)


class MissingSingleDrugError(BadBlockError):
    """A block without the single-drug row or column (the other drug at dose 0) that every score needs."""


class IncompleteDoseGridError(BadBlockError):
    """A block whose wells do not form a full grid (a dose of drug A missing at some dose of drug B)."""


class MixedUnitsError(BadBlockError):
    """One drug's concentrations in one block given in more than one unit."""


class NegativeDoseError(BadBlockError):
    """A negative concentration."""


class NonNumericDoseError(BadBlockError):
    """A concentration that is missing or not a number."""


class NonNumericResponseError(BadBlockError):
    """A response (% inhibition or % viability) that is missing, not a number or infinite."""


class MixedBlockError(BadBlockError):
    """One ``block_id`` used for more than one drug pair or cell line."""
