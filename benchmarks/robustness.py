"""Numerical robustness: does any loss become NaN or infinite over many short trainings.

Two datasets:

- ``simulation``: the paper's simulation (K = 100 perturbations, p = 15 latents, 100 genes),
  with fewer cells per perturbation to keep it short; the seed changes the data and training;
- ``norman``: the bundled Norman 2019 subset (3,375 cells × 250 genes, 33 perturbations),
  the same data for every seed, 15 latents.

Every run uses the default hyperparameters (sVAE+, KL warm-up capped at ``max_epochs``, masks
frozen for the last 20% of epochs) and validates every epoch. A run counts as NaN if training
raised :class:`sparsevae.model.NonFiniteLossError` (the guard that stops at the first NaN or
infinite loss term or gradient) or if any logged loss, latent or mask probability is not
finite. Writes ``benchmarks/results/robustness.{md,csv}``; with ``--datasets`` only some
datasets are rerun and the others' rows are kept from the CSV.

Usage::

    python benchmarks/robustness.py                          # 20 seeds, 20 epochs, both
    python benchmarks/robustness.py --datasets norman --seeds 0 1 2 --max-epochs 5
"""

from __future__ import annotations

import argparse
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"
CSV = RESULTS / "robustness.csv"
DATASETS = ("simulation", "norman")


def load(dataset: str, seed: int, n_cells_per_perturbation: int):
    import sparsevae as sv

    if dataset == "simulation":
        return sv.data.simulate_sparse_shift(
            n_perturbations=100,
            n_cells_per_perturbation=n_cells_per_perturbation,
            n_latent=15,
            n_genes=100,
            random_state=seed,
        )
    return sv.data.norman2019_subset()


def run(dataset: str, seed: int, max_epochs: int, n_cells_per_perturbation: int) -> dict:
    import scvi

    import sparsevae as sv
    from sparsevae._quiet import QUIET_TRAINER
    from sparsevae.model import NonFiniteLossError

    adata = load(dataset, seed, n_cells_per_perturbation)
    row = {"dataset": dataset, "seed": seed, "n_cells": adata.n_obs, "n_genes": adata.n_vars}
    start = time.perf_counter()
    error = ""
    scvi.settings.seed = seed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
        model = sv.SparseVAE(adata, n_latent=15)
        try:
            model.train(max_epochs=max_epochs, check_val_every_n_epoch=1, **QUIET_TRAINER)
        except NonFiniteLossError as exc:
            error = f"NonFiniteLossError: {exc}"
        except Exception as exc:  # recorded, not hidden: the table shows it
            error = f"{type(exc).__name__}: {exc} | {traceback.format_exc(limit=2)}"
    row["seconds"] = round(time.perf_counter() - start, 1)
    history = {k: v.to_numpy(dtype=float).ravel() for k, v in (model.history or {}).items()}
    logged = np.concatenate(list(history.values())) if history else np.array([np.nan])
    z = model.get_latent_representation()
    pi = model.get_mask_probabilities().to_numpy()
    row.update(
        {
            "epochs_logged": len(history.get("train_loss", [])),
            "nonfinite_logged_values": int(np.sum(~np.isfinite(logged))),
            "latents_finite": bool(np.isfinite(z).all()),
            "pi_finite": bool(np.isfinite(pi).all()),
            "final_elbo_train": float(history["elbo_train"][-1]) if history else np.nan,
            "final_elbo_validation": (
                float(history["elbo_validation"][-1]) if "elbo_validation" in history else np.nan
            ),
            "n_edges": int((pi > 0.5).sum()),
            "error": error,
        }
    )
    row["nan"] = bool(
        error or row["nonfinite_logged_values"] or not row["latents_finite"] or not row["pi_finite"]
    )
    return row


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    return table.groupby("dataset", sort=False).agg(
        runs=("seed", "size"),
        runs_with_nan=("nan", "sum"),
        errors=("error", lambda e: int((e != "").sum())),
        epochs=("epochs_logged", "max"),
        cells=("n_cells", "median"),
        genes=("n_genes", "median"),
        elbo_train_median=("final_elbo_train", "median"),
        elbo_train_min=("final_elbo_train", "min"),
        elbo_train_max=("final_elbo_train", "max"),
        elbo_validation_median=("final_elbo_validation", "median"),
        seconds_median=("seconds", "median"),
    )


def write(table: pd.DataFrame, args) -> None:
    import platform

    import torch
    from _provenance import provenance

    RESULTS.mkdir(parents=True, exist_ok=True)
    table.to_csv(CSV, index=False)
    summary = summarize(table)
    columns = [
        "dataset",
        "seed",
        "n_cells",
        "epochs_logged",
        "nonfinite_logged_values",
        "latents_finite",
        "pi_finite",
        "final_elbo_train",
        "final_elbo_validation",
        "n_edges",
        "seconds",
        "nan",
    ]
    lines = [
        "# Robustness: seeds of a short training, any NaN?",
        "",
        provenance(),
        "",
        f"Generated by `python benchmarks/robustness.py` (max_epochs={args.max_epochs}, "
        f"{args.threads} torch thread(s), {platform.machine()} CPU, torch {torch.__version__}). "
        "Default sVAE+ hyperparameters, 15 latents, validation every epoch. `simulation`: the "
        f"paper's setting (K = 100, p = 15, 100 genes) with {args.n_cells_per_perturbation} "
        "cells per perturbation, data and training seeded by `seed`; `norman`: the bundled "
        "Norman 2019 subset, training seeded by `seed`.",
        "",
        "A run counts as NaN if training stopped with `NonFiniteLossError` or any logged loss, "
        "latent or mask probability is not finite. `n_edges` counts perturbation→latent edges "
        "with pi > 0.5 (of perturbations × 15). Masks start with every edge on, and runs this "
        "short end before sparsity prunes them: they test the KL warm-up, early training and "
        "the frozen-mask phase, not the late phase where probabilities approach 0 (the "
        "150-epoch test `test_sparsity_prunes_edges_on_a_clear_signal` runs that phase).",
        "",
        "## Summary",
        "",
        summary.round(2).to_markdown(),
        "",
        "## Every run",
        "",
        table[columns].round(2).to_markdown(index=False),
        "",
    ]
    errors = table[table["error"] != ""]
    if len(errors):
        lines += ["## Errors", ""] + [
            f"- {r.dataset} seed {r.seed}: {r.error}" for r in errors.itertuples()
        ]
    (RESULTS / "robustness.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(20)))
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--n-cells-per-perturbation", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--from-csv", action="store_true", help="only rewrite robustness.md from the CSV"
    )
    args = parser.parse_args()
    if args.from_csv:
        table = pd.read_csv(CSV, keep_default_na=False, na_values=[""])
        table["error"] = table["error"].fillna("")
        write(table, args)
        return

    import torch

    from sparsevae._quiet import silence_lightning

    torch.set_num_threads(args.threads)
    silence_lightning()
    rows = []
    for dataset in args.datasets:
        for seed in args.seeds:
            row = run(dataset, seed, args.max_epochs, args.n_cells_per_perturbation)
            rows.append(row)
            print(
                f"{dataset} seed {seed}: nan={row['nan']} elbo={row['final_elbo_train']:.2f} "
                f"({row['seconds']} s)",
                flush=True,
            )
    table = pd.DataFrame(rows)
    if CSV.exists():  # keep the other datasets' rows
        previous = pd.read_csv(CSV, keep_default_na=False, na_values=[""])
        previous["error"] = previous["error"].fillna("")
        table = pd.concat([previous[~previous["dataset"].isin(args.datasets)], table])
    table["dataset"] = pd.Categorical(table["dataset"], categories=DATASETS)
    table = table.sort_values(["dataset", "seed"]).reset_index(drop=True)
    table["dataset"] = table["dataset"].astype(str)
    write(table, args)
    print(summarize(table).round(2).to_string())


if __name__ == "__main__":
    main()
