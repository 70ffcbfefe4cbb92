"""Small hand-made labs for the wet-lab loop: six drugs, one measured plate, a tiny model."""

from __future__ import annotations

import functools
from pathlib import Path

from recover_pyro import recommend
from recover_pyro.acquisition import UCB
from recover_pyro.data import featurize as fz
from recover_pyro.models.baselines import DeterministicModel, TrainConfig
from recover_pyro.models.predictor import RecoverPredictor

DRUGS = {
    "A": ("ethanol", "CCO"),
    "B": ("phenol", "c1ccccc1O"),
    "C": ("acetic acid", "CC(=O)O"),
    "D": ("triethylamine", "CCN(CC)CC"),
    "E": ("cyclohexanol", "OC1CCCCC1"),
    "F": ("isopropanol", "CC(C)O"),
    "G": ("propanol", "CCCO"),
}
PLATE = [
    ("A", "B", 1.0),
    ("A", "C", 3.0),
    ("B", "C", -2.0),
    ("C", "D", 0.5),
    ("D", "E", 2.5),
    ("A", "E", -1.0),
    ("B", "D", 4.0),
    ("E", "F", 1.5),
]
TINY_NET = functools.partial(RecoverPredictor, drug_hidden=(8,), merge_dim=4, merge_rank=2, head_hidden=(4,))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def drug_table(folder: Path, extra: dict[str, tuple[str, str]] | None = None, name: str = "drugs.csv") -> Path:
    rows = {**DRUGS, **(extra or {})}
    body = "".join(f"{k},{n},{s}\n" for k, (n, s) in rows.items())
    return write(folder / name, "drug_id,name,smiles\n" + body)


def measured(
    folder: Path, rows: list[tuple[str, str, object]] | None = None, name: str = "round0.csv", cell: str = "MCF7"
) -> Path:
    body = "".join(f"{a},{b},{cell},{y}\n" for a, b, y in (PLATE if rows is None else rows))
    return write(folder / name, "drug_a,drug_b,cell_line,synergy\n" + body)


def tiny_recommend(paths, smiles, cell_lines=("MCF7",), q: int = 3, fn=None, **kw):
    """``recommend`` (or ``fn``) with a 2-epoch deterministic net (seconds), UCB of batch ``q``."""
    model = functools.partial(DeterministicModel, predictor=TINY_NET, training=TrainConfig(epochs=2, batch_size=8))
    acquisition = kw.pop("acquisition", UCB(q=q))
    return (fn or recommend)(
        paths,
        smiles,
        list(cell_lines),
        "synergy",
        model=model,
        acquisition=acquisition,
        featurize=functools.partial(fz.featurize, cache_dir=None),
        num_samples=4,
        **kw,
    )


def keys(frame) -> set[tuple[str, str]]:
    """Unordered pairs of a plate or measured table."""
    return {tuple(sorted(p)) for p in zip(frame["drug_a"].astype(str), frame["drug_b"].astype(str))}
