from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import sparsevae as sv

GROUP_A = ["A0", "A1", "A2", "A3", "A0+A1"]
GROUP_B = ["B0", "B1", "B2", "B3"]
KEY = "perturbation_cluster"


def two_groups(n_cells: int = 15, n_genes: int = 30, seed: int = 0) -> ad.AnnData:
    """Perturbations of group A up-regulate genes 0-9, those of group B genes 10-19."""
    rng = np.random.default_rng(seed)
    blocks, labels = [], []
    for name in ["control", *GROUP_A, *GROUP_B]:
        rate = np.full(n_genes, 5.0)
        if name in GROUP_A:
            rate[:10] *= 4.0 + rng.uniform()
        elif name in GROUP_B:
            rate[10:20] *= 4.0 + rng.uniform()
        blocks.append(rng.poisson(rate, size=(n_cells, n_genes)))
        labels += [name] * n_cells
    return ad.AnnData(
        sparse.csr_matrix(np.vstack(blocks).astype(np.float32)),
        obs=pd.DataFrame(
            {"perturbation": pd.Categorical(labels)},
            index=[f"cell{i}" for i in range(len(labels))],
        ),
    )


@pytest.fixture(scope="module")
def leiden_result():
    """One Leiden run for the module: the first neighbour graph compiles numba code (slow)."""
    adata = two_groups()
    table = sv.tl.cluster_perturbations(adata, random_state=0)
    return adata, table


@pytest.fixture
def adata():
    return two_groups()


def test_hierarchical_recovers_the_two_groups(adata):
    table = sv.tl.cluster_perturbations(adata, method="hierarchical", n_clusters=2)
    # group A has more perturbations, so it gets the first id
    assert set(table.loc[GROUP_A, "cluster"]) == {"0"}
    assert set(table.loc[GROUP_B, "cluster"]) == {"1"}
    assert adata.uns[KEY]["params"]["method"] == "hierarchical"
    assert adata.uns[KEY]["params"]["n_clusters"] == 2


def test_leiden_separates_the_two_groups(leiden_result):
    _, table = leiden_result
    assert not set(table.loc[GROUP_A, "cluster"]) & set(table.loc[GROUP_B, "cluster"])


def test_every_perturbation_gets_one_cluster(leiden_result):
    adata, table = leiden_result
    assert sorted(table.index) == sorted(GROUP_A + GROUP_B)
    assert table.index.is_unique
    assert table["cluster"].map(type).eq(str).all()
    assert (table["n_cells"] == 15).all()
    sizes = table["cluster"].value_counts()
    ids = [str(i) for i in range(len(sizes))]
    assert sorted(sizes.index) == sorted(ids)
    assert list(sizes.loc[ids]) == sorted(sizes, reverse=True)  # ids by decreasing size
    profiles = adata.uns[KEY]["profiles"]
    assert list(profiles.index) == list(table.index)
    assert list(profiles.columns) == [f"PC{i + 1}" for i in range(profiles.shape[1])]
    assert profiles.shape[1] == min(30, adata.n_obs - 1, adata.n_vars - 1)


def test_obs_column_matches_table_and_control_keeps_its_label(leiden_result):
    adata, table = leiden_result
    cells = adata.obs[KEY]
    assert isinstance(cells.dtype, pd.CategoricalDtype)
    labels = adata.obs["perturbation"].astype(str)
    is_control = labels == "control"
    assert (cells[is_control] == "control").all()
    expected = labels[~is_control].map(table["cluster"])
    assert (cells[~is_control].astype(str) == expected).all()
    assert "control" not in set(table["cluster"])


def test_same_random_state_gives_the_same_result(leiden_result):
    """A determinism check on one machine (run twice, compared exactly), not a portability
    one: another CPU may give other digits in the profiles.
    """
    adata, table = leiden_result
    again = two_groups()
    pd.testing.assert_frame_equal(sv.tl.cluster_perturbations(again, random_state=0), table)
    pd.testing.assert_frame_equal(again.uns[KEY]["profiles"], adata.uns[KEY]["profiles"])


def test_counts_are_not_modified(adata):
    before = adata.X.copy()
    sv.tl.cluster_perturbations(adata, method="hierarchical", n_clusters=2)
    assert adata.X.dtype == before.dtype
    assert (adata.X != before).nnz == 0


def test_layer_and_control_none(adata):
    adata.layers["counts"] = adata.X.copy()
    adata.X = adata.X * 0.5  # not counts: must be ignored when layer is given
    table = sv.tl.cluster_perturbations(
        adata, layer="counts", control=None, method="hierarchical", n_clusters=2
    )
    assert "control" in table.index  # without a control label, it is a perturbation
    assert set(table.loc[GROUP_A, "cluster"]).isdisjoint(table.loc[GROUP_B, "cluster"])
    profiles = adata.uns[KEY]["profiles"]
    weights = table.loc[profiles.index, "n_cells"].to_numpy()[:, None]
    # against the mean of all cells, the cell-weighted profiles average to zero
    np.testing.assert_allclose((profiles.to_numpy() * weights).sum(axis=0), 0.0, atol=1e-3)
    params = adata.uns[KEY]["params"]
    assert params["control"] == "None"
    assert params["layer"] == "counts"
    assert "control" not in adata.obs[KEY].cat.categories


def test_h5ad_round_trip(leiden_result, tmp_path):
    adata, _ = leiden_result
    path = tmp_path / "clusters.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    written, read = adata.uns[KEY], back.uns[KEY]
    pd.testing.assert_frame_equal(read["clusters"], written["clusters"])
    pd.testing.assert_frame_equal(read["profiles"], written["profiles"])
    assert dict(read["params"]) == written["params"]
    pd.testing.assert_series_equal(back.obs[KEY], adata.obs[KEY])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"perturbation_key": "guide"}, KeyError, "guide"),
        ({"control": "ctrl"}, ValueError, "ctrl"),
        ({"method": "kmeans"}, ValueError, "hierarchical"),
        ({"method": "hierarchical"}, ValueError, "n_clusters"),
        ({"method": "hierarchical", "n_clusters": 20}, ValueError, "between 1 and"),
        ({"n_clusters": 2}, ValueError, "method='hierarchical'"),
        ({"key_added": "perturbation"}, ValueError, "overwrite"),
    ],
)
def test_invalid_arguments(adata, kwargs, error, match):
    with pytest.raises(error, match=match):
        sv.tl.cluster_perturbations(adata, **kwargs)
    assert KEY not in adata.uns


def test_invalid_labels(adata):
    few = adata[adata.obs["perturbation"].isin(["control", "A0"])].copy()
    with pytest.raises(ValueError, match="at least 2"):
        sv.tl.cluster_perturbations(few)
    adata.obs["perturbation"] = adata.obs["perturbation"].astype(object)
    adata.obs.iloc[0, 0] = np.nan
    with pytest.raises(ValueError, match="missing"):
        sv.tl.cluster_perturbations(adata)


def test_plot_rows_grouped_by_cluster(leiden_result, tmp_path):
    adata, table = leiden_result
    path = tmp_path / "clusters.png"
    ax = sv.pl.perturbation_clusters(adata, show=False, save=path, max_pcs=3)
    assert path.stat().st_size > 0
    rows = [t.get_text() for t in ax.get_yticklabels()]
    expected = sorted(table.index, key=lambda name: (int(table.loc[name, "cluster"]), name))
    assert rows == expected
    assert [t.get_text() for t in ax.get_xticklabels()] == ["PC1", "PC2", "PC3"]
    low, high = ax.collections[0].get_clim()
    assert high > 0
    assert low == -high  # symmetric colour scale around 0


def test_plot_needs_results(adata):
    with pytest.raises(KeyError, match="cluster_perturbations"):
        sv.pl.perturbation_clusters(adata, show=False)
