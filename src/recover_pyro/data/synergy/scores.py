"""Bliss, HSA, Loewe and ZIP synergy of dose-response blocks, by SynergyFinder's two sets of rules.

For a block with responses ``Y[i, j]`` (% inhibition) at drug A dose ``a_i`` and drug B dose ``b_j``
(``a_0 = b_0 = 0``), each score compares the measured combination with a *reference* (no-interaction)
response; the per-dose synergy is ``observed - reference`` on the combination wells (``i, j > 0``; 0 on the
single-drug wells) and the block's score is the mean over the combination wells.

* **HSA**: ``max(Y[i, 0], Y[0, j])`` (the better single drug, as measured).
* **Bliss**: ``100 (1 - (1 - Y[i, 0] / 100)(1 - Y[0, j] / 100))`` (independent action, as measured).
* **Loewe**: the response ``y`` at which the doses are additive, ``a_i / A(y) + b_j / B(y) = 1``, ``A(y)`` and
  ``B(y)`` the doses of each drug alone giving ``y`` on its fitted LL.4 curve.
* **ZIP** (Yadav et al. 2015): each drug's LL.4 curve gives the reference ``100 (1 - (1 - f_A/100)(1 -
  f_B/100))``; the observed surface is smoothed by fitting, for each dose of one drug, an LL.4 curve along the
  other drug's doses whose bottom is fixed at the first drug's response alone, and averaging the two
  directions; ZIP = smoothed - reference.

``convention="synergyfinder3"`` (default) follows SynergyFinder 3.x (3.7.3 checked): ZIP's curves use every
dose including 0 with the bottom fixed at the measured single-drug response and a free top; Loewe's ``y`` is
the one of 100 evenly spaced responses between the lowest and highest curve ends that comes closest to
additivity (when the observed response is above both curves' ranges, the larger single-drug response at
the summed dose). ``convention="drugcomb"`` follows SynergyFinder 2.x (2.3.5 checked), the rules behind
DrugComb's published scores: ZIP's curves use the doses > 0 only, with the bottom fixed at the *fitted*
single-drug response and the top fixed at 100; Loewe solves additivity with a Newton iteration
(:mod:`~recover_pyro.data.synergy.newton`), falling back to the larger single-drug response at the summed
dose, and caps ``y`` at 100.

Arithmetic follows SynergyFinder's R code where it decides digits: products and means of R's ``prod``,
``rowMeans`` and ``mean`` are taken in extended precision, and R's rules for powers of negative numbers and
of infinities are kept in Loewe's inverse curves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import numpy as np

from recover_pyro.data.blocks import DoseResponseBlock, r_mean
from recover_pyro.data.synergy.curves import CurveFits, fit_curves, l4, ll4
from recover_pyro.data.synergy.newton import solve

Convention = Literal["synergyfinder3", "drugcomb"]
#: Accepted spellings of the conventions.
CONVENTIONS: dict[str, Convention] = {
    "synergyfinder3": "synergyfinder3",
    "sf3": "synergyfinder3",
    "drugcomb": "drugcomb",
    "synergyfinder2": "drugcomb",
    "sf2": "drugcomb",
}
SCORES = ("zip", "bliss", "hsa", "loewe")
#: Per-dose surfaces of a :class:`BlockScores`: each score and its reference (and ZIP's smoothed surface).
SURFACES = ("zip", "zip_fit", "zip_ref", "bliss", "bliss_ref", "hsa", "hsa_ref", "loewe", "loewe_ref")
_LOEWE_GRID = 100


@dataclass(frozen=True)
class BlockScores:
    """The scores of one block.

    Attributes:
        block: the block.
        convention: ``"synergyfinder3"`` or ``"drugcomb"``.
        surfaces: name (:data:`SURFACES`) -> ``(m, n)`` per-dose values; on single-drug wells a score is 0 and
            its reference the response.
        single: the two single-drug curves (row 0: drug A, row 1: drug B) used by ZIP and Loewe.
        notes: what did not go as planned (a curve that fell back to L.4, a score that could not be computed).
    """

    block: DoseResponseBlock
    convention: str
    surfaces: dict[str, np.ndarray]
    single: CurveFits
    notes: tuple[str, ...] = field(default_factory=tuple)

    def mean(self, score: str) -> float:
        """The block's ``score``: the mean over the combination wells (both doses > 0); NaN if any is NaN."""
        values = self.surfaces[score][1:, 1:].ravel()
        return float("nan") if np.isnan(values).any() else r_mean(values)


def normalise_convention(convention: str) -> Convention:
    """``convention`` in its canonical spelling; ``ValueError`` naming the accepted ones otherwise."""
    try:
        return CONVENTIONS[convention.lower()]
    except KeyError:
        raise ValueError(
            f"unknown convention {convention!r}; choose synergyfinder3 (SynergyFinder 3.x, default) or drugcomb "
            "(SynergyFinder 2.x, DrugComb's published scores)"
        ) from None


def score_all(blocks: Sequence[DoseResponseBlock], convention: str = "synergyfinder3") -> list[BlockScores]:
    """Scores of every block (curve fits of all blocks batched together)."""
    conv = normalise_convention(convention)
    if not blocks:
        return []
    return _score_sf3(blocks) if conv == "synergyfinder3" else _score_drugcomb(blocks)


# --- observed-response references ------------------------------------------------------------------
def _independence(fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
    """``(1 - prod(1 - x / 100)) * 100`` over the pair, the product in extended precision (R's ``prod``)."""
    prod = (1.0 - fa / 100.0).astype(np.longdouble) * (1.0 - fb / 100.0).astype(np.longdouble)
    return (1.0 - prod.astype(float)) * 100.0


def _with_single_wells(observed: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(synergy, reference)`` with the single-drug wells' reference set to the observation (synergy 0)."""
    ref = reference.copy()
    ref[0, :] = observed[0, :]
    ref[:, 0] = observed[:, 0]
    return observed - ref, ref


def _bliss_hsa(block: DoseResponseBlock, convention: Convention) -> dict[str, np.ndarray]:
    y = block.response
    a, b = y[:, :1], y[:1, :]
    if convention == "synergyfinder3":
        bliss_ref = _independence(np.broadcast_to(a, y.shape), np.broadcast_to(b, y.shape))
    else:  # SynergyFinder 2.x: drug.row + drug.col - drug.row * drug.col / 100
        bliss_ref = a + b - a * b / 100.0
    bliss, bliss_ref = _with_single_wells(y, bliss_ref)
    hsa, hsa_ref = _with_single_wells(y, np.maximum(a, b))
    return {"bliss": bliss, "bliss_ref": bliss_ref, "hsa": hsa, "hsa_ref": hsa_ref}


# --- batched curve fits ----------------------------------------------------------------------------
@dataclass
class _Series:
    """Dose-response series to fit, padded to a common length, with where each one came from."""

    dose: list[np.ndarray] = field(default_factory=list)
    response: list[np.ndarray] = field(default_factory=list)
    bottom: list[float] = field(default_factory=list)
    top: list[float] = field(default_factory=list)

    def add(self, dose: np.ndarray, response: np.ndarray, bottom: float = math.nan, top: float = math.nan) -> int:
        self.dose.append(dose)
        self.response.append(response)
        self.bottom.append(bottom)
        self.top.append(top)
        return len(self.dose) - 1

    def fit(self) -> CurveFits:
        width = max(len(d) for d in self.dose)
        n = len(self.dose)
        dose = np.ones((n, width))
        resp = np.zeros((n, width))
        mask = np.zeros((n, width), dtype=bool)
        for k, (d, r) in enumerate(zip(self.dose, self.response)):
            dose[k, : len(d)], resp[k, : len(d)], mask[k, : len(d)] = d, r, True
        return fit_curves(dose, resp, mask, bottom=np.array(self.bottom), top=np.array(self.top))


def _file_order(block: DoseResponseBlock, flat: np.ndarray) -> np.ndarray:
    """The wells ``flat`` (flat indices) in the order they first appear in the block's file."""
    rank = np.empty(block.response.size, dtype=np.int64)
    rank[block.well_order] = np.arange(block.well_order.size)
    return flat[np.argsort(rank[flat], kind="stable")]


def _take(fits: CurveFits, rows: Sequence[int]) -> CurveFits:
    idx = np.asarray(rows)
    return CurveFits(fits.params[idx], fits.model[idx], fits.rss[idx], fits.iterations[idx])


def _single_notes(block: DoseResponseBlock, single: CurveFits) -> list[str]:
    notes = []
    for k, drug in enumerate((block.drug_row, block.drug_col)):
        if single.model[k] == "L.4":
            notes.append(f"{drug}: LL.4 fit failed, L.4 on log dose used (as SynergyFinder)")
        elif single.model[k] == "":
            notes.append(f"{drug}: no curve could be fitted, so no ZIP or Loewe")
    return notes


def _undefined_notes(surfaces: dict[str, np.ndarray], notes: list[str]) -> list[str]:
    """``notes`` plus one for each score left undefined at some combination wells without a note saying why
    (e.g. a curve whose formula gives no number at a dose, as in R)."""
    for score in SCORES:
        missing = int(np.isnan(surfaces[score][1:, 1:]).sum())
        if missing and not any(score.upper() in n.upper() for n in notes):
            notes.append(f"{score}: no value at {missing} combination well(s), so no block {score}")
    return notes


# --- SynergyFinder 3.x -----------------------------------------------------------------------------
def _score_sf3(blocks: Sequence[DoseResponseBlock]) -> list[BlockScores]:
    series = _Series()
    plan = []
    for blk in blocks:
        m, n = blk.shape
        y = blk.response.ravel()
        dose_a = np.repeat(blk.conc_row, n)
        dose_b = np.tile(blk.conc_col, m)
        col0 = _file_order(blk, np.arange(m) * n)  # drug A alone: wells (i, 0)
        row0 = _file_order(blk, np.arange(n))  # drug B alone: wells (0, j)
        single_rows = [series.add(dose_a[col0], y[col0]), series.add(dose_b[row0], y[row0])]
        # ZIP's smoothing: along drug A at each dose of drug B (bottom: drug B alone), and vice versa
        along_a = []
        for j in range(n):
            wells = _file_order(blk, np.arange(m) * n + j)
            along_a.append((wells, series.add(dose_a[wells], y[wells], bottom=blk.response[0, j])))
        along_b = []
        for i in range(m):
            wells = _file_order(blk, i * n + np.arange(n))
            along_b.append((wells, series.add(dose_b[wells], y[wells], bottom=blk.response[i, 0])))
        plan.append((single_rows, along_a, along_b))
    fits = series.fit()
    out = []
    for blk, (single_rows, along_a, along_b) in zip(blocks, plan):
        m, n = blk.shape
        single = _take(fits, single_rows)
        notes = _single_notes(blk, single)
        surfaces = _bliss_hsa(blk, "synergyfinder3")
        fa = single.fitted(blk.conc_row[None, :])[0]
        fb = single.fitted(blk.conc_col[None, :])[1]
        zip_ref = _independence(np.repeat(fa[:, None], n, axis=1), np.repeat(fb[None, :], m, axis=0))
        smooth = [np.full(m * n, np.nan), np.full(m * n, np.nan)]
        failed = 0
        for k, groups in enumerate((along_a, along_b)):
            for wells, row in groups:
                dose = (np.repeat(blk.conc_row, n) if k == 0 else np.tile(blk.conc_col, m))[wells]
                if fits.model[row] == "":
                    failed += 1
                smooth[k][wells] = _take(fits, [row]).fitted(dose[None, :])[0]
        pair = smooth[0].astype(np.longdouble) + smooth[1].astype(np.longdouble)
        zip_fit = (pair / 2).astype(float).reshape(m, n)  # R's rowMeans
        if failed:
            notes.append(f"{failed} of ZIP's {m + n} row / column curves could not be fitted, so no ZIP")
        zip_fit[0, :], zip_fit[:, 0] = blk.response[0, :], blk.response[:, 0]
        zip_ref[0, :], zip_ref[:, 0] = blk.response[0, :], blk.response[:, 0]
        surfaces.update({"zip": zip_fit - zip_ref, "zip_fit": zip_fit, "zip_ref": zip_ref})
        loewe_ref = _loewe_sf3(blk, single)
        loewe, loewe_ref = _with_single_wells(blk.response, loewe_ref)
        surfaces.update({"loewe": loewe, "loewe_ref": loewe_ref})
        out.append(BlockScores(blk, "synergyfinder3", surfaces, single, tuple(_undefined_notes(surfaces, notes))))
    return out


def r_pow(base: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """``base ^ exponent`` with R's rules: 1 when ``base == 1`` or ``exponent == 0``, ``base * base`` for
    exponent 2, and NaN for a negative (or ``-inf``) base with a non-integer exponent."""
    base, exponent = np.broadcast_arrays(np.asarray(base, dtype=float), np.asarray(exponent, dtype=float))
    with np.errstate(all="ignore"):
        out = np.power(base, exponent)
        out = np.where(exponent == 2.0, base * base, out)
        integral = np.isfinite(exponent) & (exponent == np.floor(exponent))
        out = np.where((base == -np.inf) & ~integral, np.nan, out)
        out = np.where((base == 1.0) | (exponent == 0.0), 1.0, out)
    return out


def _dose_for(y: np.ndarray, params: np.ndarray, model: str) -> np.ndarray:
    """The dose at which a curve gives response ``y`` (SynergyFinder 3.x's ``.SolveExpDose``).

    LL.4: ``e ((y - d) / (c - y))^(1 / b)``; L.4: ``exp(e + log((d - y) / (y - c)) / b)``. Where that is not a
    number (``y`` outside the curve's range) the dose is ``inf`` if ``y`` is above both ends, else 0.
    """
    b, c, d, e = params
    with np.errstate(all="ignore"):
        if model == "LL.4":
            out = e * r_pow((y - d) / (c - y), 1.0 / b)
        else:
            out = np.exp(e + np.log((d - y) / (y - c)) / b)
    return np.where(np.isnan(out), np.where(y > max(c, d), np.inf, 0.0), out)


def _predict_one(params: np.ndarray, model: str, dose: np.ndarray) -> np.ndarray:
    """A fitted curve at ``dose`` (log dose for L.4, as SynergyFinder 3.x's ``.PredictResponseFromModel``)."""
    b, c, d, e = params
    if model == "LL.4":
        return ll4(dose, b, c, d, e)
    with np.errstate(divide="ignore"):
        return l4(np.log(dose), b, c, d, e)


def _loewe_sf3(blk: DoseResponseBlock, single: CurveFits) -> np.ndarray:
    """SynergyFinder 3.x's Loewe reference ``(m, n)`` on the combination wells (NaN without both curves)."""
    m, n = blk.shape
    ref = np.full((m, n), np.nan)
    if (single.model == "").any():
        return ref
    pa, pb = single.params
    ma, mb = single.model
    y = blk.response[1:, 1:]
    xa = np.repeat(blk.conc_row[1:, None], n - 1, axis=1)
    xb = np.repeat(blk.conc_col[None, 1:], m - 1, axis=0)
    above = ~np.isfinite(_dose_for(y, pa, ma)) & ~np.isfinite(_dose_for(y, pb, mb))
    # the grid of candidate responses spans every curve end: seq(min, max, length.out = 100)
    lo = min(pa[1], pa[2], pb[1], pb[2])
    hi = max(pa[1], pa[2], pb[1], pb[2])
    steps = np.arange(1, _LOEWE_GRID - 1, dtype=float)
    grid = np.concatenate([[lo], lo + steps * ((hi - lo) / (_LOEWE_GRID - 1)), [hi]])
    da, db = _dose_for(grid, pa, ma), _dose_for(grid, pb, mb)
    with np.errstate(all="ignore"):
        qa = xa.ravel()[:, None] / da[None, :]
        qb = xb.ravel()[:, None] / db[None, :]
        total = (qa.astype(np.longdouble) + qb.astype(np.longdouble)).astype(float)  # R's sum()
        dist = np.abs(total - 1.0)
    finite_any = ~np.isnan(dist).all(axis=1)
    best = np.argmin(np.where(np.isnan(dist), np.inf, dist), axis=1)
    chosen = np.where(finite_any, grid[best], np.nan).reshape(m - 1, n - 1)
    total_dose = xa + xb
    fallback = np.maximum(_predict_one(pa, ma, total_dose), _predict_one(pb, mb, total_dose))
    fallback = np.where(
        np.isnan(_predict_one(pa, ma, total_dose)) | np.isnan(_predict_one(pb, mb, total_dose)), np.nan, fallback
    )
    ref[1:, 1:] = np.where(above, fallback, chosen)
    return ref


# --- SynergyFinder 2.x (DrugComb) ------------------------------------------------------------------
@dataclass
class _Plan2:
    """What SynergyFinder 2.x needs of one block: its single-drug curves, their predictions at the doses > 0
    (``None`` without a curve) and the rows of its ZIP curves in the second batch (along drug A, along drug B)."""

    single: CurveFits
    fa: np.ndarray | None
    fb: np.ndarray | None
    cols: list[int] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)


def _predict_sf2(params: np.ndarray, model: str, dose: np.ndarray) -> np.ndarray:
    """SynergyFinder 2.x's ``predict(model, newdata = data.frame(dose = dose))``: the raw dose goes in even for
    an L.4 curve (fitted on log dose); kept as 2.x computes it."""
    b, c, d, e = params
    return ll4(dose, b, c, d, e) if model == "LL.4" else l4(dose, b, c, d, e)


def _score_drugcomb(blocks: Sequence[DoseResponseBlock]) -> list[BlockScores]:
    stage1 = _Series()
    for blk in blocks:  # single drugs, doses ascending (2.x reads a sorted matrix)
        stage1.add(blk.conc_row, blk.response[:, 0])
        stage1.add(blk.conc_col, blk.response[0, :])
    single_fits = stage1.fit()
    stage2 = _Series()
    plans = []
    for k, blk in enumerate(blocks):
        m, n = blk.shape
        single = _take(single_fits, [2 * k, 2 * k + 1])
        fa = _predict_sf2(single.params[0], single.model[0], blk.conc_row[1:]) if single.model[0] else None
        fb = _predict_sf2(single.params[1], single.model[1], blk.conc_col[1:]) if single.model[1] else None
        plan = _Plan2(single, fa, fb)
        if fa is not None and fb is not None and not (m == 2 and n == 2) and m > 2:
            plan.cols = [
                stage2.add(blk.conc_row[1:], blk.response[1:, j + 1], bottom=fb[j], top=100.0) for j in range(n - 1)
            ]
        if fa is not None and fb is not None and not (m == 2 and n == 2) and n > 2:
            plan.rows = [
                stage2.add(blk.conc_col[1:], blk.response[i + 1, 1:], bottom=fa[i], top=100.0) for i in range(m - 1)
            ]
        plans.append(plan)
    fits2 = stage2.fit() if stage2.dose else None
    out = []
    for blk, plan in zip(blocks, plans):
        m, n = blk.shape
        single = plan.single
        notes = _single_notes(blk, single)
        surfaces = _bliss_hsa(blk, "drugcomb")
        zip_fit = np.full((m, n), np.nan)
        zip_ref = np.full((m, n), np.nan)
        fa, fb = plan.fa, plan.fb
        if fa is not None and fb is not None:
            inner = blk.response[1:, 1:]
            along_a = inner.copy()  # fits along drug A, one per dose of drug B
            along_b = inner.copy()
            if m == 2 and n == 2:
                pass  # a 2 x 2 block is not smoothed
            else:
                along_a = _smoothed(fits2, plan.cols, inner, 0, blk.conc_row[1:])
                along_b = _smoothed(fits2, plan.rows, inner, 1, blk.conc_col[1:])
            zip_fit[1:, 1:] = (along_a + along_b) / 2.0
            zip_ref[1:, 1:] = fa[:, None] + fb[None, :] - fa[:, None] * fb[None, :] / 100.0
        zip_score = zip_fit - zip_ref
        zip_score[0, :], zip_score[:, 0] = 0.0, 0.0
        zip_fit[0, :], zip_fit[:, 0] = blk.response[0, :], blk.response[:, 0]
        zip_ref[0, :], zip_ref[:, 0] = blk.response[0, :], blk.response[:, 0]
        surfaces.update({"zip": zip_score, "zip_fit": zip_fit, "zip_ref": zip_ref})
        loewe_ref = _loewe_drugcomb(blk, single)
        loewe, loewe_ref = _with_single_wells(blk.response, loewe_ref)
        surfaces.update({"loewe": loewe, "loewe_ref": loewe_ref})
        out.append(BlockScores(blk, "drugcomb", surfaces, single, tuple(_undefined_notes(surfaces, notes))))
    return out


def _smoothed(fits: CurveFits | None, rows: list[int], inner: np.ndarray, axis: int, dose: np.ndarray) -> np.ndarray:
    """2.x ZIP smoothing of the combination wells ``inner`` ``(m-1, n-1)`` along ``axis`` (0: along drug A, at
    doses ``dose``): the fitted curves where they exist, the measurements where a fit failed, and the
    measurements minus ``1e-10`` where that drug has a single dose > 0 (nothing to fit)."""
    if not rows:
        return inner - 1e-10
    assert fits is not None
    out = inner.copy()
    for k, row in enumerate(rows):
        one = _take(fits, [row])
        if one.model[0] == "":
            continue
        smooth = one.fitted(dose[None, :])[0]
        if axis == 0:
            out[:, k] = smooth
        else:
            out[k, :] = smooth
    return out


def _loewe_drugcomb(blk: DoseResponseBlock, single: CurveFits) -> np.ndarray:
    """SynergyFinder 2.x's Loewe reference ``(m, n)``: Newton's root of additivity from ``max(c) + 1``, else the
    larger single-drug response at the summed dose; capped at 100."""
    m, n = blk.shape
    ref = np.full((m, n), np.nan)
    if (single.model == "").any():
        return ref
    (pa, pb), (ma, mb) = single.params, single.model
    start = max(pa[1], pb[1]) + 1.0
    inv_a, inv_b = _scalar_inverse(pa, ma), _scalar_inverse(pb, mb)
    for i in range(1, m):
        for j in range(1, n):
            xa, xb = float(blk.conc_row[i]), float(blk.conc_col[j])

            def g(y: float, xa: float = xa, xb: float = xb) -> float:
                return _div(xb, inv_b(y)) + _div(xa, inv_a(y)) - 1.0

            y, converged = solve(g, start)
            if not converged:
                both = (_sf2_fallback(pb, mb, xb, xa), _sf2_fallback(pa, ma, xb, xa))
                y = math.nan if any(math.isnan(v) for v in both) else max(both)
            ref[i, j] = 100.0 if y > 100 else y
    return ref


def _div(x: float, dose: float) -> float:
    """``x / dose`` with IEEE semantics (``x > 0``): ``inf`` at 0, 0 at ``inf``."""
    if dose == 0.0:
        return math.inf if x > 0 else math.nan
    return x / dose


def _scalar_inverse(params: np.ndarray, model: str) -> Callable[[float], float]:
    """``y -> dose`` of one curve as in 2.x's ``eq.*`` functions (NaN outside the curve's range)."""
    b, c, d, e = (float(v) for v in params)
    inv_b = 1.0 / b

    def ll4_inverse(y: float) -> float:
        den = c - y
        num = y - d
        if den == 0.0:
            ratio = math.copysign(math.inf, num) if num != 0 else math.nan
        else:
            ratio = num / den
        return e * _scalar_pow(ratio, inv_b)

    def l4_inverse(y: float) -> float:
        den = y - c
        num = d - y
        if den == 0.0:
            ratio = math.copysign(math.inf, num) if num != 0 else math.nan
        else:
            ratio = num / den
        if not ratio > 0:
            return math.nan if ratio != 0 else (math.exp(-math.inf) if b > 0 else math.inf)
        try:
            return math.exp(e + math.log(ratio) / b)
        except OverflowError:
            return math.inf

    return ll4_inverse if model == "LL.4" else l4_inverse


def _scalar_pow(base: float, exponent: float) -> float:
    """R's ``base ^ exponent`` for Python floats (see :func:`r_pow`)."""
    if base == 1.0 or exponent == 0.0:
        return 1.0
    if math.isnan(base) or math.isnan(exponent):
        return math.nan
    if exponent == 2.0:
        return base * base
    integral = math.isfinite(exponent) and exponent == math.floor(exponent)
    if base < 0 and not integral:
        return math.nan
    if base == 0.0:
        return 0.0 if exponent > 0 else math.inf
    if math.isinf(base):
        if base > 0:
            return 0.0 if exponent < 0 else math.inf
        if exponent < 0:
            return 0.0
        return -math.inf if exponent % 2 == 1 else math.inf
    try:
        return math.pow(base, exponent)
    except OverflowError:
        return math.inf if base > 0 or exponent % 2 == 0 else -math.inf


def _sf2_fallback(params: np.ndarray, model: str, x1: float, x2: float) -> float:
    """2.x's ``fun``: the single-drug response at the summed dose, LL.4 as ``(d + c t) / (1 + t)``."""
    b, c, d, e = (float(v) for v in params)
    total = x1 + x2
    if model == "LL.4":
        t = _scalar_pow(total / e, b)
        with np.errstate(all="ignore"):
            return float(np.float64(d + c * t) / np.float64(1.0 + t))
    try:
        return c + (d - c) / (1.0 + math.exp(b * (math.log(total) - e)))
    except OverflowError:
        return c
