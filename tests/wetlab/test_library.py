"""A library scored as a streamed, numbered space gives the plate of the listed pool (real ALMANAC drugs)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pandas as pd
import pytest

from recover_pyro import recommend
from recover_pyro.acquisition import UCB, Thompson
from recover_pyro.bnn.inference import SVIConfig
from recover_pyro.bnn.model import BNNSynergyModel
from recover_pyro.data.featurize import featurize
from recover_pyro.data.loaders import load_almanac, save_drug_table, save_measurements_csv
from recover_pyro.errors import ConfigValueError
from recover_pyro.models.baselines import DeterministicModel, TrainConfig
from recover_pyro.models.predictor import RecoverPredictor
from recover_pyro.wetlab import Scoring

SMALL_NET = functools.partial(RecoverPredictor, drug_hidden=(32, 16), merge_dim=16, merge_rank=4, head_hidden=(16,))
BNN = functools.partial(
    BNNSynergyModel, predictor=SMALL_NET, inference=SVIConfig(epochs=4, warm_start_epochs=3), seed=3
)
NET = functools.partial(DeterministicModel, predictor=SMALL_NET, training=TrainConfig(epochs=5, batch_size=16))


@pytest.fixture(scope="module")
def lab(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Thirty real ALMANAC drugs in MCF7 and A549 (870 candidates): a drug table, a measured round of 60
    pairs and an exclude file of 5 more."""
    screen = load_almanac(data_root, cell_lines=["MCF7", "A549"])
    counts = pd.concat([screen.experiments["drug_a"], screen.experiments["drug_b"]]).value_counts()
    keep = sorted(counts.index[:30])
    exp = screen.experiments
    exp = exp[exp["drug_a"].isin(keep) & exp["drug_b"].isin(keep)].reset_index(drop=True)
    screen.drugs = screen.drugs.loc[keep]
    folder = tmp_path_factory.mktemp("library")
    smiles = save_drug_table(screen, folder / "drugs.csv")
    sample = exp.sample(65, random_state=1)
    round0 = save_measurements_csv(screen, folder / "round0.csv", experiments=sample.iloc[:60])
    exclude = folder / "exclude.csv"
    sample.iloc[60:][["drug_a", "drug_b"]].to_csv(exclude, index=False)  # no cell line: every cell line
    return {"smiles": smiles, "round0": round0, "exclude": exclude, "drugs": keep}


def plate(lab: dict, model, acquisition, scoring: Scoring | None, **kw: object) -> pd.DataFrame:
    return recommend(
        [lab["round0"]],
        lab["smiles"],
        ["MCF7", "A549"],
        "comboscore",
        model=model,
        acquisition=acquisition,
        featurize=featurize,
        num_samples=12,
        scoring=scoring,
        **kw,
    ).table


STREAMED = Scoring(stream_above=0, chunk_size=53, shortlist=16, progress=False)


@pytest.mark.parametrize(
    "model, acquisition",
    [(BNN, UCB(q=12, kappa=2.0, max_per_drug=2)), (BNN, Thompson(q=10)), (NET, UCB(q=12, kappa=0.0))],
    ids=["bnn-ucb-cap", "bnn-thompson", "net-greedy"],
)
def test_streamed_library_gives_the_listed_pools_plate(lab: dict, model, acquisition) -> None:
    rules = {"exclude": lab["exclude"], "leave_out": [lab["drugs"][0]]}
    listed = plate(lab, model, acquisition, None, **rules)
    streamed = plate(lab, model, acquisition, STREAMED, **rules)
    pd.testing.assert_frame_equal(streamed, listed)


def test_streamed_plate_keeps_out_measured_excluded_and_left_out(lab: dict) -> None:
    table = plate(lab, NET, UCB(q=40, kappa=1.0), STREAMED, exclude=lab["exclude"], leave_out=[lab["drugs"][0]])
    pairs = set(zip(table["drug_a"], table["drug_b"], table["cell_line"]))
    measured = pd.read_csv(lab["round0"], dtype=str)
    excluded = pd.read_csv(lab["exclude"], dtype=str)
    assert not pairs & set(zip(measured["drug_a"], measured["drug_b"], measured["cell_line"]))
    assert not {(a, b) for a, b, _ in pairs} & set(zip(excluded["drug_a"], excluded["drug_b"]))
    assert lab["drugs"][0] not in set(table["drug_a"]) | set(table["drug_b"])
    assert (table["drug_a"] < table["drug_b"]).all() and len(pairs) == 40


def test_bad_scoring_settings_are_named() -> None:
    with pytest.raises(ConfigValueError, match="scoring.chunk_size"):
        Scoring(chunk_size=0)
    with pytest.raises(ConfigValueError, match="scoring.workers"):
        Scoring(workers=0)


@pytest.mark.skipif(
    not os.environ.get("RECOVER_PYRO_RAY_ADDRESS"), reason="no Ray cluster (scripts/ci_ray.sh starts one)"
)
def test_a_library_scored_on_ray_gives_the_same_plate(lab: dict) -> None:
    ray = pytest.importorskip("ray")
    acquisition = UCB(q=12, kappa=2.0, max_per_drug=2)
    listed = plate(lab, BNN, acquisition, None)
    on_ray = plate(
        lab,
        BNN,
        acquisition,
        Scoring(ray_address=os.environ["RECOVER_PYRO_RAY_ADDRESS"], workers=2, chunk_size=97, shortlist=16,
                progress=False),
    )  # fmt: skip
    ray.shutdown()
    pd.testing.assert_frame_equal(on_ray, listed)


def test_the_command_streams_a_library_to_the_same_plate(lab: dict, tmp_path: Path) -> None:
    import subprocess
    import sys

    def run(out: str, *extra: str) -> pd.DataFrame:
        args = [
            sys.executable, "-m", "recover_pyro.recommend", f"measured=[{lab['round0']}]", f"smiles={lab['smiles']}",
            "cell_lines=[MCF7,A549]", "score=comboscore", "+experiment=deterministic", "model.training.epochs=3",
            "acquisition.q=10", "max_per_drug=2", f"out={tmp_path / out}", f"hydra.run.dir={tmp_path / out}.run",
            *extra,
        ]  # fmt: skip
        done = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return pd.read_csv(tmp_path / out, dtype={"drug_a": str, "drug_b": str})

    listed = run("listed.csv")
    streamed = run("streamed.csv", "scoring.stream_above=0", "scoring.chunk_size=64", "scoring.progress=false")
    pd.testing.assert_frame_equal(streamed, listed)
