"""Evaluation: identifiability on simulations and held-out interventions."""

from sparsevae._checkpoint import CheckpointMismatchError
from sparsevae._constants import DEFAULT_METHODS, METHODS
from sparsevae._normalize import mean_log_expression

from ._baselines import BASELINES, baseline_predictions, observed_changes
from ._cell_eval import CELL_EVAL_PROFILES, score_with_cell_eval
from ._effects import (
    EFFECT_METRICS,
    effect_correlations,
    effect_metrics,
    log_normalized,
    score_predictions,
)
from ._heldout import (
    interventional_nll_report,
    split_table,
    summarize_interventional_nll,
    transfer_and_score,
)
from ._heldout_effects import summarize_effect_correlations
from ._identifiability import (
    POSTHOC_READOUTS,
    identifiability_report,
    latent_mean_shifts,
    method_kwargs,
    posthoc_sparse_rotation,
    shift_targets,
)
from ._report import report_markdown
from ._splits import HeldoutSplit, make_splits

__all__ = [
    "BASELINES",
    "CELL_EVAL_PROFILES",
    "DEFAULT_METHODS",
    "EFFECT_METRICS",
    "METHODS",
    "POSTHOC_READOUTS",
    "CheckpointMismatchError",
    "HeldoutSplit",
    "baseline_predictions",
    "effect_correlations",
    "effect_metrics",
    "identifiability_report",
    "interventional_nll_report",
    "latent_mean_shifts",
    "log_normalized",
    "make_splits",
    "mean_log_expression",
    "method_kwargs",
    "observed_changes",
    "posthoc_sparse_rotation",
    "report_markdown",
    "score_predictions",
    "score_with_cell_eval",
    "shift_targets",
    "split_table",
    "summarize_effect_correlations",
    "summarize_interventional_nll",
    "transfer_and_score",
]
