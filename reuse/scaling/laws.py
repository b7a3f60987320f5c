"""Laws in model size N and data D."""

from __future__ import annotations

import numpy as np

# Muennighoff et al. 2023, "Scaling Data-Constrained Language Models", fitted constants (their Appendix).
MUENNIGHOFF = {"a": 6.255414, "b": 7.3049974, "e": 0.6254804, "alpha": 0.3526596, "beta": 0.3526596,
               "r_d_star": 15.387756, "r_n_star": 5.309743}


def data_constrained_loss(n_params, tokens, unique_tokens, constants: dict = MUENNIGHOFF):
    """L = E + A / N'^alpha + B / D'^beta with repeated data discounted:
    D' = U_D + U_D R_D* (1 - exp(-R_D / R_D*)), R_D = D / U_D - 1, and N' likewise with U_N the compute-optimal
    size for U_D unique tokens."""
    c = constants
    n, d, u_d = (np.asarray(v, dtype=np.float64) for v in (n_params, tokens, unique_tokens))
    A, B, E = np.exp(c["a"]), np.exp(c["b"]), np.exp(c["e"])
    g = (c["alpha"] * A / (c["beta"] * B)) ** (1 / (c["alpha"] + c["beta"]))
    # Chinchilla's allocation N_opt = G (C/6)^(beta/(alpha+beta)), D_opt = (C/6)^(alpha/(alpha+beta)) / G, solved
    # for the N that is compute-optimal at D = U_D tokens.
    u_n = np.minimum(n, g ** (1 + c["beta"] / c["alpha"]) * u_d ** (c["beta"] / c["alpha"]))
    r_d = np.maximum(d / u_d - 1, 0.0)
    r_n = np.maximum(n / u_n - 1, 0.0)
    d_eff = u_d + u_d * c["r_d_star"] * (1 - np.exp(-r_d / c["r_d_star"]))
    n_eff = u_n + u_n * c["r_n_star"] * (1 - np.exp(-r_n / c["r_n_star"]))
    return E + A / n_eff ** c["alpha"] + B / d_eff ** c["beta"]


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    small = np.abs(r) <= delta
    return np.where(small, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))


def chinchilla_fit(n_params, tokens, loss, delta: float = 1e-3, starts: dict | None = None) -> dict:
    """L(N, D) = E + A / N^alpha + B / D^beta fitted as Chinchilla's approach 3 (Hoffmann et al. 2022): Huber loss
    (delta 1e-3) on log L, summed over points, with log L = LSE(a - alpha log N, b - beta log D, e), A = e^a,
    B = e^b, E = e^e; L-BFGS from every start of a grid, the best kept."""
    from itertools import product

    from scipy.optimize import minimize
    from scipy.special import logsumexp

    from reuse.scaling.estimators import ScalingError

    n, d, y = (np.asarray(v, dtype=np.float64) for v in (n_params, tokens, loss))
    if not (n.shape == d.shape == y.shape) or n.ndim != 1:
        raise ScalingError("N, D and L must be 1-D arrays of equal length")
    if not np.all(np.isfinite(np.concatenate([n, d, y]))) or np.any(n <= 0) or np.any(d <= 0) or np.any(y <= 0):
        raise ScalingError("N, D and L must be positive and finite")
    if len(set(zip(n, d))) < 5:
        raise ScalingError(f"{len(set(zip(n, d)))} distinct (N, D) points cannot determine 5 parameters")
    log_n, log_d, log_y = np.log(n), np.log(d), np.log(y)

    def objective(theta):
        a, b, e, alpha, beta = theta
        terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
        pred = logsumexp(terms, axis=0)
        r = pred - log_y
        weights = np.exp(terms - pred)  # softmax: d pred / d term
        g_r = np.where(np.abs(r) <= delta, r, delta * np.sign(r))
        grad = np.array([np.sum(g_r * weights[0]), np.sum(g_r * weights[1]), np.sum(g_r * weights[2]),
                         np.sum(g_r * weights[0] * -log_n), np.sum(g_r * weights[1] * -log_d)])
        return float(np.sum(huber(r, delta))), grad

    # Chinchilla's own grid has 4500 starts (minutes here); this coarser one finds the same optimum on their law.
    grid = starts or {"a": [0, 10, 20], "b": [0, 10, 20], "e": [-1, 0, 1], "alpha": [0.2, 0.6, 1.2],
                      "beta": [0.2, 0.6, 1.2]}
    best = None
    for theta in product(grid["a"], grid["b"], grid["e"], grid["alpha"], grid["beta"]):
        result = minimize(objective, np.array(theta, dtype=np.float64), jac=True, method="L-BFGS-B")
        if best is None or result.fun < best.fun:
            best = result
    a, b, e, alpha, beta = best.x
    return {"A": float(np.exp(a)), "B": float(np.exp(b)), "E": float(np.exp(e)), "alpha": float(alpha),
            "beta": float(beta), "objective": float(best.fun)}


def chinchilla_loss(params: dict, n_params, tokens):
    n, d = np.asarray(n_params, dtype=np.float64), np.asarray(tokens, dtype=np.float64)
    return params["E"] + params["A"] / n ** params["alpha"] + params["B"] / d ** params["beta"]
