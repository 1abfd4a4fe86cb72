"""Held-out singles of the Norman report, and the generic response they share.

Reads the per-perturbation rows of a held-out report (``sparsevae report ... --seeds 0 1 2 3 4``,
default ``results/norman2019_svae_5seeds/report.csv``) and keeps the single perturbations (labels
without ``+``): mean of each predictor's metrics over those perturbations and seeds, and
sVAE+'s Pearson over all genes per seed. Then, from the bundled Norman subset itself (no
model): the generic response, the mean over perturbations of each perturbation's change of
mean log1p(counts per 10,000) from control (float64), its largest genes, the correlation of
each perturbation's observed change with it over all genes, and the median counts per cell of
perturbed and control cells. Writes ``results/heldout_singles.md``; no training, seconds.

Usage::

    python benchmarks/heldout_singles.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ["pearson_all_genes", "pearson_top20_de", "mse_top20_de", "l2_top1000_expressed"]


def generic_response() -> tuple[pd.Series, pd.Series, float, float]:
    """The mean change of all perturbations from control, each one's correlation with it."""
    import sparsevae as sv

    adata = sv.data.norman2019_subset()
    counts = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    counts = counts.astype(np.float64)
    total = counts.sum(axis=1, keepdims=True)
    values = np.log1p(1e4 * counts / np.where(total > 0, total, 1))
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    keep = total.ravel() > 0
    means = pd.DataFrame(values[keep], columns=adata.var_names).groupby(labels[keep]).mean()
    change = means.drop(index="control") - means.loc["control"]
    generic = change.mean()
    correlation = change.apply(lambda row: np.corrcoef(row, generic)[0, 1], axis=1)
    depth = total.ravel()
    return (
        generic,
        correlation,
        float(np.median(depth[labels != "control"])),
        float(np.median(depth[labels == "control"])),
    )


def main() -> None:
    from _provenance import provenance

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--report", type=Path, default=RESULTS / "norman2019_svae_5seeds" / "report.csv"
    )
    args = parser.parse_args()
    report = pd.read_csv(args.report)
    singles = report[~report["perturbation"].astype(str).str.contains("+", regex=False)]
    table = singles.groupby("method", sort=False)[METRICS].mean()
    model = singles[singles["kind"] == "model"]
    per_seed = model.groupby(["method", "seed"])["pearson_all_genes"].mean().unstack("seed")
    per_perturbation = (
        singles.groupby(["perturbation", "method"])["pearson_all_genes"].mean().unstack("method")
    )
    generic, correlation, perturbed_depth, control_depth = generic_response()
    largest = generic.reindex(generic.abs().sort_values(ascending=False).index).head(12)
    lines = [
        "# Held-out singles on the Norman subset, and the generic response",
        "",
        provenance(),
        "",
        f"From `{args.report.relative_to(RESULTS.parent.parent)}`: the "
        f"{singles['perturbation'].nunique()} single perturbations (no `+`), "
        f"{singles['seed'].nunique()} seeds.",
        "",
        "## Mean over single perturbations and seeds",
        "",
        table.to_markdown(floatfmt=".3f"),
        "",
        "## Pearson delta over all genes per seed (mean over singles)",
        "",
        per_seed.to_markdown(floatfmt=".3f"),
        "",
        "## Pearson delta over all genes per single (mean over seeds)",
        "",
        per_perturbation.to_markdown(floatfmt=".3f"),
        "",
        "## The generic response (bundled data, no model)",
        "",
        "Mean over the perturbations of each one's change of mean log1p(counts per 10,000) from "
        "control; its 12 largest genes:",
        "",
        largest.rename("change").to_frame().to_markdown(floatfmt=".4f"),
        "",
        "Correlation of each perturbation's observed change with it, over all genes:",
        "",
        correlation.sort_values().rename("correlation").to_frame().to_markdown(floatfmt=".3f"),
        "",
        f"Median counts per cell: perturbed cells {perturbed_depth:g}, control cells "
        f"{control_depth:g}.",
        "",
    ]
    (RESULTS / "heldout_singles.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
