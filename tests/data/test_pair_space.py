"""The lazily enumerated pair space: the same candidates, in the same order, as listing them all."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recover_pyro.data.candidates import PairSpace, pair_count


@pytest.mark.parametrize("n_drugs", [2, 3, 17, 500, 4001])
def test_decode_is_the_upper_triangle_in_row_major_order(n_drugs: int) -> None:
    space = PairSpace(n_drugs, cells=[0])
    ia, ib = np.triu_indices(n_drugs, k=1)
    pairs = space.decode(torch.arange(len(space)))
    assert np.array_equal(pairs.drug_a.numpy(), ia) and np.array_equal(pairs.drug_b.numpy(), ib)
    assert torch.equal(
        space.ids_of(pairs.drug_b, pairs.drug_a, torch.zeros(len(space), dtype=torch.long)), torch.arange(len(space))
    )


def test_decode_is_exact_at_the_ids_of_a_large_library() -> None:
    # 10,000 drugs x 60 cell lines: 3e9 ids, beyond float32 and near where float64 sqrt rounding could bite.
    space = PairSpace(10_000, cells=list(range(60)))
    ids = torch.cat(
        [
            torch.arange(0, 50),
            torch.arange(len(space) - 50, len(space)),
            torch.randint(len(space), (10_000,), generator=torch.Generator().manual_seed(0)),
        ]
    )
    pairs = space.decode(ids)
    assert bool((pairs.drug_a < pairs.drug_b).all()) and int(pairs.drug_b.max()) < 10_000
    cell_position = ids // space.pairs_per_cell
    assert torch.equal(space.ids_of(pairs.drug_a, pairs.drug_b, cell_position), ids)


def test_chunks_cover_every_allowed_candidate_once_in_order() -> None:
    space = PairSpace(30, cells=[4, 1], exclude=torch.tensor([0, 5, 500, 434, 10_000]), drugs=range(0, 30, 2))
    ids = torch.cat([c.ids for c in space.chunks(size=37)])
    assert torch.all(ids[1:] > ids[:-1])
    pairs = space.decode(ids)
    assert bool((pairs.drug_a % 2 == 0).all() and (pairs.drug_b % 2 == 0).all())
    assert not set(ids.tolist()) & {0, 5, 500, 434}
    ia, ib = np.triu_indices(30, k=1)
    even = [c * len(ia) + p for c in range(2) for p in range(len(ia)) if ia[p] % 2 == 0 and ib[p] % 2 == 0]
    assert ids.tolist() == [k for k in even if k not in {0, 5, 500, 434}] and space.count() == len(ids)
    assert set(pairs.cell.tolist()) == {4, 1}
    assert len(space) == pair_count(30, 2)


def test_shards_partition_the_space() -> None:
    space = PairSpace(100, cells=[0, 1, 2])
    shards = space.shards(7)
    assert shards[0][0] == 0 and shards[-1][1] == len(space)
    assert all(a[1] == b[0] for a, b in zip(shards, shards[1:]))


def test_a_self_pair_has_no_id() -> None:
    with pytest.raises(ValueError, match="itself"):
        PairSpace(5, cells=[0]).ids_of(torch.tensor([2]), torch.tensor([2]), torch.tensor([0]))
