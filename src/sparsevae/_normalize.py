"""The one log1p(CP10k) normalisation: ``log1p(counts per 10,000)`` of each cell.

Each cell's counts are scaled to sum to :data:`~sparsevae._constants.TARGET_SUM` (scanpy's
``normalize_total(target_sum=1e4)``) and log1p-transformed. Observed expression
(:func:`sparsevae.evaluate.mean_log_expression`, :func:`sparsevae.evaluate.log_normalized`),
the model's sampled predictions (``statistic="sampled"``), the gene selection of held-out
splits and the expression profiles of :func:`sparsevae.tl.cluster_perturbations` all use
:func:`log1p_cp10k`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from sparsevae._constants import TARGET_SUM


def log1p_cp10k(counts):
    """``log1p(TARGET_SUM * counts / total)`` per cell, and which cells have counts.

    Parameters
    ----------
    counts
        Cells × genes: a dense array (the last axis is genes, leading axes are cells, e.g.
        (draws, cells, genes)) or a scipy sparse matrix (kept sparse, returned as CSR).

    Returns
    -------
    ``(values, has_counts)``: the normalised values in the shape of ``counts`` (float, in the
    precision of ``counts`` when it is float) and a bool array over the cells. A cell without
    counts has no proportions: its values are 0, and callers that average cells skip it
    (``values[has_counts]``). ``counts`` is not modified.
    """
    if sp.issparse(counts):
        matrix = counts.tocsr(copy=True)
        sizes = np.asarray(matrix.sum(axis=1)).ravel()
        row_sizes = np.repeat(sizes, np.diff(matrix.indptr))
        scaled = TARGET_SUM * matrix.data
        data = np.zeros(scaled.shape, dtype=np.result_type(scaled, row_sizes))
        np.divide(scaled, row_sizes, out=data, where=row_sizes > 0)
        matrix.data = np.log1p(data, out=data)
        return matrix, sizes > 0
    counts = np.asarray(counts)
    sizes = counts.sum(axis=-1, keepdims=True)
    scaled = TARGET_SUM * counts
    values = np.zeros(scaled.shape, dtype=np.result_type(scaled, sizes))
    np.divide(scaled, sizes, out=values, where=sizes > 0)
    return np.log1p(values, out=values), sizes[..., 0] > 0


def mean_log_expression(adata: AnnData, layer: str | None = None) -> np.ndarray:
    """Mean of ``log1p(counts per 10,000)`` per gene, read in blocks of cells (sparse stays sparse).

    Cells without counts are skipped: they have no proportions. The normalisation is the
    package's one (:func:`sparsevae._normalize.log1p_cp10k`).
    """
    counts = adata.X if layer is None else adata.layers[layer]
    total = np.zeros(adata.n_vars)
    n_cells = 0
    for start in range(0, adata.n_obs, 4096):
        block = counts[start : start + 4096]
        block = block.toarray() if hasattr(block, "toarray") else np.asarray(block)
        values, keep = log1p_cp10k(block)
        total += values[keep].sum(axis=0)
        n_cells += int(keep.sum())
    if n_cells == 0:
        raise ValueError("adata has no cell with counts: there is no mean expression to take.")
    return total / n_cells
