"""Evaluation: identifiability on simulations."""

from ._identifiability import identifiability_report, method_kwargs

__all__ = ["identifiability_report", "method_kwargs"]
