"""Simulated and bundled datasets."""

from ._datasets import norman2019_subset
from ._simulate import simulate_sparse_shift

__all__ = ["norman2019_subset", "simulate_sparse_shift"]
