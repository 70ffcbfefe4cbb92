"""Safe file output and checked loading of the files the library writes.

* Every result file (tables, JSON, checkpoints, plates) is written by :func:`atomic_write`: into a
  temporary file in the same folder, flushed, then moved over the target with :func:`os.replace`, so a
  crash or ``kill -9`` leaves either the old file or the new one, never a torn one. The file gets the mode
  any new file gets under the user's umask (``0o666 & ~umask``, e.g. ``0644``), not the ``0600`` of the
  temporary file, so colleagues on a shared server read a plate as they read any other file.
* :func:`refuse_overwrite` keeps a user's existing output unless they asked to replace it;
  :func:`check_output_file` refuses a folder or an unwritable place before any work is done.
* :func:`load_torch_file` reads a checkpoint with ``weights_only=True`` and turns torch's low-level
  errors (truncated zip, empty file, pickle opcode) into :class:`DamagedFileError` naming the file and what
  to do.
* :func:`spreadsheet_safe` neutralises text cells that a spreadsheet would run as a formula.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Any, Callable

import pandas as pd
import torch

from recover_pyro.errors import DamagedFileError, OutputExistsError, OutputPathError
from recover_pyro.errors import option as spell

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# First characters that make Excel / LibreOffice / Sheets evaluate a cell (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# What torch.load raises on a truncated, empty or foreign file (zip reader, unpickler, missing records).
# (OSError: torch's zip reader reports a truncated archive as "[Errno 22] Invalid argument".)
_LOAD_ERRORS = (
    RuntimeError,
    EOFError,
    zipfile.BadZipFile,
    pickle.UnpicklingError,
    KeyError,
    ValueError,
    AttributeError,
    IndexError,
    UnicodeDecodeError,
    OSError,
)


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, then move it onto ``path``.

    The temporary file lives in the same folder so that :func:`os.replace` is an atomic rename; on any
    error it is removed and ``path`` is left as it was. Before the rename it gets the mode of a newly
    created file under the process's umask (``mkstemp`` creates it ``0600``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            _chmod_new_file(handle.fileno())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def umask() -> int:
    """The process's umask, read without changing it where Linux shows it (``/proc/self/status``).

    Elsewhere the only portable way is to set it and restore it at once (``os.umask`` returns the old one).
    """
    try:
        with open("/proc/self/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _chmod_new_file(fd: int) -> None:
    """Give the open file ``fd`` the mode a new file gets under the umask (``0o666 & ~umask``)."""
    try:
        os.fchmod(fd, 0o666 & ~umask())
    except (AttributeError, OSError):  # no fchmod (Windows) or a file system without modes: keep mkstemp's
        pass


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_json(path: PathLike, obj: Any) -> Path:
    """Write strict JSON (NaN / infinity become ``null``) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(json_safe(obj), indent=2, allow_nan=False))


def atomic_write_csv(path: PathLike, frame: pd.DataFrame, sep: str = ",") -> Path:
    """Write ``frame`` (without its index) as CSV to ``path`` atomically."""
    return atomic_write_text(path, frame.to_csv(index=False, sep=sep))


def atomic_torch_save(path: PathLike, obj: Any) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def json_safe(value: Any) -> Any:
    """NaN / infinity -> ``None``, recursively through dicts, lists and tuples (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def refuse_overwrite(path: PathLike, overwrite: bool, option: str = "overwrite") -> None:
    """Raise :class:`~recover_pyro.errors.OutputExistsError` (a :class:`FileExistsError`) if ``path`` exists
    and ``overwrite`` is false (names the option)."""
    if Path(path).exists() and not overwrite:
        spelled = spell(option, True) or f"{option}=true"
        raise OutputExistsError(f"{path} already exists; choose another output file or set {spelled} to replace it")


def check_output_file(path: PathLike, overwrite: bool, option_name: str = "overwrite", key: str = "out") -> Path:
    """``path`` as a :class:`Path` once it is sure that a file can be written there; call it before the work.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is false (names ``option_name``).
        OutputPathError: ``path`` is a folder, its parent is a file, or the folder is not writable (names the
            option ``key`` that gave the path).
    """
    path = Path(path)
    spelled = spell(key, f"{path / 'plate.csv'}") if path.is_dir() else None
    if path.is_dir():
        raise OutputPathError(
            f"{path} is a folder, not a file; name the file to write" + (f", e.g. {spelled}" if spelled else "")
        )
    refuse_overwrite(path, overwrite, option_name)
    folder = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path.cwd())
    if not folder.is_dir():
        raise OutputPathError(f"cannot write {path}: {folder} is a file, not a folder; choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write {path}: no permission to write in {folder}; choose another folder")
    return path


def load_torch_file(path: PathLike, what: str, advice: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; damage raises :class:`DamagedFileError`.

    Args:
        what: what the file is, for the message (e.g. ``"campaign checkpoint"``).
        advice: what the user should do about a damaged file (e.g. "delete it and rerun without resume").
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise  # the file itself is fine or absent; the OS message names it
    except _LOAD_ERRORS as err:
        # torch's own advice (weights_only=False) would run arbitrary code from a file of unknown origin.
        raise DamagedFileError(
            f"{what} is damaged or not a {what} ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200] if str(err) else 'no detail'}); {advice}",
            file=str(path),
        ) from err


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells starting with ``= + - @`` (or tab / CR) get a leading ``'``.

    Numbers are untouched. Logs a warning naming the changed cells, since the file then differs from the
    input spelling.
    """
    out = frame.copy()
    for col in out.columns:
        if not (out[col].dtype == object or pd.api.types.is_string_dtype(out[col])):
            continue
        text = out[col].astype(str)
        risky = out[col].map(lambda v: isinstance(v, str) and v.startswith(FORMULA_PREFIXES))
        if risky.any():
            log.warning(
                "column %r: %d value(s) start with a formula character (e.g. %r); written with a "
                "leading ' so that a spreadsheet shows them as text",
                col,
                int(risky.sum()),
                text[risky].iloc[0],
            )
            out.loc[risky, col] = "'" + text[risky]
    return out
