"""The fitting procedure of Alabdulmohsin, Neyshabur, Zhai, "Revisiting Neural Scaling Laws in Language and Vision"
(NeurIPS 2022) for M2, M3 and M4, as the authors' code runs it (github.com/google-research/google-research, folder
`revisiting_neural_scaling_laws`, `methods/` and the notebook's set-up). Written here from that description.

Every estimator minimises the squared residuals of its log form, log g(e) - log f(x), but not globally: from a fixed
start it alternates a least-squares solve for the parameters that enter linearly with steps on the others, and its
answer is where that iteration stops. So the start, the bounds, the step rules and the stopping rule are all part of
the estimator, and are kept here:

- margin 1e-3: e_inf stays in [max(0, lo - 1e-3), min(y) - 1e-3] and starts at its top; e_0 stays in
  [max(y) + 1e-3, up + 1e-3] (no top without a bound `up`);
- a round = least squares, then for rounds 0-99, 1,000 gradient steps of 1e-8 on the mean squared log residual,
  from round 100 on, 100 Newton steps damped by 0.1 (the diagonal of the Hessian for M4; a coordinate of M4 is only
  moved while its second derivative exceeds 1e-5 in size);
- stop once b changes by less than 1e-10 in a round (M2, M4: only after round 101), or after 10,000 rounds; the
  answer is the last least squares' (b, c, a) with the e_inf (e_0) of the steps after it.

M3's nonlinear parameter g starts at 0 and is set each round to the best of the values that fit one point exactly
(if one beats the current g). M4's least squares are non-negative (log b, -c, a >= 0) on the columns
(1, -log x, log(e_0 - y)) with e_0 at its start: the reference builds that matrix once, so its e_0 moves only in
the steps.

The reference takes up to 1.1 million steps per curve one by one (1-120 s per fit on this machine). Here curves are
run as one batch (numpy over a batch axis, finished curves dropped) and two kinds of step are shortened without
leaving the reference's path: a gradient round takes several of its 1e-8 steps at once where the curvature allows
(`gd_step`), and a Newton round jumps to where its 100 damped steps end (`newton_round` for M2 and for M4 where
a = 0, `newton_round_2d` for M4 otherwise), falling back to the steps one by one wherever that is not safe. On the
benchmark tasks checked, RMSEs agree with the reference's to 0.1% or better, M4's to 1% (tests/test_scaling.py).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

MARGIN = 1e-3
GD_ROUNDS, GD_STEPS, GD_LR, GD_TOL = 100, 1000, 1e-8, 0.005
NEWTON_STEPS, NEWTON_LR, MIN_CURVATURE = 100, 0.1, 1e-5
MAX_ROUNDS, STOP = 10_000, 1e-10


class Batch:
    """Curves of different lengths padded into (B, n) arrays; `w` marks real points, `n` counts them. Padding
    repeats a curve's last point, so every logarithm stays finite, and has weight 0 in every mean and solve."""

    def __init__(self, xs: list[np.ndarray], ys: list[np.ndarray]):
        width = max(len(x) for x in xs)
        self.w = np.zeros((len(xs), width))
        self.x, self.y = np.ones_like(self.w), np.ones_like(self.w)
        for i, (x, y) in enumerate(zip(xs, ys)):
            order = np.argsort(x, kind="stable")
            self.x[i], self.y[i] = x[order][-1], y[order][-1]
            self.x[i, :len(x)], self.y[i, :len(x)], self.w[i, :len(x)] = x[order], y[order], 1.0
        self.n = self.w.sum(axis=1)
        self.ymin = np.array([y.min() for y in ys])
        self.ymax = np.array([y.max() for y in ys])


def line_fit(u, t, w, n):
    """Weighted least squares t = a + s u per row (closed form, centred): (a, s)."""
    mu, mt = (w * u).sum(1) / n, (w * t).sum(1) / n
    du = (u - mu[:, None]) * w
    s = (du * (t - mt[:, None])).sum(1) / (du * du).sum(1)
    return mt - s * mu, s


def nnls_rows(A, t, w):
    """Non-negative least squares per row, by trying every support: the optimum is the unconstrained solution on
    its own support, so the best feasible one among all supports is the optimum (3 columns: 7 supports)."""
    A, t = A * w[..., None], t * w
    best_cost = (t * t).sum(1)
    best = np.zeros(A.shape[::2])
    for k in range(1, A.shape[2] + 1):
        for support in combinations(range(A.shape[2]), k):
            sub = A[:, :, support]
            q, r = np.linalg.qr(sub)
            coef = np.linalg.solve(r, np.einsum("bnk,bn->bk", q, t)[..., None])[..., 0]
            cost = ((np.einsum("bnk,bk->bn", sub, coef) - t) ** 2).sum(1)
            take = np.all(coef >= 0, axis=1) & (cost < best_cost)
            best_cost = np.where(take, cost, best_cost)
            full = np.zeros_like(best)
            full[:, support] = coef
            best[take] = full[take]
    return best


def gd_step(curvature, left):
    """The time of the next gradient step in a gradient round (1,000 steps of 1e-8, 1e-5 in all). Where the
    objective is flat enough for it (curvature * step <= GD_TOL), several of the reference's steps are taken as one:
    the same gradient-flow path to within about GD_TOL / 2 of the distance moved, at a fraction of the cost. Never
    shorter than one reference step, so at most 1,000 steps per round; 0 once a curve's round is done."""
    with np.errstate(divide="ignore"):
        dt = np.maximum(GD_TOL / curvature, GD_LR)
    dt = np.where(left - dt < 0.5 * GD_LR, left, dt)
    return np.minimum(dt, left)


def newton_round(derivatives, e, lo, hi, min_h=None):
    """A round of the reference's 100 Newton steps damped by 0.1 on one variable (gradient and second derivative
    from `derivatives(e, rows)`), projected into [lo, hi]. Near the conditional minimum z each step shrinks the
    distance to it by 0.9, so the round ends at z + 0.9^100 (e - z): z is found by undamped, projected Newton
    steps, and that end taken directly, where it is safe (positive curvature at e, at z and halfway, z converged
    inside the interval or at a bound the steps push against). Elsewhere the 100 steps are taken one by one.
    `min_h`: M4's rule, a step only where the second derivative exceeds it in size (M2 has none)."""
    all_rows = np.arange(len(e))
    floor = 0.0 if min_h is None else min_h
    z = e.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(60):
            g_z, h_z = derivatives(z, all_rows)  # at the z that the loop returns, once nothing moves
            if i == 0:
                safe = h_z > floor  # curvature at the start
            z_new = clip(z - np.where(h_z > 0, g_z / h_z, 0.0), lo, hi)
            moved = np.abs(z_new - z) > 1e-15 * np.maximum(np.abs(z), 1.0)
            z = np.where(moved, z_new, z)
            if not np.any(moved):
                break
    safe &= ~moved & (h_z > floor) & (derivatives(0.5 * (e + z), all_rows)[1] > floor)
    pushed = ((z >= hi) & (g_z < 0)) | ((z <= lo) & (g_z > 0))
    inside = (z > lo) & (z < hi)
    safe &= inside | pushed
    out = np.where(pushed, z, clip(z + (1 - NEWTON_LR) ** NEWTON_STEPS * (e - z), lo, hi))
    slow = np.flatnonzero(~safe)
    if len(slow):
        v = e[slow]
        for _ in range(NEWTON_STEPS):
            g, h = derivatives(v, slow)
            if min_h is None:
                v = clip(v - NEWTON_LR * g / h, lo[slow], hi[slow])
            else:
                with np.errstate(divide="ignore", invalid="ignore"):
                    v = clip(np.where(np.abs(h) > min_h, v - NEWTON_LR * g / h, v), lo[slow], hi[slow])
        out[slow] = v
    return out


def newton_round_2d(derivatives, ei, e0, box):
    """M4's round of 100 diagonal Newton steps damped by 0.1 on (e_inf, e_0), for curves with a > 0. Near the
    conditional minimum z a step is the linear map M = I - 0.1 D^-1 H (H the Hessian, D its diagonal), so the
    round ends at z + M^100 (start - z): z is found by full Newton steps, and that end taken directly where it is
    safe (H positive definite with both diagonal terms above 1e-5 at the start, at z and halfway; z converged
    strictly inside the box; the end inside it). Returns the end, and which rows were not safe (None there)."""
    lo, hi, floor0, top0 = box
    rows = np.arange(len(ei))
    zi, z0 = ei.copy(), e0.copy()
    ok = np.ones(len(ei), dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for _ in range(40):
            g_i, g_0, h_i, h_0, h_x = derivatives(zi, z0, rows)
            det = h_i * h_0 - h_x ** 2
            di, d0 = (h_0 * g_i - h_x * g_0) / det, (h_i * g_0 - h_x * g_i) / det
            ok &= np.isfinite(di) & np.isfinite(d0)
            di, d0 = np.where(ok, di, 0.0), np.where(ok, d0, 0.0)
            zi, z0 = zi - di, z0 - d0
            ok &= (zi > lo) & (zi < hi) & (z0 > floor0) & (z0 < top0)
            zi, z0 = np.where(ok, zi, ei), np.where(ok, z0, e0)
            moved = (np.abs(di) > 1e-15 * np.maximum(np.abs(zi), 1.0)) | \
                (np.abs(d0) > 1e-15 * np.maximum(np.abs(z0), 1.0))
            if not np.any(moved & ok):
                break
        ok &= ~moved
        for t in (0.0, 0.5, 1.0):
            _, _, h_i, h_0, h_x = derivatives(ei + t * (zi - ei), e0 + t * (z0 - e0), rows)
            ok &= (h_i > MIN_CURVATURE) & (h_0 > MIN_CURVATURE) & (h_i * h_0 > h_x ** 2)
        # M at z (h_i, h_0, h_x from t = 1), raised to the 100th power by squaring: 100 = 64 + 32 + 4
        m = np.zeros((len(ei), 2, 2))
        m[:, 0, 0] = m[:, 1, 1] = 1 - NEWTON_LR
        m[:, 0, 1], m[:, 1, 0] = -NEWTON_LR * h_x / h_i, -NEWTON_LR * h_x / h_0
        m = np.where(ok[:, None, None], m, 0.0)
        power, result = m, None
        for bit in range(7):
            if NEWTON_STEPS >> bit & 1:
                result = power if result is None else result @ power
            power = power @ power
        end_i = zi + result[:, 0, 0] * (ei - zi) + result[:, 0, 1] * (e0 - z0)
        end_0 = z0 + result[:, 1, 0] * (ei - zi) + result[:, 1, 1] * (e0 - z0)
    ok &= (end_i >= lo) & (end_i <= hi) & (end_0 >= floor0) & (end_0 <= top0)
    return end_i, end_0, ok


def clip(v, lo, hi):
    return np.minimum(np.maximum(v, lo), hi)  # the reference's order: lower bound first, then upper


def still_moving(rows: np.ndarray, b: np.ndarray, old_b: np.ndarray, may_stop: bool = True) -> np.ndarray:
    """The reference's stopping rule, shared by M2-M4: a curve stops once its b changed by less than STOP in a round
    (and, for M2 and M4, only once `may_stop`: past the gradient rounds). Records b in old_b; returns the rows that
    go on."""
    done = (np.abs(b - old_b[rows]) < STOP) & may_stop
    old_b[rows] = b
    return rows[~done]


def fit_m2(batch: Batch, lo_bound: float = 0.0) -> dict[str, np.ndarray]:
    """e - e_inf = b x^c."""
    B = len(batch.n)
    lo, hi = np.full(B, max(0.0, lo_bound - MARGIN)), batch.ymin - MARGIN
    e_inf, log_b, c, rounds = hi.copy(), np.zeros(B), np.full(B, -0.5), np.zeros(B, dtype=int)
    old_b, active = np.ones(B), np.arange(B)
    u = np.log(batch.x)
    for k in range(MAX_ROUNDS):
        rows = active
        y, w, n = batch.y[rows], batch.w[rows], batch.n[rows]
        e = e_inf[rows]
        lb, s = line_fit(u[rows], np.log(y - e[:, None]), w, n)
        log_f = lb[:, None] + s[:, None] * u[rows]
        lo_r, hi_r, wn = lo[rows], hi[rows], w / n[:, None]
        if k < GD_ROUNDS:
            left = np.full(len(rows), GD_STEPS * GD_LR)
            while np.any(left > 0):
                d = y - e[:, None]
                r = np.log(d) - log_f
                q = wn / d
                grad, curvature = -(q * r).sum(1), (q / d * np.abs(1 - r)).sum(1)
                dt = gd_step(curvature, left)
                e, left = clip(e - dt * grad, lo_r, hi_r), left - dt
        else:
            def derivatives(e, sel):
                d = y[sel] - e[:, None]
                r = np.log(d) - log_f[sel]
                q = wn[sel] / d
                return -(q * r).sum(1), (q / d * (1 - r)).sum(1)

            e = newton_round(derivatives, e, lo_r, hi_r)
        e_inf[rows], log_b[rows], c[rows], rounds[rows] = e, lb, s, k + 1
        active = still_moving(rows, np.exp(lb), old_b, may_stop=k > GD_ROUNDS + 1)
        if not len(active):
            break
    return {"b": np.exp(log_b), "c": c, "e_inf": e_inf, "rounds": rounds}


def fit_m3(batch: Batch) -> dict[str, np.ndarray]:
    """e = b (1/x + g)^(-c), reported with c <= 0 (the reference writes b (1/x + g)^c with c >= 0)."""
    B = len(batch.n)
    g, log_b, c, rounds = np.zeros(B), np.zeros(B), np.zeros(B), np.zeros(B, dtype=int)
    old_b, active = np.ones(B), np.arange(B)
    log_y = np.log(batch.y)
    for k in range(MAX_ROUNDS):
        rows = active
        x, w, n, ly = batch.x[rows], batch.w[rows], batch.n[rows], log_y[rows]
        lb, s = line_fit(np.log(1 / x + g[rows, None]), ly, w, n)
        s = np.maximum(s, 0.0)  # the reference clips the exponent, after its unconstrained solve

        def sse(gamma):  # (rows, candidates) -> objective of each candidate g
            pred = lb[:, None, None] + s[:, None, None] * np.log(1 / x[:, None, :] + gamma[..., None])
            return (w[:, None, :] * (ly[:, None, :] - pred) ** 2).sum(-1)

        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            # g that puts point i exactly on the curve: (y_i / b)^(1/c) - 1/x_i
            candidates = np.exp((ly - lb[:, None]) / s[:, None]) - 1 / x
            usable = (candidates >= 0) & (w > 0)
            values = np.where(usable, sse(np.where(usable, candidates, 0.0)), np.inf)
        current = sse(g[rows, None])[:, 0]
        # the first of equal candidates wins, and only a strict improvement replaces the current g
        best = np.argmin(values, axis=1)
        better = values[np.arange(len(rows)), best] < current
        g_new = np.where(better, candidates[np.arange(len(rows)), best], g[rows])
        g[rows], log_b[rows], c[rows], rounds[rows] = g_new, lb, -s, k + 1
        active = still_moving(rows, np.exp(lb), old_b)
        if not len(active):
            break
    return {"b": np.exp(log_b), "c": c, "g": g, "rounds": rounds}


def fit_m4(batch: Batch, e_0_start: np.ndarray, up_bound: np.ndarray, lo_bound: float = 0.0) -> dict:
    """(e - e_inf) / (e_0 - e)^a = b x^c. `e_0_start` and `up_bound` (NaN: none) per curve."""
    B = len(batch.n)
    lo, hi = np.full(B, max(0.0, lo_bound - MARGIN)), batch.ymin - MARGIN
    floor0 = batch.ymax + MARGIN
    top0 = np.where(np.isnan(up_bound), np.inf, up_bound + MARGIN)
    e_inf, e_0 = hi.copy(), np.asarray(e_0_start, dtype=np.float64).copy()
    log_b, c, a, rounds = np.zeros(B), np.full(B, -0.5), np.zeros(B), np.zeros(B, dtype=int)
    old_b, active = np.ones(B), np.arange(B)
    u = np.log(batch.x)
    A = np.stack([np.ones_like(u), -u, np.log(e_0[:, None] - batch.y)], axis=2)  # fixed at the start's e_0
    for k in range(MAX_ROUNDS):
        rows = active
        y = batch.y[rows]
        ei, e0 = e_inf[rows], e_0[rows]
        coef = nnls_rows(A[rows], np.log(y - ei[:, None]), batch.w[rows])
        lb, s, al = coef[:, 0], -coef[:, 1], coef[:, 2]
        log_f = lb[:, None] + s[:, None] * u[rows]
        bounds = lo[rows], hi[rows], floor0[rows], top0[rows]
        wn = batch.w[rows] / batch.n[rows, None]
        if k < GD_ROUNDS:
            left = np.full(len(rows), GD_STEPS * GD_LR)
            while np.any(left > 0):
                ei, e0, left = _m4_step(wn, y, log_f, al, ei, e0, bounds, left)
        else:
            ei, e0 = _m4_newton_round(wn, y, log_f, al, ei, e0, bounds)
        e_inf[rows], e_0[rows], log_b[rows], c[rows], a[rows], rounds[rows] = ei, e0, lb, s, al, k + 1
        active = still_moving(rows, np.exp(lb), old_b, may_stop=k > GD_ROUNDS + 1)
        if not len(active):
            break
    return {"b": np.exp(log_b), "c": c, "a": a, "e_inf": e_inf, "e_0": e_0, "rounds": rounds}


def _m4_newton_round(wn, y, log_f, al, ei, e0, bounds):
    """Where the reference's steps leave e_0 where it is (its second derivative at most 1e-5 in size, always so
    where a = 0, an exact zero of the non-negative solve; or e_0 at a bound its step pushes against) the round is
    one-dimensional in e_inf (checked again halfway and at its end); elsewhere two-dimensional. Rows where neither
    shortcut is safe step one by one."""
    lo, hi, floor0, top0 = bounds
    ei, e0 = ei.copy(), e0.copy()

    def derivatives_2d(zi, z0, rows):
        d_inf, d_0 = y[rows] - zi[:, None], z0[:, None] - y[rows]
        a = al[rows, None]
        r = np.log(d_inf) - a * np.log(d_0) - log_f[rows]
        q_inf, q_0 = wn[rows] / d_inf, wn[rows] / d_0
        return (-(q_inf * r).sum(1), -a[:, 0] * (q_0 * r).sum(1), (q_inf / d_inf * (1 - r)).sum(1),
                a[:, 0] * (q_0 / d_0 * (a + r)).sum(1), a[:, 0] * (q_inf / d_0).sum(1))

    def e0_stays(zi, rows):  # the reference's step leaves e_0 where it is: no curvature, or pushed into a bound
        _, g_0, _, h_0, _ = derivatives_2d(zi, e0[rows], rows)
        push = g_0 / h_0
        return (np.abs(h_0) <= MIN_CURVATURE) | ((e0[rows] <= floor0[rows]) & (push > 0)) | \
            ((e0[rows] >= top0[rows]) & (push < 0))

    every = np.arange(len(ei))
    with np.errstate(divide="ignore", invalid="ignore"):
        still = e0_stays(ei, every)
    flat, slow = np.flatnonzero(still), np.zeros(len(ei), dtype=bool)
    if len(flat):
        def derivatives_1d(e, sel):
            g_i, _, h_i, _, _ = derivatives_2d(e, e0[flat[sel]], flat[sel])
            return g_i, h_i

        start = ei[flat]
        ei[flat] = newton_round(derivatives_1d, start, lo[flat], hi[flat], min_h=MIN_CURVATURE)
        with np.errstate(divide="ignore", invalid="ignore"):
            for t in (0.5, 1.0):  # e_0 must have stayed all the way
                slow[flat] |= ~e0_stays(start + t * (ei[flat] - start), flat)
        ei[flat[slow[flat]]] = start[slow[flat]]
    curved = np.flatnonzero(~still)
    if len(curved):
        box = lo[curved], hi[curved], floor0[curved], top0[curved]
        end_i, end_0, ok = newton_round_2d(lambda zi, z0, sel: derivatives_2d(zi, z0, curved[sel]),
                                           ei[curved], e0[curved], box)
        ei[curved[ok]], e0[curved[ok]] = end_i[ok], end_0[ok]
        slow[curved[~ok]] = True
    slow = np.flatnonzero(slow)
    if len(slow):
        vi, v0 = ei[slow], e0[slow]
        sub = tuple(b[slow] for b in bounds)
        for _ in range(NEWTON_STEPS):
            vi, v0, _ = _m4_step(wn[slow], y[slow], log_f[slow], al[slow], vi, v0, sub, None)
        ei[slow], e0[slow] = vi, v0
    return ei, e0


def _m4_step(wn, y, log_f, al, ei, e0, bounds, left):
    """A gradient step (with `left`, the time left in the round) or a damped Newton step (left=None)."""
    lo, hi, floor0, top0 = bounds
    d_inf, d_0 = y - ei[:, None], e0[:, None] - y
    r = np.log(d_inf) - al[:, None] * np.log(d_0) - log_f
    q_inf, q_0 = wn / d_inf, wn / d_0
    g_inf, g_0 = -(q_inf * r).sum(1), -al * (q_0 * r).sum(1)
    if left is None:
        h_inf = (q_inf / d_inf * (1 - r)).sum(1)
        h_0 = al * (q_0 / d_0 * (al[:, None] + r)).sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ei = np.where(np.abs(h_inf) > MIN_CURVATURE, ei - NEWTON_LR * g_inf / h_inf, ei)
            e0 = np.where(np.abs(h_0) > MIN_CURVATURE, e0 - NEWTON_LR * g_0 / h_0, e0)
    else:  # a bound on the Hessian's largest eigenvalue (Gershgorin) sets the step
        cross = al * (q_inf / d_0).sum(1)
        curvature = np.maximum((q_inf / d_inf * np.abs(1 - r)).sum(1),
                               al * (q_0 / d_0 * np.abs(al[:, None] + r)).sum(1)) + cross
        dt = gd_step(curvature, left)
        ei, e0, left = ei - dt * g_inf, e0 - dt * g_0, left - dt
    # the reference projects e_inf into its interval, then e_0 above max(y) + margin and below its bound
    return clip(ei, lo, hi), np.minimum(np.maximum(e0, floor0), top0), left
