"""Simulated and bundled datasets."""

from ._datasets import norman2019_subset
from ._regimes import REGIMES, simulate_regime
from ._simulate import simulate_sparse_shift, true_log_expression

__all__ = [
    "REGIMES",
    "norman2019_subset",
    "simulate_regime",
    "simulate_sparse_shift",
    "true_log_expression",
]
