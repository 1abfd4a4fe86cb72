"""Transfer: teach a trained SparseVAE the prior shift of perturbations it has not seen.

The paper's held-out protocol: encoder, decoder and dispersion stay frozen; only the new
perturbations' prior parameters are learned from a few of their cells. Every other parameter
of the model stays bitwise equal.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from ._matching import check_same_genes, model_genes
from ._training_plan import TransferTrainingPlan
from ._validation import validate_counts

if TYPE_CHECKING:
    from ._model import SparseVAE

logger = logging.getLogger(__name__)


def _latent_means_by_perturbation(
    model: SparseVAE, adata: AnnData, names: list[str], batch_size: int | None
) -> np.ndarray:
    """Mean of the encoder's posterior means over each perturbation's cells."""
    z = model.get_latent_representation(adata, batch_size=batch_size)
    labels = adata.obs[model._perturbation_registry.original_key].astype(str).to_numpy()
    means = pd.DataFrame(z).groupby(labels).mean()
    alone = [name for name in names if name not in means.index]
    if alone:
        raise ValueError(
            f"transfer learns a new perturbation's shift from its cells alone, but adata has no "
            f"cells labelled only {alone[:10]} (they occur only in combinations). Add cells of "
            "each new single perturbation on its own."
        )
    return means.loc[names].to_numpy(dtype=np.float32)


def transfer_perturbations(
    model: SparseVAE,
    adata: AnnData,
    *,
    sparse: bool = False,
    max_epochs: int = 100,
    batch_size: int = 256,
    lr_prior: float = 1e-2,
    **train_kwargs,
) -> SparseVAE:
    """See :meth:`sparsevae.SparseVAE.transfer`."""
    model._check_if_trained(warn=False)
    if adata.n_obs == 0:
        raise ValueError("adata has no cells: transfer needs cells of the new perturbations.")
    check_same_genes(model_genes(model), adata)
    validate_counts(adata, model.registry_["setup_args"].get("layer"), warn_empty_genes=False)
    manager = model.adata_manager.transfer_fields(adata, extend_categories=True)
    cls = type(model)
    cls.register_manager(manager)

    params = {**model.init_params_["non_kwargs"], **model.init_params_["kwargs"]}
    # Keep the trained prior's options (e.g. its sparsity alpha, not K + the new ones).
    params.update(model.module.prior.hyperparameters())
    new = cls(adata, **params)
    old_names, new_categories = model._categories, new._categories
    if new_categories[: len(old_names)] != old_names:  # the field appends; never reorders
        raise RuntimeError("Perturbation categories were reordered during transfer.")
    added = [c for c in new_categories[len(old_names) :] if c != new.control]
    logger.info("Transferring %d new perturbation(s): %s", len(added), added[:10])

    # Copy every trained tensor; prior tensors gain rows for the added perturbations.
    state = new.module.state_dict()
    for key, value in model.module.state_dict().items():
        if state[key].shape == value.shape:
            state[key] = value.clone()
        else:
            state[key][: value.shape[0]] = value
    new.module.load_state_dict(state)
    new.module.to(model.device)
    new.module.eval()
    new.is_trained_ = True
    if not added:
        return new
    rows = [new_categories.index(name) for name in added]
    needs_training = new.module.prior.init_transfer(
        rows, lambda: _latent_means_by_perturbation(new, adata, added, batch_size), sparse
    )
    if needs_training:
        new._training_plan_cls = TransferTrainingPlan  # this run only
        try:
            new.train(
                max_epochs=max_epochs,
                batch_size=batch_size,
                lr_prior=lr_prior,
                n_epochs_kl_warmup=None,
                train_size=1.0,
                plan_kwargs={"transfer_rows": rows},
                **train_kwargs,
            )
        finally:
            del new._training_plan_cls
    return new
