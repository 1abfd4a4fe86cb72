"""Zero-shot pairs on the bundled Norman 2019 subset: additive sVAE+ vs one label per pair.

Held out: pairs whose two singles are trained as singles. Each held-out pair's cells are split
in half: the *transfer* half teaches the one-label-per-combination model the pair's shift (the
paper's protocol, ``model.transfer``), the *evaluation* half is scored by both models.

- **additive**: ``setup_anndata(..., combination_delimiter="+")``; the pair's prior is the sum
  of its singles' sparse shifts, with no transfer (zero-shot).
- **one label**: ``combination_delimiter=None`` (the published model); the pair is a new label,
  learned by transfer from the transfer half.
- **additive, pair as a label**: the additive model's own networks, with each pair renamed
  (``A&B``) so that transfer learns it as a new perturbation from the transfer half: the same
  encoder and decoder as zero-shot, only the pair's prior differs.

Per pair: interventional NLL (mean over evaluation cells) and the Pearson correlation of the
predicted mean change vs control (``get_treatment_effect`` on the control cells, log1p of
counts per 10,000) with the observed one (the same statistic of the evaluation cells minus
control's), over all genes and over the 20 genes with the largest observed change. Seen
singles' correlations are reported too. A correlation is NaN when the model predicts no change
(a shift with no target latent).

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
from sparsevae._constants import TARGET_SUM
from sparsevae._quiet import QUIET_TRAINER, silence_lightning
from sparsevae.evaluate import effect_correlations, mean_log_expression

RESULTS = Path(__file__).parent / "results"
KEY, CONTROL = "perturbation", "control"
ZERO_SHOT = "additive sVAE+ (zero-shot)"
ONE_LABEL = "one label per pair (transfer)"
PAIR_TRANSFER = "additive sVAE+, pair as a label (transfer)"


def relabel(adata, names: dict[str, str]):
    """A copy whose perturbation labels are renamed by ``names`` (others kept)."""
    out = adata.copy()
    out.obs[KEY] = out.obs[KEY].astype(str).replace(names)
    return out


def eligible_pairs(labels: pd.Series) -> list[str]:
    """Combinations whose every single also has cells of its own: those a zero-shot model can
    predict (on the bundled subset: KLF1+MAP2K6, KLF1+TGFBR2, MAP2K3+MAP2K6, MAP2K3+SLC38A2,
    MAPK1+TGFBR2).
    """
    names = set(labels)
    return sorted(label for label in names if "+" in label and set(label.split("+")) <= names)


def correlations(predicted: np.ndarray, observed: np.ndarray) -> tuple[float, float]:
    """Pearson over all genes and the top 20 DE genes (NaN where nothing is predicted)."""
    r = effect_correlations(predicted, observed)
    return r["pearson_all_genes"], r["pearson_top20_de"]


def score(
    model, data, labels: dict[str, str], *, evaluation, control, control_mean, n_particles
) -> list:
    """Per held-out pair: interventional NLL of its evaluation cells (``data``: ``evaluation``,
    labelled as the model knows the pair, ``labels[pair]``) and effect correlations.
    """
    nll = model.get_interventional_nll(data.copy(), n_particles=n_particles)
    eval_labels = evaluation.obs[KEY].astype(str).to_numpy()
    rows = []
    for pair, label in labels.items():
        cells = eval_labels == pair
        observed = mean_log_expression(evaluation[cells]) - control_mean
        r_all, r_top = correlations(effect(model, control, label), observed)
        rows.append(
            {
                "pair": pair,
                "n_cells": int(cells.sum()),
                "n_target_latents": n_targets(model, label),
                "interventional_nll": float(nll[cells].mean()),
                "pearson_all_genes": r_all,
                "pearson_top20_de": r_top,
            }
        )
    return rows


def effect(model, control, perturbation) -> np.ndarray:
    return model.get_treatment_effect(
        control.copy(), perturbation=perturbation, library_size=TARGET_SUM, log1p=True
    ).to_numpy()


def n_targets(model, perturbation) -> int:
    return int((model.get_combination_shift(perturbation).abs() > 0).sum())


def fit(adata, delimiter, args, seed) -> sv.SparseVAE:
    scvi.settings.seed = seed
    sv.SparseVAE.setup_anndata(
        adata, perturbation_key=KEY, control=CONTROL, combination_delimiter=delimiter
    )
    model = sv.SparseVAE(adata, n_latent=args.n_latent, alpha=args.alpha)
    model.train(max_epochs=args.max_epochs, **QUIET_TRAINER)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--n-latent", type=int, default=10)
    parser.add_argument("--n-particles", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="Beta(1, alpha) sparsity of both models (default: their number of perturbations)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--pairs",
        nargs="+",
        default=None,
        help="pairs to hold out (default: every pair whose singles have cells of their own)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    silence_lightning()
    start = time.perf_counter()

    adata = sv.data.norman2019_subset()
    # Half of the bundled subset's genes have no counts at all; they carry no effect to
    # correlate with, so "all genes" means all genes with a count.
    expressed = np.asarray(adata.X.sum(axis=0)).ravel() > 0
    adata = adata[:, expressed].copy()
    labels = adata.obs[KEY].astype(str)
    eligible = eligible_pairs(labels)
    held_out = eligible if args.pairs is None else args.pairs
    wrong = sorted(set(held_out) - set(eligible))
    if wrong:
        raise SystemExit(
            f"--pairs {wrong}: not pairs whose singles have cells of their own; "
            f"choose from {eligible}"
        )
    rows, single_rows = [], []
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        transfer_cells, eval_cells = [], []
        for pair in held_out:
            cells = rng.permutation(np.flatnonzero(labels == pair))
            transfer_cells.extend(cells[: len(cells) // 2])
            eval_cells.extend(cells[len(cells) // 2 :])
        train = adata[~labels.isin(held_out).to_numpy()].copy()
        transfer = adata[np.sort(transfer_cells)].copy()
        evaluation = adata[np.sort(eval_cells)].copy()
        control = train[train.obs[KEY] == CONTROL].copy()
        control_mean = mean_log_expression(control)

        additive = fit(train.copy(), "+", args, seed)
        one_label = fit(train.copy(), None, args, seed).transfer(transfer, sparse=False)
        same = {pair: pair for pair in held_out}
        context = {
            "evaluation": evaluation,
            "control": control,
            "control_mean": control_mean,
            "n_particles": args.n_particles,
        }
        scored = {
            ZERO_SHOT: score(additive, evaluation, same, **context),
            ONE_LABEL: score(one_label, evaluation, same, **context),
        }
        # The zero-shot model's own networks with each pair learned as a label of its own from
        # its transfer cells: the same encoder and decoder, only the pair's prior differs.
        as_label = {pair: pair.replace("+", "&") for pair in held_out}
        pair_transfer = additive.transfer(relabel(transfer, as_label), sparse=False)
        scored[PAIR_TRANSFER] = score(
            pair_transfer, relabel(evaluation, as_label), as_label, **context
        )
        for name, pair_rows in scored.items():
            rows += [{"method": name, "seed": seed, **row} for row in pair_rows]
        for single in additive.perturbation_names:
            if (labels == single).sum() == 0:
                continue  # only seen in pairs
            observed = mean_log_expression(train[train.obs[KEY] == single]) - control_mean
            r_all, r_top = correlations(effect(additive, control, single), observed)
            single_rows.append(
                {
                    "seed": seed,
                    "single": single,
                    "n_target_latents": n_targets(additive, single),
                    "pearson_all_genes": r_all,
                    "pearson_top20_de": r_top,
                }
            )
    table = pd.DataFrame(rows)
    single_table = pd.DataFrame(single_rows)
    seconds = time.perf_counter() - start

    # A model that predicts no change gets correlation 0 in the second pair of means, so
    # predicting nothing is not rewarded by being left out.
    filled = table.assign(
        pearson_all_genes_nan_as_0=table["pearson_all_genes"].fillna(0.0),
        pearson_top20_de_nan_as_0=table["pearson_top20_de"].fillna(0.0),
    )
    summary = filled.groupby("method")[
        [
            "interventional_nll",
            "pearson_all_genes",
            "pearson_top20_de",
            "pearson_all_genes_nan_as_0",
            "pearson_top20_de_nan_as_0",
        ]
    ].mean()
    wide = table.pivot_table(index=["seed", "pair"], columns="method", values="interventional_nll")
    n_lower = int((wide[ZERO_SHOT] < wide[ONE_LABEL]).sum())
    RESULTS.mkdir(exist_ok=True)
    name = "combinations" if args.alpha is None else f"combinations_alpha{args.alpha:g}"
    out = RESULTS / f"{name}.md"
    text = [
        "# Zero-shot pairs on the Norman 2019 subset",
        "",
        f"`python benchmarks/combinations.py --max-epochs {args.max_epochs} --n-latent "
        f"{args.n_latent} --n-particles {args.n_particles} --seeds "
        f"{' '.join(map(str, args.seeds))}"
        f"{'' if args.alpha is None else f' --alpha {args.alpha:g}'}"
        f"{'' if args.pairs is None else ' --pairs ' + ' '.join(args.pairs)}`; "
        f"{args.threads} torch thread(s); {seconds:.0f} s in all.",
        "",
        f"Held-out pairs (both singles trained as singles): {', '.join(held_out)}. Half of each "
        "pair's cells teach the one-label model the pair by transfer; the other half is scored.",
        "Interventional NLL: nats per cell, lower is better. Pearson: predicted vs observed mean "
        f"change of log1p(counts per 10,000) vs control, over all {adata.n_vars} genes with "
        "counts (the bundled subset's other genes have none) and the 20 genes "
        "with the largest observed change; NaN where the model predicts no change (no target "
        "latent). Means below skip NaN.",
        "",
        "## Per pair",
        "",
        table.to_markdown(index=False, floatfmt=".3f"),
        "",
        "## Mean over pairs and seeds",
        "",
        summary.to_markdown(floatfmt=".3f"),
        "",
        f"{ZERO_SHOT} has a lower interventional NLL than {ONE_LABEL} on {n_lower} of {len(wide)} "
        f"(seed, pair) cases.",
        "",
        "## Seen singles (additive model): predicted vs observed mean change",
        "",
        single_table.to_markdown(index=False, floatfmt=".3f"),
        "",
        f"Mean over {single_table['pearson_all_genes'].notna().sum()} (single, seed) rows with "
        f"a predicted change (of {len(single_table)}): all genes "
        f"{single_table['pearson_all_genes'].mean():.3f}, top 20 "
        f"{single_table['pearson_top20_de'].mean():.3f}.",
        "",
    ]
    out.write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
