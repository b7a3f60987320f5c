"""Intervals over seeds, shared by the report and the figures."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def t_interval(values: list[float]) -> tuple[float, float | None]:
    """(mean, half-width of the 95% Student t interval), half-width None for fewer than 2 values."""
    values = [float(v) for v in values]
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, None
    return mean, float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values)))


def fmt(mean: float, half: float | None, digits: int = 3) -> str:
    return f"{mean:.{digits}f}" if half is None else f"{mean:.{digits}f} ± {half:.{digits}f}"
