"""What stale batch-norm statistics cost: each method scored before and after recalibration.

Each method is trained once with ``recalibrate_batch_norm=False`` and scored in eval mode with
the running statistics training left (a moving average of minibatch statistics of earlier
weights); then the same weights are scored again after
``sparsevae.model._batch_norm.recalibrate_batch_norm`` (statistics recomputed with the final
weights on the training cells, the default of ``SparseVAE.train`` since 0.2). Nothing else
differs between the two rows of a method.

Setting: ``simulate_sparse_shift`` with 40 perturbations × 200 cells, 10 latents, 100 genes,
no control cells (the paper's setting); the first 32 perturbations train, the other 8 are held
out (transfer on half their cells, interventional NLL with 1,000 particles on the other half).
Scores: MCC of the latents as trained and after the post-hoc sparse rotation, the interventional
NLL of 2,000 training cells (a fit check: close to the training ELBO when the eval-mode
networks are the trained ones) and of the held-out cells.

Runnable in parts (``--methods``): every method's rows go to
``results/batch_norm_parts/<method>__seed<seed>.csv``; the table merges every part.

Usage::

    python benchmarks/batch_norm.py                       # every method, seed 0
    python benchmarks/batch_norm.py --methods vae factorvae
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from simulation import heldout_nll

RESULTS = Path(__file__).parent / "results"
PARTS = RESULTS / "batch_norm_parts"


def score(model, adata, heldout, seed: int, n_particles: int) -> dict[str, float]:
    """MCC as trained and post-hoc rotated; NLL of training and of held-out cells."""
    import sparsevae as sv
    from sparsevae.metrics import mean_correlation_coefficient

    z = model.get_latent_representation()
    z_true = np.asarray(model.adata.obsm["z_true"])
    labels = model.adata.obs["perturbation"].astype(str).to_numpy()
    rotated, _ = sv.evaluate.posthoc_sparse_rotation(z, labels, None)
    rng = np.random.default_rng(seed)
    fit_cells = rng.choice(model.adata.n_obs, size=min(2000, model.adata.n_obs), replace=False)
    fit = model.get_interventional_nll(model.adata[np.sort(fit_cells)], n_particles=n_particles)
    return {
        "mcc_pearson": mean_correlation_coefficient(z_true, z, "pearson"),
        "mcc_posthoc": mean_correlation_coefficient(z_true, rotated, "pearson"),
        "nll_training_cells": float(np.mean(fit)),
        "interventional_nll": heldout_nll(model, adata, heldout, None, seed, n_particles),
    }


def run_one(method: str, seed: int, max_epochs: int, n_particles: int) -> pd.DataFrame:
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    import scvi

    import sparsevae as sv
    from sparsevae._quiet import QUIET_TRAINER, silence_lightning
    from sparsevae.model._batch_norm import recalibrate_batch_norm

    silence_lightning()
    adata = sv.data.simulate_sparse_shift(
        n_perturbations=40,
        n_cells_per_perturbation=200,
        n_latent=10,
        n_genes=100,
        n_control_cells=0,
        random_state=seed,
    )
    names = list(adata.uns["true_targets"].index)
    heldout = names[32:]
    train_cells = adata[adata.obs["perturbation"].astype(str).isin(names[:32]).to_numpy()].copy()
    scvi.settings.seed = seed
    sv.SparseVAE.setup_anndata(train_cells, perturbation_key="perturbation", control=None)
    model = sv.SparseVAE(train_cells, n_latent=10, **sv.evaluate.method_kwargs(method))
    start = time.perf_counter()
    model.train(max_epochs=max_epochs, recalibrate_batch_norm=False, **QUIET_TRAINER)
    seconds = time.perf_counter() - start
    elbo = float(model.history["elbo_train"].iloc[-1, 0])
    rows = [
        {
            "statistics": "as training left them",
            **score(model, adata, heldout, seed, n_particles),
        }
    ]
    recalibrate_batch_norm(model)
    rows.append({"statistics": "recalibrated", **score(model, adata, heldout, seed, n_particles)})
    table = pd.DataFrame(rows)
    table.insert(0, "seed", seed)
    table.insert(0, "method", method)
    table["elbo_train"] = elbo
    table["train_seconds"] = seconds
    print(table.round(3).to_string(index=False, header=False), flush=True)
    return table


def main() -> None:
    from _provenance import provenance

    import sparsevae as sv

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(sv.evaluate.METHODS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--max-epochs", type=int, default=300)
    parser.add_argument("--n-particles", type=int, default=1000)
    args = parser.parse_args()
    unknown = set(args.methods) - set(sv.evaluate.METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {list(sv.evaluate.METHODS)}")
    PARTS.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for seed in args.seeds:
        for method in args.methods:
            part = PARTS / f"{method}__seed{seed}.csv"
            if not part.exists():
                run_one(method, seed, args.max_epochs, args.n_particles).to_csv(part, index=False)
    results = pd.concat([pd.read_csv(f) for f in sorted(PARTS.glob("*.csv"))], ignore_index=True)
    order = [m for m in sv.evaluate.METHODS if m in set(results["method"])]
    results["method"] = pd.Categorical(results["method"], categories=order, ordered=True)
    results = results.sort_values(["method", "seed", "statistics"])
    results.to_csv(RESULTS / "batch_norm.csv", index=False)
    header = (
        "# Stale batch-norm statistics: each method before and after recalibration\n\n"
        f"{provenance()}\n\n"
        "`python benchmarks/batch_norm.py` (this invocation: "
        f"{time.perf_counter() - start:.0f} s, 1 torch thread): simulation with 40 "
        "perturbations × 200 cells, 10 latents, 100 genes, no control cells; 32 perturbations "
        f"train ({args.max_epochs} epochs), 8 are held out; {args.n_particles} particles. One "
        "training per method and seed; the two rows score the same weights, with the running "
        "statistics training left and after recomputing them on the training cells. "
        "`nll_training_cells`: interventional NLL of 2,000 training cells; "
        "`interventional_nll`: held-out cells, mean over the 8 held-out perturbations.\n\n"
    )
    cols = [
        "method",
        "seed",
        "statistics",
        "elbo_train",
        "nll_training_cells",
        "interventional_nll",
        "mcc_pearson",
        "mcc_posthoc",
        "train_seconds",
    ]
    (RESULTS / "batch_norm.md").write_text(
        header + results[cols].to_markdown(index=False, floatfmt=".3f") + "\n"
    )
    print(header + results[cols].round(3).to_string(index=False))


if __name__ == "__main__":
    main()
