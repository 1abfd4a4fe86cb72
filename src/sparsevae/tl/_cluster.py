"""Group perturbations by the expression shift they cause (scanpy-style ``tl``), no model needed."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scanpy as sc
from anndata import AnnData

from sparsevae._constants import (
    CLUSTER_COLUMN,
    CLUSTER_PARAMS_KEY,
    CLUSTERS_KEY,
    N_CELLS_COLUMN,
    PROFILES_KEY,
)
from sparsevae._normalize import log1p_cp10k
from sparsevae._validation import validate_counts, validate_perturbations

from ._results import _check_key_added, _h5ad_safe

if TYPE_CHECKING:
    from collections.abc import Hashable

logger = logging.getLogger(__name__)


_METHODS = ("leiden", "hierarchical")


def _profiles(
    adata: AnnData,
    labels: pd.Series,
    perturbations: list[str],
    control: str | None,
    layer: str | None,
    n_pcs: int,
    random_state: int,
) -> pd.DataFrame:
    """Mean PCA coordinates of each perturbation's cells minus the control (or overall) mean."""
    counts = adata.X if layer is None else adata.layers[layer]
    # log1p(counts per 10,000) of a float copy (adata stays untouched, sparse stays sparse);
    # scanpy runs PCA on it.
    work = AnnData(
        X=log1p_cp10k(counts.astype(np.float32))[0],
        obs=pd.DataFrame(index=adata.obs_names.copy()),
        var=pd.DataFrame(index=adata.var_names.copy()),
    )
    sc.pp.pca(work, n_comps=n_pcs, random_state=random_state)
    coords = pd.DataFrame(
        work.obsm["X_pca"],
        index=labels.to_numpy(),
        columns=[f"PC{i + 1}" for i in range(n_pcs)],
    )
    means = coords.groupby(level=0, sort=False).mean()
    reference = means.loc[control] if control is not None else coords.mean(axis=0)
    profiles = means.loc[perturbations] - reference
    profiles.index.name = "perturbation"
    return profiles.astype(float)


def _leiden(
    profiles: pd.DataFrame, resolution: float, n_neighbors: int, random_state: int
) -> np.ndarray:
    graph = AnnData(X=profiles.to_numpy(), obs=pd.DataFrame(index=profiles.index.copy()))
    sc.pp.neighbors(graph, use_rep="X", n_neighbors=n_neighbors, random_state=random_state)
    sc.tl.leiden(
        graph,
        resolution=resolution,
        flavor="igraph",
        n_iterations=2,
        directed=False,
        random_state=random_state,
    )
    return graph.obs["leiden"].to_numpy()


def _hierarchical(profiles: pd.DataFrame, n_clusters: int) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering

    if n_clusters == 1:  # sklearn needs at least two samples to merge; one cluster is trivial
        return np.zeros(profiles.shape[0], dtype=int)
    # sklearn rather than scipy's fcluster(maxclust): it returns exactly n_clusters groups.
    model = AgglomerativeClustering(n_clusters=n_clusters, linkage="ward")
    return model.fit_predict(profiles.to_numpy())


def _relabel(raw: np.ndarray, names: list[str]) -> list[str]:
    """Cluster ids "0", "1", ... by decreasing size; ties by the alphabetically first member."""
    members: dict[Hashable, list[str]] = {}
    for name, label in zip(names, raw, strict=True):
        members.setdefault(label, []).append(name)
    order = sorted(members, key=lambda label: (-len(members[label]), min(members[label])))
    new_id = {label: str(i) for i, label in enumerate(order)}
    return [new_id[label] for label in raw]


def cluster_perturbations(
    adata: AnnData,
    *,
    perturbation_key: str = "perturbation",
    control: str | None = "control",
    key_added: str = "perturbation_cluster",
    layer: str | None = None,
    method: str = "leiden",
    n_clusters: int | None = None,
    resolution: float = 1.0,
    n_pcs: int = 30,
    n_neighbors: int | None = None,
    random_state: int = 0,
) -> pd.DataFrame:
    """Cluster perturbations by their mean expression shift, without a trained model.

    Each perturbation gets a profile: on a copy of the counts, ``log1p(counts per 10,000)``
    (:func:`sparsevae._normalize.log1p_cp10k`) and ``sc.pp.pca`` over all genes (not scaled, so
    highly expressed genes are not inflated to the weight of noisy ones; subset genes
    beforehand to restrict it), then the mean PCA coordinates of the perturbation's cells minus
    the mean of the control cells (of all cells if ``control`` is None). Combinations such as
    ``"A+B"`` are ordinary labels here. The profiles are then clustered with Leiden on their
    kNN graph or with Ward agglomerative clustering.

    Writes

    - ``adata.uns[key_added]["clusters"]``: DataFrame indexed by perturbation (control
      excluded) with columns ``"cluster"`` (str id) and ``"n_cells"`` (int);
    - ``adata.uns[key_added]["profiles"]``: DataFrame perturbations × ``PC1..PCn`` (float);
    - ``adata.uns[key_added]["params"]``: dict of the parameters used (``method``,
      ``n_clusters``, ``resolution``, ``n_pcs``, ``n_neighbors``, ``random_state``,
      ``perturbation_key``, ``control``, ``layer``). Every key is always present; parameters
      that do not apply or are None are stored as the string ``"None"`` (h5ad cannot store
      None), ``n_pcs`` is the number of components actually computed and ``n_neighbors`` the
      value actually used by Leiden;
    - ``adata.obs[key_added]``: categorical, the cluster of each cell's perturbation; control
      cells carry the control label itself instead of a cluster id.

    Cluster ids are ``"0"``, ``"1"``, ... by decreasing cluster size, ties broken by the
    alphabetically first perturbation of each cluster; the result is deterministic for a given
    ``random_state``. Everything written survives ``adata.write_h5ad`` /
    ``anndata.read_h5ad``. ``adata.X`` and the layers are not modified.

    Parameters
    ----------
    adata
        Cells with raw counts in ``adata.X`` (or ``layer``) and labels in
        ``adata.obs[perturbation_key]``.
    perturbation_key
        Column of ``adata.obs`` with the perturbation label of each cell.
    control
        Label of unperturbed cells, or None if there are none.
    key_added
        Key under which results are stored in ``adata.uns`` and ``adata.obs``. An earlier
        result of ``cluster_perturbations`` there is replaced; other data at that key are too,
        with a warning.
    layer
        Layer with the raw counts; ``adata.X`` if None.
    method
        ``"leiden"`` (graph clustering, number of clusters set by ``resolution``) or
        ``"hierarchical"`` (Ward linkage cut into ``n_clusters`` clusters).
    n_clusters
        Number of clusters; required for, and only used by, ``method="hierarchical"``.
    resolution
        Leiden resolution; higher gives more clusters.
    n_pcs
        Number of principal components; capped at ``min(n_obs, n_vars) - 1``.
    n_neighbors
        Neighbours of each perturbation in the Leiden graph (itself included, as in
        ``sc.pp.neighbors``); defaults to ``min(15, n_perturbations - 1)``, at least 2.
    random_state
        Seed for PCA, the neighbour graph and Leiden.

    Returns
    -------
    The clusters table written to ``adata.uns[key_added]["clusters"]``.

    Examples
    --------
    >>> import sparsevae as sv
    >>> adata = sv.data.simulate_sparse_shift(n_perturbations=12, n_cells_per_perturbation=40,
    ...     n_latent=4, n_genes=40)
    >>> table = sv.tl.cluster_perturbations(adata, method="hierarchical", n_clusters=3)
    >>> sorted(table["cluster"].unique())
    ['0', '1', '2']
    >>> adata.obs["perturbation_cluster"].cat.categories.tolist()
    ['0', '1', '2', 'control']
    >>> sv.pl.perturbation_clusters(adata)  # doctest: +SKIP
    """
    if method not in _METHODS:
        raise ValueError(f"method={method!r} is not supported; choose one of {list(_METHODS)}.")
    if method == "leiden" and n_clusters is not None:
        raise ValueError(
            f"n_clusters={n_clusters!r} cannot be used with method='leiden', which sets the "
            "number of clusters through `resolution`. Use method='hierarchical' for a fixed "
            "number of clusters, or drop n_clusters."
        )
    if method == "hierarchical" and n_clusters is None:
        raise ValueError(
            "method='hierarchical' needs n_clusters (the number of clusters to cut the tree "
            "into); pass e.g. n_clusters=5, or use method='leiden'."
        )
    if key_added == perturbation_key:
        raise ValueError(
            f"key_added={key_added!r} equals perturbation_key and would overwrite the labels; "
            "pass another key_added."
        )
    categories = validate_perturbations(adata, perturbation_key, control)
    perturbations = [c for c in categories if c != control]
    n_perturbations = len(perturbations)
    if n_perturbations < 2:
        raise ValueError(
            f"adata.obs[{perturbation_key!r}] holds {n_perturbations} perturbation(s) besides "
            f"control={control!r}; clustering needs at least 2."
        )
    if n_clusters is not None and not 1 <= n_clusters <= n_perturbations:
        raise ValueError(
            f"n_clusters={n_clusters!r} must be between 1 and the number of perturbations "
            f"({n_perturbations})."
        )
    if method == "leiden":
        if n_neighbors is None:
            n_neighbors = max(2, min(15, n_perturbations - 1))
        elif not 2 <= n_neighbors <= n_perturbations:
            raise ValueError(
                f"n_neighbors={n_neighbors!r} must be between 2 and the number of "
                f"perturbations ({n_perturbations}); it counts each perturbation itself."
            )
    else:
        n_neighbors = None
    if control is not None and control in {str(i) for i in range(n_perturbations)}:
        raise ValueError(
            f"control={control!r} looks like a cluster id, so control cells could not be told "
            f"apart from clustered cells in adata.obs[{key_added!r}]; rename the control label."
        )
    validate_counts(adata, layer)
    n_comps = min(n_pcs, adata.n_obs - 1, adata.n_vars - 1)
    if n_comps < 1:
        raise ValueError(
            f"Cannot compute principal components from {adata.n_obs} cells × {adata.n_vars} "
            "genes; at least 2 of each are needed, and n_pcs must be at least 1."
        )

    _check_key_added(
        adata,
        key_added,
        (CLUSTERS_KEY, PROFILES_KEY, CLUSTER_PARAMS_KEY),
        "cluster_perturbations",
        obs=True,
    )
    labels = adata.obs[perturbation_key].astype(str)
    profiles = _profiles(adata, labels, perturbations, control, layer, n_comps, random_state)
    if method == "leiden":
        raw = _leiden(profiles, resolution, n_neighbors, random_state)
    else:
        raw = _hierarchical(profiles, n_clusters)
    cluster_ids = _relabel(raw, perturbations)

    n_cells = labels.value_counts()
    clusters = pd.DataFrame(
        {
            CLUSTER_COLUMN: pd.Series(cluster_ids, index=profiles.index, dtype=object),
            N_CELLS_COLUMN: n_cells.loc[perturbations].to_numpy().astype(np.int64),
        },
        index=profiles.index,
    )
    params = {
        "method": method,
        "n_clusters": _h5ad_safe(n_clusters),
        "resolution": _h5ad_safe(float(resolution) if method == "leiden" else None),
        "n_pcs": int(n_comps),
        "n_neighbors": _h5ad_safe(n_neighbors),
        "random_state": _h5ad_safe(random_state),
        "perturbation_key": perturbation_key,
        "control": _h5ad_safe(control),
        "layer": _h5ad_safe(layer),
    }
    cell_values = labels.map(dict(zip(perturbations, cluster_ids, strict=True)))
    if control is not None:
        cell_values = cell_values.fillna(control)
    n_found = len(set(cluster_ids))
    cell_categories = [str(i) for i in range(n_found)] + ([control] if control is not None else [])
    if key_added in adata.obs:
        logger.info("Overwriting adata.obs[%r].", key_added)
    adata.obs[key_added] = pd.Categorical(cell_values.to_numpy(), categories=cell_categories)
    adata.uns[key_added] = {
        CLUSTERS_KEY: clusters,
        PROFILES_KEY: profiles,
        CLUSTER_PARAMS_KEY: params,
    }
    logger.info(
        "Clustered %d perturbations into %d clusters (%s); wrote obs[%r] and uns[%r].",
        n_perturbations,
        n_found,
        method,
        key_added,
        key_added,
    )
    return clusters
