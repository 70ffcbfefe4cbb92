"""Issue #26: every named error class walked through each command that can raise it.

Each case runs the command's ``main`` in this process (as its console script would, from ``sys.argv``) on bad
input written into ``tmp_path`` and checks that the error is one message on stderr (``Error: <class>: ...``),
without a traceback, with exit status 2, recorded in the run's log, and that every piece of advice of the
form ``set key=value`` / ``e.g. key=value`` / ``with key=value`` is an option the same command accepts
(composing its config with that override works).
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Callable

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from recover_pyro import errors
from recover_pyro.cli import campaign as campaign_cli
from recover_pyro.cli import recommend as recommend_cli
from recover_pyro.cli import train as train_cli
from recover_pyro.cli.builders import CONFIG_DIR
from recover_pyro.cli.checks import check_test_size
from recover_pyro.cli.errors import EXIT_CODE, FULL_ERROR_ENV, NAMED_ERRORS
from recover_pyro.data import featurize as fz

MAINS: dict[str, tuple[Callable[[], object], str]] = {
    "train": (train_cli.main, "config"),
    "campaign": (campaign_cli.main, "campaign"),
    "recommend": (recommend_cli.main, "recommend"),
}
DRUGS = {"A": "CCO", "B": "c1ccccc1O", "C": "CC(=O)O", "D": "CCN(CC)CC", "E": "OC1CCCCC1", "F": "CC(C)O"}
PAIRS = [("A", "B"), ("A", "C"), ("B", "C"), ("C", "D"), ("D", "E"), ("A", "E"), ("B", "D"), ("E", "F")]
SCORES = [1.0, 3.0, -2.0, 0.5, 2.5, -1.0, 4.0, 1.5]
TINY = [
    "+experiment=deterministic",
    "model.training.epochs=1",
    "model.predictor.drug_hidden=[8]",
    "model.predictor.merge_dim=4",
    "model.predictor.merge_rank=2",
    "model.predictor.head_hidden=[4]",
    "num_samples=4",
    "fit_progress=false",
]
CAMPAIGN = ["campaign.n_initial=4", "campaign.n_rounds=1", "acquisition.q=2", "campaign.progress=false"]
# Advice that names an option: "set key=value", "e.g. key=value", "with key=value" (any case).
ADVICE = re.compile(r"(?:\bset|\be\.g\.|\bwith)\s+(\+{0,2}[A-Za-z_][\w.]*=[^\s,;]+)", re.I)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A private fingerprint cache; the root logger and Hydra's global state restored after each run."""
    monkeypatch.setenv(fz.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(FULL_ERROR_ENV, raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    GlobalHydra.instance().clear()


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def table(rows: list[tuple[str, str, str, object]], header: str = "drug_a,drug_b,cell_line,synergy") -> str:
    return header + "\n" + "".join(f"{a},{b},{c},{y}\n" for a, b, c, y in rows)


def good_rows(scale: float = 1.0) -> list[tuple[str, str, str, object]]:
    return [(a, b, "MCF7", y * scale) for (a, b), y in zip(PAIRS, SCORES)]


def drug_file(folder: Path, extra: dict[str, str] | None = None, name: str = "drugs.csv") -> Path:
    rows = {**DRUGS, **(extra or {})}
    return write(folder / name, "drug_id,smiles\n" + "".join(f"{k},{v}\n" for k, v in rows.items()))


def run(command: str, overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Run ``command`` in-process; its exit status and stderr."""
    main, _ = MAINS[command]
    argv = [f"recover-{command}", *overrides, f"hydra.run.dir={tmp_path / 'run'}"]
    old = sys.argv
    sys.argv = argv
    try:
        main()
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    finally:
        sys.argv = old
    return code, capsys.readouterr().err


def advice_is_an_option(command: str, overrides: list[str], message: str) -> None:
    """Every option the message advises composes with the command's config."""
    _, config = MAINS[command]
    for token in ADVICE.findall(message):
        token = re.sub(r"<[^>]*>", "x", token.rstrip(".)"))
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            kept = [o for o in overrides if o.split("=")[0].lstrip("+") != token.split("=")[0].lstrip("+")]
            try:
                compose(config, overrides=[*kept, token])
            except Exception as err:  # noqa: BLE001 - any refusal means the advice is not an option
                pytest.fail(f"recover-{command}: advice {token!r} is not an option ({err}); message: {message}")


# --- the inputs that raise each class -------------------------------------------------------------
OTHER_PAIRS = [("A", "D"), ("A", "F"), ("B", "E"), ("B", "F"), ("C", "E"), ("C", "F")]


def measured_file(tmp: Path, name: str, extra: list[tuple[str, str, str, object]], encoding: str = "utf-8") -> Path:
    """The good rows plus ``extra`` rows."""
    return write(tmp / name, table([*good_rows(), *extra]), encoding)


def recommend_case(name: str, tmp: Path) -> tuple[list[str], type[Exception]]:
    """Overrides of ``recover-recommend`` that raise the error class of case ``name``."""
    drugs, round0 = drug_file(tmp), write(tmp / "round0.csv", table(good_rows()))
    base = [f"measured=[{round0}]", f"smiles={drugs}", "cell_lines=[MCF7]", *TINY, "acquisition.q=2"]
    two = write(tmp / "two.csv", drug_file(tmp).read_text() + "A,CCCC\n")
    fractions = write(tmp / "frac.csv", table([(a, b, "MCF7", y / 100) for (a, b), y in zip(OTHER_PAIRS, SCORES)]))
    cases: dict[str, tuple[list[str], type[Exception]]] = {
        "bad_value": ([*base, "num_samples=0"], errors.ConfigValueError),
        "required": ([o for o in base if not o.startswith("measured")], errors.ConfigValueError),
        "missing_column": ([*base, "score=comboscore"], errors.MissingColumnsError),
        "bad_smiles": ([*base, f"smiles={drug_file(tmp, {'B': 'C1CC'}, 'bad.csv')}"], errors.InvalidSmilesError),
        "unknown_drug": (
            [*base, f"measured=[{measured_file(tmp, 'z.csv', [('A', 'Z', 'MCF7', 1)])}]"],
            errors.UnknownDrugError,
        ),
        "bad_score": (
            [*base, f"measured=[{measured_file(tmp, 's.csv', [('B', 'F', 'MCF7', 'abc')])}]"],
            errors.InvalidScoreError,
        ),
        "two_molecules": ([*base, f"smiles={two}"], errors.ConflictingSmilesError),
        "repeat": (
            [*base, "on_duplicate=raise", f"measured=[{measured_file(tmp, 'r.csv', [('B', 'A', 'MCF7', 9)])}]"],
            errors.ConflictingMeasurementError,
        ),
        "cell_line": ([*base, "cell_lines=[HeLa]"], errors.EmptySelectionError),
        "self_pair": (
            [*base, f"measured=[{measured_file(tmp, 'sp.csv', [('C', 'C', 'MCF7', 1)])}]"],
            errors.SelfPairError,
        ),
        "latin1": (
            [*base, f"measured=[{measured_file(tmp, 'l.csv', [('A', 'D', 'Zürich', 1)], 'latin-1')}]"],
            errors.UnreadableTextError,
        ),
        "ragged": (
            [*base, f"measured=[{write(tmp / 'rg.csv', table(good_rows()) + 'A,F,MCF7,1,extra' + chr(10))}]"],
            errors.ScreenDataError,
        ),
        "salt": ([*base, f"smiles={drug_file(tmp, {'G': 'CCO.Cl'}, 'salt.csv')}"], errors.DuplicateMoleculeError),
        "scale": ([*base, f"measured=[{round0},{fractions}]"], errors.ScaleMismatchError),
        "too_few": (
            [*base, f"measured=[{write(tmp / 'few.csv', table(good_rows()[:2]))}]"],
            errors.TooFewMeasurementsError,
        ),
        "exists": ([*base, f"out={write(tmp / 'plate.csv', 'the lab plate')}"], errors.OutputExistsError),
        "folder": ([*base, f"out={tmp}", "overwrite=true"], errors.OutputPathError),
        "exclude": (
            [*base, f"exclude=[{write(tmp / 'ex.csv', 'drug_a,drug_b' + chr(10) + 'A,Q' + chr(10))}]"],
            errors.UnknownDrugError,
        ),
    }
    return cases[name]


def data_case(name: str, tmp: Path) -> tuple[list[str], type[Exception]]:
    """Overrides of ``recover-train`` / ``recover-campaign`` (``data=csv``) that raise case ``name``'s class."""
    drugs, screen = drug_file(tmp), write(tmp / "screen.csv", table(good_rows()))
    base = ["data=csv", f"data.screen.path={screen}", f"data.screen.smiles_path={drugs}", *TINY]
    bare = write(tmp / "bare.csv", "".join(f"{a},{b},MCF7,{y}\n" for (a, b), y in zip(PAIRS, SCORES)))
    ragged = write(tmp / "rg.csv", table(good_rows()) + "A,F,MCF7,1,extra\n")

    def path(file: Path) -> str:
        return f"data.screen.path={file}"

    cases: dict[str, tuple[list[str], type[Exception]]] = {
        "bad_value": ([*base, "num_samples=0"], errors.ConfigValueError),
        "required": ([o for o in base if not o.startswith("data.screen.path")], errors.ConfigValueError),
        "missing_column": ([*base, path(bare)], errors.MissingColumnsError),
        "bad_smiles": (
            [*base, f"data.screen.smiles_path={drug_file(tmp, {'B': 'C1CC'}, 'bad.csv')}"],
            errors.InvalidSmilesError,
        ),
        "unknown_drug": ([*base, path(measured_file(tmp, "z.csv", [("A", "Z", "MCF7", 1)]))], errors.UnknownDrugError),
        "bad_score": (
            [*base, path(measured_file(tmp, "s.csv", [("B", "F", "MCF7", "abc")]))],
            errors.InvalidScoreError,
        ),
        "repeat": (
            [*base, "data.screen.aggregate=raise", path(measured_file(tmp, "r.csv", [("B", "A", "MCF7", 9)]))],
            errors.ConflictingMeasurementError,
        ),
        "cell_line": ([*base, "data.cell_lines=[HeLa]"], errors.EmptySelectionError),
        "self_pair": ([*base, path(measured_file(tmp, "sp.csv", [("C", "C", "MCF7", 1)]))], errors.SelfPairError),
        "latin1": (
            [*base, path(measured_file(tmp, "l.csv", [("A", "D", "Zürich", 1)], "latin-1"))],
            errors.UnreadableTextError,
        ),
        "ragged": ([*base, path(ragged)], errors.ScreenDataError),
        "no_data": (["data=almanac", f"data_root={tmp / 'nowhere'}", *TINY], errors.DataNotFoundError),
    }
    return cases[name]


RECOMMEND_CASES = [
    "bad_value", "required", "missing_column", "bad_smiles", "unknown_drug", "bad_score", "two_molecules", "repeat",
    "cell_line", "self_pair", "latin1", "ragged", "salt", "scale", "too_few", "exists", "folder", "exclude",
]  # fmt: skip
DATA_CASES = [
    "bad_value", "required", "missing_column", "bad_smiles", "unknown_drug", "bad_score", "repeat", "cell_line",
    "self_pair", "latin1", "ragged", "no_data",
]  # fmt: skip


def check_reported(command: str, overrides: list[str], expected: type[Exception], tmp: Path, capsys) -> str:
    code, err = run(command, overrides, tmp, capsys)
    assert code == EXIT_CODE, f"recover-{command}: exit {code}, stderr:\n{err}"
    assert "Traceback" not in err, err
    first = err.strip().splitlines()[0]
    assert first.startswith("Error: "), err
    named = first.split(": ", 2)[1]
    assert issubclass(getattr(errors, named), expected), f"{named} is not a {expected.__name__}: {first}"
    assert FULL_ERROR_ENV in err  # how to see the traceback
    logs = list((tmp / "run").glob("*.log"))  # Hydra's job log: the run's record holds the error too
    assert logs and named in logs[0].read_text()
    advice_is_an_option(command, overrides, first)
    return first


@pytest.mark.parametrize("case", RECOMMEND_CASES)
def test_recommend_reports_each_named_error(case: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    overrides, expected = recommend_case(case, tmp_path)
    check_reported("recommend", overrides, expected, tmp_path, capsys)


@pytest.mark.parametrize("case", DATA_CASES)
@pytest.mark.parametrize("command", ["train", "campaign"])
def test_train_and_campaign_report_each_named_error(
    command: str, case: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    overrides, expected = data_case(case, tmp_path)
    extra = CAMPAIGN if command == "campaign" else []
    check_reported(command, [*overrides, *extra], expected, tmp_path, capsys)


def test_advice_is_spelled_for_the_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    overrides, _ = data_case("unknown_drug", tmp_path)
    first = check_reported("train", overrides, errors.UnknownDrugError, tmp_path, capsys)
    assert "+data.screen.on_unknown_drug=drop" in first and "+data.screen.drug_id_column=" in first
    overrides, _ = recommend_case("unknown_drug", tmp_path)
    first = check_reported("recommend", overrides, errors.UnknownDrugError, tmp_path, capsys)
    assert "set on_unknown_drug=drop" in first and "data.screen" not in first
    overrides, _ = data_case("missing_column", tmp_path)
    assert "+data.screen.header=false" in check_reported(
        "train", overrides, errors.MissingColumnsError, tmp_path, capsys
    )
    overrides, _ = data_case("repeat", tmp_path)
    assert "set data.screen.aggregate=mean" in check_reported(
        "train", overrides, errors.ConflictingMeasurementError, tmp_path, capsys
    )


def test_small_test_split_advice_changes_with_the_screen(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = [(a, b, "MCF7", float(i)) for i, (a, b) in enumerate((x, y) for x in "ABCDEF" for y in "ABCDEF" if x < y)]
    screen = write(tmp_path / "screen.csv", table(rows))  # 15 pairs
    base = ["data=csv", f"data.screen.path={screen}", f"data.screen.smiles_path={drug_file(tmp_path)}", *TINY]
    first = check_reported("train", [*base, "split.test=0.2"], errors.EmptySelectionError, tmp_path, capsys)
    assert "split.test=0.2" not in first.split("metrics need")[1] and "recover-recommend" in first


def test_small_test_split_advice_is_computed_from_the_screen() -> None:
    with pytest.raises(errors.EmptySelectionError, match=r"holds 4 experiment\(s\) of 40.*Set split.test=0.25 "):
        check_test_size(4, 40)  # split.test=0.1 of 40: a quarter holds 10
    with pytest.raises(errors.EmptySelectionError, match="too small to hold out 10 experiments"):
        check_test_size(3, 15)
    check_test_size(10, 15)


def test_resume_errors_are_reported_by_the_campaign(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["data.screen.n_drugs=8", "data.screen.n_cell_lines=1", *TINY, *CAMPAIGN]
    assert run("campaign", base, tmp_path, capsys)[0] == 0
    GlobalHydra.instance().clear()
    check_reported(
        "campaign", [*base, "model.training.epochs=2", "resume=true"], errors.ResumeMismatchError, tmp_path, capsys
    )
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"garbage")
    GlobalHydra.instance().clear()
    check_reported("campaign", [*base, "resume=true"], errors.DamagedFileError, tmp_path, capsys)


# Modules of the dose-response command (issue #25): its own tests walk the errors only it raises.
DOSE_RESPONSE = ("data/blocks.py", "data/synergy/", "cli/synergy.py")


def raised_by_these_commands(cls: type) -> bool:
    """Some module other than the dose-response ones (and ``errors.py``, which defines it) raises ``cls``."""
    src = Path(errors.__file__).parent
    sites = [p.relative_to(src).as_posix() for p in src.rglob("*.py") if f"{cls.__name__}(" in p.read_text()]
    return any(not site.startswith(DOSE_RESPONSE) and site != "errors.py" for site in sites)


def test_every_named_error_class_is_walked(tmp_path: Path) -> None:
    walked = {errors.ResumeMismatchError, errors.DamagedFileError}  # test_resume_errors_are_reported_by_...
    walked |= {recommend_case(name, tmp_path)[1] for name in RECOMMEND_CASES}
    walked |= {data_case(name, tmp_path)[1] for name in DATA_CASES}
    classes = {
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == errors.__name__
    }
    assert {c for c in classes if not issubclass(c, NAMED_ERRORS)} == set(), "printed with a traceback"
    missing = {c.__name__ for c in classes - walked if raised_by_these_commands(c)}
    assert missing == set(), "add a case for these classes"


def test_full_traceback_on_request(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    monkeypatch.setenv(FULL_ERROR_ENV, "1")
    overrides, _ = recommend_case("too_few", tmp_path)
    with pytest.raises(errors.TooFewMeasurementsError):
        run("recommend", overrides, tmp_path, capsys)


def test_a_multirun_job_error_is_compact(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    overrides, _ = recommend_case("too_few", tmp_path)
    main, _ = MAINS["recommend"]
    old = sys.argv
    sys.argv = ["recover-recommend", "-m", *overrides, f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    try:
        with pytest.raises(SystemExit):
            main()
    finally:
        sys.argv = old
    err = capsys.readouterr().err
    assert "TooFewMeasurementsError" in err and "Traceback" not in err
