r"""A candidate space enumerated lazily: every unordered pair of distinct drugs in every chosen cell line.

A library of ``D`` drugs in ``C`` cell lines has :math:`C \binom{D}{2}` candidates (50 M for 10,000 drugs in
one cell line): listing them up front costs more memory than scoring them. :class:`PairSpace` numbers them
instead, :math:`k = c P + p` with :math:`P = \binom{D}{2}` and :math:`p` the position of the pair
:math:`(i, j),\ i < j` in row-major upper-triangle order (``numpy.triu_indices(D, 1)``, the order of
:meth:`Screen.all_candidates <recover_pyro.data.screen.Screen.all_candidates>`), and turns any range of
``k`` into drug and cell-line indices in closed form:

.. math:: \text{start}(i) = i (2D - i - 1) / 2, \qquad i(p) = \max\{i : \text{start}(i) \le p\}.

Measured or excluded candidates are left out of each chunk by id, so a chunk holds only what may be proposed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from recover_pyro.data.screen import Pairs


@dataclass
class CandidatePairs:
    """One chunk of a :class:`PairSpace`.

    Attributes:
        pairs: the chunk's candidates as index tensors (no targets).
        ids: ``(n,)`` long candidate ids ``k`` (increasing).
    """

    pairs: Pairs
    ids: Tensor


class PairSpace:
    """Every unordered pair of distinct drugs of ``n_drugs`` crossed with ``cells``, enumerated lazily.

    Args:
        n_drugs: ``D``, drugs indexed ``0 .. D-1`` (the rows of the feature matrix).
        cells: cell-line indices (rows of the cell features), in the order of the enumeration.
        exclude: ``(M,)`` candidate ids never to yield (measured or excluded pairs; see :meth:`ids_of`).
        drugs: drug indices that may appear (``None``: all); pairs with any other drug are skipped.
    """

    def __init__(
        self,
        n_drugs: int,
        cells: Sequence[int],
        exclude: Tensor | None = None,
        drugs: Sequence[int] | None = None,
    ) -> None:
        if n_drugs < 2:
            raise ValueError(f"a pair space needs at least 2 drugs, got {n_drugs}")
        self.n_drugs = int(n_drugs)
        self.cells = torch.as_tensor(list(cells), dtype=torch.long)
        self.pairs_per_cell = self.n_drugs * (self.n_drugs - 1) // 2
        self.exclude = (
            torch.zeros(0, dtype=torch.long) if exclude is None else torch.unique(torch.as_tensor(exclude).long())
        )
        self.allowed: Tensor | None = None
        if drugs is not None:
            self.allowed = torch.zeros(self.n_drugs, dtype=torch.bool)
            self.allowed[torch.as_tensor(list(drugs), dtype=torch.long)] = True

    def __len__(self) -> int:
        """Every candidate id, excluded ones included (the ids run over ``[0, len)``)."""
        return self.pairs_per_cell * len(self.cells)

    def ids_of(self, drug_a: Tensor, drug_b: Tensor, cell_position: Tensor) -> Tensor:
        """``(n,)`` candidate ids of drug-index pairs (either order) in cell line ``self.cells[cell_position]``."""
        i, j = torch.minimum(drug_a, drug_b).long(), torch.maximum(drug_a, drug_b).long()
        if bool((i == j).any()):
            raise ValueError("a candidate pairs two distinct drugs; got a drug paired with itself")
        start = i * (2 * self.n_drugs - i - 1) // 2
        return cell_position.long() * self.pairs_per_cell + start + (j - i - 1)

    def decode(self, ids: Tensor) -> Pairs:
        """Drug and cell-line indices of candidate ids ``(n,)``."""
        ids = ids.long()
        cell_position, p = ids // self.pairs_per_cell, ids % self.pairs_per_cell
        d = self.n_drugs
        # i = the largest row whose start(i) <= p; the float estimate is corrected by one step either way.
        i = torch.floor((2 * d - 1 - torch.sqrt(((2 * d - 1) ** 2 - 8 * p).double())) / 2).long()
        i = i.clamp(0, d - 2)
        start = i * (2 * d - i - 1) // 2
        i = torch.where(start > p, i - 1, i)
        start = i * (2 * d - i - 1) // 2
        next_start = (i + 1) * (2 * d - i - 2) // 2
        i = torch.where(next_start <= p, i + 1, i)
        start = i * (2 * d - i - 1) // 2
        j = p - start + i + 1
        return Pairs(i, j, self.cells[cell_position])

    def chunks(self, size: int = 65536, start: int = 0, stop: int | None = None) -> Iterator[CandidatePairs]:
        """Chunks of at most ``size`` ids of ``[start, stop)``, excluded ids and disallowed drugs left out."""
        stop = len(self) if stop is None else min(stop, len(self))
        for lo in range(start, stop, size):
            ids = torch.arange(lo, min(lo + size, stop), dtype=torch.long)
            if self.exclude.numel():
                ids = ids[~torch.isin(ids, self.exclude)]
            pairs = self.decode(ids)
            if self.allowed is not None:
                keep = self.allowed[pairs.drug_a] & self.allowed[pairs.drug_b]
                ids, pairs = ids[keep], pairs[keep]
            if ids.numel():
                yield CandidatePairs(pairs, ids)

    def count(self) -> int:
        """Candidates that may be proposed (excluded ids and disallowed drugs left out)."""
        if self.allowed is None:
            return len(self) - int(((self.exclude >= 0) & (self.exclude < len(self))).sum())
        return sum(int(c.ids.numel()) for c in self.chunks(2**20))

    def shards(self, n: int) -> list[tuple[int, int]]:
        """``n`` contiguous id ranges ``[start, stop)`` of about equal size covering the space."""
        edges = np.linspace(0, len(self), n + 1).round().astype(np.int64)
        return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def pair_count(n_drugs: int, n_cells: int = 1) -> int:
    """:math:`C \\binom{D}{2}`: the size of a library's pair space."""
    return n_cells * math.comb(n_drugs, 2)
