"""Scoring on a Ray cluster gives the single-process plate (needs the Ray head that scripts/ci_ray.sh starts)."""

from __future__ import annotations

import functools
import os

import pytest
import torch

from recover_pyro.acquisition import UCB, RandomAcquisition, Thompson
from recover_pyro.acquisition.streaming import model_chunks, select_streaming
from recover_pyro.data.candidates import PairSpace

ray = pytest.importorskip("ray", reason="ray not installed (pip install -e '.[sweep-ray]')")
ADDRESS = os.environ.get("RECOVER_PYRO_RAY_ADDRESS")
pytestmark = pytest.mark.skipif(
    not ADDRESS, reason="RECOVER_PYRO_RAY_ADDRESS is not set: no Ray cluster to join (scripts/ci_ray.sh starts one)"
)


@pytest.fixture(scope="module")
def cluster():
    ray.init(address=ADDRESS, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def fitted():
    from recover_pyro.bnn.inference import SVIConfig
    from recover_pyro.bnn.model import BNNSynergyModel
    from recover_pyro.data.featurize import featurize
    from recover_pyro.data.synthetic import make_synthetic_screen

    screen = make_synthetic_screen(n_drugs=40, n_cell_lines=2, seed=0)
    features = featurize(screen, one_hot=True, cell="onehot")
    factory = functools.partial(
        BNNSynergyModel, features.drug, features.cell, inference=SVIConfig(epochs=5, warm_start_epochs=3), seed=1
    )
    model = factory()
    measured = screen.to_pairs(screen.score_columns[0])[:300]
    model.fit(measured)
    space = PairSpace(features.drug.shape[0], cells=[0, 1])
    space = PairSpace(
        features.drug.shape[0], cells=[0, 1], exclude=space.ids_of(measured.drug_a, measured.drug_b, measured.cell)
    )
    return model, factory, space


@pytest.mark.parametrize(
    "acquisition", [UCB(q=12, kappa=2.0, max_per_drug=2), Thompson(q=8), RandomAcquisition(q=5)], ids=lambda a: a.name
)
def test_two_ray_workers_give_the_single_process_plate(cluster, fitted, acquisition) -> None:
    from recover_pyro.acquisition.distributed import select_on_ray

    model, factory, space = fitted
    single = select_streaming(
        acquisition,
        lambda: model_chunks(model, space, 16, chunk_size=101),
        generator=torch.Generator().manual_seed(0),
        shortlist=24,
    )
    on_ray = select_on_ray(
        acquisition,
        model,
        factory,
        space,
        16,
        generator=torch.Generator().manual_seed(0),
        workers=2,
        chunk_size=101,
        shortlist=24,
        progress=False,
    )
    assert on_ray.indices.tolist() == single.indices.tolist()
    torch.testing.assert_close(on_ray.scores, single.scores)
