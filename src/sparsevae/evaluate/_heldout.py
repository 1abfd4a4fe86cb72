"""Held-out interventions: train without some perturbations, transfer, score the NLL."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp
import scvi
from anndata import AnnData

from sparsevae._constants import METHODS, TARGET_SUM
from sparsevae._quiet import QUIET_TRAINER
from sparsevae._validation import validate_counts

from ._effects import effect_correlations, mean_log_expression
from ._identifiability import method_kwargs
from ._splits import EVALUATION, EXCLUDED, TRAIN, TRANSFER, HeldoutSplit, make_splits

logger = logging.getLogger(__name__)

#: Control cells on which a held-out perturbation's effect is predicted (a seeded sample when
#: there are more): enough for a mean over cells, bounded for screens with many controls.
MAX_CONTROL_CELLS = 2000
_EFFECT_COLUMNS = ("pearson_all_genes", "pearson_top20_de")
#: Columns of :func:`interventional_nll_report`, in order.
REPORT_COLUMNS = [
    "method",
    "seed",
    "split",
    "perturbation",
    "n_cells",
    "n_transfer_cells",
    "interventional_nll",
    "interventional_nll_sem",
    "n_particles",
    *_EFFECT_COLUMNS,
    "note",
]


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
    """Highly variable genes of the training ``cells`` only (all genes if no ``n_top_genes``)."""
    if n_top_genes is None or n_top_genes >= adata.n_vars:
        return np.arange(adata.n_vars)
    train = AnnData(X=_counts(adata, layer)[cells].astype(np.float32))
    sc.pp.normalize_total(train, target_sum=TARGET_SUM)
    sc.pp.log1p(train)
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


def transfer_and_score(
    model,
    transfer: AnnData,
    evaluation: AnnData,
    *,
    seed: int = 0,
    n_particles: int = 1000,
    sparse: bool = False,
):
    """The held-out protocol's second half: transfer a trained model, score held-out cells.

    ``model`` (trained without the held-out perturbations) learns their prior rows from the
    ``transfer`` cells (:meth:`~sparsevae.SparseVAE.transfer`: encoder, decoder and dispersion
    frozen), then every ``evaluation`` cell gets its interventional NLL (negative IWELBO,
    :meth:`~sparsevae.SparseVAE.get_interventional_nll`) with ``scvi.settings.seed = seed``.
    :func:`interventional_nll_report` and the benchmarks use this one path.

    Parameters
    ----------
    model
        A trained :class:`~sparsevae.SparseVAE`.
    transfer, evaluation
        Cells of the held-out perturbations: those that teach the model the new shifts, and
        those scored (the same genes as the model's).
    seed
        Seed of the IWELBO's particles.
    n_particles
        Importance samples per evaluation cell.
    sparse
        Learn the new perturbations' masks too, where the prior has masks (sVAE+, sVAE);
        otherwise gamma = 1 (the paper's transfer).

    Returns
    -------
    ``(transferred_model, nll)``: the model that knows the held-out perturbations, and the NLL
    of each evaluation cell (nats, in ``evaluation``'s order).

    Examples
    --------
    >>> transferred, nll = sv.evaluate.transfer_and_score(model, transfer, evaluation)
    >>> pd.Series(nll).groupby(evaluation.obs["perturbation"].to_numpy()).mean()
    """
    use_sparse = model.module.prior.effective_sparse_transfer(sparse)
    transferred = model.transfer(transfer, sparse=use_sparse, **QUIET_TRAINER)
    scvi.settings.seed = int(seed)
    return transferred, transferred.get_interventional_nll(evaluation, n_particles=n_particles)


def _fit_transfer_score(
    adata: AnnData,
    roles: np.ndarray,
    genes: np.ndarray,
    method: str,
    seed: int,
    *,
    perturbation_key: str,
    control: str | None,
    layer: str | None,
    batch_key: str | None,
    n_latent: int,
    max_epochs: int | None,
    n_particles: int,
    sparse_transfer: bool,
    model_kwargs: dict,
    train_kwargs: dict,
) -> tuple[np.ndarray, dict[str, dict[str, float]]]:
    """Train ``method``, transfer, and score the held-out cells.

    Returns the NLL of each evaluation cell and, with a control label, each held-out
    perturbation's effect correlations.
    """
    from sparsevae.model import SparseVAE

    obs_keys = (perturbation_key, batch_key)
    scvi.settings.seed = int(seed)
    train = _fresh(adata, np.flatnonzero(roles == TRAIN), genes, layer, obs_keys)
    SparseVAE.setup_anndata(
        train, perturbation_key=perturbation_key, control=control, batch_key=batch_key
    )
    model = SparseVAE(train, n_latent=n_latent, **{**method_kwargs(method), **model_kwargs})
    model.train(max_epochs=max_epochs, **{**QUIET_TRAINER, **train_kwargs})
    transfer = _fresh(adata, np.flatnonzero(roles == TRANSFER), genes, layer, obs_keys)
    evaluation = _fresh(adata, np.flatnonzero(roles == EVALUATION), genes, layer, obs_keys)
    model, nll = transfer_and_score(
        model, transfer, evaluation, seed=seed, n_particles=n_particles, sparse=sparse_transfer
    )
    effects = {}
    # Only a learned shift predicts an unseen perturbation; the VAE's (prior "standard") are
    # the transfer cells' empirical latent means, not a prediction.
    if control is not None and model.module.prior.learns_shifts:
        labels = adata.obs[perturbation_key].astype(str).to_numpy()
        controls = np.flatnonzero((roles == TRAIN) & (labels == control))
        effects = _effect_correlations(
            model,
            adata,
            evaluation,
            controls,
            genes,
            seed,
            perturbation_key=perturbation_key,
            layer=layer,
            obs_keys=obs_keys,
        )
    return nll, effects


def _effect_correlations(
    model, adata, evaluation, controls, genes, seed, *, perturbation_key, layer, obs_keys
) -> dict[str, dict[str, float]]:
    """Effect correlations of each held-out perturbation in ``evaluation``.

    Correlations of the model's predicted mean change (on up to ``MAX_CONTROL_CELLS`` training
    control cells) with the evaluation cells' observed change from all training control cells
    (:mod:`sparsevae.evaluate._effects`).
    """
    control_cells = _fresh(adata, controls, genes, layer, obs_keys)
    control_mean = mean_log_expression(control_cells)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.permutation(len(controls))[:MAX_CONTROL_CELLS])
    labels = evaluation.obs[perturbation_key].astype(str).to_numpy()
    effects = {}
    for perturbation in np.unique(labels):
        observed = mean_log_expression(evaluation[labels == perturbation]) - control_mean
        predicted = model.get_treatment_effect(
            control_cells,
            perturbation=perturbation,
            indices=sample,
            library_size=TARGET_SUM,
            log1p=True,
        )
        effects[perturbation] = effect_correlations(predicted.to_numpy(), observed)
    return effects


def _evaluate_split(
    adata: AnnData,
    split: HeldoutSplit,
    *,
    methods: Sequence[str],
    seeds: Sequence[int],
    n_top_genes: int | None,
    progress,
    **fit_kwargs,
) -> list[dict]:
    layer, perturbation_key = fit_kwargs["layer"], fit_kwargs["perturbation_key"]
    roles = split.roles.to_numpy().astype(object)
    genes = _select_genes(adata, np.flatnonzero(roles == TRAIN), layer, n_top_genes)
    roles = _exclude_empty_cells(adata, roles, genes, layer, split.name)
    labels = adata.obs[perturbation_key].astype(str).to_numpy()
    evaluation_labels = labels[roles == EVALUATION]
    rows = []
    for method in methods:
        for seed in seeds:
            progress.set_description(f"{split.name} · {method} · seed {seed}")
            start = time.perf_counter()
            nll, effects = np.empty(0), {}
            if len(evaluation_labels):
                nll, effects = _fit_transfer_score(adata, roles, genes, method, seed, **fit_kwargs)
            logger.info(
                "%s %s seed %d: %.1f s", split.name, method, seed, time.perf_counter() - start
            )
            for perturbation in split.heldout:
                values = nll[evaluation_labels == perturbation]
                n_eval = len(values)
                is_heldout_cell = labels == perturbation
                rows.append(
                    {
                        "method": method,
                        "seed": int(seed),
                        "split": split.name,
                        "perturbation": perturbation,
                        "n_cells": n_eval,
                        "n_transfer_cells": int(np.sum(is_heldout_cell & (roles == TRANSFER))),
                        "interventional_nll": float(values.mean()) if n_eval else np.nan,
                        "interventional_nll_sem": (
                            float(values.std(ddof=1) / np.sqrt(n_eval)) if n_eval > 1 else np.nan
                        ),
                        "n_particles": fit_kwargs["n_particles"],
                        **effects.get(perturbation, dict.fromkeys(_EFFECT_COLUMNS, np.nan)),
                        "note": (
                            ""
                            if n_eval
                            else f"{int(is_heldout_cell.sum())} cell(s) with counts: too few "
                            "to transfer and evaluate"
                        ),
                    }
                )
            progress.update(1)
    return rows


def interventional_nll_report(
    adata: AnnData,
    *,
    perturbation_key: str = "perturbation",
    control: str | None = "control",
    methods: Sequence[str] = tuple(METHODS),
    heldout: str | Sequence[str] | Mapping[str, Sequence[str]] = "clusters",
    seeds: Sequence[int] = (0,),
    max_epochs: int | None = 200,
    n_particles: int = 1000,
    n_latent: int = 15,
    transfer_fraction: float = 0.5,
    sparse_transfer: bool = False,
    n_top_genes: int | None = 2000,
    layer: str | None = None,
    batch_key: str | None = None,
    cluster_key: str = "perturbation_cluster",
    cluster_kwargs: dict | None = None,
    random_state: int = 0,
    model_kwargs: dict | None = None,
    train_kwargs: dict | None = None,
    progress_bar: bool = False,
) -> pd.DataFrame:
    """Interventional NLL of held-out perturbations for each method, split and seed.

    For each split (see :func:`make_splits`): genes are selected on its training cells (if
    ``n_top_genes``), each method is trained on the training perturbations and control, the
    held-out perturbations are added with :meth:`~sparsevae.SparseVAE.transfer` on their
    transfer cells (encoder, decoder and dispersion frozen; VAE and beta-VAE learn nothing),
    and the negative IWELBO of every evaluation cell is averaged per perturbation.
    All inputs are checked before the first model trains.

    Parameters
    ----------
    adata
        Counts with perturbation labels.
    perturbation_key, control, layer, batch_key
        As in :meth:`sparsevae.SparseVAE.setup_anndata`.
    methods
        Any of ``"svae+"``, ``"svae"``, ``"ivae"``, ``"beta-vae"``, ``"vae"``.
    heldout
        ``"clusters"`` (one split per perturbation cluster), a list of perturbations, or a
        dict ``{split name: perturbations}``.
    seeds
        Training (and particle) seeds; the splits depend on ``random_state`` only.
    max_epochs
        Training epochs of each model.
    n_particles
        Importance samples per evaluation cell.
    n_latent
        Latent dimension of every model.
    transfer_fraction
        Share of each held-out perturbation's cells used for transfer.
    sparse_transfer
        Learn the new perturbations' masks in transfer (sVAE+, sVAE) instead of gamma = 1.
    n_top_genes
        Highly variable genes chosen on each split's training cells (scanpy's ``"seurat"``
        flavour on normalised log counts) when the data have more; ``None``: all genes.
    cluster_key, cluster_kwargs
        Where the perturbation clusters are (or are written), and options of
        :func:`sparsevae.tl.cluster_perturbations`.
    random_state
        Seed of the clustering and of the transfer/evaluation split of cells.
    model_kwargs, train_kwargs
        Extra arguments of :class:`~sparsevae.SparseVAE` and of its ``train``.
    progress_bar
        Show a progress bar over the trained models.

    Returns
    -------
    Tidy DataFrame, one row per (method, seed, split, held-out perturbation), with the
    columns ``REPORT_COLUMNS``: ``n_cells`` (evaluation cells), ``n_transfer_cells``,
    ``interventional_nll`` (mean over the evaluation cells, nats per cell) and its standard
    error, ``pearson_all_genes`` and ``pearson_top20_de`` (Pearson correlation of the
    transferred model's predicted mean change, on training control cells, with the evaluation
    cells' observed change from control, over all selected genes and over the 20 with the
    largest observed change: :func:`effect_correlations`; NaN without a control label, for the
    VAE and beta-VAE, which learn no shift to predict from, and where a model predicts no
    change), and a ``note`` for perturbations too small to evaluate (NLL is NaN; never
    dropped).
    ``report.attrs["splits"]`` stores each split (:meth:`HeldoutSplit.to_dict`: held-out
    perturbations and the names of their transfer, evaluation and excluded cells; all other
    cells trained) and ``report.attrs["split_params"]`` how it was drawn;
    :func:`split_table` turns it into one row per held-out cell.

    Examples
    --------
    >>> adata = sv.data.norman2019_subset()
    >>> report = sv.evaluate.interventional_nll_report(adata, methods=("svae+", "vae"))
    >>> sv.evaluate.summarize_interventional_nll(report)
    """
    from tqdm.auto import tqdm

    for method in methods:
        method_kwargs(method)
    if n_particles < 1:
        raise ValueError(f"n_particles must be >= 1, got {n_particles}.")
    if not seeds:
        raise ValueError("seeds is empty; pass at least one seed, e.g. seeds=(0,).")
    validate_counts(adata, layer)
    if batch_key is not None and batch_key not in adata.obs:
        raise KeyError(f"batch_key={batch_key!r} is not a column of adata.obs.")
    splits = make_splits(
        adata,
        perturbation_key=perturbation_key,
        control=control,
        heldout=heldout,
        transfer_fraction=transfer_fraction,
        cluster_key=cluster_key,
        random_state=random_state,
        cluster_kwargs=cluster_kwargs,
    )
    rows: list[dict] = []
    total = len(splits) * len(methods) * len(seeds)
    with tqdm(total=total, disable=not progress_bar, unit="model") as progress:
        for split in splits:
            rows += _evaluate_split(
                adata,
                split,
                perturbation_key=perturbation_key,
                control=control,
                layer=layer,
                batch_key=batch_key,
                methods=methods,
                seeds=seeds,
                n_latent=n_latent,
                max_epochs=max_epochs,
                n_particles=n_particles,
                n_top_genes=n_top_genes,
                sparse_transfer=sparse_transfer,
                model_kwargs=model_kwargs or {},
                train_kwargs=train_kwargs or {},
                progress=progress,
            )
    report = pd.DataFrame(rows, columns=REPORT_COLUMNS)
    report.attrs["splits"] = {split.name: split.to_dict() for split in splits}
    report.attrs["split_params"] = {
        "random_state": random_state,
        "transfer_fraction": transfer_fraction,
        "n_top_genes": n_top_genes,
    }
    return report


def summarize_interventional_nll(report: pd.DataFrame) -> pd.DataFrame:
    """Mean interventional NLL per method and split (over perturbations, then over seeds).

    Returns a DataFrame methods × splits, plus an ``"all"`` column averaging every held-out
    perturbation, sorted by it (best first). Perturbations without an NLL are not averaged;
    their rows in ``report`` say why.
    """
    scored = report.dropna(subset=["interventional_nll"])
    per_seed = scored.groupby(["method", "split", "seed"])["interventional_nll"].mean()
    table = per_seed.groupby(["method", "split"]).mean().unstack("split")
    overall = scored.groupby(["method", "seed"])["interventional_nll"].mean()
    table["all"] = overall.groupby("method").mean()
    return table.sort_values("all")


def summarize_effect_correlations(report: pd.DataFrame) -> pd.DataFrame:
    """Mean effect correlations per method, over the (perturbation, seed) rows that have one.

    Columns: the means of ``pearson_all_genes`` and ``pearson_top20_de``, ``n_predicted`` (rows
    with a correlation) and ``n_no_change`` (scored rows without one: the model predicts no
    change for that perturbation). Methods with no correlation at all (the VAE and beta-VAE,
    which learn no shift; any method without a control label) are left out. Sorted by the
    correlation over all genes, best first.
    """
    scored = report.dropna(subset=["interventional_nll"])
    grouped = scored.groupby("method")
    table = grouped[list(_EFFECT_COLUMNS)].mean()
    table["n_predicted"] = grouped["pearson_all_genes"].count()
    table["n_no_change"] = grouped.size() - table["n_predicted"]
    table = table[table["n_predicted"] > 0]
    return table.sort_values("pearson_all_genes", ascending=False)


def split_table(report: pd.DataFrame) -> pd.DataFrame:
    """The held-out cells of every split in ``report``: columns ``split``, ``cell``, ``role``.

    Cells not listed in a split were training cells of that split.
    """
    rows = [
        (name, cell, role)
        for name, split in report.attrs.get("splits", {}).items()
        for role in (TRANSFER, EVALUATION, EXCLUDED)
        for cell in split[role]
    ]
    return pd.DataFrame(rows, columns=["split", "cell", "role"])
