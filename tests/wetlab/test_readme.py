"""The README's wet-lab tour runs as written (issue #26, items 2 and 3), on 60 measured ALMANAC MCF7 pairs:
its Python example ends with a plate of untested pairs, and its two commands go from a drug table and one
measured round to a second plate, with plate 1 "measured" from the screen (pairs the screen lacks are failed
wells, left empty)."""

from __future__ import annotations

import logging
import re
import shlex
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra.core.global_hydra import GlobalHydra

from recover_pyro.cli import recommend as recommend_cli
from recover_pyro.data.loaders import load_almanac

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    return README.split(f"### {title}", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]


def commands() -> list[list[str]]:
    """The ``recover-recommend`` commands of the wet-lab section, continuation lines joined."""
    block = re.search(r"```bash\n(.*?)```", section("The wet-lab loop"), re.S).group(1)
    joined = re.sub(r"\\\n\s*", " ", block)
    return [shlex.split(line) for line in joined.splitlines() if line.startswith("recover-recommend")]


@pytest.fixture
def lab(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A working directory holding the README's two files; the root logger and Hydra restored afterwards."""
    monkeypatch.setenv("RECOVER_PYRO_DATA", str(data_root))
    monkeypatch.setenv("RECOVER_PYRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield tmp_path
    root.handlers[:] = handlers
    root.setLevel(level)
    GlobalHydra.instance().clear()


def test_the_python_example_ends_with_a_plate_of_untested_pairs(lab: Path, capsys: pytest.CaptureFixture) -> None:
    code = re.search(r"```python\n(.*?)```", section("In Python"), re.S).group(1)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    assert max(len(line) for line in printed.splitlines()) <= 80 and len(printed.splitlines()) == 31
    plate = pd.read_csv(lab / "plate1.csv", dtype={"drug_a": str, "drug_b": str})
    measured = pd.read_csv(lab / "round0.csv", dtype={"drug_a": str, "drug_b": str})
    assert len(plate) == 30 and not set(zip(plate.drug_a, plate.drug_b)) & set(zip(measured.drug_a, measured.drug_b))
    assert pd.concat([plate.drug_a, plate.drug_b]).value_counts().max() <= 3


def test_the_two_commands_go_from_one_measured_round_to_a_second_plate(lab: Path, capsys) -> None:
    first, second = commands()
    screen = load_almanac(cell_lines=["MCF7"])  # the README's Python lines that write the two files
    from recover_pyro import save_drug_table, save_measurements_csv

    save_drug_table(screen, "drugs.csv")
    save_measurements_csv(screen, "round0.csv", experiments=screen.experiments.sample(60, random_state=0))
    fast = ["inference.epochs=40", "inference.warm_start_epochs=20", "fit_progress=false"]

    def run(argv: list[str], run_dir: str) -> None:
        old = sys.argv
        sys.argv = [*argv, *fast, f"hydra.run.dir={run_dir}"]
        try:
            recommend_cli.main()
        finally:
            sys.argv = old
            GlobalHydra.instance().clear()

    run(first, "run1")
    plate = pd.read_csv("plate1.csv", dtype={"drug_a": str, "drug_b": str})
    truth = screen.experiments.set_index(["drug_a", "drug_b"])["comboscore"]
    plate["comboscore"] = [truth.get((a, b)) for a, b in zip(plate.drug_a, plate.drug_b)]  # None: a failed well
    plate.to_csv("plate1.csv", index=False)
    run(second, "run2")
    plate2 = pd.read_csv("plate2.csv", dtype={"drug_a": str, "drug_b": str})
    round0 = pd.read_csv("round0.csv", dtype={"drug_a": str, "drug_b": str})
    done = set(zip(plate.drug_a, plate.drug_b)) | set(zip(round0.drug_a, round0.drug_b))
    assert len(plate2) == 30 and not set(zip(plate2.drug_a, plate2.drug_b)) & done
    assert "next batch written to plate2.csv" in (lab / "run2" / "recommend.log").read_text()
