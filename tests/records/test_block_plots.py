"""Pictures of a scored block: both PNGs written (atomically, under safe names), with every score's map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recover_pyro.data.blocks import DoseResponseBlock
from recover_pyro.data.synergy.scores import score_all
from recover_pyro.records.block_plots import plot_synergy_maps, safe_name, write_block_plots

PNG = b"\x89PNG\r\n\x1a\n"


def _block(block_id: str) -> DoseResponseBlock:
    doses_a, doses_b = np.array([0.0, 0.1, 1.0, 10.0]), np.array([0.0, 0.3, 3.0])
    a = 90 / (1 + (1.0 / np.maximum(doses_a, 1e-12)) ** 1.2)
    b = 70 / (1 + (2.0 / np.maximum(doses_b, 1e-12)) ** 1.0)
    response = 100 * (1 - (1 - a[:, None] / 100) * (1 - b[None, :] / 100)) + np.arange(12).reshape(4, 3) % 3
    return DoseResponseBlock(
        block_id=block_id,
        drug_row="Drug A",
        drug_col="Drug B",
        cell_line="MCF7",
        study="test",
        conc_row=doses_a,
        conc_col=doses_b,
        unit_row="nM",
        unit_col="uM",
        response=response,
        n_replicates=np.ones((4, 3), dtype=int),
        well_order=np.arange(12),
        line=2,
        source="made",
    )


@pytest.fixture(scope="module")
def scored():
    return score_all([_block("1/a"), _block("1:a")])


def test_both_pictures_of_every_block_are_written_under_distinct_safe_names(scored, tmp_path: Path) -> None:
    written = write_block_plots(scored, tmp_path / "plots")
    assert [p.name for p in written] == [
        "block_1_a_response.png",
        "block_1_a_synergy.png",
        "block_1_a_1_response.png",
        "block_1_a_1_synergy.png",
    ]
    assert all(p.read_bytes().startswith(PNG) for p in written)
    assert not list((tmp_path / "plots").glob(".tmp-*"))  # no temporary file left behind


def test_one_score_map_and_safe_names(scored, tmp_path: Path) -> None:
    path = plot_synergy_maps(scored[0], tmp_path / "zip.png", which=["zip"])
    assert path.read_bytes().startswith(PNG)
    assert safe_name("a b/c") == "a_b_c" and safe_name("///") == "block"
