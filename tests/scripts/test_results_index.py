"""scripts/results_index.py: one row per result folder's manifest, commit-ready markdown, --check."""

from __future__ import annotations

from pathlib import Path

import pytest

from script_loader import load_script
from recover_pyro.records.manifest import NOT_RECORDED, Manifest, recording, write_manifest


@pytest.fixture(scope="module")
def index():
    return load_script("results_index")


def backfilled(description: str, command: str, wall: float | str) -> Manifest:
    return Manifest(
        command=command,
        commit="0123456789abcdef0123456789abcdef01234567",
        dirty=None,
        machine={},
        started=NOT_RECORDED,
        finished=NOT_RECORDED,
        wall_seconds=wall,
        status="finished",
        description=description,
        backfilled=True,
        extra={"committed": "2026-11-30T17:12:06+00:00"},
    )


def tree(root: Path) -> Path:
    """A results tree: two backfilled folders (one nested) and one written by a run."""
    results = root / "results"
    long = "python scripts/benchmark_discovery.py --tag cells/A498 --seeds 0 1 2 3 4 --experiments " + "x_ucb " * 30
    write_manifest(
        results / "discovery" / "cells", backfilled("paired tables", "python scripts/p.py | x", NOT_RECORDED)
    )
    write_manifest(results / "discovery" / "cells" / "A498", backfilled("campaigns", long + "\npython b.py", 7384.0))
    with recording(results / "speed", command="python scripts/benchmark_speed.py --out speed/speed.csv", repo=root):
        (results / "speed" / "speed.csv").write_text("a\n1\n")
    return results


def test_index_has_one_row_per_manifest_parents_first(index, tmp_path: Path) -> None:
    results = tree(tmp_path)
    assert index.main(["--results", str(results)]) == 0
    text = (results / "INDEX.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [r.split(" | ")[0] for r in rows] == ["| `discovery/cells/`", "| `discovery/cells/A498/`", "| `speed/`"]
    cells, nested, speed = (r.split(" | ") for r in rows)
    assert cells[1] == "paired tables" and cells[2] == "2026-11-30 (committed)" and cells[3] == "`0123456`"
    assert cells[4] == r"`p.py \| x`" and cells[5] == NOT_RECORDED and cells[6] == "yes |"
    assert nested[4].startswith("`benchmark_discovery.py --tag cells/A498") and nested[4].endswith("… (+1 more)`")
    assert len(nested[4]) < 120 and nested[5] == "2 h 03 min"
    assert speed[1] == "–" and speed[3] == "`not a git checkout`" and speed[6] == "no |"
    assert speed[2][:4].isdigit() and speed[5].endswith(" s")
    assert "3 result folders; 2 manifests backfilled" in text


def test_check_says_whether_the_index_is_current(index, tmp_path: Path) -> None:
    results = tree(tmp_path)
    assert index.main(["--results", str(results), "--check"]) == 1  # no index yet
    index.main(["--results", str(results)])
    assert index.main(["--results", str(results), "--check"]) == 0
    write_manifest(results / "new", backfilled("new", "python n.py", 5.0))
    assert index.main(["--results", str(results), "--check"]) == 1


def test_wall_time_and_command_formatting(index) -> None:
    assert [index.wall_time(x) for x in (4.4, 270.0, 7384.0, None, "not recorded")] == [
        "4 s",
        "4.5 min",
        "2 h 03 min",
        "–",
        "not recorded",
    ]
    assert index.short_command("python scripts/a.py --out benchmarks/results/x") == "a.py --out x"
    assert index.short_command("") == NOT_RECORDED


def test_a_damaged_manifest_gets_a_row_not_a_crash(index, tmp_path: Path) -> None:
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{")
    assert "damaged manifest" in index.index_markdown(tmp_path)
