"""Scaling-law estimators and laws: M1 (M2-M4 to come) of "Revisiting Neural Scaling Laws" (Alabdulmohsin et al., 2022) and the
data-constrained law of Muennighoff et al. (2023)."""

from reuse.scaling.estimators import M1, ESTIMATORS, ScalingError
from reuse.scaling.laws import data_constrained_loss

__all__ = ["M1", "ESTIMATORS", "ScalingError", "data_constrained_loss"]
