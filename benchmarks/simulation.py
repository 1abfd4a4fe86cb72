"""Identifiability on the paper's simulation: sVAE+ vs sVAE, iVAE, beta-VAE and VAE.

Setting (Lopez et al. 2023, d = 15 table): K = 100 perturbations, p = 15 latents, 250 cells per
perturbation, 100 genes; the first 80 perturbations (and control cells) are used for training.
Every method runs at its default hyperparameters; seeds change both the simulated data and the
training seed. The last 20 perturbations are held out: each model learns their shifts on half
of their cells (``SparseVAE.transfer``, gamma = 1) and the interventional NLL (negative IWELBO,
1,000 particles) is averaged over the other half, per perturbation, then over perturbations.
Prints a table beside the published numbers and writes it to
``benchmarks/results/simulation.{md,csv}``.

Usage::

    python benchmarks/simulation.py                     # 3 seeds, 300 epochs, 2 processes
    python benchmarks/simulation.py --seeds 0 --methods svae+ vae --max-epochs 50
"""

from __future__ import annotations

import argparse
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).parent / "results"
PUBLISHED = pd.DataFrame(
    {
        "mcc_pearson": [0.46, 0.48, 0.47, 0.72, 0.88],
        "mcc_spearman": [0.40, 0.42, 0.39, 0.63, 0.79],
        "r2": [0.82, 0.83, 0.85, 0.84, 0.86],
        "precision": [None, None, 0.16, 0.43, 0.54],
        "recall": [None, None, 0.18, 0.39, 0.47],
        "f1": [None, None, 0.17, 0.31, 0.51],
        "interventional_nll": [327.10, 392.68, 323.26, 318.26, 315.43],
    },
    index=pd.Index(["vae", "beta-vae", "ivae", "svae", "svae+"], name="method"),
)
METRICS = ["mcc_pearson", "mcc_spearman", "r2", "precision", "recall", "f1", "interventional_nll"]


def heldout_nll(model, adata, heldout: list[str], seed: int, n_particles: int) -> float:
    """Transfer to the held-out perturbations on half their cells; mean NLL of the other half."""
    import numpy as np

    import sparsevae as sv

    (split,) = sv.evaluate.make_splits(adata, heldout=heldout, random_state=seed)
    roles = split.roles.to_numpy()
    evaluation = adata[roles == "evaluation"].copy()
    _, nll = sv.evaluate.transfer_and_score(
        model, adata[roles == "transfer"].copy(), evaluation, seed=seed, n_particles=n_particles
    )
    labels = evaluation.obs["perturbation"].astype(str).to_numpy()
    return float(np.mean([nll[labels == p].mean() for p in heldout]))


def run_one(
    method: str, seed: int, max_epochs: int, n_train: int, threads: int, n_particles: int
) -> dict:
    """Simulate with ``seed``, train ``method`` with ``seed`` and return its scores."""
    import torch

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    import sparsevae as sv
    from sparsevae._quiet import silence_lightning

    silence_lightning()

    adata = sv.data.simulate_sparse_shift(
        n_perturbations=100,
        n_cells_per_perturbation=250,
        n_latent=15,
        n_genes=100,
        random_state=seed,
    )
    names = list(adata.uns["true_targets"].index)
    train, heldout = names[:n_train], names[n_train:]
    report, models = sv.evaluate.identifiability_report(
        adata,
        methods=[method],
        seeds=[seed],
        train_perturbations=train,
        max_epochs=max_epochs,
        return_models=True,
    )
    row = report.iloc[0].to_dict()
    row["interventional_nll"] = (
        heldout_nll(models[(method, seed)], adata, heldout, seed, n_particles)
        if heldout
        else float("nan")
    )
    print(
        f"{method:>8} seed {seed}: MCC {row['mcc_pearson']:.3f}  F1 {row['f1']:.3f}  "
        f"R² {row['r2']:.3f}  NLL {row['interventional_nll']:.2f}  "
        f"({row['train_seconds']:.0f} s)",
        flush=True,
    )
    return row


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Median and sd over seeds per method, beside the published means."""
    grouped = results.groupby("method")[METRICS]
    table = grouped.median().round(3).astype(object)
    sd = grouped.std().round(3)
    for metric in METRICS:
        table[metric] = [
            f"{m:.3f} ± {s:.3f}" if pd.notna(s) else f"{m:.3f}"
            for m, s in zip(grouped.median()[metric], sd[metric], strict=True)
        ]
        table[f"{metric} (paper)"] = PUBLISHED[metric].reindex(table.index)
    table["nan_loss"] = results.groupby("method")["nan_loss"].any()
    table["n_seeds"] = results.groupby("method")["seed"].nunique()
    order = [m for m in ["svae+", "svae", "ivae", "beta-vae", "vae"] if m in table.index]
    return table.loc[order]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--methods", nargs="+", default=["svae+", "svae", "ivae", "beta-vae", "vae"]
    )
    parser.add_argument("--max-epochs", type=int, default=300)
    parser.add_argument("--n-train", type=int, default=80, help="training perturbations")
    parser.add_argument("--jobs", type=int, default=2, help="parallel processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--n-particles", type=int, default=1000, help="IWELBO particles")
    parser.add_argument("--tag", default="simulation", help="name of the results files")
    args = parser.parse_args()

    start = time.perf_counter()
    jobs = [
        (m, s, args.max_epochs, args.n_train, args.threads, args.n_particles)
        for s in args.seeds
        for m in args.methods
    ]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(run_one, *zip(*jobs, strict=True)))
    results = pd.DataFrame(rows)
    table = summarise(results)
    RESULTS.mkdir(exist_ok=True)
    results.to_csv(RESULTS / f"{args.tag}.csv", index=False)
    header = (
        f"# Simulation benchmark ({args.tag})\n\n"
        f"K = 100, p = 15, 250 cells/perturbation, 100 genes, first {args.n_train} perturbations "
        f"for training, the other {100 - args.n_train} held out for the interventional NLL "
        f"({args.n_particles} particles); seeds {args.seeds}; {args.max_epochs} epochs; "
        "median ± sd over seeds; "
        f"{args.jobs} processes × {args.threads} torch thread(s); "
        f"total {time.perf_counter() - start:.0f} s.\n\n"
    )
    (RESULTS / f"{args.tag}.md").write_text(header + table.to_markdown() + "\n")
    print(header + table.to_string())


if __name__ == "__main__":
    main()
