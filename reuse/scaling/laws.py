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
