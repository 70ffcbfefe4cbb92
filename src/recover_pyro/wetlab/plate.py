"""The next plate: fit a model on every measured file and rank the untested candidates (:func:`recommend`).

    recover-recommend measured=[round0.csv] smiles=drugs.csv cell_lines=[MCF7] score=comboscore \\
        +experiment=laplace acquisition=ucb acquisition.q=30 out=plate1.csv

(the command line lives in :mod:`recover_pyro.cli.recommend`; this module is the library function).

Each call fits a fresh model on every measurement given (:mod:`recover_pyro.wetlab.measured`), scores every
candidate (pair, cell line) that the lab allows (:mod:`recover_pyro.wetlab.candidates`) and returns the next
batch, ranked: ``rank, drug_a, drug_b, drug_a_name, drug_b_name, cell_line, predicted_mean, predicted_std,
acquisition_score``. Adding the measured score as a column to the plate and passing it back with the
earlier files continues the campaign (the UCB schedule's round is the number of measured files minus one).

Bad rows (unknown drugs, NaN scores, malformed SMILES) raise the loaders' errors naming file, line and
drug. The same (pair, cell line) measured more than once, within or across files, is merged by
``on_duplicate`` (``mean``, logged) or rejected (``raise``). Plates are proposed only in cell lines with
measurements (spelled as in the measured files). A measured, tried or excluded pair is never proposed: the
plate is checked against them before it is returned.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from recover_pyro.acquisition import Acquisition, unique_drugs
from recover_pyro.data.featurize import Features
from recover_pyro.data.featurize import featurize as morgan_features
from recover_pyro.data.screen import KEY_COLUMNS, Screen
from recover_pyro.data.validation import (
    OnInvalid,
    build_drug_table,
    read_smiles_table,
    resolve_id_column,
    spelling_key,
)
from recover_pyro.errors import (
    ConfigValueError,
    EmptySelectionError,
    TooFewMeasurementsError,
    closest_names,
    option_spelling,
)
from recover_pyro.models.base import SynergyModel
from recover_pyro.records.files import atomic_write_csv, check_output_file, spreadsheet_safe
from recover_pyro.wetlab.candidates import (
    PAIR_COLUMNS,
    CandidateRules,
    PairFiles,
    as_paths,
    build_pool,
    check_same_molecules,
    read_pairs,
    resolve_drugs,
)
from recover_pyro.wetlab.library import Scoring, choose_from_library, library_size, library_space, model_factory_of
from recover_pyro.wetlab.measured import (
    OnDuplicate,
    check_enough,
    check_scales,
    load_measured,
    merge_measurements,
    tried_pairs,
)

log = logging.getLogger(__name__)

ModelBuilder = Callable[[torch.Tensor, torch.Tensor], SynergyModel]
PathLike = str | Path

#: How ``recommend`` spells the loaders' keywords in advice (its own keywords are its options).
RECOMMEND_SPELLING: dict[str, str | None] = {
    "aggregate": "on_duplicate",
    "header": None,
    "score_columns": None,
    "root": None,
}
#: A plate whose mean predicted sd exceeds this multiple of the measured scores' sd gets a warning: the model is
#: then still near its prior (the head-only BNN ``normal`` after 60 ALMANAC MCF7 pairs: ~12x; the default BNN and the
#: small-net ensemble: ~1x, docs/benchmarks.md).
WIDE_PLATE_SD = 3.0
PLATE_COLUMNS = [
    "rank",
    "drug_a",
    "drug_b",
    "drug_a_name",
    "drug_b_name",
    "cell_line",
    "predicted_mean",
    "predicted_std",
    "acquisition_score",
]


@dataclass
class Recommendation:
    """The next plate and what it was chosen from.

    Attributes:
        table: the plate, ranked (columns :data:`PLATE_COLUMNS`), ``(q, 9)``.
        measured: the screen of everything measured so far (and every candidate drug).
        n_candidates: how many untested (pair, cell line) candidates were scored.
    """

    table: pd.DataFrame
    measured: Screen
    n_candidates: int = 0

    def summary(self) -> str:
        """One line: plate size, drugs, cell lines, candidates and predictions."""
        t = self.table
        return (
            f"{len(t)} combinations recommended from {self.measured.n_drugs} drugs in "
            f"{t['cell_line'].nunique()} cell line(s) after {len(self.measured)} measured "
            f"({self.n_candidates} untested candidates scored); "
            f"{pd.unique(t[['drug_a', 'drug_b']].to_numpy().ravel()).size} unique drugs; "
            f"predicted mean {t['predicted_mean'].mean():.3g} (best {t['predicted_mean'].max():.3g}), "
            f"mean predicted std {t['predicted_std'].mean():.3g}"
        )

    def to_text(self, rows: int | None = None, width: int = 80) -> str:
        """The plate as a table that fits ``width`` columns (a terminal): rank, drug names, cell line,
        predicted mean and sd; long names are cut with ``…``. ``rows``: only the first rows."""
        t = self.table if rows is None else self.table.head(rows)
        cells = t["cell_line"].astype(str)
        cell_w = int(min(max(9, cells.str.len().max() if len(t) else 0), 12))
        name_w = max(8, (width - 34 - cell_w) // 2)

        def cut(text: object, w: int) -> str:
            text = str(text)
            return text if len(text) <= w else text[: w - 1] + "…"

        lines = [
            f"{'rank':>4}  {'drug A':<{name_w}}  {'drug B':<{name_w}}  {'cell line':<{cell_w}}  "
            f"{'pred. mean':>10}  {'pred. sd':>10}"
        ]
        for row in t.itertuples(index=False):
            lines.append(
                f"{row.rank:>4}  {cut(row.drug_a_name, name_w):<{name_w}}  {cut(row.drug_b_name, name_w):<{name_w}}  "
                f"{cut(row.cell_line, cell_w):<{cell_w}}  {row.predicted_mean:>10.3g}  {row.predicted_std:>10.3g}"
            )
        return "\n".join(lines)

    def save(self, path: PathLike, overwrite: bool = False) -> Path:
        """Write the plate as CSV, atomically, never over an existing file unless ``overwrite``; text cells
        that a spreadsheet would run as formulas are neutralised. Returns the path.

        The lab adds its measured score as a column (named like ``score``) and passes the file back to
        :func:`recommend` with the earlier measured files.
        """
        path = check_output_file(path, overwrite, option_name="overwrite", key="path")
        return atomic_write_csv(path, spreadsheet_safe(self.table))


def candidate_screen(
    measured: Sequence[Screen],
    smiles: PathLike,
    cell_lines: Sequence[str],
    score: str,
    on_duplicate: OnDuplicate = "mean",
    drug_id_column: str | None = None,
) -> Screen:
    """A :class:`Screen` of every candidate drug (the SMILES table) and cell line, holding the measurements."""
    table = read_smiles_table(smiles, id_column=drug_id_column)
    measured_drugs = set().union(*(set(s.drugs.index) for s in measured)) if measured else set()
    drugs = build_drug_table(table, set(table["drug_id"]) | measured_drugs, smiles)
    experiments = (
        merge_measurements(measured, score, on_duplicate)
        if measured
        else pd.DataFrame(columns=[*KEY_COLUMNS, "n_replicates", score])
    )
    cells = sorted(set(cell_lines) | set(experiments["cell_line"]))
    return Screen(
        drugs=drugs,
        cell_lines=pd.DataFrame({"tissue": ""}, index=pd.Index(cells)),
        experiments=experiments,
        score_columns=(score,),
        name="measured",
        source=str(smiles),
    )


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


def _as_list(paths: Sequence[PathLike] | PathLike) -> list[PathLike]:
    return [paths] if isinstance(paths, (str, Path)) else list(paths)


def recommend(
    measured_paths: Sequence[PathLike] | PathLike,
    smiles: PathLike,
    cell_lines: Sequence[str],
    score: str,
    model: ModelBuilder,
    acquisition: Acquisition,
    featurize: Callable[[Screen], Features] = morgan_features,
    num_samples: int = 100,
    on_duplicate: OnDuplicate = "mean",
    seed: int = 0,
    *,
    candidates: PairFiles = None,
    exclude: PairFiles = None,
    leave_out: Sequence[object] = (),
    max_per_drug: int | None = None,
    on_invalid: OnInvalid = "raise",
    on_unknown_drug: OnInvalid = "raise",
    drug_id_column: str | None = None,
    check_scale: bool = True,
    scoring: Scoring | None = None,
) -> Recommendation:
    """Fit ``model`` on all measurements and choose ``acquisition.q`` untested combinations.

    Args:
        measured_paths: measurement files so far, one per round (order = campaign rounds): the project's CSV
            (a plate with the measured score added as a column is one) or DrugComb summary tables.
        smiles: candidate drug table (id, optional name, SMILES); measured drugs must be in it.
        cell_lines: cell lines to propose experiments in (each needs measurements).
        score: the score column to optimise (higher = more synergistic).
        model: ``(drug_features (D, F), cell_features (C, G)) -> SynergyModel``.
        acquisition: the strategy; its ``q`` is the plate size.
        featurize: ``Screen -> Features`` (default: :func:`recover_pyro.data.featurize.featurize`).
        num_samples: posterior samples S per candidate.
        on_duplicate: repeats of one (pair, cell line): ``"mean"`` (logged) or ``"raise"``.
        seed: randomness of the stochastic strategies (Thompson, random).
        candidates: pair file(s): only their pairs may be proposed.
        exclude: pair file(s): their pairs are never proposed (failed, infeasible, a previous plate).
        leave_out: drugs (ids or names) never proposed (e.g. out of stock); their measurements are used.
        max_per_drug: per-plate drug budget, at most this many wells per drug (``None``: the acquisition's
            own ``max_per_drug``).
        on_invalid: rows with a missing or non-numeric score: ``"raise"``, or ``"drop"`` (a failed well:
            not fitted on, never proposed again).
        on_unknown_drug: rows naming a drug outside the drug table: ``"raise"`` or ``"drop"``.
        drug_id_column: the drug table's column holding the ids of the measured files (``None``: detected).
        check_scale: refuse measured files on different score scales (:func:`~recover_pyro.wetlab.measured.check_scales`).
        scoring: how the candidate space is scored: listed at once, streamed in chunks above
            ``scoring.stream_above`` candidates, or on a Ray cluster (:class:`~recover_pyro.wetlab.library.Scoring`;
            default ``Scoring()``). The plate is the same either way where both fit.

    Raises:
        ScreenDataError: a subclass naming the file, line, drug or option at fault (see
            :mod:`recover_pyro.errors`), before anything is fitted.
    """
    with option_spelling(RECOMMEND_SPELLING):
        return _recommend(
            _as_list(measured_paths),
            smiles,
            cell_lines,
            score,
            model,
            acquisition,
            featurize,
            num_samples,
            on_duplicate,
            seed,
            CandidateRules(candidates=candidates, exclude=exclude, leave_out=list(leave_out)),
            max_per_drug,
            on_invalid,
            on_unknown_drug,
            drug_id_column,
            check_scale,
            scoring,
        )


def _recommend(
    paths: list[PathLike],
    smiles: PathLike,
    cell_lines: Sequence[str],
    score: str,
    model: ModelBuilder,
    acquisition: Acquisition,
    featurize: Callable[[Screen], Features],
    num_samples: int,
    on_duplicate: OnDuplicate,
    seed: int,
    rules: CandidateRules,
    max_per_drug: int | None,
    on_invalid: OnInvalid,
    on_unknown_drug: OnInvalid,
    drug_id_column: str | None,
    check_scale: bool,
    scoring: Scoring | None = None,
) -> Recommendation:
    """:func:`recommend` with the candidate rules gathered (advice spelled as recommend's options)."""
    if not paths:
        raise TooFewMeasurementsError(
            "recommend needs at least one measured file (a first plate chosen by design) in measured"
        )
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigValueError("num_samples", f"must be an integer >= 1, got {num_samples!r}")  # before the fit
    if max_per_drug is not None:
        acquisition = dataclasses.replace(acquisition, max_per_drug=max_per_drug)
    files = [str(p) for p in paths]
    tried = pd.concat([tried_pairs(p) for p in paths], ignore_index=True)
    id_column = resolve_id_column(smiles, pd.concat([tried["drug_a"], tried["drug_b"]]).unique(), drug_id_column)
    screens = [
        load_measured(p, smiles, score, on_duplicate, on_invalid, on_unknown_drug, drug_id_column=id_column)
        for p in paths
    ]
    check_scales(screens, score, check_scale)
    merged = pd.concat([s.experiments for s in screens], ignore_index=True)
    cell_lines = check_cell_lines(cell_lines, merged, files)
    screen = candidate_screen(screens, smiles, cell_lines, score, on_duplicate, drug_id_column=id_column)
    check_enough(screen.experiments, score, files)
    scoring = scoring or Scoring()
    best_f = float(screen.experiments[score].max())
    generator = torch.Generator().manual_seed(seed)
    if not as_paths(rules.candidates) and scoring.streams(library_size(screen, list(cell_lines))):
        return _recommend_from_library(
            screen, list(cell_lines), score, model, acquisition, featurize, num_samples, tried, rules, scoring,
            best_f, len(paths) - 1, seed, smiles,
        )  # fmt: skip
    pool = build_pool(
        screen.all_candidates(cell_lines=list(cell_lines)),
        screen.drugs,
        screen.experiments,
        tried,
        rules,
        source=", ".join([str(smiles), *files]),
    )
    check_same_molecules(pool.pairs, screen.drugs, smiles)
    untested = pool.pairs
    _warn_small_pool(acquisition.q, len(untested))

    features = featurize(screen)
    fitted = model(features.drug, features.cell)
    fitted.fit(screen.to_pairs(score))
    candidates = screen.to_pairs(score, experiments=untested)
    predictive = fitted.predict(candidates, num_samples=num_samples).cpu()
    drugs = torch.stack([candidates.drug_a, candidates.drug_b], 1)
    batch = acquisition.select(
        predictive.f, candidate_drugs=drugs, best_f=best_f, round=len(paths) - 1, generator=generator
    )
    idx = batch.indices.numpy()
    chosen = untested.iloc[idx]
    _check_untested(chosen, screen.experiments, pool.forbidden)
    log.info("batch holds %d unique drugs", unique_drugs(batch.indices, drugs))
    table = _plate_table(chosen, screen, predictive.mean[idx], predictive.std[idx], batch.scores)
    _warn_wide_plate(table, screen.experiments[score])
    return Recommendation(table=table, measured=screen, n_candidates=len(untested))


def _recommend_from_library(
    screen: Screen,
    cell_lines: list[str],
    score: str,
    model: ModelBuilder,
    acquisition: Acquisition,
    featurize: Callable[[Screen], Features],
    num_samples: int,
    tried: pd.DataFrame,
    rules: CandidateRules,
    scoring: Scoring,
    best_f: float,
    round: int,
    seed: int,
    smiles: PathLike,
) -> Recommendation:
    """:func:`recommend` over a numbered, streamed candidate space (:mod:`recover_pyro.wetlab.library`)."""
    excluded = [read_pairs(p, screen.drugs, "exclude") for p in as_paths(rules.exclude)]
    gone = pd.concat(
        [screen.experiments[PAIR_COLUMNS], tried[PAIR_COLUMNS], *excluded, pd.DataFrame(columns=PAIR_COLUMNS)],
        ignore_index=True,
    )
    left_out = resolve_drugs(list(rules.leave_out), screen.drugs, "leave_out")
    space, forbidden = library_space(screen, cell_lines, gone, left_out)
    allowed = [d for d in screen.drugs.index if d not in set(left_out)]
    check_same_molecules(pd.DataFrame({"drug_a": allowed, "drug_b": allowed}), screen.drugs, smiles)
    n_candidates = space.count()
    if n_candidates == 0:
        raise EmptySelectionError(
            "no candidate combination is left to propose; shorten exclude or leave_out, or add drugs to the drug table",
            file=str(smiles),
        )
    _warn_small_pool(acquisition.q, n_candidates)
    features = featurize(screen)
    fitted = model(features.drug, features.cell)
    fitted.fit(screen.to_pairs(score))
    batch, pairs, draw = choose_from_library(
        fitted, model_factory_of(model, features), space, acquisition,
        num_samples=num_samples, best_f=best_f, round=round, seed=seed, scoring=scoring,
    )  # fmt: skip
    predictive = fitted.predict(pairs, num_samples=num_samples, **({} if draw is None else {"draw": draw})).cpu()
    chosen = pd.DataFrame(
        {
            "drug_a": screen.drugs.index[pairs.drug_a.numpy()],
            "drug_b": screen.drugs.index[pairs.drug_b.numpy()],
            "cell_line": screen.cell_lines.index[pairs.cell.numpy()],
        }
    )
    _check_untested(chosen, screen.experiments, forbidden)
    log.info(
        "batch holds %d unique drugs",
        unique_drugs(torch.arange(len(chosen)), torch.stack([pairs.drug_a, pairs.drug_b], 1)),
    )
    table = _plate_table(chosen, screen, predictive.mean, predictive.std, batch.scores)
    _warn_wide_plate(table, screen.experiments[score])
    return Recommendation(table=table, measured=screen, n_candidates=n_candidates)


def _warn_small_pool(q: int, n: int) -> None:
    if q > n:
        log.warning("acquisition.q=%d exceeds the %d untested candidate combinations; the plate holds %d rows", q, n, n)


def _warn_wide_plate(table: pd.DataFrame, measured: pd.Series) -> None:
    """Warn when the plate's mean predicted sd is over :data:`WIDE_PLATE_SD` times the measured scores' sd: the
    ranking is then mostly the model's prior, and a UCB plate mostly exploration."""
    spread = float(measured.std())
    if not len(table) or not spread > 0:
        return
    ratio = float(table["predicted_std"].mean()) / spread
    if ratio > WIDE_PLATE_SD:
        log.warning(
            "the plate's predicted sd is %.1fx the sd of the %d measured scores (%.3g): the model is still near its "
            "prior, so the plate is mostly exploration. Measure it and recommend again, or fit a model calibrated on "
            "a first round (the default model, named +experiment=normal_gp_identity_ucb; docs/benchmarks.md)",
            ratio,
            len(measured),
            spread,
        )


def _plate_table(
    chosen: pd.DataFrame, screen: Screen, mean: torch.Tensor, std: torch.Tensor, scores: torch.Tensor
) -> pd.DataFrame:
    """The plate (:data:`PLATE_COLUMNS`) of the ``chosen`` ``drug_a, drug_b, cell_line`` rows, in pick order."""
    names = screen.drugs["name"]
    return pd.DataFrame(
        {
            "rank": np.arange(1, len(chosen) + 1),
            "drug_a": chosen["drug_a"].to_numpy(),
            "drug_b": chosen["drug_b"].to_numpy(),
            "drug_a_name": chosen["drug_a"].map(names).to_numpy(),
            "drug_b_name": chosen["drug_b"].map(names).to_numpy(),
            "cell_line": chosen["cell_line"].to_numpy(),
            "predicted_mean": mean.numpy(),
            "predicted_std": std.numpy(),
            "acquisition_score": scores.numpy(),
        }
    )


def _check_untested(chosen: pd.DataFrame, measured: pd.DataFrame, forbidden: pd.DataFrame) -> None:
    """The last guard: no chosen (pair, cell line) is measured, tried or excluded (a bug if one is)."""
    keys = pd.MultiIndex.from_frame(chosen[PAIR_COLUMNS])
    for what, rows in (("measured", measured), ("measured, tried or excluded", forbidden)):
        clash = keys.isin(pd.MultiIndex.from_frame(rows[PAIR_COLUMNS])) if len(rows) else np.zeros(len(keys), bool)
        if clash.any():
            raise RuntimeError(f"internal error: the plate proposes {what} pairs {list(keys[clash])[:3]}")
