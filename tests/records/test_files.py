"""Result files follow the user's umask (issue #26, item 6): a plate, a table, a checkpoint or a plot written
atomically gets the mode any new file gets (``0o666 & ~umask``), not the ``0600`` of its temporary file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
import torch

from recover_pyro.errors import OutputExistsError, OutputPathError
from recover_pyro.records import files
from recover_pyro.records.plots import plot_calibration

matplotlib.use("Agg")


@pytest.fixture(params=[0o022, 0o002, 0o077])
def mask(request: pytest.FixtureRequest):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_umask_is_read_without_changing_it(mask: int) -> None:
    assert files.umask() == mask
    assert files.umask() == mask


def test_atomic_writes_follow_the_umask(tmp_path: Path, mask: int) -> None:
    expected = 0o666 & ~mask
    written = [
        files.atomic_write_csv(tmp_path / "plate.csv", pd.DataFrame({"rank": [1]})),
        files.atomic_write_json(tmp_path / "metrics.json", {"r2": 0.5}),
        files.atomic_write_text(tmp_path / "rounds.csv", "round\n0\n"),
        files.atomic_torch_save(tmp_path / "checkpoint.pt", {"w": torch.zeros(2)}),
    ]
    plot_calibration([0.1, 0.5], [0.2, 0.4], tmp_path / "calibration.png")
    written.append(tmp_path / "calibration.png")
    beside = tmp_path / "plain.txt"
    beside.write_text("a file written the ordinary way\n")
    assert mode(beside) == expected
    assert {p.name: oct(mode(p)) for p in written} == {p.name: oct(expected) for p in written}


def test_replacing_a_file_gives_the_new_file_the_umask_mode(tmp_path: Path, mask: int) -> None:
    path = tmp_path / "plate.csv"
    path.write_text("old\n")
    path.chmod(0o600)
    files.atomic_write_text(path, "new\n")
    assert mode(path) == 0o666 & ~mask and path.read_text() == "new\n"


def test_output_file_checks_before_the_work(tmp_path: Path) -> None:
    assert files.check_output_file(tmp_path / "new" / "plate.csv", overwrite=False) == tmp_path / "new" / "plate.csv"
    (tmp_path / "plate.csv").write_text("the lab's plate\n")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        files.check_output_file(tmp_path / "plate.csv", overwrite=False)
    assert isinstance(OutputExistsError("x"), FileExistsError)
    with pytest.raises(OutputPathError, match="is a folder"):
        files.check_output_file(tmp_path, overwrite=True)
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        files.check_output_file(tmp_path / "plate.csv" / "x.csv", overwrite=True)
