"""Backfill ``manifest.json`` for result folders written before benchmarks recorded their own provenance.

    python scripts/backfill_manifests.py                 # every result folder under benchmarks/results
    python scripts/backfill_manifests.py --dry-run       # say what would be written

A *result folder* is a folder under ``benchmarks/results`` that holds result files itself (e.g.
``accuracy/``, ``speed/``, ``accuracy/test_sets/``, a paired-table folder such as ``discovery/uq_cells/``) or
that is a discovery benchmark's tag folder (``per_round.csv``, ``final.csv`` and the campaigns' ``runs/``, which
belong to it and get no manifest of their own). Its files are grouped by the run that wrote them (a table's
``<prefix>.csv`` / ``<prefix>_runs.csv`` / ``_paired.csv`` / ``_coverage.png``, a tag's campaigns), and each
group's provenance is recovered from what exists:

* **commit / date**: the commits that added or last changed the files (``git log --no-renames --name-only``);
  the manifest's ``commit`` is the newest of them. The results were made by the code of that commit or an
  earlier one, possibly with uncommitted changes: ``dirty`` is ``null`` (unknown).
* **command**: the commands of ``docs/benchmarks.md`` (its ``bash`` blocks, with their variables and ``for``
  loops expanded, and inline ``python scripts/...`` spans) whose ``--tag`` or ``--out`` names the files; else
  one reconstructed from the files themselves (an accuracy / novelty ``_runs.csv``'s data, score, split,
  experiment, seed and override columns; a tag's ``runs/<experiment>_s<seed>.csv`` names and pool size); else
  ``"not recorded"``.
* **machine**: the closing notes of every session (``issues stops``): every committed number was measured on
  this project's 2-core AMD EPYC with torch 2.13.0+cpu and pyro-ppl 1.9.2 and no GPU, except
  ``speed/speed_gpu.csv`` (session 3, 2026-11-25: the lent NVIDIA H100, whose ``device`` column names it; its
  "CPU only" rows are that machine's 16 CPU threads).
* **wall time**: what the files record (the sum of ``train_s + score_s + acquire_s`` over a tag's campaign
  rounds; the sum of ``fit_seconds`` over a ``_runs.csv``'s rows, rows repeated across merged tables counted
  once): a lower bound on the elapsed time (data loading, scoring of accuracy runs and aggregation are not
  in it; runs of parallel processes are added up); otherwise ``"not recorded"``.

Manifests written here carry ``"backfilled": true`` and ``extra.sources`` (where each field came from). The
script is idempotent (same inputs, same files; unchanged files are not rewritten) and never overwrites a
manifest that is not backfilled (one a benchmark wrote with :func:`recover_pyro.records.manifest.recording`).
"""

from __future__ import annotations

import argparse
import fnmatch
import itertools
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

import pandas as pd

from recover_pyro.records.manifest import MANIFEST_FILE, NOT_RECORDED, Manifest, write_manifest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path("benchmarks") / "results"
DOCS = ("docs/benchmarks.md", "docs/history.md")  # where commands are stated (every committed version)
SKIPPED_FILES = {MANIFEST_FILE, "INDEX.md"}

CLOSING_NOTES = (
    "closing notes of sessions 1-9 (`issues stops`): every number was measured on this project's 2-core AMD "
    "EPYC (torch pinned ==2.13.0 CPU wheel since session 1; 'torch 2.13.0+cpu, pyro-ppl 1.9.2; no GPU lent' in "
    "sessions 5-9), except session 3's GPU numbers (the lent NVIDIA H100, 2026-11-25)"
)
EPYC = {
    "cpu": "AMD EPYC",
    "cores": 2,
    "usable_cores": 2,
    "memory_gb": NOT_RECORDED,
    "os": NOT_RECORDED,
    "python": NOT_RECORDED,
    "torch": "2.13.0+cpu",
    "pyro_ppl": "1.9.2",
    "gpu": None,
}
H100 = {
    "cpu": NOT_RECORDED,
    "cores": 16,
    "usable_cores": 16,
    "memory_gb": NOT_RECORDED,
    "os": NOT_RECORDED,
    "python": NOT_RECORDED,
    "torch": NOT_RECORDED,
    "pyro_ppl": NOT_RECORDED,
    "gpu": "NVIDIA H100 80GB HBM3",
}
# Files measured elsewhere than on the project's CPU machine: (machine, where that is stated).
OTHER_MACHINES = {
    "speed/speed_gpu.csv": (
        H100,
        "session 3 closing note (2026-11-25): 'GPU numbers from the lent NVIDIA H100'; the file's device column; "
        "rows noted 'same machine, CPU only (16 threads)' ran on that machine's CPU",
    )
}
# What the folders that are not discovery tags hold (the index's "what it is").
DESCRIPTIONS = {
    "accuracy": "accuracy / calibration tables on one test set per split (benchmark_accuracy.py)",
    "accuracy/test_sets": "accuracy on further test sets (split.test_seed) and paired summaries (paired_accuracy.py)",
    "accuracy/novelty": "novelty: epistemic sd on new vs seen drugs (novelty_uncertainty.py)",
    "accuracy/pilots": "pilot: validation metrics of remedy variants on the unseen-drug split",
    "accuracy/recheck_speed": "accuracy re-check after the training-speed changes (benchmark_accuracy.py)",
    "speed": "speed / memory measurements (benchmark_speed.py)",
}
# Suffixes that a run's output prefix gets (benchmark_accuracy, novelty_uncertainty, paired_accuracy).
PREFIX_SUFFIXES = ("_runs.csv", "_paired.csv", "_coverage.png", ".csv", ".png")
CAMPAIGN_FILES = ("per_round.csv", "final.csv")
TIME_COLUMNS = ("train_s", "score_s", "acquire_s")
POOL_SIZES = {1476: "mcf7", 22737: "oneil"}  # candidates of benchmark_discovery.py's two protocols


# --- git -----------------------------------------------------------------------------------------
class Commit(NamedTuple):
    sha: str
    date: str
    subject: str


def file_history(root: Path, under: Path) -> dict[str, list[Commit]]:
    """Repository-relative path -> the commits that changed it, newest first (renames as delete + add)."""
    out = subprocess.run(
        ["git", "log", "--no-renames", "--name-only", "--format=%x00%H%x09%cI%x09%s", "--", str(under)],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    history: dict[str, list[Commit]] = {}
    for chunk in out.split("\x00")[1:]:
        head, _, names = chunk.partition("\n")
        sha, date, subject = head.split("\t", 2)
        for name in names.splitlines():
            if name.strip():
                history.setdefault(name.strip(), []).append(Commit(sha, date, subject))
    return history


def uncommitted(root: Path, under: Path) -> set[str]:
    """Paths below ``under`` that differ from HEAD or are untracked."""
    out = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "--", str(under)],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line[3:].strip() for line in out.splitlines() if line.strip()}


# --- commands stated in docs/benchmarks.md -------------------------------------------------------
class DocCommand(NamedTuple):
    line: int  # 1-based line of the Markdown file where it starts
    command: str
    tokens: tuple[str, ...]


_VAR = re.compile(r"\$\{(?P<n1>\w+)(?:(?P<op>%%|%|##|#)(?P<pat>[^}]*))?\}|\$(?P<n2>[A-Za-z_]\w*)")


def expand(text: str, variables: dict[str, str]) -> str:
    """Substitute ``$x``, ``${x}``, ``${x%pat}``, ``${x%%pat}``, ``${x#pat}``, ``${x##pat}`` for known ``x``;
    unknown variables are left as written."""

    def one(match: re.Match[str]) -> str:
        name = match.group("n1") or match.group("n2")
        if name not in variables:
            return match.group(0)
        value, op, pattern = variables[name], match.group("op"), match.group("pat") or ""
        cuts = range(len(value) + 1)
        if op in ("%", "%%"):  # remove the shortest (%) / longest (%%) matching suffix
            for k in reversed(cuts) if op == "%" else cuts:
                if fnmatch.fnmatchcase(value[k:], pattern):
                    return value[:k]
        elif op in ("#", "##"):  # remove the shortest (#) / longest (##) matching prefix
            for k in cuts if op == "#" else reversed(cuts):
                if fnmatch.fnmatchcase(value[:k], pattern):
                    return value[k:]
        return value

    return _VAR.sub(one, text)


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def statements(line: str) -> list[str]:
    """``line`` split at ``;`` outside quotes (shell statements), each stripped."""
    parts, current, quote = [], [], ""
    for char in line:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == ";":
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def doc_commands(text: str) -> list[DocCommand]:
    """Every ``python scripts/...`` command of a Markdown text: in fenced blocks (continuation lines joined,
    ``X=value`` variables and ``for x in ...; do ... done`` loops expanded, one command per loop value) and in
    inline code spans of the prose (placeholders such as ``<c>`` kept)."""
    lines = text.splitlines()
    variables: dict[str, str] = {}
    found: list[DocCommand] = []
    loops: list[tuple[str, list[str]]] = []
    in_block, i = False, 0
    while i < len(lines):
        if lines[i].startswith("```"):
            in_block, loops = not in_block, []
            i += 1
            continue
        if not in_block:
            i += 1
            continue
        start, line = i, lines[i]
        while line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1] + " " + lines[i].strip()
        i += 1
        line = re.sub(r"\s+#\s.*$", "", line).strip()  # a trailing comment
        if line.startswith("#"):
            continue
        for statement in statements(line):
            statement = re.sub(r"^do\s+", "", statement)
            if statement in ("do", ""):
                continue
            if statement == "done":
                loops = loops[:-1]
                continue
            loop = re.fullmatch(r"for (\w+) in (.+)", statement)
            if loop:
                loops.append((loop.group(1), _split(expand(loop.group(2), variables))))
                continue
            if re.match(r"(?:export\s+)?[A-Za-z_]\w*=", statement):  # X=value, X="a b" (not X=1 command)
                words = _split(statement)
                words = words[1:] if words[:1] == ["export"] else words
                if len(words) == 1:
                    name, value = words[0].split("=", 1)
                    variables[name] = expand(value, variables)
                    continue
            if not re.search(r"\bpython\b", statement):
                continue
            names = [name for name, _ in loops]
            for values in itertools.product(*(vals for _, vals in loops)):
                command = " ".join(expand(statement, {**variables, **dict(zip(names, values))}).split())
                if "scripts/" in command:
                    found.append(DocCommand(start + 1, command, tuple(_split(command))))
    # Inline spans (`python scripts/... `), possibly broken over lines, outside fenced blocks.
    outside = re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    for match in re.finditer(r"`(python\s+scripts/[^`]+)`", outside):
        command = " ".join(match.group(1).split())
        found.append(DocCommand(outside[: match.start()].count("\n") + 1, command, tuple(_split(command))))
    return sorted(found, key=lambda c: c.line)


class DocVersion(NamedTuple):
    """One committed version of a documentation file and the commands it states."""

    path: str
    commit: Commit
    commands: tuple[DocCommand, ...]
    text: str = ""


def doc_versions(root: Path, paths: Sequence[str]) -> list[DocVersion]:
    """Every committed version of the documentation ``paths`` (oldest first) with its commands. Committed
    versions, not the working tree: a result's command is looked up in the docs that described it then, and
    the answer does not change when the docs are rewritten later."""
    versions = []
    for path in paths:
        log = subprocess.run(
            ["git", "log", "--format=%H%x09%cI%x09%s", "--", path], cwd=root, capture_output=True, text=True, check=True
        ).stdout
        for line in log.splitlines():
            sha, date, subject = line.split("\t", 2)
            shown = subprocess.run(["git", "show", f"{sha}:{path}"], cwd=root, capture_output=True, text=True)
            if shown.returncode == 0:  # the file was deleted in this commit
                commands = tuple(doc_commands(shown.stdout))
                versions.append(DocVersion(path, Commit(sha, date, subject), commands, shown.stdout))
    return sorted(versions, key=lambda v: v.commit.date)


def _option(tokens: Sequence[str], name: str) -> str | None:
    for k, token in enumerate(tokens[:-1]):
        if token == name:
            return tokens[k + 1]
    return None


_PLACEHOLDER = re.compile(r"<[^<>\s]+>|\$\{[^}]+\}|\$[A-Za-z_]\w*")


def _pattern(path: str) -> tuple[str, list[str]]:
    """A regex for ``path`` whose unresolved placeholders (``<c>``, ``$c``, ``${v...}``) match one path part."""
    parts, holes, last = [], [], 0
    for match in _PLACEHOLDER.finditer(path):
        parts.append(re.escape(path[last : match.start()]))
        parts.append(f"(?P<h{len(holes)}>[^/\\s]+)")
        holes.append(match.group(0))
        last = match.end()
    parts.append(re.escape(path[last:]))
    return "".join(parts), holes


def _bind(command: str, holes: list[str], match: re.Match[str]) -> str:
    for k, hole in enumerate(holes):
        command = command.replace(hole, match.group(f"h{k}"))
    return command


def command_for(doc: DocCommand, results: str, group_files: Sequence[str], tag: str | None) -> str | None:
    """``doc``'s command (placeholders bound) if it wrote ``group_files`` (repository-relative) or ran the
    discovery ``tag`` (``<results>/discovery/<tag>``); else ``None``."""
    tokens = doc.tokens
    script = next((t for t in tokens if t.startswith("scripts/") and t.endswith(".py")), "")
    if script.endswith("benchmark_discovery.py"):
        if tag is None:
            return None
        root = _option(tokens, "--results") or f"{results}/discovery"
        regex, holes = _pattern(f"{root.rstrip('/')}/{_option(tokens, '--tag') or ''}")
        found = re.fullmatch(regex, f"{results}/discovery/{tag}")
        return _bind(doc.command, holes, found) if found else None
    out = _option(tokens, "--out")
    if out is None and script.endswith("benchmark_speed.py") and "--table" not in tokens:
        out = f"{results}/speed/speed.csv"
    if out is None:
        return None
    regex, holes = _pattern(out)
    if script.endswith(("benchmark_accuracy.py", "novelty_uncertainty.py", "paired_accuracy.py")):
        regex += "(?:" + "|".join(re.escape(s) for s in PREFIX_SUFFIXES) + ")"
    for name in group_files:
        found = re.fullmatch(regex, name)
        if found:
            return _bind(doc.command, holes, found)
    return None


# --- what the files record -----------------------------------------------------------------------
def _read(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError):
        return None


def campaign_wall(runs: Iterable[Path]) -> float | None:
    """Sum of ``train_s + score_s + acquire_s`` over every round of the campaigns' CSVs (None if absent)."""
    total, seen = 0.0, False
    for path in runs:
        table = _read(path)
        if table is None or not set(TIME_COLUMNS) <= set(table.columns):
            continue
        total += float(table[list(TIME_COLUMNS)].fillna(0.0).to_numpy().sum())
        seen = True
    return round(total, 1) if seen else None


def fit_wall(tables: Iterable[Path]) -> float | None:
    """Sum of ``fit_seconds`` over the rows of ``_runs.csv`` tables; a row repeated (same experiment, seed,
    overrides, fit time; e.g. in a table merged from parts) is counted once."""
    rows = []
    for path in tables:
        table = _read(path)
        if table is not None and "fit_seconds" in table.columns:
            keys = [c for c in ("experiment", "test_seed", "seed", "overrides") if c in table.columns]
            rows.append(table[[*keys, "fit_seconds"]].astype({"fit_seconds": float}))
    if not rows:
        return None
    both = pd.concat(rows, ignore_index=True)
    both = both.astype({c: str for c in both.columns if c != "fit_seconds"}).drop_duplicates()
    return round(float(both["fit_seconds"].sum()), 1)


def _listing(values: Iterable[Any]) -> str:
    return " ".join(str(v) for v in dict.fromkeys(values))


def _overrides(table: pd.DataFrame) -> pd.Series:
    """A runs table's ``overrides`` column as text (``""`` where empty or absent)."""
    if "overrides" not in table:
        return pd.Series([""] * len(table), index=table.index)
    return table["overrides"].astype(object).fillna("").astype(str)


def accuracy_command(runs_csv: Path, prefix: str) -> list[str]:
    """``benchmark_accuracy.py`` command(s) rebuilt from a ``_runs.csv`` (one per distinct overrides)."""
    table = _read(runs_csv)
    needed = {"experiment", "seed", "data", "split"}
    if table is None or not needed <= set(table.columns):
        return []
    overrides = _overrides(table)
    commands = []
    for value, part in table.groupby(overrides.to_numpy(), sort=False):
        words = ["python", "scripts/benchmark_accuracy.py", "--data", *_listing(part["data"]).split()]
        if "score" in part:
            words += ["--score", *_listing(part["score"]).split()]
        words += ["--split", *_listing(part["split"]).split(), "--experiments", *_listing(part["experiment"]).split()]
        words += ["--seeds", *_listing(sorted(part["seed"].astype(int))).split()]
        if value:
            words += ["--override", *value.split()]
        commands.append(shlex.join([*words, "--out", prefix]))
    return commands


def novelty_command(runs_csv: Path, prefix: str) -> list[str]:
    """``novelty_uncertainty.py`` command(s) rebuilt from a ``_runs.csv`` (data from the file name)."""
    table = _read(runs_csv)
    if table is None or not {"experiment", "test_seed", "seed"} <= set(table.columns):
        return []
    name = Path(prefix).name
    data = "--data oneil --score bliss" if "oneil" in name else "--data almanac" if "almanac" in name else ""
    data = data or ("--data synthetic" if "synthetic" in name else "")
    overrides = _overrides(table)
    commands = []
    for value, part in table.groupby(overrides.to_numpy(), sort=False):
        experiments = [e.split("[", 1)[0] for e in part["experiment"]]
        variant = next((e.split("[", 1)[1].rstrip("]") for e in part["experiment"] if "[" in e), "")
        words = f"python scripts/novelty_uncertainty.py {data} --test-seeds {_listing(sorted(part['test_seed']))}"
        words += f" --seeds {_listing(sorted(part['seed']))} --experiments {_listing(experiments)}"
        if value:
            words += " --override " + " ".join(shlex.quote(o) for o in value.split()) + f" --variant {variant}"
        commands.append(" ".join(f"{words} --out {prefix}".split()))
    return commands


def discovery_command(tag: str, runs: Sequence[Path]) -> tuple[list[str], str]:
    """A ``benchmark_discovery.py`` command rebuilt from ``runs/<experiment>_s<seed>.csv`` names, and what
    could not be recovered."""
    names = [re.fullmatch(r"(.+)_s(\d+)", p.stem) for p in runs]
    pairs = [(m.group(1), int(m.group(2))) for m in names if m]
    if not pairs:
        return [], ""
    pool, first = None, _read(runs[0])
    if first is not None and {"n_measured", "fraction_explored"} <= set(first.columns):
        pool = round(float(first["n_measured"].iloc[0]) / float(first["fraction_explored"].iloc[0]))
    protocol = POOL_SIZES.get(pool or 0)
    words = ["python scripts/benchmark_discovery.py"]
    if protocol == "oneil":
        words.append("--protocol oneil")
    words += [f"--tag {tag}", f"--seeds {_listing(sorted({s for _, s in pairs}))}"]
    words.append(f"--experiments {_listing(e for e, _ in pairs)}")
    missing = "any --override / --bnn-override / --pretrain-override (not recorded)"
    if protocol is None:
        missing += f"; the pool has {pool} candidates, not a protocol's default, so overrides chose it"
    return [" ".join(words)], missing


# --- result folders ------------------------------------------------------------------------------
class Group(NamedTuple):
    """Files of one result folder written by one run (or one series of runs with one output name)."""

    name: str
    files: list[str]  # relative to the result folder


def result_folders(results: Path) -> list[Path]:
    """Folders below ``results`` with result files of their own, and discovery tag folders (``runs/``, which
    belongs to its tag, is not one)."""
    folders = []
    for folder in sorted(p for p in [results, *results.rglob("*")] if p.is_dir()):
        if folder.name == "runs" and folder != results:
            continue
        own = [p for p in folder.iterdir() if p.is_file() and p.name not in SKIPPED_FILES]
        runs = folder / "runs"
        if own or (runs.is_dir() and any(runs.iterdir())):
            folders.append(folder)
    return folders


def groups_of(folder: Path) -> list[Group]:
    """The folder's files grouped by the run that wrote them: a tag's campaigns (``per_round.csv``,
    ``final.csv``, ``runs/*``) and, for the other files, one group per output prefix."""
    groups: dict[str, Group] = {}
    runs = sorted(p for p in (folder / "runs").glob("*") if p.is_file()) if (folder / "runs").is_dir() else []
    campaign = [f for f in CAMPAIGN_FILES if (folder / f).is_file()]
    if runs or campaign:
        groups["campaigns"] = Group("campaigns", [*campaign, *(f"runs/{p.name}" for p in runs)])
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        if path.name in SKIPPED_FILES or path.name in campaign:
            continue
        prefix = next((path.name[: -len(s)] for s in PREFIX_SUFFIXES if path.name.endswith(s)), path.stem)
        groups.setdefault(prefix, Group(prefix, [])).files.append(path.name)
    return list(groups.values())


def describe(rel: str, groups: list[Group]) -> str:
    """The folder's "what it is" line."""
    if rel in DESCRIPTIONS:
        return DESCRIPTIONS[rel]
    campaign = next((g for g in groups if g.name == "campaigns"), None)
    tables = [g.name for g in groups if g.name != "campaigns"]
    parts = []
    if campaign is not None:
        names = [re.fullmatch(r"(.+)_s(\d+)\.csv", Path(f).name) for f in campaign.files if f.startswith("runs/")]
        found = [m for m in names if m]
        names = list(dict.fromkeys(m.group(1) for m in found))
        experiments = " ".join(names) if len(names) <= 4 else f"{len(names)} presets ({', '.join(names[:3])}, ...)"
        seeds = sorted({int(m.group(2)) for m in found})
        seed_text = (
            f"seeds {seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else f"seeds {seeds}"
        )
        parts.append(
            f"simulated campaigns: {experiments} ({seed_text}; {len(found)} campaigns)" if found else "campaigns"
        )
    if tables:
        parts.append("paired tables" if all(t.startswith("paired") for t in tables) else "tables " + ", ".join(tables))
    return "discovery " + "; ".join(parts) if rel.startswith("discovery") else "; ".join(parts)


def _timestamp(commit: Commit) -> str:
    return commit.date


def backfill(folder: Path, root: Path, results_rel: str, history: dict[str, list[Commit]],
             docs: list[DocVersion], dirty: set[str]) -> Manifest:  # fmt: skip
    """The backfilled manifest of one result folder."""
    rel = folder.relative_to(root / results_rel).as_posix()
    rel = "" if rel == "." else rel
    groups = groups_of(folder)
    group_out: dict[str, Any] = {}
    all_commands: list[str] = []
    commits: dict[str, dict[str, Any]] = {}
    walls: list[float] = []
    for group in groups:
        repo_files = [(folder / f).relative_to(root).as_posix() for f in group.files]
        tag = rel.removeprefix("discovery/") if group.name == "campaigns" and rel.startswith("discovery/") else None
        newest = max((history[n][0] for n in repo_files if n in history), key=_timestamp, default=None)
        # Commands the docs state for these files: the first docs version written with or after the files
        # that names them, else the latest one before.
        commands, source = documented(docs, results_rel, repo_files, tag, newest.date if newest else "")
        if not commands:
            commands, source = reconstructed(folder, group, tag, root)
            needles = [tag, tag.split("/")[0]] if tag else [group.name]
            seen = mentions(docs, needles, newest.date if newest else "")
            if seen:
                source += f"; the settings may be described where the docs mention it: {seen}"
        all_commands += [c for c in commands if c not in all_commands]
        # Wall time the files record.
        if group.name == "campaigns":
            wall = campaign_wall(folder / f for f in group.files if f.startswith("runs/"))
            wall_source = "sum of train_s + score_s + acquire_s over every round of runs/*.csv"
        else:
            wall = fit_wall(folder / f for f in group.files if f.endswith(".csv"))
            wall_source = "sum of fit_seconds over the rows of the per-run table(s)"
        if wall is not None:
            walls.append(wall)
        # Git history of its files.
        group_commits = []
        for name in repo_files:
            for k, commit in enumerate(history.get(name, [])):
                entry = commits.setdefault(
                    commit.sha, {"commit": commit.sha, "date": commit.date, "subject": commit.subject, "files": 0}
                )
                if k == 0:  # the commit that last changed the file: its state now
                    entry["files"] += 1
                if commit.sha not in group_commits:
                    group_commits.append(commit.sha)
        entry_out: dict[str, Any] = {
            "files": group.files,
            "commands": commands or [NOT_RECORDED],
            "command_source": source,
            "wall_seconds": wall if wall is not None else NOT_RECORDED,
            "wall_source": wall_source if wall is not None else "no timing column in these files",
            "commit": newest.sha if newest else NOT_RECORDED,
            "committed": newest.date if newest else NOT_RECORDED,
            "commits": group_commits,
        }
        odd = [f"{rel}/{f}" for f in group.files if f"{rel}/{f}" in OTHER_MACHINES]
        if odd:
            entry_out["machine"] = OTHER_MACHINES[odd[0]][0]
            entry_out["machine_source"] = OTHER_MACHINES[odd[0]][1]
        codes = code_labels(folder, group.files)
        if codes:
            entry_out["code_labels"] = codes
        uncommitted_files = [n for n in repo_files if n in dirty or n not in history]
        if uncommitted_files:
            entry_out["uncommitted_files"] = uncommitted_files
        group_out[group.name] = entry_out
    ordered = sorted(commits.values(), key=lambda c: c["date"], reverse=True)
    newest_commit = ordered[0] if ordered else None
    machine_note = CLOSING_NOTES
    exceptions = sorted({g for g, e in group_out.items() if "machine" in e})
    if exceptions:
        machine_note += f"; except group(s) {exceptions}, whose own 'machine' is given there"
    sources = {
        "commit": "git log: the newest commit that added or changed the folder's files (the results come from the "
        "code of that commit or an earlier one, possibly with uncommitted changes: dirty unknown)",
        "command": "per group (extra.groups.<name>.command_source): the commands that the committed docs "
        f"({', '.join(DOCS)}; the first version written with or after the files, else the last before) state "
        "for its files or tag, else one reconstructed from the files, else not recorded",
        "machine": machine_note,
        "started": "not recorded at the time",
        "finished": "not recorded at the time; extra.committed is when the files were committed (an upper bound)",
        "wall_seconds": "sum of the groups' recorded compute seconds (a lower bound on elapsed time: data "
        "loading, accuracy scoring and aggregation are not in it; parallel processes are added up)"
        if walls
        else "no file of the folder records timings",
        "description": "written by scripts/backfill_manifests.py from the folder's name and files",
    }
    return Manifest(
        command="\n".join(all_commands) if all_commands else NOT_RECORDED,
        commit=newest_commit["commit"] if newest_commit else NOT_RECORDED,
        dirty=None,
        machine=dict(EPYC),
        started=NOT_RECORDED,
        finished=NOT_RECORDED,
        wall_seconds=round(sum(walls), 1) if walls else NOT_RECORDED,
        status="finished",
        description=describe(rel, groups),
        outputs=[f for g in groups for f in g.files],
        backfilled=True,
        notes="Backfilled by scripts/backfill_manifests.py from git history, the docs' commands, the sessions' "
        "closing notes and the result files themselves; see extra.sources for where each field came from and "
        "extra.groups for each run's files.",
        extra={
            "committed": newest_commit["date"] if newest_commit else NOT_RECORDED,
            "first_committed": ordered[-1]["date"] if ordered else NOT_RECORDED,
            "commits": ordered,
            "groups": group_out,
            "sources": sources,
        },
    )


def documented(
    docs: Sequence[DocVersion], results: str, files: Sequence[str], tag: str | None, committed: str
) -> tuple[list[str], str]:
    """The commands of the docs version that describes ``files`` / ``tag`` (see :func:`command_for`) and the
    source note; ``([], "")`` if no version names them."""
    for version in _in_order(docs, committed):
        matched: list[tuple[int, str]] = []
        for doc in version.commands:
            command = command_for(doc, results, files, tag)
            if command is not None and command not in (c for _, c in matched):
                matched.append((doc.line, command))
        if matched:
            lines = ", ".join(dict.fromkeys(str(n) for n, _ in matched))
            return [c for _, c in matched], f"{version.path} at {version.commit.sha[:7]}, line(s) {lines}"
    return [], ""


def _in_order(docs: Sequence[DocVersion], committed: str) -> list[DocVersion]:
    """The versions written with or after ``committed`` (oldest first), then the earlier ones (newest first)."""
    after = [v for v in docs if v.commit.date >= committed]
    return [*after, *[v for v in docs if v.commit.date < committed][::-1]]


def mentions(docs: Sequence[DocVersion], needles: Sequence[str], committed: str) -> str:
    """Where the docs (in :func:`_in_order`) first mention one of ``needles``: ``"<path> at <sha>, line(s) ..."``
    (at most five lines), or ``""``."""
    for needle in needles:
        for version in _in_order(docs, committed):
            lines = [str(n) for n, line in enumerate(version.text.splitlines(), 1) if needle in line][:5]
            if lines:
                return f"{version.path} at {version.commit.sha[:7]}, line(s) {', '.join(lines)}"
    return ""


def reconstructed(folder: Path, group: Group, tag: str | None, root: Path) -> tuple[list[str], str]:
    """A command rebuilt from the group's files, and the source note (``not recorded`` if impossible)."""
    rel_prefix = (folder / group.name).relative_to(root).as_posix()
    if tag is not None:
        runs = sorted(folder / f for f in group.files if f.startswith("runs/") and f.endswith(".csv"))
        commands, missing = discovery_command(tag, runs)
        if commands:
            return commands, f"reconstructed from the runs/ file names and pool size; {missing}"
    runs_csv = folder / f"{group.name}_runs.csv"
    if runs_csv.is_file():
        table = _read(runs_csv)
        if table is not None and "test_seed" in table.columns:
            commands = novelty_command(runs_csv, rel_prefix)
        else:
            commands = accuracy_command(runs_csv, rel_prefix)
        if commands:
            return commands, (
                "reconstructed from the _runs.csv columns (data, score, split, experiment, seed, overrides); "
                "--out is the files' own prefix (they may have been renamed since), --runs-dir / --threads "
                "not recorded"
            )
    return [], "not recorded (no version of the docs names these files, and they do not say)"


def code_labels(folder: Path, files: Sequence[str]) -> dict[str, list[str]]:
    """A speed table's ``code`` / ``date`` / ``note`` labels (which code and run each row measured)."""
    labels: dict[str, list[str]] = {}
    for name in files:
        if not name.endswith(".csv"):
            continue
        table = _read(folder / name)
        if table is None:
            continue
        for column in ("code", "date", "note"):
            if column in table.columns and "measurement" in table.columns:
                labels.setdefault(name, []).extend(str(v) for v in dict.fromkeys(table[column].dropna()))
    return labels


def existing_is_backfilled(path: Path) -> bool | None:
    """``True``/``False``: the manifest there is / is not backfilled; ``None``: there is none."""
    if not path.is_file():
        return None
    try:
        return bool(json.loads(path.read_text(encoding="utf-8")).get("backfilled", False))
    except (OSError, ValueError, AttributeError):
        return False  # unreadable: not ours to replace


def main(argv: Sequence[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root")
    parser.add_argument("--results", default=str(RESULTS), help="result tree, relative to --root")
    parser.add_argument(
        "--docs", nargs="*", default=list(DOCS), help="Markdown files stating the commands (their committed versions)"
    )
    parser.add_argument("--dry-run", action="store_true", help="write nothing; list what would be written")
    args = parser.parse_args(argv)
    root, results_rel = args.root.resolve(), Path(args.results).as_posix()
    docs = doc_versions(root, args.docs)
    history = file_history(root, Path(results_rel))
    dirty = uncommitted(root, Path(results_rel))
    written, kept, same = [], [], 0
    for folder in result_folders(root / results_rel):
        target = folder / MANIFEST_FILE
        if existing_is_backfilled(target) is False:
            kept.append(target)
            continue
        manifest = backfill(folder, root, results_rel, history, docs, dirty)
        if target.is_file() and json.loads(target.read_text(encoding="utf-8")) == manifest.to_dict():
            same += 1
            continue
        if not args.dry_run:
            write_manifest(folder, manifest)
        written.append(target)
    verb = "would write" if args.dry_run else "wrote"
    print(f"{verb} {len(written)} manifest(s); {same} already up to date; kept {len(kept)} not backfilled")
    for path in written:
        print(f"  {path.relative_to(root)}")
    return written


if __name__ == "__main__":
    main()
