"""How a result folder was made: commit, command, machine, times, written beside the results.

Every benchmark script wraps its run in :func:`recording`::

    with recording(out_folder, command=command_line(__file__, argv)) as manifest:
        ...  # write the result files into out_folder
        manifest.notes = "anything worth knowing about this run"

which leaves ``<out_folder>/manifest.json`` (a :class:`Manifest`): the git commit of the working directory and
whether the tree had uncommitted changes, the command, the machine (CPU model, cores, memory, OS, Python /
torch / pyro-ppl versions, GPU if torch sees one), start and finish times (UTC, ISO 8601), the wall time, the
files the run wrote and its status. A run that raises still writes its manifest, with ``"status": "failed"``
and the error, and the exception propagates. A folder that already has a manifest (an earlier run, e.g. one
that was killed and resumed, or another benchmark writing into the same folder) keeps it under ``earlier``.

The module is plain Python (no Hydra, no OmegaConf) so that any script or notebook can use it; the file is
written atomically (:func:`recover_pyro.records.files.atomic_write`) with the permissions the process's umask
gives a new file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from recover_pyro.errors import DamagedFileError
from recover_pyro.records.files import atomic_write, json_safe

MANIFEST_FILE = "manifest.json"
NOT_GIT = "not a git checkout"
NOT_RECORDED = "not recorded"
SCHEMA = 1
# At most this many entries of the lists a manifest carries (changed paths, outputs, earlier runs).
MAX_LISTED = 500
MAX_EARLIER = 50

PathLike = str | os.PathLike[str]
# Order of the keys in manifest.json: what a reader wants first comes first.
FIELD_ORDER = (
    "schema",
    "status",
    "backfilled",
    "description",
    "command",
    "commit",
    "dirty",
    "dirty_paths",
    "started",
    "finished",
    "wall_seconds",
    "machine",
    "outputs",
    "error",
    "notes",
    "extra",
    "earlier",
)


@dataclass
class Manifest:
    """Provenance of one result folder (the content of its ``manifest.json``).

    Attributes:
        command: the command line that made the results.
        commit: ``git rev-parse HEAD`` of the working directory's repository, or ``"not a git checkout"``.
        dirty: whether ``git status --porcelain`` listed changes when the run started (``None``: unknown).
        machine: what :func:`machine_description` returns (CPU, cores, memory, OS, versions, GPU).
        started: UTC start time, ISO 8601 (or ``"not recorded"`` for a backfilled manifest).
        finished: UTC finish time, ISO 8601; ``None`` while running.
        wall_seconds: seconds from start to finish (a backfilled manifest may give ``"not recorded"``).
        status: ``"running"``, ``"finished"`` or ``"failed"``.
        description: what the folder holds, in a few words (for ``benchmarks/results/INDEX.md``).
        outputs: files (relative to the folder) that the run wrote or changed.
        dirty_paths: the first paths ``git status --porcelain`` listed (what "dirty" refers to).
        backfilled: ``True`` when the manifest was recovered afterwards from git history and the result files.
        error: ``"<ExceptionType>: <message>"`` of a failed run.
        notes: free-form remarks.
        extra: free-form structured details (e.g. the sources of a backfilled manifest's fields).
        earlier: manifests of earlier runs into the same folder (newest first), as dictionaries.
        schema: version of this layout.
    """

    command: str
    commit: str
    dirty: bool | None
    machine: dict[str, Any]
    started: str
    finished: str | None = None
    wall_seconds: float | str | None = None
    status: str = "running"
    description: str = ""
    outputs: list[str] = field(default_factory=list)
    dirty_paths: list[str] = field(default_factory=list)
    backfilled: bool = False
    error: str | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    earlier: list[dict[str, Any]] = field(default_factory=list)
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        """The manifest as a JSON-ready dictionary (fields in a fixed, readable order: :data:`FIELD_ORDER`)."""
        data = dataclasses.asdict(self)
        return {k: data[k] for k in FIELD_ORDER if k in data} | {k: v for k, v in data.items() if k not in FIELD_ORDER}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """A manifest from :meth:`to_dict`'s dictionary; unknown keys (a newer layout) go to ``extra``.

        Raises:
            ValueError: if a required field (command, commit, started) is missing.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [k for k in ("command", "commit", "started") if k not in data]
        if missing:
            raise ValueError(f"manifest lacks the field(s) {missing}")
        known = {k: v for k, v in data.items() if k in names}
        unknown = {k: v for k, v in data.items() if k not in names}
        known.setdefault("dirty", None)
        known.setdefault("machine", {})
        manifest = cls(**known)
        if unknown:
            manifest.extra = {**manifest.extra, "unknown_fields": unknown}
        return manifest


# --- what is recorded ----------------------------------------------------------------------------
def utc_now() -> dt.datetime:
    """The current time in UTC (timezone-aware)."""
    return dt.datetime.now(dt.timezone.utc)


def iso(moment: dt.datetime | str) -> str:
    """``moment`` as an ISO 8601 string in UTC, to the second (strings are returned unchanged)."""
    if isinstance(moment, str):
        return moment
    if moment.tzinfo is None:
        moment = moment.astimezone()  # naive: local time
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def _git(args: Sequence[str], repo: Path) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):  # no git installed, repo folder missing, hung git
        return None


def git_state(repo: PathLike | None = None) -> tuple[str, bool | None, list[str]]:
    """``(commit, dirty, changed paths)`` of the git checkout containing ``repo`` (default: the working dir).

    Never raises: outside a checkout (or without git) the commit is ``"not a git checkout"`` and ``dirty``
    ``None``. Changed paths are what ``git status --porcelain`` lists (untracked files included), at most
    :data:`MAX_LISTED`.
    """
    where = Path(repo) if repo is not None else Path.cwd()
    head = _git(["rev-parse", "HEAD"], where)
    if head is None or head.returncode != 0:
        inside = _git(["rev-parse", "--git-dir"], where)
        if inside is not None and inside.returncode == 0:
            return "git checkout without a commit", None, []
        return NOT_GIT, None, []
    status = _git(["status", "--porcelain"], where)
    if status is None or status.returncode != 0:
        return head.stdout.strip(), None, []
    paths = [line[3:] for line in status.stdout.splitlines() if line.strip()]
    return head.stdout.strip(), bool(paths), paths[:MAX_LISTED]


def _cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _memory_gb() -> float | None:
    """Total physical memory in GiB (``/proc/meminfo``, else ``sysconf``); ``None`` if unknown."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (AttributeError, ValueError, OSError):
        return None


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _gpu() -> str | None:
    """Name (and count, if several) of the CUDA devices torch sees; ``None`` without torch or a GPU."""
    try:
        import torch
    except ImportError:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        count = torch.cuda.device_count()
        name = torch.cuda.get_device_name(0)
    except (RuntimeError, AssertionError):  # a broken driver must not break a benchmark's bookkeeping
        return None
    return name if count == 1 else f"{count} x {name}"


def machine_description() -> dict[str, Any]:
    """What ran the code: ``cpu`` (model name), ``cores`` (``os.cpu_count``), ``usable_cores`` (this
    process's CPU affinity), ``memory_gb``, ``os``, ``python``, ``torch``, ``pyro_ppl`` (installed
    versions; ``None`` if absent) and ``gpu`` (``None`` if torch sees no CUDA device)."""
    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = None
    torch_version = sys.modules["torch"].__version__ if "torch" in sys.modules else _version("torch")
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gb": _memory_gb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch_version,
        "pyro_ppl": _version("pyro-ppl"),
        "gpu": _gpu(),
    }


def command_line(script: PathLike | None = None, argv: Sequence[str] | None = None) -> str:
    """A shell-quoted command line: ``python <script> <argv...>``.

    Args:
        script: the script's path (e.g. ``__file__``; shown relative to the working directory when inside
            it). Default: ``sys.argv[0]``.
        argv: its arguments (default ``sys.argv[1:]``); a script's ``main(argv)`` passes its own, so that a
            call from a test or notebook records what it was given, not the caller's command line.
    """
    path = Path(script) if script is not None else Path(sys.argv[0])
    try:
        shown = str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        shown = str(path)
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["python", shown, *(str(a) for a in args)])


def collect_manifest(
    command: str,
    started: dt.datetime | str,
    finished: dt.datetime | str | None = None,
    repo: PathLike | None = None,
    *,
    description: str = "",
    **extra: Any,
) -> Manifest:
    """A manifest of a run of ``command`` started at ``started``, with this machine and the git state now.

    Args:
        command: the command line (see :func:`command_line`).
        started: start time (a timezone-aware datetime, or an ISO string kept as given).
        finished: finish time; given, the status is ``"finished"`` and ``wall_seconds`` the difference
            (when both are datetimes); ``None``: a running manifest.
        repo: a folder inside the git checkout to describe (default: the working directory).
        description: what the result folder holds, in a few words.
        **extra: free-form details stored under ``extra``.

    Returns:
        The :class:`Manifest` (not written; see :func:`write_manifest`).
    """
    commit, dirty, paths = git_state(repo)
    wall: float | None = None
    if isinstance(started, dt.datetime) and isinstance(finished, dt.datetime):
        wall = round((finished - started).total_seconds(), 3)
    return Manifest(
        command=command,
        commit=commit,
        dirty=dirty,
        machine=machine_description(),
        started=iso(started),
        finished=None if finished is None else iso(finished),
        wall_seconds=wall,
        status="running" if finished is None else "finished",
        description=description,
        dirty_paths=paths,
        extra=dict(extra),
    )


# --- files ---------------------------------------------------------------------------------------
def manifest_path(folder: PathLike) -> Path:
    """``<folder>/manifest.json``."""
    return Path(folder) / MANIFEST_FILE


def write_manifest(folder: PathLike, manifest: Manifest) -> Path:
    """Write ``manifest`` to ``<folder>/manifest.json`` atomically (the folder is created if needed).

    The file gets the mode a newly created file has under the process's umask (as every file
    :func:`~recover_pyro.records.files.atomic_write` writes).

    Returns:
        The path written.
    """
    text = json.dumps(json_safe(manifest.to_dict()), indent=2, allow_nan=False) + "\n"
    return atomic_write(manifest_path(folder), lambda handle: handle.write(text.encode("utf-8")))


def read_manifest(folder: PathLike) -> Manifest:
    """The manifest in ``<folder>/manifest.json``.

    Raises:
        FileNotFoundError: if the folder has no manifest.
        DamagedFileError: if the file is not a JSON manifest (truncated, edited by hand into invalid JSON).
    """
    path = manifest_path(folder)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, found {type(data).__name__}")
        return Manifest.from_dict(data)
    except (ValueError, TypeError, UnicodeDecodeError) as err:
        raise DamagedFileError(
            f"result manifest is damaged or not a manifest ({type(err).__name__}: {err}); "
            "delete it or restore it from git",
            file=str(path),
        ) from err


def _file_states(folder: Path) -> dict[str, tuple[int, int]]:
    """``relative path -> (mtime_ns, size)`` of the files below ``folder`` (the manifest itself and atomic
    writers' temporary files left out)."""
    states = {}
    for path in folder.rglob("*"):
        if path.name == MANIFEST_FILE or path.name.startswith(".tmp-"):
            continue
        try:
            if path.is_file():
                stat = path.stat()
                states[path.relative_to(folder).as_posix()] = (stat.st_mtime_ns, stat.st_size)
        except OSError:  # removed while we looked
            continue
    return states


def _changed_files(folder: Path, before: Mapping[str, tuple[int, int]]) -> list[str]:
    """Files below ``folder`` that are new or changed (time or size) since ``before``, sorted."""
    now = _file_states(folder)
    return sorted(name for name, state in now.items() if before.get(name) != state)[:MAX_LISTED]


def _earlier_runs(folder: Path) -> list[dict[str, Any]]:
    """The manifest already in ``folder`` (and its own earlier runs) as dictionaries, newest first."""
    path = manifest_path(folder)
    if not path.is_file():
        return []
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return [{"status": "unreadable manifest replaced", "file": str(path)}]
    if not isinstance(previous, dict):
        return []
    older = previous.pop("earlier", []) or []
    return [previous, *(e for e in older if isinstance(e, dict))][:MAX_EARLIER]


@contextmanager
def recording(
    folder: PathLike,
    command: str | None = None,
    *,
    description: str = "",
    repo: PathLike | None = None,
    **extra: Any,
) -> Iterator[Manifest]:
    """Time the block and write ``<folder>/manifest.json`` when it ends, also when it raises.

    The git state and the machine are taken when the block starts (the code that runs); ``outputs`` lists
    the files below ``folder`` that the block created or changed (modification time or size). A manifest
    already in the folder is kept in ``earlier``.

    Args:
        folder: the result folder (created if needed).
        command: the command line (default: ``python`` + ``sys.argv``; scripts pass
            :func:`command_line` of their own ``argv``).
        description: what the folder holds, in a few words.
        repo: a folder inside the git checkout (default: the working directory).
        **extra: free-form details stored under ``extra``.

    Yields:
        The running :class:`Manifest`; the block may set ``notes`` or add to ``extra``.

    Whatever the block raises is re-raised after the manifest is written with ``"status": "failed"`` (a
    ``SystemExit`` with code 0 or ``None`` counts as finished).
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    started = utc_now()
    before = _file_states(out)
    clock = time.perf_counter()
    manifest = collect_manifest(command or command_line(), started, repo=repo, description=description, **extra)

    def finish(status: str, error: BaseException | None = None) -> None:
        manifest.finished = iso(utc_now())
        manifest.wall_seconds = round(time.perf_counter() - clock, 3)
        manifest.status = status
        if error is not None:
            manifest.error = f"{type(error).__name__}: {error}"
        manifest.outputs = _changed_files(out, before)
        manifest.earlier = _earlier_runs(out)
        write_manifest(out, manifest)

    try:
        yield manifest
    except SystemExit as exit_:
        ok = exit_.code in (None, 0)
        _finish_quietly(finish, "finished" if ok else "failed", None if ok else exit_)
        raise
    except BaseException as err:
        _finish_quietly(finish, "failed", err)
        raise
    finish("finished")


def _finish_quietly(
    finish: Callable[[str, BaseException | None], None], status: str, error: BaseException | None
) -> None:
    """Write a failed run's manifest without masking the run's own exception if writing fails too."""
    try:
        finish(status, error)
    except Exception as write_error:  # the run's own exception is the one to see
        print(f"warning: could not write the result manifest: {write_error}", file=sys.stderr)
