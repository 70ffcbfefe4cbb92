"""Screen, Pairs and aggregate_measurements: canonical order, aggregation rules, encoding, selection."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recover_pyro.errors import EmptySelectionError
from recover_pyro.data.screen import Pairs, Screen, aggregate_measurements, canonical_pair

# (pair, cell) A+B/c1 measured three times (both orders), A+C/c1 once, B+C/c2 twice in one order.
RAW = pd.DataFrame(
    {
        "drug_a": ["A", "B", "A", "A", "C", "C"],
        "drug_b": ["B", "A", "B", "C", "B", "B"],
        "cell_line": ["c1", "c1", "c1", "c1", "c2", "c2"],
        "study": ["s"] * 6,
        "y": [1.0, 5.0, 3.0, 7.0, -2.0, 4.0],
        "z": [10.0, 20.0, 60.0, 0.0, 1.0, 1.0],
    }
)


def _screen(raw: pd.DataFrame = RAW) -> Screen:
    exp = aggregate_measurements(raw, ["y", "z"])
    drugs = pd.DataFrame({"name": ["drug A", "drug B", "drug C"], "smiles": ["C", "CC", "CCC"]}, index=["A", "B", "C"])
    cells = pd.DataFrame({"tissue": ["breast", "lung"]}, index=["c1", "c2"])
    features = pd.DataFrame(np.arange(6.0).reshape(2, 3), index=["c1", "c2"])
    return Screen(drugs, cells, exp, ("y", "z"), cell_features=features, name="toy")


def test_canonical_pair_uses_string_order():
    a, b = canonical_pair(pd.Series(["9", "B", "a"]), pd.Series(["10", "A", "a"]))
    assert list(a) == ["10", "A", "a"]  # "10" < "9" as strings
    assert list(b) == ["9", "B", "a"]


@pytest.mark.parametrize(
    "how, ab, bc",
    [
        ("mean", (3.0, 30.0), (1.0, 1.0)),
        ("median", (3.0, 20.0), (1.0, 1.0)),
        ("max", (5.0, 60.0), (4.0, 1.0)),
        ("min", (1.0, 10.0), (-2.0, 1.0)),
        ("first", (1.0, 10.0), (-2.0, 1.0)),
    ],
)
def test_aggregation_rules(how, ab, bc):
    exp = aggregate_measurements(RAW, ["y", "z"], how=how).set_index(["drug_a", "drug_b", "cell_line"])
    assert len(exp) == 3
    assert tuple(exp.loc[("A", "B", "c1"), ["y", "z"]]) == pytest.approx(ab)
    assert tuple(exp.loc[("B", "C", "c2"), ["y", "z"]]) == pytest.approx(bc)
    assert tuple(exp.loc[("A", "C", "c1"), ["y", "z"]]) == pytest.approx((7.0, 0.0))
    assert exp["n_replicates"].to_dict() == {("A", "B", "c1"): 3, ("A", "C", "c1"): 1, ("B", "C", "c2"): 2}


def test_aggregation_keeps_canonical_order_and_studies_apart():
    raw = pd.concat([RAW, RAW.assign(study="t")], ignore_index=True)
    exp = aggregate_measurements(raw, ["y"])
    assert (exp["drug_a"] <= exp["drug_b"]).all()
    assert len(exp) == 6
    assert list(exp.columns) == ["drug_a", "drug_b", "cell_line", "study", "n_replicates", "y"]
    no_study = aggregate_measurements(RAW.drop(columns="study"), ["y"])
    assert set(no_study["study"]) == {""}
    with pytest.raises(ValueError, match="mean"):
        aggregate_measurements(RAW, ["y"], how="mode")


def test_screen_requires_key_and_score_columns():
    exp = aggregate_measurements(RAW, ["y"])
    with pytest.raises(ValueError, match="z"):
        Screen(pd.DataFrame(index=["A"]), pd.DataFrame(index=["c1"]), exp, ("y", "z"))


def test_to_pairs_indices_map_back_to_ids():
    screen = _screen()
    pairs = screen.to_pairs("z")
    exp = screen.experiments
    drug_ids = np.asarray(screen.drugs.index)
    cell_ids = np.asarray(screen.cell_lines.index)
    assert list(drug_ids[pairs.drug_a.numpy()]) == list(exp["drug_a"])
    assert list(drug_ids[pairs.drug_b.numpy()]) == list(exp["drug_b"])
    assert list(cell_ids[pairs.cell.numpy()]) == list(exp["cell_line"])
    assert pairs.y.dtype == torch.float32
    np.testing.assert_allclose(pairs.y.numpy(), exp["z"].to_numpy())
    assert torch.equal(screen.to_pairs().y, torch.tensor(exp["y"].to_numpy(), dtype=torch.float32))
    candidates = screen.to_pairs(experiments=screen.all_candidates())
    assert candidates.y is None and len(candidates) == 6


def test_pairs_indexing_swapping_and_concat():
    pairs = _screen().to_pairs()
    head = pairs[torch.tensor([0, 2])]
    assert len(head) == 2 and torch.equal(head.y, pairs.y[[0, 2]])
    assert len(pairs[np.array([True, False, True])]) == 2
    assert len(pairs[1:]) == 2
    swapped = pairs.swapped()
    assert torch.equal(swapped.drug_a, pairs.drug_b) and torch.equal(swapped.drug_b, pairs.drug_a)
    both = Pairs.concat([pairs, swapped])
    assert len(both) == 6 and torch.equal(both.y[3:], pairs.y)
    assert Pairs.concat([pairs, Pairs(pairs.drug_a, pairs.drug_b, pairs.cell)]).y is None


def test_select_restricts_drugs_cells_and_features():
    screen = _screen()
    c2 = screen.select(cell_lines="c2")
    assert list(c2.cell_lines.index) == ["c2"]
    assert list(c2.drugs.index) == ["B", "C"]
    assert list(c2.cell_features.index) == ["c2"]
    assert len(c2) == 1 and c2.experiments.index.tolist() == [0]
    assert list(screen.select(cell_lines="c2", keep_all_drugs=True).drugs.index) == ["A", "B", "C"]
    assert len(screen.select(studies=["s"])) == 3
    assert len(screen) == 3  # selection does not change the original


def test_select_errors_name_closest():
    screen = _screen()
    with pytest.raises(EmptySelectionError, match="c1"):
        screen.select(cell_lines="C-1")
    with pytest.raises(EmptySelectionError, match="'s'"):
        screen.select(studies="S0")


def test_all_candidates_count_and_order():
    screen = _screen()
    cand = screen.all_candidates()
    d, c = screen.n_drugs, screen.n_cell_lines
    assert len(cand) == d * (d - 1) // 2 * c
    assert (cand["drug_a"] < cand["drug_b"]).all()
    assert not cand.duplicated().any()
    assert len(screen.all_candidates(cell_lines=["c2"])) == d * (d - 1) // 2


def test_summary_mentions_sizes():
    text = _screen().summary()
    assert "3 unordered (pair, cell line) experiments" in text and "3 drugs" in text


def test_real_screen_encoding(data_root):
    from recover_pyro.data.loaders import load_almanac

    mcf7 = load_almanac(data_root, cell_lines="MCF7", cell_features=False)
    assert len(mcf7.all_candidates()) == 86 * 85 // 2
    pairs = mcf7.to_pairs()
    ids = np.asarray(mcf7.drugs.index)
    assert list(ids[pairs.drug_a.numpy()]) == list(mcf7.experiments["drug_a"])
    assert bool((pairs.drug_a != pairs.drug_b).all())
    assert pairs.cell.unique().tolist() == [0]


def test_to_pairs_rejects_unknown_ids():
    screen = _screen()
    bad = screen.experiments.assign(drug_b="Z")
    with pytest.raises(KeyError, match="Z"):
        screen.to_pairs(experiments=bad)
