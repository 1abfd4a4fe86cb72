"""Vectorised interventional NLL (IWELBO) against a straightforward per-particle loop.

The loop is what the published code and scvi-tools' ``VAE.marginal_ll`` (one particle per pass)
do: one full forward pass and likelihood evaluation per particle. The vectorised estimator
(:meth:`sparsevae.SparseVAE.get_interventional_nll`) encodes once, decodes particles in chunks,
and computes the negative binomial's z-independent log-gamma terms once per cell.

Agreement is judged against Monte Carlo error: two independent runs of the vectorised
estimator differ by some amount per cell; the loop should differ from it by as much, and the
difference of their means over cells should be within a few standard errors.

Usage::

    python benchmarks/iwelbo.py           # 2,000 cells, 1,000 particles, 1 and 2 threads
    python benchmarks/iwelbo.py --n-particles 200 --threads 1
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scvi
import torch

import sparsevae as sv
from sparsevae._quiet import QUIET_TRAINER, silence_lightning

RESULTS = Path(__file__).parent / "results"


@torch.inference_mode()
def per_particle_loop(model: sv.SparseVAE, adata, n_particles: int, batch_size: int) -> np.ndarray:
    """-IWELBO per cell with one forward pass per particle (the straightforward estimator)."""
    module = model.module
    module.eval()
    out = []
    for tensors in model._make_data_loader(adata=adata, batch_size=batch_size):
        log_w = []
        for _ in range(n_particles):
            inference, generative = module.forward(tensors, compute_loss=False)
            z, qz = inference["z"], inference["qz"]
            log_w.append(
                generative["px"].log_prob(tensors["X"]).sum(-1)
                + generative["pz"].log_prob(z).sum(-1)
                - qz.log_prob(z).sum(-1)
            )
        out.append(torch.logsumexp(torch.stack(log_w), dim=0) - math.log(n_particles))
    return -torch.cat(out).numpy().astype(np.float64)


def main() -> None:
    from _provenance import provenance

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-cells", type=int, default=2000)
    parser.add_argument("--n-particles", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--threads", default="1,2", help="torch thread counts to time, comma-separated"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timings per estimator (median)")
    parser.add_argument("--max-epochs", type=int, default=30)
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    warnings.filterwarnings("ignore")
    silence_lightning()

    # The paper's simulation (100 genes, 15 latents); a model trained on it for a few epochs.
    adata = sv.data.simulate_sparse_shift(
        n_perturbations=20, n_cells_per_perturbation=250, n_latent=15, n_genes=100, random_state=0
    )
    scvi.settings.seed = 0
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(adata, n_latent=15)
    model.train(max_epochs=args.max_epochs, **QUIET_TRAINER)
    cells = np.random.default_rng(0).choice(adata.n_obs, args.n_cells, replace=False)
    cells = adata[np.sort(cells)].copy()

    def vectorised(seed: int) -> tuple[np.ndarray, float]:
        scvi.settings.seed = seed
        start = time.perf_counter()
        nll = model.get_interventional_nll(
            cells, n_particles=args.n_particles, batch_size=args.batch_size
        )
        return nll, time.perf_counter() - start

    def loop(seed: int) -> tuple[np.ndarray, float]:
        scvi.settings.seed = seed
        start = time.perf_counter()
        nll = per_particle_loop(model, cells, args.n_particles, args.batch_size)
        return nll, time.perf_counter() - start

    timings = {}
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        vec_runs = [vectorised(1 + r) for r in range(args.repeats)]
        loop_runs = [loop(101 + r) for r in range(args.repeats)]
        timings[n_threads] = (
            float(np.median([t for _, t in vec_runs])),
            float(np.median([t for _, t in loop_runs])),
        )
    (vec_a, _), (vec_b, _) = vec_runs[0], vec_runs[1 % len(vec_runs)]
    loop_nll = loop_runs[0][0]

    diff = loop_nll - vec_a
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    rows = {
        "cells": args.n_cells,
        "genes": adata.n_vars,
        "particles": args.n_particles,
        "mean NLL, vectorised": vec_a.mean(),
        "mean NLL, loop": loop_nll.mean(),
        "mean difference loop - vectorised": diff.mean(),
        "standard error of that difference": se,
        "difference / standard error": diff.mean() / se,
        "mean |per-cell difference|, loop vs vectorised": np.abs(diff).mean(),
        "mean |per-cell difference|, vectorised vs vectorised (MC noise)": np.abs(
            vec_a - vec_b
        ).mean(),
    }
    for n_threads, (t_vec, t_loop) in timings.items():
        rows[f"seconds, vectorised, {n_threads} thread(s)"] = t_vec
        rows[f"seconds, loop, {n_threads} thread(s)"] = t_loop
        rows[f"speed-up, {n_threads} thread(s)"] = t_loop / t_vec
    table = pd.Series(rows, name="value").to_frame()
    RESULTS.mkdir(exist_ok=True)
    header = (
        "# IWELBO: vectorised vs per-particle loop\n\n"
        f"{provenance()}\n\n"
        f"sVAE+ trained {args.max_epochs} epochs on a simulation (K = 20, p = 15, 100 genes); "
        f"batch size {args.batch_size}; seconds are the median of {args.repeats} runs per "
        f"estimator and torch thread count.\n\n"
    )
    (RESULTS / "iwelbo.md").write_text(header + table.to_markdown(floatfmt=".4g") + "\n")
    print(header + table.to_string(float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
