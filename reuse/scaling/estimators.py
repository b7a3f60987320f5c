"""Learning-curve estimators e(x) with one interface: `fit(x, y)`, `predict(x)`, `params`, `name`.

- M1: e(x) = b x^c
Fitted by least squares in log space. M2-M4 (with e_inf, g, e_0) are not here yet: see the scaling-law issue.
"""

from __future__ import annotations

import numpy as np


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
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    return coef, float(np.sum((design @ coef - target) ** 2))


class M1:
    name, n_params = "M1", 2

    def fit(self, x, y):
        x, y = check_xy(x, y, self.n_params)
        (log_b, c), _ = linear_fit([np.ones_like(x), np.log(x)], np.log(y))
        self.params = {"b": float(np.exp(log_b)), "c": float(c)}
        return self

    def predict(self, x):
        return self.params["b"] * np.asarray(x, dtype=np.float64) ** self.params["c"]


ESTIMATORS = {"M1": M1}
