"""Fit each method on a simulated screen and score how well it recovers the ground truth."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scvi
from anndata import AnnData

from sparsevae._constants import METHODS
from sparsevae._quiet import QUIET_TRAINER
from sparsevae.metrics import graph_scores, linear_r2, mean_correlation_coefficient

logger = logging.getLogger(__name__)


def method_kwargs(method: str) -> dict:
    """SparseVAE keyword arguments of a method name.

    Methods: ``"svae+"``, ``"svae"``, ``"ivae"``, ``"beta-vae"``, ``"vae"``.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose from {list(METHODS)}.")
    return dict(METHODS[method])


def _check_simulated(adata: AnnData) -> None:
    for slot, key in (("obsm", "z_true"), ("uns", "true_targets")):
        if key not in getattr(adata, slot):
            raise KeyError(
                f"adata.{slot}[{key!r}] is missing: identifiability needs the ground truth of "
                "sv.data.simulate_sparse_shift."
            )


def identifiability_report(
    adata: AnnData,
    *,
    methods: Sequence[str] = tuple(METHODS),
    seeds: Sequence[int] = (0,),
    train_perturbations: Sequence[str] | None = None,
    perturbation_key: str = "perturbation",
    control: str | None = "control",
    n_latent: int | None = None,
    max_epochs: int = 300,
    model_kwargs: dict | None = None,
    train_kwargs: dict | None = None,
    return_models: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, dict]:
    """Train each method for each seed and score latents and graph against the ground truth.

    Parameters
    ----------
    adata
        Output of :func:`sparsevae.data.simulate_sparse_shift`.
    methods
        Method names: ``"svae+"``, ``"svae"``, ``"ivae"``, ``"beta-vae"``, ``"vae"``.
    seeds
        Training seeds (``scvi.settings.seed``); the data stay the same.
    train_perturbations
        Perturbations to train on (control cells are always kept); default: all. The paper
        trains on the first 80 of 100.
    perturbation_key, control
        As in :meth:`sparsevae.SparseVAE.setup_anndata`.
    n_latent
        Latent dimension (default: the true one).
    max_epochs
        Training epochs.
    model_kwargs, train_kwargs
        Extra arguments of :class:`~sparsevae.SparseVAE` and its ``train``.
    return_models
        Also return the trained models, keyed by ``(method, seed)``; their ``adata`` holds
        the training cells with ``obsm["z_true"]``.

    Returns
    -------
    Tidy DataFrame, one row per (method, seed), with ``mcc_pearson``, ``mcc_spearman``,
    ``r2``, ``precision``, ``recall``, ``f1``, ``n_predicted_edges``, ``elbo_train``,
    ``nan_loss`` (whether any logged loss was not finite) and ``train_seconds``.
    """
    from sparsevae.model import SparseVAE

    _check_simulated(adata)
    true_targets = pd.DataFrame(adata.uns["true_targets"])
    if train_perturbations is None:
        train_perturbations = list(true_targets.index)
    missing = set(train_perturbations) - set(true_targets.index)
    if missing:
        raise ValueError(f"train_perturbations not in the simulation: {sorted(missing)[:5]}.")
    labels = adata.obs[perturbation_key].astype(str)
    keep = labels.isin(list(train_perturbations) + ([control] if control else [])).to_numpy()
    train = adata[keep].copy()
    z_true = np.asarray(train.obsm["z_true"])
    truth = true_targets.loc[list(train_perturbations)]
    n_latent = n_latent or z_true.shape[1]

    rows, models = [], {}
    for method in methods:
        kwargs = {"n_latent": n_latent, **method_kwargs(method), **(model_kwargs or {})}
        for seed in seeds:
            scvi.settings.seed = int(seed)
            SparseVAE.setup_anndata(train, perturbation_key=perturbation_key, control=control)
            model = SparseVAE(train, **kwargs)
            start = time.perf_counter()
            model.train(max_epochs=max_epochs, **{**QUIET_TRAINER, **(train_kwargs or {})})
            seconds = time.perf_counter() - start
            z = model.get_latent_representation()
            scores = graph_scores(truth, model.get_intervention_targets(), z_true, z)
            history = model.history
            losses = np.concatenate(
                [
                    history[k].to_numpy(dtype=float).ravel()
                    for k in ("train_loss", "elbo_train")
                    if k in history
                ]
            )
            rows.append(
                {
                    "method": method,
                    "seed": int(seed),
                    "mcc_pearson": mean_correlation_coefficient(z_true, z, "pearson"),
                    "mcc_spearman": mean_correlation_coefficient(z_true, z, "spearman"),
                    "r2": linear_r2(z_true, z),
                    **scores,
                    "elbo_train": float(history["elbo_train"].iloc[-1, 0]),
                    "nan_loss": bool(not np.all(np.isfinite(losses))),
                    "train_seconds": seconds,
                }
            )
            logger.info("%s seed %d: %s", method, seed, rows[-1])
            if return_models:
                models[(method, int(seed))] = model
    report = pd.DataFrame(rows)
    return (report, models) if return_models else report
