"""Zero-shot pairs on the bundled Norman 2019 subset: additive sVAE+ vs one label per pair.

Held out: pairs whose two singles are trained as singles. Each held-out pair's cells are split
in half: the *transfer* half teaches the one-label-per-combination model the pair's shift (the
paper's protocol, ``model.transfer``), the *evaluation* half is scored by both models.

- **additive**: ``setup_anndata(..., combination_delimiter="+")``; the pair's prior is the sum
  of its singles' sparse shifts, with no transfer (zero-shot).
- **one label**: ``combination_delimiter=None`` (the published model); the pair is a new label,
  learned by transfer from the transfer half.

Per pair: interventional NLL (mean over evaluation cells) and the Pearson correlation of the
predicted mean change vs control (``get_treatment_effect`` on the control cells) with the
observed one (mean normalised expression of the evaluation cells minus control's), over all
genes and over the 20 genes with the largest observed change. Seen singles' correlations are
reported too.

Usage::

    python benchmarks/combinations.py                  # 200 epochs, seed 0
    python benchmarks/combinations.py --max-epochs 50 --n-particles 50
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scvi
import torch

import sparsevae as sv
from sparsevae._quiet import QUIET_TRAINER, silence_lightning

RESULTS = Path(__file__).parent / "results"
HELD_OUT = ("KLF1+MAP2K6", "MAP2K3+SLC38A2", "MAPK1+TGFBR2")
KEY, CONTROL = "perturbation", "control"


def normalised_mean(adata) -> np.ndarray:
    counts = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    return (counts / counts.sum(axis=1, keepdims=True)).mean(axis=0)


def correlations(predicted: np.ndarray, observed: np.ndarray, n_top: int = 20) -> tuple:
    top = np.argsort(-np.abs(observed))[:n_top]
    return (
        float(np.corrcoef(predicted, observed)[0, 1]),
        float(np.corrcoef(predicted[top], observed[top])[0, 1]),
    )


def fit(adata, delimiter, args) -> sv.SparseVAE:
    scvi.settings.seed = args.seed
    sv.SparseVAE.setup_anndata(
        adata, perturbation_key=KEY, control=CONTROL, combination_delimiter=delimiter
    )
    model = sv.SparseVAE(adata, n_latent=args.n_latent)
    model.train(max_epochs=args.max_epochs, **QUIET_TRAINER)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--n-latent", type=int, default=10)
    parser.add_argument("--n-particles", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    silence_lightning()
    start = time.perf_counter()

    adata = sv.data.norman2019_subset()
    labels = adata.obs[KEY].astype(str)
    rng = np.random.default_rng(args.seed)
    transfer_cells, eval_cells = [], []
    for pair in HELD_OUT:
        cells = rng.permutation(np.flatnonzero(labels == pair))
        transfer_cells.extend(cells[: len(cells) // 2])
        eval_cells.extend(cells[len(cells) // 2 :])
    train = adata[~labels.isin(HELD_OUT).to_numpy()].copy()
    transfer = adata[np.sort(transfer_cells)].copy()
    evaluation = adata[np.sort(eval_cells)].copy()
    control = train[train.obs[KEY] == CONTROL].copy()
    control_mean = normalised_mean(control)

    additive = fit(train.copy(), "+", args)
    one_label = fit(train.copy(), None, args).transfer(transfer, sparse=False)
    models = {"additive sVAE+ (zero-shot)": additive, "one label per pair (transfer)": one_label}

    rows = []
    eval_labels = evaluation.obs[KEY].astype(str).to_numpy()
    for name, model in models.items():
        nll = model.get_interventional_nll(evaluation.copy(), n_particles=args.n_particles)
        for pair in HELD_OUT:
            cells = eval_labels == pair
            observed = normalised_mean(evaluation[cells]) - control_mean
            predicted = model.get_treatment_effect(control.copy(), perturbation=pair).to_numpy()
            r_all, r_top = correlations(predicted, observed)
            rows.append(
                {
                    "method": name,
                    "pair": pair,
                    "n_cells": int(cells.sum()),
                    "interventional_nll": float(nll[cells].mean()),
                    "pearson_all_genes": r_all,
                    "pearson_top20_de": r_top,
                }
            )
    table = pd.DataFrame(rows)

    singles = [p for p in additive.perturbation_names if (labels == p).sum() > 0]
    single_rows = []
    for single in singles:
        observed = normalised_mean(train[train.obs[KEY] == single]) - control_mean
        predicted = additive.get_treatment_effect(control.copy(), perturbation=single).to_numpy()
        r_all, r_top = correlations(predicted, observed)
        single_rows.append({"single": single, "pearson_all_genes": r_all, "pearson_top20": r_top})
    single_table = pd.DataFrame(single_rows)
    seconds = time.perf_counter() - start

    summary = table.groupby("method")[
        ["interventional_nll", "pearson_all_genes", "pearson_top20_de"]
    ].mean()
    RESULTS.mkdir(exist_ok=True)
    text = [
        "# Zero-shot pairs on the Norman 2019 subset",
        "",
        f"`python benchmarks/combinations.py --max-epochs {args.max_epochs} --n-latent "
        f"{args.n_latent} --n-particles {args.n_particles} --seed {args.seed}`; "
        f"{args.threads} torch thread(s); {seconds:.0f} s in all.",
        "",
        f"Held-out pairs (both singles trained as singles): {', '.join(HELD_OUT)}. Half of each "
        "pair's cells teach the one-label model the pair by transfer; the other half is scored.",
        "Interventional NLL: nats per cell, lower is better. Pearson: predicted vs observed mean "
        "change of normalised expression vs control, over all 500 genes and the 20 genes with "
        "the largest observed change.",
        "",
        "## Per pair",
        "",
        table.to_markdown(index=False, floatfmt=".3f"),
        "",
        "## Mean over pairs",
        "",
        summary.to_markdown(floatfmt=".3f"),
        "",
        "## Seen singles (additive model): predicted vs observed mean change",
        "",
        single_table.to_markdown(index=False, floatfmt=".3f"),
        "",
        f"Mean over {len(single_table)} singles: all genes "
        f"{single_table['pearson_all_genes'].mean():.3f}, top 20 "
        f"{single_table['pearson_top20'].mean():.3f}.",
        "",
    ]
    (RESULTS / "combinations.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
