"""Reading a trained SparseVAE.

Which genes each latent drives, and which latents each perturbation shifts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from sparsevae._constants import REGISTRY_KEYS, TARGET_SUM

from ._matching import check_same_genes, model_genes, warn_unknown_perturbations

#: Columns of :meth:`InterpretationMixin.get_latent_gene_loadings`.
LOADING_COLUMNS = ["latent", "gene", "log2_fold_change", "expression_per_10k"]
#: Columns of :meth:`InterpretationMixin.get_target_table`.
TARGET_COLUMNS = ["perturbation", "latent", "pi", "shift"]


class InterpretationMixin:
    """Interpretation getters of :class:`~sparsevae.SparseVAE` (tidy DataFrames)."""

    @torch.inference_mode()
    def get_latent_gene_loadings(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        shift: float = 1.0,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """The decoder's response of every gene to a shift of every latent.

        For latent ``i`` and gene ``g``, the loading is

        ``log2_fold_change[i, g] = mean over cells c of
        log2 rho_g(z_c + shift * e_i) - log2 rho_g(z_c)``

        where ``z_c`` is cell c's posterior mean (the latent representation), ``e_i`` the
        i-th unit vector and ``rho_g(z)`` the decoder's expected share of gene g in a cell
        with latents z (softmax over genes; the cell's batch, if any, is kept). With the
        library size fixed, it is the log2 fold change of the gene's expected count when
        latent ``i`` rises by ``shift`` prior standard deviations, all else equal. Since
        ``rho`` sums to 1 over genes, the changes are relative: a latent that raises some
        genes lowers the share of all others a little. The decoder is non-linear, so the
        loading depends on the cells it is averaged over (``indices``; e.g. control cells)
        and on the sign and size of ``shift``.

        ``expression_per_10k`` is the gene's expected expression before the shift, on the
        scale of scanpy's ``normalize_total(target_sum=1e4)``: the decoder's mean proportion
        over the same cells × 10,000. Fold changes of genes the model hardly ever sees (well
        below 1 per 10k) are extrapolations of the decoder; filter on this column before
        ranking genes by fold change (:func:`sparsevae.pl.latent_genes` does).

        Parameters
        ----------
        adata
            Cells to average over (default: the model's training data); same genes as the
            model's.
        indices
            Subset of cells of ``adata``.
        shift
            Size of the shift, in units of the prior's standard deviation (1). A
            perturbation's learned shift on a latent (:meth:`get_target_table`) is its
            natural scale.
        batch_size
            Cells per minibatch (default: scvi-tools' ``settings.batch_size``); memory grows
            with ``batch_size × n_latent × n_genes``.

        Returns
        -------
        Tidy DataFrame with one row per (latent, gene) and the columns ``latent``
        (categorical, in the order of :attr:`latent_names`), ``gene``, ``log2_fold_change``
        and ``expression_per_10k`` (the same for every latent); rows latent by latent, genes
        in the order of ``adata.var_names``.
        ``df.attrs`` holds ``shift`` and ``n_cells``.

        Examples
        --------
        >>> loadings = model.get_latent_gene_loadings()
        >>> expressed = loadings[loadings.expression_per_10k >= 1]
        >>> expressed[expressed.latent == "latent_3"].nlargest(10, "log2_fold_change")
        >>> wide = loadings.pivot(index="gene", columns="latent", values="log2_fold_change")
        """
        self._check_if_trained(warn=True)
        if not (isinstance(shift, int | float) and math.isfinite(shift) and shift != 0):
            raise ValueError(f"shift must be a finite non-zero number, got {shift!r}.")
        adata = self._validate_anndata(adata)
        check_same_genes(model_genes(self), adata)
        warn_unknown_perturbations(self, adata, "get_latent_gene_loadings")
        self.module.eval()
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        effects, proportions, n_cells = 0.0, 0.0, 0
        for tensors in loader:
            x = tensors[REGISTRY_KEYS.X_KEY]
            batch_effects, batch_proportions = self.module.latent_shift_effects(
                x,
                tensors.get(REGISTRY_KEYS.BATCH_KEY),
                float(shift),
                tensors[REGISTRY_KEYS.PERTURBATION_KEY],
            )
            effects = effects + batch_effects.double()
            proportions = proportions + batch_proportions.double()
            n_cells += x.shape[0]
        if n_cells == 0:
            raise ValueError("No cells to average over: `indices` selects none of adata's cells.")
        log2_fc = (effects / n_cells / math.log(2.0)).cpu().numpy()
        expression = (proportions / n_cells * TARGET_SUM).cpu().numpy()
        n_latent, n_genes = log2_fc.shape
        latents = pd.Categorical(
            np.repeat(self.latent_names, n_genes), categories=self.latent_names, ordered=True
        )
        loadings = pd.DataFrame(
            {
                "latent": latents,
                "gene": np.tile(adata.var_names.to_numpy(dtype=str), n_latent),
                "log2_fold_change": log2_fc.ravel(),
                "expression_per_10k": np.tile(expression, n_latent),
            },
            columns=LOADING_COLUMNS,
        )
        loadings.attrs = {"shift": float(shift), "n_cells": int(n_cells)}
        return loadings

    def get_target_table(self, threshold: float = 0.5, n_top: int = 2) -> pd.DataFrame:
        """Each perturbation's targeted latents with their probability and shift, one per row.

        Targets are those of :meth:`get_intervention_targets` (``pi > threshold`` for sVAE+
        and sVAE; the ``n_top`` largest absolute shifts for iVAE and VAE).

        Parameters
        ----------
        threshold
            Minimal mask probability of a target (masked priors).
        n_top
            Targets per perturbation for the mask-free priors.

        Returns
        -------
        Tidy DataFrame with the columns ``perturbation``, ``latent``, ``pi`` (P(gamma = 1);
        1 for iVAE, 0 for VAE) and ``shift``: how far the perturbation moves that latent's
        prior mean when the edge is on (``mu``; for VAE, which learns no shift, the mean
        latent of the perturbation's training cells minus that of control cells). Rows
        follow :attr:`perturbation_names`, and within a perturbation decreasing ``|shift|``.
        Perturbations without a target have no row.

        Examples
        --------
        >>> table = model.get_target_table()
        >>> table[table.perturbation == "KLF1"]
        """
        if not 0 <= threshold < 1:
            raise ValueError(f"threshold must be in [0, 1), got {threshold!r}.")
        targets = self.get_intervention_targets(threshold=threshold, n_top=n_top)
        pi = self.get_mask_probabilities()
        shifts = self.knowledge.frame(self.knowledge.category_shifts("edge_shifts"))
        rows = [
            (perturbation, latent, float(pi.loc[perturbation, latent]), float(value))
            for perturbation in self.perturbation_names
            for latent, value in shifts.loc[perturbation, targets.loc[perturbation]]
            .sort_values(key=np.abs, ascending=False)
            .items()
        ]
        return pd.DataFrame(rows, columns=TARGET_COLUMNS)
