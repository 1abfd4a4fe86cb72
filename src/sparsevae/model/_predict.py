"""Counterfactual prediction: the given cells' expression under another perturbation.

Each cell's latent mean from the encoder loses the shift of its own perturbation (set) and gains
the shift of the requested one; the decoder's mean expression of that latent is the prediction.
Shifts are the evaluation readout (``get_perturbation_shifts``), so a combination's shift is the
sum of its singles'.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from sparsevae._constants import REGISTRY_KEYS

from ._combinations import parse_perturbation
from ._matching import check_known_perturbations, warn_unknown_perturbations

#: obs column and uns key of :meth:`PredictionMixin.predict`'s AnnData naming the perturbation.
PREDICTED_KEY = "predicted_perturbation"


class PredictionMixin:
    """Counterfactual getters of :class:`~sparsevae.SparseVAE`.

    Shifts of labels, predicted expression and treatment effects.
    """

    def _own_category_shifts(self) -> torch.Tensor:
        """Shift of every registered category (control and unknown rows: 0), (n_categories, L)."""
        shifts = self.get_perturbation_shifts().fillna(0.0).to_numpy(dtype=np.float32)
        full = np.zeros((len(self._categories), shifts.shape[1]), dtype=np.float32)
        full[self._perturbed_rows] = shifts
        return torch.as_tensor(full)

    def _decoded_means(self, adata, indices, batch_size, library_size, latent_change=None):
        """Decoder means at each cell's posterior mean, (n_cells, n_genes).

        Gene proportions times ``library_size``; the posterior mean is moved by
        ``latent_change(tensors, device)`` if given.
        """
        module = self.module
        module.eval()
        device = next(module.parameters()).device
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        chunks = []
        for tensors in loader:
            x = tensors[REGISTRY_KEYS.X_KEY].to(device)
            z = module.encode(x).loc
            if latent_change is not None:
                z = z + latent_change(tensors, device)
            batch = tensors.get(REGISTRY_KEYS.BATCH_KEY)
            batch = None if module.n_batch <= 1 or batch is None else batch.to(device)
            proportions = module.decode(z, batch).exp()
            chunks.append((proportions * library_size).cpu().numpy())
        return np.concatenate(chunks, axis=0)

    @torch.inference_mode()
    def get_normalized_expression(
        self,
        adata: AnnData | None = None,
        indices: np.ndarray | None = None,
        *,
        library_size: float = 1.0,
        batch_size: int | None = None,
        return_numpy: bool = False,
    ) -> pd.DataFrame | np.ndarray:
        """Each cell's expected expression: the decoder's mean at its posterior mean.

        The decoder's gene proportions at the encoder's posterior mean of z, times
        ``library_size`` (1: proportions; :data:`~sparsevae._constants.TARGET_SUM`: counts per
        10,000, the scale of scanpy's ``normalize_total``). It is :meth:`predict` with each
        cell's own perturbation. The encoder reads counts only, so cells of perturbations the
        model has not learned work too (with a warning naming them).

        Parameters
        ----------
        adata
            Cells (default: the model's), with the model's genes.
        indices
            Subset of cells of ``adata``.
        library_size
            Scale of the output.
        batch_size
            Cells per minibatch.
        return_numpy
            Return an array instead of a DataFrame cells × genes.

        Returns
        -------
        DataFrame (cells × genes, indexed by ``obs_names`` and ``var_names``) or ndarray.
        """
        self._check_if_trained(warn=True)
        adata = self._validate_anndata(adata)
        warn_unknown_perturbations(self, adata, "get_normalized_expression")
        values = self._decoded_means(adata, indices, batch_size, library_size)
        if return_numpy:
            return values
        cells = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
        return pd.DataFrame(values, index=adata.obs_names[cells], columns=adata.var_names)

    def get_combination_shift(self, perturbation: str) -> pd.Series:
        """Latent shift of a perturbation label: the sum of its singles' shifts.

        ``perturbation`` is a single (``"A"``), a combination of known singles joined by the
        setup's ``combination_delimiter`` (``"A+B"``), or the control label (zero shift).
        Shifts are those of :meth:`get_perturbation_shifts`.

        Raises
        ------
        ValueError
            Naming every single of ``perturbation`` that the model has not learned.
        """
        self._check_if_trained(warn=True)
        singles = parse_perturbation(
            perturbation, self.perturbation_names, self.combination_delimiter, self.control
        )
        shifts = self.get_perturbation_shifts().fillna(0.0)
        total = shifts.loc[singles].sum(axis=0) if singles else shifts.iloc[0] * 0.0
        return total.rename(str(perturbation))

    @torch.inference_mode()
    def predict(
        self,
        adata: AnnData | None = None,
        perturbation: str | None = None,
        *,
        indices: np.ndarray | None = None,
        batch_size: int | None = None,
        library_size: float = 1.0,
    ) -> AnnData:
        """Expected expression of the given cells had they received ``perturbation``.

        For each cell, the encoder's posterior mean of z loses the shift of the cell's own
        perturbation (set) and gains that of ``perturbation`` (:meth:`get_combination_shift`);
        the decoder's mean gene proportions of that latent, times ``library_size``, are the
        prediction. With ``perturbation`` equal to the cells' own, this is the model's
        reconstruction of them (decoder mean at the posterior mean). Pairs of trained singles
        are predicted zero-shot when the setup has a ``combination_delimiter``.

        Parameters
        ----------
        adata
            Cells to perturb in silico (default: the model's), typically control cells; their
            own perturbations must be known to the model.
        perturbation
            Label to apply: a known single, a combination of known singles (``"A+B"``), or the
            control label.
        indices
            Subset of cells of ``adata``.
        batch_size
            Cells per minibatch.
        library_size
            Scale of the output: 1 gives proportions (rows sum to 1), 1e4 counts per 10,000.

        Returns
        -------
        AnnData cells × genes with the expected normalised expression in ``X``, the cells'
        ``obs`` plus ``obs["predicted_perturbation"]``, and ``uns["predicted_perturbation"]``.

        Examples
        --------
        >>> control = adata[adata.obs["perturbation"] == "control"].copy()
        >>> predicted = model.predict(control, perturbation="A+B")
        """
        if perturbation is None:
            raise ValueError(
                "predict needs perturbation=... : a known single, a combination of known "
                "singles, or the control label."
            )
        self._check_if_trained(warn=True)
        adata = self._validate_anndata(adata)
        check_known_perturbations(self, adata)
        target = torch.as_tensor(
            self.get_combination_shift(perturbation).to_numpy(dtype=np.float32)
        )
        own_shifts = self._own_category_shifts()

        def swap_shift(tensors, device) -> torch.Tensor:
            codes = tensors[REGISTRY_KEYS.PERTURBATION_KEY].to(device)
            codes = codes.reshape(codes.shape[0], -1).long()
            shifts = own_shifts.to(device)
            valid = (codes >= 0).unsqueeze(-1).to(shifts.dtype)
            own = (shifts[codes.clamp(min=0)] * valid).sum(dim=1)
            return target.to(device) - own

        values = self._decoded_means(adata, indices, batch_size, library_size, swap_shift)
        cells = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
        obs = adata.obs.iloc[cells].copy()
        obs[PREDICTED_KEY] = str(perturbation)
        return AnnData(
            X=values,
            obs=obs,
            var=pd.DataFrame(index=adata.var_names.copy()),
            uns={PREDICTED_KEY: str(perturbation), "library_size": float(library_size)},
        )

    def get_treatment_effect(
        self,
        adata: AnnData | None = None,
        perturbation: str | None = None,
        *,
        reference: str | None = None,
        indices: np.ndarray | None = None,
        batch_size: int | None = None,
        library_size: float = 1.0,
        log1p: bool = False,
    ) -> pd.Series:
        """Average treatment effect per gene.

        The mean predicted expression under ``perturbation`` minus that under ``reference``
        (default: control), over the cells of ``adata``.

        Both predictions come from :meth:`predict` on the same cells, so the difference is
        the effect of the perturbation alone. With ``log1p=True`` the means are of
        ``log1p(expression)`` (e.g. with ``library_size=1e4``: log-normalised data, as in
        scanpy). Returns a Series indexed by gene.
        """
        if perturbation is None:
            raise ValueError("get_treatment_effect needs perturbation=... (see predict).")
        if reference is None:
            if self.control is None:
                raise ValueError(
                    "The model has no control label, so there is no default reference: pass "
                    "reference=... (a perturbation the effect is measured against)."
                )
            reference = self.control
        kwargs = {"indices": indices, "batch_size": batch_size, "library_size": library_size}
        transform = np.log1p if log1p else np.asarray
        treated = transform(self.predict(adata, perturbation, **kwargs).X).mean(axis=0)
        untreated = transform(self.predict(adata, reference, **kwargs).X).mean(axis=0)
        genes = self._validate_anndata(adata).var_names
        return pd.Series(treated - untreated, index=genes, name=str(perturbation))
