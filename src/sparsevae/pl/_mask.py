"""Heatmaps of the perturbation→latent graph."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import seaborn as sns
from scipy.cluster.hierarchy import leaves_list, linkage

from sparsevae._constants import RESULT_PI_KEY
from sparsevae.metrics import matched_graph

from ._utils import finish, finish_many, label_fontsize, new_axes

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes


def _cluster_order(values: np.ndarray) -> np.ndarray:
    if values.shape[0] < 3:
        return np.arange(values.shape[0])
    return leaves_list(linkage(values, method="average", metric="euclidean"))


def _draw(matrix: pd.DataFrame, ax: Axes, title: str, cbar_label: str) -> None:
    sns.heatmap(
        matrix,
        ax=ax,
        cmap="viridis",
        vmin=0.0,
        vmax=1.0,
        cbar_kws={"label": cbar_label},
        yticklabels=True,
        xticklabels=True,
    )
    ax.grid(False)  # scanpy's figure style turns grids on; they cut through cells
    ax.set_title(title)
    ax.set_xlabel("latent")
    ax.set_ylabel("perturbation")
    ax.tick_params(axis="y", labelsize=label_fontsize(matrix.shape[0]))
    ax.tick_params(axis="x", labelsize=label_fontsize(matrix.shape[1]))


def mask_heatmap(
    adata: AnnData,
    key: str = "sparsevae",
    *,
    cluster: bool = True,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Heatmap of the mask probabilities pi (perturbations × latents).

    Reads ``adata.uns[key]["pi"]`` written by :func:`sparsevae.tl.write_results`.

    Parameters
    ----------
    adata
        AnnData holding the results.
    key
        ``key_added`` used by :func:`~sparsevae.tl.write_results`.
    cluster
        Order perturbations (rows) and latents (columns) by hierarchical clustering.
    ax, show, save
        Axes to draw in; show the figure; save it to this path.

    Returns
    -------
    The axes, unless shown.
    """
    if key not in adata.uns or RESULT_PI_KEY not in adata.uns[key]:
        raise KeyError(
            f"adata.uns[{key!r}][{RESULT_PI_KEY!r}] not found; run "
            f"sv.tl.write_results(adata, model, key_added={key!r}) first."
        )
    pi = pd.DataFrame(adata.uns[key][RESULT_PI_KEY]).astype(float)
    if cluster:
        pi = pi.iloc[_cluster_order(pi.to_numpy()), _cluster_order(pi.to_numpy().T)]
    ax = new_axes(ax, (max(4.0, 0.35 * pi.shape[1] + 2), max(3.5, 0.16 * pi.shape[0] + 2.0)))
    _draw(pi, ax, "perturbation → latent (pi)", "P(target)")
    return finish(ax, show, save)


def graph_comparison(
    true_targets: pd.DataFrame,
    pi: pd.DataFrame,
    z_true,
    z,
    *,
    ax: Sequence[Axes] | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Sequence[Axes] | None:
    """Learned pi beside the true graph, latents matched to the true ones.

    Inferred latents are matched to true latents (Hungarian on absolute Pearson correlation), and
    pi's columns reordered to match; rows follow ``true_targets``.

    Parameters
    ----------
    true_targets
        Perturbations × true latents, 0/1.
    pi
        Perturbations × inferred latents.
    z_true, z
        True and inferred latents of the same cells (for the matching).
    ax
        Two axes to draw in (true, learned); new ones by default.
    show, save
        Show the figure; save it to this path.

    Returns
    -------
    The two axes, unless shown.
    """
    import matplotlib.pyplot as plt

    true_targets = pd.DataFrame(true_targets).astype(float)
    matched = matched_graph(true_targets, pi, z_true, z)
    if ax is None:
        height = max(3.5, 0.16 * true_targets.shape[0] + 2.0)
        width = 2 * (0.35 * true_targets.shape[1] + 2.5)
        fig, axes = plt.subplots(1, 2, figsize=(width, height))
    else:
        axes = list(ax)
        if len(axes) != 2:
            raise ValueError(f"ax must hold two axes (true, learned), got {len(axes)}.")
        fig = axes[0].get_figure()
    _draw(true_targets, axes[0], "true graph", "target")
    _draw(matched, axes[1], "learned pi (matched latents)", "P(target)")
    fig.tight_layout()
    return finish_many(axes, show, save)
