"""Models on a CUDA device (``device="cuda"`` / ``device=cuda`` in the configs).

CI has no GPU: these tests skip there and run where one is present (the results of the last GPU run are in
docs/benchmarks.md). The device-independent part of the plumbing (``Pairs.to``, ``PredictiveSamples.cpu``,
checkpoints read onto the CPU) is exercised by every CPU test, since CPU is the default device.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from hydra import compose, initialize_config_dir

from recover_pyro.models.baselines import DeepEnsemble, DeterministicModel, MCDropoutModel, TrainConfig
from recover_pyro.cli.builders import CONFIG_DIR
from recover_pyro.cli.campaign import campaign_from_config
from recover_pyro.data.featurize import featurize
from recover_pyro.data.synthetic import make_synthetic_screen
from recover_pyro.bnn import predictive
from recover_pyro.bnn.inference import SVIConfig
from recover_pyro.bnn.model import BNNSynergyModel
from recover_pyro.models.predictor import RecoverPredictor
from recover_pyro.cli.train import train as train_run

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device on this machine (CI has none); GPU path not tested here"
)

SMALL = functools.partial(RecoverPredictor, drug_hidden=(32, 16), merge_dim=16, merge_rank=4, head_hidden=(16,))


@pytest.fixture(scope="module")
def data():
    screen = make_synthetic_screen(n_drugs=24, n_cell_lines=2, seed=0)
    features = featurize(screen, cache_dir=None)
    pairs = screen.to_pairs()
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(0))
    return features, pairs[order[:300]], pairs[order[300:340]], pairs[order[340:]]


@pytest.mark.parametrize("layers", ["head", "all"])
def test_bnn_fits_and_scores_on_the_gpu_like_on_the_cpu(data, layers: str) -> None:
    features, train, val, test = data
    kwargs = dict(predictor=SMALL, inference=SVIConfig(lr=0.01, epochs=3, batch_size=64), bayesian_layers=layers)
    gpu = BNNSynergyModel(features.drug, features.cell, device="cuda", **kwargs)
    gpu.fit(train, val)  # CPU pairs in, moved by the model
    pred = gpu.predict(test, num_samples=16)
    assert pred.f.device.type == "cuda" and pred.f.shape == (16, len(test))
    assert torch.isfinite(pred.f).all()
    # The same fitted state on the CPU is the same function: compare at the posterior means (no sampling).
    cpu = BNNSynergyModel(features.drug, features.cell, **kwargs)
    cpu.load_state_dict(gpu.state_dict())
    at_cpu = cpu.model.mean_function(cpu.guide.locs(), test.drug_a, test.drug_b, test.cell)
    at_gpu = gpu.model.mean_function(gpu.guide.locs(), *(t.cuda() for t in (test.drug_a, test.drug_b, test.cell)))
    torch.testing.assert_close(at_gpu.cpu(), at_cpu, rtol=1e-4, atol=1e-4)
    # Whole-space scoring path (dense per-cell-line merge tables) agrees with scoring candidates one by one.
    weights = gpu.guide.sample_weights(4, generator=torch.Generator("cuda").manual_seed(0))
    gpu_test = test.to("cuda")
    dense = gpu.model.mean_function(weights, gpu_test.drug_a, gpu_test.drug_b, gpu_test.cell)
    single = torch.cat(
        [
            gpu.model.mean_function(
                weights, gpu_test.drug_a[i : i + 1], gpu_test.drug_b[i : i + 1], gpu_test.cell[i : i + 1]
            )
            for i in range(20)
        ],
        -1,
    )
    torch.testing.assert_close(dense[..., :20], single, rtol=1e-4, atol=1e-4)


def test_gpu_head_chunks_do_not_change_the_predictive(data, monkeypatch) -> None:
    features, train, _, test = data
    model = BNNSynergyModel(
        features.drug,
        features.cell,
        predictor=SMALL,
        device="cuda",
        inference=SVIConfig(lr=0.01, epochs=2, batch_size=64, eval_batch_size=5),
    )
    model.fit(train)
    whole = model.predict(test, 8).f  # one head pass
    monkeypatch.setattr(predictive, "GPU_HEAD_CHUNK_ELEMENTS", 8 * 7)  # 7 candidates per head pass
    torch.testing.assert_close(model.predict(test, 8).f, whole)


def test_gpu_predictive_is_reproducible_and_leaves_the_callers_rng_alone(data) -> None:
    features, train, _, test = data
    model = BNNSynergyModel(
        features.drug,
        features.cell,
        predictor=SMALL,
        device="cuda",
        inference=SVIConfig(lr=0.01, epochs=2, batch_size=64),
    )
    model.fit(train)
    torch.cuda.manual_seed(123)
    before = torch.cuda.get_rng_state()
    first, second = model.predict(test, 8), model.predict(test, 8)
    torch.testing.assert_close(first.f, second.f)
    model.fit(train)  # a warm-started fit seeds the GPU RNG inside a fork
    assert torch.equal(torch.cuda.get_rng_state(), before)


@pytest.mark.parametrize("kind", ["deterministic", "mc_dropout", "ensemble"])
def test_baselines_on_the_gpu(data, kind: str) -> None:
    features, train, val, test = data
    training = TrainConfig(epochs=3, batch_size=64)
    cls = {
        "deterministic": DeterministicModel,
        "mc_dropout": MCDropoutModel,
        "ensemble": functools.partial(DeepEnsemble, n_members=2),
    }[kind]
    gpu = cls(features.drug, features.cell, predictor=SMALL, training=training, device="cuda")
    gpu.fit(train, val)
    pred = gpu.predict(test, num_samples=5)
    assert pred.f.device.type == "cuda" and torch.isfinite(pred.f).all()
    cpu = cls(features.drug, features.cell, predictor=SMALL, training=training)
    cpu.load_state_dict(gpu.state_dict())
    if kind == "mc_dropout":  # masks come from different generators: compare the dropout-off mean only
        torch.testing.assert_close(gpu.predict_mean(test).cpu(), cpu.predict_mean(test), rtol=1e-4, atol=1e-3)
    else:
        torch.testing.assert_close(pred.f.cpu(), cpu.predict(test, num_samples=5).f, rtol=1e-4, atol=1e-3)


def test_train_and_campaign_run_with_device_cuda(tmp_path: Path) -> None:
    tiny = [
        "data.screen.n_drugs=14",
        "data.screen.n_cell_lines=2",
        "num_samples=8",
        "device=cuda",
        "inference.progress=false",
        "inference.epochs=3",
    ]
    campaign = ["+experiment=laplace_ucb", *tiny, "campaign.n_initial=20", "acquisition.q=5", "campaign.progress=false"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=laplace", *tiny])
        first = compose("campaign", overrides=[*campaign, "campaign.n_rounds=1"])
        longer = compose("campaign", overrides=[*campaign, "campaign.n_rounds=2", "resume=true"])
    metrics = train_run(cfg, tmp_path / "train")
    assert torch.isfinite(torch.tensor(metrics["r2"]))
    result = campaign_from_config(first, tmp_path / "campaign")
    assert result.rounds["n_measured"].tolist() == [20, 25]
    # The checkpoint holds CUDA tensors; resume reads it onto the CPU and the model copies it back.
    resumed = campaign_from_config(longer, tmp_path / "campaign")
    assert resumed.rounds["n_measured"].tolist() == [20, 25, 30]
