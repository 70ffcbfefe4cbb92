"""A whole compound library as a plate's candidate space: numbered, streamed, optionally on a Ray cluster.

Below :attr:`Scoring.stream_above` candidates :func:`~recover_pyro.wetlab.plate.recommend` lists its pool and
scores it at once; above, the pool is a :class:`~recover_pyro.data.candidates.PairSpace` (every pair of the
drug table in the chosen cell lines, numbered as :meth:`Screen.all_candidates` lists them, so both paths
see the same candidates in the same order) whose measured, tried and excluded pairs and left-out drugs are
left out by id, scored chunk by chunk (:mod:`recover_pyro.acquisition.streaming`) or on a Ray cluster
(:mod:`recover_pyro.acquisition.distributed`). Where both paths fit, they give the same plate (tests).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from recover_pyro.acquisition import Acquisition, SelectedBatch
from recover_pyro.acquisition.streaming import model_chunks, select_streaming
from recover_pyro.data.candidates import PairSpace, pair_count
from recover_pyro.data.featurize import Features
from recover_pyro.data.screen import Pairs, Screen
from recover_pyro.errors import ConfigValueError, EmptySelectionError
from recover_pyro.models.base import SynergyModel
from recover_pyro.wetlab.candidates import PAIR_COLUMNS

log = logging.getLogger(__name__)


@dataclass
class Scoring:
    """How a plate's candidate space is scored (config group ``scoring``).

    Attributes:
        stream_above: candidates above which the space is streamed instead of listed (both give the same
            plate; streaming bounds memory by ``chunk_size``, listing holds ``(S, N)`` samples).
        chunk_size: candidates per streamed chunk.
        shortlist: candidates kept per pass (``None``: ``max(2048, 64 q)``; see
            :func:`~recover_pyro.acquisition.streaming.select_streaming`).
        ray_address: a Ray cluster to score on (``"auto"``, ``"<head>:6379"``); ``None``: this process.
        workers: Ray actors (``None``: the cluster's CPUs, or GPUs with ``device="cuda"``).
        device: where Ray workers score (``"cpu"`` or ``"cuda"``).
        progress: a bar with ETA over the candidate space.
    """

    stream_above: int = 2_000_000
    chunk_size: int = 65536
    shortlist: int | None = None
    ray_address: str | None = None
    workers: int | None = None
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        for key in ("stream_above", "chunk_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "chunk_size" else 0):
                raise ConfigValueError(f"scoring.{key}", f"must be a non-negative integer, got {value!r}")
        if self.workers is not None and self.workers < 1:
            raise ConfigValueError("scoring.workers", f"must be at least 1, got {self.workers!r}")

    def streams(self, n_candidates: int) -> bool:
        """Whether a space of ``n_candidates`` is streamed."""
        return self.ray_address is not None or n_candidates > self.stream_above


def library_size(screen: Screen, cell_lines: list[str]) -> int:
    """Candidates of the whole library before any rule: every pair of the drug table in ``cell_lines``."""
    return pair_count(screen.n_drugs, len(cell_lines))


def library_space(
    screen: Screen, cell_lines: list[str], forbidden: pd.DataFrame, leave_out: list[str]
) -> tuple[PairSpace, pd.DataFrame]:
    """The numbered space of ``screen``'s drug pairs in ``cell_lines``, less ``forbidden`` rows and drugs left
    out; with the forbidden rows expanded to the cell lines (a pair file row without one names them all)."""
    drug_index = {d: i for i, d in enumerate(screen.drugs.index)}
    cell_index = {c: i for i, c in enumerate(screen.cell_lines.index)}
    cells = [cell_index[c] for c in cell_lines]
    rows = forbidden[PAIR_COLUMNS].copy()
    anywhere = rows[rows["cell_line"].isna()]
    rows = pd.concat(
        [rows[rows["cell_line"].notna()], *(anywhere.assign(cell_line=c) for c in cell_lines)], ignore_index=True
    )
    rows = rows[rows["cell_line"].isin(cell_lines) & rows["drug_a"].isin(drug_index) & rows["drug_b"].isin(drug_index)]
    rows = rows[rows["drug_a"] != rows["drug_b"]].drop_duplicates().reset_index(drop=True)
    space = PairSpace(screen.n_drugs, cells)
    exclude = space.ids_of(
        torch.tensor(rows["drug_a"].map(drug_index).to_numpy(dtype=np.int64)),
        torch.tensor(rows["drug_b"].map(drug_index).to_numpy(dtype=np.int64)),
        torch.tensor(rows["cell_line"].map({c: k for k, c in enumerate(cell_lines)}).to_numpy(dtype=np.int64)),
    )
    allowed = None
    if leave_out:
        out = {drug_index[d] for d in leave_out}
        allowed = [i for i in range(screen.n_drugs) if i not in out]
    return PairSpace(screen.n_drugs, cells, exclude=exclude, drugs=allowed), rows


def choose_from_library(
    fitted: SynergyModel,
    model_factory: Callable[..., SynergyModel],
    space: PairSpace,
    acquisition: Acquisition,
    *,
    num_samples: int,
    best_f: float,
    round: int,
    seed: int,
    scoring: Scoring,
) -> tuple[SelectedBatch, Pairs, Any]:
    """The plate's candidate ids, their pairs and the posterior draw used (for their predictions).

    Raises:
        EmptySelectionError: no candidate is left in the space.
    """
    n = space.count()
    if n == 0:
        raise EmptySelectionError("no candidate combination is left to propose in the library")
    generator = torch.Generator().manual_seed(seed)
    draw_posterior = getattr(fitted, "draw_posterior", None)
    draw = draw_posterior(num_samples) if callable(draw_posterior) else None
    log.info(
        "scoring %d candidates in chunks of %d%s",
        n,
        scoring.chunk_size,
        f" on the Ray cluster at {scoring.ray_address}" if scoring.ray_address else "",
    )
    if scoring.ray_address is not None:
        from recover_pyro.acquisition.distributed import _ray, select_on_ray

        ray = _ray()
        if not ray.is_initialized():
            ray.init(address=scoring.ray_address, log_to_driver=False)
        batch = select_on_ray(
            acquisition,
            fitted,
            model_factory,
            space,
            num_samples,
            best_f=best_f,
            round=round,
            generator=generator,
            workers=scoring.workers,
            chunk_size=scoring.chunk_size,
            shortlist=scoring.shortlist,
            device=scoring.device,
            progress=scoring.progress,
            draw=draw,
        )
    else:
        bar = tqdm(total=len(space), unit="cand", unit_scale=True, desc="scoring", disable=not scoring.progress)

        def chunks() -> Any:
            bar.reset()  # a re-read (larger shortlist) starts the bar again
            return model_chunks(
                fitted, space, num_samples, chunk_size=scoring.chunk_size, draw=draw, progress=bar.update
            )

        with bar:
            batch = select_streaming(
                acquisition, chunks, best_f=best_f, round=round, generator=generator, shortlist=scoring.shortlist
            )
    return batch, space.decode(batch.indices), draw


def model_factory_of(model: Callable[..., SynergyModel], features: Features) -> Callable[..., SynergyModel]:
    """``factory(**overrides)``: a fresh model on ``features`` (what Ray workers rebuild and load)."""
    return functools.partial(model, features.drug, features.cell)
