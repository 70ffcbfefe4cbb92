"""recover_pyro.records.manifest: what a result folder records about how it was made."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from recover_pyro.errors import DamagedFileError
from recover_pyro.records import manifest as mf

REPO = Path(__file__).resolve().parents[2]


def test_recording_writes_a_manifest_that_reads_back(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(REPO)  # the repository's own checkout: a real commit
    out = tmp_path / "results"
    with mf.recording(out, command="python scripts/x.py --out results", description="a toy run") as running:
        assert running.status == "running" and running.finished is None
        (out / "table.csv").write_text("a,b\n1,2\n")
        (out / "sub").mkdir()
        (out / "sub" / "run.csv").write_text("x\n")
        running.notes = "written by the test"
    data = json.loads((out / "manifest.json").read_text())
    for key in ("commit", "dirty", "command", "machine", "started", "finished", "wall_seconds", "status"):
        assert key in data
    for key in ("cpu", "cores", "memory_gb", "os", "python", "torch", "pyro_ppl", "gpu"):
        assert key in data["machine"]
    back = mf.read_manifest(out)
    assert back == running
    assert back.status == "finished" and back.command == "python scripts/x.py --out results"
    assert back.description == "a toy run" and back.notes == "written by the test" and not back.backfilled
    assert len(back.commit) == 40 and isinstance(back.dirty, bool)
    assert back.started <= back.finished and back.started.endswith("+00:00")
    assert isinstance(back.wall_seconds, float) and back.wall_seconds >= 0
    assert back.outputs == ["sub/run.csv", "table.csv"]
    assert back.machine["cores"] == os.cpu_count() and back.machine["torch"] and back.machine["pyro_ppl"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert back.commit == head


def test_a_failed_run_still_writes_its_manifest_and_reraises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with mf.recording(tmp_path, command="python bad.py"):
            (tmp_path / "partial.csv").write_text("x\n")
            raise RuntimeError("boom")
    back = mf.read_manifest(tmp_path)
    assert back.status == "failed" and back.error == "RuntimeError: boom"
    assert back.outputs == ["partial.csv"] and isinstance(back.wall_seconds, float)
    assert json.loads((tmp_path / "manifest.json").read_text())["status"] == "failed"
    with pytest.raises(SystemExit):  # a script's sys.exit("message") is a failure too
        with mf.recording(tmp_path, command="python bad.py"):
            raise SystemExit("measurement failed")
    assert mf.read_manifest(tmp_path).status == "failed"


def test_outside_a_git_checkout_nothing_breaks(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    with mf.recording(tmp_path / "out", command="python x.py"):
        pass
    back = mf.read_manifest(tmp_path / "out")
    assert back.commit == mf.NOT_GIT and back.dirty is None and back.status == "finished"
    assert mf.git_state(tmp_path / "no such folder")[0] == mf.NOT_GIT


def test_collect_manifest_computes_the_wall_time_and_keeps_extra(tmp_path: Path) -> None:
    start = mf.utc_now()
    end = start + mf.dt.timedelta(seconds=90)
    manifest = mf.collect_manifest("python y.py", start, end, repo=tmp_path, seeds=[0, 1])
    assert manifest.wall_seconds == 90.0 and manifest.status == "finished" and manifest.extra == {"seeds": [0, 1]}
    assert manifest.finished == mf.iso(end)
    assert mf.collect_manifest("python y.py", start).status == "running"


def test_a_rerun_keeps_the_earlier_manifest(tmp_path: Path) -> None:
    with mf.recording(tmp_path, command="python first.py"):
        pass
    with mf.recording(tmp_path, command="python second.py"):
        pass
    back = mf.read_manifest(tmp_path)
    assert back.command == "python second.py"
    assert [e["command"] for e in back.earlier] == ["python first.py"] and "earlier" not in back.earlier[0]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_the_manifest_file_follows_the_umask(tmp_path: Path, umask: int) -> None:
    """(The atomic writer's temporary file is created 0600; the manifest must not keep that mode.)"""
    old = os.umask(umask)
    try:
        path = mf.write_manifest(tmp_path, mf.collect_manifest("python z.py", mf.utc_now(), repo=tmp_path))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_damaged_or_missing_manifests_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        mf.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"commit": "abc", ')
    with pytest.raises(DamagedFileError, match="manifest"):
        mf.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"commit": "abc"}')
    with pytest.raises(DamagedFileError, match="command"):
        mf.read_manifest(tmp_path)


def test_unknown_fields_are_kept_under_extra(tmp_path: Path) -> None:
    data = {"command": "c", "commit": "abc", "started": "x", "future_field": 1, "wall_seconds": "not recorded"}
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    back = mf.read_manifest(tmp_path)
    assert back.extra == {"unknown_fields": {"future_field": 1}} and back.wall_seconds == "not recorded"


def test_command_line_quotes_and_shortens_the_script_path(monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    line = mf.command_line(REPO / "scripts" / "benchmark_accuracy.py", ["--override", "data.cell_lines=[A B]"])
    assert line == "python scripts/benchmark_accuracy.py --override 'data.cell_lines=[A B]'"


def test_the_module_needs_no_hydra() -> None:
    code = (
        "import sys, recover_pyro.records.manifest; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('hydra', 'omegaconf')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
