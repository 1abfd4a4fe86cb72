"""Held-out effects: each model's predicted change and the baselines, scored on the same cells.

:func:`~sparsevae.evaluate.interventional_nll_report` calls these per split: the baselines and
the evaluation cells are prepared once (:func:`_effect_context`), each trained method's
predictions are scored against them with the same bootstrap resamples (:func:`_score`).
"""

from __future__ import annotations

import zlib

import anndata
import numpy as np
import pandas as pd
from anndata import AnnData

from sparsevae._normalize import mean_log_expression

from ._baselines import NO_CHANGE, SPLIT_HALF, baseline_predictions, observed_changes
from ._cell_eval import cell_eval_columns, cells_from_change
from ._cells import _fresh
from ._effects import EFFECT_METRICS, log_normalized, score_predictions
from ._splits import EVALUATION, TRAIN, TRANSFER

#: Control cells on which a held-out perturbation's effect is predicted (a seeded sample when
#: there are more): enough for a mean over cells, bounded for screens with many controls.
MAX_CONTROL_CELLS = 2000


def _control_cells(adata, roles, genes, seed, *, perturbation_key, control, layer, obs_keys):
    """The training control cells, and the sample a seed's predictions start from.

    The sample: at most ``MAX_CONTROL_CELLS`` of them, drawn with the seed.
    """
    labels = adata.obs[perturbation_key].astype(str).to_numpy()
    controls = np.flatnonzero((roles == TRAIN) & (labels == control))
    control_cells = _fresh(adata, controls, genes, layer, obs_keys)
    rng = np.random.default_rng(seed)
    return control_cells, np.sort(rng.permutation(len(controls))[:MAX_CONTROL_CELLS])


def _predicted_changes(
    model, adata, evaluation, roles, genes, seed, *, cell_eval, perturbation_key, **keys
) -> tuple[dict[str, np.ndarray], AnnData | None]:
    """The transferred model's predicted change of each held-out perturbation in ``evaluation``.

    :meth:`~sparsevae.SparseVAE.get_treatment_effect` at its defaults (counts drawn from the
    model, shifts from each perturbation's own cells) on up to ``MAX_CONTROL_CELLS`` training
    control cells; with ``cell_eval``, also the predicted cells from the same control cells
    (:meth:`~sparsevae.SparseVAE.predict_perturbations` at its defaults), else ``None``.
    """
    control_cells, sample = _control_cells(
        adata, roles, genes, seed, perturbation_key=perturbation_key, **keys
    )
    perturbations = np.unique(evaluation.obs[perturbation_key].astype(str).to_numpy())
    changes = {
        perturbation: model.get_treatment_effect(
            control_cells, perturbation=perturbation, indices=sample, random_state=seed
        ).to_numpy()
        for perturbation in perturbations
    }
    cells = None
    if cell_eval is not None:
        cells = model.predict_perturbations(
            list(perturbations), control_cells[sample].copy(), random_state=seed
        )
    return changes, cells


def _cell_eval_real(
    adata, roles, genes, heldout, seed, *, perturbation_key, **keys
) -> tuple[AnnData, AnnData]:
    """The real side of a seed's cell-eval scores, and its control cells.

    The held-out perturbations' evaluation cells beside the control cells that the seed's
    predictions start from (:func:`_control_cells`'s sample), and those control cells alone.
    """
    labels = adata.obs[perturbation_key].astype(str).to_numpy()
    evaluation = np.flatnonzero(np.isin(labels, list(heldout)) & (roles == EVALUATION))
    control_cells, sample = _control_cells(
        adata, roles, genes, seed, perturbation_key=perturbation_key, **keys
    )
    base = control_cells[sample].copy()
    cells = _fresh(adata, evaluation, genes, keys["layer"], keys["obs_keys"])
    return anndata.concat([cells, base], index_unique=None), base


def _cell_eval_baselines(
    adata, roles, genes, context, real, base, profile, *, perturbation_key, control, **keys
) -> dict[str, dict[str, dict[str, float]]]:
    """cell-eval's metrics of the baselines, ``{baseline: {perturbation: columns}}``.

    Scored against ``real`` beside the control cells ``base`` (:func:`_cell_eval_real`): the
    split-half baseline as the transfer cells, a baseline of a mean change as the control
    cells moved by it (:func:`cells_from_change`); "no change" is not scored (its cells would
    be the control cells).
    """
    labels = adata.obs[perturbation_key].astype(str).to_numpy()
    blocks: dict[str, list[AnnData]] = {}
    for perturbation, (_, baselines) in context.items():
        for name, change in baselines.items():
            if name == NO_CHANGE:
                continue
            if name == SPLIT_HALF:
                transfer = np.flatnonzero((labels == perturbation) & (roles == TRANSFER))
                block = _fresh(adata, transfer, genes, keys["layer"], keys["obs_keys"])
            else:
                block = cells_from_change(base, change, perturbation, perturbation_key)
            blocks.setdefault(name, []).append(block)
    return {
        name: cell_eval_columns(
            anndata.concat([*parts, base], index_unique="-"),
            real,
            perturbation_key,
            control,
            profile,
        )
        for name, parts in blocks.items()
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
