import pytest
import torch

from recover_pyro.data.screen import Pairs
from recover_pyro.bnn.guides import MeanFieldNormalGuide, SparseVariationalDropoutGuide
from recover_pyro.bnn.layers import BayesianRegression
from recover_pyro.models.predictor import DeepSynergyPredictor, RecoverPredictor
from recover_pyro.bnn.predictive import _cell_line_chunks, sample_predictive

D, C = 15, 3


def make(layers="all", dtype=torch.float64, guide_cls=MeanFieldNormalGuide, **guide_kwargs):
    torch.manual_seed(0)
    net = RecoverPredictor(
        torch.rand(D, 20).round(), torch.eye(C), drug_hidden=(16, 8), merge_dim=8, merge_rank=3, head_hidden=(6,)
    ).to(dtype)
    model = BayesianRegression(net, bayesian_layers=layers)
    return model, guide_cls(model, **guide_kwargs)


def candidates(n: int = 60) -> Pairs:
    g = torch.Generator().manual_seed(5)
    return Pairs(
        torch.randint(D, (n,), generator=g), torch.randint(D, (n,), generator=g), torch.randint(C, (n,), generator=g)
    )


def seeded(seed: int = 11) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def loop_predictive(model, guide, pairs: Pairs, num_samples: int, generator: torch.Generator) -> torch.Tensor:
    """Reference: one unbatched forward pass per weight sample."""
    weights = guide.sample_weights(num_samples, generator=generator)
    with torch.no_grad():
        return torch.stack(
            [
                model.mean_function({n: w[s] for n, w in weights.items()}, pairs.drug_a, pairs.drug_b, pairs.cell)
                for s in range(num_samples)
            ]
        )


@pytest.mark.parametrize("layers", ["all", "head", ["merge"]])
def test_vectorised_predictive_equals_the_per_sample_loop(layers):
    model, guide = make(layers, init_scale=0.3)
    pairs = candidates()
    f = sample_predictive(model, guide, pairs, num_samples=25, generator=seeded())
    reference = loop_predictive(model, guide, pairs, 25, seeded())
    assert f.shape == (25, 60) and f.dtype == torch.float64
    # Batched and unbatched matmuls may sum in a different order (BLAS blocking): equal to rounding.
    torch.testing.assert_close(f, reference, rtol=1e-12, atol=1e-12)
    assert float(f.std(0).min()) > 0


def test_vectorised_predictive_matches_loop_in_float32():
    model, guide = make("all", dtype=torch.float32, init_scale=0.3)
    pairs = candidates()
    f = sample_predictive(model, guide, pairs, num_samples=10, generator=seeded())
    torch.testing.assert_close(f, loop_predictive(model, guide, pairs, 10, seeded()), rtol=1e-5, atol=1e-4)


def test_sparse_dropout_guide_predictive_equals_loop():
    model, guide = make("head", guide_cls=SparseVariationalDropoutGuide, init_log_alpha=-2.0)
    pairs = candidates()
    f = sample_predictive(model, guide, pairs, num_samples=8, generator=seeded())
    torch.testing.assert_close(f, loop_predictive(model, guide, pairs, 8, seeded()), rtol=1e-12, atol=1e-12)


def test_chunking_does_not_change_results():
    model, guide = make("all", init_scale=0.2)
    pairs = candidates(50)
    whole = sample_predictive(model, guide, pairs, 7, chunk_size=4096, generator=seeded())
    chunked = sample_predictive(model, guide, pairs, 7, chunk_size=6, generator=seeded())
    torch.testing.assert_close(whole, chunked, rtol=1e-12, atol=1e-12)


def test_drug_order_symmetry_with_the_same_weight_samples():
    model, guide = make("all", init_scale=0.3)
    pairs = candidates()
    f_ab = sample_predictive(model, guide, pairs, 9, generator=seeded())
    f_ba = sample_predictive(model, guide, pairs.swapped(), 9, generator=seeded())
    assert torch.equal(f_ab, f_ba)


def test_deterministic_layers_run_once_unbatched():
    model, guide = make("head", init_scale=0.2)
    shapes: dict[str, list[torch.Size]] = {"drug0": [], "drug1": [], "head": []}
    net = model.predictor
    hooks = [
        net.drug_layers[0].register_forward_hook(lambda m, i, o: shapes["drug0"].append(o.shape)),
        net.drug_layers[1].register_forward_hook(lambda m, i, o: shapes["drug1"].append(o.shape)),
        net.head_layers[0].register_forward_hook(lambda m, i, o: shapes["head"].append(o.shape)),
    ]
    pairs = candidates(40)
    n_drugs = len(torch.unique(torch.cat([pairs.drug_a, pairs.drug_b])))
    n_unique = len(torch.unique(torch.cat([pairs.drug_a * C + pairs.cell, pairs.drug_b * C + pairs.cell])))
    sample_predictive(model, guide, pairs, num_samples=30)
    for h in hooks:
        h.remove()
    assert shapes["drug0"] == [torch.Size([n_drugs, 16])]  # first layer (before FiLM): per drug
    assert shapes["drug1"] == [torch.Size([n_unique, 8])]  # once, per unique (drug, cell line), no S
    assert shapes["head"] == [torch.Size([30, 40, 6])]  # Bayesian head: all samples at once


def test_works_for_deep_synergy_predictor():
    torch.manual_seed(0)
    net = DeepSynergyPredictor(torch.rand(D, 10), torch.eye(C), hidden=(8, 4))
    model = BayesianRegression(net, bayesian_layers="all")
    guide = MeanFieldNormalGuide(model, init_scale=0.2)
    pairs = candidates(12)
    f = sample_predictive(model, guide, pairs, 5, generator=seeded())
    assert f.shape == (5, 12)
    torch.testing.assert_close(f, sample_predictive(model, guide, pairs.swapped(), 5, generator=seeded()))


def test_empty_candidates_and_bad_arguments():
    model, guide = make("head")
    empty = Pairs(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    assert sample_predictive(model, guide, empty, 4).shape == (4, 0)
    with pytest.raises(ValueError, match="num_samples"):
        sample_predictive(model, guide, candidates(3), 0)


def test_cell_line_chunks_cover_every_candidate_once_one_cell_line_each():
    cell = torch.tensor([2, 0, 2, 1, 0, 2, 2, 0])
    chunks = _cell_line_chunks(cell, 2)
    assert sorted(torch.cat(chunks).tolist()) == list(range(len(cell)))
    assert all(len(c) <= 2 and len(set(cell[c].tolist())) == 1 for c in chunks)
    assert _cell_line_chunks(torch.zeros(0, dtype=torch.long), 4) == []
