"""The real loop a wet lab runs: measured results so far -> the next plate.

    python -m recover_pyro.recommend measured=[round0.csv] smiles=drugs.csv cell_lines=[MCF7] \\
        out=next_batch.csv +experiment=laplace acquisition=ucb acquisition.q=30

(the command line lives in :mod:`recover_pyro.cli.recommend`; this package is the library function).

Each call fits a fresh model on every measurement given (the project's CSV format, see
:func:`~recover_pyro.data.loaders.save_measurements_csv`, or DrugComb's summary table, detected by its
``block_id`` header), scores every untested unordered pair of the candidate drugs in the chosen cell lines
and writes the next batch as CSV: ``rank, drug_a, drug_b, drug_a_name, drug_b_name, cell_line,
predicted_mean, predicted_std, acquisition_score``. Adding the newly measured CSV to ``measured`` and
running again continues the campaign (the UCB schedule's round is the number of measured files minus one).

Bad rows (unknown drugs, NaN scores, malformed SMILES) raise the loaders' errors naming file, line and
drug. The same (pair, cell line) measured more than once, within or across files, is merged by
``on_duplicate`` (``mean``, logged) or rejected (``raise``). Plates are proposed only in cell lines with
measurements (spelled as in the measured files); the plate file is written atomically, never over an
existing file unless ``overwrite=true``, with text cells that a spreadsheet would run as formulas
neutralised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal, Sequence

import numpy as np
import pandas as pd
import torch

from recover_pyro.acquisition import Acquisition, unique_drugs
from recover_pyro.data.loaders import load_csv, load_drugcomb
from recover_pyro.data.screen import KEY_COLUMNS, Screen
from recover_pyro.data.validation import (
    build_drug_table,
    check_spelling_variants,
    first_fields,
    read_smiles_table,
    sniff_separator,
    spelling_key,
)
from recover_pyro.errors import ConfigValueError, ConflictingMeasurementError, EmptySelectionError, closest_names
from recover_pyro.models.base import SynergyModel

log = logging.getLogger(__name__)

OnDuplicate = Literal["mean", "raise"]
ModelBuilder = Callable[[torch.Tensor, torch.Tensor], SynergyModel]


@dataclass
class Recommendation:
    """The next batch (``table``, ranked) and the screen of everything measured so far."""

    table: pd.DataFrame
    measured: Screen

    def summary(self) -> str:
        t = self.table
        return (
            f"{len(t)} combinations recommended from {self.measured.n_drugs} drugs in "
            f"{t['cell_line'].nunique()} cell line(s) after {len(self.measured)} measured; "
            f"{pd.unique(t[['drug_a', 'drug_b']].to_numpy().ravel()).size} unique drugs; "
            f"predicted mean {t['predicted_mean'].mean():.3g} (best {t['predicted_mean'].max():.3g}), "
            f"mean predicted std {t['predicted_std'].mean():.3g}"
        )


def load_measured(path: str | Path, smiles: str | Path, score: str, on_duplicate: OnDuplicate = "mean") -> Screen:
    """One measured file: DrugComb summary table if its first field is ``block_id``, else our CSV.

    Replicates within the file are averaged (``on_duplicate="mean"``) or rejected (``"raise"``).
    """
    fields = first_fields(path, sniff_separator(path))
    if fields and fields[0].lower() == "block_id":
        return load_drugcomb(path, smiles, scores=(score,), on_invalid="raise", aggregate=on_duplicate)
    return load_csv(path, smiles, score_columns=[score], aggregate=on_duplicate)


def merge_measurements(screens: Sequence[Screen], score: str, on_duplicate: OnDuplicate = "mean") -> pd.DataFrame:
    """Stack measured experiments of several files into one row per unordered (pair, cell line).

    Replicates within a file were already merged by its loader; across files ``on_duplicate="mean"``
    averages (weighted by replicate count, logged) and ``"raise"`` rejects any repeat with
    :class:`ConflictingMeasurementError` naming both files and the drugs.
    """
    frames = [s.experiments.assign(_file=s.source) for s in screens]
    rows = pd.concat(frames, ignore_index=True)
    check_spelling_variants(rows, "cell_line", "cell line", ", ".join(str(s.source) for s in screens))
    rows["study"] = ""  # a repeat in a later round is the same experiment, whatever the file calls it
    key = ["drug_a", "drug_b", "cell_line"]
    dup = rows.duplicated(key, keep=False)
    if dup.any():
        first = rows[dup].sort_values(key).head(2)
        files = first["_file"].tolist()
        if on_duplicate == "raise":
            a, b, cell = first.iloc[0][key]
            raise ConflictingMeasurementError(
                f"({a}, {b}) in {cell} is measured more than once ({files[0]} and {files[1]}); "
                f"set on_duplicate=mean to average",
                file=files[1],
                drug=f"{a} + {b}",
            )
        log.warning("%d measured rows repeat a (pair, cell line); averaging them (on_duplicate=mean)", int(dup.sum()))
    rows["_w"] = rows[score] * rows["n_replicates"]
    grouped = rows.groupby(key, sort=True)
    merged = grouped[["_w", "n_replicates"]].sum().reset_index()
    merged[score] = merged["_w"] / merged["n_replicates"]
    merged["study"] = "measured"
    return merged[[*KEY_COLUMNS, "n_replicates", score]]


def candidate_screen(
    measured: Sequence[Screen],
    smiles: str | Path,
    cell_lines: Sequence[str],
    score: str,
    on_duplicate: OnDuplicate = "mean",
) -> Screen:
    """A :class:`Screen` of every candidate drug (the SMILES table) and cell line, holding the measurements."""
    table = read_smiles_table(smiles)
    measured_drugs = set().union(*(set(s.drugs.index) for s in measured)) if measured else set()
    drugs = build_drug_table(table, set(table["drug_id"]) | measured_drugs, smiles)
    experiments = (
        merge_measurements(measured, score, on_duplicate)
        if measured
        else pd.DataFrame(columns=[*KEY_COLUMNS, "n_replicates", score])
    )
    cells = sorted(set(cell_lines) | set(experiments["cell_line"]))
    screen = Screen(
        drugs=drugs,
        cell_lines=pd.DataFrame({"tissue": ""}, index=pd.Index(cells)),
        experiments=experiments,
        score_columns=(score,),
        name="measured",
        source=str(smiles),
    )
    return screen


def check_cell_lines(wanted: Iterable[str], experiments: pd.DataFrame, files: Sequence[str]) -> list[str]:
    """``wanted`` stripped; each must have measurements in ``experiments`` (column ``cell_line``).

    A model knows nothing about a cell line without a single measurement, so a plate ranked there would only
    look plausible. Raises :class:`EmptySelectionError` naming the closest measured spelling.
    """
    measured = pd.unique(experiments["cell_line"].astype(str))
    by_key = dict(zip(spelling_key(pd.Series(measured)), measured))
    out = []
    for name in wanted:
        clean = str(name).strip()
        if clean not in set(measured):
            same = by_key.get(spelling_key(pd.Series([clean])).iloc[0])
            hint = (
                f"the measured files spell it {same!r}"
                if same is not None
                else f"closest measured: {closest_names(clean, measured) or list(measured)[:10]}"
            )
            raise EmptySelectionError(
                f"cell line {str(name)!r} has no measurement in the measured files ({hint}); use the spelling "
                "of the measured files in cell_lines, or measure a first plate in that cell line",
                file=", ".join(map(str, files)),
            )
        out.append(clean)
    return out


def recommend(
    measured_paths: Sequence[str | Path],
    smiles: str | Path,
    cell_lines: Sequence[str],
    score: str,
    model: ModelBuilder,
    acquisition: Acquisition,
    featurize: Callable[[Screen], object],
    num_samples: int = 100,
    on_duplicate: OnDuplicate = "mean",
    seed: int = 0,
) -> Recommendation:
    """Fit ``model`` on all measurements and choose ``acquisition.q`` untested combinations.

    Args:
        measured_paths: measurement files so far (at least one; order = campaign rounds).
        smiles: candidate drug table (id, optional name, SMILES); measured drugs must be in it.
        cell_lines: cell lines to propose experiments in.
        score: the score column to optimise (higher = more synergistic).
        model: ``(drug_features (D, F), cell_features (C, G)) -> SynergyModel``.
        featurize: ``Screen -> Features`` (e.g. :func:`recover_pyro.data.featurize.featurize`).
    """
    if not measured_paths:
        raise ValueError("recommend needs at least one measured file (a first plate chosen by design)")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigValueError("num_samples", f"must be an integer >= 1, got {num_samples!r}")  # before the fit
    screens = [load_measured(p, smiles, score, on_duplicate) for p in measured_paths]
    merged = pd.concat([s.experiments for s in screens], ignore_index=True)
    cell_lines = check_cell_lines(cell_lines, merged, [str(p) for p in measured_paths])
    screen = candidate_screen(screens, smiles, cell_lines, score, on_duplicate)
    features = featurize(screen)
    pool = screen.all_candidates(cell_lines=list(cell_lines))
    tested = pool.merge(screen.experiments[["drug_a", "drug_b", "cell_line"]], how="left", indicator=True)
    pool = pool[(tested["_merge"] == "left_only").to_numpy()].reset_index(drop=True)
    if pool.empty:
        raise EmptySelectionError("every candidate combination has been measured already", file=str(smiles))

    if acquisition.q > len(pool):
        log.warning(
            "acquisition.q=%d exceeds the %d untested candidate combinations; the plate holds %d rows",
            acquisition.q,
            len(pool),
            len(pool),
        )
    fitted = model(features.drug, features.cell)  # type: ignore[attr-defined]
    fitted.fit(screen.to_pairs(score))
    candidates = screen.to_pairs(score, experiments=pool)
    predictive = fitted.predict(candidates, num_samples=num_samples).cpu()
    drugs = torch.stack([candidates.drug_a, candidates.drug_b], 1)
    batch = acquisition.select(
        predictive.f,
        candidate_drugs=drugs,
        best_f=float(screen.experiments[score].max()),
        round=len(measured_paths) - 1,
        generator=torch.Generator().manual_seed(seed),
    )
    idx = batch.indices.numpy()
    names = screen.drugs["name"]
    chosen = pool.iloc[idx]
    table = pd.DataFrame(
        {
            "rank": np.arange(1, len(idx) + 1),
            "drug_a": chosen["drug_a"].to_numpy(),
            "drug_b": chosen["drug_b"].to_numpy(),
            "drug_a_name": chosen["drug_a"].map(names).to_numpy(),
            "drug_b_name": chosen["drug_b"].map(names).to_numpy(),
            "cell_line": chosen["cell_line"].to_numpy(),
            "predicted_mean": predictive.mean[idx].numpy(),
            "predicted_std": predictive.std[idx].numpy(),
            "acquisition_score": batch.scores.numpy(),
        }
    )
    log.info("batch holds %d unique drugs", unique_drugs(batch.indices, drugs))
    return Recommendation(table=table, measured=screen)
