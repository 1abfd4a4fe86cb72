"""Evaluation: identifiability on simulations and held-out interventions."""

from ._heldout import interventional_nll_report, split_table, summarize_interventional_nll
from ._identifiability import identifiability_report, method_kwargs
from ._splits import HeldoutSplit, make_splits

__all__ = [
    "HeldoutSplit",
    "identifiability_report",
    "interventional_nll_report",
    "make_splits",
    "method_kwargs",
    "split_table",
    "summarize_interventional_nll",
]
