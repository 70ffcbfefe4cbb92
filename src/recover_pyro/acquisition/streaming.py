r"""Streaming selection: choose a batch from a candidate space too large to hold its ``(S, N)`` samples.

The in-memory path (:meth:`Acquisition.select <recover_pyro.acquisition.Acquisition.select>`) needs every
candidate's ``S`` posterior samples at once: ``4 S N`` bytes, 1.9 GB for the 4.76 M pairs of a 3,087-drug
library at ``S = 100`` and ~400 GB for a repurposing library in 60 cell lines. Here the candidates arrive
in chunks (:class:`CandidateChunk`, each with its ``(S, n)`` samples), and each chunk is reduced at once into
a :class:`Shortlist` of fixed size ``K``: memory is bounded by the chunk and ``K``, not by ``N``. The
strategy's own rule then runs on the shortlist.

Which strategies, and how exact:

* **Single-point rules** (:class:`~recover_pyro.acquisition.UCB`, :class:`~recover_pyro.acquisition.Greedy`,
  :class:`~recover_pyro.acquisition.ExpectedImprovement`,
  :class:`~recover_pyro.acquisition.ProbabilityOfImprovement` and any user subclass that only implements a
  column-wise ``scores``): the shortlist holds the top ``K`` candidates by the rule's total order (score,
  then tiebreak, then lowest index). The greedy batch under exclusion and a per-drug cap takes, at each slot,
  the best allowed candidate; every candidate outside the shortlist ranks below every candidate in it, so
  whenever the rule finds ``q`` picks inside the shortlist, they are *provably* the in-memory picks. When it
  does not (a cap skipped more than ``K - q`` candidates), the stream is read again with ``2 K``.
* **Thompson sampling**: the slots' posterior rows are drawn first (the same generator draws as in memory);
  the shortlist is the union of each row's top ``K``. A slot's pick is provably the in-memory one when it lies
  in its own row's top ``K``; otherwise the stream is read again with ``2 K``.
* **qEI / qPI** (sequential greedy on joint samples): shortlist = top ``K`` by the single-point EI / PI,
  then the exact sequential rule on it. Not provable: a candidate with a low single-point EI could add more
  joint improvement than any shortlisted one; the tests check that plates agree where both paths fit.
* **A diversity penalty** scales by the standard deviation of the values over the allowed candidates, a
  statistic of the whole pool; on the shortlist it is that of the shortlist, so plates can differ
  (not provable; the package's presets use none).
* **Random**: one uniform key per candidate, drawn chunk by chunk (the same keys as in memory), then the
  greedy pass by key: exact by the single-point argument.

Every chunk's scores must depend on that chunk's own samples only (true of the package's rules; a user rule
that normalises across candidates cannot stream).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from recover_pyro.acquisition.batch import SelectedBatch, _thompson_rows, select_batch
from recover_pyro.acquisition.scores import ei_scores, pi_scores
from recover_pyro.data.candidates import PairSpace
from recover_pyro.models.base import SynergyModel
from recover_pyro.acquisition.strategies import (
    Acquisition,
    QExpectedImprovement,
    QProbabilityOfImprovement,
    RandomAcquisition,
    Thompson,
)

#: Smallest shortlist a stream keeps (per Thompson row, or in all for the other rules).
MIN_SHORTLIST = 2048


@dataclass
class CandidateChunk:
    """One chunk of a streamed candidate space.

    Attributes:
        samples: ``(S, n)`` posterior samples of the chunk's candidates (original scale).
        index: ``(n,)`` long global candidate ids, increasing over the whole stream (the in-memory index).
        drugs: ``(n, 2)`` long drug indices of each candidate (needed by a per-drug cap), or ``None``.
    """

    samples: Tensor
    index: Tensor
    drugs: Tensor | None = None


ChunkStream = Callable[[], Iterable[CandidateChunk]]
"""A zero-argument callable returning a fresh iterable over the chunks (the stream may be read twice)."""


class Shortlist:
    """The best ``size`` candidates of a stream under a total order ``(key, tiebreak, lowest index)``.

    Holds their global ids, keys, tiebreaks, samples ``(S, K)`` and drugs ``(K, 2)``; :meth:`add` merges a
    chunk and keeps the best ``size``. Kept in ascending global id, so a rule run on the shortlist breaks
    exact ties by lowest index as it would on the whole pool.

    Args:
        size: how many candidates to keep (``K``).
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self.index = torch.zeros(0, dtype=torch.long)
        self.key = torch.zeros(0, dtype=torch.float64)
        self.tiebreak = torch.zeros(0, dtype=torch.float64)
        self.samples: Tensor | None = None
        self.drugs: Tensor | None = None
        self.seen = 0

    def add(self, chunk: CandidateChunk, key: Tensor, tiebreak: Tensor | None = None) -> None:
        """Merge ``chunk`` ranked by ``key`` ``(n,)`` (higher first) and ``tiebreak`` ``(n,)`` (exact ties)."""
        n = chunk.index.shape[0]
        self.seen += n
        tiebreak = torch.zeros(n, dtype=torch.float64) if tiebreak is None else tiebreak.double().cpu()
        key = key.double().cpu()
        if n > self.size:  # cut the chunk first: only its best `size` can survive the merge
            keep = _best(key, tiebreak, chunk.index, self.size)
            chunk = _subset(chunk, keep)
            key, tiebreak = key[keep], tiebreak[keep]
        index = torch.cat([self.index, chunk.index.cpu()])
        key = torch.cat([self.key, key])
        tiebreak = torch.cat([self.tiebreak, tiebreak])
        samples = chunk.samples.cpu() if self.samples is None else torch.cat([self.samples, chunk.samples.cpu()], 1)
        drugs = None
        if chunk.drugs is not None:
            drugs = chunk.drugs.cpu() if self.drugs is None else torch.cat([self.drugs, chunk.drugs.cpu()])
        keep = _best(key, tiebreak, index, self.size) if index.shape[0] > self.size else torch.arange(index.shape[0])
        keep = keep[torch.argsort(index[keep])]
        self.index, self.key, self.tiebreak = index[keep], key[keep], tiebreak[keep]
        self.samples = samples[:, keep]
        self.drugs = None if drugs is None else drugs[keep]

    def merge(self, other: Shortlist) -> None:
        """Take in another shortlist (e.g. a shard's): as if its stream had been added here."""
        if other.samples is None:
            self.seen += other.seen
            return
        seen = self.seen + other.seen
        self.add(CandidateChunk(other.samples, other.index, other.drugs), other.key, other.tiebreak)
        self.seen = seen

    @property
    def full(self) -> bool:
        """Whether candidates were left out (the stream held more than ``size``)."""
        return self.seen > self.size


def _best(key: Tensor, tiebreak: Tensor, index: Tensor, k: int) -> Tensor:
    """Positions of the ``k`` best by ``(key desc, tiebreak desc, index asc)``."""
    order = np.lexsort((index.numpy(), -tiebreak.numpy(), -key.numpy()))
    return torch.from_numpy(order[:k].copy())


def _subset(chunk: CandidateChunk, keep: Tensor) -> CandidateChunk:
    return CandidateChunk(
        chunk.samples[:, keep.to(chunk.samples.device)],
        chunk.index[keep.to(chunk.index.device)],
        None if chunk.drugs is None else chunk.drugs[keep.to(chunk.drugs.device)],
    )


def select_streaming(
    acquisition: Acquisition,
    stream: ChunkStream,
    *,
    best_f: float | None = None,
    round: int = 0,
    generator: torch.Generator | None = None,
    shortlist: int | None = None,
) -> SelectedBatch:
    """Choose ``acquisition.q`` candidates from a stream of chunks (see the module docstring).

    Args:
        acquisition: the strategy; its constraints (``max_per_drug``, ``diversity_penalty``) apply.
        stream: returns a fresh iterable of :class:`CandidateChunk` (unmeasured candidates only; measured or
            excluded ones are left out by the stream); read again with a doubled shortlist when a pass cannot
            prove its plate.
        best_f: best value measured so far (EI, PI, qEI, qPI).
        round: acquisition round (the UCB schedule).
        generator: randomness of Thompson / random picks (the same draws as the in-memory path).
        shortlist: candidates kept per pass (per Thompson row); default ``max(MIN_SHORTLIST, 64 q)``.

    Returns:
        :class:`SelectedBatch` whose ``indices`` are global candidate ids (``CandidateChunk.index``) in pick
        order and whose ``scores`` are those of the in-memory path.
    """
    plan = StreamPlan(acquisition, best_f=best_f, round=round, generator=generator, shortlist=shortlist)
    while True:
        collected = plan.collect(stream())
        done = plan.decide(collected)
        if done is not None:
            return done


class StreamPlan:
    """How one strategy reduces a stream, in three steps that shards can share: :meth:`collect` a stream (or
    a shard of it) into shortlists, :func:`merge_collected` the shards' shortlists exactly, :meth:`decide`
    the plate, or ``None`` when the plate is not proven and the stream must be read again (the plan has then
    doubled its shortlist size).

    Args:
        acquisition, best_f, round, generator, shortlist: as in :func:`select_streaming`.
        num_samples: ``S``, needed before the first chunk only by a sharded Thompson stream (each shard must
            track the same rows); otherwise read from the first chunk.
    """

    def __init__(
        self,
        acquisition: Acquisition,
        *,
        best_f: float | None = None,
        round: int = 0,
        generator: torch.Generator | None = None,
        shortlist: int | None = None,
        num_samples: int | None = None,
    ) -> None:
        if (
            not isinstance(acquisition, (RandomAcquisition, Thompson, QExpectedImprovement, QProbabilityOfImprovement))
            and type(acquisition).select is not Acquisition.select
        ):
            raise TypeError(
                f"{type(acquisition).__name__} overrides select(), which needs every candidate's samples at "
                "once; stream only strategies that implement scores() (or score the candidates in memory)"
            )
        if isinstance(acquisition, (QExpectedImprovement, QProbabilityOfImprovement)) and best_f is None:
            raise ValueError(f"acquisition {acquisition.name!r} needs best_f, the best value measured so far")
        self.acquisition = acquisition
        self.best_f, self.round, self.generator = best_f, round, generator
        self.size = shortlist if shortlist is not None else max(MIN_SHORTLIST, 64 * acquisition.q)
        # Random and Thompson draw from the generator; every pass starts from the caller's state.
        self.state = None if generator is None else generator.get_state()
        self.rows: list[int] | None = None
        if num_samples is not None and isinstance(acquisition, Thompson):
            self.rows = self._thompson_rows(num_samples)

    def _thompson_rows(self, num_samples: int) -> list[int]:
        """The slots' sample rows, drawn from a copy of the generator (the rule draws them again)."""
        probe = None
        if self.state is not None:
            probe = torch.Generator()
            probe.set_state(self.state)
        return _thompson_rows(num_samples, self.acquisition.q, probe).tolist()

    def collect(self, chunks: Iterable[CandidateChunk]) -> dict[int, Shortlist]:
        """Shortlists of the chunks: ``{-1: list}``, or one per posterior row for Thompson."""
        acq = self.acquisition
        if isinstance(acq, RandomAcquisition) and self.generator is not None and self.state is not None:
            self.generator.set_state(self.state)
        lists: dict[int, Shortlist] = {}
        for chunk in chunks:
            if isinstance(acq, Thompson):
                if self.rows is None:
                    self.rows = self._thompson_rows(chunk.samples.shape[0])
                if not lists:
                    lists = {r: Shortlist(self.size) for r in set(self.rows)}
                for r, kept in lists.items():
                    kept.add(chunk, chunk.samples[r])
                continue
            kept = lists.setdefault(-1, Shortlist(self.size))
            if isinstance(acq, RandomAcquisition):
                kept.add(chunk, torch.rand(chunk.index.shape[0], generator=self.generator))
            elif isinstance(acq, QExpectedImprovement):
                assert self.best_f is not None
                kept.add(chunk, ei_scores(chunk.samples, self.best_f), chunk.samples.mean(0))
            elif isinstance(acq, QProbabilityOfImprovement):
                assert self.best_f is not None
                kept.add(chunk, pi_scores(chunk.samples, self.best_f, tau=acq.tau), chunk.samples.mean(0))
            else:
                kept.add(chunk, acq.scores(chunk.samples, self.best_f, self.round), acq.tiebreak(chunk.samples))
        return lists

    def decide(self, lists: dict[int, Shortlist]) -> SelectedBatch | None:
        """The plate from (merged) shortlists, or ``None`` to read the stream again with twice the shortlist."""
        acq = self.acquisition
        if not lists:
            return SelectedBatch(torch.zeros(0, dtype=torch.long), torch.zeros(0))
        full = any(k.full for k in lists.values())
        if isinstance(acq, Thompson):
            assert self.rows is not None
            union = _union(list(lists.values()))
            if self.generator is not None and self.state is not None:
                self.generator.set_state(self.state)
            done = _on_shortlist(acq, union, None, 0, self.generator)
            own = [lists[r].index for r in self.rows[: len(done.batch)]]
            proven = all(bool((top == i).any()) for top, i in zip(own, done.batch.indices.tolist()))
        elif isinstance(acq, RandomAcquisition):
            kept = lists[-1]
            assert kept.samples is not None
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                picked = select_batch(kept.key, acq.q, **acq.constraints(None, kept.drugs))
            batch = SelectedBatch(kept.index[picked], kept.samples.mean(0)[picked])
            done = Pass(batch, [w.message for w in caught])
            proven = len(batch) == acq.q
        elif isinstance(acq, (QExpectedImprovement, QProbabilityOfImprovement)):
            done, proven = _on_shortlist(acq, lists[-1], self.best_f, 0, self.generator), True  # empirical
        else:
            done = _on_shortlist(acq, lists[-1], self.best_f, self.round, self.generator)
            proven = len(done.batch) == acq.q
        if proven or not full or acq.diversity_penalty > 0:
            return done.final()
        self.size *= 2
        return None


def merge_collected(parts: Iterable[dict[int, Shortlist]]) -> dict[int, Shortlist]:
    """The shortlists the whole stream would have kept, from those of its shards (exact: the best ``K`` of a
    union are the best ``K`` of the shards' best ``K``)."""
    out: dict[int, Shortlist] = {}
    for part in parts:
        for key, kept in part.items():
            if key not in out:
                out[key] = Shortlist(kept.size)
            out[key].merge(kept)
    return out


def _on_shortlist(
    acquisition: Acquisition,
    kept: Shortlist,
    best_f: float | None,
    round: int,
    generator: torch.Generator | None,
) -> Pass:
    """The strategy's own rule on the shortlist, with global ids."""
    if kept.samples is None:
        return Pass(SelectedBatch(torch.zeros(0, dtype=torch.long), torch.zeros(0)), [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = acquisition.select(
            kept.samples, candidate_drugs=kept.drugs, best_f=best_f, round=round, generator=generator
        )
    return Pass(SelectedBatch(kept.index[batch.indices], batch.scores), [w.message for w in caught])


@dataclass
class Pass:
    """One read of the stream: its plate and the warnings its rule raised, re-issued only for the pass whose
    plate is returned (a shortfall of a pass that is read again is not the user's)."""

    batch: SelectedBatch
    warnings: list[Warning | str]

    def final(self) -> SelectedBatch:
        for message in self.warnings:
            warnings.warn(message, stacklevel=3)
        return self.batch


def _union(lists: list[Shortlist]) -> Shortlist:
    """One shortlist holding every candidate of ``lists`` once (ascending global id)."""
    out = Shortlist(sum(k.size for k in lists))
    filled = [k for k in lists if k.samples is not None]
    if not filled:
        return out
    index = torch.cat([k.index for k in filled])
    unique, first = np.unique(index.numpy(), return_index=True)
    first_t = torch.from_numpy(first)
    out.index = torch.from_numpy(unique)
    out.samples = torch.cat([k.samples for k in filled], 1)[:, first_t]  # type: ignore[misc]
    if filled[0].drugs is not None:
        out.drugs = torch.cat([k.drugs for k in filled])[first_t]  # type: ignore[misc]
    out.seen = max(k.seen for k in filled)
    return out


def model_chunks(
    model: SynergyModel,
    space: PairSpace,
    num_samples: int,
    *,
    chunk_size: int = 65536,
    start: int = 0,
    stop: int | None = None,
    draw: Any = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[CandidateChunk]:
    """The chunks of ``space`` (ids ``[start, stop)``) with ``model``'s ``(S, n)`` samples of ``f``.

    Args:
        model: a fitted model. A model with ``draw_posterior`` (the BNN) scores every chunk with one set of
            weight samples (``draw``, drawn here if not given), the very samples its ``predict`` would use for
            the whole space at once; an ensemble's members are its samples anyway. MC dropout draws its masks
            per call, so its chunks' samples are not those of one in-memory call.
        space: the candidate space (measured and excluded candidates already left out).
        num_samples: ``S``.
        chunk_size: candidates per chunk (bounds memory: ``4 S chunk_size`` bytes of samples).
        start, stop: the id range (a shard of the space).
        draw: weight samples from ``model.draw_posterior(num_samples)`` (shared by shards).
        progress: called with the number of ids covered by each chunk (for a progress bar).
    """
    stop = len(space) if stop is None else stop
    draw_posterior = getattr(model, "draw_posterior", None)
    if draw is None and callable(draw_posterior):
        draw = draw_posterior(num_samples)
    covered = start
    session = getattr(model, "scoring_session", None)
    # A model's scoring session keeps work across the chunks (RECOVER's net: every drug's projections, once).
    with session() if callable(session) else contextlib.nullcontext():
        for chunk in space.chunks(chunk_size, start, stop):
            kwargs = {} if draw is None else {"draw": draw}
            f = model.predict(chunk.pairs, num_samples=num_samples, **kwargs).f.cpu()
            yield CandidateChunk(f, chunk.ids, torch.stack([chunk.pairs.drug_a, chunk.pairs.drug_b], 1))
            if progress is not None:
                end = min(int(chunk.ids[-1]) + 1, stop)
                progress(end - covered)
                covered = end
    if progress is not None and stop > covered:
        progress(stop - covered)
