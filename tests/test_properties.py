"""Property-based tests (hypothesis): setup_anndata and the metrics on random small inputs."""

from __future__ import annotations

import warnings

import anndata
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import sparse

import sparsevae as sv
from sparsevae import metrics

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- setup_anndata ------------------------------------------------------------------------
LABELS = ["control", "A", "B", "b", "KO_1"]


@st.composite
def screens(draw):
    """A small valid screen: integer counts with no empty cell, one label per cell."""
    n_cells = draw(st.integers(2, 25))
    n_genes = draw(st.integers(1, 6))
    counts = draw(hnp.arrays(np.int64, (n_cells, n_genes), elements=st.integers(0, 30)))
    counts[np.arange(n_cells), draw(st.integers(0, n_genes - 1))] += 1  # no empty cells
    labels = draw(st.lists(st.sampled_from(LABELS), min_size=n_cells, max_size=n_cells))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int32]))
    matrix = counts.astype(dtype)
    if draw(st.booleans()):
        matrix = sparse.csr_matrix(matrix)
    adata = anndata.AnnData(
        X=matrix,
        obs=pd.DataFrame({"perturbation": labels}, index=[f"cell{i}" for i in range(n_cells)]),
        var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]),
    )
    if draw(st.booleans()):
        adata.obs["perturbation"] = adata.obs["perturbation"].astype("category")
    return adata


def _setup(adata, control):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # few cells, genes without counts
        sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control=control)


@FAST
@given(adata=screens(), use_control=st.booleans())
def test_setup_accepts_valid_screens_and_maps_every_label(adata, use_control):
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    control = "control" if use_control and "control" in labels else None
    distinct = set(labels)
    if len(distinct) == 1:
        with pytest.raises(ValueError, match=r"only the control|single label"):
            _setup(adata, control)
        return
    _setup(adata, control)
    model = sv.SparseVAE(adata, n_latent=2, n_hidden=4)
    assert set(model.knowledge.categories) == distinct
    assert model.control == control
    assert set(model.perturbation_names) == distinct - {control}
    codes = adata.obs["_scvi_perturbation"].to_numpy()
    np.testing.assert_array_equal(np.asarray(model.knowledge.categories)[codes], labels)


@FAST
@given(
    adata=screens(),
    bad=st.sampled_from([np.nan, np.inf, -1.0, 0.5, 2.25]),
    data=st.data(),
)
def test_setup_locates_any_bad_count(adata, bad, data):
    row = data.draw(st.integers(0, adata.n_obs - 1))
    col = data.draw(st.integers(0, adata.n_vars - 1))
    dense = np.asarray(adata.X.todense() if sparse.issparse(adata.X) else adata.X, float)
    dense[row, col] = bad
    adata.X = sparse.csr_matrix(dense) if data.draw(st.booleans()) else dense
    adata.obs["perturbation"] = np.where(np.arange(adata.n_obs) % 2, "A", "B")  # valid labels
    with pytest.raises(ValueError) as error:
        _setup(adata, None)
    assert f"cell 'cell{row}', gene 'g{col}'" in str(error.value)


# ---- metrics ------------------------------------------------------------------------------
@st.composite
def latents(draw, min_cells=8):
    seed = draw(st.integers(0, 2**32 - 1))
    n_cells = draw(st.integers(min_cells, 60))
    n_latent = draw(st.integers(1, 5))
    return np.random.default_rng(seed).normal(size=(n_cells, n_latent))


@FAST
@given(z=latents(), data=st.data())
def test_mcc_is_one_up_to_permutation_sign_and_scale(z, data):
    d = z.shape[1]
    order = data.draw(st.permutations(range(d)))
    scales = np.array(
        data.draw(st.lists(st.floats(0.1, 10) | st.floats(-10, -0.1), min_size=d, max_size=d))
    )
    shift = data.draw(st.floats(-100, 100))
    transformed = z[:, order] * scales + shift
    for method in ("pearson", "spearman"):
        assert metrics.mean_correlation_coefficient(z, transformed, method) == pytest.approx(1.0)
    assert metrics.linear_r2(z, transformed) == pytest.approx(1.0)


finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@FAST
@given(
    shape=st.tuples(st.integers(3, 20), st.integers(1, 4), st.integers(1, 4)),
    data=st.data(),
)
def test_mcc_is_in_unit_interval_and_symmetric(shape, data):
    """Also with subnormal spreads (found by Hypothesis: [[4], [0]] vs [[5e-324], [0]])."""
    n, d_true, d = shape
    z_true = data.draw(hnp.arrays(np.float64, (n, d_true), elements=finite))
    z = data.draw(hnp.arrays(np.float64, (n, d), elements=finite))
    for method in ("pearson", "spearman"):
        score = metrics.mean_correlation_coefficient(z_true, z, method)
        assert 0.0 <= score <= 1.0 + 1e-12
        if d == d_true:
            assert score == pytest.approx(metrics.mean_correlation_coefficient(z, z_true, method))
    assert metrics.linear_r2(z_true, z) <= 1.0 + 1e-9


@FAST
@given(z=latents(min_cells=12), data=st.data())
def test_graph_scores_are_perfect_for_the_true_graph_in_any_latent_order(z, data):
    d = z.shape[1]
    n_perturbations = data.draw(st.integers(1, 6))
    targets = np.array(
        data.draw(hnp.arrays(np.int64, (n_perturbations, d), elements=st.integers(0, 1)))
    )
    names = [f"P{i}" for i in range(n_perturbations)]
    true_targets = pd.DataFrame(targets, index=names)
    order = data.draw(st.permutations(range(d)))
    pi = pd.DataFrame(targets[:, order] * 0.9 + 0.05, index=names)
    scores = metrics.graph_scores(true_targets, pi, z, z[:, order])
    assert scores["n_true_edges"] == scores["n_predicted_edges"] == targets.sum()
    if targets.sum():
        assert scores["precision"] == scores["recall"] == scores["f1"] == 1.0


@FAST
@given(z=latents(min_cells=12), data=st.data())
def test_graph_scores_are_bounded_and_count_edges(z, data):
    d = z.shape[1]
    n_perturbations = data.draw(st.integers(1, 6))
    targets = data.draw(hnp.arrays(np.int64, (n_perturbations, d), elements=st.integers(0, 1)))
    pi = data.draw(hnp.arrays(np.float64, (n_perturbations, d), elements=st.floats(0, 1)))
    names = [f"P{i}" for i in range(n_perturbations)]
    # rows of pi are aligned by name, whatever their order
    shuffled = data.draw(st.permutations(names))
    pi_frame = pd.DataFrame(pi, index=names).loc[shuffled]
    scores = metrics.graph_scores(pd.DataFrame(targets, index=names), pi_frame, z, z)
    for key in ("precision", "recall", "f1"):
        assert 0.0 <= scores[key] <= 1.0
    assert scores["n_predicted_edges"] == int((pi > 0.5).sum())
    assert scores["n_true_edges"] == int(targets.sum())
