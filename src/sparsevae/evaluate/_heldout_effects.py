"""Held-out effects: each model's predicted change and the baselines, scored on the same cells.

:func:`~sparsevae.evaluate.interventional_nll_report` calls these per split: the baselines and
the evaluation cells are prepared once (:func:`_effect_context`), each trained method's
predictions are scored against them with the same bootstrap resamples (:func:`_score`).
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from sparsevae._normalize import mean_log_expression

from ._baselines import baseline_predictions, observed_changes
from ._cells import _fresh
from ._effects import EFFECT_METRICS, log_normalized, score_predictions
from ._splits import EVALUATION, TRAIN, TRANSFER

#: Control cells on which a held-out perturbation's effect is predicted (a seeded sample when
#: there are more): enough for a mean over cells, bounded for screens with many controls.
MAX_CONTROL_CELLS = 2000


def _predicted_changes(
    model, adata, evaluation, roles, genes, seed, *, perturbation_key, control, layer, obs_keys
) -> dict[str, np.ndarray]:
    """The transferred model's predicted change of each held-out perturbation in ``evaluation``.

    :meth:`~sparsevae.SparseVAE.get_treatment_effect` at its defaults (counts drawn from the
    model, shifts from each perturbation's own cells) on up to ``MAX_CONTROL_CELLS`` training
    control cells.
    """
    labels = adata.obs[perturbation_key].astype(str).to_numpy()
    controls = np.flatnonzero((roles == TRAIN) & (labels == control))
    control_cells = _fresh(adata, controls, genes, layer, obs_keys)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.permutation(len(controls))[:MAX_CONTROL_CELLS])
    return {
        perturbation: model.get_treatment_effect(
            control_cells, perturbation=perturbation, indices=sample, random_state=seed
        ).to_numpy()
        for perturbation in np.unique(evaluation.obs[perturbation_key].astype(str).to_numpy())
    }


def _effect_context(
    adata,
    roles,
    genes,
    heldout,
    *,
    perturbation_key,
    control,
    layer,
    obs_keys,
    combination_delimiter,
):
    """What every predictor of a split is scored against, and the baselines' predictions.

    Returns ``{perturbation: (cells, baselines)}`` (its evaluation cells' ``log1p(counts per
    10,000)`` and the baselines' predicted changes) and the training control mean.
    """
    labels = adata.obs[perturbation_key].astype(str).to_numpy()
    train = roles == TRAIN
    control_mean = mean_log_expression(
        _fresh(adata, np.flatnonzero(train & (labels == control)), genes, layer, obs_keys), None
    )
    training = _fresh(adata, np.flatnonzero(train), genes, layer, obs_keys)
    training_changes = observed_changes(
        training, perturbation_key, control_mean, exclude=(control,)
    )
    context = {}
    for perturbation in heldout:
        is_p = labels == perturbation
        evaluation = np.flatnonzero(is_p & (roles == EVALUATION))
        transfer = np.flatnonzero(is_p & (roles == TRANSFER))
        if len(evaluation) == 0:
            continue
        cells = log_normalized(_fresh(adata, evaluation, genes, layer, obs_keys))
        transfer_change = (
            mean_log_expression(_fresh(adata, transfer, genes, layer, obs_keys)) - control_mean
            if len(transfer)
            else None
        )
        baselines = baseline_predictions(
            perturbation,
            training_changes,
            transfer_change=transfer_change,
            combination_delimiter=combination_delimiter,
        )
        context[perturbation] = (cells, baselines)
    return context, control_mean


def _score(context, control_mean, perturbation, predictions, n_boot, random_state) -> pd.DataFrame:
    """:func:`score_predictions` with resamples that depend on the perturbation only."""
    cells, _ = context[perturbation]
    seed = [random_state, zlib.crc32(perturbation.encode())]
    return score_predictions(predictions, cells, control_mean, n_boot=n_boot, random_state=seed)


def summarize_effect_correlations(report: pd.DataFrame) -> pd.DataFrame:
    """Mean of every effect metric per method and baseline, over held-out perturbations and seeds.

    Columns: the mean of each metric of :data:`sparsevae.evaluate.EFFECT_METRICS`
    (Pearson over all genes and the top 20 DE genes: higher is better; MSE over the top 20 DE
    genes and L2 over the most expressed genes: lower is better), ``kind`` (``"model"`` or
    ``"baseline"``), ``n_scored`` (rows with a metric) and ``n_no_change`` (rows whose
    prediction does not vary, so has no Pearson: "no change"). Means of Pearson skip those
    rows. Rows without any effect (no control label) are left out. Sorted by the Pearson over
    all genes, best first.
    """
    scored = report.dropna(subset=[EFFECT_METRICS[-1]])
    grouped = scored.groupby("method")
    table = grouped[list(EFFECT_METRICS)].mean()
    table.insert(0, "kind", grouped["kind"].first())
    table["n_scored"] = grouped.size()
    table["n_no_change"] = table["n_scored"] - grouped["pearson_all_genes"].count()
    return table.sort_values("pearson_all_genes", ascending=False, na_position="last")
