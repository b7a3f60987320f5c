"""Learning-curve estimators e(x) with one interface: `fit(x, y)`, `predict(x)`, `params`, `name`.

From "Revisiting Neural Scaling Laws in Language and Vision" (Alabdulmohsin, Neyshabur, Zhai, NeurIPS 2022):
- M1: e(x) = b x^c
- M2: e(x) - e_inf = b x^c
- M3: e(x) = b (1/x + g)^(-c), g >= 0
- M4: (e(x) - e_inf) / (e_0 - e(x))^a = b x^c, a >= 0, b > 0, c < 0; the prediction solves this equation for e(x)
All are least squares on the log form (log g(e) - log f(x)). M2-M4 are fitted by default as the paper's authors fit
them (`procedure="reference"`, reuse/scaling/alternating.py): from a fixed start, least squares for the linear
parameters alternating with gradient and Newton steps on e_inf (e_0), or a choice among exact-fit values of g; the
answer is where that iteration stops, not a global minimum. `procedure="grid"` is the global minimum instead: for
fixed nonlinear parameters (e_inf; g; e_inf and e_0) the rest is one linear least-squares solve, so only the
nonlinear ones are searched, on a log-spaced grid of distances to their bounds, then refined locally from the best
grid points (the objective is not unimodal: for M2 a sharp minimum at the true e_inf sits beside a shallow one at 0).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize, minimize_scalar

import reuse.scaling.alternating as alternating

GRID = 64


class ScalingError(ValueError):
    """Data an estimator cannot be fitted on; the message says what is wrong."""


def check_xy(x, y, n_params: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ScalingError(f"x and y must be 1-D and of equal length (got {x.shape} and {y.shape})")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ScalingError("x and y must be finite (found NaN or infinity)")
    if np.any(x <= 0) or np.any(y <= 0):
        raise ScalingError("sizes and losses must be positive")
    if len(np.unique(x)) < n_params:
        raise ScalingError(f"{len(np.unique(x))} distinct points cannot determine {n_params} parameters")
    return x, y


def linear_fit(columns: list[np.ndarray], target: np.ndarray) -> tuple[np.ndarray, float]:
    design = np.stack(columns, axis=1)
    if not (np.all(np.isfinite(design)) and np.all(np.isfinite(target))):
        return np.full(design.shape[1], np.nan), np.inf  # outside the domain: never the optimum
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    return coef, float(np.sum((design @ coef - target) ** 2))


def search_1d(objective, lo: float, hi: float) -> float:
    """Minimise a scalar function on [lo, hi]: a grid, then a bounded refinement around the best grid point."""
    grid = np.linspace(lo, hi, GRID)
    values = [objective(t) for t in grid]
    i = int(np.argmin(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, GRID - 1)]
    refined = minimize_scalar(objective, bounds=(a, b), method="bounded", options={"xatol": 1e-10})
    return float(refined.x) if refined.fun <= values[i] else float(grid[i])


class Estimator:
    name = ""
    n_params = 0
    params: dict

    def __repr__(self):
        return f"{self.name}({', '.join(f'{k}={v:.4g}' for k, v in getattr(self, 'params', {}).items())})"


class M1(Estimator):
    name, n_params = "M1", 2

    def fit(self, x, y):
        x, y = check_xy(x, y, self.n_params)
        (log_b, c), _ = linear_fit([np.ones_like(x), np.log(x)], np.log(y))
        self.params = {"b": float(np.exp(log_b)), "c": float(c)}
        return self

    def predict(self, x):
        return self.params["b"] * np.asarray(x, dtype=np.float64) ** self.params["c"]


PROCEDURES = ("reference", "grid")


class Alternating(Estimator):
    """Shared by M2-M4: `procedure="reference"` (default) is the authors' alternating iteration
    (reuse/scaling/alternating.py); `procedure="grid"` is the global least-squares minimum over the nonlinear
    parameters, searched on a log grid and refined (this project's earlier fit, kept for comparison: README)."""

    def __init__(self, procedure: str = "reference"):
        if procedure not in PROCEDURES:
            raise ScalingError(f"unknown procedure {procedure!r}; choose from {', '.join(PROCEDURES)}")
        self.procedure = procedure

    def fit(self, x, y):
        x, y = check_xy(x, y, self.n_params)
        if self.procedure == "grid":
            return self._fit_grid(x, y)
        return self.fit_many([x], [y])[0]

    def fit_many(self, xs, ys) -> list:
        """The reference procedure on many curves at once (the same answers as one `fit` each, faster)."""
        pairs = [check_xy(x, y, self.n_params) for x, y in zip(xs, ys)]
        if self.procedure == "grid":
            return [type(self)(**self._options())._fit_grid(x, y) for x, y in pairs]
        self._check(pairs)
        batch = alternating.Batch([p[0] for p in pairs], [p[1] for p in pairs])
        with np.errstate(all="ignore"):  # out-of-domain trial steps are clipped back by the projection
            found = self._run(batch, pairs)
        out = []
        for i in range(len(pairs)):
            est = type(self)(**self._options())
            est.rounds = int(found["rounds"][i])
            est.params = {k: float(v[i]) for k, v in found.items() if k != "rounds"}
            out.append(est)
        return out

    def _options(self) -> dict:
        return {"procedure": self.procedure}

    def _check(self, pairs):
        if any(y.min() <= alternating.MARGIN for _, y in pairs):
            raise ScalingError(f"losses must exceed {alternating.MARGIN} (the reference's margin below the "
                               "smallest loss) for the reference procedure; use procedure='grid'")


class M2(Alternating):
    name, n_params = "M2", 3

    def _run(self, batch, pairs):
        return alternating.fit_m2(batch)

    @staticmethod
    def _solve(e_inf, x, y):
        return linear_fit([np.ones_like(x), np.log(x)], np.log(y - e_inf))

    def _fit_grid(self, x, y):
        low = y.min()
        # t = log(min y - e_inf), from "e_inf = 0" down to a gap of 1e-6 of the smallest loss.
        t = search_1d(lambda t: self._solve(low - np.exp(t), x, y)[1], np.log(low * 1e-6), np.log(low))
        e_inf = max(low - np.exp(t), 0.0)
        (log_b, c), _ = self._solve(e_inf, x, y)
        self.params = {"b": float(np.exp(log_b)), "c": float(c), "e_inf": float(e_inf)}
        return self

    def predict(self, x):
        p = self.params
        return p["e_inf"] + p["b"] * np.asarray(x, dtype=np.float64) ** p["c"]


class M3(Alternating):
    name, n_params = "M3", 3

    def _run(self, batch, pairs):
        return alternating.fit_m3(batch)

    def _check(self, pairs):
        pass  # no e_inf, so no margin

    @staticmethod
    def _solve(g, x, y):
        return linear_fit([np.ones_like(x), -np.log(1 / x + g)], np.log(y))

    def _fit_grid(self, x, y):
        # g from negligible (1e-6 / max x, i.e. M1) to dominant (10 / min x), on a log scale; beyond that the curve
        # is flat over the data and b, c are no longer determined.
        t = search_1d(lambda t: self._solve(np.exp(t), x, y)[1], np.log(1e-6 / x.max()), np.log(10 / x.min()))
        g = float(np.exp(t))
        (log_b, c), _ = self._solve(g, x, y)
        self.params = {"b": float(np.exp(log_b)), "c": float(c), "g": g}
        return self

    def predict(self, x):
        p = self.params
        return p["b"] * (1 / np.asarray(x, dtype=np.float64) + p["g"]) ** (-p["c"])


class M4(Alternating):
    """`e_0`: with the reference procedure, the start of e_0 (default 1.0 when every loss is below 1 - 1e-3, as the
    paper's notebook starts it, else max(y) + 1e-3, the reference's own default); with the grid procedure, a fixed
    e_0 (default: searched). `loss_bound`: the largest loss possible (1 for error rates), capping e_0 at it + 1e-3
    (reference procedure only; default none)."""
    name, n_params = "M4", 5

    def __init__(self, procedure: str = "reference", e_0: float | None = None, loss_bound: float | None = None):
        super().__init__(procedure)
        for label, v in (("e_0", e_0), ("loss_bound", loss_bound)):
            if v is not None and not (np.isfinite(v) and v > 0):
                raise ScalingError(f"{label} = {v} must be a positive number")
        self.e_0, self.loss_bound = e_0, loss_bound

    def _options(self):
        return {"procedure": self.procedure, "e_0": self.e_0, "loss_bound": self.loss_bound}

    def _start(self, y):
        if self.e_0 is not None:
            if self.e_0 <= y.max():
                raise ScalingError(f"e_0 = {self.e_0} is not above the largest observed loss {y.max()}")
            return self.e_0
        return 1.0 if y.max() < 1 - alternating.MARGIN else y.max() + alternating.MARGIN

    def _check(self, pairs):
        super()._check(pairs)
        if self.loss_bound is not None and any(y.max() > self.loss_bound for _, y in pairs):
            raise ScalingError(f"a loss exceeds loss_bound = {self.loss_bound}")

    def _run(self, batch, pairs):
        starts = np.array([self._start(y) for _, y in pairs])
        bound = np.full(len(pairs), np.nan if self.loss_bound is None else self.loss_bound)
        return alternating.fit_m4(batch, starts, bound)

    @staticmethod
    def _solve(e_inf, e_0, x, y):
        # log(e - e_inf) = log b + c log x + a log(e_0 - e)
        return linear_fit([np.ones_like(x), np.log(x), np.log(e_0 - y)], np.log(y - e_inf))

    def _fit_grid(self, x, y):
        e_0 = self.e_0
        if e_0 is not None and e_0 <= y.max():
            raise ScalingError(f"e_0 = {e_0} is not above the largest observed loss {y.max()}")
        low, high = y.min(), y.max()

        bounds_low, bounds_high = (np.log(low * 1e-6), np.log(low)), (np.log(high * 1e-4), np.log(high * 1e2))

        def unpack(z):  # z = (log gap below min y, log gap above max y), clipped to the searched ranges
            gap_low, gap_high = np.clip(z[0], *bounds_low), np.clip(z[1], *bounds_high)
            return max(low - np.exp(gap_low), 0.0), (e_0 if e_0 is not None else high + np.exp(gap_high))

        def objective(z):
            (_, _, a), sse = self._solve(*unpack(z), x, y)
            return sse + (1e3 * a * a if a < 0 else 0.0)  # a >= 0 enforced as a penalty on the linear solve

        gaps_low = np.linspace(*bounds_low, 24)
        gaps_high = np.linspace(*bounds_high, 1 if e_0 is not None else 24)
        grid = sorted(((objective((u, v)), u, v) for u in gaps_low for v in gaps_high))[:4]
        best = min((minimize(objective, np.array([u, v]), method="Nelder-Mead",
                             options={"xatol": 1e-9, "fatol": 1e-15, "maxiter": 2000}) for _, u, v in grid),
                   key=lambda r: r.fun)
        e_inf, top = unpack(best.x)
        (log_b, c, a), _ = self._solve(e_inf, top, x, y)
        self.params = {"b": float(np.exp(log_b)), "c": float(c), "a": float(max(a, 0.0)), "e_inf": float(e_inf),
                       "e_0": float(top)}
        return self

    def predict(self, x):
        """Solves (e - e_inf) / (e_0 - e)^a = b x^c for e in (e_inf, e_0), by bisection on its log form, which
        rises in e; a below 1e-5 is taken as 0 (M2's form), as in the reference."""
        p = self.params
        x = np.atleast_1d(np.asarray(x, dtype=np.float64))
        f = p["b"] * x ** p["c"]
        if p["a"] < 1e-5:
            return p["e_inf"] + f
        lo, hi = np.full_like(x, p["e_inf"]), np.full_like(x, p["e_0"])
        with np.errstate(divide="ignore", invalid="ignore"):
            for _ in range(200):
                mid = 0.5 * (lo + hi)
                above = np.log(mid - p["e_inf"]) - p["a"] * np.log(p["e_0"] - mid) > np.log(f)
                lo, hi = np.where(above, lo, mid), np.where(above, mid, hi)
                if np.all(hi - lo <= 1e-15 * np.abs(hi)):
                    break
        return 0.5 * (lo + hi)


class BNSL(Estimator):
    """Broken neural scaling law (Caballero et al., ICLR 2023) with `breaks` breaks:
    e(x) = a + b x^(-c0) prod_i (1 + (x / d_i)^(1 / f_i))^(-c_i f_i), a >= 0, b, d_i, f_i > 0.
    Fitted by nonlinear least squares on log e (scipy's trust-region solver) from a small grid of starts: break
    positions at quantiles of x, sharpness f in {0.1, 1}."""

    def __init__(self, breaks: int = 1):
        self.breaks = breaks
        self.name = "BNSL" if breaks == 1 else f"BNSL{breaks}"
        self.n_params = 3 + 3 * breaks

    @staticmethod
    def _curve(theta, x, breaks):
        a, log_b, c0 = theta[:3]
        log_y = log_b - c0 * np.log(x)
        for i in range(breaks):
            c, log_d, log_f = theta[3 + 3 * i:6 + 3 * i]
            f = np.exp(log_f)
            log_y = log_y - c * f * np.logaddexp(0.0, (np.log(x) - log_d) / f)
        return a + np.exp(log_y)

    def fit(self, x, y):
        from scipy.optimize import least_squares

        x, y = check_xy(x, y, self.n_params)
        log_x = np.log(x)
        base = M1().fit(x, y).params
        starts = []
        for qs in ([0.5] if self.breaks == 1 else [0.33, 0.67]), ([0.25] if self.breaks == 1 else [0.2, 0.5]), \
                ([0.75] if self.breaks == 1 else [0.5, 0.8]):
            for log_f in (np.log(0.1), 0.0):
                theta = [0.0, np.log(base["b"]), -base["c"]]
                for q in qs:
                    theta += [0.0, float(np.quantile(log_x, q)), log_f]
                starts.append(np.array(theta))
        lower = [0.0, -np.inf, -np.inf] + [-np.inf, log_x.min() - 5, np.log(1e-3)] * self.breaks
        upper = [y.min() * (1 - 1e-9), np.inf, np.inf] + [np.inf, log_x.max() + 5, np.log(1e2)] * self.breaks

        def residual(theta):
            return np.log(np.maximum(self._curve(theta, x, self.breaks), 1e-300)) - np.log(y)

        best = None
        for theta in starts:
            theta = np.clip(theta, np.array(lower) + 1e-9, np.array(upper) - 1e-9)
            result = least_squares(residual, theta, bounds=(lower, upper), method="trf", max_nfev=2000)
            if best is None or result.cost < best.cost:
                best = result
        self.theta = best.x
        names = ["a", "log_b", "c0"] + [f"{n}{i + 1}" for i in range(self.breaks) for n in ("c", "log_d", "log_f")]
        self.params = dict(zip(names, map(float, best.x)))
        return self

    def predict(self, x):
        return self._curve(self.theta, np.asarray(x, dtype=np.float64), self.breaks)


ESTIMATORS = {"M1": M1, "M2": M2, "M3": M3, "M4": M4, "BNSL": BNSL, "BNSL2": lambda: BNSL(2)}
