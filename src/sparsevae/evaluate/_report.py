"""The held-out report as Markdown: the tables of :func:`interventional_nll_report`."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ._heldout import summarize_effect_correlations, summarize_interventional_nll


def report_markdown(
    report: pd.DataFrame,
    *,
    title: str = "Held-out interventions",
    description: str = "",
    figures: Sequence[str] = (),
) -> str:
    """The report of :func:`interventional_nll_report` as a Markdown document.

    Sections: mean interventional NLL per held-out split, the splits, the NLL per
    perturbation, predicted vs observed mean change (per method and per perturbation), the
    perturbations that could not be evaluated, and ``figures`` (image paths). ``sparsevae
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
    per_perturbation = report.pivot_table(
        index=["split", "perturbation"], columns="method", values="interventional_nll"
    )
    counts = report.drop_duplicates(["split", "perturbation"]).set_index(["split", "perturbation"])[
        ["n_transfer_cells", "n_cells"]
    ]
    per_perturbation = (
        counts.astype(int)
        .join(per_perturbation)
        .rename(columns={"n_cells": "n_eval_cells"})
        .reset_index()
    )
    effects = summarize_effect_correlations(report)
    per_perturbation_effects = (
        report.groupby(["split", "perturbation", "method"])["pearson_all_genes"]
        .mean()  # over seeds
        .unstack("method")[list(effects.index)]
        .reset_index()
    )
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
        "Pearson correlation of each transferred model's predicted change of mean log1p(counts "
        "per 10,000) from control (on training control cells) with the evaluation cells' "
        "observed change, over all genes and over the 20 genes with the largest observed "
        "change; mean over held-out perturbations and seeds. NaN for the VAE and beta-VAE, "
        "which learn no shift to predict from, and (`n_no_change`) where a model predicts no "
        "change.",
        "",
        effects.to_markdown(floatfmt=".3f"),
        "",
        "Per perturbation (all genes):",
        "",
        per_perturbation_effects.to_markdown(index=False, floatfmt=".3f"),
        "",
    ]
    if len(notes):
        lines += ["## Not evaluated", "", notes.to_markdown(index=False), ""]
    if figures:
        lines += ["## Figures", "", *[f"![{f}]({f})" for f in figures], ""]
    return "\n".join(lines)
