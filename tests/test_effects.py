"""Effect correlations: predicted vs observed mean change per gene."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from anndata import AnnData

import sparsevae as sv


def test_effect_correlations_over_all_and_top_genes():
    rng = np.random.default_rng(0)
    observed = rng.normal(size=200)
    observed[:5] = [10, -9, 8, -7, 6]  # the five largest changes
    predicted = 2.0 * observed + 1.0
    r = sv.evaluate.effect_correlations(predicted, observed, n_top=5)
    assert r == pytest.approx({"pearson_all_genes": 1.0, "pearson_top5_de": 1.0})
    # only the top genes agree: the top-5 correlation sees them, the all-gene one the noise
    scrambled = np.concatenate([observed[:5], rng.normal(size=195)])
    r = sv.evaluate.effect_correlations(scrambled, observed, n_top=5)
    assert r["pearson_top5_de"] == pytest.approx(1.0)
    assert r["pearson_all_genes"] < 0.9


def test_no_predicted_change_has_no_correlation():
    r = sv.evaluate.effect_correlations(np.zeros(30), np.arange(30.0))
    assert np.isnan(r["pearson_all_genes"]) and np.isnan(r["pearson_top20_de"])


def test_effect_correlations_reject_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        sv.evaluate.effect_correlations(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="n_top"):
        sv.evaluate.effect_correlations(np.arange(3.0), np.arange(3.0), n_top=1)


@pytest.mark.parametrize("sparse", [False, True])
def test_mean_log_expression_normalises_each_cell(sparse):
    counts = np.array([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0], [2.0, 2.0, 4.0]])
    adata = AnnData(X=sp.csr_matrix(counts) if sparse else counts)
    expected = np.mean(
        [np.log1p(1e4 * np.array([0.25, 0.75, 0.0])), np.log1p(1e4 * np.array([0.25, 0.25, 0.5]))],
        axis=0,
    )  # the empty cell has no proportions and is skipped
    np.testing.assert_allclose(sv.evaluate.mean_log_expression(adata), expected)
    with pytest.raises(ValueError, match="no cell with counts"):
        sv.evaluate.mean_log_expression(adata[[1]])
