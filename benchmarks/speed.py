"""Speed and memory: SparseVAE (sVAE+) against scvi-tools' SCVI, side by side on the same data.

Both models get the same simulated counts (sparse CSR), the same architecture (2 layers of 128,
15 latents, no dropout, batch normalisation, negative binomial with one dispersion per gene,
observed library size) and the same batch size, and train over all cells (no validation split).
Every measurement runs in a fresh process, so that its peak resident memory (RSS) is its own:
data loading, model and training together. Time per epoch is the median over the epochs after
the first (which includes start-up), leaving out the one epoch in which sVAE+ rotates its latent
space (a one-off cost, given in its own column).

Measured per model and size: seconds per epoch, peak RSS, and throughput (cells per second) of
latent extraction (``get_latent_representation`` on every cell) and of the importance-weighted
likelihood (``get_interventional_nll`` for SparseVAE, ``get_marginal_ll`` for SCVI, on 2,000
cells with 100 particles).

Sizes:

- ``paper``: the paper's simulation (100 perturbations × 250 cells, 100 genes), its 20,000
  training cells (the first 80 perturbations); SparseVAE is also timed at batch 128 and one
  thread, the setting of the published code's 0.97 s per epoch.
- ``100k``: 100,000 cells × 2,000 genes, 500 perturbations, ~5% non-zero.
- ``1M`` (``--large``): 1,000,000 cells × 2,000 genes, 5,000 perturbations, ~5% non-zero:
  SparseVAE only, one epoch, with the counts in memory and read from disk (``backed="r"``).

Usage::

    python benchmarks/speed.py                  # paper size and 100k x 2,000
    python benchmarks/speed.py --large          # and 1M x 2,000 (one epoch, ~20 min)
    python benchmarks/speed.py --quick          # tiny sizes: checks that the script runs

Timings on a shared machine vary from run to run: every paper-size measurement is repeated in
``--repeats`` fresh processes (default 3) and the table gives the median run (its time per
epoch, and the fastest and slowest runs' beside it).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from _memory import peak_rss_gib

RESULTS = Path(__file__).parent / "results"
PUBLISHED_SECONDS_PER_EPOCH = 0.97  # published code, 20,000 cells x 100 genes, batch 128, 1 thread
ARCHITECTURE = {"n_hidden": 128, "n_layers": 2, "n_latent": 15, "dropout_rate": 0.0}
IWELBO_CELLS, IWELBO_PARTICLES = 2000, 100


@dataclass
class Dataset:
    """A simulated screen, written once to an h5ad file that every measurement reads."""

    name: str
    n_perturbations: int
    n_cells_per_perturbation: int
    n_genes: int
    library_size: float = 100.0
    library_log_sd: float = 0.5
    train_perturbations: int | None = None  # keep only the first ones (the paper: 80 of 100)

    def write(self, folder: Path) -> Path:
        import sparsevae as sv

        adata = sv.data.simulate_sparse_shift(
            n_perturbations=self.n_perturbations,
            n_cells_per_perturbation=self.n_cells_per_perturbation,
            n_genes=self.n_genes,
            library_size=self.library_size,
            library_log_sd=self.library_log_sd,
            random_state=0,
        )
        if self.train_perturbations is not None:
            kept = adata.uns["true_targets"].index[: self.train_perturbations]
            adata = adata[adata.obs["perturbation"].isin(kept)].copy()
        del adata.uns["true_targets"], adata.uns["true_shift"]  # not needed; keeps files small
        path = folder / f"{self.name}.h5ad"
        adata.write_h5ad(path)
        return path


@dataclass
class Job:
    model: str  # "SparseVAE" or "SCVI"
    data: str  # name of the Dataset
    path: str
    epochs: int
    batch_size: int = 256
    threads: int | None = None  # None: torch's default (all cores)
    backed: bool = False
    throughput: bool = True
    extra: dict = field(default_factory=dict)


def run_job(job: Job) -> dict:
    """Train one model in this (fresh) process and time it; returns one table row."""
    import anndata as ad
    import scvi
    import torch
    from lightning.pytorch.callbacks import Callback

    import sparsevae as sv
    from sparsevae._quiet import QUIET_TRAINER, silence_lightning

    silence_lightning()
    if job.threads is not None:
        torch.set_num_threads(job.threads)
    scvi.settings.seed = 0
    adata = ad.read_h5ad(job.path, backed="r" if job.backed else None)

    class EpochTimer(Callback):
        def __init__(self):
            self.seconds: list[float] = []
            self.rotation_seconds = float("nan")

        def on_train_epoch_start(self, trainer, pl_module):
            self._start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            seconds = time.perf_counter() - self._start
            # sVAE+ rotates its latent space once, at the start of one epoch (a data pass and
            # a small optimisation): timed apart, so that time per epoch is that of training.
            if trainer.current_epoch == getattr(pl_module, "rotate_latents_at", None):
                self.rotation_seconds = seconds
            else:
                self.seconds.append(seconds)

    timer = EpochTimer()
    if job.model == "SparseVAE":
        control = "control" if "control" in set(adata.obs["perturbation"]) else None
        sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control=control)
        model = sv.SparseVAE(adata, **ARCHITECTURE)
    else:
        scvi.model.SCVI.setup_anndata(adata)
        model = scvi.model.SCVI(adata, gene_likelihood="nb", dispersion="gene", **ARCHITECTURE)
    start = time.perf_counter()
    model.train(
        max_epochs=job.epochs,
        batch_size=job.batch_size,
        train_size=1.0,
        callbacks=[timer],
        **QUIET_TRAINER,
    )
    total = time.perf_counter() - start
    later = timer.seconds[1:] or timer.seconds
    row = {
        "model": job.model,
        "data": job.data,
        "cells": adata.n_obs,
        "genes": adata.n_vars,
        "backed": job.backed,
        "batch_size": job.batch_size,
        "threads": torch.get_num_threads(),
        "epochs": job.epochs,
        "s_per_epoch": float(np.median(later)),
        "first_epoch_s": timer.seconds[0],
        "rotation_epoch_s": timer.rotation_seconds,
        "train_total_s": total,
    }
    if job.throughput:
        start = time.perf_counter()
        model.get_latent_representation(batch_size=1024)
        row["latent_cells_per_s"] = adata.n_obs / (time.perf_counter() - start)
        cells = np.arange(min(IWELBO_CELLS, adata.n_obs))
        start = time.perf_counter()
        if job.model == "SparseVAE":
            model.get_interventional_nll(indices=cells, n_particles=IWELBO_PARTICLES)
        else:
            model.get_marginal_ll(indices=cells, n_mc_samples=IWELBO_PARTICLES)
        row["iwelbo_cells_per_s"] = len(cells) / (time.perf_counter() - start)
    row["peak_rss_gib"] = peak_rss_gib()
    return row


def run_isolated(job: Job) -> dict:
    """``run_job`` in a fresh process (spawned: nothing inherited, memory measured alone)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        row = pool.submit(run_job, job).result()
    print(
        f"  {row['model']:9s} {row['data']:6s} batch {row['batch_size']:4d} threads "
        f"{row['threads']}: {row['s_per_epoch']:.3f} s/epoch, "
        f"peak RSS {row['peak_rss_gib']:.2f} GiB",
        flush=True,
    )
    return row


def plan(args, paths: dict[str, str]) -> list[Job]:
    """Every measurement, the paper-size ones ``--repeats`` times, in interleaved rounds (so a
    slow spell of the machine does not fall on one model only).
    """
    once = _plan_once(args, paths)
    rounds = max(_repeats(args, job) for job in once) if once else 0
    return [job for r in range(rounds) for job in once if r < _repeats(args, job)]


def _repeats(args, job: Job) -> int:
    return args.repeats if job.data == "paper" else 1


def _plan_once(args, paths: dict[str, str]) -> list[Job]:
    jobs = []
    for data, epochs in (("paper", args.epochs_paper), ("100k", args.epochs_100k)):
        if data not in paths:
            continue
        for model in ("SparseVAE", "SCVI"):
            jobs.append(Job(model, data, paths[data], epochs, threads=args.threads))
    if "paper" in paths:  # the published code's setting: batch 128, one thread
        for batch_size in (128, 256):
            jobs.append(
                Job(
                    "SparseVAE",
                    "paper",
                    paths["paper"],
                    args.epochs_paper,
                    batch_size,
                    1,
                    throughput=False,
                )
            )
    if "1M" in paths:
        for backed in (False, True):
            jobs.append(
                Job(
                    "SparseVAE",
                    "1M",
                    paths["1M"],
                    1,
                    threads=args.threads,
                    backed=backed,
                    throughput=False,
                )
            )
    return jobs


def median_runs(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per measurement: the run with the median time per epoch, with the number of
    runs and the fastest and slowest run's time per epoch.
    """
    keys = ["model", "data", "backed", "batch_size", "threads"]
    out = []
    for _, group in rows.groupby(keys, sort=False):
        ordered = group.sort_values("s_per_epoch")
        row = ordered.iloc[(len(ordered) - 1) // 2].copy()
        row["runs"] = len(ordered)
        row["s_per_epoch_min"] = ordered["s_per_epoch"].min()
        row["s_per_epoch_max"] = ordered["s_per_epoch"].max()
        out.append(row)
    return pd.DataFrame(out).reset_index(drop=True)


def summarise(rows: pd.DataFrame) -> str:
    lines = []
    default = rows[(rows["batch_size"] == 256) & ~rows["backed"]]
    for data in ("paper", "100k"):
        pair = default[(default["data"] == data) & (default["threads"] == default["threads"].max())]
        pair = pair.drop_duplicates(["model"]).set_index("model")
        if {"SparseVAE", "SCVI"} <= set(pair.index):
            ours, theirs = pair.loc["SparseVAE", "s_per_epoch"], pair.loc["SCVI", "s_per_epoch"]
            lines.append(
                f"- {data}: SparseVAE / SCVI time per epoch = **{ours / theirs:.2f}** "
                f"({ours:.3f} s vs {theirs:.3f} s)."
            )
    paper = rows[(rows["data"] == "paper") & (rows["model"] == "SparseVAE")]
    for _, row in paper.iterrows():
        speedup = PUBLISHED_SECONDS_PER_EPOCH / row["s_per_epoch"]
        threads = f"{row['threads']} thread{'s' if row['threads'] > 1 else ''}"
        lines.append(
            f"- paper size, SparseVAE, {threads}, batch {row['batch_size']}: "
            f"{row['s_per_epoch']:.3f} s per epoch (median of {row['runs']} runs, "
            f"{row['s_per_epoch_min']:.3f}-{row['s_per_epoch_max']:.3f}) = **{speedup:.2f}x** "
            f"faster than the published code's {PUBLISHED_SECONDS_PER_EPOCH} s (batch 128, "
            "1 thread)."
        )
    for _, row in rows[rows["data"] == "1M"].iterrows():
        where = "read from disk (backed='r')" if row["backed"] else "in memory"
        lines.append(
            f"- 1M x 2,000 ({where}): one epoch {row['s_per_epoch']:.0f} s, peak RSS "
            f"**{row['peak_rss_gib']:.2f} GiB**."
        )
    return "\n".join(lines)


def main() -> None:
    from _provenance import provenance

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--large", action="store_true", help="also 1M cells x 2,000 genes")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--epochs-paper", type=int, default=6)
    parser.add_argument("--epochs-100k", type=int, default=3)
    parser.add_argument(
        "--repeats", type=int, default=3, help="fresh processes per paper-size measurement"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "speed.md")
    args = parser.parse_args()

    datasets = [
        Dataset(
            "paper", 100, 250, 100, library_size=1e5, library_log_sd=0.0, train_perturbations=80
        ),
        Dataset("100k", 499, 200, 2000),
    ]
    if args.large:
        datasets.append(Dataset("1M", 4999, 200, 2000))
    if args.quick:
        datasets = [
            Dataset(
                "paper", 10, 50, 100, library_size=1e5, library_log_sd=0.0, train_perturbations=8
            ),
            Dataset("100k", 20, 50, 200),
        ]
        args.epochs_paper = args.epochs_100k = 2

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        paths = {}
        for dataset in datasets:
            start = time.perf_counter()
            paths[dataset.name] = str(dataset.write(Path(folder)))
            print(f"simulated {dataset.name} in {time.perf_counter() - start:.0f} s", flush=True)
        for job in plan(args, paths):
            rows.append(run_isolated(job))
    table = median_runs(pd.DataFrame(rows))
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    text = (
        f"# Speed and memory ({machine})\n\n"
        f"{provenance()}\n\n"
        "Produced by `python benchmarks/speed.py"
        f"{' --large' if args.large else ''}{' --quick' if args.quick else ''}`. "
        "Same data, architecture and batch size for both models; each run a fresh process; "
        f"paper-size rows are the median of {args.repeats} runs.\n\n"
        f"{summarise(table)}\n\n{table.round(3).to_markdown(index=False)}\n"
    )
    print(text)
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        table.to_csv(args.out.with_suffix(".csv"), index=False)


if __name__ == "__main__":
    main()
