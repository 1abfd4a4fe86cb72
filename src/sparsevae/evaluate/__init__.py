"""Evaluation: identifiability on simulations and held-out interventions."""

from ._effects import effect_correlations, mean_log_expression
from ._heldout import (
    interventional_nll_report,
    split_table,
    summarize_effect_correlations,
    summarize_interventional_nll,
    transfer_and_score,
)
from ._identifiability import identifiability_report, method_kwargs
from ._report import report_markdown
from ._splits import HeldoutSplit, make_splits

__all__ = [
    "HeldoutSplit",
    "effect_correlations",
    "identifiability_report",
    "interventional_nll_report",
    "make_splits",
    "mean_log_expression",
    "method_kwargs",
    "report_markdown",
    "split_table",
    "summarize_effect_correlations",
    "summarize_interventional_nll",
    "transfer_and_score",
]
