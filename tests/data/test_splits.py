from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from recover_pyro.errors import EmptySelectionError
from recover_pyro.data.splits import (
    Split,
    make_split,
    random_split,
    unseen_cell_line_split,
    unseen_drug_split,
)
from recover_pyro.data.synthetic import make_synthetic_screen


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic_screen(n_drugs=30, n_cell_lines=4, seed=0)


def assert_partition(split: Split, n: int) -> None:
    """Disjoint, covering, sorted int64 indices."""
    parts = [split.train, split.val, split.test]
    assert all(p.dtype == np.int64 and (np.diff(p) > 0).all() for p in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))
    assert sum(split.sizes().values()) == n


def part_of(split: Split, n: int) -> np.ndarray:
    label = np.empty(n, dtype=object)
    for name in ("train", "val", "test"):
        label[getattr(split, name)] = name
    return label


def drugs_in(exp: pd.DataFrame, rows: np.ndarray) -> set[str]:
    sub = exp.iloc[rows]
    return set(sub["drug_a"]) | set(sub["drug_b"])


def n_pairs(exp: pd.DataFrame, rows: np.ndarray) -> int:
    return len(exp.iloc[rows][["drug_a", "drug_b"]].drop_duplicates())


def keys(exp: pd.DataFrame, rows: np.ndarray) -> set[tuple[str, str, str]]:
    return set(map(tuple, exp.iloc[rows][["drug_a", "drug_b", "cell_line"]].to_numpy()))


# --- random ------------------------------------------------------------------------------------------
def test_random_pair_split_keeps_pairs_together(synthetic):
    exp = synthetic.experiments
    split = random_split(synthetic, val=0.2, test=0.1, seed=1, test_seed=2)
    assert_partition(split, len(exp))
    labels = pd.Series(part_of(split, len(exp)))
    per_pair = labels.groupby([exp["drug_a"], exp["drug_b"]]).nunique()
    assert (per_pair == 1).all()
    # Fractions count pairs: 435 pairs -> 44 test pairs, then 20% of the other 391 -> 78 validation pairs.
    assert (n_pairs(exp, split.test), n_pairs(exp, split.val)) == (44, 78)


def test_random_experiment_split_sizes(synthetic):
    n = len(synthetic)
    split = random_split(synthetic, val=0.25, test=0.1, group="experiment")
    assert_partition(split, n)
    n_test = round(0.1 * n)
    assert split.sizes() == {
        "train": n - n_test - round(0.25 * (n - n_test)),
        "val": round(0.25 * (n - n_test)),
        "test": n_test,
    }
    # Rows of one pair now land in different parts.
    exp = synthetic.experiments
    labels = pd.Series(part_of(split, n))
    assert (labels.groupby([exp["drug_a"], exp["drug_b"]]).nunique() > 1).any()


@pytest.mark.parametrize("group", ["pair", "experiment"])
def test_test_set_depends_only_on_test_seed(synthetic, group):
    a = random_split(synthetic, seed=0, test_seed=0, group=group)
    again = random_split(synthetic, seed=0, test_seed=0, group=group)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, name), getattr(again, name))
    b = random_split(synthetic, seed=1, test_seed=0, group=group)
    np.testing.assert_array_equal(a.test, b.test)
    assert not np.array_equal(a.val, b.val)
    c = random_split(synthetic, seed=0, test_seed=1, group=group)
    assert not np.array_equal(a.test, c.test)


def test_split_does_not_depend_on_row_order(synthetic):
    shuffled = synthetic.experiments.sample(frac=1.0, random_state=0).reset_index(drop=True)
    other = replace(synthetic, experiments=shuffled)
    a, b = random_split(synthetic), random_split(other)
    assert keys(synthetic.experiments, a.test) == keys(shuffled, b.test)
    assert keys(synthetic.experiments, a.val) == keys(shuffled, b.val)


def test_invalid_fractions(synthetic):
    with pytest.raises(ValueError, match="test=1.0"):
        random_split(synthetic, test=1.0)
    with pytest.raises(ValueError, match="val=-0.1"):
        random_split(synthetic, val=-0.1)
    with pytest.raises(ValueError, match="group"):
        random_split(synthetic, group="drug")
    assert random_split(synthetic, val=0.0).sizes()["val"] == 0


# --- unseen drugs ------------------------------------------------------------------------------------
def check_unseen_drugs(screen, split: Split, n_held: int) -> None:
    exp = screen.experiments
    assert_partition(split, len(exp))
    seen = drugs_in(exp, np.concatenate([split.train, split.val]))
    held = set(exp["drug_a"]) | set(exp["drug_b"])
    held -= seen
    assert len(held) == n_held
    test = exp.iloc[split.test]
    # Every test row contains a held-out drug and every row containing one is a test row.
    assert (test["drug_a"].isin(held) | test["drug_b"].isin(held)).all()
    assert len(test) == (exp["drug_a"].isin(held) | exp["drug_b"].isin(held)).sum()


def test_unseen_drug_split_synthetic(synthetic):
    split = unseen_drug_split(synthetic, n_test_drugs=3, seed=0, test_seed=5)
    check_unseen_drugs(synthetic, split, 3)
    again = unseen_drug_split(synthetic, n_test_drugs=3, seed=9, test_seed=5)
    np.testing.assert_array_equal(split.test, again.test)
    # Default: round(test_frac * 30) = 3 drugs.
    check_unseen_drugs(synthetic, unseen_drug_split(synthetic, test_frac=0.1), 3)
    with pytest.raises(ValueError, match="n_test_drugs=30"):
        unseen_drug_split(synthetic, n_test_drugs=30)


def test_unseen_drug_split_holds_out_validation_drugs(synthetic):
    """Default validation mirrors the test protocol: its drugs are seen neither in training nor in test, and
    drugs are added only until their experiments reach the ``val`` fraction of the non-test ones."""
    exp = synthetic.experiments
    split = unseen_drug_split(synthetic, n_test_drugs=3, val=0.2, seed=1, test_seed=5)
    train_drugs = drugs_in(exp, split.train)
    test_only = (set(exp["drug_a"]) | set(exp["drug_b"])) - drugs_in(exp, np.concatenate([split.train, split.val]))
    val_only = drugs_in(exp, split.val) - train_drugs - test_only
    assert val_only and not val_only & test_only
    val = exp.iloc[split.val]
    assert (val["drug_a"].isin(val_only) | val["drug_b"].isin(val_only)).all()
    rest = exp.drop(index=split.test)
    assert len(split.val) == (rest["drug_a"].isin(val_only) | rest["drug_b"].isin(val_only)).sum()
    n_rest = len(exp) - len(split.test)
    assert len(split.val) >= 0.2 * n_rest
    # One validation drug fewer would not have reached the fraction.
    smallest = min((rest["drug_a"].isin(val_only - {d}) | rest["drug_b"].isin(val_only - {d})).sum() for d in val_only)
    assert smallest < 0.2 * n_rest
    np.testing.assert_array_equal(split.test, unseen_drug_split(synthetic, n_test_drugs=3, seed=8, test_seed=5).test)
    assert unseen_drug_split(synthetic, n_test_drugs=3, val=0.0).sizes()["val"] == 0
    with pytest.raises(ValueError, match="val_group"):
        unseen_drug_split(synthetic, val_group="cell")
    with pytest.raises(ValueError, match="val_group='pair'"):
        unseen_drug_split(synthetic, n_test_drugs=3, val=0.999)
    # Another seed draws other validation drugs (the test drugs stay).
    other = unseen_drug_split(synthetic, n_test_drugs=3, val=0.2, seed=2, test_seed=5)
    assert drugs_in(exp, other.val) - drugs_in(exp, other.train) != val_only


def test_unseen_drug_split_by_pair_keeps_validation_drugs_in_training(synthetic):
    exp = synthetic.experiments
    split = unseen_drug_split(synthetic, n_test_drugs=3, val=0.2, seed=1, val_group="pair")
    check_unseen_drugs(synthetic, split, 3)
    assert drugs_in(exp, split.val) <= drugs_in(exp, split.train)


def test_unseen_drug_split_real_almanac_mcf7(almanac):
    mcf7 = almanac.select(cell_lines="MCF7")
    split = unseen_drug_split(mcf7, test_frac=0.1, val=0.2, seed=3, test_seed=0)
    check_unseen_drugs(mcf7, split, round(0.1 * mcf7.n_drugs))
    assert split.sizes()["val"] > 0
    # Validation drugs are new to training, as the test drugs are; by pair they are not.
    exp = mcf7.experiments
    assert drugs_in(exp, split.val) - drugs_in(exp, split.train)
    assert split.sizes()["val"] >= 0.2 * (len(exp) - len(split.test))
    by_pair = unseen_drug_split(mcf7, test_frac=0.1, val=0.2, seed=3, test_seed=0, val_group="pair")
    assert drugs_in(exp, by_pair.val) <= drugs_in(exp, by_pair.train)


# --- unseen cell lines -------------------------------------------------------------------------------
def test_unseen_cell_line_split_synthetic(synthetic):
    exp = synthetic.experiments
    split = unseen_cell_line_split(synthetic, n_test=2, seed=0, test_seed=1)
    assert_partition(split, len(exp))
    test_lines = set(exp.iloc[split.test]["cell_line"])
    assert len(test_lines) == 2
    assert not test_lines & set(exp.iloc[np.concatenate([split.train, split.val])]["cell_line"])
    assert len(split.test) == exp["cell_line"].isin(test_lines).sum()
    # Validation is drawn by pair among the remaining lines.
    rest = exp.drop(index=split.test)
    labels = pd.Series(part_of(split, len(exp))).drop(index=split.test)
    assert (labels.groupby([rest["drug_a"], rest["drug_b"]]).nunique() == 1).all()
    np.testing.assert_array_equal(split.test, unseen_cell_line_split(synthetic, n_test=2, seed=7, test_seed=1).test)


def test_unseen_cell_line_split_real_almanac(almanac):
    exp = almanac.experiments
    split = unseen_cell_line_split(almanac, test_cell_lines=["MCF7", "T47D"], val=0.2, seed=0)
    assert_partition(split, len(exp))
    np.testing.assert_array_equal(split.test, np.flatnonzero(exp["cell_line"].isin(["MCF7", "T47D"])))
    with pytest.raises(EmptySelectionError, match="MCF7"):
        unseen_cell_line_split(almanac, test_cell_lines=["MCF-7"])


# --- dispatcher --------------------------------------------------------------------------------------
def test_make_split_dispatches(synthetic):
    for kind, direct in [
        ("random", random_split),
        ("unseen_drug", unseen_drug_split),
        ("unseen_cell_line", unseen_cell_line_split),
    ]:
        a, b = make_split(synthetic, kind=kind, val=0.3, seed=4), direct(synthetic, val=0.3, seed=4)
        np.testing.assert_array_equal(a.train, b.train)
        np.testing.assert_array_equal(a.test, b.test)
    with pytest.raises(ValueError, match="unseen_drug"):
        make_split(synthetic, kind="scaffold")
