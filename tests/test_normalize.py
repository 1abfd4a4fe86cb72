"""The one log1p(CP10k) normalisation, ``sparsevae._normalize.log1p_cp10k``."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

import sparsevae as sv
from sparsevae._normalize import log1p_cp10k

_COUNTS = np.array([[1.0, 3.0, 0.0, 6.0], [0.0, 0.0, 0.0, 0.0], [5.0, 0.0, 5.0, 0.0]])


def test_log1p_cp10k_by_hand():
    values, has_counts = log1p_cp10k(_COUNTS)
    np.testing.assert_array_equal(has_counts, [True, False, True])
    np.testing.assert_allclose(values[0], np.log1p([1e3, 3e3, 0.0, 6e3]))
    np.testing.assert_array_equal(values[1], 0.0)  # no counts: no proportions, zeros
    np.testing.assert_allclose(values[2], np.log1p([5e3, 0.0, 5e3, 0.0]))
    np.testing.assert_array_equal(_COUNTS[1], 0.0)  # the input is not modified
    assert log1p_cp10k(_COUNTS.astype(np.float32))[0].dtype == np.float32
    assert log1p_cp10k(_COUNTS.astype(np.int64))[0].dtype == np.float64


def test_sparse_and_stacked_counts_match_dense():
    dense, has_counts = log1p_cp10k(_COUNTS)
    matrix = sp.csr_matrix(_COUNTS)
    matrix[1, 2] = 0.0  # an explicitly stored zero in a cell without counts stays 0
    sparse, sparse_has = log1p_cp10k(matrix)
    assert sp.issparse(sparse)
    np.testing.assert_allclose(sparse.toarray(), dense)
    np.testing.assert_array_equal(sparse_has, has_counts)
    stacked, stacked_has = log1p_cp10k(np.stack([_COUNTS, _COUNTS[::-1]]))  # (draws, cells, genes)
    np.testing.assert_allclose(stacked[0], dense)
    np.testing.assert_allclose(stacked[1], dense[::-1])
    assert stacked_has.shape == (2, 3)


def test_observed_expression_uses_it():
    adata = AnnData(X=sp.csr_matrix(_COUNTS.astype(np.float32)))
    values, has_counts = log1p_cp10k(_COUNTS)
    np.testing.assert_allclose(sv.evaluate.log_normalized(adata), values[has_counts])
    np.testing.assert_allclose(
        sv.evaluate.mean_log_expression(adata), values[has_counts].mean(axis=0), rtol=1e-6
    )
