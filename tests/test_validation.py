"""Bad input at setup: each error names the key or value, shows an example and says what to do."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import sparse

import sparsevae as sv
from sparsevae import _validation


def setup(adata, **kwargs):
    params = {"perturbation_key": "perturbation", "control": "control"}
    params.update(kwargs)
    sv.SparseVAE.setup_anndata(adata, **params)


# ---- keys ---------------------------------------------------------------------------------
def test_misspelt_keys_suggest_the_close_match(adata):
    adata.layers["counts"] = adata.X.copy()
    adata.obs["lane"] = "L1"
    with pytest.raises(
        KeyError, match=r"perturbation_key='perturbaton'.*Did you mean 'perturbation'"
    ):
        setup(adata, perturbation_key="perturbaton")
    with pytest.raises(KeyError, match="Did you mean 'perturbation'"):
        setup(adata, perturbation_key="Perturbation")
    with pytest.raises(KeyError, match=r"layer='count'.*Did you mean 'counts'"):
        setup(adata, layer="count")
    with pytest.raises(KeyError, match=r"batch_key='lanes'.*Did you mean 'lane'"):
        setup(adata, batch_key="lanes")


def test_bad_batch_columns(adata):
    with pytest.raises(ValueError, match="batch_key and perturbation_key are both"):
        setup(adata, batch_key="perturbation")
    adata.obs["lane"] = ["L1"] * (adata.n_obs - 1) + [np.nan]
    with pytest.raises(ValueError, match=r"adata.obs\['lane'\] has 1 missing.*batch"):
        setup(adata, batch_key="lane")


def test_not_an_anndata_or_empty(adata):
    with pytest.raises(TypeError, match=r"Expected an AnnData.*ndarray"):
        setup(adata.X.toarray())
    with pytest.raises(ValueError, match="0 cells"):
        setup(adata[:0].copy())
    with pytest.raises(TypeError, match="perturbation_key must be"):
        setup(adata, perturbation_key=None)
    with pytest.raises(ValueError, match=r"adata is a view.*\.copy\(\)"):
        setup(adata[:50])


# ---- counts -------------------------------------------------------------------------------
def _with_value(adata, value, fmt, row=7, col=3):
    dense = adata.X.toarray().astype(np.float32)
    dense[row, col] = value
    matrix = {
        "dense": dense,
        "csr": sparse.csr_matrix(dense),
        "csc": sparse.csc_matrix(dense),
    }[fmt]
    adata.X = matrix
    return adata.obs_names[row], adata.var_names[col]


@pytest.mark.parametrize("fmt", ["dense", "csr", "csc"])
@pytest.mark.parametrize(
    ("value", "message"),
    [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"), (-2.0, "negative")],
)
def test_bad_counts_are_located_in_every_format(adata, fmt, value, message):
    cell, gene = _with_value(adata, value, fmt)
    with pytest.raises(ValueError, match=message) as error:
        setup(adata)
    assert f"cell {cell!r}, gene {gene!r}" in str(error.value)


@pytest.mark.parametrize("fmt", ["dense", "csr", "csc"])
def test_bad_value_found_in_a_later_chunk(adata, fmt, monkeypatch):
    monkeypatch.setattr(_validation, "_CHUNK_VALUES", 7)
    last_row, last_col = adata.n_obs - 1, adata.n_vars - 1
    cell, gene = _with_value(adata, 2.5, fmt, row=last_row, col=last_col)
    with pytest.raises(ValueError, match="non-integer") as error:
        setup(adata)
    assert f"2.5 for cell {cell!r}, gene {gene!r}" in str(error.value)
    assert "only 1 of" in str(error.value) and "corrupted values" in str(error.value)


def test_log_normalised_counts_are_recognised_and_a_layer_suggested(adata):
    adata.layers["counts"] = adata.X.copy()
    adata.X = sparse.csr_matrix(np.log1p(adata.X.toarray()))
    with pytest.raises(ValueError, match="look log-normalised") as error:
        setup(adata)
    assert "layer='counts'" in str(error.value)
    setup(adata, layer="counts")  # the suggested fix works


def test_bad_counts_in_a_layer_name_the_layer(adata):
    dense = adata.X.toarray()
    dense[2, 5] = np.nan
    adata.layers["raw"] = sparse.csr_matrix(dense)
    with pytest.raises(ValueError, match=r"adata.layers\['raw'\] contains NaN"):
        setup(adata, layer="raw")


def test_integer_matrices_are_accepted_and_checked(adata):
    adata.X = adata.X.toarray().astype(np.int64)
    setup(adata)
    adata.X[0, 0] = -1
    with pytest.raises(ValueError, match="negative"):
        setup(adata)


def test_zero_count_cells_are_named(adata):
    dense = adata.X.toarray()
    dense[[4, 9]] = 0
    adata.X = sparse.csr_matrix(dense)
    with pytest.raises(ValueError, match="2 cell") as error:
        setup(adata)
    assert repr(adata.obs_names[4]) in str(error.value)
    assert "filter_cells" in str(error.value)


def test_genes_without_counts_warn_and_are_kept(adata):
    dense = adata.X.toarray()
    dense[:, [0, 5]] = 0
    adata.X = sparse.csr_matrix(dense)
    with pytest.warns(UserWarning, match="2 of 24 gene") as record:
        setup(adata)
    assert repr(adata.var_names[5]) in str(record[0].message)
    model = sv.SparseVAE(adata, n_latent=3, n_hidden=8)
    assert model.summary_stats.n_vars == 24


# ---- labels -------------------------------------------------------------------------------
def test_empty_and_blank_labels(adata):
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    labels[[3, 8]] = ["", "  "]
    adata.obs["perturbation"] = labels
    with pytest.raises(ValueError, match="2 empty label") as error:
        setup(adata)
    assert repr(adata.obs_names[3]) in str(error.value)


def test_labels_that_look_missing_warn(adata):
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    labels[:5] = "nan"
    adata.obs["perturbation"] = labels
    with pytest.warns(UserWarning, match=r"\['nan'\].*missing values"):
        setup(adata)


def test_misspelt_control_suggests_the_label(adata):
    with pytest.raises(
        ValueError, match=r"control='Control' does not occur.*Did you mean 'control'"
    ):
        setup(adata, control="Control")


def test_single_perturbation_without_control(adata):
    only = adata[adata.obs["perturbation"] == "P0"].copy()
    with pytest.raises(ValueError, match=r"single label \('P0'\) and control=None"):
        setup(only, control=None)


def test_small_perturbations_warn_and_are_kept(adata):
    labels = adata.obs["perturbation"].astype(str)
    keep = (labels != "P2").to_numpy()
    keep[np.flatnonzero(~keep)[:3]] = True  # P2 keeps 3 of its 30 cells
    small = adata[keep].copy()
    with pytest.warns(UserWarning, match=r"fewer than 10 cells: \{'P2': 3\}.*kept"):
        setup(small)
    model = sv.SparseVAE(small, n_latent=3, n_hidden=8)
    assert "P2" in model.perturbation_names


def test_valid_data_give_no_warning(adata):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        setup(adata)


def test_numeric_labels_and_control(adata):
    codes = {name: i for i, name in enumerate(["control", *(f"P{i}" for i in range(6))])}
    adata.obs["perturbation"] = adata.obs["perturbation"].astype(str).map(codes).astype(int)
    setup(adata, control=0)
    model = sv.SparseVAE(adata, n_latent=3, n_hidden=8)
    assert model.control == "0"
    assert model.perturbation_names == [str(i) for i in range(1, 7)]


class _RowBlocks:
    """A matrix that is neither numpy nor scipy (like a backed dataset): rows by slicing."""

    def __init__(self, matrix):
        self.matrix, self.shape, self.dtype = matrix, matrix.shape, matrix.dtype

    def __getitem__(self, rows):
        return self.matrix[rows]


@pytest.mark.parametrize("as_sparse", [True, False])
def test_other_matrix_types_are_read_in_row_blocks(monkeypatch, as_sparse):
    monkeypatch.setattr(_validation, "_CHUNK_VALUES", 2)  # one row of two genes per block
    dense = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.5]])
    matrix = _RowBlocks(sparse.csr_matrix(dense) if as_sparse else dense)
    found = {}
    n_blocks = 0
    for values, locate in _validation._value_chunks(matrix):
        n_blocks += 1
        for i, value in enumerate(values):
            found[locate(i)] = value
    assert n_blocks == 3
    expected = {(r, c): dense[r, c] for r in range(3) for c in range(2)}
    if as_sparse:  # only stored values are read
        expected = {k: v for k, v in expected.items() if v != 0}
    assert found == expected
    sums = _validation._axis_sums(matrix, axis=0)
    np.testing.assert_allclose(sums, dense.sum(axis=0))
