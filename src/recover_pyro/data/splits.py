"""Seeded train / validation / test splits of a screen's experiments.

As in RECOVER, the test set is drawn with its own ``test_seed``, independently of the training ``seed``:
changing ``seed`` reshuffles train/validation but never moves a row into or out of the test set. In every
splitter ``val`` is the fraction of the *non-test* groups that go to validation (for drug-held-out validation of
:func:`unseen_drug_split`: the least fraction of non-test experiments).

Groups: ``"pair"`` keeps all rows of one unordered drug pair (across cell lines and studies) in one part,
so a model is never tested on a pair it saw in another cell line; ``"experiment"`` splits single rows.
Restricting a screen to cell lines or studies is :meth:`Screen.select`'s job, not the splitters'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import numpy as np
import pandas as pd

from recover_pyro.data.screen import Screen
from recover_pyro.errors import EmptySelectionError, closest_names

Group = Literal["pair", "experiment"]


@dataclass
class Split:
    """Integer row indices into ``screen.experiments`` (sorted, int64, pairwise disjoint)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def __post_init__(self) -> None:
        self.train, self.val, self.test = (
            np.sort(np.asarray(p, dtype=np.int64)) for p in (self.train, self.val, self.test)
        )

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name}={value} must lie in [0, 1)")


def _group_codes(experiments: pd.DataFrame, group: Group) -> np.ndarray:
    """``(N,)`` group id per row; ids follow sorted group keys so they do not depend on row order."""
    if group == "experiment":
        return np.arange(len(experiments))
    if group == "pair":
        keys = experiments["drug_a"].astype(str) + "\x00" + experiments["drug_b"].astype(str)
        return pd.factorize(keys, sort=True)[0]
    raise ValueError(f"unknown group {group!r}; choose 'pair' or 'experiment'")


def _draw(groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A ``round(fraction * len(groups))``-subset of the (sorted) ``groups``, drawn with ``seed``."""
    k = int(round(fraction * len(groups)))
    return np.random.default_rng(seed).permutation(groups)[:k]


def _split_rest(codes: np.ndarray, test_mask: np.ndarray, val: float, seed: int, what: str) -> Split:
    """Given the test rows, send a ``val`` fraction of the remaining groups to validation."""
    _check_fraction("val", val)
    rest = np.unique(codes[~test_mask])
    val_mask = np.isin(codes, _draw(rest, val, seed)) & ~test_mask
    train_mask = ~test_mask & ~val_mask
    if not train_mask.any():
        raise ValueError(f"{what}: the split leaves no training rows")
    return Split(np.flatnonzero(train_mask), np.flatnonzero(val_mask), np.flatnonzero(test_mask))


def random_split(
    screen: Screen,
    val: float = 0.2,
    test: float = 0.1,
    seed: int = 0,
    test_seed: int = 0,
    group: Group = "pair",
) -> Split:
    """Random split by groups: ``round(test * n_groups)`` test groups drawn with ``test_seed``, then
    ``round(val * n_rest)`` of the rest for validation drawn with ``seed``."""
    _check_fraction("test", test)
    codes = _group_codes(screen.experiments, group)
    test_mask = np.isin(codes, _draw(np.unique(codes), test, test_seed))
    return _split_rest(codes, test_mask, val, seed, f"{screen.name}: random split")


def unseen_drug_split(
    screen: Screen,
    n_test_drugs: int | None = None,
    test_frac: float = 0.1,
    val: float = 0.2,
    seed: int = 0,
    test_seed: int = 0,
    val_group: Literal["drug", "pair"] = "drug",
) -> Split:
    """Hold out drugs: every experiment containing a held-out drug is a test row.

    ``n_test_drugs`` drugs (default ``max(1, round(test_frac * n))`` of the ``n`` drugs that occur in the
    experiments) are drawn with ``test_seed``.

    Validation mirrors the test protocol by default (``val_group="drug"``): validation drugs, disjoint from
    the test drugs, are drawn in a ``seed``-ed order until the experiments containing one of them make up at
    least a ``val`` fraction of the non-test experiments; those experiments are the validation set, so no
    validation drug is seen in training. Early stopping and every model's held-out noise estimate
    (:mod:`recover_pyro.models.noise`) then measure the error on new drugs, the error the test set asks
    about (validation pairs of seen drugs are optimistic for it: on O'Neil the BNN's 90 % intervals covered
    0.93 of such validation pairs and 0.82 of the unseen-drug test pairs at two of three seeds). ``val_group="pair"`` draws a
    ``val`` fraction of the remaining pairs instead (validation drugs are then seen in training).
    """
    exp = screen.experiments
    drug_a, drug_b = exp["drug_a"].astype(str), exp["drug_b"].astype(str)
    drugs = np.unique(np.concatenate([drug_a, drug_b]))
    if n_test_drugs is None:
        _check_fraction("test_frac", test_frac)
        n_test_drugs = max(1, int(round(test_frac * len(drugs))))
    if not 1 <= n_test_drugs < len(drugs):
        raise ValueError(f"{screen.name}: n_test_drugs={n_test_drugs} must lie in 1..{len(drugs) - 1}")
    held = np.random.default_rng(test_seed).permutation(drugs)[:n_test_drugs]
    test_mask = (drug_a.isin(held) | drug_b.isin(held)).to_numpy()
    what = f"{screen.name}: unseen-drug split holding out {sorted(held)}"
    if val_group == "pair":
        return _split_rest(_group_codes(exp, "pair"), test_mask, val, seed, what)
    if val_group != "drug":
        raise ValueError(f"unknown val_group {val_group!r}; choose 'drug' or 'pair'")
    _check_fraction("val", val)
    val_mask = np.zeros(len(exp), dtype=bool)
    n_rest = int((~test_mask).sum())
    for drug in np.random.default_rng(seed).permutation(np.setdiff1d(drugs, held)):
        if val_mask.sum() >= val * n_rest:
            break
        val_mask |= ~test_mask & ((drug_a == drug) | (drug_b == drug)).to_numpy()
    train_mask = ~test_mask & ~val_mask
    if not train_mask.any():
        raise ValueError(
            f"{what}: validation drug(s) leave no training rows (val={val}); on a screen with this few drugs use "
            "val=0 (no validation) or val_group='pair' (split.val_group=pair)"
        )
    return Split(np.flatnonzero(train_mask), np.flatnonzero(val_mask), np.flatnonzero(test_mask))


def unseen_cell_line_split(
    screen: Screen,
    test_cell_lines: Sequence[str] | None = None,
    n_test: int = 1,
    val: float = 0.2,
    seed: int = 0,
    test_seed: int = 0,
) -> Split:
    """Hold out cell lines: every experiment in a held-out line is a test row.

    ``test_cell_lines`` names them; otherwise ``n_test`` lines occurring in the experiments are drawn
    with ``test_seed``. Validation is a ``val`` fraction of the remaining pairs.
    """
    exp = screen.experiments
    lines = np.unique(exp["cell_line"].astype(str))
    if test_cell_lines is None:
        if not 1 <= n_test < len(lines):
            raise ValueError(
                f"{screen.name}: n_test={n_test} must lie in 1..{len(lines) - 1} ({len(lines)} cell lines)"
            )
        held = list(np.random.default_rng(test_seed).permutation(lines)[:n_test])
    else:
        held = [test_cell_lines] if isinstance(test_cell_lines, str) else list(test_cell_lines)
        for name in held:
            if name not in lines:
                raise EmptySelectionError(
                    f"{screen.source or screen.name}: cell line {name!r} has no "
                    f"experiments; closest: {closest_names(name, lines)}"
                )
    test_mask = exp["cell_line"].astype(str).isin(held).to_numpy()
    return _split_rest(
        _group_codes(exp, "pair"),
        test_mask,
        val,
        seed,
        f"{screen.name}: unseen-cell-line split holding out {sorted(held)}",
    )


SPLITTERS: dict[str, Callable[..., Split]] = {
    "random": random_split,
    "unseen_drug": unseen_drug_split,
    "unseen_cell_line": unseen_cell_line_split,
}


def make_split(screen: Screen, kind: str = "random", **kwargs: Any) -> Split:
    """Dispatch to :data:`SPLITTERS` by ``kind`` (``random``, ``unseen_drug``, ``unseen_cell_line``)."""
    if kind not in SPLITTERS:
        raise ValueError(f"unknown split kind {kind!r}; choose one of {sorted(SPLITTERS)}")
    return SPLITTERS[kind](screen, **kwargs)
