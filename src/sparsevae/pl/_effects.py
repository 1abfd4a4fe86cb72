"""Predicted vs observed change of held-out perturbations: methods and baselines side by side."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from ._utils import finish_many

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_METRICS = ("pearson_all_genes", "pearson_top20_de", "mse_top20_de", "l2_top1000_expressed")
_LABELS = {
    "pearson_all_genes": "Pearson delta, all genes (higher is better)",
    "pearson_top20_de": "Pearson delta, top 20 DE (higher is better)",
    "mse_top20_de": "MSE, top 20 DE (lower is better)",
    "l2_top1000_expressed": "L2, most expressed genes (lower is better)",
}


def effect_metrics(
    report: pd.DataFrame,
    *,
    metrics: Sequence[str] = _METRICS,
    ax: Sequence[Axes] | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> list[Axes] | None:
    """Effect metrics per held-out perturbation, one panel per metric, methods beside baselines.

    Each point is one held-out perturbation (mean over seeds); the box spans its quartiles.
    Methods come first, then the baselines (no change, mean of training perturbations, the
    split-half ceiling, and the additive baseline for combinations), so that a method's
    distance to the strongest simple rival reads at a glance.

    Parameters
    ----------
    report
        Output of :func:`sparsevae.evaluate.interventional_nll_report` (with a control label).
    metrics
        Columns of ``report`` to draw, one panel each.
    ax
        One axes per metric to draw into (default: a new figure).
    show, save
        As in scanpy: save to ``save``; show unless saving (``show=None``).
    """
    missing = {"method", "kind", "perturbation", *metrics} - set(report.columns)
    if missing:
        raise KeyError(
            f"report lacks the column(s) {sorted(missing)}; pass the DataFrame returned by "
            "sv.evaluate.interventional_nll_report."
        )
    data = (
        report.dropna(subset=[metrics[-1]])
        .groupby(["kind", "method", "split", "perturbation"], sort=False)[list(metrics)]
        .mean()
        .reset_index()
    )
    if data.empty:
        raise ValueError(
            "report has no effect metrics (they need a control label); nothing to plot."
        )
    order = list(dict.fromkeys(data.sort_values("kind", kind="stable", ascending=False)["method"]))
    if ax is None:
        height = 1.2 + 0.35 * len(order)
        _, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), height), sharey=True)
        axes = [axes] if len(metrics) == 1 else list(axes)
    else:
        axes = list(ax)
        if len(axes) != len(metrics):
            raise ValueError(f"ax has {len(axes)} axes for {len(metrics)} metrics.")
    for panel, metric in zip(axes, metrics, strict=True):
        sns.boxplot(
            data=data, x=metric, y="method", order=order, color="0.9", fliersize=0, ax=panel
        )
        sns.stripplot(data=data, x=metric, y="method", order=order, hue="kind", size=3, ax=panel)
        panel.set_xlabel(_LABELS.get(metric, metric))
        panel.set_ylabel("")
        legend = panel.get_legend()
        if legend is not None and panel is not axes[-1]:
            legend.remove()
    return finish_many(axes, show, save)
