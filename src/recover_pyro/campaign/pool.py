"""The candidates of a simulated campaign: the screen's measured experiments in the chosen cell lines and
studies, their hidden scores, and what lies outside the pool (for pretraining)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from recover_pyro.data.featurize import Features
from recover_pyro.data.screen import Pairs, Screen
from recover_pyro.errors import EmptySelectionError, closest_names

log = logging.getLogger(__name__)


@dataclass
class Pool:
    """The candidates of a campaign and their hidden scores.

    Attributes:
        experiments: ``N`` pool rows of ``screen.experiments`` (reset index = pool index).
        pairs: ``(N,)`` encoded candidates with ``y`` = measured score.
        outside: encoded experiments of the screen outside the pool (for pretraining), ``y`` measured.
        drugs: ``(N, 2)`` long drug indices of each candidate.
        digest: hash of keys and scores, to recognise the same pool when resuming.
    """

    experiments: pd.DataFrame
    pairs: Pairs
    outside: Pairs
    drugs: torch.Tensor
    digest: str

    @property
    def y(self) -> torch.Tensor:
        assert self.pairs.y is not None
        return self.pairs.y

    def __len__(self) -> int:
        return len(self.pairs)


def build_pool(
    screen: Screen,
    features: Features,
    score: str,
    cell_lines: Sequence[str] | None,
    studies: Sequence[str] | None = None,
) -> Pool:
    """Pool = experiments of ``screen`` in ``cell_lines`` and ``studies`` (default: all) with a finite ``score``."""
    if score not in screen.score_columns:
        raise ValueError(
            f"score {score!r} is not a score column of {screen.name}; choose one of {list(screen.score_columns)}"
        )
    if list(features.drug_ids) != list(screen.drugs.index) or list(features.cell_lines) != list(
        screen.cell_lines.index
    ):
        raise ValueError(
            f"features do not match {screen.name}: build them with featurize() on this screen "
            "(same drug and cell-line order)"
        )
    exp = screen.experiments
    finite = np.isfinite(exp[score].to_numpy(dtype=np.float64))
    if not finite.all():
        log.warning(
            "%s: %d experiments without a finite %r are left out of the campaign",
            screen.name,
            int((~finite).sum()),
            score,
        )
    in_pool = np.ones(len(exp), dtype=bool)
    for column, names, what, known in (
        ("cell_line", cell_lines, "cell line", screen.cell_lines.index),
        ("study", studies, "study", pd.Index(exp["study"].unique())),
    ):
        if names is None:
            continue
        for name in names:
            if name not in known:
                raise EmptySelectionError(
                    f"{screen.source or screen.name}: pool {what} {name!r} is not in this "
                    f"screen; closest: {closest_names(name, known)}"
                )
        in_pool &= exp[column].isin(list(names)).to_numpy()
    rows = exp[in_pool & finite].reset_index(drop=True)
    if rows.empty:
        raise EmptySelectionError(
            f"{screen.name}: no experiments with a {score!r} score in cell lines {cell_lines} and studies {studies}"
        )
    pairs = screen.to_pairs(score, experiments=rows)
    keys = rows[["drug_a", "drug_b", "cell_line", "study", score]].to_csv(index=False)
    return Pool(
        experiments=rows,
        pairs=pairs,
        outside=screen.to_pairs(score, experiments=exp[~in_pool & finite]),
        drugs=torch.stack([pairs.drug_a, pairs.drug_b], dim=1),
        digest=hashlib.sha256(keys.encode()).hexdigest(),
    )
