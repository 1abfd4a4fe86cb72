"""Predicted vs observed mean change: how well a prediction matches held-out cells.

The statistic is the change of mean normalised expression, ``mean log1p(counts per 10,000)``
per gene, between the cells of a perturbation and control cells. A model's prediction is
:meth:`~sparsevae.SparseVAE.get_treatment_effect` on control cells (by default the same
statistic of counts drawn from the model); the observed one is that of held-out cells. The
field's metrics (Systema 2025, scPerturBench 2025, Ahlmann-Eltze et al. 2025) compare them:
Pearson delta over all genes and over the 20 genes with the largest observed change, the mean
squared error over those 20, and the L2 distance over the 1,000 most expressed genes, each with
a bootstrap interval over the held-out cells (:func:`score_predictions`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
from anndata import AnnData

from sparsevae._normalize import log1p_cp10k

#: Genes with the largest observed change scored by the top-DE metrics.
N_TOP_DE = 20
#: Most expressed genes (in control) scored by the L2 distance (all genes when fewer).
N_TOP_EXPRESSED = 1000
#: The metrics of a predicted change, in report order: higher Pearson is better, lower MSE and
#: L2 are better.
EFFECT_METRICS = (
    "pearson_all_genes",
    f"pearson_top{N_TOP_DE}_de",
    f"mse_top{N_TOP_DE}_de",
    f"l2_top{N_TOP_EXPRESSED}_expressed",
)
#: Each metric, then the bounds of its bootstrap interval (``<metric>_low``, ``<metric>_high``).
EFFECT_COLUMNS = tuple(
    column for metric in EFFECT_METRICS for column in (metric, f"{metric}_low", f"{metric}_high")
)


def effect_correlations(
    predicted: np.ndarray, observed: np.ndarray, n_top: int = 20
) -> dict[str, float]:
    """Pearson correlation of a predicted and an observed change per gene.

    Returns ``{"pearson_all_genes": r, "pearson_top20_de": r_top}`` (the key names ``n_top``):
    over all genes, and over the ``n_top`` genes with the largest absolute observed change.
    A correlation is NaN where the prediction (or the observation) does not vary: a model that
    predicts no change has no correlation, rather than a made-up one.
    """
    predicted, observed = _as_changes(predicted, observed)
    if n_top < 2:
        raise ValueError(f"n_top must be at least 2 (a correlation needs two genes), got {n_top}.")
    top = np.argsort(-np.abs(observed), kind="stable")[:n_top]
    return {
        "pearson_all_genes": _pearson(predicted, observed),
        f"pearson_top{n_top}_de": _pearson(predicted[top], observed[top]),
    }


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def log_normalized(adata: AnnData, layer: str | None = None) -> np.ndarray:
    """``log1p(counts per 10,000)`` of every cell with counts, dense (cells × genes).

    The per-cell values whose mean is :func:`mean_log_expression`; for the small groups of cells
    that are bootstrapped (one perturbation's held-out cells).
    """
    counts = adata.X if layer is None else adata.layers[layer]
    dense = counts.toarray() if hasattr(counts, "toarray") else np.asarray(counts)
    values, keep = log1p_cp10k(dense.astype(np.float64))
    return values[keep]


def _rowwise_pearson(predicted: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Pearson of ``predicted`` (genes,) with each row of ``observed`` (n, genes); NaN if flat."""
    p = predicted - predicted.mean()
    o = observed - observed.mean(axis=1, keepdims=True)
    denominator = np.sqrt((p**2).sum() * (o**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (o @ p) / denominator
    flat = (np.ptp(predicted) == 0) | (np.ptp(observed, axis=1) == 0)
    return np.where(flat, np.nan, r)


def _metrics(predicted: np.ndarray, observed: np.ndarray, top_de, top_expressed) -> np.ndarray:
    """The :data:`EFFECT_METRICS` of one prediction against rows of ``observed``, (n, 4)."""
    error = observed - predicted
    return np.stack(
        [
            _rowwise_pearson(predicted, observed),
            _rowwise_pearson(predicted[top_de], observed[:, top_de]),
            (error[:, top_de] ** 2).mean(axis=1),
            np.sqrt((error[:, top_expressed] ** 2).sum(axis=1)),
        ],
        axis=1,
    )


def effect_metrics(
    predicted: np.ndarray, observed: np.ndarray, expression: np.ndarray | None = None
) -> dict[str, float]:
    """The field's metrics of a predicted against an observed change per gene.

    Parameters
    ----------
    predicted, observed
        Change of mean ``log1p(counts per 10,000)`` per gene from control.
    expression
        Mean expression per gene (e.g. control's ``mean_log_expression``) that ranks the
        genes of the L2 distance; ``None``: all genes.

    Returns
    -------
    ``{metric: value}`` for :data:`EFFECT_METRICS`: Pearson over all genes and over the
    ``N_TOP_DE`` genes with the largest absolute observed change (NaN where the prediction
    does not vary, e.g. "no change"), the mean squared error over those genes, and the L2
    distance over the ``N_TOP_EXPRESSED`` most expressed genes (all genes when fewer).
    """
    predicted, observed = _as_changes(predicted, observed)
    top_de, top_expressed = _gene_sets(observed, expression)
    values = _metrics(predicted, observed[None, :], top_de, top_expressed)[0]
    return dict(zip(EFFECT_METRICS, map(float, values), strict=True))


def _as_changes(predicted, observed) -> tuple[np.ndarray, np.ndarray]:
    predicted = np.asarray(predicted, dtype=float).ravel()
    observed = np.asarray(observed, dtype=float).ravel()
    if predicted.shape != observed.shape:
        raise ValueError(
            f"predicted and observed changes differ in length: {predicted.size} vs "
            f"{observed.size} genes."
        )
    return predicted, observed


def _gene_sets(observed: np.ndarray, expression: np.ndarray | None):
    top_de = np.argsort(-np.abs(observed), kind="stable")[:N_TOP_DE]
    if expression is None:
        return top_de, np.arange(observed.size)
    expression = np.asarray(expression, dtype=float).ravel()
    if expression.shape != observed.shape:
        raise ValueError(
            f"expression has {expression.size} genes, the changes {observed.size}: pass one "
            "value per gene."
        )
    return top_de, np.argsort(-expression, kind="stable")[:N_TOP_EXPRESSED]


def score_predictions(
    predictions: Mapping[str, np.ndarray],
    cells: np.ndarray,
    control_mean: np.ndarray,
    *,
    expression: np.ndarray | None = None,
    n_boot: int = 200,
    confidence: float = 0.95,
    random_state: int = 0,
) -> pd.DataFrame:
    """Score predicted changes against held-out cells, with bootstrap intervals over the cells.

    The observed change is the mean of ``cells`` (per-cell ``log1p(counts per 10,000)``, see
    :func:`log_normalized`) minus ``control_mean``. Each bootstrap resamples the cells with
    replacement (the control mean and the gene sets of the top-DE and most-expressed metrics,
    chosen on all cells, stay fixed) and rescores every prediction on the same resamples, so
    predictors are compared on equal terms.

    Parameters
    ----------
    predictions
        ``{predictor name: predicted change per gene}``: a model's, or a baseline's.
    cells
        Held-out cells of one perturbation, cells × genes.
    control_mean
        Control's mean ``log1p(counts per 10,000)`` per gene.
    expression
        Ranks the genes of the L2 metric (default: ``control_mean``).
    n_boot
        Bootstrap resamples (0: no intervals).
    confidence
        Coverage of the percentile intervals (the quantiles of the resampled metrics; for
        Pearson they can sit slightly below the point estimate, since resampling adds noise
        to the observed change).
    random_state
        Seed of the resamples.

    Returns
    -------
    DataFrame indexed by predictor with the columns :data:`EFFECT_COLUMNS` (each metric and the
    bounds of its interval).
    """
    cells = np.asarray(cells, dtype=float)
    if cells.ndim != 2 or cells.shape[0] == 0:
        raise ValueError("cells must be a non-empty cells × genes array.")
    observed = cells.mean(axis=0) - control_mean
    expression = control_mean if expression is None else expression
    top_de, top_expressed = _gene_sets(observed, expression)
    rng = np.random.default_rng(random_state)
    n_cells = cells.shape[0]
    if n_boot > 0:
        weights = rng.multinomial(n_cells, np.full(n_cells, 1.0 / n_cells), size=n_boot)
        resampled = weights @ cells / n_cells - control_mean
    tail = (1.0 - confidence) / 2.0
    rows = {}
    for name, predicted in predictions.items():
        predicted, _ = _as_changes(predicted, observed)
        point = _metrics(predicted, observed[None, :], top_de, top_expressed)[0]
        if n_boot > 0:
            boots = _metrics(predicted, resampled, top_de, top_expressed)
            with warnings.catch_warnings():  # all-NaN columns: a flat prediction's Pearson
                warnings.simplefilter("ignore", RuntimeWarning)
                low = np.nanquantile(boots, tail, axis=0)
                high = np.nanquantile(boots, 1.0 - tail, axis=0)
        else:
            low = high = np.full(len(EFFECT_METRICS), np.nan)
        rows[name] = np.stack([point, low, high], axis=1).ravel()
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(EFFECT_COLUMNS))
