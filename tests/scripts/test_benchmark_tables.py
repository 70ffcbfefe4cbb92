"""scripts/benchmark_tables.py: the committed docs hold the tables the committed result files give, and a changed
result is caught by ``--check`` and written by a plain run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from script_loader import load_script

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def script():
    return load_script("benchmark_tables")


@pytest.fixture()
def copy(tmp_path: Path) -> Path:
    """A copy of the docs and the result files (the test edits it)."""
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("img"))
    shutil.copytree(ROOT / "benchmarks" / "results", tmp_path / "benchmarks" / "results")
    return tmp_path


def test_the_committed_docs_are_up_to_date(script, capsys) -> None:
    assert script.main(["--check"]) == 0, capsys.readouterr().err


def test_every_table_is_used_and_the_headline_is_in_the_readme(script) -> None:
    used = "\n".join(p.read_text(encoding="utf-8") for p in script.doc_files(ROOT))
    assert {name for name in script.TABLES if f"<!-- table:{name} -->" not in used} == set()
    assert "<!-- table:headline -->" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_a_changed_result_is_detected_and_rewritten(script, copy: Path, capsys) -> None:
    summary = copy / "benchmarks/results/accuracy/test_sets/summary.csv"
    frame = pd.read_csv(summary)
    frame.loc[frame["experiment"] == "normal_gp_identity", "spearman_mean"] = 0.987654  # the default BNN
    frame.to_csv(summary, index=False)

    assert script.main(["--root", str(copy), "--check"]) == 1
    stale = capsys.readouterr().err
    assert "README.md: headline" in stale and "docs/benchmarks.md: accuracy_almanac_pair" in stale
    assert "0.988" not in (copy / "docs/benchmarks.md").read_text(encoding="utf-8")  # --check writes nothing

    assert script.main(["--root", str(copy)]) == 0
    assert script.main(["--root", str(copy), "--check"]) == 0
    assert "| 0.988 ± 0.016 |" in (copy / "docs/benchmarks.md").read_text(encoding="utf-8")
    assert "| 0.988 ± 0.016 |" in (copy / "README.md").read_text(encoding="utf-8")


def test_a_hand_edited_table_is_detected(script, copy: Path, capsys) -> None:
    doc = copy / "docs/benchmarks.md"
    text = doc.read_text(encoding="utf-8")
    start = text.index("<!-- table:discovery_mcf7 -->")
    edited = text[:start] + text[start:].replace("0.840 ± 0.076", "0.900 ± 0.076", 1)
    assert edited != text
    doc.write_text(edited, encoding="utf-8")
    assert script.main(["--root", str(copy), "--check"]) == 1
    assert "discovery_mcf7" in capsys.readouterr().err


def test_unknown_and_unclosed_markers_are_errors(script, copy: Path) -> None:
    doc = copy / "docs/extra.md"
    doc.write_text("<!-- table:no_such_table -->\n| a |\n<!-- /table -->\n", encoding="utf-8")
    assert script.main(["--root", str(copy), "--check"]) == 2
    doc.write_text("<!-- table:headline -->\n| a |\n", encoding="utf-8")
    assert script.main(["--root", str(copy), "--check"]) == 2


def test_paired_interval_is_a_student_t_interval(script) -> None:
    assert script.paired([0.1, 0.2, 0.3]) == "+0.200 [-0.048, +0.448]"
    assert script.paired([0.05, 0.05]) == "+0.050 [+0.050, +0.050]"
    assert script.pm(0.5, float("nan")) == "0.500"
    assert script.scientific(6853321.7) == "6.85e6"
