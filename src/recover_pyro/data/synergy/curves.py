"""Four-parameter log-logistic dose-response curves, fitted as SynergyFinder fits them (R drc's ``LL.4``).

The curve of a single drug (or of one row of a block, in ZIP) is

    f(x) = c + (d - c) / (1 + exp(b (log x - log e)))      (LL.4, x the dose)
    f(x) = c + (d - c) / (1 + exp(b (x - e)))              (L.4, x the log dose; SynergyFinder's fallback)

with Hill slope ``b``, the responses ``c`` and ``d`` at the two ends and the EC50 ``e`` (its log for L.4).
``c`` and/or ``d`` may be fixed (ZIP fixes ``c`` to the response of the other drug alone and, in the 2.x
rules, ``d`` to 100).

The fit reproduces what drc 3.0 does inside SynergyFinder's ``FitDoseResponse``:

1. a constant series gets ``1e-10`` added to its last response;
2. doses and responses are divided by ``10^floor(log10(median))`` (1 when that is not positive);
3. starting values: ``c0, d0`` = the response range widened by 0.1 % on each side; ``b0, e0`` from the least
   squares line of ``log((d0 - y) / (y - c0))`` on ``log x`` over the doses > 0 (``b0`` = slope,
   ``e0 = exp(-intercept / b0)``), solved by Householder QR;
4. minimise the residual sum of squares (accumulated in extended precision, as R's ``sum``) with
   :func:`~recover_pyro.data.synergy.varmetric.minimise` from ``parscale = |start|`` (1 where below 1e-4);
5. the fit fails when the start or a gradient is not finite, or when the finite-difference Hessian that R
   computes afterwards would meet a non-finite value (in practice: an EC50 that has run below ~1e-3 of the
   dose scale). A failed LL.4 fit is refitted as L.4 on ``log(dose)`` (dose 0 as ``1e-10``), unscaled.

Everything is batched over curves: ``F`` series of at most ``N`` points, padded and masked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from recover_pyro.data.synergy.varmetric import minimise

#: Names of the four parameters, in drc's order.
PARAMS = ("b", "c", "d", "e")
#: What SynergyFinder puts in place of dose 0 before taking logs (the L.4 fallback).
ZERO_DOSE = 1e-10
_SCALE_FLOOR = 1e-15  # drc's dscaleThres / rscaleThres
_PARSCALE_FLOOR = 1e-4
_NDEPS = 1e-3
_QR_TOL = 1e-7  # R's lm: a column this close to the span of the others is dropped (rank deficient)


@dataclass(frozen=True)
class CurveFits:
    """Fitted curves of ``F`` series.

    Attributes:
        params: ``(F, 4)`` ``b, c, d, e`` on the data's own scale (``e`` is the EC50 for LL.4, log EC50
            for L.4; fixed parameters as given); NaN where no model could be fitted.
        model: ``(F,)`` ``"LL.4"``, ``"L.4"`` (SynergyFinder's fallback) or ``""`` (no fit).
        rss: ``(F,)`` residual sum of squares on the data's scale.
        iterations: ``(F,)`` gradient evaluations of the fit that was kept.
    """

    params: np.ndarray
    model: np.ndarray
    rss: np.ndarray
    iterations: np.ndarray

    def predict(self, dose: np.ndarray) -> np.ndarray:
        """Responses ``(F, M)`` at doses ``dose`` ``(F, M)`` (or ``(M,)``, the same for all), on the dose scale.

        L.4 curves take ``log(dose)``; dose 0 gives the curve's end value there (``log 0 = -inf``), as R does.
        """
        dose = np.broadcast_to(np.asarray(dose, dtype=float), (self.params.shape[0], np.shape(dose)[-1]))
        return evaluate(self.params, self.model, dose)

    def fitted(self, dose: np.ndarray) -> np.ndarray:
        """Fitted values at the data's own doses ``(F, M)``: as :meth:`predict`, but dose 0 taken as
        ``1e-10`` for L.4 curves (which were fitted on ``log 1e-10``)."""
        dose = np.broadcast_to(np.asarray(dose, dtype=float), (self.params.shape[0], np.shape(dose)[-1]))
        log_model = (self.model == "L.4")[:, None]
        return evaluate(self.params, self.model, np.where(log_model & (dose == 0), ZERO_DOSE, dose))


def ll4(x: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, e: np.ndarray) -> np.ndarray:
    """``c + (d - c) / (1 + exp(b log(x / e)))``, broadcast; dose 0 gives ``d`` for ``b > 0``, ``c`` for ``b < 0``.

    Evaluated as drc writes it (``log(x / e)``, not ``log x - log e``: the last digits differ).
    """
    with np.errstate(all="ignore"):
        return _ll4(x, b, c, d, e)


def l4(x: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, e: np.ndarray) -> np.ndarray:
    """``c + (d - c) / (1 + exp(b (x - e)))`` on log doses ``x``, broadcast."""
    with np.errstate(all="ignore"):
        return _l4(x, b, c, d, e)


def _ll4(x: np.ndarray, b: Any, c: Any, d: Any, e: Any) -> np.ndarray:
    # the same operations as c + (d - c) / (1 + exp(b * log(x / e))), in place (fewer allocations)
    t = np.divide(x, e)
    np.log(t, out=t)
    np.multiply(b, t, out=t)
    np.exp(t, out=t)
    np.add(1.0, t, out=t)
    np.divide(d - c, t, out=t)
    return np.add(c, t, out=t)


def _l4(x: np.ndarray, b: Any, c: Any, d: Any, e: Any) -> np.ndarray:
    t = np.subtract(x, e)
    np.multiply(b, t, out=t)
    np.exp(t, out=t)
    np.add(1.0, t, out=t)
    np.divide(d - c, t, out=t)
    return np.add(c, t, out=t)


def evaluate(params: np.ndarray, model: np.ndarray, dose: np.ndarray) -> np.ndarray:
    """Responses ``(F, M)`` of curves ``params`` ``(F, 4)`` of kinds ``model`` ``(F,)`` at doses ``(F, M)``."""
    b, c, d, e = (params[:, k : k + 1] for k in range(4))
    out = np.full(dose.shape, np.nan)
    is_ll4 = model == "LL.4"
    is_l4 = model == "L.4"
    if is_ll4.any():
        out[is_ll4] = ll4(dose[is_ll4], b[is_ll4], c[is_ll4], d[is_ll4], e[is_ll4])
    if is_l4.any():
        with np.errstate(divide="ignore"):
            logs = np.log(dose[is_l4])
        out[is_l4] = l4(logs, b[is_l4], c[is_l4], d[is_l4], e[is_l4])
    return out


def fit_curves(
    dose: np.ndarray,
    response: np.ndarray,
    mask: np.ndarray | None = None,
    bottom: np.ndarray | float | None = None,
    top: np.ndarray | float | None = None,
    maxit: int = 500,
) -> CurveFits:
    """Fit ``F`` dose-response series as SynergyFinder's ``FitDoseResponse`` does (see the module docstring).

    Args:
        dose: ``(F, N)`` doses >= 0, each series in the order of its data (the order enters the sums).
        response: ``(F, N)`` responses (% inhibition).
        mask: ``(F, N)`` True for real points (default: all); padding must come after the real points.
        bottom: ``(F,)`` or scalar fixed ``c`` (NaN or None: estimated).
        top: ``(F,)`` or scalar fixed ``d`` (NaN or None: estimated).
        maxit: most gradient evaluations per fit (drc's default 500).

    Returns:
        The :class:`CurveFits` that were used (LL.4, else the L.4 fallback, else none).
    """
    dose = np.asarray(dose, dtype=float)
    response = np.array(response, dtype=float)
    n_series = dose.shape[0]
    mask = np.ones(dose.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    fixed = np.full((n_series, 4), np.nan)
    fixed[:, 1] = np.nan if bottom is None else np.broadcast_to(np.asarray(bottom, dtype=float), (n_series,))
    fixed[:, 2] = np.nan if top is None else np.broadcast_to(np.asarray(top, dtype=float), (n_series,))
    response = _nudge_constant(response, mask)

    params = np.full((n_series, 4), np.nan)
    model = np.full(n_series, "", dtype=object)
    iterations = np.zeros(n_series, dtype=np.int64)
    ok, par, its = _drm(dose, response, mask, fixed, log_model=False, maxit=maxit)
    params[ok], model[ok], iterations[ok] = par[ok], "LL.4", its[ok]
    retry = np.flatnonzero(~ok)
    if retry.size:
        log_dose = np.log(np.where(dose[retry] == 0, ZERO_DOSE, np.where(mask[retry], dose[retry], 1.0)))
        ok2, par2, its2 = _drm(log_dose, response[retry], mask[retry], fixed[retry], log_model=True, maxit=maxit)
        params[retry[ok2]], model[retry[ok2]], iterations[retry[ok2]] = par2[ok2], "L.4", its2[ok2]
    model = model.astype(str)
    fits = CurveFits(params=params, model=model, rss=np.full(n_series, np.nan), iterations=iterations)
    resid = np.where(mask, response - fits.fitted(np.where(mask, dose, 1.0)), 0.0)
    rss = np.where(model != "", (resid * resid).sum(axis=1), np.nan)
    return CurveFits(params=params, model=model, rss=rss, iterations=iterations)


def _nudge_constant(response: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A series whose responses are all equal gets ``1e-10`` added to its last one (a curve needs a range)."""
    n = mask.sum(axis=1)
    first = response[:, :1]
    constant = (np.where(mask, response == first, True).all(axis=1)) & (n > 1)
    if constant.any():
        last = n - 1
        rows = np.flatnonzero(constant)
        response[rows, last[rows]] = response[rows, last[rows]] + 1e-10
    return response


def _median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-row median over the masked entries; the middle pair is averaged in extended precision, as R does."""
    filled = np.sort(np.where(mask, values, np.inf), axis=1)
    n = mask.sum(axis=1)
    rows = np.arange(values.shape[0])
    hi = filled[rows, np.maximum(n // 2, 0)]
    lo = filled[rows, np.maximum((n - 1) // 2, 0)]
    pair = (lo.astype(np.longdouble) + hi.astype(np.longdouble)) / 2
    return np.where(n % 2 == 1, hi, pair.astype(float))


def _power_scale(median: np.ndarray) -> np.ndarray:
    """``10^floor(log10(median))``, or 1 where that is undefined or below drc's threshold."""
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.power(10.0, np.floor(np.log10(median)))
    return np.where(np.isfinite(scale) & (scale >= _SCALE_FLOOR), scale, 1.0)


def _start_values(x: np.ndarray, y: np.ndarray, mask: np.ndarray, log_model: bool) -> tuple[np.ndarray, np.ndarray]:
    """drc's self-starting values ``(F, 4)`` and whether they exist ``(F,)``.

    ``c0, d0`` widen the response range by 0.1 % of it on each side; ``b0`` and ``e0`` come from the least
    squares line ``log((d0 - y) / (y - c0)) = a + b0 z`` with ``z = log x`` over doses > 0 (LL.4) or
    ``z = x`` (L.4), solved by Householder QR (what R's ``lm`` does): ``e0 = exp(-a / b0)`` (LL.4) or
    ``-a / b0`` (L.4).
    """
    lo = np.where(mask, y, np.inf).min(axis=1)
    hi = np.where(mask, y, -np.inf).max(axis=1)
    widen = 0.001 * (hi - lo)
    c0, d0 = lo - widen, hi + widen
    with np.errstate(divide="ignore", invalid="ignore"):
        target = np.log((d0[:, None] - y) / (y - c0[:, None]))
        z = x.copy() if log_model else np.log(x)
    use = mask & np.isfinite(target) & np.isfinite(z)
    if not log_model:
        use &= x > 0
    intercept, slope, ok = _householder_line(z, target, use)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        e0 = -intercept / slope if log_model else np.exp(-intercept / slope)
    start = np.stack([slope, c0, d0, e0], axis=1)
    return start, ok & np.isfinite(start).all(axis=1)


def _householder_line(z: np.ndarray, t: np.ndarray, use: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares ``t = a + b z`` per row over the ``use`` points by Householder QR of ``[1, z]``.

    Sums run over the points in order (unused points contribute exact zeros), norms are plain
    ``sqrt(sum of squares)``, as in the reference BLAS R links. Returns ``(a, b, ok)``; ``ok`` is False where
    fewer than two points remain or ``z`` is (numerically) constant.
    """
    rows, n = z.shape
    col1 = np.where(use, 1.0, 0.0)
    col2 = np.where(use, z, 0.0)
    rhs = np.where(use, t, 0.0)
    idx = [np.flatnonzero(r) for r in use]
    # Compact each row's used points to the front, in order: the QR acts on those rows only.
    width = max((len(i) for i in idx), default=0)
    a1 = np.zeros((rows, width))
    a2 = np.zeros((rows, width))
    yv = np.zeros((rows, width))
    for r, i in enumerate(idx):
        a1[r, : len(i)] = col1[r, i]
        a2[r, : len(i)] = col2[r, i]
        yv[r, : len(i)] = rhs[r, i]
    count = use.sum(axis=1)
    col2_norm = np.sqrt(_seq_sum(a2 * a2))

    # column 1: reflect onto e_1
    nrm1 = np.sqrt(_seq_sum(a1 * a1))
    nrm1 = np.where(a1[:, 0] != 0, np.copysign(nrm1, a1[:, 0]), nrm1)
    with np.errstate(divide="ignore", invalid="ignore"):
        a1 = (1.0 / nrm1)[:, None] * a1
    a1[:, 0] = 1.0 + a1[:, 0]
    tau = -_seq_sum(a1 * a2) / a1[:, 0]
    a2 = a2 + tau[:, None] * a1
    qraux1 = a1[:, 0].copy()
    r11 = -nrm1
    # column 2: reflect its rows 2.. onto e_2
    rest = a2[:, 1:]
    nrm2 = np.sqrt(_seq_sum(rest * rest))
    deficient = ~(nrm2 > _QR_TOL * col2_norm)
    lead = rest[:, 0] if width > 1 else np.zeros(rows)
    nrm2s = np.where(lead != 0, np.copysign(nrm2, lead), nrm2)
    with np.errstate(divide="ignore", invalid="ignore"):
        rest = (1.0 / nrm2s)[:, None] * rest
    if width > 1:
        rest[:, 0] = 1.0 + rest[:, 0]
    qraux2 = rest[:, 0].copy() if width > 1 else np.zeros(rows)
    r12 = a2[:, 0]
    r22 = -nrm2s
    # Q'y: apply the two reflections
    with np.errstate(divide="ignore", invalid="ignore"):
        v1 = a1.copy()
        v1[:, 0] = qraux1
        tau1 = -_seq_sum(v1 * yv) / v1[:, 0]
        yv = yv + tau1[:, None] * v1
        v2 = rest.copy()
        if width > 1:
            v2[:, 0] = qraux2
        tail = yv[:, 1:]
        tau2 = -_seq_sum(v2 * tail) / qraux2
        tail = tail + tau2[:, None] * v2
        b = tail[:, 0] / r22 if width > 1 else np.full(rows, np.nan)
        a = (yv[:, 0] + (-b) * r12) / r11
    ok = (count >= 2) & ~deficient & np.isfinite(a) & np.isfinite(b)
    return a, b, ok


def _seq_sum(values: np.ndarray) -> np.ndarray:
    """Row sums ``(R,)`` of ``(R, K)`` in index order (a left-to-right loop, as Fortran's ``ddot``)."""
    out = np.zeros(values.shape[0])
    for k in range(values.shape[1]):
        out = out + values[:, k]
    return out


def _drm(
    x: np.ndarray, y: np.ndarray, mask: np.ndarray, fixed: np.ndarray, log_model: bool, maxit: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One drc fit per series (LL.4, or L.4 on log doses): ``(ok (F,), params (F, 4), iterations (F,))``."""
    n_series = x.shape[0]
    if log_model:
        dose_scale = np.ones(n_series)
        resp_scale = np.ones(n_series)
    else:
        dose_scale = _power_scale(_median(x, mask))
        resp_scale = _power_scale(_median(y, mask))
    xs = np.where(mask, x / dose_scale[:, None], 1.0)
    ys = np.where(mask, y / resp_scale[:, None], 0.0)
    scale = np.stack([np.ones(n_series), resp_scale, resp_scale, dose_scale], axis=1)
    start, ok = _start_values(xs, ys, mask, log_model)
    free = np.isnan(fixed)
    fixed_scaled = fixed / scale
    start = np.where(free, start, fixed_scaled)
    parscale = np.where(free, np.where(np.abs(start) < _PARSCALE_FLOOR, 1.0, np.abs(start)), 1.0)
    curve = _l4 if log_model else _ll4  # (floating-point warnings are off around the fit below)
    params = np.full((n_series, 4), np.nan)
    iterations = np.zeros(n_series, dtype=np.int64)
    rows = np.flatnonzero(ok)
    if rows.size == 0:
        return ok, params, iterations

    objective = _ResidualSumOfSquares(curve, xs[rows], ys[rows], mask[rows])
    with np.errstate(all="ignore"):  # log(0), exp overflow: R's inf / NaN semantics are wanted
        result = minimise(objective, start[rows], parscale[rows], free[rows], maxit=maxit, reltol=1e-7, ndeps=_NDEPS)
        good = ~result.failed
        u = np.where(free[rows], result.par / parscale[rows], start[rows])
        good &= _hessian_is_finite(objective, u, parscale[rows], free[rows])
    params[rows] = np.where(free[rows], result.par * scale[rows], fixed[rows])
    iterations[rows] = result.iterations
    ok = np.zeros(n_series, dtype=bool)
    ok[rows] = good
    return ok, params, iterations


class _ResidualSumOfSquares:
    """The objective of a batch of fits: ``sum((y - f(x; p))^2)`` over each series' points, summed in order in
    extended precision (R's ``sum`` uses a long double accumulator), on the scaled data.

    ``obj(rows, points)`` takes ``(A, P, 4)`` parameter vectors and returns ``(A, P)``; ``obj.one(row)`` is the
    same for one series, with less overhead. The points carry the fixed parameters too: the minimiser keeps
    them at their start values, which are the fixed values.
    """

    def __init__(self, curve: Callable[..., np.ndarray], x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> None:
        self.curve, self.x, self.y, self.mask = curve, x, y, mask

    def __call__(self, rows: np.ndarray, points: np.ndarray) -> np.ndarray:
        p = points
        fitted = self.curve(self.x[rows][:, None, :], p[:, :, 0:1], p[:, :, 1:2], p[:, :, 2:3], p[:, :, 3:4])
        resid = self.y[rows][:, None, :] - fitted
        sq = np.where(self.mask[rows][:, None, :], resid * resid, 0.0)
        return _sequential_long_sum(sq)

    def one(self, row: int) -> Callable[[np.ndarray], np.ndarray]:
        """``points (P, 4) -> values (P,)`` for series ``row`` alone (no gathering, no padding)."""
        n = int(self.mask[row].sum())
        x, y, curve = self.x[row, :n], self.y[row, :n], self.curve
        short = n < 8  # numpy adds fewer than 8 terms left to right

        def objective(p: np.ndarray) -> np.ndarray:
            b, c, d, e = p.T[:, :, None]
            resid = np.subtract(y, curve(x, b, c, d, e))
            np.multiply(resid, resid, out=resid)
            if short:
                return resid.astype(np.longdouble).sum(axis=1).astype(float)
            return _sequential_long_sum(resid)

        return objective


def _sequential_long_sum(sq: np.ndarray) -> np.ndarray:
    """Sums over the last axis, left to right in long double (R's ``sum``), rounded to double.

    numpy adds fewer than 8 terms left to right itself; longer rows get an explicit loop (numpy would pair them).
    """
    if sq.shape[-1] < 8:
        return sq.astype(np.longdouble).sum(axis=-1).astype(float)
    acc = np.zeros(sq.shape[:-1], dtype=np.longdouble)
    for k in range(sq.shape[-1]):
        acc += sq[..., k]
    return acc.astype(float)


def _hessian_is_finite(objective: object, u: np.ndarray, parscale: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Whether R's finite-difference Hessian at the optimum meets only finite values ``(A,)``.

    ``optim(hessian = TRUE)`` differentiates the numerical gradient with steps ``ndeps / parscale_i`` on the
    scaled parameter ``i``, so each gradient is taken at ``u +- (ndeps / parscale_i) e_i +- ndeps e_j``; a
    non-finite value there is an error in R, and drc then reports the fit as failed.
    """
    a, n = u.shape
    pts = []
    for i in range(n):
        for sign_i in (1.0, -1.0):
            shifted = u.copy()
            shifted[:, i] = u[:, i] + np.where(free[:, i], sign_i * _NDEPS / parscale[:, i], 0.0)
            for j in range(n):
                for sign_j in (1.0, -1.0):
                    p = shifted.copy()
                    p[:, j] = shifted[:, j] + np.where(free[:, j], sign_j * _NDEPS, 0.0)
                    pts.append(p * parscale)
    values = objective(np.arange(a), np.stack(pts, axis=1))  # type: ignore[operator]
    return np.isfinite(values).all(axis=1)


def ec50_log10(params: np.ndarray, model: np.ndarray) -> np.ndarray:
    """``log10`` of the EC50 ``(F,)`` (``e`` for LL.4, ``exp(e)`` for L.4), for reports."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(model == "L.4", params[:, 3] / math.log(10.0), np.log10(params[:, 3]))
    return np.where(model == "", np.nan, out)
