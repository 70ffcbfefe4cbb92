"""A batched variable-metric (BFGS) minimiser that takes the steps R's ``optim(method="BFGS")`` takes.

SynergyFinder fits its dose-response curves with R's drc, which minimises the residual sum of squares with
``optim(method="BFGS")`` from a rough self-starting value. That minimiser is Nash's variable-metric algorithm
(J. C. Nash, *Compact Numerical Methods for Computers*, 2nd ed. 1990, Algorithm 21) with a central-difference
gradient. On noisy blocks the residual surface has long, nearly flat valleys, and where the search stops in
such a valley is decided by the exact sequence of steps: a textbook quasi-Newton method or a different line
search ends elsewhere in the valley, and ZIP scores move by whole points. So this module follows the
published algorithm step for step, in IEEE double arithmetic with the same order of operations, for many
independent problems at once (numpy arrays over problems; every problem keeps its own state):

* work on scaled parameters ``u = p / parscale`` (R's ``parscale``);
* gradient by central differences with step ``ndeps = 1e-3`` on the scaled parameters,
  ``g_i = (f(u + h e_i) - f(u - h e_i)) / (2 h)``; a non-finite difference is a failure;
* inverse-Hessian approximation ``B`` (identity at every restart); search direction ``t = -B g``;
* backtracking line search from step 1, multiplying the step by 0.2 until the Armijo test
  ``f(x + s t) <= f_min + 1e-4 s g't`` holds or the step no longer moves any parameter
  (``10 + x_i == 10 + x_i + s t_i`` for all ``i``);
* stop when an accepted step lowers ``f`` by no more than ``reltol (|f_min| + reltol)`` right after a
  restart, or after ``maxit`` gradients; restart (``B = I``) after an uphill direction, a failed search,
  a non-positive curvature ``t'y`` or ``2 n`` updates in a row;
* BFGS update ``B += ((1 + y'By / t'y) t t' - (By) t' - t (By)') / t'y`` with ``t`` the step and ``y`` the
  gradient change.

Many problems are solved in lock step (numpy arrays over the problems; a problem whose line search needs more
trial steps than another's spends more rounds); each round evaluates the objective for all problems that need
it in one call, which is what makes a 1,000-block screen cheap. Once fewer than :data:`SEQUENTIAL_BELOW`
problems are left, each continues in plain Python floats (a generator per problem) with their objective calls
still batched per round: the same operations in the same order, with far less overhead per step. The full
step's gradient probes are evaluated with it, ahead of the search (used only if that step is accepted with
enough decrease, as the published algorithm would then evaluate them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Generator

import numpy as np

#: ``objective(rows, points) -> values``: ``rows`` ``(A,)`` indices of the problems, ``points`` ``(A, P, n)``
#: parameter vectors (on the parameters' own scale, i.e. ``u * parscale``), returns ``(A, P)`` values.
Objective = Callable[[np.ndarray, np.ndarray], np.ndarray]
#: One problem's iteration: yields the points it needs, is sent their values, returns ``(u, f_min, its, ok)``.
Iteration = Generator[np.ndarray, list[float], tuple[list[float], float, int, bool]]

STEP_REDUCTION = 0.2
ARMIJO = 1e-4
NO_CHANGE_SHIFT = 10.0
#: Trial steps evaluated per round of a line search (the first usually passes).
_WINDOW = 2
#: Below this many running problems the rest continue in plain Python floats (numpy's per-call overhead would
#: dominate a vectorised lock step of so few), their objective calls still batched.
SEQUENTIAL_BELOW = 24


@dataclass(frozen=True)
class MinimiseResult:
    """Where each of ``F`` problems stopped.

    Attributes:
        par: ``(F, n)`` parameters at the end (``u * parscale``; entries of fixed parameters are left as given).
        value: ``(F,)`` objective at ``par`` (NaN for a failed problem).
        iterations: ``(F,)`` gradient evaluations (R's ``counts["gradient"]``).
        failed: ``(F,)`` True where the start value or a finite-difference gradient was not finite (R stops
            with an error there).
    """

    par: np.ndarray
    value: np.ndarray
    iterations: np.ndarray
    failed: np.ndarray


def _steps(count: int) -> np.ndarray:
    """``1, 0.2, 0.2 * 0.2, ...``: the trial steps by repeated multiplication, as the search forms them."""
    out = np.empty(count)
    step = 1.0
    for k in range(count):
        out[k] = step
        step *= STEP_REDUCTION
    return out


# 1, 0.2, ... 0.2**k until a step below every representable change (no search gets further).
_STEP_TABLE = _steps(480)


def gradient_points(u: np.ndarray, parscale: np.ndarray, free: np.ndarray, ndeps: float) -> np.ndarray:
    """``(A, 2n, n)`` points of the central differences: ``u +- ndeps e_i`` for each ``i``, times ``parscale``.

    Point ``2i`` is ``u + h e_i``, point ``2i + 1`` is ``u - h e_i`` (rows of fixed parameters are ``u``).
    """
    n = u.shape[1]
    base = u * parscale
    pts = np.repeat(base[:, None, :], 2 * n, axis=1)
    for i in range(n):
        up = (u[:, i] + ndeps) * parscale[:, i]
        down = (u[:, i] - ndeps) * parscale[:, i]
        pts[:, 2 * i, i] = np.where(free[:, i], up, base[:, i])
        pts[:, 2 * i + 1, i] = np.where(free[:, i], down, base[:, i])
    return pts


def _gradient(values: np.ndarray, free: np.ndarray, ndeps: float) -> tuple[np.ndarray, np.ndarray]:
    """Gradient ``(A, n)`` from the ``(A, 2n)`` values at :func:`gradient_points`, and ``(A,)`` finiteness."""
    g = (values[:, 0::2] - values[:, 1::2]) / (2 * ndeps)
    g = np.where(free, g, 0.0)
    return g, np.asarray(np.isfinite(g).all(axis=1))


def minimise(
    objective: Objective,
    start: np.ndarray,
    parscale: np.ndarray,
    free: np.ndarray,
    maxit: int = 500,
    reltol: float = 1e-7,
    ndeps: float = 1e-3,
) -> MinimiseResult:
    """Minimise ``F`` problems with Nash's variable-metric method (R's ``optim(method="BFGS")``).

    Each round evaluates, for every running problem, the full step and the gradient probes around it in one
    objective call: the full step is accepted most of the time, and then the gradient is already there. A
    problem whose full step fails continues its line search (and takes its gradient) in extra rounds.

    Args:
        objective: see :data:`Objective`; called with the free and the fixed parameters of each point
            (fixed ones as given in ``start``).
        start: ``(F, n)`` starting parameters.
        parscale: ``(F, n)`` positive scales: the search works on ``u = p / parscale``.
        free: ``(F, n)`` True for the parameters being optimised; the others stay at ``start``.
        maxit: most gradient evaluations per problem.
        reltol: relative convergence tolerance on the objective.
        ndeps: finite-difference step on the scaled parameters.

    Returns:
        A :class:`MinimiseResult`.
    """
    n_problems, n = start.shape
    free = np.asarray(free, dtype=bool)
    scale_all = np.where(free, parscale, 1.0)
    u_all = np.where(free, start / parscale, start)
    out_u = u_all.copy()
    out_value = np.full(n_problems, np.nan)
    out_iterations = np.ones(n_problems, dtype=np.int64)
    failed = np.zeros(n_problems, dtype=bool)

    f0 = objective(np.arange(n_problems), (u_all * scale_all)[:, None, :])[:, 0]
    failed |= ~np.isfinite(f0)
    rows = np.flatnonzero(~failed)
    g0 = np.zeros((rows.size, n))
    if rows.size:
        vals = objective(rows, gradient_points(u_all[rows], scale_all[rows], free[rows], ndeps))
        g0, finite = _gradient(vals, free[rows], ndeps)
        failed[rows[~finite]] = True
        g0, rows = g0[finite], rows[finite]

    # Compact state of the problems still running (row k belongs to problem rows[k]).
    st = _State(
        rows=rows,
        u=u_all[rows],
        scale=scale_all[rows],
        free=free[rows],
        n_free=free[rows].sum(axis=1),
        g=g0,
        f_min=f0[rows],
        f_last=f0[rows],
        h=np.zeros((rows.size, n, n)),
        gradcount=np.ones(rows.size, dtype=np.int64),
        ilast=np.ones(rows.size, dtype=np.int64),
    )
    eye = np.eye(n)
    while st.rows.size > SEQUENTIAL_BELOW:
        m = st.rows.size
        reset = st.ilast == st.gradcount
        if reset.any():
            st.h[reset] = eye
        x_base = st.u
        # t = -B g and g't: sums in index order (vectorised over i, sequential over j)
        t = np.zeros_like(x_base)
        for j in range(n):
            t = t - st.h[:, :, j] * st.g[:, j : j + 1]
        gradproj = t[:, 0] * st.g[:, 0]
        for i in range(1, n):
            gradproj = gradproj + t[:, i] * st.g[:, i]
        stop_signal = np.zeros(m, dtype=bool)  # "count == n": nothing moved / converged
        down = gradproj < 0.0

        # the full step, and the gradient probes around it, in one call
        x_full = x_base + t  # = X + 1.0 * t
        moved = (((NO_CHANGE_SHIFT + x_base) != (NO_CHANGE_SHIFT + x_full)) & st.free).any(axis=1) & down
        probe = np.concatenate([(x_full * st.scale)[:, None, :], gradient_points(x_full, st.scale, st.free, ndeps)], 1)
        vals = objective(st.rows, probe)
        f_full = vals[:, 0]
        accepted = moved & np.isfinite(f_full) & (f_full <= st.f_min + gradproj * ARMIJO)
        st.f_last = np.where(moved, f_full, st.f_last)
        step = np.ones(m)
        g_new, finite = _gradient(vals[:, 1:], st.free, ndeps)
        have_gradient = accepted.copy()
        st.u = np.where(down[:, None], x_full, x_base)

        retry = np.flatnonzero(moved & ~accepted)  # the full step failed: search on from 0.2
        if retry.size:
            step_r, acc_r, x_r, f_r, _ = _line_search(
                objective,
                st.rows[retry],
                x_base[retry],
                t[retry],
                gradproj[retry],
                st.f_min[retry],
                st.f_last[retry],
                st.scale[retry],
                st.free[retry],
                first=1,
            )
            step[retry], accepted[retry], st.u[retry], st.f_last[retry] = step_r, acc_r, x_r, f_r
        searched = np.flatnonzero(down)
        f_try = st.f_last[searched]
        f_min = st.f_min[searched]
        enough = (f_try > -np.inf) & (np.abs(f_try - f_min) > reltol * (np.abs(f_min) + reltol))
        st.f_min[searched] = np.where(enough, f_min, f_try)
        progress = np.zeros(m, dtype=bool)
        progress[searched] = accepted[searched] & enough
        prog = np.flatnonzero(progress)
        if prog.size:
            st.f_min[prog] = st.f_last[prog]
            late = prog[~have_gradient[prog]]
            if late.size:  # accepted after backtracking: the gradient at the new point is still to take
                pts = gradient_points(st.u[late], st.scale[late], st.free[late], ndeps)
                g_new[late], finite[late] = _gradient(objective(st.rows[late], pts), st.free[late], ndeps)
            failed[st.rows[prog[~finite[prog]]]] = True
            st.gradcount[prog] += 1
            h, ilast = _bfgs_update(
                st.h[prog], step[prog], t[prog], g_new[prog], st.g[prog], st.ilast[prog], st.gradcount[prog]
            )
            st.h[prog], st.ilast[prog], st.g[prog] = h, ilast, g_new[prog]
        stuck = np.flatnonzero(down & ~progress)
        if stuck.size:
            again = st.ilast[stuck] < st.gradcount[stuck]
            stop_signal[stuck] = ~again
            st.ilast[stuck[again]] = st.gradcount[stuck[again]]
        up = np.flatnonzero(~down)
        if up.size:
            just_reset = st.ilast[up] == st.gradcount[up]
            stop_signal[up] = just_reset
            st.ilast[up[~just_reset]] = st.gradcount[up[~just_reset]]

        # "iterations" = gradient evaluations; the budget is checked before the periodic restart
        out_of_budget = st.gradcount >= maxit
        periodic = (st.gradcount - st.ilast > 2 * st.n_free) & ~out_of_budget
        st.ilast[periodic] = st.gradcount[periodic]
        done = out_of_budget | (stop_signal & (st.ilast == st.gradcount)) | failed[st.rows]
        if done.any():
            fin = st.rows[done]
            out_u[fin] = st.u[done]
            out_value[fin] = st.f_min[done]
            out_iterations[fin] = st.gradcount[done]
            st = st.take(~done)

    # The last few: each problem's iteration in plain Python floats (a generator per problem), their objective
    # calls still batched into one per round: far less numpy overhead per step than the lock step above.
    running: dict[int, tuple[Iteration, np.ndarray]] = {}
    for k in range(st.rows.size):
        gen = _iteration(
            st.u[k].tolist(),
            st.scale[k].tolist(),
            np.flatnonzero(st.free[k]).tolist(),
            st.g[k].tolist(),
            float(st.f_min[k]),
            float(st.f_last[k]),
            st.h[k].tolist(),
            int(st.gradcount[k]),
            int(st.ilast[k]),
            maxit,
            reltol,
            ndeps,
        )
        row = int(st.rows[k])
        try:
            running[row] = (gen, next(gen))
        except StopIteration as finished:  # stopped before asking for anything (e.g. uphill right after a restart)
            out_u[row], out_value[row], out_iterations[row] = finished.value[:3]
            failed[row] |= not finished.value[3]
    alone: tuple[int, Callable[[np.ndarray], np.ndarray]] | None = None
    while running:
        if len(running) == 1:  # one problem left: its own fast objective
            ((row, (gen, request)),) = running.items()
            if alone is None or alone[0] != row:
                alone = (row, _single(objective, row))
            answers = {row: alone[1](request).tolist()}
        else:
            answers = _batched_answers(objective, running)
        for row, values in answers.items():
            gen, _ = running[row]
            try:
                running[row] = (gen, gen.send(values))
            except StopIteration as finished:
                u_k, value_k, count_k, ok = finished.value
                out_u[row], out_value[row], out_iterations[row] = u_k, value_k, count_k
                failed[row] |= not ok
                del running[row]

    par = np.where(free, out_u * scale_all, start)
    value = np.where(failed, np.nan, out_value)
    return MinimiseResult(par=par, value=value, iterations=out_iterations, failed=failed)


def _single(objective: Objective, row: int) -> Callable[[np.ndarray], np.ndarray]:
    """``points (P, n) -> values (P,)`` of problem ``row``: the objective's own fast form (``objective.one(row)``)
    if it has one, else the batched call."""
    bind: Callable[[int], Callable[[np.ndarray], np.ndarray]] | None = getattr(objective, "one", None)
    if bind is not None:
        return bind(row)
    index = np.array([row])
    return lambda points: objective(index, points[None])[0]


def _batched_answers(objective: Objective, running: dict[int, tuple[Iteration, np.ndarray]]) -> dict[int, list[float]]:
    """One objective call for the requests (full parameter vectors ``(P, n)``) of every running problem:
    ``row -> values``. Shorter requests are padded with their own first point (those values are dropped)."""
    rows = list(running)
    width = max(request.shape[0] for _, request in running.values())
    full = np.empty((len(rows), width, running[rows[0]][1].shape[1]))
    for a, row in enumerate(rows):
        request = running[row][1]
        full[a, : request.shape[0]] = request
        full[a, request.shape[0] :] = request[0]
    values = objective(np.array(rows), full).tolist()
    return {row: values[a][: running[row][1].shape[0]] for a, row in enumerate(rows)}


def _iteration(
    u: list[float],
    scale: list[float],
    free: list[int],
    g: list[float],
    f_min: float,
    f_last: float,
    h: list[list[float]],
    gradcount: int,
    ilast: int,
    maxit: int,
    reltol: float,
    ndeps: float,
) -> Iteration:
    """The same iteration as :func:`minimise` for one problem, resumed from its state, in Python floats.

    A generator: it yields the points it needs the objective at, ``(P, len(free))`` free parameters on their
    own scale (``u * parscale``), and is sent back their ``P`` values. Works on the free parameters only
    (``free``: their indices), as the published algorithm does (the fixed ones would only add exact zeros to
    its sums); ``h`` is the full ``n x n`` inverse Hessian. Returns the full ``(u, f_min, gradcount, ok)``.
    """
    nf = len(free)
    x = [u[i] for i in free]
    gf = [g[i] for i in free]
    hf = [[h[i][j] for j in free] for i in free]
    s_free = np.array([scale[i] for i in free])
    free_idx = np.array(free)
    # the probes' offsets: row 0 the point itself, rows 1 + 2k and 2 + 2k the point +- ndeps in parameter k
    shifts = np.zeros((1 + 2 * nf, nf))
    for k in range(nf):
        shifts[1 + 2 * k, k], shifts[2 + 2 * k, k] = ndeps, -ndeps
    two_eps = 2 * ndeps
    # full parameter vectors: the fixed parameters as they are (u = their value, scale 1), the free filled in
    template = np.tile(np.array(u) * np.array(scale), (1 + 2 * nf, 1))

    def points(point: list[float], with_probes: bool) -> np.ndarray:
        """``point`` (and, with probes, ``point +- ndeps e_k``) as full parameter vectors ``(P, n)`` on the
        parameters' scale, ``(p_k +- h) s_k`` (adding 0.0 to the other coordinates leaves them exact)."""
        if with_probes:
            full = template.copy()
            full[:, free_idx] = (np.array(point) + shifts) * s_free
        else:
            full = template[:1].copy()
            full[0, free_idx] = np.array(point) * s_free
        return full

    def gradient(vals: list[float]) -> list[float] | None:
        out = [(vals[2 * k + 1] - vals[2 * k + 2]) / two_eps for k in range(nf)]
        return out if all(math.isfinite(v) for v in out) else None

    identity = [[1.0 if i == j else 0.0 for j in range(nf)] for i in range(nf)]
    ok = True
    while True:
        if ilast == gradcount:
            hf = [row[:] for row in identity]
        x_base = x
        t = []
        for row in hf:
            acc = 0.0
            for j in range(nf):
                acc = acc - row[j] * gf[j]
            t.append(acc)
        gradproj = 0.0
        for i in range(nf):
            gradproj = gradproj + t[i] * gf[i]
        stop = False
        if gradproj < 0.0:
            step = 1.0
            accepted = False
            speculative: list[float] | None = None  # the gradient probes that came with the full step
            shifted_base = [NO_CHANGE_SHIFT + v for v in x_base]
            k = 0
            while True:
                x_try = [xb + step * ti for xb, ti in zip(x_base, t)]
                x = x_try  # the parameters hold the last trial point, accepted or not
                if shifted_base == [NO_CHANGE_SHIFT + v for v in x_try]:
                    break  # no parameter moves any more
                vals = yield points(x_try, with_probes=k == 0)  # the full step comes with its gradient probes
                f_last = vals[0]
                if math.isfinite(f_last) and f_last <= f_min + gradproj * step * ARMIJO:
                    accepted = True
                    if k == 0:
                        speculative = vals
                    break
                k += 1
                if k >= _STEP_TABLE.size:
                    break
                step = float(_STEP_TABLE[k])
            enough = f_last > -math.inf and abs(f_last - f_min) > reltol * (abs(f_min) + reltol)
            if not enough:
                f_min = f_last
            if accepted and enough:
                f_min = f_last
                if speculative is None:
                    speculative = yield points(x, with_probes=True)
                g_new = gradient(speculative)
                gradcount += 1
                if g_new is None:  # a non-finite finite difference: R stops with an error
                    ok = False
                    break
                t = [step * ti for ti in t]
                y = [gn - go for gn, go in zip(g_new, gf)]
                d1 = 0.0
                for i in range(nf):
                    d1 = d1 + t[i] * y[i]
                if d1 > 0:
                    xv = []
                    d2 = 0.0
                    for i in range(nf):
                        row = hf[i]
                        acc = 0.0
                        for j in range(nf):
                            acc = acc + row[j] * y[j]
                        xv.append(acc)
                        d2 = d2 + acc * y[i]
                    d2 = 1.0 + d2 / d1
                    for i in range(nf):
                        for j in range(i + 1):
                            val = hf[i][j] + (d2 * t[i] * t[j] - xv[i] * t[j] - t[i] * xv[j]) / d1
                            hf[i][j] = val
                            hf[j][i] = val
                else:
                    ilast = gradcount
                gf = g_new
            elif ilast < gradcount:
                ilast = gradcount
            else:
                stop = True
        elif ilast == gradcount:
            stop = True
        else:
            ilast = gradcount
        if gradcount >= maxit:
            break
        if gradcount - ilast > 2 * nf:
            ilast = gradcount
        if stop and ilast == gradcount:
            break
    full = list(u)
    for k, i in enumerate(free):
        full[i] = x[k]
    return full, f_min, gradcount, ok


@dataclass
class _State:
    """Per-problem state of the running problems (first axis), kept compact as problems finish."""

    rows: np.ndarray
    u: np.ndarray
    scale: np.ndarray
    free: np.ndarray
    n_free: np.ndarray
    g: np.ndarray
    f_min: np.ndarray
    f_last: np.ndarray
    h: np.ndarray
    gradcount: np.ndarray
    ilast: np.ndarray

    def take(self, keep: np.ndarray) -> _State:
        return _State(**{name: value[keep] for name, value in vars(self).items()})


def _line_search(
    objective: Objective,
    rows: np.ndarray,
    x_base: np.ndarray,
    t: np.ndarray,
    gradproj: np.ndarray,
    f_min: np.ndarray,
    f_last: np.ndarray,
    scale: np.ndarray,
    free: np.ndarray,
    first: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Backtracking search along ``t`` for ``D`` problems from the trial step ``0.2**first``, a window of steps
    per round.

    A problem stops at its first trial step that either passes the Armijo test (accepted) or moves no
    parameter at all (not evaluated, "no change"). Steps after that are evaluated too (a round serves all
    problems at once) but ignored.

    Returns:
        ``(step, accepted, x, f, no_change)``, each over the ``D`` problems: the last trial step, whether it
        was accepted, the last trial point (scaled parameters), the objective at the last point actually
        evaluated (``f_last`` if none was), and whether the search ended because the step no longer moves any
        parameter.
    """
    d = rows.size
    step = np.ones(d)
    accepted = np.zeros(d, dtype=bool)
    no_change = np.zeros(d, dtype=bool)
    x_out = x_base.copy()
    f_out = f_last.copy()  # last evaluated objective, carried across windows
    pending = np.arange(d)
    k0 = first
    while pending.size:
        width = min(_WINDOW if k0 == first else 4 * _WINDOW, _STEP_TABLE.size - k0)
        steps = _STEP_TABLE[k0 : k0 + width]
        xb = x_base[pending][:, None, :]
        trial = xb + steps[None, :, None] * t[pending][:, None, :]
        moved = ((NO_CHANGE_SHIFT + xb) != (NO_CHANGE_SHIFT + trial)) & free[pending][:, None, :]
        still = moved.any(axis=2)
        vals = objective(rows[pending], trial * scale[pending][:, None, :])
        bound = f_min[pending][:, None] + gradproj[pending][:, None] * steps[None, :] * ARMIJO
        armijo = np.isfinite(vals) & (vals <= bound)
        stop = ~still | armijo
        last_window = k0 + width >= _STEP_TABLE.size
        resolved = stop.any(axis=1) | last_window
        first_stop = np.where(stop.any(axis=1), stop.argmax(axis=1), width - 1)
        idx = pending[resolved]
        k = first_stop[resolved]
        r = np.flatnonzero(resolved)
        step[idx] = steps[k]
        x_out[idx] = trial[r, k]
        unevaluated = ~still[r, k]
        no_change[idx] = unevaluated | ~armijo[r, k]
        accepted[idx] = ~unevaluated & armijo[r, k]
        previous = np.where(k > 0, vals[r, np.maximum(k - 1, 0)], f_out[idx])
        f_out[idx] = np.where(unevaluated, previous, vals[r, k])
        rest = np.flatnonzero(~resolved)
        f_out[pending[rest]] = vals[rest, -1]
        pending = pending[rest]
        k0 += width
    return step, accepted, x_out, f_out, no_change


def _bfgs_update(
    h: np.ndarray,
    step: np.ndarray,
    direction: np.ndarray,
    g_new: np.ndarray,
    g_old: np.ndarray,
    ilast: np.ndarray,
    gradcount: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """BFGS update of the inverse Hessians ``h`` ``(A, n, n)``; a non-positive curvature ``t'y`` restarts instead.

    ``t = step * direction`` is the step taken, ``y = g_new - g_old`` the change of gradient; sums run in
    index order and entry ``(i, j)``, ``i >= j``, changes by ``(D2 t_i t_j - X_i t_j - t_i X_j) / t'y``
    (``X = B y``, ``D2 = 1 + y'X / t'y``), mirrored to ``(j, i)``: the published algorithm stores the lower
    triangle. Returns the new ``h`` and ``ilast`` (set to ``gradcount`` where the update was skipped).
    """
    n = direction.shape[1]
    t = step[:, None] * direction
    y = g_new - g_old
    d1 = np.zeros(t.shape[0])
    for i in range(n):
        d1 = d1 + t[:, i] * y[:, i]
    positive = d1 > 0
    ilast = np.where(positive, ilast, gradcount)
    x = np.zeros_like(t)
    for j in range(n):
        x = x + h[:, :, j] * y[:, j : j + 1]
    d2 = np.zeros(t.shape[0])
    for i in range(n):
        d2 = d2 + x[:, i] * y[:, i]
    with np.errstate(divide="ignore", invalid="ignore"):
        d2 = 1.0 + d2 / d1
        ti, tj = t[:, :, None], t[:, None, :]
        change = (d2[:, None, None] * ti * tj - x[:, :, None] * tj - ti * x[:, None, :]) / d1[:, None, None]
    lower = np.tril(h + change)
    updated = lower + np.swapaxes(np.tril(lower, -1), 1, 2)
    return np.where(positive[:, None, None], updated, h), ilast
