"""Heatmap of the genes each latent drives (``SparseVAE.get_latent_gene_loadings``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import seaborn as sns

from sparsevae._validation import unique_values

from ._utils import finish, label_fontsize, new_axes, symmetric_limit

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_VALUE = "log2_fold_change"
_EXPRESSION = "expression_per_10k"


def _top_genes(
    loadings: pd.DataFrame, latents: Sequence[str] | None, n_genes: int, min_expression: float
) -> pd.DataFrame:
    """The rows of ``loadings`` to plot: each latent's strongest genes.

    Each latent's ``n_genes`` largest ``|log2_fold_change|`` among genes expressed at
    ``min_expression`` or more, latent by latent (in the order of ``latents``), strongest first.
    """
    required = {"latent", "gene", _VALUE} | ({_EXPRESSION} if min_expression > 0 else set())
    missing = required - set(loadings.columns)
    if missing:
        raise KeyError(
            f"loadings lack the column(s) {sorted(missing)}; pass the DataFrame returned by "
            "model.get_latent_gene_loadings()."
        )
    if n_genes < 1:
        raise ValueError(f"n_genes must be at least 1, got {n_genes!r}.")
    known = list(dict.fromkeys(loadings["latent"].astype(str)))
    if latents is not None:
        latents = [latents] if isinstance(latents, str) else latents
        latents = unique_values(
            [str(latent) for latent in latents],
            "latents",
            example=f"{known[:2]!r} (or None for all)",
            why="their genes would be drawn twice",
        )
    latents = known if latents is None else latents
    unknown = [latent for latent in latents if latent not in known]
    if unknown:
        raise ValueError(f"latents {unknown} not in loadings; choose from {known}.")
    if min_expression > 0:
        expressed = loadings[_EXPRESSION] >= min_expression
        if not expressed.any():
            raise ValueError(
                f"No gene has {_EXPRESSION} >= min_expression={min_expression!r} (highest: "
                f"{loadings[_EXPRESSION].max():.3g}); lower min_expression."
            )
        loadings = loadings[expressed]
    by_latent = loadings.assign(latent=loadings["latent"].astype(str)).groupby("latent")
    return pd.concat(
        [
            by_latent.get_group(latent).sort_values(_VALUE, key=np.abs, ascending=False)[:n_genes]
            for latent in latents
        ],
        ignore_index=True,
    )


def latent_genes(
    loadings: pd.DataFrame,
    latents: Sequence[str] | None = None,
    n_genes: int = 5,
    *,
    min_expression: float = 1.0,
    cmap: str = "RdBu_r",
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """The genes each latent drives: a heatmap of loadings, top genes × latents.

    For each latent in ``latents``, its ``n_genes`` genes with the largest absolute
    ``log2_fold_change``, among genes expressed at ``min_expression`` or more, are rows
    (latent by latent, strongest first; a gene in the top of several latents appears once,
    under the first); columns are the latents; the colour is the log2 fold change of each
    gene's expected expression when that latent rises by the loadings' shift (red up, blue
    down, symmetric around 0). A dot marks the latent a row was chosen for; lines separate
    the latents' blocks.

    Parameters
    ----------
    loadings
        Output of :meth:`sparsevae.SparseVAE.get_latent_gene_loadings`.
    latents
        Latents to show (default: all), e.g. the targets of a perturbation from
        :meth:`~sparsevae.SparseVAE.get_target_table`.
    n_genes
        Top genes per latent.
    min_expression
        Only genes whose ``expression_per_10k`` is at least this are ranked (``0``: all):
        the fold changes of genes the model hardly ever sees are the decoder's
        extrapolations, and rank first otherwise.
    cmap
        Diverging colour map.
    ax, show, save
        Axes to draw in; show the figure (by default only when not saved); save it to this
        path.

    Returns
    -------
    The axes, unless shown.

    Examples
    --------
    >>> loadings = model.get_latent_gene_loadings()
    >>> sv.pl.latent_genes(loadings, latents=["latent_2", "latent_7"], n_genes=10)
    """
    top = _top_genes(loadings, latents, n_genes, min_expression)
    columns = list(dict.fromkeys(top["latent"]))
    first = top.drop_duplicates("gene")
    genes = first["gene"].tolist()
    matrix = (
        loadings.assign(latent=loadings["latent"].astype(str))
        .pivot_table(index="gene", columns="latent", values=_VALUE, observed=True)
        .loc[genes, columns]
    )
    n_rows, n_cols = matrix.shape
    ax = new_axes(ax, (max(3.5, 0.45 * n_cols + 2.5), max(3.0, 0.16 * n_rows + 1.5)))
    limit = symmetric_limit(matrix.to_numpy())
    shift = loadings.attrs.get("shift")
    label = "log2 fold change" + (f" (latent +{shift:g})" if shift is not None else "")
    sns.heatmap(
        matrix,
        ax=ax,
        cmap=cmap,
        vmin=-limit,  # symmetric limits centre the diverging map at 0 (seaborn's center= warns)
        vmax=limit,
        cbar_kws={"label": label},
        yticklabels=True,
        xticklabels=True,
    )
    chosen_for = first["latent"].map({c: i for i, c in enumerate(columns)}).to_numpy()
    ax.scatter(chosen_for + 0.5, np.arange(n_rows) + 0.5, s=6, color="black", marker="o")
    for boundary in np.flatnonzero(chosen_for[1:] != chosen_for[:-1]) + 1:
        ax.axhline(boundary, color="black", linewidth=0.6)
    ax.grid(False)  # scanpy's figure style turns grids on; they cut through cells
    ax.set_xlabel("latent")
    ax.set_ylabel("gene")
    ax.set_title(f"top {n_genes} genes per latent")
    ax.tick_params(axis="y", labelsize=label_fontsize(n_rows))
    ax.tick_params(axis="x", labelsize=label_fontsize(n_cols))
    return finish(ax, show, save)
