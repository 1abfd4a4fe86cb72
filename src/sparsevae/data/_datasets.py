"""Datasets shipped with the package (no downloads at run time)."""

from __future__ import annotations

from importlib.resources import files

import anndata
from anndata import AnnData


def norman2019_subset() -> AnnData:
    """A small real Perturb-seq screen: Norman et al. 2019 (K562, CRISPR activation).

    3,375 cells × 250 genes with integer UMI counts in ``X`` (CSR, float32);
    ``obs["perturbation"]`` holds 33 perturbations (18 single genes and 15 pairs written
    ``A+B``) and ``"control"``, about 100 cells each; ``obs["n_counts_total"]`` holds each
    cell's total counts over all genes before gene selection.

    Provenance: the development subset of the altoslabs/perturbench repository (BSD-3-Clause),
    ``src/perturbench/data/resources/devel.h5ad``, K562 cells only (GEO GSE133344). That file
    stores log-normalised values; the integer counts were recovered exactly from it. Of its 500
    genes, the 250 with no count in any of these cells are left out (the file's genes were chosen
    on these K562 cells and another dataset together); every other value is unchanged.

    Returns
    -------
    A new AnnData each call (modifying it does not change the shipped file).
    """
    path = files("sparsevae.data").joinpath("norman2019_subset.h5ad")
    with path.open("rb") as handle:
        return anndata.read_h5ad(handle)
