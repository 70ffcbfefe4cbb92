"""Candidate control (issue #26, item 1): only these pairs, never these pairs or drugs, a per-plate drug budget,
and a measured, tried or excluded pair can never be proposed."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import pandas as pd
import pytest

from recover_pyro.acquisition import UCB
from recover_pyro.errors import DuplicateMoleculeError, EmptySelectionError, MissingColumnsError, UnknownDrugError
from recover_pyro.wetlab import read_pairs
from recover_pyro.wetlab.candidates import build_pool, CandidateRules

from labfiles import DRUGS, PLATE, drug_table, keys, measured, tiny_recommend, write

ALL_PAIRS = {tuple(sorted(p)) for p in itertools.combinations(DRUGS, 2)}


def test_candidates_file_is_the_only_source_of_pairs(tmp_path: Path) -> None:
    listed = write(tmp_path / "pairs.csv", "drug_a,drug_b\nF,A\nB,F\nC,G\nA,B\n")  # A,B is measured
    result = tiny_recommend([measured(tmp_path)], drug_table(tmp_path), q=10, candidates=listed)
    assert keys(result.table) == {("A", "F"), ("B", "F"), ("C", "G")}
    assert result.n_candidates == 3


def test_candidates_by_name_and_per_cell_line(tmp_path: Path) -> None:
    listed = write(tmp_path / "pairs.tsv", "drug_row\tdrug_col\tcell_line_name\nethanol\tF\tMCF7\nB\tG\tHeLa\n")
    result = tiny_recommend([measured(tmp_path)], drug_table(tmp_path), q=10, candidates=listed)
    assert keys(result.table) == {("A", "F")}  # (B, G) was listed for another cell line only


def test_exclude_files_and_left_out_drugs_are_never_proposed(tmp_path: Path) -> None:
    failed = write(tmp_path / "failed.csv", "drug_a,drug_b,cell_line\nA,F,MCF7\nB,G,MCF7\n")
    infeasible = write(tmp_path / "infeasible.csv", "drug_a,drug_b\nC,F\n")
    result = tiny_recommend(
        [measured(tmp_path)], drug_table(tmp_path), q=50, exclude=[failed, infeasible], leave_out=["E", "propanol"]
    )
    plate = keys(result.table)
    assert plate, "some pairs remain"
    assert not plate & {("A", "F"), ("B", "G"), ("C", "F")}
    assert not {d for pair in plate for d in pair} & {"E", "G"}
    # the left-out drug's measurements are still fitted on
    assert "E" in set(result.measured.experiments["drug_a"]) | set(result.measured.experiments["drug_b"])
    expected = ALL_PAIRS - keys(pd.DataFrame(PLATE, columns=["drug_a", "drug_b", "y"])) - {("A", "F"), ("B", "G")}
    expected = {p for p in expected if not set(p) & {"E", "G"} and p != ("C", "F")}
    assert plate == expected  # q covers the pool: the plate is the whole allowed pool


def test_a_measured_tried_or_excluded_pair_is_impossible(tmp_path: Path) -> None:
    # plate 1 came back with one failed well (empty score): not fitted on, never proposed again
    round1 = write(tmp_path / "plate1.csv", "drug_a,drug_b,cell_line,synergy\nA,F,MCF7,2.0\nB,G,MCF7,\n")
    excluded = write(tmp_path / "exclude.csv", "drug_a,drug_b\nC,G\n")
    for seed in range(3):  # whatever the strategy picks, q covers the pool
        result = tiny_recommend(
            [measured(tmp_path), round1],
            drug_table(tmp_path),
            q=50,
            exclude=excluded,
            on_invalid="drop",
            seed=seed,
            acquisition=UCB(q=50, kappa=float(seed)),
        )
        plate = keys(result.table)
        forbidden = keys(pd.DataFrame(PLATE, columns=["drug_a", "drug_b", "y"])) | {("A", "F"), ("B", "G"), ("C", "G")}
        assert not plate & forbidden
        assert plate == ALL_PAIRS - forbidden
    assert len(result.measured) == len(PLATE) + 1  # the failed well is not a measurement


def test_pool_builder_keeps_forbidden_pairs_out(tmp_path: Path) -> None:
    drugs = pd.DataFrame({"name": [n for n, _ in DRUGS.values()]}, index=list(DRUGS))
    everything = pd.DataFrame(sorted(ALL_PAIRS), columns=["drug_a", "drug_b"]).assign(cell_line="MCF7")
    done = pd.DataFrame([("A", "B", "MCF7")], columns=["drug_a", "drug_b", "cell_line"])
    tried = pd.DataFrame([("A", "C", "MCF7")], columns=["drug_a", "drug_b", "cell_line"])
    pool = build_pool(
        everything, drugs, done, tried, CandidateRules(exclude=write(tmp_path / "x.csv", "drug_a,drug_b\nD,A\n"))
    )
    assert keys(pool.forbidden) == {("A", "B"), ("A", "C"), ("A", "D")}
    assert not keys(pool.pairs) & keys(pool.forbidden) and len(pool.pairs) == len(ALL_PAIRS) - 3
    assert pool.counts == {"all pairs": 21, "measured or tried": 2, "exclude": 1}


def test_per_plate_drug_budget(tmp_path: Path) -> None:
    result = tiny_recommend([measured(tmp_path)], drug_table(tmp_path), q=6, max_per_drug=2)
    uses = pd.concat([result.table["drug_a"], result.table["drug_b"]]).value_counts()
    assert uses.max() <= 2 and len(result.table) == 6
    capped = tiny_recommend([measured(tmp_path)], drug_table(tmp_path), q=6, acquisition=UCB(q=6, max_per_drug=1))
    assert pd.concat([capped.table["drug_a"], capped.table["drug_b"]]).value_counts().max() == 1


def test_unknown_drugs_in_exclude_or_leave_out_are_named(tmp_path: Path) -> None:
    smiles, plate = drug_table(tmp_path), measured(tmp_path)
    with pytest.raises(UnknownDrugError, match="exclude file") as err:
        tiny_recommend([plate], smiles, exclude=write(tmp_path / "x.csv", "drug_a,drug_b\nA,B\nA,ethanoll\n"))
    assert err.value.row == 3 and "closest: ['ethanol']" in str(err.value)
    with pytest.raises(UnknownDrugError, match="leave_out"):
        tiny_recommend([plate], smiles, leave_out=["Q"])
    with pytest.raises(MissingColumnsError, match="two drug columns"):
        tiny_recommend([plate], smiles, candidates=write(tmp_path / "c.csv", "a,b\nA,F\n"))


def test_candidate_rows_outside_the_drug_table_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    listed = write(tmp_path / "pairs.csv", "drug_a,drug_b\nA,F\nA,Q\n")
    with caplog.at_level(logging.INFO):
        result = tiny_recommend([measured(tmp_path)], drug_table(tmp_path), q=5, candidates=listed)
    assert keys(result.table) == {("A", "F")} and "outside the drug table" in caplog.text


def test_nothing_left_to_propose_is_named(tmp_path: Path) -> None:
    listed = write(tmp_path / "pairs.csv", "drug_a,drug_b\nA,B\n")  # measured already
    with pytest.raises(EmptySelectionError, match="no candidate combination is left") as err:
        tiny_recommend([measured(tmp_path)], drug_table(tmp_path), candidates=listed)
    assert "outside candidates: 20" in str(err.value)


def test_one_molecule_under_two_ids_is_refused_then_left_out(tmp_path: Path) -> None:
    salt = drug_table(tmp_path, {"H": ("ethanol hydrochloride", "CCO.Cl")})
    with pytest.raises(DuplicateMoleculeError, match="same molecule") as err:
        tiny_recommend([measured(tmp_path)], salt)
    assert "A (ethanol), H (ethanol hydrochloride)" in str(err.value) and "leave_out=[H]" in str(err.value)
    result = tiny_recommend([measured(tmp_path)], salt, q=50, leave_out=["H"])
    assert "H" not in set(result.table["drug_a"]) | set(result.table["drug_b"])
    assert not any(set(p) == {"A", "H"} for p in keys(result.table))


def test_read_pairs_orders_and_drops_self_pairs(tmp_path: Path) -> None:
    drugs = pd.DataFrame({"name": [n for n, _ in DRUGS.values()]}, index=list(DRUGS))
    pairs = read_pairs(write(tmp_path / "p.csv", "drug_a,drug_b\nF,A\nB,B\n"), drugs, "candidates")
    assert pairs[["drug_a", "drug_b"]].values.tolist() == [["A", "F"]] and pairs["cell_line"].isna().all()
