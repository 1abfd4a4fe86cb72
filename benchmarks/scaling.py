"""Scaling: time per epoch, peak memory and the one-off steps of sVAE+ against K and p.

Issue 31, item 2: cost must not grow with what it should not. At a fixed data size (20,000
cells × 500 genes, sparse CSR counts) this measures sVAE+ at its defaults but the depth
(``SparseVAE(adata, n_latent=p, n_layers=2)``: two hidden layers at every K,
``model.train(max_epochs=EPOCHS)``: batch 256, 90% of the cells for training, KL warm-up
capped at ``max_epochs``, rotation and mask freezing where the defaults put them)
on **one CPU thread**, against

- the number of perturbations, ``--part K``: K = 200, 2,000, 10,000 at p = 15 latents;
- the number of latents, ``--part p``: p = 15, 50, 100, 200 at K = 200;

and, ``--part steps``, the steps besides training at each of these sizes: the rotation's data
pass (``latent_shift_sums``) and optimisation (``sparse_rotation`` on the K × p mean shifts,
its defaults: 8 starts × 500 Adam steps of p × p matrix exponentials), ``freeze_masks`` (with
the relative floor), ``get_mask_probabilities``, ``get_intervention_targets``,
``get_target_table``, ``get_interventional_nll`` (1,000 cells, 100 particles), what
:func:`sparsevae.tl.edge_stability` does per run besides training (its ``summarise`` of a run,
then the matching and the edge table over 5 runs) and :func:`sparsevae.metrics.match_latents` /
``mean_correlation_coefficient`` between two p-dimensional latents of 5,000 cells.

``--part rotation`` checks how reproducible the rotation is: :func:`sparse_rotation` run twice
on the same shifts (bitwise the same), and on shifts changed by 1e-15 relative (round-off); it
also times the other backward pass of the matrix exponential (exact to round-off, through an
eigendecomposition; the package's from ``EIGH_BACKWARD_FROM`` = 50 latents on, torch's below) and
reports how far its rotation moves. Measured with each backward forced at every p.

How time per epoch is measured: a callback times every training epoch (Lightning's
``on_train_epoch_start`` to ``on_train_epoch_end``). With ``EPOCHS = 8`` the defaults rotate the
latent space at the start of epoch 4 (the end of the KL warm-up, capped at half-way) and freeze
the masks from epoch 6 (80%). "s/epoch" is the median over epochs 1, 2, 3 and 5 (masks sampled,
the exact KL over masks: 80% of a default run); the first epoch (start-up), the rotation epoch
and the frozen epochs are given in their own columns. Every training run is a fresh process
(spawned), so that its peak resident memory (``VmHWM``: data, model and training together) is
its own; sizes are interleaved over ``--repeats`` rounds and the table gives the median run
(p = 200 trains in one round only: its rotation epoch alone takes about four minutes).

Data: counts drawn directly with numpy (a cheap stand-in of ``simulate_sparse_shift`` of the
same size): 2,000 control cells and 18,000 perturbed cells spread evenly over K labels (1.8 cells
per perturbation at K = 10,000), each perturbation shifting one of 15 true latents by ±2 SD, a
random linear map to gene logits, Poisson counts at ~1,000 UMIs per cell. The content of the data
does not matter for timing; its size does, and it is the same for every K and p.

Runnable in parts: each measurement is saved to ``results/scaling_parts/`` as JSON when it ends
and skipped when already there; ``--merge-only`` builds ``results/scaling.md`` (+ ``.csv``).
``results/scaling_parts/before_gather/`` holds the K sweep's training parts measured before
``MaskedPrior`` gathered the minibatch's rows of the mask logits before clamping them (commit
48da2fe); the merge reports them beside the current ones.

Usage::

    python benchmarks/scaling.py --part K
    python benchmarks/scaling.py --part p
    python benchmarks/scaling.py --part steps
    python benchmarks/scaling.py --part rotation
    python benchmarks/scaling.py --merge-only
    python benchmarks/scaling.py --quick          # tiny sizes, nothing saved: the script runs

CPU only: no GPU was measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from _memory import peak_rss_gib

RESULTS = Path(__file__).parent / "results"
PARTS = RESULTS / "scaling_parts"
OUT = RESULTS / "scaling.md"
#: The K sweep's training parts measured before the fix of per-cell mask logits (see merge).
BEFORE = PARTS / "before_gather"

N_CELLS, N_GENES, N_CONTROL, N_TRUE_LATENT = 20_000, 500, 2_000, 15
EPOCHS = 8
K_SIZES, K_LATENT = (200, 2_000, 10_000), 15
P_SIZES, P_PERTURBATIONS = (15, 50, 100, 200), 200
NLL_CELLS, NLL_PARTICLES = 1_000, 100
MATCH_CELLS, STABILITY_RUNS = 5_000, 5
TIMING_STEPS = 30
#: Training runs at these p: one round only (the rotation epoch alone takes minutes).
ONE_ROUND_P = (200,)

QUICK = {"n_cells": 600, "n_genes": 50, "n_control": 100, "epochs": 4}


# ---- data ---------------------------------------------------------------------------------
def make_adata(n_perturbations: int, n_cells=N_CELLS, n_genes=N_GENES, n_control=N_CONTROL):
    """Counts of a fixed size with ``n_perturbations`` labels (see the module docstring)."""
    import anndata as ad
    import pandas as pd
    from scipy import sparse

    rng = np.random.default_rng(0)
    codes = np.full(n_cells, -1)
    codes[n_control:] = np.arange(n_cells - n_control) % n_perturbations
    rng.shuffle(codes)
    shift = np.zeros((n_perturbations, N_TRUE_LATENT))
    shift[np.arange(n_perturbations), rng.integers(N_TRUE_LATENT, size=n_perturbations)] = (
        rng.choice([-2.0, 2.0], size=n_perturbations)
    )
    z = rng.normal(size=(n_cells, N_TRUE_LATENT))
    z[codes >= 0] += shift[codes[codes >= 0]]
    logits = z @ (rng.normal(size=(N_TRUE_LATENT, n_genes)) / np.sqrt(N_TRUE_LATENT))
    logits += rng.normal(size=n_genes)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    library = np.exp(rng.normal(np.log(1_000.0), 0.5, size=n_cells))
    counts = rng.poisson(probabilities * library[:, None]).astype(np.float32)
    width = len(str(n_perturbations))
    names = np.array(["control"] + [f"P{i:0{width}d}" for i in range(n_perturbations)])
    labels = pd.Categorical(names[codes + 1], categories=names)
    obs = pd.DataFrame({"perturbation": labels}, index=[f"cell{i}" for i in range(n_cells)])
    return ad.AnnData(sparse.csr_matrix(counts), obs=obs)


def _sizes(quick: bool) -> dict:
    if quick:
        return {k: v for k, v in QUICK.items() if k != "epochs"}
    return {}


# ---- one fresh process ----------------------------------------------------------------------
def _start(quiet_warnings: bool = True):
    import warnings

    import torch

    from sparsevae._quiet import silence_lightning

    torch.set_num_threads(1)
    silence_lightning()
    if quiet_warnings:
        warnings.filterwarnings("ignore")


def _model(n_perturbations: int, n_latent: int, quick: bool):
    import scvi

    import sparsevae as sv

    start = time.perf_counter()
    adata = make_adata(n_perturbations, **_sizes(quick))
    data_seconds = time.perf_counter() - start
    scvi.settings.seed = 0
    start = time.perf_counter()
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    # Two layers at every K, as SCVI and every recorded run: ``n_layers="auto"`` would take
    # one from K = 2,000 (10 cells per perturbation), which is not what K should change.
    model = sv.SparseVAE(adata, n_latent=n_latent, n_layers=2)
    return adata, model, data_seconds, time.perf_counter() - start


def _scvi_model(n_perturbations: int, n_latent: int, quick: bool):
    """SCVI on the same counts, with sVAE+'s default networks (2 layers of 128, no dropout,
    batch normalisation in both) and likelihood (negative binomial, one dispersion per gene,
    observed library size). The perturbation labels are there but SCVI does not read them.
    """
    import scvi

    start = time.perf_counter()
    adata = make_adata(n_perturbations, **_sizes(quick))
    data_seconds = time.perf_counter() - start
    scvi.settings.seed = 0
    start = time.perf_counter()
    scvi.model.SCVI.setup_anndata(adata)
    model = scvi.model.SCVI(
        adata,
        n_latent=n_latent,
        n_hidden=128,
        n_layers=2,
        dropout_rate=0.0,
        gene_likelihood="nb",
        dispersion="gene",
    )
    return adata, model, data_seconds, time.perf_counter() - start


def run_training(
    n_perturbations: int, n_latent: int, epochs: int, quick: bool, model_name: str = "SparseVAE"
) -> dict:
    """Train sVAE+ at its defaults (or SCVI beside it) for ``epochs`` epochs, timing every
    epoch.
    """
    _start()
    import torch
    from lightning.pytorch.callbacks import Callback

    from sparsevae._quiet import QUIET_TRAINER

    build = _model if model_name == "SparseVAE" else _scvi_model
    adata, model, data_seconds, setup_seconds = build(n_perturbations, n_latent, quick)

    class EpochTimer(Callback):
        def __init__(self):
            self.seconds: dict[int, float] = {}
            self.rotation_epoch = self.freeze_epoch = None

        def on_train_epoch_start(self, trainer, pl_module):
            if hasattr(pl_module, "rotate_latents_at"):  # SCVI: neither rotates nor freezes
                self.rotation_epoch = pl_module.rotate_latents_at
                self.freeze_epoch = pl_module._freeze_epoch(trainer.max_epochs)
            else:
                self.freeze_epoch = trainer.max_epochs
            self._start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            self.seconds[trainer.current_epoch] = time.perf_counter() - self._start

    timer = EpochTimer()
    start = time.perf_counter()
    # sVAE+'s default batch size for both (SCVI's own default is 128: slower per epoch, not a
    # property of the model).
    model.train(max_epochs=epochs, batch_size=256, callbacks=[timer], **QUIET_TRAINER)
    total = time.perf_counter() - start
    seconds = timer.seconds
    sampled = [
        s
        for epoch, s in seconds.items()
        if 0 < epoch < timer.freeze_epoch and epoch != timer.rotation_epoch
    ]
    frozen = [s for epoch, s in seconds.items() if epoch >= timer.freeze_epoch]
    prior = getattr(model.module, "prior", None)
    n_prior = sum(p.numel() for p in prior.parameters()) if prior is not None else 0
    return {
        "model": model_name,
        "K": n_perturbations,
        "p": n_latent,
        "cells": adata.n_obs,
        "genes": adata.n_vars,
        "threads": torch.get_num_threads(),
        "epochs": epochs,
        "s_per_epoch": float(np.median(sampled)),
        "first_epoch_s": seconds[0],
        "rotation_epoch_s": seconds.get(timer.rotation_epoch, float("nan")),
        "frozen_epoch_s": float(np.median(frozen)) if frozen else float("nan"),
        "epoch_seconds": [seconds[e] for e in sorted(seconds)],
        "rotation_epoch": timer.rotation_epoch,
        "freeze_epoch": timer.freeze_epoch,
        "train_total_s": total,
        "data_s": data_seconds,
        "setup_s": setup_seconds,
        "prior_parameters": n_prior,
        "network_parameters": sum(p.numel() for p in model.module.parameters()) - n_prior,
        "peak_rss_gib": peak_rss_gib(),
    }


def _timed(function, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return time.perf_counter() - start, value


def run_steps(n_perturbations: int, n_latent: int, quick: bool) -> dict:
    """The steps besides training, on a model trained for one epoch (no rotation)."""
    _start()
    import torch

    import sparsevae as sv
    from sparsevae._quiet import QUIET_TRAINER
    from sparsevae.module._rotation import latent_shift_sums, mean_shifts, sparse_rotation
    from sparsevae.tl import _stability

    adata, model, _, _ = _model(n_perturbations, n_latent, quick)
    model.train(max_epochs=1, **QUIET_TRAINER)
    module = model.module
    row = {"K": n_perturbations, "p": n_latent, "threads": torch.get_num_threads()}

    # the rotation: a data pass over the training cells, then the optimisation
    loader = model._make_data_loader(adata=adata, batch_size=256)
    module.eval()
    row["rotation_data_pass_s"], (sums, counts) = _timed(latent_shift_sums, module, loader)
    shifts, rows = mean_shifts(sums, counts)
    row["rotation_rows"] = int(rows.sum())
    row["sparse_rotation_s"], _ = _timed(sparse_rotation, shifts[rows])

    prior = module.prior
    row["freeze_masks_s"], _ = _timed(prior.freeze_masks)
    prior.masks_frozen = False
    row["get_mask_probabilities_s"], _ = _timed(model.get_mask_probabilities)
    row["get_intervention_targets_s"], _ = _timed(model.get_intervention_targets)
    row["get_target_table_s"], table = _timed(model.get_target_table)
    row["target_table_rows"] = len(table)
    cells = np.arange(min(NLL_CELLS, adata.n_obs))
    row["interventional_nll_s"], _ = _timed(
        model.get_interventional_nll, indices=cells, n_particles=NLL_PARTICLES
    )

    # edge stability besides training: one run's summary, then matching and the edge table
    match_cells = _stability._matching_cells(adata.n_obs, MATCH_CELLS, 0)
    plan = _stability._Plan(adata, "perturbation", "control", {}, {}, {}, match_cells, 0.5)
    row["stability_summarise_s"], run = _timed(plan.summarise, model, 0.0)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    aligned = []
    for _ in range(STABILITY_RUNS):
        order = rng.permutation(n_latent)
        permuted = _stability._Run(
            run.z[:, order], run.pi[:, order], run.targets[:, order], run.shifts[:, order], 0.0
        )
        aligned.append(
            _stability._align(permuted, *_stability._match_to_reference(run.z, permuted.z)[:2])
        )
    row["stability_matching_s"] = time.perf_counter() - start
    row["stability_edge_table_s"], edges = _timed(
        _stability._edge_table, {1.0: aligned}, model.perturbation_names, model.latent_names
    )
    row["stability_edge_rows"] = len(edges)

    # matching between two p-dimensional latents of MATCH_CELLS cells
    z = run.z
    noisy = z[:, rng.permutation(n_latent)] + 0.1 * rng.normal(size=z.shape)
    row["match_latents_s"], _ = _timed(sv.metrics.match_latents, z, noisy)
    row["mean_correlation_coefficient_s"], _ = _timed(
        sv.metrics.mean_correlation_coefficient, z, noisy
    )
    row["peak_rss_gib"] = peak_rss_gib()
    return row


# ---- the rotation's reproducibility and a candidate backward pass -----------------------
@contextlib.contextmanager
def _backward(kind: str):
    """Run ``sparse_rotation`` with torch's backward of the matrix exponential (``"torch"``)
    or the eigendecomposition's (``"eigh"``, ``sparsevae.module._rotation._SkewExp``) at every
    p, whatever the package's threshold (``EIGH_BACKWARD_FROM``).
    """
    from sparsevae.module import _rotation

    saved = _rotation.EIGH_BACKWARD_FROM
    _rotation.EIGH_BACKWARD_FROM = 10**9 if kind == "torch" else 0
    try:
        yield
    finally:
        _rotation.EIGH_BACKWARD_FROM = saved


def _rotation_shifts(n_perturbations: int, n_latent: int, seed: int) -> np.ndarray:
    """Sparse shifts (one ±3 target each, noise 0.3) seen through a hidden rotation."""
    rng = np.random.default_rng(seed)
    hidden = np.linalg.qr(rng.normal(size=(n_latent, n_latent)))[0]
    sparse = np.zeros((n_perturbations, n_latent))
    sparse[np.arange(n_perturbations), rng.integers(n_latent, size=n_perturbations)] = rng.choice(
        [-3.0, 3.0], size=n_perturbations
    )
    return (sparse + 0.3 * rng.normal(size=sparse.shape)) @ hidden


def run_rotation_check(n_perturbations: int, n_latent: int, seed: int, quick: bool) -> dict:
    """The rotation twice, on round-off-perturbed shifts, and with the candidate backward."""
    _start()
    import torch

    from sparsevae.module import _rotation

    steps = 20 if quick else 500
    shifts = _rotation_shifts(n_perturbations, n_latent, seed)
    rng = np.random.default_rng(seed + 1000)
    nudged = shifts * (1.0 + 1e-15 * rng.normal(size=shifts.shape))

    def l1(rotation: torch.Tensor) -> float:
        return float(np.abs(shifts @ rotation.numpy()).sum())

    row = {"K": n_perturbations, "p": n_latent, "seed": seed, "n_steps": steps}
    with _backward("torch"):
        row["torch_s"], first = _timed(
            _rotation.sparse_rotation, torch.as_tensor(shifts), n_steps=steps
        )
        _, again = _timed(_rotation.sparse_rotation, torch.as_tensor(shifts), n_steps=steps)
        _, moved = _timed(_rotation.sparse_rotation, torch.as_tensor(nudged), n_steps=steps)
    with _backward("eigh"):
        row["eigh_backward_s"], other = _timed(
            _rotation.sparse_rotation, torch.as_tensor(shifts), n_steps=steps
        )
    row["repeat_max_abs_diff"] = float((first - again).abs().max())
    row["roundoff_input_max_abs_diff"] = float((first - moved).abs().max())
    row["eigh_backward_max_abs_diff"] = float((first - other).abs().max())
    row["l1_torch"], row["l1_roundoff_input"], row["l1_eigh_backward"] = (
        l1(first),
        l1(moved),
        l1(other),
    )
    row["l1_identity"] = float(np.abs(shifts).sum())
    return row


def run_rotation_timing(n_perturbations: int, n_latent: int, quick: bool) -> dict:
    """Seconds per step of ``sparse_rotation``, with torch's backward and the candidate's.

    ``TIMING_STEPS`` steps of each (the whole 500 with torch's backward would take minutes
    here; ``--part steps`` times it at p = 200).
    """
    _start()
    import torch

    from sparsevae.module import _rotation

    steps = 2 if quick else TIMING_STEPS
    shifts = torch.as_tensor(_rotation_shifts(n_perturbations, n_latent, 0))
    row = {"K": n_perturbations, "p": n_latent, "seed": 0, "n_steps": steps}
    with _backward("torch"):
        row["torch_s_per_step"] = (
            _timed(_rotation.sparse_rotation, shifts, n_steps=steps)[0] / steps
        )
    with _backward("eigh"):
        seconds = _timed(_rotation.sparse_rotation, shifts, n_steps=steps)[0]
    row["eigh_backward_s_per_step"] = seconds / steps
    return row


# ---- planning, parts, merge ---------------------------------------------------------------
def _jobs(part: str, repeats: int) -> list[tuple[str, tuple]]:
    """(part file name, (function name, arguments)) of one part, rounds interleaved."""
    if part == "K":
        sizes = [(k, K_LATENT) for k in K_SIZES]
    elif part == "p":
        sizes = [(P_PERTURBATIONS, p) for p in P_SIZES]
    elif part == "steps":
        sizes = list(
            dict.fromkeys(
                [(k, K_LATENT) for k in K_SIZES] + [(P_PERTURBATIONS, p) for p in P_SIZES]
            )
        )
        return [(f"steps_K{k}_p{p}", ("run_steps", (k, p))) for k, p in sizes]
    elif part == "rotation":
        checks = [(200, 15, 0), (200, 15, 1), (200, 15, 2), (10_000, 15, 0), (200, 50, 0)]
        checks += [(200, 50, 1), (200, 100, 0)]
        jobs = [
            (f"rotation_K{k}_p{p}_s{s}", ("run_rotation_check", (k, p, s))) for k, p, s in checks
        ]
        return [*jobs, ("rotation_timing_K200_p200", ("run_rotation_timing", (200, 200)))]
    else:
        raise ValueError(part)
    jobs = []
    for round_ in range(repeats):
        for k, p in sizes:
            if round_ > 0 and p in ONE_ROUND_P:
                continue
            jobs.append((f"train_K{k}_p{p}_r{round_}", ("run_training", (k, p))))
            jobs.append((f"scvi_K{k}_p{p}_r{round_}", ("run_training", (k, p, "SCVI"))))
    return jobs


def _run_isolated(name: str, args: tuple) -> dict:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(globals()[name], *args).result()


def run_part(part: str, repeats: int, quick: bool) -> list[dict]:
    rows = []
    for file_name, (function, arguments) in _jobs(part, repeats):
        path = PARTS / f"{file_name}.json"
        if path.exists() and not quick:
            print(f"{file_name}: already measured", flush=True)
            continue
        if function == "run_training":  # (K, p, [model]) -> (K, p, epochs, quick, [model])
            epochs = EPOCHS if not quick else QUICK["epochs"]
            call = (*arguments[:2], epochs, quick, *arguments[2:])
        else:
            call = (*arguments, quick)
        start = time.perf_counter()
        row = _run_isolated(function, call)
        row["part"] = file_name
        print(f"{file_name}: {time.perf_counter() - start:.0f} s  {_short(row)}", flush=True)
        rows.append(row)
        if not quick:
            PARTS.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(row, indent=1))
    return rows


def _short(row: dict) -> str:
    keys = ("s_per_epoch", "rotation_epoch_s", "peak_rss_gib", "sparse_rotation_s", "torch_s")
    return ", ".join(f"{k}={row[k]:.3g}" for k in keys if k in row)


def _load(prefix: str, folder: Path = PARTS) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob(f"{prefix}_*.json"))]


def training_table(rows: list[dict]):
    """One row per (K, p): the median run by time per epoch, with the others' range."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    out = []
    for (k, p), group in frame.groupby(["K", "p"], sort=True):
        ordered = group.sort_values("s_per_epoch")
        row = ordered.iloc[(len(ordered) - 1) // 2]
        out.append(
            {
                "K": k,
                "p": p,
                "runs": len(ordered),
                "s_per_epoch": row["s_per_epoch"],
                "s_per_epoch_min": ordered["s_per_epoch"].min(),
                "s_per_epoch_max": ordered["s_per_epoch"].max(),
                "first_epoch_s": row["first_epoch_s"],
                "rotation_epoch_s": row["rotation_epoch_s"],
                "frozen_epoch_s": row["frozen_epoch_s"],
                "peak_rss_gib": ordered["peak_rss_gib"].median(),
                "setup_s": row["setup_s"],
                "prior_parameters": row["prior_parameters"],
                "network_parameters": row["network_parameters"],
            }
        )
    return pd.DataFrame(out)


def _ratio(table, column: str, numerator: tuple[int, int], denominator: tuple[int, int]):
    pick = table.set_index(["K", "p"])
    if numerator in pick.index and denominator in pick.index:
        return pick.loc[numerator, column] / pick.loc[denominator, column]
    return float("nan")


#: A default run on this data: scvi-tools' rule gives 400 epochs at 20,000 cells, and sVAE+
#: freezes its masks at 80% of them.
DEFAULT_RUN_EPOCHS, DEFAULT_FREEZE_EPOCH = 400, 320


def beside_scvi(training, scvi_table) -> list[str]:
    """sVAE+ against SCVI at every size: per training epoch, and over a whole default run (the
    one-off rotation epoch and the cheaper frozen epochs counted; first epochs left out on both
    sides).
    """
    import pandas as pd

    both = training.merge(scvi_table, on=["K", "p"], suffixes=("", "_scvi"))
    paired = paired_ratios()
    whole = (
        both["rotation_epoch_s"]
        + (DEFAULT_FREEZE_EPOCH - 1) * both["s_per_epoch"]
        + (DEFAULT_RUN_EPOCHS - DEFAULT_FREEZE_EPOCH) * both["frozen_epoch_s"]
    ) / DEFAULT_RUN_EPOCHS
    table = pd.DataFrame(
        {
            "K": both["K"],
            "p": both["p"],
            "sVAE+ s/epoch": both["s_per_epoch"],
            "SCVI s/epoch": both["s_per_epoch_scvi"],
            "ratio per epoch": both["s_per_epoch"] / both["s_per_epoch_scvi"],
            "paired ratio (median, min-max)": [
                _paired_text(paired.get((k, q), []))
                for k, q in zip(both["K"], both["p"], strict=True)
            ],
            "sVAE+ s/epoch, whole default run": whole,
            "ratio, whole default run": whole / both["s_per_epoch_scvi"],
            "sVAE+ peak GiB": both["peak_rss_gib"],
            "SCVI peak GiB": both["peak_rss_gib_scvi"],
        }
    )
    worst = table["ratio per epoch"].max()
    worst_paired = max((float(np.median(v)) for v in paired.values() if v), default=float("nan"))
    worst_whole = table["ratio, whole default run"].max()
    at = table.loc[table["ratio, whole default run"].idxmax()]
    return [
        "## Beside SCVI",
        "",
        f"Same data, networks, likelihood, batch size, epochs and thread, in the same rounds "
        f"(one run of the benchmark). sVAE+ / SCVI time per training epoch: at most "
        f"**{worst:.2f}x** over the {len(table)} sizes (medians of each model's runs); paired "
        f"by round (the two models' runs of a round follow each other, so a slow spell of the "
        f"shared machine falls on both), the median ratio is at most **{worst_paired:.2f}x**. "
        "Over a whole default run "
        f"({DEFAULT_RUN_EPOCHS} epochs at 20,000 cells: sVAE+'s one rotation epoch and its "
        f"{DEFAULT_RUN_EPOCHS - DEFAULT_FREEZE_EPOCH} frozen epochs counted): at most "
        f"**{worst_whole:.2f}x** (at K = {at['K']:.0f}, p = {at['p']:.0f}).",
        "",
        table.round(3).to_markdown(index=False),
        "",
    ]


def paired_ratios() -> dict[tuple[int, int], list[float]]:
    """(K, p) -> sVAE+ / SCVI time per epoch in each round where both ran."""
    svae = {row["part"].split("_", 1)[1]: row["s_per_epoch"] for row in _load("train")}
    scvi = {row["part"].split("_", 1)[1]: row["s_per_epoch"] for row in _load("scvi")}
    out: dict[tuple[int, int], list[float]] = {}
    for name in sorted(set(svae) & set(scvi)):  # "K200_p15_r0"
        k, q, _ = name.split("_")
        out.setdefault((int(k[1:]), int(q[1:])), []).append(svae[name] / scvi[name])
    return out


def _paired_text(ratios: list[float]) -> str:
    if not ratios:
        return ""
    return f"{np.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}, {len(ratios)} rounds)"


def merge(command_line: str) -> str:
    import pandas as pd
    from _provenance import cpu_model, provenance

    training = training_table(_load("train")) if _load("train") else pd.DataFrame()
    scvi_table = training_table(_load("scvi")) if _load("scvi") else pd.DataFrame()
    steps = pd.DataFrame(_load("steps"))
    rotation = pd.DataFrame(_load("rotation"))
    lines = [
        "# Scaling: time per epoch, memory and one-off steps against K and p (CPU, 1 thread)",
        "",
        provenance(),
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores (one torch thread used, another "
        f"worker sharing the machine), Python {platform.python_version()}. **CPU only: no GPU "
        "was lent to this session, so no GPU figure was measured.** Data: 20,000 cells × 500 "
        "genes (CSR counts drawn with numpy; 2,000 control cells, 18,000 spread over K "
        "labels), sVAE+ at its defaults, "
        f"`model.train(max_epochs={EPOCHS})` (batch 256, 90% of cells for training). "
        "s/epoch: median over the epochs with sampled masks (1, 2, 3, 5), leaving out the "
        "first, the rotation epoch (4) and the frozen epochs (6, 7), which have their own "
        "columns. Each run a fresh process; the median run of the rounds (min-max beside it). "
        f"See `benchmarks/scaling.py` for the details. Parts: `{command_line}`.",
        "",
    ]
    if not training.empty:
        lines += ["## Ratios", ""]
        k_ratio = _ratio(training, "s_per_epoch", (10_000, 15), (200, 15))
        k_min = _ratio(training, "s_per_epoch_min", (10_000, 15), (200, 15))
        lines.append(
            f"- Time per epoch, K = 10,000 / K = 200 (p = 15): **{k_ratio:.2f}x** (median runs; "
            f"fastest runs {k_min:.2f}x); acceptance: at most 1.2x."
        )
        paired = paired_ratios()
        if paired.get((10_000, 15)) and paired.get((200, 15)):
            relative = np.median(paired[(10_000, 15)]) / np.median(paired[(200, 15)])
            lines.append(
                f"- The same, each run measured against SCVI's in its round (SCVI's cost does not "
                f"depend on K, so it calibrates the machine's speed at that moment): K = 10,000 "
                f"/ K = 200 **{relative:.2f}x**."
            )
        k2 = _ratio(training, "s_per_epoch", (2_000, 15), (200, 15))
        lines.append(f"- Time per epoch, K = 2,000 / K = 200: {k2:.2f}x.")
        p_ratio = _ratio(training, "s_per_epoch", (200, 200), (200, 15))
        lines.append(f"- Time per epoch, p = 200 / p = 15 (K = 200): **{p_ratio:.2f}x**.")
        rot = _ratio(training, "rotation_epoch_s", (200, 200), (200, 15))
        pick = training.set_index(["K", "p"])
        if (200, 200) in pick.index:
            big = pick.loc[(200, 200)]
            lines.append(
                f"- Rotation epoch, p = 200 / p = 15: {rot:.0f}x: {big['rotation_epoch_s']:.0f} s "
                f"at p = 200, the time of {big['rotation_epoch_s'] / big['s_per_epoch']:.0f} "
                "training epochs (a default run on 20,000 cells has 400)."
            )
        mem = _ratio(training, "peak_rss_gib", (10_000, 15), (200, 15))
        mem_p = _ratio(training, "peak_rss_gib", (200, 200), (200, 15))
        lines.append(
            f"- Peak memory, K = 10,000 / K = 200: {mem:.2f}x; p = 200 / p = 15: {mem_p:.2f}x."
        )
        if not steps.empty:
            srot = _ratio(steps, "sparse_rotation_s", (200, 200), (200, 15))
            srot_k = _ratio(steps, "sparse_rotation_s", (10_000, 15), (200, 15))
            table = _ratio(steps, "get_target_table_s", (10_000, 15), (200, 15))
            summary = _ratio(steps, "stability_summarise_s", (10_000, 15), (200, 15))
            nll = _ratio(steps, "interventional_nll_s", (10_000, 15), (200, 15))
            nll_p = _ratio(steps, "interventional_nll_s", (200, 200), (200, 15))
            match_p = _ratio(steps, "match_latents_s", (200, 200), (200, 15))
            lines += [
                f"- `sparse_rotation`, p = 200 / p = 15: {srot:.0f}x; K = 10,000 / K = 200: "
                f"{srot_k:.1f}x.",
                f"- Interventional NLL, K = 10,000 / K = 200: {nll:.2f}x; p = 200 / p = 15: "
                f"{nll_p:.2f}x. `match_latents`, p = 200 / p = 15: {match_p:.0f}x.",
                f"- `get_target_table`, K = 10,000 / K = 200: {table:.0f}x; edge stability's "
                f"summary of a run: {summary:.0f}x (both a Python loop over perturbations and "
                "edges: linear in K × targets; every edge was on after one epoch here).",
            ]
        if not scvi_table.empty:
            lines += ["", *beside_scvi(training, scvi_table)]
        lines += ["", "## Training", "", training.round(3).to_markdown(index=False), ""]
        if not scvi_table.empty:
            columns = ["K", "p", "runs", "s_per_epoch", "s_per_epoch_min", "s_per_epoch_max"]
            columns += ["first_epoch_s", "peak_rss_gib", "setup_s", "network_parameters"]
            lines += [
                "SCVI on the same data, same sizes, in the same rounds (its time per epoch: the "
                "median over every epoch but the first):",
                "",
                scvi_table[columns].round(3).to_markdown(index=False),
                "",
            ]
    before = _load("train", BEFORE)
    if before and not training.empty:
        table = training_table(before)
        k_ratio = _ratio(table, "s_per_epoch", (10_000, 15), (200, 15))
        k_min = _ratio(table, "s_per_epoch_min", (10_000, 15), (200, 15))
        lines += [
            "## Before the fix: per-cell mask logits over all K rows",
            "",
            "The same K sweep before `MaskedPrior` gathered the minibatch's rows of the mask "
            "logits before clamping them (it clamped the whole K × p table in every step, "
            "forward and backward, then gathered; bitwise the same training). Time per epoch, "
            f"K = 10,000 / K = 200: **{k_ratio:.2f}x** (fastest runs {k_min:.2f}x).",
            "",
            table.round(3).to_markdown(index=False),
            "",
        ]
    if not steps.empty:
        steps = steps.sort_values(["p", "K"]).drop(columns=["part"], errors="ignore")
        lines += [
            "## Steps besides training",
            "",
            "Seconds, on a model trained for one epoch; `sparse_rotation` at its defaults "
            "(8 starts × 500 steps) on the K × p mean shifts; the interventional NLL on "
            f"{NLL_CELLS:,} cells with {NLL_PARTICLES} particles; edge stability: one run's "
            f"summary (latents of {MATCH_CELLS:,} cells, pi, targets, target table), then "
            f"matching and the edge table over {STABILITY_RUNS} runs; matching between two "
            f"p-dimensional latents of {MATCH_CELLS:,} cells.",
            "",
            steps.set_index(["K", "p"]).T.round(4).to_markdown(),
            "",
        ]
    if not rotation.empty:
        rotation = rotation.drop(columns=["part"], errors="ignore")
        timing = (
            rotation[rotation["torch_s_per_step"].notna()]
            if "torch_s_per_step" in rotation
            else rotation.iloc[:0]
        )
        checks = rotation.drop(index=timing.index).sort_values(["p", "K", "seed"])
        columns = [
            "K", "p", "seed", "torch_s", "eigh_backward_s", "repeat_max_abs_diff",
            "roundoff_input_max_abs_diff", "eigh_backward_max_abs_diff", "l1_identity",
            "l1_torch", "l1_roundoff_input", "l1_eigh_backward",
        ]  # fmt: skip
        lines += [
            "## Reproducibility of the rotation",
            "",
            "`sparse_rotation` (defaults: 8 starts × 500 steps) on sparse shifts (one ±3 target "
            "per perturbation, noise 0.3) seen through a hidden rotation: run twice "
            "(`repeat`), run on the shifts changed by 1e-15 relative (`roundoff_input`: "
            "round-off), and run with the other backward pass of the matrix exponential "
            "(`eigh_backward`: an eigendecomposition, exact to round-off; the package's from "
            "50 latents on, measured before it was adopted; the first three with torch's). "
            "`*_max_abs_diff`: the largest entry of |ΔR| against the first run's "
            "rotation; `l1_*`: the objective |shifts @ R|_1 reached (`l1_identity`: before "
            "rotating); `*_s`: seconds.",
            "",
            checks[[c for c in columns if c in checks]].round(6).to_markdown(index=False),
            "",
        ]
        for _, row in timing.iterrows():
            lines.append(
                f"Seconds per step at K = {row['K']:.0f}, p = {row['p']:.0f} "
                f"({row['n_steps']:.0f} steps timed): torch's backward "
                f"{row['torch_s_per_step']:.3f}, the candidate's "
                f"{row['eigh_backward_s_per_step']:.3f} "
                f"({row['torch_s_per_step'] / row['eigh_backward_s_per_step']:.1f}x faster).\n"
            )
    text = "\n".join(lines)
    if not training.empty:
        frames = [training.assign(table="training")]
        if not steps.empty:
            frames.append(steps.assign(table="steps"))
        if not rotation.empty:
            frames.append(rotation.assign(table="rotation"))
        pd.concat(frames, ignore_index=True).to_csv(OUT.with_suffix(".csv"), index=False)
    OUT.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("K", "p", "steps", "rotation"), action="append")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of training runs")
    parser.add_argument("--merge-only", action="store_true", help="only build the table")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, nothing saved")
    args = parser.parse_args()
    if args.quick:
        global K_SIZES, P_SIZES, ONE_ROUND_P, NLL_CELLS, MATCH_CELLS
        K_SIZES, P_SIZES, ONE_ROUND_P = (5, 20), (4, 8), ()
        NLL_CELLS, MATCH_CELLS = 50, 200
    if not args.merge_only:
        for part in args.part or ["K", "p", "steps"]:
            run_part(part, 1 if args.quick else args.repeats, args.quick)
    if not args.quick:
        print(merge("python benchmarks/scaling.py --part K|p|steps|rotation"))


if __name__ == "__main__":
    main()
