"""Interventional NLL of held-out perturbations, methods side by side per split."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import seaborn as sns

from ._utils import finish, new_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_NLL = "interventional_nll"


def interventional_nll(
    report: pd.DataFrame,
    *,
    relative_to: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Interventional NLL per split (x) and method (colour), lower is better.

    Each point is the mean over the split's held-out perturbations (and seeds); error bars are
    the standard error over them. Perturbations differ far more from each other than methods
    do, so ``relative_to="vae"`` plots each method's NLL minus that method's on the same
    perturbation and seed (a paired difference; below 0 means better than the reference).

    Parameters
    ----------
    report
        Output of :func:`sparsevae.evaluate.interventional_nll_report`.
    relative_to
        A method of ``report`` to subtract, or ``None`` for the raw NLL.
    ax, show, save
        As in scanpy: draw into ``ax``; save to ``save``; show unless saving (``show=None``).
    """
    missing = {"method", "seed", "split", "perturbation", _NLL} - set(report.columns)
    if missing:
        raise KeyError(
            f"report lacks the column(s) {sorted(missing)}; pass the DataFrame returned by "
            "sv.evaluate.interventional_nll_report."
        )
    if "kind" in report.columns:  # baselines predict effects; they have no likelihood
        report = report[report["kind"] != "baseline"]
    data = report.dropna(subset=[_NLL])
    label = "interventional NLL (nats per cell)"
    if relative_to is not None:
        methods = list(data["method"].unique())
        if relative_to not in methods:
            raise ValueError(f"relative_to={relative_to!r} is not a method of report: {methods}.")
        keys = ["seed", "split", "perturbation"]
        reference = data.loc[data["method"] == relative_to, [*keys, _NLL]]
        data = data.merge(reference, on=keys, suffixes=("", "_reference"))
        data[_NLL] = data[_NLL] - data[f"{_NLL}_reference"]
        label = f"interventional NLL minus {relative_to}'s"
    methods = list(dict.fromkeys(report["method"]))
    splits = list(dict.fromkeys(report["split"]))
    ax = new_axes(ax, (max(4.0, 1.2 * len(splits) * max(1, len(methods)) / 3 + 2), 4.0))
    # Points, not bars: NLLs are large numbers whose differences matter, and a bar's baseline
    # at 0 would hide them.
    sns.pointplot(
        data=data,
        x="split",
        y=_NLL,
        hue="method",
        order=splits,
        hue_order=methods,
        errorbar="se",
        dodge=0.5 if len(methods) > 1 else False,
        linestyle="none",
        capsize=0.1,
        ax=ax,
    )
    if relative_to is not None:
        ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_ylabel(label)
    ax.set_xlabel("held-out split")
    ax.tick_params(axis="x", rotation=30 if len(splits) > 4 else 0)
    ax.legend(title="method", frameon=False, fontsize="small")
    return finish(ax, show, save)
