"""Predicted vs observed mean change: how well a model's counterfactual matches held-out cells.

The statistic is the change of mean normalised expression, ``mean log1p(counts per 10,000)``
per gene, between the cells of a perturbation and control cells. The model's prediction is
:meth:`~sparsevae.SparseVAE.get_treatment_effect` on control cells (the same statistic of its
expected expression under the perturbation and under control); the observed one is that of the
held-out cells. Both are compared by Pearson correlation over all genes and over the genes with
the largest observed change (SAMS-VAE's and GEARS' effect correlation).
"""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from sparsevae._constants import TARGET_SUM

#: Counts per cell after normalisation, as in the predictions (``library_size``).


def mean_log_expression(adata: AnnData, layer: str | None = None) -> np.ndarray:
    """Mean of ``log1p(counts per 10,000)`` per gene, read in blocks of cells (sparse stays sparse).

    Cells without counts are skipped: they have no proportions.
    """
    counts = adata.X if layer is None else adata.layers[layer]
    total = np.zeros(adata.n_vars)
    n_cells = 0
    for start in range(0, adata.n_obs, 4096):
        block = counts[start : start + 4096]
        block = block.toarray() if hasattr(block, "toarray") else np.asarray(block)
        sizes = block.sum(axis=1, keepdims=True)
        keep = sizes[:, 0] > 0
        total += np.log1p(TARGET_SUM * block[keep] / sizes[keep]).sum(axis=0)
        n_cells += int(keep.sum())
    if n_cells == 0:
        raise ValueError("adata has no cell with counts: there is no mean expression to take.")
    return total / n_cells


def effect_correlations(
    predicted: np.ndarray, observed: np.ndarray, n_top: int = 20
) -> dict[str, float]:
    """Pearson correlation of a predicted and an observed change per gene.

    Returns ``{"pearson_all_genes": r, "pearson_top20_de": r_top}`` (the key names ``n_top``):
    over all genes, and over the ``n_top`` genes with the largest absolute observed change.
    A correlation is NaN where the prediction (or the observation) does not vary: a model that
    predicts no change has no correlation, rather than a made-up one.
    """
    predicted = np.asarray(predicted, dtype=float).ravel()
    observed = np.asarray(observed, dtype=float).ravel()
    if predicted.shape != observed.shape:
        raise ValueError(
            f"predicted and observed changes differ in length: {predicted.size} vs "
            f"{observed.size} genes."
        )
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
