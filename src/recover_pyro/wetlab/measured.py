"""Measured files in: one reader per format, merged rounds, and the checks a model needs before it ranks a plate.

A measured file is one round of the lab's results. Its format is detected at one point,
:func:`measured_format` (a new format, e.g. dose-response blocks, is one more entry there and in
:data:`READERS`):

* ``drugcomb``: DrugComb's summary table (first field ``block_id``), read by
  :func:`~recover_pyro.data.loaders.load_drugcomb`;
* ``blocks``: raw dose-response blocks (:func:`~recover_pyro.data.blocks.is_block_file`), each scored by
  SynergyFinder 3's rules (:func:`~recover_pyro.data.synergy.load_block_measurements`) into one
  measurement of ``score`` (``synergy_zip``, ``synergy_bliss``, ``synergy_hsa``, ``synergy_loewe``); for
  viability data or DrugComb's 2.x rules run ``recover-synergy`` first and pass its output;
* ``csv``: the project's CSV (``drug_a, drug_b, cell_line`` and the score column; a plate written by
  ``recommend`` with the measured score added as a column is one), read by
  :func:`~recover_pyro.data.loaders.load_csv`.

Before a fit, :func:`check_scales` refuses files whose scores are on different scales (a round exported as
fractions beside one in percent) and :func:`check_enough` refuses too few or constant measurements.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import pandas as pd

from recover_pyro.data.blocks import block_pairs, is_block_file
from recover_pyro.data.loaders import CSV_COLUMNS, load_csv, load_drugcomb
from recover_pyro.data.synergy import load_block_measurements, score_column
from recover_pyro.data.screen import KEY_COLUMNS, Screen, canonical_pair
from recover_pyro.data.validation import OnInvalid, check_spelling_variants, first_fields, read_table, sniff_separator
from recover_pyro.errors import (
    ConfigValueError,
    ConflictingMeasurementError,
    MissingColumnsError,
    ScaleMismatchError,
    TooFewMeasurementsError,
    closest_names,
    option,
)

log = logging.getLogger(__name__)

OnDuplicate = Literal["mean", "raise"]
MeasuredFormat = Literal["csv", "drugcomb", "blocks"]
PathLike = str | Path

#: Fewest measured (pair, cell line) combinations a model is fitted on: with fewer, its hold-out set for early
#: stopping and the noise estimate is empty and the plate is noise.
MIN_MEASUREMENTS = 5
#: Below this many measurements the plate is proposed with a warning (its ranking is close to the prior's).
FEW_MEASUREMENTS = 20
#: Files with at least this many measurements take part in the scale check.
MIN_SCALE_ROWS = 5
#: Largest ratio of two files' robust score scales accepted without ``check_scale=false``; fractions next to
#: percentages differ by 100.
MAX_SCALE_RATIO = 10.0


def measured_format(path: PathLike) -> MeasuredFormat:
    """The format of the measured file ``path`` (see the module docstring); the one detection point."""
    if is_block_file(path):  # first: raw dose-response files start with block_id too
        return "blocks"
    fields = first_fields(path, sniff_separator(path))
    if fields and fields[0].lower() == "block_id":
        return "drugcomb"
    return "csv"


def _read_drugcomb(
    path: PathLike, smiles: PathLike, score: str, on_duplicate: OnDuplicate, on_invalid: OnInvalid, **kw: object
) -> Screen:
    return load_drugcomb(
        path,
        smiles,
        scores=(score,),
        on_invalid=on_invalid,
        aggregate=on_duplicate,
        on_unknown_drug=kw["on_unknown_drug"],  # type: ignore[arg-type]
    )


def _read_csv(
    path: PathLike, smiles: PathLike, score: str, on_duplicate: OnDuplicate, on_invalid: OnInvalid, **kw: object
) -> Screen:
    fields = first_fields(path, sniff_separator(path))
    if score not in fields and "drug_a" in fields:  # a header without the score: name the option that picks it
        others = [f for f in fields if f not in CSV_COLUMNS]
        close = closest_names(score, others, n=1) or others[-1:]
        spelled = option("score", close[0]) if close else None
        raise MissingColumnsError(
            f"the measured file has no score column {score!r}; line 1 reads {fields}; "
            + (f"set {spelled} if that is the measured score, or " if spelled else "")
            + f"add the measured score as a column named {score}",
            file=str(path),
        )
    return load_csv(
        path,
        smiles,
        score_columns=[score],
        aggregate=on_duplicate,
        on_invalid=on_invalid,
        on_unknown_drug=kw["on_unknown_drug"],  # type: ignore[arg-type]
        drug_id_column=kw["drug_id_column"],  # type: ignore[arg-type]
    )


#: Format -> reader ``(path, smiles, score, on_duplicate, on_invalid, on_unknown_drug=, drug_id_column=)``.
def _read_blocks(
    path: PathLike, smiles: PathLike, score: str, on_duplicate: OnDuplicate, on_invalid: OnInvalid, **kw: object
) -> Screen:
    try:
        column = score_column(score)
    except ValueError as err:  # the score option names no synergy score of a block
        raise ConfigValueError(
            "score",
            f"{err}; a dose-response block file is scored as synergy_zip, synergy_bliss, synergy_hsa or "
            "synergy_loewe, e.g. score=synergy_zip",
        ) from None
    return load_block_measurements(
        path,
        smiles,
        column,
        on_duplicate,
        on_invalid,
        on_unknown_drug=kw["on_unknown_drug"],  # type: ignore[arg-type]
        drug_id_column=kw.get("drug_id_column"),  # type: ignore[arg-type]
    )


READERS: dict[MeasuredFormat, Callable[..., Screen]] = {
    "drugcomb": _read_drugcomb,
    "csv": _read_csv,
    "blocks": _read_blocks,
}
#: Format -> the file's columns holding ``drug_a, drug_b, cell_line`` (for :func:`tried_pairs`).
KEY_HEADERS: dict[MeasuredFormat, tuple[str, str, str]] = {
    "drugcomb": ("drug_row", "drug_col", "cell_line_name"),
    "csv": ("drug_a", "drug_b", "cell_line"),
}


def load_measured(
    path: PathLike,
    smiles: PathLike,
    score: str,
    on_duplicate: OnDuplicate = "mean",
    on_invalid: OnInvalid = "raise",
    on_unknown_drug: OnInvalid = "raise",
    drug_id_column: str | None = None,
) -> Screen:
    """One measured file as a :class:`Screen` (format by :func:`measured_format`).

    Replicates within the file are averaged (``on_duplicate="mean"``) or rejected (``"raise"``); rows with a
    missing or non-numeric score raise or, under ``on_invalid="drop"``, are dropped (a failed well: see
    :func:`tried_pairs`); rows naming drugs outside the drug table raise or are dropped
    (``on_unknown_drug``). ``drug_id_column`` names the drug table's id column (project CSV only).
    """
    kind = measured_format(path)
    return READERS[kind](
        path,
        smiles,
        score,
        on_duplicate,
        on_invalid,
        on_unknown_drug=on_unknown_drug,
        drug_id_column=drug_id_column,
    )


def tried_pairs(path: PathLike) -> pd.DataFrame:
    """Every ``(drug_a, drug_b, cell_line)`` row of a measured file, canonical order, scores ignored.

    A row whose score is empty (a failed well, dropped under ``on_invalid=drop``) was tried all the same, so
    ``recommend`` never proposes it again. Rows with an empty key are left out.

    Returns:
        ``(R, 3)`` frame with columns ``drug_a, drug_b, cell_line`` (strings, stripped, ``drug_a <= drug_b``).
    """
    kind = measured_format(path)
    if kind == "blocks":
        blocks = block_pairs(path)
        lo, hi = canonical_pair(blocks["drug_a"], blocks["drug_b"])
        return pd.DataFrame(
            {"drug_a": np.asarray(lo), "drug_b": np.asarray(hi), "cell_line": blocks["cell_line"].to_numpy()}
        ).drop_duplicates(ignore_index=True)
    a, b, cell = KEY_HEADERS[kind]
    fields = first_fields(path, sniff_separator(path))
    if not {a, b, cell} <= set(fields):
        return pd.DataFrame(columns=["drug_a", "drug_b", "cell_line"])
    raw = read_table(path, usecols=[a, b, cell], dtype=str, na_values=[r"\N"]).dropna()
    lo, hi = canonical_pair(raw[a].str.strip(), raw[b].str.strip())
    return pd.DataFrame(
        {"drug_a": np.asarray(lo), "drug_b": np.asarray(hi), "cell_line": raw[cell].str.strip().to_numpy()}
    )


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
            average = option("on_duplicate", "mean")
            raise ConflictingMeasurementError(
                f"({a}, {b}) in {cell} is measured more than once ({files[0]} and {files[1]})"
                + (f"; set {average} to average" if average else "; remove one of the two rows"),
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


def robust_scale(values: np.ndarray) -> float:
    """A robust standard deviation of ``values`` ``(N,)``: 1.4826 x the median absolute deviation, or the
    interquartile range / 1.349 when over half the values are equal (0.0 for constant values)."""
    values = np.asarray(values, dtype=float)
    mad = 1.4826 * float(np.median(np.abs(values - np.median(values))))
    if mad > 0:
        return mad
    q75, q25 = np.percentile(values, [75, 25])
    return float(q75 - q25) / 1.349


def check_scales(screens: Sequence[Screen], score: str, check_scale: bool = True) -> None:
    """Refuse measured files whose scores are on different scales (robust sd ratio over
    :data:`MAX_SCALE_RATIO`), e.g. a round exported as fractions (score / 100) beside one in percent.

    Files with fewer than :data:`MIN_SCALE_ROWS` measurements or constant scores are not compared.
    ``check_scale=False`` logs the numbers as a warning instead.

    Raises:
        ScaleMismatchError: naming every file with its count, median and robust sd, and what to do.
    """
    stats = []
    for screen in screens:
        values = screen.experiments[score].to_numpy(dtype=float)
        scale = robust_scale(values) if len(values) >= MIN_SCALE_ROWS else 0.0
        if scale > 0:
            stats.append((str(screen.source), len(values), float(np.median(values)), scale))
    if len(stats) < 2:
        return
    small = min(stats, key=lambda s: s[3])
    large = max(stats, key=lambda s: s[3])
    ratio = large[3] / small[3]
    if ratio <= MAX_SCALE_RATIO:
        return
    listing = "; ".join(f"{f}: {n} rows, median {m:.3g}, robust sd {s:.3g}" for f, n, m, s in stats)
    message = (
        f"the {score} scores of the measured files differ in scale {ratio:.0f}-fold (over {MAX_SCALE_RATIO:g}): "
        f"{listing}. Averaging them would mix two scales (e.g. fractions with percentages)"
    )
    if not check_scale:
        log.warning("%s; merged all the same (check_scale is off)", message)
        return
    skip = option("check_scale", False)
    raise ScaleMismatchError(
        f"{message}: convert {small[0]} to the scale of the others (e.g. multiply fractions by 100)"
        + (f", or set {skip} if the scales really differ" if skip else ""),
        file=small[0],
    )


def check_enough(experiments: pd.DataFrame, score: str, files: Sequence[str]) -> None:
    """Refuse fewer than :data:`MIN_MEASUREMENTS` measurements or constant scores; warn below
    :data:`FEW_MEASUREMENTS`.

    Args:
        experiments: the merged measurements (one row per (pair, cell line)) with the ``score`` column.
        files: the measured files, for the message.

    Raises:
        TooFewMeasurementsError: naming the count, the minimum and the files.
    """
    where = ", ".join(map(str, files))
    n = len(experiments)
    if n < MIN_MEASUREMENTS:
        raise TooFewMeasurementsError(
            f"{n} measured combination(s); a model needs at least {MIN_MEASUREMENTS} (MIN_MEASUREMENTS) to rank "
            f"untested ones, better {FEW_MEASUREMENTS} or more: measure a first plate chosen by design (e.g. "
            "diverse pairs covering every drug) and pass it in measured",
            file=where,
        )
    values = experiments[score].to_numpy(dtype=float)
    if np.ptp(values) == 0:
        raise TooFewMeasurementsError(
            f"all {n} measurements have the same {score} ({values[0]:g}); a model learns nothing from a "
            f"constant score (it needs at least 2 different values): check that {score} is the measured "
            "score column",
            file=where,
        )
    if n < FEW_MEASUREMENTS:
        log.warning(
            "only %d measured combinations (< %d): the model stays close to its prior and the plate is little "
            "better than a guess; treat it as exploratory",
            n,
            FEW_MEASUREMENTS,
        )
