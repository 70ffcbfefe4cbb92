"""scripts/backfill_manifests.py: commands from the docs' history, timings from the files, idempotent, and never
overwriting a manifest a run wrote."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from script_loader import load_script
from recover_pyro.records.manifest import NOT_RECORDED, read_manifest, recording

DOCS = """# Benchmarks

```bash
export OMP_NUM_THREADS=1; S=scripts/benchmark_discovery.py; R=benchmarks/results/discovery
P="--seeds 0 1 --experiments normal_ucb"
for c in A B; do
  python $S --tag cells/$c $P \\
      --override "data.cell_lines=[$c]"
done
python scripts/paired_discovery.py --runs-glob "$R/cells/*/runs" --a normal_ucb --b x --out $R/cells/paired.csv
```

Pilot: `python scripts/benchmark_discovery.py --tag pilot/<c> --seeds 0 --experiments normal_ucb
--override "data.cell_lines=[<c>]"`.
"""


@pytest.fixture(scope="module")
def backfill():
    return load_script("backfill_manifests")


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def campaign(path: Path, train_s: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {"round": [0, 1], "n_measured": [10, 20], "fraction_explored": [0.1, 0.2], "train_s": [0.0, train_s]}
        | {"score_s": [0.0, 1.0], "acquire_s": [0.0, 0.5]}
    ).to_csv(path, index=False)


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@example.org")
    git(tmp_path, "config", "user.name", "t")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "benchmarks.md").write_text(DOCS)
    results = tmp_path / "benchmarks" / "results"
    for cell, seconds in (("A", 10.0), ("B", 20.0)):
        campaign(results / "discovery" / "cells" / cell / "runs" / "normal_ucb_s0.csv", seconds)
        (results / "discovery" / "cells" / cell / "final.csv").write_text("x\n1\n")
    (results / "discovery" / "cells" / "paired.csv").write_text("d\n0.1\n")
    campaign(results / "discovery" / "pilot" / "C" / "runs" / "normal_ucb_s0.csv", 3.0)
    campaign(results / "discovery" / "other" / "runs" / "greedy_s2.csv", 4.0)
    pd.DataFrame({"experiment": ["a", "a"], "seed": [0, 1], "fit_seconds": [1.5, 2.5]}).to_csv(
        results / "speed_like.csv", index=False
    )
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "results and docs")
    return tmp_path


def test_backfill_recovers_commands_timings_and_commits(backfill, repo: Path) -> None:
    written = backfill.main(["--root", str(repo), "--docs", "docs/benchmarks.md"])
    results = repo / "benchmarks" / "results"
    folders = sorted(p.parent.relative_to(results).as_posix() for p in written)
    # runs/ belongs to its tag; folders holding only sub-folders get none.
    assert folders == [
        ".",
        "discovery/cells",
        "discovery/cells/A",
        "discovery/cells/B",
        "discovery/other",
        "discovery/pilot/C",
    ]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    a = read_manifest(results / "discovery" / "cells" / "A")
    assert a.backfilled and a.commit == head and a.dirty is None and a.started == NOT_RECORDED
    expected = 'python scripts/benchmark_discovery.py --tag cells/A --seeds 0 1 --experiments normal_ucb --override "data.cell_lines=[A]"'
    assert a.command == expected  # the loop variable and $P expanded, the docs' quoting kept
    assert a.wall_seconds == 11.5 and a.outputs == ["final.csv", "runs/normal_ucb_s0.csv"]
    assert a.extra["groups"]["campaigns"]["command_source"].startswith("docs/benchmarks.md at ")
    assert a.machine["cpu"] == "AMD EPYC" and set(a.extra["sources"]) >= {
        "commit",
        "command",
        "machine",
        "wall_seconds",
    }
    paired = read_manifest(results / "discovery" / "cells")
    assert paired.command.startswith("python scripts/paired_discovery.py") and paired.wall_seconds == NOT_RECORDED
    pilot = read_manifest(results / "discovery" / "pilot" / "C")  # an inline command with a <c> placeholder
    assert "--tag pilot/C" in pilot.command and '"data.cell_lines=[C]"' in pilot.command
    other = read_manifest(results / "discovery" / "other")  # not in the docs: rebuilt from the run names
    assert other.command == "python scripts/benchmark_discovery.py --tag other --seeds 2 --experiments greedy"
    assert "reconstructed" in other.extra["groups"]["campaigns"]["command_source"]
    top = read_manifest(results)
    assert top.wall_seconds == 4.0 and top.command == NOT_RECORDED


def test_backfill_is_idempotent_and_keeps_manifests_that_runs_wrote(backfill, repo: Path) -> None:
    args = ["--root", str(repo), "--docs", "docs/benchmarks.md"]
    backfill.main(args)
    results = repo / "benchmarks" / "results"
    before = {p: p.read_text() for p in results.rglob("manifest.json")}
    assert backfill.main(args) == []  # nothing rewritten
    assert {p: p.read_text() for p in results.rglob("manifest.json")} == before
    with recording(results / "discovery" / "other", command="python scripts/benchmark_discovery.py --tag other"):
        pass
    own = (results / "discovery" / "other" / "manifest.json").read_text()
    assert backfill.main(args) == []
    assert (results / "discovery" / "other" / "manifest.json").read_text() == own
    assert json.loads(own)["earlier"][0]["backfilled"] is True  # the run kept the backfilled one


def test_docs_loops_and_parameter_expansion(backfill) -> None:
    text = '```bash\nfor v in "k2:a=2" "k3:a=3 b=1"; do\n  python scripts/x.py --tag p/${v%%:*} ${v#*:}\ndone\n```\n'
    assert [c.command for c in backfill.doc_commands(text)] == [
        "python scripts/x.py --tag p/k2 a=2",
        "python scripts/x.py --tag p/k3 a=3 b=1",
    ]
