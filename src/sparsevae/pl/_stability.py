"""Plots of :func:`sparsevae.tl.edge_stability`: edge frequencies and the sparsity path."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from sparsevae.tl._stability import EDGES_KEY, PARAMS_KEY, STABLE_FREQUENCY

from ._mask import _cluster_order, _draw
from ._utils import finish_many

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes


def _read(adata: AnnData, key: str) -> tuple[pd.DataFrame, dict]:
    results = adata.uns.get(key)
    if not isinstance(results, dict) or EDGES_KEY not in results:
        raise KeyError(
            f"adata.uns[{key!r}][{EDGES_KEY!r}] not found; run sv.tl.edge_stability(adata, "
            f"perturbation_key=..., key_added={key!r}) first."
        )
    edges = pd.DataFrame(results[EDGES_KEY])
    edges["perturbation"] = edges["perturbation"].astype(str)
    edges["latent"] = edges["latent"].astype(str)
    return edges, dict(results.get(PARAMS_KEY, {}))


def _frequency_matrix(edges: pd.DataFrame, alpha: float, latents: list[str]) -> pd.DataFrame:
    """Perturbations × latents frequencies at ``alpha``, rows in the table's order."""
    rows = edges[np.isclose(edges["alpha"], alpha)]
    matrix = rows.pivot(index="perturbation", columns="latent", values="frequency")
    return matrix.reindex(index=rows["perturbation"].unique(), columns=latents).astype(float)


def edge_stability(
    adata: AnnData,
    key: str = "edge_stability",
    *,
    alpha: float | None = None,
    threshold: float = STABLE_FREQUENCY,
    cluster: bool = True,
    ax: Sequence[Axes] | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> list[Axes] | None:
    """Edge frequencies (perturbations × latents) and the sparsity path.

    Reads ``adata.uns[key]`` written by :func:`sparsevae.tl.edge_stability`. Left: a heatmap
    of the fraction of runs in which each perturbation targets each latent (the reference
    run's latents) at one ``alpha``. Right: the sparsity path, the number of edges with
    frequency ``>= threshold`` (and of perturbations with at least one such edge) against
    alpha; a dotted line marks the heatmap's alpha.

    Parameters
    ----------
    adata
        AnnData holding the results.
    key
        ``key_added`` of :func:`~sparsevae.tl.edge_stability`.
    alpha
        Alpha of the heatmap (default: the reference run's, the first one trained).
    threshold
        Frequency from which an edge counts as stable on the path.
    cluster
        Order perturbations (rows) and latents (columns) by hierarchical clustering.
    ax
        Two axes to draw in (heatmap, path); new ones by default.
    show, save
        Show the figure (by default only when not saved); save it to this path.

    Returns
    -------
    The two axes, unless shown.

    Examples
    --------
    >>> sv.tl.edge_stability(adata, "perturbation", "control", alphas=[20, 5])  # doctest: +SKIP
    >>> sv.pl.edge_stability(adata, alpha=5)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    edges, params = _read(adata, key)
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}.")
    alphas = np.sort(edges["alpha"].unique())
    if alpha is None:
        alpha = float(params.get("reference_alpha", edges["alpha"].iloc[0]))
    elif not np.isclose(alphas, alpha).any():
        raise ValueError(f"alpha={alpha!r} is not in the table; its alphas: {alphas.tolist()}.")
    latents = (
        json.loads(params["latent_names"])
        if "latent_names" in params
        else list(edges["latent"].unique())
    )
    matrix = _frequency_matrix(edges, alpha, latents)
    if cluster:
        values = matrix.fillna(0.0).to_numpy()
        matrix = matrix.iloc[_cluster_order(values), _cluster_order(values.T)]
    stable = edges[edges["frequency"] >= threshold - 1e-12]
    n_edges = stable.groupby("alpha").size().reindex(alphas, fill_value=0)
    n_perturbations = stable.groupby("alpha")["perturbation"].nunique()
    n_perturbations = n_perturbations.reindex(alphas, fill_value=0)
    n_runs = edges.loc[np.isclose(edges["alpha"], alpha), "n_runs"].iloc[0]

    if ax is None:
        height = max(3.5, 0.16 * matrix.shape[0] + 2.0)
        width = 0.35 * matrix.shape[1] + 2.5
        fig, axes = plt.subplots(
            1, 2, figsize=(width + 4.5, height), gridspec_kw={"width_ratios": [width, 4.0]}
        )
        axes = list(axes)
    else:
        axes = list(ax)
        if len(axes) != 2:
            raise ValueError(f"ax must hold two axes (heatmap, path), got {len(axes)}.")
        fig = axes[0].get_figure()
    _draw(matrix, axes[0], f"edge frequency (alpha = {alpha:g}, {n_runs} runs)", "fraction of runs")

    path = axes[1]
    path.plot(alphas, n_edges.to_numpy(), marker="o", label=f"edges, frequency ≥ {threshold:g}")
    path.plot(
        alphas, n_perturbations.to_numpy(), marker="s", label="perturbations with such an edge"
    )
    path.axvline(alpha, color="grey", linestyle=":", linewidth=1)
    path.set_xscale("log")
    path.set_xticks(alphas, [f"{a:g}" for a in alphas])
    path.minorticks_off()
    path.set_xlabel("alpha (sparsity prior Beta(1, alpha))")
    path.set_ylabel("count")
    path.set_ylim(0, 1.1 * max(1, n_edges.max(), n_perturbations.max()))
    path.yaxis.set_major_locator(MaxNLocator(integer=True))
    path.set_title("sparsity path")
    path.legend(fontsize=8)
    fig.tight_layout()
    return finish_many(axes, show, save)
