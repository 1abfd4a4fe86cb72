"""Heatmap of perturbation profiles grouped by the clusters of ``sv.tl.cluster_perturbations``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import ListedColormap
from mpl_toolkits.axes_grid1 import make_axes_locatable

from sparsevae._constants import CLUSTER_COLUMN, CLUSTERS_KEY, PROFILES_KEY

from ._utils import finish, label_fontsize, new_axes, symmetric_limit

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes


def _cluster_sort_key(cluster: str) -> tuple[int, int | str]:
    """Numeric ids in numeric order ("2" before "10"), anything else after them by name."""
    return (0, int(cluster)) if str(cluster).isdigit() else (1, str(cluster))


def _ordered(adata: AnnData, key: str, max_pcs: int) -> tuple[pd.DataFrame, pd.Series]:
    """Profiles (first ``max_pcs`` PCs) and clusters, rows ordered by cluster then name."""
    results = adata.uns.get(key)
    if not isinstance(results, dict) or not {CLUSTERS_KEY, PROFILES_KEY} <= set(results):
        raise KeyError(
            f"adata.uns[{key!r}] with {CLUSTERS_KEY!r} and {PROFILES_KEY!r} not found; run "
            f"sv.tl.cluster_perturbations(adata, key_added={key!r}) first."
        )
    if max_pcs < 1:
        raise ValueError(f"max_pcs={max_pcs!r} must be at least 1.")
    profiles = pd.DataFrame(results[PROFILES_KEY]).astype(float)
    clusters = pd.DataFrame(results[CLUSTERS_KEY])[CLUSTER_COLUMN].astype(str)
    names = sorted(profiles.index.astype(str))
    order = sorted(names, key=lambda name: (_cluster_sort_key(clusters.loc[name]), name))
    profiles.index = profiles.index.astype(str)
    return profiles.loc[order].iloc[:, :max_pcs], clusters.loc[order]


def _cluster_palette(n_clusters: int) -> list:
    return sns.color_palette("tab20" if n_clusters <= 20 else "husl", n_clusters)


def perturbation_clusters(
    adata: AnnData,
    key: str = "perturbation_cluster",
    *,
    show: bool | None = None,
    save: str | Path | None = None,
    ax: Axes | None = None,
    cmap: str = "RdBu_r",
    max_pcs: int = 10,
) -> Axes | None:
    """Heatmap of the perturbation profiles, rows grouped by cluster.

    Reads ``adata.uns[key]["profiles"]`` and ``adata.uns[key]["clusters"]`` written by
    :func:`sparsevae.tl.cluster_perturbations`. Rows are perturbations ordered by cluster, then
    by name; columns are the first ``max_pcs`` principal components; the colour scale is
    symmetric around 0 (no shift from control). A coloured strip right of the heatmap, labelled
    with the cluster ids, and lines between the row blocks show the clusters.

    Parameters
    ----------
    adata
        AnnData holding the results.
    key
        ``key_added`` used by :func:`~sparsevae.tl.cluster_perturbations`.
    show, save, ax
        Show the figure (by default only when not saved); save it to this path; axes to draw
        the heatmap in (the strip and colour bar are carved out of it).
    cmap
        Diverging colour map for the profiles.
    max_pcs
        Number of leading principal components to show.

    Returns
    -------
    The heatmap's axes, unless shown.

    Examples
    --------
    >>> import sparsevae as sv
    >>> adata = sv.data.simulate_sparse_shift(n_perturbations=12, n_cells_per_perturbation=40,
    ...     n_latent=4, n_genes=40)
    >>> _ = sv.tl.cluster_perturbations(adata, method="hierarchical", n_clusters=3)
    >>> ax = sv.pl.perturbation_clusters(adata, show=False)
    """
    profiles, clusters = _ordered(adata, key, max_pcs)
    n_rows, n_cols = profiles.shape
    ax = new_axes(ax, (max(4.5, 0.4 * n_cols + 3.0), max(3.5, 0.16 * n_rows + 2.0)))
    divider = make_axes_locatable(ax)
    strip_ax = divider.append_axes("right", size=0.15, pad=0.05)
    cbar_ax = divider.append_axes("right", size=0.15, pad=0.45)

    limit = symmetric_limit(profiles.to_numpy())
    sns.heatmap(
        profiles,
        ax=ax,
        cmap=cmap,
        vmin=-limit,  # symmetric limits centre the diverging map at 0 (seaborn's center= warns)
        vmax=limit,
        cbar_ax=cbar_ax,
        cbar_kws={"label": "mean shift from control"},
        yticklabels=True,
        xticklabels=True,
    )
    ax.grid(False)  # scanpy's figure style turns grids on; they cut through cells
    ax.set_xlabel("principal component")
    ax.set_ylabel("perturbation")
    ax.set_title("perturbation clusters")
    ax.tick_params(axis="y", labelsize=label_fontsize(n_rows))
    ax.tick_params(axis="x", labelsize=label_fontsize(n_cols))

    cluster_names = sorted(clusters.unique(), key=_cluster_sort_key)
    codes = clusters.map({c: i for i, c in enumerate(cluster_names)}).to_numpy()
    strip_ax.pcolormesh(
        np.arange(2),
        np.arange(n_rows + 1),
        codes[:, None],
        cmap=ListedColormap(_cluster_palette(len(cluster_names))),
        vmin=-0.5,
        vmax=len(cluster_names) - 0.5,
    )
    strip_ax.set_ylim(n_rows, 0)  # same orientation as the heatmap: first row on top
    strip_ax.set_xticks([])
    boundaries = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [n_rows]])
    strip_ax.yaxis.tick_right()
    strip_ax.set_yticks((starts + ends) / 2, [cluster_names[codes[s]] for s in starts])
    strip_ax.tick_params(axis="y", length=0, labelsize=label_fontsize(len(starts)))
    strip_ax.set_ylabel("cluster", rotation=270, labelpad=12)
    strip_ax.yaxis.set_label_position("right")
    for boundary in boundaries:
        ax.axhline(boundary, color="black", linewidth=0.8)
        strip_ax.axhline(boundary, color="white", linewidth=0.8)
    return finish(ax, show, save)
