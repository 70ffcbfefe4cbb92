"""scripts/benchmark_speed.py: the training measurement (stages timed, rates from passes) and its table."""

from __future__ import annotations

import pandas as pd
import pytest

import recover_pyro.bnn.inference as inference
from script_loader import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmark_speed")


def test_training_measurement_times_each_bnn_stage(bench, monkeypatch) -> None:
    """One warm-start and one SVI epoch of the default BNN on the synthetic screen: both stages are timed, and the
    fit's rate counts one pass per stage epoch."""
    # measure_train wraps the stages in the module (fine in its own subprocess); restore them after this test.
    monkeypatch.setattr(inference, "warm_start", inference.warm_start)
    monkeypatch.setattr(inference, "_svi_stage", inference._svi_stage)
    monkeypatch.setitem(bench.TRAIN_DATA, "synthetic", ("synthetic", []))
    result = bench.measure_train("bnn", "synthetic", 1)
    times = {k: v[0] for k, v in result["times"].items()}
    assert times["warm_start_epochs"] == 1 and times["svi_epochs"] == 1
    assert times["examples_per_s"] == pytest.approx(2 * result["n_train"] / times["fit_s"])
    assert times["examples_per_gflop"] == pytest.approx(times["examples_per_s"] / times["gemm_gflops"])
    # Each stage is part of the fit, so it processes its epoch faster than the whole fit's average pass.
    assert times["warm_start_examples_per_s"] > times["examples_per_s"] / 2
    assert times["gemm_gflops"] > 0.1


def rows(code: str, measurement: str, per_s: float, per_gflop: float) -> list[dict]:
    common = {"code": code, "measurement": measurement, "peak_rss_mb": 500.0}
    return [
        {**common, "quantity": "examples_per_s", "mean": per_s},
        {**common, "quantity": "examples_per_gflop", "mean": per_gflop},
    ]


def test_training_table_puts_labels_side_by_side_with_the_speed_up(bench) -> None:
    table = pd.DataFrame(
        rows("before", "train_bnn_oneil", 1000.0, 10.0)
        + rows("after", "train_bnn_oneil", 4000.0, 40.0)
        + rows("before", "train_deterministic_oneil", 2000.0, 20.0)
    )
    text = bench.training_table(table)
    assert "| `train_bnn_oneil` | 1,000 (10) | 4,000 (40) | 4.0x | 500 |" in text
    # A measurement one label lacks gets an empty cell and no speed-up.
    assert "| `train_deterministic_oneil` | 2,000 (20) |  |  |" in text
