"""The held-out report as Markdown: the tables of :func:`interventional_nll_report`."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ._heldout import summarize_interventional_nll
from ._heldout_effects import summarize_effect_correlations


def report_markdown(
    report: pd.DataFrame,
    *,
    title: str = "Held-out interventions",
    description: str = "",
    figures: Sequence[str] = (),
) -> str:
    """The report of :func:`interventional_nll_report` as a Markdown document.

    Sections: mean interventional NLL per held-out split, the splits, the NLL per
    perturbation, predicted vs observed mean change (per method and per perturbation),
    cell-eval's metrics (when the report has them: ``cell_eval=...``), the perturbations that
    could not be evaluated, and ``figures`` (image paths). ``sparsevae
    report`` writes it to ``report.md``.

    Parameters
    ----------
    report
        Output of :func:`interventional_nll_report` (its ``attrs["splits"]`` included).
    title
        The document's heading.
    description
        A paragraph under the heading (the data and settings of the run).
    figures
        Paths of figures to show at the end, relative to where the document is written.

    Returns
    -------
    The Markdown text.
    """
    summary = summarize_interventional_nll(report)
    models = report[report["kind"] != "baseline"] if "kind" in report.columns else report
    per_perturbation = models.pivot_table(
        index=["split", "perturbation"], columns="method", values="interventional_nll"
    )
    counts = models.drop_duplicates(["split", "perturbation"]).set_index(["split", "perturbation"])[
        ["n_transfer_cells", "n_cells"]
    ]
    per_perturbation = (
        counts.astype(int)
        .join(per_perturbation)
        .rename(columns={"n_cells": "n_eval_cells"})
        .reset_index()
    )
    effects = summarize_effect_correlations(report)
    per_perturbation_effects = _per_perturbation_effects(report, list(effects.index))
    notes = report.loc[report["note"] != "", ["split", "perturbation", "note"]].drop_duplicates()
    splits = {name: split["heldout"] for name, split in report.attrs["splits"].items()}
    lines = [
        f"# {title}",
        "",
        *([description, ""] if description else []),
        "Interventional NLL = negative IWELBO of each evaluation cell (nats per cell, lower is "
        "better), averaged per perturbation, then over perturbations.",
        "",
        "## Mean interventional NLL per held-out split",
        "",
        summary.to_markdown(floatfmt=".2f"),
        "",
        "## Held-out splits",
        "",
        *[f"- **{name}** ({len(held)}): {', '.join(held)}" for name, held in splits.items()],
        "",
        "## Per perturbation",
        "",
        per_perturbation.to_markdown(index=False, floatfmt=".2f"),
        "",
        "## Predicted vs observed mean change",
        "",
        "Each method's predicted change of mean log1p(counts per 10,000) from control (counts "
        "drawn from the transferred model on training control cells, shifts from each "
        "perturbation's own cells) against the evaluation cells' observed change, beside "
        "baselines that use observed cells only: no change, the mean change of the training "
        "perturbations, the split-half ceiling (the perturbation's transfer cells), and for "
        "combinations the additive baseline (observed change of A + of B). Pearson delta over "
        "all genes and the 20 genes with the largest observed change (higher is better), MSE "
        "over those 20 and L2 over the 1,000 most expressed genes (lower is better); mean over "
        "held-out perturbations and seeds. `n_no_change`: rows whose prediction does not vary "
        "(no Pearson).",
        "",
        effects.to_markdown(floatfmt=".3f"),
        "",
        "Per perturbation: Pearson delta over all genes, mean over seeds, with the 95% "
        "bootstrap interval over evaluation cells of the first seed:",
        "",
        per_perturbation_effects.to_markdown(index=False),
        "",
    ]
    cell_eval = [column for column in report.columns if column.startswith("cell_eval_")]
    if cell_eval:
        scored = report.dropna(subset=cell_eval, how="all")
        table = scored.groupby("method")[cell_eval].mean()
        table.columns = [column.removeprefix("cell_eval_") for column in cell_eval]
        table = table.reindex([m for m in effects.index if m in table.index])
        lines += [
            "## Scored by cell-eval",
            "",
            "The same held-out perturbations scored by cell-eval, the Virtual Cell Challenge's "
            "scorer (`sv.evaluate.score_with_cell_eval`): each method's predicted cells (one "
            "negative binomial draw per control cell, `predict_perturbations`) and the "
            "baselines as cells (split-half: the transfer cells; mean and additive: the "
            "control cells moved by their change), against the evaluation cells, both beside "
            "the same training control cells, each cell as log1p(counts per 10,000). Mean "
            "over held-out perturbations and seeds. `pearson_delta`, `overlap_at_N`, "
            "`precision_at_N`, `discrimination_score_l1`: higher is better; `mse`, `mae`: "
            "lower is better; `de_nsig_counts_*`: DE genes found in the real and predicted "
            "cells (a baseline built by moving control cells has no within-group spread, so "
            "its DE counts and DE metrics are not comparable with a model's).",
            "",
            table.to_markdown(floatfmt=".3f"),
            "",
        ]
    if len(notes):
        lines += ["## Not evaluated", "", notes.to_markdown(index=False), ""]
    if figures:
        lines += ["## Figures", "", *[f"![{f}]({f})" for f in figures], ""]
    return "\n".join(lines)


def _per_perturbation_effects(report: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """``value [low, high]`` of the Pearson over all genes per perturbation and predictor."""
    column = "pearson_all_genes"
    scored = report.dropna(subset=["l2_top1000_expressed"])
    if scored.empty:
        return pd.DataFrame(columns=["split", "perturbation"])
    first = scored[scored["seed"] == scored["seed"].min()].set_index(
        ["split", "perturbation", "method"]
    )
    mean = scored.groupby(["split", "perturbation", "method"])[column].mean()
    text = pd.Series(
        [
            f"{value:.3f} [{first.loc[key, f'{column}_low']:.3f}, "
            f"{first.loc[key, f'{column}_high']:.3f}]"
            if key in first.index and pd.notna(value)
            else ("n/a" if pd.isna(value) else f"{value:.3f}")
            for key, value in mean.items()
        ],
        index=mean.index,
    )
    return text.unstack("method").reindex(columns=order).reset_index()
