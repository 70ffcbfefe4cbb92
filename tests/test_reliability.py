"""Issue #14: every bad input named, no silent mixing, no crash, nothing lost.

One test (or a few) per class of the issue, each on real files written into ``tmp_path``.
"""

from __future__ import annotations

import functools
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from recover_pyro.records import files as rio
from recover_pyro.acquisition import UCB
from recover_pyro.models.baselines import DeterministicModel, TrainConfig
from recover_pyro.cli.builders import CONFIG_DIR
from recover_pyro.campaign import CHECKPOINT, load_checkpoint
from recover_pyro.cli.campaign import campaign_from_config
from recover_pyro.cli.checks import validate_config
from recover_pyro.data import featurize as fz
from recover_pyro.errors import (
    ConfigValueError,
    ConflictingMeasurementError,
    DamagedFileError,
    EmptySelectionError,
    InvalidScoreError,
    InvalidSmilesError,
    MissingColumnsError,
    ResumeMismatchError,
    ScreenDataError,
    SelfPairError,
    UnknownDrugError,
    UnreadableTextError,
)
from recover_pyro.data.featurize import featurize, morgan_fingerprints, standardize_smiles
from recover_pyro.data.loaders import load_csv, load_drugcomb
from recover_pyro.models.predictor import RecoverPredictor
from recover_pyro import recommend
from recover_pyro.cli.run_config import preserve_hydra_config
from recover_pyro.cli.train import train

DRUGS = {"A": "CCO", "B": "c1ccccc1O", "C": "CC(=O)O", "D": "CCN(CC)CC", "E": "OC1CCCCC1", "F": "CC(C)O"}


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fz.CACHE_ENV, str(tmp_path / "cache"))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def drug_table(folder: Path, extra: dict[str, str] | None = None) -> Path:
    rows = {**DRUGS, **(extra or {})}
    return write(folder / "drugs.csv", "drug_id,smiles\n" + "".join(f"{k},{v}\n" for k, v in rows.items()))


def measured(folder: Path, rows: list[tuple[str, str, str, object]], name: str = "round0.csv") -> Path:
    body = "".join(f"{a},{b},{c},{y}\n" for a, b, c, y in rows)
    return write(folder / name, "drug_a,drug_b,cell_line,synergy\n" + body)


PLATE = [
    ("A", "B", "MCF7", 1.0),
    ("A", "C", "MCF7", 3.0),
    ("B", "C", "MCF7", -2.0),
    ("C", "D", "MCF7", 0.5),
    ("D", "E", "MCF7", 2.5),
    ("A", "E", "MCF7", -1.0),
]
TINY_NET = functools.partial(RecoverPredictor, drug_hidden=(8,), merge_dim=4, merge_rank=2, head_hidden=(4,))


def tiny_recommend(paths: list[Path], smiles: Path, cell_lines: list[str], q: int = 3, **kw: object):
    model = functools.partial(DeterministicModel, predictor=TINY_NET, training=TrainConfig(epochs=2, batch_size=8))
    return recommend(
        paths,
        smiles,
        cell_lines,
        "synergy",
        model=model,
        acquisition=UCB(q=q),
        featurize=functools.partial(featurize, cache_dir=None),
        num_samples=4,
        **kw,
    )


def compose_root(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


# --- silent mixing on resume ---------------------------------------------------------------------
SMALL_CAMPAIGN = [
    "data.screen.n_drugs=8",
    "data.screen.n_cell_lines=1",
    "campaign.n_initial=5",
    "campaign.n_rounds=2",
    "acquisition.q=3",
    "campaign.progress=false",
    "num_samples=4",
    "model.predictor.drug_hidden=[8]",
    "model.predictor.merge_dim=4",
    "model.predictor.merge_rank=2",
    "model.predictor.head_hidden=[4]",
]
BNN = ["inference.epochs=2"]
DET = ["+experiment=deterministic", "model.training.epochs=2"]


def test_resume_refuses_another_model_prior_or_feature_setting(tmp_path: Path) -> None:
    campaign_from_config(compose_root("campaign", [*SMALL_CAMPAIGN, *BNN]), tmp_path)
    before = (tmp_path / "rounds.csv").read_bytes()
    for change, key in (
        (DET, "model._target_"),
        ([*BNN, "prior=laplace"], "prior"),
        ([*BNN, "inference.lr=0.01"], "inference.lr"),
        ([*BNN, "features.radius=3"], "features.radius"),
        ([*BNN, "acquisition.kappa=2.0"], "kappa"),
    ):
        with pytest.raises(ResumeMismatchError, match=key) as err:
            campaign_from_config(compose_root("campaign", [*SMALL_CAMPAIGN, *change, "resume=true"]), tmp_path)
        assert "device" in str(err.value)  # says which keys may differ
    assert (tmp_path / "rounds.csv").read_bytes() == before
    # Keys that do not change results do not block resume; extending n_rounds continues.
    resumed = campaign_from_config(
        compose_root(
            "campaign",
            [
                *SMALL_CAMPAIGN,
                *BNN,
                "resume=true",
                "inference.progress=true",
                "inference.eval_batch_size=7",
                "campaign.n_rounds=3",
            ],
        ),
        tmp_path,
    )
    assert resumed.rounds["round"].tolist() == [0, 1, 2, 3]


def test_resume_refuses_a_checkpoint_with_more_rounds_than_configured(tmp_path: Path) -> None:
    campaign_from_config(compose_root("campaign", [*SMALL_CAMPAIGN, *DET]), tmp_path)
    with pytest.raises(ResumeMismatchError, match="campaign.n_rounds"):
        campaign_from_config(
            compose_root("campaign", [*SMALL_CAMPAIGN, *DET, "campaign.n_rounds=1", "resume=true"]), tmp_path
        )


def test_resume_keeps_the_original_hydra_config(tmp_path: Path) -> None:
    hydra_dir = tmp_path / ".hydra"
    hydra_dir.mkdir()
    write(hydra_dir / "config.yaml", "model: bnn\n")
    preserve_hydra_config(tmp_path, resuming=False)
    write(hydra_dir / "config.yaml", "model: deterministic\n")  # what Hydra writes for the resumed call
    preserve_hydra_config(tmp_path, resuming=True)
    assert (hydra_dir / "config.yaml").read_text() == "model: bnn\n"
    assert (hydra_dir / "resume-1" / "config.yaml").read_text() == "model: deterministic\n"


def test_campaign_cli_refused_resume_leaves_the_run_config(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "recover_pyro.campaign", *SMALL_CAMPAIGN, *DET, f"hydra.run.dir={tmp_path}"]
    first = subprocess.run(base, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    original = (tmp_path / ".hydra" / "config.yaml").read_text()
    again = subprocess.run(
        [*base, "model.training.epochs=3", "resume=true"], capture_output=True, text=True, timeout=300
    )
    assert again.returncode != 0 and "model.training.epochs" in again.stderr
    assert (tmp_path / ".hydra" / "config.yaml").read_text() == original


@pytest.mark.parametrize("content", [b"", b"garbage, not a checkpoint", "truncated"])
def test_damaged_campaign_checkpoint_names_the_file(tmp_path: Path, content: object) -> None:
    campaign_from_config(compose_root("campaign", [*SMALL_CAMPAIGN, *DET]), tmp_path)
    path = tmp_path / CHECKPOINT
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if content == "truncated" else content)
    with pytest.raises(DamagedFileError, match="resume") as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "weights_only=False" not in str(err.value)
    with pytest.raises(DamagedFileError):
        campaign_from_config(compose_root("campaign", [*SMALL_CAMPAIGN, *DET, "resume=true"]), tmp_path)


def test_checkpoint_with_inconsistent_entries_is_refused(tmp_path: Path) -> None:
    campaign_from_config(compose_root("campaign", [*SMALL_CAMPAIGN, *DET]), tmp_path)
    ckpt = load_checkpoint(tmp_path / CHECKPOINT)
    ckpt["completed"] = 5
    torch.save(ckpt, tmp_path / CHECKPOINT)
    with pytest.raises(DamagedFileError, match="inconsistent"):
        load_checkpoint(tmp_path / CHECKPOINT)


# --- damaged fingerprint cache -----------------------------------------------------------------
@pytest.mark.parametrize("damage", ["empty", "garbage", "shape", "dtype"])
def test_damaged_fingerprint_cache_is_discarded_and_recomputed(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "fp"
    fresh = morgan_fingerprints(["CCO"], cache_dir=cache)
    (entry,) = list(cache.rglob("*.npz"))
    if damage == "empty":
        entry.write_bytes(b"")
    elif damage == "garbage":
        entry.write_bytes(b"PK\x03\x04 not a zip")
    else:
        bits = np.zeros(7, np.uint8) if damage == "shape" else np.zeros(128, np.float64)
        np.savez(entry, smiles=np.array("CCO"), bits=bits)
    with caplog.at_level(logging.WARNING):
        again = morgan_fingerprints(["CCO"], cache_dir=cache)
    np.testing.assert_array_equal(again, fresh)
    assert "discarding damaged fingerprint cache" in caplog.text


# --- recommend for a cell line without data ---------------------------------------------------
@pytest.mark.parametrize("name", ["MCF-7", "mcf7", "HeLa"])
def test_recommend_refuses_a_cell_line_without_measurements(tmp_path: Path, name: str) -> None:
    smiles, plate = drug_table(tmp_path), measured(tmp_path, PLATE)
    with pytest.raises(EmptySelectionError, match="no measurement") as err:
        tiny_recommend([plate], smiles, [name])
    if name != "HeLa":
        assert "'MCF7'" in str(err.value)


def test_recommend_strips_the_requested_cell_line(tmp_path: Path) -> None:
    result = tiny_recommend([measured(tmp_path, PLATE)], drug_table(tmp_path), [" MCF7"])
    assert set(result.table["cell_line"]) == {"MCF7"}


def test_case_variant_of_a_cell_line_is_named(tmp_path: Path) -> None:
    rows = [*PLATE, ("B", "D", " mcf7 ", 1.0)]
    with pytest.raises(ScreenDataError, match="differ only in case") as err:
        load_csv(measured(tmp_path, rows), drug_table(tmp_path))
    assert err.value.row == 8
    second = measured(tmp_path, [("B", "D", "mcf7", 1.0)], "round1.csv")
    with pytest.raises(ScreenDataError, match="differ only in case"):
        tiny_recommend([measured(tmp_path, PLATE), second], drug_table(tmp_path), ["MCF7"])


# --- replicates, self-pairs, salts ---------------------------------------------------------------
def test_conflicting_replicates_in_one_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    smiles, plate = (
        drug_table(tmp_path),
        measured(tmp_path, [*PLATE, ("B", "A", "MCF7", 500.0), ("A", "B", "MCF7", -126.0)]),
    )
    with pytest.raises(ConflictingMeasurementError, match="lines 2, 8, 9"):
        tiny_recommend([plate], smiles, ["MCF7"], on_duplicate="raise")
    with caplog.at_level(logging.WARNING):
        screen = load_csv(plate, smiles)
    assert "further apart" in caplog.text and "500.0" in caplog.text
    assert screen.experiments["n_replicates"].max() == 3


def test_self_pair_is_named_or_dropped(tmp_path: Path) -> None:
    smiles, plate = drug_table(tmp_path), measured(tmp_path, [*PLATE, ("C", "C", "MCF7", 9.0)])
    with pytest.raises(SelfPairError, match="paired with itself") as err:
        load_csv(plate, smiles)
    assert (err.value.row, err.value.drug) == (8, "C")
    screen = load_csv(plate, smiles, on_invalid="drop")
    assert screen.dropped == {"self_pair": 1} and len(screen) == len(PLATE)


def test_salt_or_metal_ion_as_a_drug_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    smiles = drug_table(tmp_path, {"G": "[Na+].[Cl-]"})
    with caplog.at_level(logging.WARNING):
        load_csv(measured(tmp_path, [*PLATE, ("A", "G", "MCF7", 1.0)]), smiles)
    assert "no carbon atom" in caplog.text and "G (line 8" in caplog.text


# --- crash: a huge SMILES ---------------------------------------------------------------------
def test_huge_smiles_is_refused_before_rdkit(tmp_path: Path) -> None:
    smiles = drug_table(tmp_path, {"G": "C" * 20_000})
    with pytest.raises(InvalidSmilesError, match="MAX_SMILES_CHARS") as err:
        load_csv(measured(tmp_path, [*PLATE, ("A", "G", "MCF7", 1.0)]), smiles)
    assert err.value.row == 8 and err.value.drug == "G"
    with pytest.raises(InvalidSmilesError, match="MAX_HEAVY_ATOMS"):
        standardize_smiles("C1" + "C" * 1_200 + "1", drug="ring")


# --- raw errors -------------------------------------------------------------------------------
def test_latin1_file_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("drug_a,drug_b,cell_line,synergy\nA,B,MCF7,1\nA,C,Zürich,2\n".encode("latin-1"))
    with pytest.raises(UnreadableTextError, match="UTF-8") as err:
        load_csv(path, drug_table(tmp_path))
    assert err.value.row == 3 and "latin1.csv" in str(err.value)


def test_utf16_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "utf16.csv"
    path.write_text(
        "drug_a,drug_b,cell_line,synergy\n" + "".join(f"{a},{b},{c},{y}\n" for a, b, c, y in PLATE), encoding="utf-16"
    )
    smiles = tmp_path / "drugs16.csv"
    smiles.write_text(drug_table(tmp_path).read_text(), encoding="utf-16")
    assert len(load_csv(path, smiles)) == len(PLATE)


@pytest.mark.parametrize(
    "override, key",
    [
        ("inference.epochs=abc", "inference.epochs"),
        ("acquisition.q=ten", "acquisition.q"),
        ("num_samples=0", "num_samples"),
        ("campaign.num_samples=-1", "campaign.num_samples"),
        ("features.n_bits=0", "features.n_bits"),
        ("seed=-1", "seed"),
        ("device=gpu", "device"),
    ],
)
def test_config_values_are_checked_before_any_fit(override: str, key: str) -> None:
    with pytest.raises(ConfigValueError, match=rf"option {key}:"):
        validate_config(compose_root("campaign", [override]))


def test_recommend_options_are_checked(tmp_path: Path) -> None:
    files = [f"measured=[{measured(tmp_path, PLATE)}]", f"smiles={drug_table(tmp_path)}", "cell_lines=[MCF7]"]
    with pytest.raises(ConfigValueError, match="option on_duplicate"):
        validate_config(compose_root("recommend", [*files, "on_duplicate=median"]))
    with pytest.raises(ConfigValueError, match="option measured: file not found"):
        validate_config(compose_root("recommend", [*files[1:], f"measured=[{tmp_path / 'round9.csv'}]"]))


def test_missing_input_file_names_option_and_path(tmp_path: Path) -> None:
    cfg = compose_root(
        "config",
        ["data=csv", f"data.screen.path={tmp_path / 'nope.csv'}", f"data.screen.smiles_path={drug_table(tmp_path)}"],
    )
    with pytest.raises(ConfigValueError, match="data.screen.path.*nope.csv"):
        train(cfg, tmp_path / "out")


def test_score_beyond_float32_names_the_file_line(tmp_path: Path) -> None:
    plate = measured(tmp_path, [*PLATE[:3], ("D", "E", "MCF7", "1e308")])
    with pytest.raises(InvalidScoreError, match="float32") as err:
        load_csv(plate, drug_table(tmp_path))
    assert err.value.row == 5


def test_train_num_samples_checked_before_the_fit(tmp_path: Path) -> None:
    with pytest.raises(ConfigValueError, match="num_samples"):
        train(compose_root("config", ["num_samples=0"]), tmp_path)
    assert not (tmp_path / "metrics.json").exists()


# --- other silent outcomes --------------------------------------------------------------------
def test_recommend_refuses_to_overwrite_a_plate(tmp_path: Path) -> None:
    smiles, plate = drug_table(tmp_path), measured(tmp_path, PLATE)
    out = write(tmp_path / "next.csv", "the lab's plate\n")
    cmd = [
        sys.executable,
        "-m",
        "recover_pyro.recommend",
        f"measured=[{plate}]",
        f"smiles={smiles}",
        "cell_lines=[MCF7]",
        f"out={out}",
        "+experiment=deterministic",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "set overwrite=true" in done.stderr  # one named error, no traceback
    assert "Traceback" not in done.stderr and done.stderr.startswith("Error: OutputExistsError: ")
    assert out.read_text() == "the lab's plate\n"
    bad = subprocess.run(
        [*cmd[:-3], "acquisition.q=ten", f"hydra.run.dir={tmp_path / 'run2'}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "option acquisition.q" in bad.stderr and "Traceback" not in bad.stderr


def test_q_beyond_the_pool_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        result = tiny_recommend([measured(tmp_path, PLATE)], drug_table(tmp_path), ["MCF7"], q=50)
    assert len(result.table) == 15 - len(PLATE)
    assert f"the plate holds {15 - len(PLATE)} rows" in caplog.text


def test_train_refuses_a_test_split_too_small_for_metrics(tmp_path: Path) -> None:
    cfg = compose_root("config", ["data.screen.n_drugs=4", "data.screen.n_cell_lines=1", "inference.epochs=1"])
    with pytest.raises(EmptySelectionError, match="test split holds"):
        train(cfg, tmp_path)
    assert not (tmp_path / "metrics.json").exists()


def test_result_json_is_strict() -> None:
    assert json.loads(json.dumps(rio.json_safe({"r2": float("nan"), "xs": [float("inf"), 1.0]}))) == {
        "r2": None,
        "xs": [None, 1.0],
    }


def test_header_only_and_headerless_csv(tmp_path: Path) -> None:
    smiles = drug_table(tmp_path)
    with pytest.raises(EmptySelectionError, match="no data rows"):
        load_csv(write(tmp_path / "empty.csv", "drug_a,drug_b,cell_line,synergy\n"), smiles)
    bare = write(tmp_path / "bare.csv", "".join(f"{a},{b},{c},{y}\n" for a, b, c, y in PLATE))
    with pytest.raises(MissingColumnsError, match="add one, or load the file with header=False"):
        load_csv(bare, smiles)
    assert len(load_csv(bare, smiles, header=False, score_columns=["synergy"])) == len(PLATE)


def test_misspelt_score_column_suggests_the_present_one(tmp_path: Path) -> None:
    with pytest.raises(MissingColumnsError, match=r"closest present: \{'synergi': \['synergy'\]\}"):
        load_csv(measured(tmp_path, PLATE), drug_table(tmp_path), score_columns=["synergi"])


def test_text_column_is_not_taken_for_a_score(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "notes.csv", "drug_a,drug_b,cell_line,synergy,notes\nA,B,MCF7,1,redo\nA,C,MCF7,2,\n")
    with caplog.at_level(logging.WARNING):
        screen = load_csv(path, drug_table(tmp_path))
    assert screen.score_columns == ("synergy",) and "notes" in caplog.text


def test_drugcomb_unknown_drugs_suggest_the_drop_rule(tmp_path: Path) -> None:
    header = "block_id,drug_row,drug_col,cell_line_name,study_name,synergy_bliss\n"
    rows = "".join(f"{i},A,Zz{i}xq,MCF7,S,1.0\n" for i in range(8))
    summary = write(tmp_path / "summary.csv", header + rows + "9,A,B,MCF7,S,2.0\n")
    with pytest.raises(UnknownDrugError, match="on_unknown_drug=drop") as err:
        load_drugcomb(summary, drug_table(tmp_path), scores=("synergy_bliss",))
    assert "no similar name" in str(err.value)
    assert load_drugcomb(summary, drug_table(tmp_path), scores=("synergy_bliss",), on_unknown_drug="drop").dropped == {
        "unknown_drug": 8
    }


def test_formula_like_names_are_neutralised_in_plates(caplog: pytest.LogCaptureFixture) -> None:
    table = pd.DataFrame(
        {"drug_a_name": ['=HYPERLINK("x")', "aspirin", "+1", "-"], "predicted_mean": [1.0, -2.0, 0, 1]}
    )
    with caplog.at_level(logging.WARNING):
        safe = rio.spreadsheet_safe(table)
    assert safe["drug_a_name"].tolist() == ['\'=HYPERLINK("x")', "aspirin", "'+1", "'-"]
    assert safe["predicted_mean"].tolist() == [1.0, -2.0, 0, 1] and "formula" in caplog.text


# --- writes -----------------------------------------------------------------------------------
def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    path = write(tmp_path / "rounds.csv", "old\n")

    def failing(handle) -> None:
        handle.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rio.atomic_write(path, failing)
    assert path.read_text() == "old\n" and list(tmp_path.iterdir()) == [path]


def test_every_result_file_goes_through_atomic_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[str] = []
    real = rio.os.replace

    def spy(src, dst):
        written.append(Path(dst).name)
        return real(src, dst)

    monkeypatch.setattr(rio.os, "replace", spy)  # atomic_write's final step
    campaign_from_config(compose_root("campaign", [*SMALL_CAMPAIGN, *DET]), tmp_path / "campaign")
    assert {"rounds.csv", "rounds.json", "selections.csv", "checkpoint.pt", "recall.png"} <= set(written)
    written.clear()
    train(
        compose_root(
            "config",
            [
                "+experiment=deterministic",
                "model.training.epochs=1",
                "num_samples=4",
                "data.screen.n_drugs=10",
                "model.predictor.drug_hidden=[8]",
            ],
        ),
        tmp_path / "train",
    )
    assert {"metrics.json", "checkpoint.pt", "test_predictions.csv"} <= set(written)
