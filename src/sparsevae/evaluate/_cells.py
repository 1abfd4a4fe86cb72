"""Cells and genes of a held-out split: fresh AnnData objects, gene selection, empty cells."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
from anndata import AnnData

from sparsevae._normalize import log1p_cp10k

from ._splits import EXCLUDED

logger = logging.getLogger(__name__)


def _counts(adata: AnnData, layer: str | None):
    return adata.X if layer is None else adata.layers[layer]


def _fresh(adata: AnnData, cells: np.ndarray, genes: np.ndarray, layer: str | None, obs_keys):
    """A new AnnData with the counts of ``cells`` × ``genes`` and only the needed obs columns.

    Starting from a bare object keeps earlier registrations (scvi-tools' uuids in ``uns``)
    from leaking between the models of a report.
    """
    counts = _counts(adata, layer)[cells][:, genes]
    counts = counts.copy() if sp.issparse(counts) else np.array(counts)
    obs = adata.obs.iloc[cells][[k for k in obs_keys if k is not None]].copy()
    return AnnData(X=counts, obs=obs, var=pd.DataFrame(index=adata.var_names[genes].copy()))


def _select_genes(adata: AnnData, cells: np.ndarray, layer: str | None, n_top_genes: int | None):
    """Highly variable genes of the training ``cells`` only (all genes if no ``n_top_genes``).

    Selected by scanpy's ``"seurat"`` flavour on ``log1p(counts per 10,000)``
    (:func:`sparsevae._normalize.log1p_cp10k`).
    """
    if n_top_genes is None or n_top_genes >= adata.n_vars:
        return np.arange(adata.n_vars)
    train = AnnData(X=log1p_cp10k(_counts(adata, layer)[cells].astype(np.float32))[0])
    sc.pp.highly_variable_genes(train, n_top_genes=n_top_genes, flavor="seurat")
    return np.flatnonzero(train.var["highly_variable"].to_numpy())


def _exclude_empty_cells(adata, roles: np.ndarray, genes, layer, split: str) -> np.ndarray:
    """Cells with no counts on the selected genes have no library size: exclude, and say so."""
    totals = np.asarray(_counts(adata, layer)[:, genes].sum(axis=1)).ravel()
    empty = (totals == 0) & (roles != EXCLUDED)
    if empty.any():
        logger.warning(
            "Split %r: %d cell(s) have no counts on the selected genes and are excluded.",
            split,
            int(empty.sum()),
        )
        roles = roles.copy()
        roles[empty] = EXCLUDED
    return roles
