"""Property-based tests (hypothesis): random malformed hand-made tables never crash the loaders or
``recommend``, never yield NaN features or targets, and either load the valid rows (every dropped row
counted) or raise one of the library's named errors (naming a file).

Sized for CI: all properties together take well under a minute on one core.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from recover_pyro.acquisition import UCB
from recover_pyro.models.baselines import DeterministicModel, TrainConfig
from recover_pyro.errors import ScreenDataError
from recover_pyro.data.featurize import featurize
from recover_pyro.data.loaders import load_csv, load_drugcomb
from recover_pyro.models.predictor import RecoverPredictor
from recover_pyro.recommend import recommend

GOOD_SMILES = {"A": "CCO", "B": "c1ccccc1O", "C": "CC(=O)O", "D": "CCN(CC)CC", "E": "OC1CCCCC1"}
# What a hand-made spreadsheet holds: valid ids, unknown ids, stray spaces, case slips, empties, a self-pair
# waiting to happen, a separator inside a field, a formula.
DRUG_CELLS = ["A", "B", "C", "D", "E", " A ", "a", "Z", "", "A,B", "=cmd()"]
CELL_LINES = ["MCF7", " MCF7 ", "mcf7", "HeLa", ""]
SCORE_TEXT = ["", "abc", "1e308", "-1e400", "NaN", "inf", "3,5", " 2 ", "\\N", "1.5e3"]
SMILES_CELLS = [*GOOD_SMILES.values(), "", "C1CC", "xyz", "[Na+].[Cl-]", "C" * 6_000, "CC(", "Cl[Pt]Cl"]

# Half the tables are clean apart from what a valid table may hold (replicates, self-pairs, either drug
# order), so that the loading branch is exercised as well as every error; the other half mix in faults.
good_drug = st.sampled_from(list(GOOD_SMILES))
good_score = st.floats(-1e4, 1e4, allow_nan=False)
pair = st.lists(good_drug, min_size=2, max_size=2, unique=True)
clean_rows = st.lists(
    st.tuples(pair, st.just("MCF7"), good_score.map(str)).map(lambda t: (*t[0], t[1], t[2])), min_size=1, max_size=20
)
drug = st.one_of(good_drug, good_drug, good_drug, st.sampled_from(DRUG_CELLS))
scores = st.one_of(
    good_score,
    good_score,
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from(SCORE_TEXT),
)
messy_rows = st.lists(
    st.tuples(drug, drug, st.one_of(st.just("MCF7"), st.sampled_from(CELL_LINES)), scores.map(str)), max_size=20
)
rows = st.one_of(clean_rows, messy_rows)
# database=None: CI runs are independent (no .hypothesis/ folder of saved examples in the checkout).
PROPERTY = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def write_table(folder: Path, name: str, header: str, body: list[tuple[str, ...]]) -> Path:
    """Joined by bare commas, as a careless export would (a comma inside a field shifts the columns)."""
    path = folder / name
    path.write_text(header + "".join(",".join(r) + "\n" for r in body), encoding="utf-8")
    return path


def data_lines(body: list[tuple[str, ...]]) -> int:
    """Lines a person would call rows (a line of empty fields only is a blank line)."""
    return sum(any(field.strip() for field in r) for r in body)


def assert_named(err: ScreenDataError) -> None:
    event(type(err).__name__)  # --hypothesis-show-statistics: how often each outcome was reached
    assert err.file, f"error names no file: {err}"


@PROPERTY
@given(
    body=rows,
    smiles=st.one_of(
        st.just(list(GOOD_SMILES.values())), st.lists(st.sampled_from(SMILES_CELLS), min_size=5, max_size=5)
    ),
    on_invalid=st.sampled_from(["raise", "drop"]),
    on_unknown=st.sampled_from(["raise", "drop"]),
    aggregate=st.sampled_from(["mean", "raise"]),
)
def test_load_csv_loads_valid_rows_or_names_the_problem(body, smiles, on_invalid, on_unknown, aggregate) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        drugs = write_table(folder, "drugs.csv", "drug_id,smiles\n", list(zip(GOOD_SMILES, smiles)))
        measured = write_table(folder, "plate.csv", "drug_a,drug_b,cell_line,synergy\n", body)
        try:
            screen = load_csv(measured, drugs, on_invalid=on_invalid, on_unknown_drug=on_unknown, aggregate=aggregate)
            features = featurize(screen, cache_dir=None)
        except ScreenDataError as err:
            assert_named(err)
            return
    event("loaded")
    exp = screen.experiments
    assert len(exp) and np.isfinite(exp["synergy"].to_numpy()).all()
    assert int(exp["n_replicates"].sum()) + sum(screen.dropped.values()) == data_lines(body)
    assert (exp["drug_a"] != exp["drug_b"]).all()
    pairs = screen.to_pairs("synergy")
    assert torch.isfinite(pairs.y).all()
    assert torch.isfinite(features.drug).all() and torch.isfinite(features.cell).all()


drugcomb_drug = st.one_of(good_drug, good_drug, good_drug, st.sampled_from(["\\N", "Z", "", " B"]))
drugcomb_rows = st.lists(
    st.tuples(
        drugcomb_drug,
        drugcomb_drug,
        st.sampled_from(["MCF7", "A549"]),
        st.sampled_from(["ONEIL", "ALMANAC"]),
        scores.map(str),
    ),
    max_size=20,
)


@PROPERTY
@given(
    body=drugcomb_rows,
    on_invalid=st.sampled_from(["raise", "drop"]),
    on_unknown=st.sampled_from(["raise", "drop"]),
    studies=st.sampled_from([None, ["ONEIL"], ["ONEIL", "ALMANAC"]]),
)
def test_load_drugcomb_loads_valid_rows_or_names_the_problem(body, on_invalid, on_unknown, studies) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        drugs = write_table(folder, "drugs.csv", "drug_id,smiles\n", list(GOOD_SMILES.items()))
        lines = [(str(i), *r) for i, r in enumerate(body)]
        summary = write_table(
            folder, "summary.csv", "block_id,drug_row,drug_col,cell_line_name,study_name,synergy_bliss\n", lines
        )
        try:
            screen = load_drugcomb(
                summary,
                drugs,
                studies=studies,
                scores=("synergy_bliss",),
                on_invalid=on_invalid,
                on_unknown_drug=on_unknown,
            )
        except ScreenDataError as err:
            assert_named(err)
            return
    event("loaded")
    exp = screen.experiments
    assert len(exp) and np.isfinite(exp["synergy_bliss"].to_numpy()).all()
    selected = [r for r in body if studies is None or r[3] in studies]
    # Rows outside the selected studies are filtered by request, not dropped; the rest are all accounted for.
    assert int(exp["n_replicates"].sum()) + sum(screen.dropped.values()) >= len(selected)
    assert int(exp["n_replicates"].sum()) + sum(screen.dropped.values()) <= len(body)


TINY_NET = functools.partial(RecoverPredictor, drug_hidden=(8,), merge_dim=4, merge_rank=2, head_hidden=(4,))


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.one_of(clean_rows, clean_rows, clean_rows, messy_rows),
    wanted=st.one_of(
        st.just(["MCF7"]),
        st.just(["MCF7"]),
        st.just([" MCF7"]),
        st.sampled_from([["mcf7"], ["MCF-7"], ["HeLa"], ["MCF7", "HeLa"]]),
    ),
    q=st.integers(1, 20),
    on_duplicate=st.sampled_from(["mean", "raise"]),
)
def test_recommend_returns_a_sound_plate_or_names_the_problem(body, wanted, q, on_duplicate) -> None:
    model = functools.partial(DeterministicModel, predictor=TINY_NET, training=TrainConfig(epochs=1, batch_size=8))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        drugs = write_table(folder, "drugs.csv", "drug_id,smiles\n", list(GOOD_SMILES.items()))
        measured = write_table(folder, "plate.csv", "drug_a,drug_b,cell_line,synergy\n", body)
        try:
            result = recommend(
                [measured],
                drugs,
                wanted,
                "synergy",
                model=model,
                acquisition=UCB(q=q),
                featurize=functools.partial(featurize, cache_dir=None),
                num_samples=3,
                on_duplicate=on_duplicate,
            )
        except ScreenDataError as err:
            assert_named(err)
            return
    event("plate")
    table = result.table
    assert 1 <= len(table) <= q
    assert set(table["cell_line"]) <= {w.strip() for w in wanted} <= set(result.measured.experiments["cell_line"])
    assert np.isfinite(table[["predicted_mean", "predicted_std", "acquisition_score"]].to_numpy()).all()
    assert set(table["drug_a"]) | set(table["drug_b"]) <= set(GOOD_SMILES)
    done = set(
        zip(
            result.measured.experiments["drug_a"],
            result.measured.experiments["drug_b"],
            result.measured.experiments["cell_line"],
        )
    )
    assert not done & set(zip(table["drug_a"], table["drug_b"], table["cell_line"]))


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "latin-1"])
def test_encodings_read_or_named(encoding: str) -> None:
    """Not random, but the same contract: every encoding loads or raises a named error."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        drugs = write_table(folder, "drugs.csv", "drug_id,smiles\n", list(GOOD_SMILES.items()))
        path = folder / "plate.csv"
        path.write_text("drug_a,drug_b,cell_line,synergy\nA,B,Zürich,1\nA,C,Zürich,2\n", encoding=encoding)
        try:
            screen = load_csv(path, drugs)
        except ScreenDataError as err:
            assert encoding == "latin-1" and err.row == 2
            return
        assert list(screen.cell_lines.index) == ["Zürich"]
