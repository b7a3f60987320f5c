"""Scaling-law estimators and laws: M1-M4 of "Revisiting Neural Scaling Laws" (Alabdulmohsin et al., 2022), the
broken neural scaling law (Caballero et al., 2023), Chinchilla's L(N, D) fit (Hoffmann et al., 2022) and the
data-constrained law of Muennighoff et al. (2023); `python -m reuse.scaling` runs the benchmark and fits results."""

from reuse.scaling.estimators import BNSL, ESTIMATORS, M1, M2, M3, M4, ScalingError
from reuse.scaling.laws import chinchilla_fit, chinchilla_loss, data_constrained_loss

__all__ = ["M1", "M2", "M3", "M4", "BNSL", "ESTIMATORS", "ScalingError", "chinchilla_fit", "chinchilla_loss",
           "data_constrained_loss"]
