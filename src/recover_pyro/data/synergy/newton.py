"""The one-dimensional Newton iteration behind SynergyFinder 2.x's Loewe score.

SynergyFinder 2.x (the rules of DrugComb's published scores) finds the Loewe-additive response ``y`` of a
combination ``(x1, x2)`` as the root of

    g(y) = x1 / X1(y) + x2 / X2(y) - 1,

``X_k(y)`` being the dose of drug ``k`` alone that gives response ``y``, with R's nleqslv (Newton's method, the
double-dogleg trust region of Dennis and Schnabel, *Numerical Methods for Unconstrained Optimization and
Nonlinear Equations*, 1996, sections 6.4-6.5) started at ``max(c1, c2) + 1``. In one dimension the double
dogleg reduces to the Newton step cut to the trust radius; this module follows that iteration:

* Jacobian by a forward difference with step ``sqrt(eps) (1 + |y|)``; a non-finite value there stops the
  solver with an error;
* the first trust radius is the first Newton step's length; a trial point whose ``g`` is not finite counts
  as a very large residual (the radius shrinks to a tenth);
* a trial is accepted when ``g^2 / 2`` falls by at least ``1e-4`` of the linear prediction; otherwise the radius
  shrinks (to between a tenth and a half, from the quadratic model); a good step may double it;
* stop when ``|g| <= ftol`` (converged), when the step is below ``xtol`` relative to ``y``, or after
  ``maxit`` iterations.

:func:`solve` reports whether it converged (``|g| <= ftol``); SynergyFinder's fallback for the rest (the larger
single-drug response at the summed dose) is the caller's. (nleqslv also accepts a stalled iteration whose
step fell below ``xtol``; on the reference blocks those cells match SynergyFinder 2.3.5 only when treated as
not converged, so they are: see docs/synergy.md.)
"""

from __future__ import annotations

import math
import sys
from typing import Callable

_EPS = 2.220446049250313e-16
_FD_STEP = math.sqrt(_EPS)
#: What a non-finite residual becomes inside the trust-region test (forces a smaller step).
_HUGE_RESIDUAL = math.sqrt(sys.float_info.max)


def solve(
    g: Callable[[float], float], y0: float, ftol: float = 1e-8, xtol: float = 1e-8, maxit: int = 150
) -> tuple[float, bool]:
    """Root of ``g`` near ``y0`` by the trust-region Newton iteration of the module docstring.

    Returns:
        ``(y, converged)``: the last point and whether ``|g(y)| <= ftol`` there.
    """
    gc = g(y0)
    if not math.isfinite(gc):
        return y0, False
    yc = y0
    if abs(gc) <= ftol:
        return yc, True
    fc = 0.5 * gc * gc
    delta = -1.0
    for _ in range(maxit):
        h = _FD_STEP + _FD_STEP * abs(yc)
        h = (yc + h) - yc
        gs = g(yc + h)
        if not math.isfinite(gs):
            return yc, False  # nleqslv: "non-finite value(s) detected in jacobian"
        jac = (gs - gc) / h
        if jac == 0.0:
            return yc, False  # singular Jacobian
        newton = -gc / jac
        length = abs(newton)
        if delta < 0:
            delta = length
        retcd = 4
        y_prev = g_prev = f_prev = math.nan
        while retcd > 1:
            if length <= delta:
                step, delta, full = newton, length, True
            else:
                step, full = newton * (delta / length), False
            f_pred = 0.5 * (jac * step + gc) ** 2
            yp = yc + step
            gp = g(yp)
            if not math.isfinite(gp):
                gp = _HUGE_RESIDUAL
            fp = 0.5 * gp * gp
            ared, pred, slope = fp - fc, f_pred - fc, jac * gc * step
            if retcd == 3 and (fp >= f_prev or ared > 1e-4 * slope):
                retcd, yp, gp, fp, delta = 0, y_prev, g_prev, f_prev, 0.5 * delta
            elif ared > 1e-4 * slope:
                if abs(step) / max(abs(yp), 1.0) < xtol:
                    retcd = 1
                else:
                    retcd = 2
                    shrink = -slope * abs(step) / (2.0 * (ared - slope))
                    delta = 0.1 * delta if shrink < 0.1 * delta else min(0.5 * delta, shrink)
            elif retcd != 2 and abs(pred - ared) <= 0.1 * abs(ared) and not full:
                retcd, y_prev, g_prev, f_prev, delta = 3, yp, gp, fp, 2.0 * delta
            else:
                retcd = 0
                if ared >= 0.1 * pred:
                    delta = 0.5 * delta
                elif ared <= 0.75 * pred:
                    delta = 2.0 * delta
        if abs(gp) <= ftol:
            return yp, True
        if retcd == 1 or abs(yp - yc) / max(abs(yp), 1.0) <= xtol:
            return yp, False
        yc, gc, fc = yp, gp, fp
    return yc, False
