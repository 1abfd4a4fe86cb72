"""Evaluation: identifiability on simulations and held-out interventions."""

from ._baselines import BASELINES, baseline_predictions, observed_changes
from ._effects import (
    EFFECT_METRICS,
    effect_correlations,
    effect_metrics,
    log_normalized,
    mean_log_expression,
    score_predictions,
)
from ._heldout import (
    interventional_nll_report,
    split_table,
    summarize_interventional_nll,
    transfer_and_score,
)
from ._heldout_effects import summarize_effect_correlations
from ._identifiability import identifiability_report, method_kwargs
from ._report import report_markdown
from ._splits import HeldoutSplit, make_splits

__all__ = [
    "BASELINES",
    "EFFECT_METRICS",
    "HeldoutSplit",
    "baseline_predictions",
    "effect_correlations",
    "effect_metrics",
    "identifiability_report",
    "interventional_nll_report",
    "log_normalized",
    "make_splits",
    "mean_log_expression",
    "method_kwargs",
    "observed_changes",
    "report_markdown",
    "score_predictions",
    "split_table",
    "summarize_effect_correlations",
    "summarize_interventional_nll",
    "transfer_and_score",
]
