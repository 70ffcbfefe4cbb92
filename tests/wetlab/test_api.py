"""The wet-lab loop from Python and from the shell (issue #26, item 3): exported from the package root, the old
module path and ``python -m recover_pyro.recommend`` kept, a plate that prints readably in 80 columns."""

from __future__ import annotations

import importlib
import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import recover_pyro
from recover_pyro.wetlab import PLATE_COLUMNS, Recommendation

from labfiles import drug_table, measured, tiny_recommend


def test_recommend_and_the_measurement_writers_are_exported_from_the_root() -> None:
    from recover_pyro import Recommendation as Root
    from recover_pyro import recommend, save_drug_table, save_measurements_csv

    assert Root is Recommendation
    assert {"recommend", "Recommendation", "save_measurements_csv", "save_drug_table"} <= set(recover_pyro.__all__)
    assert save_measurements_csv.__module__ == "recover_pyro.data.loaders" and callable(save_drug_table)
    assert "candidates" in inspect.signature(recommend).parameters


def test_the_old_module_path_keeps_the_root_export_callable(tmp_path: Path) -> None:
    shim = importlib.import_module("recover_pyro.recommend")  # binds recover_pyro.recommend to the module
    from recover_pyro.recommend import recommend as old

    assert old is importlib.import_module("recover_pyro.wetlab").recommend
    root = recover_pyro.recommend  # the module now, callable as the function
    assert root is shim or root is old
    assert list(inspect.signature(root).parameters)[:4] == ["measured_paths", "smiles", "cell_lines", "score"]
    result = tiny_recommend([measured(tmp_path)], drug_table(tmp_path), q=2, fn=root)
    assert isinstance(result, Recommendation) and len(result.table) == 2


def test_library_imports_do_not_import_hydra() -> None:
    code = "import recover_pyro.recommend, recover_pyro.wetlab, sys; print('hydra' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_console_script_and_module_entry_show_the_candidate_options() -> None:
    script = shutil.which("recover-recommend", path=str(Path(sys.executable).parent))
    assert script is not None
    for cmd in ([script, "--help"], [sys.executable, "-m", "recover_pyro.recommend", "--help"]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "== Candidate control ==" in done.stdout and "exclude=" in done.stdout


def test_the_plate_prints_in_80_columns(tmp_path: Path) -> None:
    result = tiny_recommend([measured(tmp_path)], drug_table(tmp_path), q=3)
    long = result.table.assign(drug_a_name="Lapatinib ditosylate monohydrate (Tykerb)", cell_line="NCI-H322M-long")
    text = Recommendation(long, result.measured).to_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "Lapatinib ditos" in text and "…" in text and len(text.splitlines()) == 4
    assert list(result.table.columns) == PLATE_COLUMNS


def test_save_refuses_to_replace_and_writes_a_spreadsheet_safe_plate(tmp_path: Path) -> None:
    result = tiny_recommend([measured(tmp_path)], drug_table(tmp_path), q=2)
    path = result.save(tmp_path / "plate.csv")
    assert pd.read_csv(path)["rank"].tolist() == [1, 2]
    with pytest.raises(FileExistsError, match="set overwrite=True"):
        result.save(path)
    assert result.save(path, overwrite=True) == path
