"""RECOVER predictor: exact symmetry and the dense (all-pairs table) merge against the elementwise one."""

import itertools

import pytest
import torch

from recover_pyro.models import predictor as predictor_module
from recover_pyro.models.predictor import RecoverPredictor, SymmetricBilinear

D, C = 12, 4


def net(dtype=torch.float64) -> RecoverPredictor:
    torch.manual_seed(0)
    return RecoverPredictor(
        torch.rand(D, 20).round(), torch.eye(C), drug_hidden=(16, 8), merge_dim=6, merge_rank=3, head_hidden=(5,)
    ).to(dtype)


def all_pairs(cells=range(C)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows = [(a, b, c) for c in cells for a, b in itertools.combinations(range(D), 2)]
    return tuple(torch.tensor(col) for col in zip(*rows))


def with_ratio(monkeypatch, ratio: float) -> None:
    """ratio 0: never dense; a huge ratio: every group dense (whatever its number of pairs)."""
    monkeypatch.setattr(predictor_module, "DENSE_MERGE_RATIO", ratio)
    monkeypatch.setattr(predictor_module, "DENSE_MERGE_MIN_GATHER", 0)


def test_table_is_the_merge_of_every_pair():
    torch.manual_seed(1)
    merge = SymmetricBilinear(8, 5, 3).double()
    proj = merge.project(torch.randn(2, 7, 8, dtype=torch.float64))  # (S=2, U=7, K, r)
    table = merge.table(proj)  # (S, K, U, U)
    a, b = torch.meshgrid(torch.arange(7), torch.arange(7), indexing="ij")
    expected = merge.merge(proj[:, a.flatten()], proj[:, b.flatten()]) - merge.bias  # (S, 49, K)
    torch.testing.assert_close(table.flatten(-2).transpose(-1, -2), expected)


@pytest.mark.parametrize("cells", [[2], list(range(C))])
def test_dense_and_elementwise_merge_agree(monkeypatch, cells):
    model = net()
    a, b, c = all_pairs(cells)
    with torch.no_grad():
        with_ratio(monkeypatch, 0.0)  # never dense
        sparse = model(a, b, c)
        with_ratio(monkeypatch, 1e9)  # always dense
        dense = model(a, b, c)
    torch.testing.assert_close(dense, sparse)


def test_dense_merge_with_sample_batched_weights(monkeypatch):
    """The table path with a leading sample dimension (Bayesian merge) equals the elementwise path."""
    torch.manual_seed(2)
    merge = SymmetricBilinear(8, 5, 3).double()
    s = 3
    weight = merge.weight + 0.1 * torch.randn(s, *merge.weight.shape, dtype=torch.float64)
    proj = torch.matmul(torch.randn(s, 9, 8, dtype=torch.float64).unsqueeze(-3), weight.transpose(-1, -2)).movedim(
        -3, -2
    )  # (S, U, K, r)
    group = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1])
    ia = torch.tensor([0, 1, 3, 4, 5, 8, 2])
    ib = torch.tensor([1, 1, 0, 8, 6, 4, 3])
    with_ratio(monkeypatch, 0.0)
    sparse = merge.merge_pairs(proj, ia, ib, group)
    with_ratio(monkeypatch, 1e9)
    dense = merge.merge_pairs(proj, ia, ib, group)
    assert dense.shape == (s, 7, 5)
    torch.testing.assert_close(dense, sparse)


@pytest.mark.parametrize("ratio", [0.0, 1e9])
def test_exactly_symmetric_in_drug_order(monkeypatch, ratio):
    with_ratio(monkeypatch, ratio)
    model = net(torch.float32)
    a, b, c = all_pairs()
    with torch.no_grad():
        assert torch.equal(model(a, b, c), model(b, a, c))


def test_gradients_flow_through_the_dense_merge(monkeypatch):
    with_ratio(monkeypatch, 1e9)
    model = net()
    a, b, c = all_pairs([0, 1])
    model(a, b, c).pow(2).sum().backward()
    assert model.merge.weight.grad is not None and model.merge.weight.grad.abs().sum() > 0
    assert model.drug_layers[0].weight.grad.abs().sum() > 0


def naive_forward(model: RecoverPredictor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """The network as written on paper: both embeddings of every pair computed for that pair, merged
    elementwise (no per-(cell line, drug) deduplication, no all-pairs table, no gather)."""

    def embed(drug: torch.Tensor) -> torch.Tensor:
        h, cell = model.drug_features[drug], model.cell_features[c]
        for i, layer in enumerate(model.drug_layers):
            h = layer(h)
            if model.film is not None:
                h = model.film[i](h, cell)
            h = torch.relu(h)
        return h

    return model.head(model.merge.merge(model.merge.project(embed(a)), model.merge.project(embed(b))), c)


def minibatch(n: int = 128, n_cells: int = C, seed: int = 3) -> tuple[torch.Tensor, ...]:
    """``n`` random pairs of distinct drugs spread over ``n_cells`` cell lines, with random targets."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(D, (n,), generator=g)
    b = (a + torch.randint(1, D, (n,), generator=g)) % D
    return a, b, torch.randint(n_cells, (n,), generator=g), torch.randn(n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("film", [True, False])
@pytest.mark.parametrize("ratio", [None, 0.0, 1e9])
def test_fast_training_step_equals_the_plain_network(monkeypatch, film, ratio):
    """Loss and every parameter's gradient of the deduplicated / table / single-gather forward equal those of
    the plain per-pair network within float64 rounding, with FiLM (merge per cell line) and without (per drug).
    ``ratio=None``: the library's thresholds (a small minibatch takes the single gather without bookkeeping)."""
    if ratio is not None:
        with_ratio(monkeypatch, ratio)
    torch.manual_seed(0)
    model = RecoverPredictor(
        torch.rand(D, 20).round(), torch.eye(C), drug_hidden=(16, 8), merge_dim=6, merge_rank=3, film=film
    ).double()
    a, b, c, y = minibatch()
    losses, grads = [], []
    for forward in (model, lambda *idx: naive_forward(model, *idx)):
        model.zero_grad()
        loss = torch.nn.functional.mse_loss(forward(a, b, c), y)
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-12, atol=1e-12)
    for name in grads[1]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("ratio", [0.0, 1e9])
def test_without_film_exactly_symmetric_in_drug_order(monkeypatch, ratio):
    with_ratio(monkeypatch, ratio)
    torch.manual_seed(0)
    model = RecoverPredictor(torch.rand(D, 20).round(), torch.eye(C), drug_hidden=(16, 8), film=False)
    a, b, c = all_pairs()
    with torch.no_grad():
        assert torch.equal(model(a, b, c), model(b, a, c))


@pytest.mark.parametrize("film", [True, False])
def test_normalize_pair_rescales_every_pair_to_norm_sqrt_k_and_only_that(film):
    torch.manual_seed(0)
    kwargs = dict(drug_hidden=(16, 8), merge_dim=6, merge_rank=3, head_hidden=(5,), film=film)
    plain = RecoverPredictor(torch.rand(D, 20).round(), torch.eye(C), **kwargs).double()
    scaled = RecoverPredictor(plain.drug_features, plain.cell_features, normalize_pair=True, **kwargs).double()
    scaled.load_state_dict(plain.state_dict())
    a, b, c = all_pairs()
    with torch.no_grad():
        z, z_scaled = plain.trunk(a, b, c), scaled.trunk(a, b, c)
        assert torch.allclose(z_scaled.norm(dim=-1), torch.full((len(a),), 6**0.5, dtype=torch.float64))
        assert torch.allclose(z_scaled, z / z.norm(dim=-1, keepdim=True) * 6**0.5)  # same direction
        assert torch.equal(scaled(a, b, c), scaled.head(z_scaled, c)) and torch.equal(scaled(a, b, c), scaled(b, a, c))


@pytest.mark.parametrize(("film", "block"), [(True, 1024), (False, 1024), (True, 16)])
def test_projection_cache_projects_every_drug_once_per_cell_line(film, block, monkeypatch):
    """Scoring a library in chunks: inside ``drug_projection_cache`` the per-drug layers run once per cell line
    over every drug (not once per chunk), and the trunk's output is the one computed without the cache."""
    monkeypatch.setattr(predictor_module, "PROJECTION_BLOCK", block)
    torch.manual_seed(0)
    n_drugs = 40
    net = RecoverPredictor(
        torch.rand(n_drugs, 12), torch.eye(3), drug_hidden=(16, 8), merge_dim=8, merge_rank=2, film=film
    )
    a, b = torch.triu_indices(n_drugs, n_drugs, 1)
    cell = torch.arange(len(a)) % 3
    order = torch.argsort(cell, stable=True)  # library chunks come cell line by cell line
    a, b, cell = a[order], b[order], cell[order]
    with torch.no_grad():
        plain = net.trunk(a, b, cell)
        calls = []
        first = net.drug_layers[0]
        handle = first.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[-2]))
        with net.drug_projection_cache(max_bytes=2**20):
            cached = torch.cat(
                [net.trunk(a[i : i + 97], b[i : i + 97], cell[i : i + 97]) for i in range(0, len(a), 97)]
            )
        handle.remove()
    assert torch.allclose(cached, plain, atol=1e-6)
    # One pass over all drugs per cell line with FiLM (3), a single one without (the embedding ignores the cell),
    # in blocks of PROJECTION_BLOCK drugs.
    per_cell = [n_drugs] if block >= n_drugs else [16, 16, 8]
    assert calls == per_cell * (3 if film else 1)
    assert net._projection_cache is None  # gone on leaving


def test_projection_cache_refuses_sample_batched_per_drug_layers():
    net = RecoverPredictor(torch.rand(6, 4), torch.eye(1), drug_hidden=(5,), merge_dim=3, merge_rank=2)
    net.drug_layers[0].weight = torch.nn.Parameter(torch.randn(2, 5, 4))  # two weight samples
    idx = torch.tensor([0, 1])
    with net.drug_projection_cache(), pytest.raises(ValueError, match="deterministic projections only"):
        net.trunk(idx, idx + 2, torch.zeros(2, dtype=torch.long))
