"""Counterfactual prediction: the given cells' expression under another perturbation.

Each cell's latent mean from the encoder loses the shift of its own perturbation (set) and gains
the shift of the requested one; the decoder's mean expression of that latent is the prediction.
Shifts are the evaluation readout (``get_perturbation_shifts``), so a combination's shift is the
sum of its singles'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from sparsevae._constants import REGISTRY_KEYS

from ._combinations import parse_perturbation
from ._matching import check_known_perturbations

if TYPE_CHECKING:
    from ._model import SparseVAE

#: obs column and uns key of :func:`predict_expression`'s AnnData naming the perturbation.
PREDICTED_KEY = "predicted_perturbation"


def combination_shift(model: SparseVAE, perturbation: str) -> pd.Series:
    """Latent shift of ``perturbation`` (a single, a combination or control): sum of singles."""
    singles = parse_perturbation(
        perturbation, model.perturbation_names, model.combination_delimiter, model.control
    )
    shifts = model.get_perturbation_shifts().fillna(0.0)
    total = shifts.loc[singles].sum(axis=0) if singles else shifts.iloc[0] * 0.0
    return total.rename(str(perturbation))


def _category_shifts(model: SparseVAE) -> torch.Tensor:
    """Shift of every registered category (control and unknown rows: 0), (n_categories, L)."""
    shifts = model.get_perturbation_shifts().fillna(0.0).to_numpy(dtype=np.float32)
    full = np.zeros((len(model._categories), shifts.shape[1]), dtype=np.float32)
    full[model._perturbed_rows] = shifts
    return torch.as_tensor(full)


@torch.inference_mode()
def predict_expression(
    model: SparseVAE,
    adata: AnnData | None,
    perturbation: str,
    indices: np.ndarray | None,
    batch_size: int | None,
    library_size: float,
) -> AnnData:
    """See :meth:`sparsevae.SparseVAE.predict`."""
    model._check_if_trained(warn=True)
    adata = model._validate_anndata(adata)
    check_known_perturbations(model, adata)
    target = torch.as_tensor(combination_shift(model, perturbation).to_numpy(dtype=np.float32))
    own_shifts = _category_shifts(model)
    module = model.module
    module.eval()
    device = next(module.parameters()).device
    target, own_shifts = target.to(device), own_shifts.to(device)
    loader = model._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
    chunks = []
    for tensors in loader:
        x = tensors[REGISTRY_KEYS.X_KEY].to(device)
        codes = tensors[REGISTRY_KEYS.PERTURBATION_KEY].to(device)
        codes = codes.reshape(codes.shape[0], -1).long()
        valid = (codes >= 0).unsqueeze(-1).to(own_shifts.dtype)
        own = (own_shifts[codes.clamp(min=0)] * valid).sum(dim=1)
        qz, _ = module.z_encoder(torch.log1p(x))
        z = qz.loc - own + target
        batch = tensors.get(REGISTRY_KEYS.BATCH_KEY)
        cat = () if module.n_batch <= 1 or batch is None else (batch.to(device),)
        library = torch.zeros(x.shape[0], 1, device=device)  # unused by px_scale
        px_scale = module.decoder("gene", z, library, *cat)[0]
        chunks.append((px_scale * library_size).cpu().numpy())
    cells = np.arange(adata.n_obs) if indices is None else np.asarray(indices)
    obs = adata.obs.iloc[cells].copy()
    obs[PREDICTED_KEY] = str(perturbation)
    return AnnData(
        X=np.concatenate(chunks, axis=0),
        obs=obs,
        var=pd.DataFrame(index=adata.var_names.copy()),
        uns={PREDICTED_KEY: str(perturbation), "library_size": float(library_size)},
    )


def treatment_effect(
    model: SparseVAE,
    adata: AnnData | None,
    perturbation: str,
    reference: str | None,
    indices: np.ndarray | None,
    batch_size: int | None,
    library_size: float,
    log1p: bool = False,
) -> pd.Series:
    """See :meth:`sparsevae.SparseVAE.get_treatment_effect`."""
    if reference is None:
        if model.control is None:
            raise ValueError(
                "The model has no control label, so there is no default reference: pass "
                "reference=... (a perturbation the effect is measured against)."
            )
        reference = model.control
    kwargs = {"indices": indices, "batch_size": batch_size, "library_size": library_size}
    transform = np.log1p if log1p else np.asarray
    treated = transform(predict_expression(model, adata, perturbation, **kwargs).X).mean(axis=0)
    untreated = transform(predict_expression(model, adata, reference, **kwargs).X).mean(axis=0)
    genes = model._validate_anndata(adata).var_names
    return pd.Series(treated - untreated, index=genes, name=str(perturbation))
