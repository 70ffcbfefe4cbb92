"""Streaming selection gives the in-memory plate: every strategy, chunk sizes, caps, ties, re-reads."""

from __future__ import annotations

import warnings

import pytest
import torch

from recover_pyro.acquisition import (
    UCB,
    ExpectedImprovement,
    Greedy,
    ProbabilityOfImprovement,
    QExpectedImprovement,
    QProbabilityOfImprovement,
    RandomAcquisition,
    Thompson,
)
from recover_pyro.acquisition.streaming import CandidateChunk, Shortlist, select_streaming


def problem(seed: int, s: int = 32, n: int = 3000, n_drugs: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    drugs = torch.randint(n_drugs, (n, 2), generator=g)
    # A few drugs are far better with everything: a per-drug cap must then skip many top candidates.
    effect = torch.randn(n_drugs, generator=g) + 3.0 * (torch.arange(n_drugs) < 3)
    mean = effect[drugs].sum(1) + 0.3 * torch.randn(n, generator=g)
    samples = mean + torch.randn(s, n, generator=g) * (0.2 + torch.rand(n, generator=g))
    return samples, drugs


def stream_of(samples: torch.Tensor, drugs: torch.Tensor, chunk: int):
    def stream():
        for start in range(0, samples.shape[1], chunk):
            stop = min(start + chunk, samples.shape[1])
            yield CandidateChunk(samples[:, start:stop], torch.arange(start, stop), drugs[start:stop])

    return stream


STRATEGIES = [
    UCB(q=20, kappa=2.0, kappa_decay=0.8),
    UCB(q=20, kappa=1.0, max_per_drug=2),
    Greedy(q=25, max_per_drug=1),
    ExpectedImprovement(q=15),
    ProbabilityOfImprovement(q=15, max_per_drug=3),
    Thompson(q=20),
    Thompson(q=40, max_per_drug=2),
    RandomAcquisition(q=30),
    RandomAcquisition(q=30, max_per_drug=1),
]


@pytest.mark.parametrize("acquisition", STRATEGIES, ids=lambda a: f"{a.name}-cap{a.max_per_drug}-q{a.q}")
@pytest.mark.parametrize("chunk", [257, 1000, 5000])
def test_streamed_plate_is_the_in_memory_plate(acquisition, chunk: int) -> None:
    samples, drugs = problem(seed=chunk)
    best_f = float(samples.mean(0).max()) - 0.5
    memory = acquisition.select(
        samples, candidate_drugs=drugs, best_f=best_f, round=2, generator=torch.Generator().manual_seed(7)
    )
    # A small shortlist forces the re-read path wherever a cap skips many candidates.
    streamed = select_streaming(
        acquisition,
        stream_of(samples, drugs, chunk),
        best_f=best_f,
        round=2,
        generator=torch.Generator().manual_seed(7),
        shortlist=64,
    )
    assert streamed.indices.tolist() == memory.indices.tolist()
    torch.testing.assert_close(streamed.scores.double(), memory.scores.double())


def test_the_generator_ends_where_the_in_memory_one_does() -> None:
    samples, drugs = problem(seed=1)
    for acquisition in (Thompson(q=10), RandomAcquisition(q=10)):
        g_mem, g_str = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        acquisition.select(samples, candidate_drugs=drugs, generator=g_mem)
        select_streaming(acquisition, stream_of(samples, drugs, 500), generator=g_str, shortlist=32)
        assert torch.equal(g_mem.get_state(), g_str.get_state())


@pytest.mark.parametrize("acquisition", [QExpectedImprovement(q=8), QProbabilityOfImprovement(q=8, tau=0.1)])
def test_joint_batch_rules_agree_on_a_shortlist(acquisition) -> None:
    samples, drugs = problem(seed=4, n=1500)
    best_f = float(samples.mean(0).max())
    memory = acquisition.select(samples, candidate_drugs=drugs, best_f=best_f)
    streamed = select_streaming(acquisition, stream_of(samples, drugs, 400), best_f=best_f)
    assert streamed.indices.tolist() == memory.indices.tolist()


def test_ties_break_by_lowest_index_as_in_memory() -> None:
    samples = torch.zeros(4, 600)  # every candidate ties
    drugs = torch.stack([torch.arange(600) % 7, torch.arange(600) % 11], 1)
    memory = Greedy(q=10, max_per_drug=1).select(samples, candidate_drugs=drugs)
    streamed = select_streaming(Greedy(q=10, max_per_drug=1), stream_of(samples, drugs, 100), shortlist=16)
    assert streamed.indices.tolist() == memory.indices.tolist()


def test_a_shortfall_is_reported_like_in_memory() -> None:
    samples, drugs = problem(seed=2, n=50, n_drugs=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = select_streaming(Greedy(q=10, max_per_drug=1), stream_of(samples, drugs, 16), shortlist=8)
    assert len(batch) < 10 and any("could be chosen" in str(w.message) for w in caught)


def test_shortlist_memory_is_bounded_by_its_size() -> None:
    kept = Shortlist(100)
    for start in range(0, 10_000, 1000):
        chunk = CandidateChunk(torch.randn(8, 1000), torch.arange(start, start + 1000))
        kept.add(chunk, chunk.samples.mean(0))
    assert kept.samples is not None and kept.samples.shape == (8, 100) and kept.seen == 10_000
    assert torch.all(kept.index[1:] > kept.index[:-1])


def test_a_strategy_that_needs_all_samples_at_once_is_refused() -> None:
    from recover_pyro.acquisition import Acquisition

    class WholePool(Acquisition):
        def select(self, samples, exclude=None, candidate_drugs=None, best_f=None, round=0, generator=None):
            raise AssertionError("not called")

    samples, drugs = problem(seed=0, n=100)
    with pytest.raises(TypeError, match="overrides select"):
        select_streaming(WholePool(q=3), stream_of(samples, drugs, 50))


@pytest.mark.parametrize(
    "acquisition", [UCB(q=20, kappa=1.0, max_per_drug=2), Thompson(q=12, max_per_drug=2), ExpectedImprovement(q=9)]
)
def test_shards_merged_give_the_single_stream_plate(acquisition) -> None:
    from recover_pyro.acquisition.streaming import StreamPlan, merge_collected

    samples, drugs = problem(seed=5)
    best_f = float(samples.mean(0).max())
    memory = acquisition.select(
        samples, candidate_drugs=drugs, best_f=best_f, generator=torch.Generator().manual_seed(2)
    )
    generator = torch.Generator().manual_seed(2)
    plan = StreamPlan(acquisition, best_f=best_f, generator=generator, shortlist=32, num_samples=samples.shape[0])
    bounds = [0, 700, 1900, samples.shape[1]]
    while True:
        shards = []
        for lo, hi in zip(bounds, bounds[1:]):  # as three workers would, each with its own copy of the plan
            worker = StreamPlan(
                acquisition,
                best_f=best_f,
                shortlist=plan.size,
                num_samples=samples.shape[0],
                generator=torch.Generator().manual_seed(2),
            )
            shards.append(worker.collect(stream_of(samples[:, lo:hi], drugs[lo:hi], 300)()))
            for kept in shards[-1].values():  # shard-local ids back to global ones
                kept.index = kept.index + lo
        batch = plan.decide(merge_collected(shards))
        if batch is not None:
            break
    assert batch.indices.tolist() == memory.indices.tolist()


@pytest.fixture(scope="module")
def fitted_models():
    from recover_pyro.bnn.inference import SVIConfig
    from recover_pyro.bnn.model import BNNSynergyModel
    from recover_pyro.data.featurize import featurize
    from recover_pyro.data.synthetic import make_synthetic_screen
    from recover_pyro.models.baselines import DeepEnsemble, TrainConfig

    screen = make_synthetic_screen(n_drugs=40, n_cell_lines=2, seed=0)
    features = featurize(screen, one_hot=True, cell="onehot")
    pairs = screen.to_pairs(screen.score_columns[0])[:300]
    bnn = BNNSynergyModel(features.drug, features.cell, inference=SVIConfig(epochs=5, warm_start_epochs=3), seed=1)
    bnn.fit(pairs)
    ensemble = DeepEnsemble(features.drug, features.cell, n_members=3, training=TrainConfig(epochs=3), seed=1)
    ensemble.fit(pairs)
    return features, pairs, {"bnn": bnn, "ensemble": ensemble}


@pytest.mark.parametrize("name", ["bnn", "ensemble"])
@pytest.mark.parametrize("acquisition", [UCB(q=15, kappa=2.0, max_per_drug=2), Thompson(q=10)], ids=["ucb", "ts"])
def test_a_model_scored_chunk_by_chunk_gives_the_whole_space_plate(fitted_models, name, acquisition) -> None:
    from recover_pyro.acquisition.streaming import model_chunks
    from recover_pyro.data.candidates import PairSpace

    features, measured, models = fitted_models
    model = models[name]
    space = PairSpace(features.drug.shape[0], cells=[0, 1])
    space = PairSpace(
        features.drug.shape[0], cells=[0, 1], exclude=space.ids_of(measured.drug_a, measured.drug_b, measured.cell)
    )
    ids = torch.cat([c.ids for c in space.chunks()])
    everything = space.decode(ids)
    whole = model.predict(everything, num_samples=16)
    drugs = torch.stack([everything.drug_a, everything.drug_b], 1)
    memory = acquisition.select(whole.f, candidate_drugs=drugs, generator=torch.Generator().manual_seed(0))
    seen: list[int] = []
    streamed = select_streaming(
        acquisition,
        lambda: model_chunks(model, space, 16, chunk_size=97, progress=seen.append),
        generator=torch.Generator().manual_seed(0),
        shortlist=40,
    )
    assert streamed.indices.tolist() == ids[memory.indices].tolist()
    assert sum(seen) % len(space) == 0  # the progress callback covers the whole space on every read
