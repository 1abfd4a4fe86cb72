"""Held-out interventions: train without some perturbations, transfer, score the NLL."""

from __future__ import annotations

import logging
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scvi
from anndata import AnnData

from sparsevae._checkpoint import open_checkpoint
from sparsevae._constants import DEFAULT_METHODS, DEFAULT_N_TOP_GENES
from sparsevae._quiet import QUIET_TRAINER
from sparsevae._validation import validate_counts

from ._cell_eval import cell_eval_columns, check_cell_eval_profile
from ._cells import _exclude_empty_cells, _fresh, _select_genes
from ._effects import EFFECT_COLUMNS
from ._heldout_effects import (
    _cell_eval_baselines,
    _cell_eval_real,
    _effect_context,
    _predicted_changes,
    _score,
)
from ._identifiability import check_methods_and_seeds, method_kwargs
from ._splits import EVALUATION, EXCLUDED, TRAIN, TRANSFER, HeldoutSplit, make_splits

logger = logging.getLogger(__name__)

#: ``kind`` of a report row: a trained method, or a baseline that predicts from observed cells.
MODEL, BASELINE = "model", "baseline"
#: Columns of :func:`interventional_nll_report`, in order.
REPORT_COLUMNS = [
    "method",
    "kind",
    "seed",
    "split",
    "perturbation",
    "n_cells",
    "n_transfer_cells",
    "interventional_nll",
    "interventional_nll_sem",
    "n_particles",
    *EFFECT_COLUMNS,
    "note",
]


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
    of each evaluation cell (nats, in ``evaluation``'s order). When ``transfer`` holds only
    perturbations the model has learned (combinations of trained singles, predicted
    zero-shot), nothing is transferred and ``model`` itself is returned; combinations of
    trained singles beside new perturbations are scored as such, without the warning
    :meth:`~sparsevae.SparseVAE.transfer` gives for them.

    Examples
    --------
    >>> transferred, nll = sv.evaluate.transfer_and_score(model, transfer, evaluation)
    >>> pd.Series(nll).groupby(evaluation.obs["perturbation"].to_numpy()).mean()
    """
    from sparsevae.model._transfer import ALREADY_LEARNED, learned_labels

    use_sparse = bool(sparse) and model.module.prior.has_masks  # masks where the prior has them
    key = model.registry_["setup_args"]["perturbation_key"]
    labels = transfer.obs[key].astype(str).unique() if key in transfer.obs else []
    labels = [label for label in labels if label != model.control]
    known = model.perturbation_names
    if (
        labels
        and learned_labels(labels, known, model.control, model.combination_delimiter) == labels
    ):
        transferred = model  # zero-shot: nothing new to learn
    else:
        with warnings.catch_warnings():  # learned combinations are scored zero-shot, by design
            warnings.filterwarnings("ignore", message=re.escape(ALREADY_LEARNED))
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
    combination_delimiter: str | None,
    n_latent: int,
    max_epochs: int | None,
    n_particles: int,
    sparse_transfer: bool,
    model_kwargs: dict,
    train_kwargs: dict,
    cell_eval: str | None,
    **_,
) -> tuple[np.ndarray, dict[str, np.ndarray], AnnData | None]:
    """Train ``method``, transfer, and score the held-out cells.

    Returns the NLL of each evaluation cell and, with a control label, each held-out
    perturbation's predicted change and (with ``cell_eval``) predicted cells
    (:func:`_predicted_changes`).
    """
    from sparsevae.model import SparseVAE

    obs_keys = (perturbation_key, batch_key)
    scvi.settings.seed = int(seed)
    train = _fresh(adata, np.flatnonzero(roles == TRAIN), genes, layer, obs_keys)
    SparseVAE.setup_anndata(
        train,
        perturbation_key=perturbation_key,
        control=control,
        batch_key=batch_key,
        combination_delimiter=combination_delimiter,
    )
    model = SparseVAE(train, n_latent=n_latent, **{**method_kwargs(method), **model_kwargs})
    model.train(max_epochs=max_epochs, **{**QUIET_TRAINER, **train_kwargs})
    transfer = _fresh(adata, np.flatnonzero(roles == TRANSFER), genes, layer, obs_keys)
    evaluation = _fresh(adata, np.flatnonzero(roles == EVALUATION), genes, layer, obs_keys)
    model, nll = transfer_and_score(
        model, transfer, evaluation, seed=seed, n_particles=n_particles, sparse=sparse_transfer
    )
    predicted, cells = {}, None
    if control is not None:
        keys = {"perturbation_key": perturbation_key, "control": control, "layer": layer}
        predicted, cells = _predicted_changes(
            model,
            adata,
            evaluation,
            roles,
            genes,
            seed,
            cell_eval=cell_eval,
            obs_keys=obs_keys,
            **keys,
        )
    return nll, predicted, cells


def _evaluate_split(
    adata: AnnData,
    split: HeldoutSplit,
    *,
    methods: Sequence[str],
    seeds: Sequence[int],
    n_top_genes: int | None,
    n_boot: int,
    random_state: int,
    progress,
    **fit_kwargs,
) -> list[dict]:
    layer, perturbation_key = fit_kwargs["layer"], fit_kwargs["perturbation_key"]
    control, cell_eval = fit_kwargs["control"], fit_kwargs["cell_eval"]
    keys = {
        "perturbation_key": perturbation_key,
        "control": control,
        "layer": layer,
        "obs_keys": (perturbation_key, fit_kwargs["batch_key"]),
    }
    roles = split.roles.to_numpy().astype(object)
    genes = _select_genes(adata, np.flatnonzero(roles == TRAIN), layer, n_top_genes)
    roles = _exclude_empty_cells(adata, roles, genes, layer, split.name)
    labels = adata.obs[perturbation_key].astype(str).to_numpy()
    evaluation_labels = labels[roles == EVALUATION]
    context, control_mean = {}, None
    if control is not None and len(evaluation_labels):
        context, control_mean = _effect_context(
            adata,
            roles,
            genes,
            split.heldout,
            perturbation_key=perturbation_key,
            control=control,
            layer=layer,
            obs_keys=keys["obs_keys"],
            combination_delimiter=fit_kwargs["combination_delimiter"],
        )

    def row(method, kind, seed, perturbation, values, effects) -> dict:
        n_eval = len(values)
        is_heldout_cell = labels == perturbation
        return {
            "method": method,
            "kind": kind,
            "seed": int(seed),
            "split": split.name,
            "perturbation": perturbation,
            "n_cells": int(np.sum(is_heldout_cell & (roles == EVALUATION))),
            "n_transfer_cells": int(np.sum(is_heldout_cell & (roles == TRANSFER))),
            "interventional_nll": float(values.mean()) if n_eval else np.nan,
            "interventional_nll_sem": (
                float(values.std(ddof=1) / np.sqrt(n_eval)) if n_eval > 1 else np.nan
            ),
            "n_particles": fit_kwargs["n_particles"] if kind == MODEL else np.nan,
            **effects,
            "note": (
                ""
                if np.any(is_heldout_cell & (roles == EVALUATION))
                else f"{int(is_heldout_cell.sum())} cell(s) with counts: too few "
                "to transfer and evaluate"
            ),
        }

    no_effects = dict.fromkeys(EFFECT_COLUMNS, np.nan)
    rows = []
    # with cell_eval: each seed's real side and control cells (the same for every method)
    cell_eval_real: dict[int, tuple] = {}
    for method in methods:
        for seed in seeds:
            progress.set_description(f"{split.name} · {method} · seed {seed}")
            start = time.perf_counter()
            nll, predicted, cells, cell_eval_scores = np.empty(0), {}, None, {}
            if len(evaluation_labels):
                nll, predicted, cells = _fit_transfer_score(
                    adata, roles, genes, method, seed, **fit_kwargs
                )
            if cells is not None and context:
                if seed not in cell_eval_real:
                    cell_eval_real[seed] = _cell_eval_real(
                        adata, roles, genes, list(context), seed, **keys
                    )
                real = cell_eval_real[seed][0]
                cell_eval_scores = cell_eval_columns(
                    cells[np.isin(cells.obs[perturbation_key].astype(str), [*context, control])],
                    real,
                    perturbation_key,
                    control,
                    cell_eval,
                )
            logger.info(
                "%s %s seed %d: %.1f s", split.name, method, seed, time.perf_counter() - start
            )
            for perturbation in split.heldout:
                effects = no_effects
                if perturbation in predicted and perturbation in context:
                    scores = _score(
                        context,
                        control_mean,
                        perturbation,
                        {method: predicted[perturbation]},
                        n_boot,
                        random_state,
                    )
                    effects = scores.loc[method].to_dict()
                effects = {**effects, **cell_eval_scores.get(perturbation, {})}
                values = nll[evaluation_labels == perturbation]
                rows.append(row(method, MODEL, seed, perturbation, values, effects))
            progress.update(1)
    # Baselines use observed cells only: the same for every seed, repeated so that means over
    # seeds treat them as the methods.
    if cell_eval is not None and context:
        for seed in seeds:  # the real side, when no method was scored with the seed
            if seed not in cell_eval_real:
                cell_eval_real[seed] = _cell_eval_real(
                    adata, roles, genes, list(context), seed, **keys
                )
    baseline_cell_eval = {
        seed: _cell_eval_baselines(adata, roles, genes, context, *real, cell_eval, **keys)
        for seed, real in cell_eval_real.items()
    }
    for perturbation in split.heldout:
        if perturbation not in context:
            continue
        scores = _score(
            context, control_mean, perturbation, context[perturbation][1], n_boot, random_state
        )
        for seed in seeds:
            for name, effects in scores.iterrows():
                extra = baseline_cell_eval.get(seed, {}).get(name, {}).get(perturbation, {})
                effects = {**effects.to_dict(), **extra}
                rows.append(row(name, BASELINE, seed, perturbation, np.empty(0), effects))
    return rows


def _columns(rows: list[dict]) -> list[str]:
    """``REPORT_COLUMNS`` and, when cell-eval scored the rows, its ``cell_eval_*`` columns."""
    extra = sorted({key for row in rows for key in row if key.startswith("cell_eval_")})
    return [*REPORT_COLUMNS, *extra]


class _Checkpoint:
    """Finished splits of a held-out report on disk (see ``checkpoint_dir``)."""

    def __init__(self, folder: str | Path, settings: dict):
        self.folder = open_checkpoint(folder, settings, "a report")

    def _path(self, split: str) -> Path:
        return self.folder / f"{split}.csv"

    def read(self, split: str) -> list[dict] | None:
        """The split's rows if it finished before, else ``None``."""
        path = self._path(split)
        if not path.exists():
            return None
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
        frame["note"] = frame["note"].fillna("")
        return frame.to_dict("records")

    def write(self, split: str, rows: list[dict]) -> None:
        """Write the split's rows (to a temporary file first: a kill leaves no half file)."""
        partial = self._path(split).with_suffix(".partial")
        pd.DataFrame(rows, columns=_columns(rows)).to_csv(partial, index=False)
        partial.replace(self._path(split))


def interventional_nll_report(
    adata: AnnData,
    *,
    perturbation_key: str = "perturbation",
    control: str | None = "control",
    methods: Sequence[str] = DEFAULT_METHODS,
    heldout: str | Sequence[str] | Mapping[str, Sequence[str]] = "clusters",
    seeds: Sequence[int] = (0,),
    max_epochs: int | None = 200,
    n_particles: int = 1000,
    n_latent: int = 15,
    transfer_fraction: float = 0.5,
    sparse_transfer: bool = False,
    n_top_genes: int | None = DEFAULT_N_TOP_GENES,
    layer: str | None = None,
    batch_key: str | None = None,
    combination_delimiter: str | None = None,
    n_boot: int = 200,
    cluster_key: str = "perturbation_cluster",
    cluster_kwargs: dict | None = None,
    random_state: int = 0,
    model_kwargs: dict | None = None,
    train_kwargs: dict | None = None,
    progress_bar: bool = False,
    checkpoint_dir: str | Path | None = None,
    cell_eval: str | None = None,
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
    perturbation_key, control, layer, batch_key, combination_delimiter
        As in :meth:`sparsevae.SparseVAE.setup_anndata`. With ``combination_delimiter``, a
        held-out combination of trained singles is predicted zero-shot and gets the additive
        baseline.
    methods
        Names of :data:`~sparsevae.evaluate.METHODS`: the paper's ``"svae+"``, ``"svae"``,
        ``"ivae"``, ``"beta-vae"``, ``"vae"`` (the default) and ``"ivae-var"``, ``"clap"``,
        ``"beta-tcvae"``, ``"factorvae"``, ``"dip-vae"``.
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
    n_boot
        Bootstrap resamples of each held-out perturbation's evaluation cells for the intervals
        of the effect metrics.
    random_state
        Seed of the clustering, of the transfer/evaluation split of cells and of the bootstrap.
    model_kwargs, train_kwargs
        Extra arguments of :class:`~sparsevae.SparseVAE` and of its ``train``.
    progress_bar
        Show a progress bar over the trained models.
    checkpoint_dir
        Folder where each finished split's rows are written (``<split>.csv``) beside the
        report's settings (``settings.json``). A report run again with the same folder and the
        same settings reads the finished splits instead of training them again, so a report
        killed mid-way continues where it stopped and gives the same table as an uninterrupted
        run (every split's models are seeded on their own). Settings that differ from those in
        the folder raise, naming them.
    cell_eval
        A cell-eval metric profile (``"minimal"``, ``"vcc"``, ``"full"``, ...:
        :data:`CELL_EVAL_PROFILES`) to also score every method and baseline with cell-eval,
        the field's scorer (:func:`score_with_cell_eval`; needs the optional extra,
        ``pip install "sparsevae[eval]"``, checked before any model trains). Per seed, each
        method's predicted cells of the held-out perturbations
        (:meth:`~sparsevae.SparseVAE.predict_perturbations` at its defaults, one cell per
        control cell of the same sample as the predicted changes) are scored against their
        evaluation cells, both beside those control cells; the baselines as cells (split-half:
        the transfer cells; the mean and additive baselines: the control cells moved by their
        change; "no change" is not scored). ``None`` (default): no cell-eval columns.

    Returns
    -------
    Tidy DataFrame, one row per (method, seed, split, held-out perturbation), with the
    columns ``REPORT_COLUMNS``: ``kind`` (``"model"``), ``n_cells`` (evaluation cells),
    ``n_transfer_cells``, ``interventional_nll`` (mean over the evaluation cells, nats per
    cell) and its standard error, the effect metrics with their bootstrap intervals
    (``<metric>``, ``<metric>_low``, ``<metric>_high`` for ``pearson_all_genes``,
    ``pearson_top20_de``, ``mse_top20_de``, ``l2_top1000_expressed``:
    :func:`score_predictions` of the transferred model's predicted change of mean
    log1p(counts per 10,000), :meth:`~sparsevae.SparseVAE.get_treatment_effect` at its
    defaults on training control cells, against the evaluation cells' observed change from
    control; NaN without a control label), and a ``note`` for perturbations too small to
    evaluate (NLL is NaN; never dropped). With a control label, rows of ``kind``
    ``"baseline"`` score the baselines (:func:`baseline_predictions`: no change, the mean
    change of the training perturbations, the split-half ceiling from the transfer cells, and
    for combinations the additive baseline) on the same cells and bootstrap resamples, once
    per seed; their NLL is NaN. With ``cell_eval``, a column ``cell_eval_<metric>`` per
    cell-eval metric of the profile (NaN where not scored).
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

    methods, seeds = check_methods_and_seeds(methods, seeds, max_epochs)
    if n_particles < 1:
        raise ValueError(f"n_particles must be >= 1, got {n_particles}.")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0 (0: no intervals), got {n_boot}.")
    if n_top_genes is not None and not n_top_genes >= 1:
        raise ValueError(
            f"n_top_genes={n_top_genes!r} would select no gene to train on; pass a positive "
            f"number of highly variable genes (default {DEFAULT_N_TOP_GENES}), or None for all."
        )
    validate_counts(adata, layer)
    if cell_eval is not None:
        if control is None:
            raise ValueError(
                "cell_eval needs a control label: cell-eval scores each perturbation against "
                "control cells. Pass control=... or cell_eval=None."
            )
        check_cell_eval_profile(cell_eval, "interventional_nll_report(cell_eval=...)")
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
    settings = {
        "perturbation_key": perturbation_key,
        "control": control,
        "methods": list(methods),
        "seeds": [int(seed) for seed in seeds],
        "max_epochs": max_epochs,
        "n_particles": n_particles,
        "n_latent": n_latent,
        "transfer_fraction": transfer_fraction,
        "sparse_transfer": sparse_transfer,
        "n_top_genes": n_top_genes,
        "layer": layer,
        "batch_key": batch_key,
        "combination_delimiter": combination_delimiter,
        "n_boot": n_boot,
        "random_state": random_state,
        "model_kwargs": model_kwargs or {},
        "train_kwargs": train_kwargs or {},
        "data": [adata.n_obs, adata.n_vars],
        "splits": {split.name: split.to_dict() for split in splits},
    }
    if cell_eval is not None:  # only then, so earlier checkpoint folders stay readable
        settings["cell_eval"] = cell_eval
    checkpoint = _Checkpoint(checkpoint_dir, settings) if checkpoint_dir is not None else None
    rows: list[dict] = []
    total = len(splits) * len(methods) * len(seeds)
    with tqdm(total=total, disable=not progress_bar, unit="model") as progress:
        for split in splits:
            if checkpoint is not None and (done := checkpoint.read(split.name)) is not None:
                rows += done
                progress.update(len(methods) * len(seeds))
                continue
            split_rows = _evaluate_split(
                adata,
                split,
                perturbation_key=perturbation_key,
                control=control,
                layer=layer,
                batch_key=batch_key,
                combination_delimiter=combination_delimiter,
                methods=methods,
                seeds=seeds,
                n_latent=n_latent,
                max_epochs=max_epochs,
                n_particles=n_particles,
                n_top_genes=n_top_genes,
                sparse_transfer=sparse_transfer,
                n_boot=n_boot,
                random_state=random_state,
                model_kwargs=model_kwargs or {},
                train_kwargs=train_kwargs or {},
                cell_eval=cell_eval,
                progress=progress,
            )
            if checkpoint is not None:
                checkpoint.write(split.name, split_rows)
            rows += split_rows
    report = pd.DataFrame(rows, columns=_columns(rows))
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
