"""Baselines of effect prediction: what a reviewer holds every model against.

Each baseline predicts a held-out perturbation's change of mean ``log1p(counts per 10,000)``
from control using observed cells only, no model:

- **no change**: 0 for every gene (the control's expression);
- **mean of training perturbations**: the mean observed change over the training
  perturbations (Systema, Nature Biotechnology 2025; scPerturBench, Nature Methods 2025);
- **split-half**: the observed change of the perturbation's transfer cells, the other half of
  its cells (a ceiling: what the cells themselves say, up to sampling noise);
- **additive** (combinations only): the observed change of A plus that of B (Ahlmann-Eltze,
  Huber & Anders, Nature Methods 2025: no deep model beat it on held-out Norman pairs).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from anndata import AnnData

from sparsevae._normalize import mean_log_expression

NO_CHANGE = "baseline: no change"
MEAN_CHANGE = "baseline: mean of training perturbations"
SPLIT_HALF = "baseline: split-half"
ADDITIVE = "baseline: additive"
#: Names of the baselines, in report order.
BASELINES = (NO_CHANGE, MEAN_CHANGE, SPLIT_HALF, ADDITIVE)


def observed_changes(
    adata: AnnData,
    perturbation_key: str,
    control_mean: np.ndarray,
    *,
    exclude: tuple[str, ...] = (),
    layer: str | None = None,
) -> dict[str, np.ndarray]:
    """Observed change from control of every label of ``adata`` (except those in ``exclude``)."""
    labels = adata.obs[perturbation_key].astype(str).to_numpy()
    return {
        label: mean_log_expression(adata[labels == label], layer) - control_mean
        for label in sorted(set(labels) - set(exclude))
    }


def baseline_predictions(
    perturbation: str,
    training_changes: Mapping[str, np.ndarray],
    *,
    transfer_change: np.ndarray | None = None,
    combination_delimiter: str | None = None,
) -> dict[str, np.ndarray]:
    """The baselines' predicted change for one held-out perturbation.

    Parameters
    ----------
    perturbation
        The held-out label.
    training_changes
        ``{training label: observed change from control}`` (control excluded), e.g. from
        :func:`observed_changes` on the training cells.
    transfer_change
        Observed change of the perturbation's transfer cells (the split-half baseline; left
        out if ``None``).
    combination_delimiter
        Delimiter of combination labels; a label made of singles that all have training cells
        of their own gets the additive baseline.

    Returns
    -------
    ``{baseline name: change per gene}`` with the baselines that apply to ``perturbation``.
    """
    if not training_changes:
        raise ValueError("training_changes is empty: the baselines need training perturbations.")
    changes = np.stack(list(training_changes.values()))
    out = {NO_CHANGE: np.zeros(changes.shape[1]), MEAN_CHANGE: changes.mean(axis=0)}
    if transfer_change is not None:
        out[SPLIT_HALF] = np.asarray(transfer_change, dtype=float)
    if combination_delimiter and combination_delimiter in perturbation:
        singles = perturbation.split(combination_delimiter)
        if all(single in training_changes for single in singles):
            out[ADDITIVE] = sum(training_changes[single] for single in singles)
    return out
