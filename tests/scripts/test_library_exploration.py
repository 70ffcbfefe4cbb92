"""scripts/library_exploration.py: typed candidate pairs, a plate over ALMANAC MCF7 drugs plus new molecules."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from script_loader import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("library_exploration")


def test_typed_pairs_are_untested_distinct_and_of_their_type(script) -> None:
    ids = [f"d{i}" for i in range(10)] + [f"n{i}" for i in range(6)]
    fitted, generated = {f"d{i}" for i in range(7)}, {f"n{i}" for i in range(6)}
    measured = {("d0", "d1"), ("d1", "d0"), ("d2", "d3"), ("d3", "d2")}
    kind = {d: "new" if d in generated else "seen" if d in fitted else "unmeasured" for d in ids}
    expected = {"seen": {"seen"}, "unmeasured": {"unmeasured", "seen"}, "new": {"new", "seen"}, "new_new": {"new"}}
    typed = script.typed_pairs(ids, fitted, generated, measured, n=50, seed=0)
    assert set(typed) == set(script.PAIR_TYPES)
    for name, (a, b) in typed.items():
        pairs = [(ids[x], ids[y]) for x, y in zip(a, b)]
        assert len(set(pairs)) == len(pairs) > 0 and all(x != y for x, y in pairs)
        assert not set(pairs) & measured
        assert all({kind[x], kind[y]} == expected[name] for x, y in pairs)
    assert len(typed["seen"][0]) == 7 * 6 // 2 - 2  # every untested pair of the 7 fitted drugs


def test_a_plate_over_measured_drugs_and_new_molecules(script, data_root: Path, tmp_path: Path) -> None:
    """ALMANAC MCF7 from ../shared/data, 60 measured experiments and 200 new molecules: the plate holds 30
    untested pairs of the library, and the default BNN's epistemic sd is smaller for pairs with a new molecule
    than for measured drugs' pairs (issue #24; measured ratio 0.52)."""
    args = ["--experiments", "normal_ucb", "--new-drugs", "200", "--per-type", "200", "--out", str(tmp_path / "lib")]
    script.main(args)
    row = pd.read_csv(tmp_path / "lib_runs.csv").iloc[0]
    assert row.n_drugs == 86 + 200 and row.n_candidates == 286 * 285 // 2 - 60
    assert 0 <= row.plate_generated <= row.plate_new <= 1 and 0 <= row.top_sd_new <= 1
    assert row.sd_ratio == pytest.approx(row.sd_new / row.sd_seen) and row.sd_ratio < 0.8
    script.main(args)  # finished: nothing is fitted again
    assert len(pd.read_csv(tmp_path / "lib_runs.csv")) == 1
