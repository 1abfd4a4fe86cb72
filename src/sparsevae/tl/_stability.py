"""Stability selection of the perturbation→latent graph over seeds and sparsity levels.

One training run gives one graph. :func:`edge_stability` trains one model per (seed, alpha),
matches every run's latents to a reference run's (latents are identifiable only up to
permutation and sign), and counts in how many runs each edge appears (Meinshausen &
Bühlmann 2010, applied to a latent graph).
"""

from __future__ import annotations

import inspect
import json
import logging
import multiprocessing
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from sparsevae.metrics import match_latents

from ._results import _check_key_added, _h5ad_safe
from ._stability_runs import _DISPLAY, _finished, _Plan, _Run, _run_in_process, _RunStore

if TYPE_CHECKING:
    from anndata import AnnData

    from sparsevae.model import SparseVAE

logger = logging.getLogger(__name__)

#: Keys of ``adata.uns[key_added]``.
EDGES_KEY = "edges"
RUNS_KEY = "runs"
MATCHING_KEY = "matching"
PARAMS_KEY = "params"
#: Columns of the edge table.
EDGE_COLUMNS = [
    "perturbation",
    "latent",
    "alpha",
    "frequency",
    "median_shift",
    "median_pi",
    "n_runs",
]
#: Frequency from which an edge counts as stable (in plots and summaries).
STABLE_FREQUENCY = 0.8
#: Runs whose matched latents correlate less than this (mean |r|) with the reference warn.
LOW_MATCH_QUALITY = 0.5


# ---- arguments ---------------------------------------------------------------------------
def _check_seeds(seeds) -> list[int]:
    seeds = [seeds] if isinstance(seeds, int | np.integer) else list(seeds)
    if not seeds:
        raise ValueError("seeds is empty; pass at least one training seed, e.g. seeds=(0, 1, 2).")
    if not all(isinstance(s, int | np.integer) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds must be integers, got {seeds!r}.")
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise ValueError(
            f"seeds={seeds!r} repeats a seed; a repeated seed repeats the same run (training is "
            "deterministic for a seed), which would inflate the frequencies."
        )
    return seeds


def _check_alphas(alphas) -> list[float] | None:
    if alphas is None:
        return None
    alphas = [alphas] if isinstance(alphas, int | float | np.number) else list(alphas)
    if not alphas:
        raise ValueError("alphas is empty; pass None (the model's default alpha) or values > 0.")
    try:
        values = [float(a) for a in alphas]
    except (TypeError, ValueError):
        raise ValueError(f"alphas must be numbers, got {alphas!r}.") from None
    bad = [a for a in values if not np.isfinite(a) or a <= 0]
    if bad:
        raise ValueError(f"alphas must be positive and finite, got {bad!r} in alphas={alphas!r}.")
    if len(set(values)) != len(values):
        raise ValueError(f"alphas={alphas!r} repeats a value.")
    return values


def _split_kwargs(kwargs: dict) -> tuple[dict, dict, dict]:
    """``**model_and_train_kwargs`` as (setup_anndata, SparseVAE, train) keyword arguments."""
    from sparsevae.model import SparseVAE

    if "alpha" in kwargs:
        raise ValueError(
            "edge_stability takes the sparsity as alphas=[...] (one run per value and seed), "
            f"not alpha={kwargs['alpha']!r}; pass alphas=[{kwargs['alpha']!r}]."
        )
    own = {"adata", "perturbation_key", "control", "kwargs"}  # edge_stability's own
    setup_names = set(inspect.signature(SparseVAE.setup_anndata).parameters) - own
    model_names = set(inspect.signature(SparseVAE.__init__).parameters) - {"self", "adata"}
    setup = {k: v for k, v in kwargs.items() if k in setup_names}
    model = {k: v for k, v in kwargs.items() if k in model_names}
    train = {k: v for k, v in kwargs.items() if k not in setup_names | model_names}
    return setup, model, train


def _matching_cells(n_obs: int, n_match_cells: int | None, random_state: int) -> np.ndarray:
    """Indices of the cells whose posterior means are correlated across runs."""
    if n_match_cells is None or n_obs <= n_match_cells:
        return np.arange(n_obs)
    rng = np.random.default_rng(random_state)
    return np.sort(rng.choice(n_obs, size=n_match_cells, replace=False))


# ---- matching and counting ---------------------------------------------------------------
def _match_to_reference(
    z_reference: np.ndarray, z_run: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match a run's latents to the reference's, sign-aware.

    Hungarian matching (:func:`sparsevae.metrics.match_latents`) on the absolute Pearson
    correlation of the posterior means of the same cells; the sign of a pair is the sign of its
    correlation.

    Returns
    -------
    ``(order, signs, correlation)``, one entry per reference latent ``i``: the run's latent
    matched to it, +1 or -1, and their (signed) correlation.
    """
    reference_index, run_index, _ = match_latents(z_reference, z_run)
    d = z_reference.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        signed = np.corrcoef(z_reference, z_run, rowvar=False)[:d, d:]
    signed = np.nan_to_num(signed, nan=0.0)  # a constant latent correlates with nothing
    order = np.empty(d, dtype=int)
    order[reference_index] = run_index
    correlation = signed[np.arange(d), order]
    signs = np.where(correlation < 0, -1.0, 1.0)
    return order, signs, correlation


def _align(run: _Run, order: np.ndarray, signs: np.ndarray) -> tuple[np.ndarray, ...]:
    """The run's ``(targets, pi, shifts)`` with columns in the reference's latent order.

    Column ``i`` is the run's latent ``order[i]``; its shifts are multiplied by ``signs[i]``.
    """
    return run.targets[:, order], run.pi[:, order], run.shifts[:, order] * signs


def _edge_table(
    aligned: dict[float, list[tuple[np.ndarray, ...]]],
    perturbations: list[str],
    latents: list[str],
) -> pd.DataFrame:
    """Tidy table, one row per (alpha, perturbation, latent), from the aligned runs."""
    frames = []
    for alpha, runs in aligned.items():
        targets = np.stack([r[0] for r in runs]).astype(float)
        pi = np.stack([r[1] for r in runs])
        shifts = np.stack([r[2] for r in runs])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # edges no run has: NaN
            median_shift = np.nanmedian(shifts, axis=0)
        n_perturbations, n_latent = targets.shape[1:]
        frames.append(
            pd.DataFrame(
                {
                    "perturbation": np.repeat(perturbations, n_latent).astype(object),
                    "latent": np.tile(latents, n_perturbations).astype(object),
                    "alpha": float(alpha),
                    "frequency": targets.mean(axis=0).ravel(),
                    "median_shift": median_shift.ravel(),
                    "median_pi": np.median(pi, axis=0).ravel(),
                    "n_runs": np.int64(len(runs)),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)[EDGE_COLUMNS]


def edge_stability(
    adata: AnnData,
    perturbation_key: str,
    control: str | None = None,
    *,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    alphas: Sequence[float] | None = None,
    key_added: str = "edge_stability",
    threshold: float = 0.5,
    n_match_cells: int | None = 5000,
    random_state: int = 0,
    n_jobs: int = 1,
    checkpoint_dir: str | Path | None = None,
    progress_bar: bool = False,
    **model_and_train_kwargs,
) -> SparseVAE:
    """Train one model per (seed, alpha) and count how often each edge of the graph appears.

    Stability selection (Meinshausen & Bühlmann 2010) of the perturbation→latent graph. Every
    run's latents are matched one-to-one to the reference run's (the first seed at the first
    alpha): Hungarian matching (:func:`sparsevae.metrics.match_latents`) on the absolute
    Pearson correlation of the posterior means of the same cells, the sign of each pair being
    the sign of its correlation. A run's edge ``(p, j)`` then counts for the reference latent
    matched to ``j``, and its shift is multiplied by that sign.

    Cost: ``len(seeds) × len(alphas)`` trainings, each as long as one ``model.train`` with the
    same arguments, plus one latent pass over at most ``n_match_cells`` cells per run. With
    ``n_jobs > 1`` the runs train in that many processes at a time (one torch thread each).

    Writes ``adata.uns[key_added]``, a dict that survives ``adata.write_h5ad`` /
    ``anndata.read_h5ad``:

    - ``"edges"``: DataFrame, one row per (alpha, perturbation, latent), with the columns
      ``perturbation``, ``latent`` (the reference run's names, :attr:`SparseVAE.latent_names`
      of the returned model), ``alpha``, ``frequency`` (fraction of the runs at this alpha
      with the edge, ``pi > threshold``), ``median_shift`` (median over those runs of the
      edge's shift, sign-aligned to the reference; NaN if no run has the edge),
      ``median_pi`` (median over all runs at this alpha) and ``n_runs``;
    - ``"runs"``: DataFrame, one row per run: ``seed``, ``alpha``, ``reference``,
      ``mean_abs_corr`` and ``min_abs_corr`` (matching quality: absolute correlation of the
      matched latent pairs), ``n_edges``, ``n_perturbations_with_target``, ``train_seconds``;
    - ``"matching"``: DataFrame, one row per run and latent: ``seed``, ``alpha``,
      ``latent`` (the run's own), ``reference_latent``, ``correlation`` (signed), ``sign``;
    - ``"params"``: the arguments (``seeds`` and ``alphas`` as arrays, the others as
      h5ad-safe values).

    Parameters
    ----------
    adata
        Cells with raw counts; registered here with
        :meth:`SparseVAE.setup_anndata <sparsevae.SparseVAE.setup_anndata>`.
    perturbation_key
        Column of ``adata.obs`` with each cell's perturbation label.
    control
        Label of the control cells, or ``None``.
    seeds
        Training seeds (``scvi.settings.seed``), distinct; a single seed warns (each
        frequency is then 0 or 1).
    alphas
        Sparsity levels (``SparseVAE(alpha=...)``), distinct and positive. ``None``: the
        model's default, one alpha = the number of perturbations (stored as that number).
    key_added
        Key of ``adata.uns`` to write. An earlier result of ``edge_stability`` there is
        replaced; other data are too, with a warning.
    threshold
        An edge of a run is ``pi > threshold`` (the model's readout).
    n_match_cells
        Cells whose posterior means are correlated across runs: all cells if there are at
        most this many (``None``: always all), else a subsample drawn with ``random_state``.
    random_state
        Seed of that subsample.
    n_jobs
        Processes training at the same time. The reference run trains in this process;
        the others in ``n_jobs - 1`` worker processes (started with ``spawn``: in a script,
        call this under ``if __name__ == "__main__":``). Each worker gets a copy of
        ``adata`` (of a backed ``adata``, its file name: each worker opens the file, and
        the counts stay on disk). Results do not depend on ``n_jobs`` when this process also
        runs with one torch thread.
    checkpoint_dir
        Folder where each finished run is written (``run_alpha<alpha>_seed<seed>.npz``, and
        the reference run's model in ``reference_model/``) beside the call's settings
        (``settings.json``). A call run again with the same folder and settings reads the
        finished runs instead of training them again, so a call killed mid-way continues
        where it stopped and gives the same table (every run is seeded on its own). Settings
        that differ from those in the folder raise
        :class:`~sparsevae.CheckpointMismatchError`, naming them.
    progress_bar
        Show a progress bar over the runs (finished runs and an estimate of the time left).
    **model_and_train_kwargs
        Arguments of :meth:`~sparsevae.SparseVAE.setup_anndata` (``layer``, ``batch_key``,
        ``combination_delimiter``), of :class:`~sparsevae.SparseVAE` (``n_latent``,
        ``prior``: ``"spike_slab"`` or ``"l1"``, ...; not ``alpha``) and of
        :meth:`~sparsevae.SparseVAE.train` (``max_epochs``, ...; quiet trainer by default).

    Returns
    -------
    The reference run's trained :class:`~sparsevae.SparseVAE`, whose getters name the latents
    as the table does.

    Raises
    ------
    ValueError
        Before any training: empty or repeated ``seeds``, empty, repeated or non-positive
        ``alphas``, a mask-free ``prior``, ``alpha=`` instead of ``alphas=``, a bad
        ``threshold``, ``n_match_cells`` or ``n_jobs``; and every check of ``setup_anndata``.
    KeyError
        Before any training: ``perturbation_key`` (or ``layer``, ``batch_key``) not in
        ``adata``.

    Warns
    -----
    UserWarning
        For a run whose matched latents correlate poorly with the reference's (mean
        ``|r|`` below 0.5): its edges may count for the wrong latents. For a single seed, and
        before overwriting data at ``uns[key_added]`` that ``edge_stability`` did not write.

    Examples
    --------
    >>> ref = sv.tl.edge_stability(adata, "perturbation", "control", alphas=[33, 10, 5])
    >>> edges = adata.uns["edge_stability"]["edges"]
    >>> edges[(edges.alpha == 5) & (edges.frequency >= 0.8)]  # stable edges at alpha = 5
    >>> sv.pl.edge_stability(adata)
    """
    seeds = _check_seeds(seeds)
    alphas = _check_alphas(alphas)
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be in [0, 1), got {threshold!r}.")
    if n_match_cells is not None and n_match_cells < 2:
        raise ValueError(f"n_match_cells must be at least 2 (or None), got {n_match_cells!r}.")
    if not isinstance(n_jobs, int | np.integer) or n_jobs < 1:
        raise ValueError(f"n_jobs must be a positive integer, got {n_jobs!r}.")
    _check_key_added(
        adata, key_added, (EDGES_KEY, RUNS_KEY, MATCHING_KEY, PARAMS_KEY), "edge_stability"
    )
    if len(seeds) == 1:
        warnings.warn(
            f"edge_stability with one seed ({seeds[0]}) trains one model per alpha, so every "
            "edge's frequency is 0 or 1: it measures no stability. Pass several seeds, e.g. "
            "seeds=(0, 1, 2, 3, 4).",
            UserWarning,
            stacklevel=2,
        )
    plan = _Plan(
        adata, perturbation_key, control, *_split_kwargs(model_and_train_kwargs),
        cells=_matching_cells(adata.n_obs, n_match_cells, random_state), threshold=threshold,
    )  # fmt: skip
    plan.register()
    reference = plan.build(seeds[0], None if alphas is None else alphas[0])  # checks kwargs
    sparsity = reference.module.prior.hyperparameters().get("alpha")
    if sparsity is None:  # the prior has no sparse graph to count edges of
        raise ValueError(
            "edge_stability counts edges of a sparse graph (pi > threshold), which needs a "
            "prior with masks: prior='spike_slab' (sVAE+) or 'l1' (sVAE), got "
            f"prior={reference.prior_name!r}."
        )
    alphas = [float(sparsity)] if alphas is None else alphas
    logger.info("edge_stability: %d seeds × %d alphas.", len(seeds), len(alphas))
    keys = [(alpha, seed) for alpha in alphas for seed in seeds]  # the reference first
    store = None
    if checkpoint_dir is not None:
        settings = {
            "perturbation_key": perturbation_key, "control": control, "seeds": seeds,
            "alphas": alphas, "threshold": threshold, "n_match_cells": n_match_cells,
            "random_state": random_state, "setup_kwargs": plan.setup_kwargs,
            "model_kwargs": plan.model_kwargs,
            "train_kwargs": {k: v for k, v in plan.train_kwargs.items() if k not in _DISPLAY},
            "data": [adata.n_obs, adata.n_vars],
        }  # fmt: skip
        store = _RunStore(checkpoint_dir, settings)
    results = {key: run for key in keys if store is not None and (run := store.read(*key))}
    if keys[0] in results and store.reference_model.exists():
        from sparsevae.model import SparseVAE

        reference = SparseVAE.load(store.reference_model, adata=adata)
    else:
        results.pop(keys[0], None)  # its model is needed too: trained again
    todo = [key for key in keys[1:] if key not in results]
    workers = min(n_jobs - 1, len(todo))
    spawn = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=spawn) if workers > 0 else None
    progress = tqdm(total=len(keys), initial=len(results), disable=not progress_bar, unit="run")
    try:
        futures = {}  # workers start on the other runs while the reference trains here
        for key in todo if pool is not None else []:
            futures[key] = pool.submit(_run_in_process, plan, key[1], key[0])
            futures[key].add_done_callback(lambda f, key=key: _finished(f, key, store, progress))
        if keys[0] not in results:
            results[keys[0]] = plan.summarise(reference, plan.train(reference))
            if store is not None:
                reference.save(store.reference_model, overwrite=True)
                store.write(*keys[0], results[keys[0]])
            progress.update(1)
        for alpha, seed in todo:
            if pool is not None:
                results[alpha, seed] = futures[alpha, seed].result()
            else:
                results[alpha, seed] = plan.run(seed, alpha)
                _finished(None, (alpha, seed), store, progress, results[alpha, seed])
    finally:
        progress.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    params = {
        "perturbation_key": perturbation_key,
        "control": _h5ad_safe(control),
        "threshold": float(threshold),
        "n_match_cells": len(plan.cells),
        "random_state": int(random_state),
        "n_jobs": int(n_jobs),
        "prior": reference.prior_name,
        **{
            f"{k}_kwargs": _h5ad_safe(getattr(plan, f"{k}_kwargs"))
            for k in ("setup", "model", "train")
        },
    }
    adata.uns[key_added] = _tables(results, reference, seeds, alphas, key_added, params)
    return reference


def _tables(
    results: dict[tuple[float, int], _Run],
    reference: SparseVAE,
    seeds: list[int],
    alphas: list[float],
    key_added: str,
    params: dict,
) -> dict:
    """Match every run to the reference, count edges, and assemble ``uns[key_added]``."""
    latents = reference.latent_names
    reference_run = results[(alphas[0], seeds[0])]
    aligned: dict[float, list] = {alpha: [] for alpha in alphas}
    run_rows, matching_rows = [], []
    for (alpha, seed), run in results.items():
        order, signs, correlation = _match_to_reference(reference_run.z, run.z)
        aligned[alpha].append(_align(run, order, signs))
        quality = np.abs(correlation)
        is_reference = (alpha, seed) == (alphas[0], seeds[0])
        if not is_reference and quality.mean() < LOW_MATCH_QUALITY:
            warnings.warn(
                f"Run seed={seed}, alpha={alpha:g} matches the reference run (seed {seeds[0]}, "
                f"alpha {alphas[0]:g}) poorly: mean |corr| {quality.mean():.2f} (min "
                f"{quality.min():.2f}) between matched latents over {len(run.z)} cells. Its "
                "edges may count for the wrong reference latents; train longer, or read "
                f"adata.uns[{key_added!r}]['runs'] before trusting the frequencies.",
                UserWarning,
                stacklevel=3,
            )
        run_rows.append(
            {
                "seed": int(seed),
                "alpha": float(alpha),
                "reference": bool(is_reference),
                "mean_abs_corr": float(quality.mean()),
                "min_abs_corr": float(quality.min()),
                "n_edges": int(run.targets.sum()),
                "n_perturbations_with_target": int(run.targets.any(axis=1).sum()),
                "train_seconds": float(run.seconds),
            }
        )
        matching_rows.extend(
            {
                "seed": int(seed),
                "alpha": float(alpha),
                "latent": latents[order[i]],
                "reference_latent": latents[i],
                "correlation": float(correlation[i]),
                "sign": int(signs[i]),
            }
            for i in range(len(latents))
        )
    edges = _edge_table(aligned, reference.perturbation_names, latents)
    return {
        EDGES_KEY: edges,
        RUNS_KEY: pd.DataFrame(run_rows),
        MATCHING_KEY: pd.DataFrame(matching_rows),
        PARAMS_KEY: {
            **params,
            "reference_seed": int(seeds[0]),
            "reference_alpha": float(alphas[0]),
            "seeds": np.asarray(seeds, dtype=np.int64),
            "alphas": np.asarray(alphas, dtype=np.float64),
            "latent_names": json.dumps(latents),
        },
    }
