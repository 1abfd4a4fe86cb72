"""Each perturbation's own latent shift: the mean posterior mean of its cells minus a reference.

The shift is the package's one definition (:mod:`sparsevae._shifts`): the reference is the
control cells' mean latent, or, without a control label, the per-latent median of the
perturbations' mean latents (the sparsest origin).

This is what a prediction is made from by default (``source="empirical"`` in
:meth:`~sparsevae.SparseVAE.predict`): unlike the prior's sparse shift (``gamma * mu``), it keeps
every effect the encoder sees, including those the sparsity prior prunes from the graph. It is
also the shift of priors that learn none (``"standard"``). The means of the training data are
computed once after training and kept; :meth:`~sparsevae.SparseVAE.transfer` adds those of the
new perturbations from their transfer cells, so a transferred model predicts from them without
the training data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from sparsevae._shifts import latent_shifts

from ._matching import check_known_perturbations


class LatentMeansMixin:
    """Mean latent of every category's cells, cached for the model's own data."""

    #: Cached :meth:`_latent_means` of the model's data (``None``: not computed yet).
    _latent_mean_cache: pd.DataFrame | None = None

    def _latent_means(
        self, adata: AnnData | None = None, batch_size: int | None = None
    ) -> pd.DataFrame:
        """Mean posterior mean of each category's cells, categories × latents.

        Only cells whose label is the category itself count (a combination's cells do not
        count for its singles). NaN rows: categories without cells of their own. For the
        model's own data (``adata=None``) the result is cached until the next ``train``.
        """
        if adata is None and self._latent_mean_cache is not None:
            return self._latent_mean_cache
        data = self._validate_anndata(adata)
        check_known_perturbations(self, data)
        z = self.get_latent_representation(data, batch_size=batch_size)
        labels = data.obs[self._perturbation_registry.original_key].astype(str).to_numpy()
        means = pd.DataFrame(z, columns=self.latent_names).groupby(labels).mean()
        means = means.reindex(pd.Index(self._categories, name="category"))
        if adata is None:
            self._latent_mean_cache = means
        return means

    def _empirical_shifts(self, adata: AnnData | None, batch_size: int | None) -> np.ndarray:
        """Each category's mean latent shift, (n_categories, n_latent).

        The one definition of :func:`sparsevae._shifts.latent_shifts`: the mean latent of the
        category's cells minus that of control, or, without a control label, minus the
        per-latent median of the perturbations' mean latents (those with cells). NaN for
        categories without cells of their own, 0 for control.
        """
        means = self._latent_means(adata, batch_size).to_numpy()
        control = None
        if self.control is not None:
            control = means[self._control_index]
            if np.isnan(control).any():
                raise ValueError(
                    f"adata has no control cells (label {self.control!r}) to measure latent shifts "
                    "from. "
                    "Pass adata= with control cells (a model loaded with only transfer cells "
                    "does not keep its training controls)."
                )
        rows = self._perturbed_rows
        shifts = np.zeros(means.shape, dtype=np.float32)  # the control row stays 0
        shifts[rows] = latent_shifts(means[rows], control)
        return shifts

    def _extend_latent_means(
        self, parent, adata: AnnData, added: list[str], batch_size: int | None
    ) -> np.ndarray:
        """After transfer: the parent's means, plus those of ``added`` from ``adata``'s cells.

        Returns the new perturbations' means, (len(added), n_latent): the gamma = 1 optimum of
        their prior shifts.
        """
        means = parent._latent_means()
        means = means.reindex(pd.Index(self._categories, name="category"))
        if added:
            new = self._latent_means(adata, batch_size)
            alone = [name for name in added if new.loc[name].isna().any()]
            if alone:
                raise ValueError(
                    "transfer learns a new perturbation's shift from its cells alone, but adata "
                    f"has no cells labelled only {alone[:10]} (they occur only in "
                    "combinations). Add cells of each new single perturbation on its own."
                )
            means.loc[added] = new.loc[added].to_numpy()
        self._latent_mean_cache = means
        return means.loc[added].to_numpy(dtype=np.float32)
