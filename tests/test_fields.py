"""Registration errors: each names the key or value and says what to do."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

import sparsevae as sv


def setup(adata, **kwargs):
    params = {"perturbation_key": "perturbation", "control": "control"}
    params.update(kwargs)
    sv.SparseVAE.setup_anndata(adata, **params)


def test_valid_setup_registers_perturbations(adata):
    setup(adata)
    model = sv.SparseVAE(adata, n_latent=3, n_hidden=8)
    assert model.control == "control"
    assert model.perturbation_names == [f"P{i}" for i in range(6)]


def test_missing_perturbation_key(adata):
    with pytest.raises(KeyError, match="perturbation_key='guide'"):
        setup(adata, perturbation_key="guide")


def test_missing_layer_and_batch_key(adata):
    with pytest.raises(KeyError, match="layer='counts'"):
        setup(adata, layer="counts")
    with pytest.raises(KeyError, match="batch_key='lane'"):
        setup(adata, batch_key="lane")


def test_non_integer_counts(adata):
    adata.X = adata.X.multiply(0.5).tocsr()
    adata.X.data[0] = 0.5
    with pytest.raises(ValueError, match="non-integer"):
        setup(adata)


def test_log_normalised_layer_is_refused(adata):
    adata.layers["lognorm"] = sparse.csr_matrix(np.log1p(adata.X.toarray()))
    with pytest.raises(ValueError, match=r"adata.layers\['lognorm'\].*non-integer"):
        setup(adata, layer="lognorm")


def test_negative_and_nan_counts(adata):
    dense = adata.X.toarray()
    dense[0, 0] = -1
    adata.X = dense
    with pytest.raises(ValueError, match="negative"):
        setup(adata)
    dense[0, 0] = np.nan
    adata.X = dense
    with pytest.raises(ValueError, match="NaN"):
        setup(adata)


def test_cell_with_zero_counts(adata):
    dense = adata.X.toarray()
    dense[3] = 0
    adata.X = sparse.csr_matrix(dense)
    with pytest.raises(ValueError, match="1 cell"):
        setup(adata)


def test_nan_labels(adata):
    labels = adata.obs["perturbation"].astype(object)
    labels.iloc[5] = np.nan
    adata.obs["perturbation"] = labels
    with pytest.raises(ValueError, match="missing"):
        setup(adata)


def test_control_label_that_does_not_occur(adata):
    with pytest.raises(ValueError, match="control='ctrl' does not occur"):
        setup(adata, control="ctrl")


def test_only_control_cells(adata):
    only_control = adata[adata.obs["perturbation"] == "control"].copy()
    with pytest.raises(ValueError, match="only the control"):
        setup(only_control)


def test_string_labels_and_no_control(adata):
    adata.obs["perturbation"] = adata.obs["perturbation"].astype(str)
    setup(adata, control=None)
    model = sv.SparseVAE(adata, n_latent=3, n_hidden=8)
    assert model.control is None
    assert len(model.perturbation_names) == 7  # control is an ordinary label now


def test_unused_categories_are_not_registered(adata):
    categories = adata.obs["perturbation"].cat.categories
    subset = adata[adata.obs["perturbation"] != "P5"].copy()
    subset.obs["perturbation"] = subset.obs["perturbation"].cat.set_categories(categories)
    assert "P5" in subset.obs["perturbation"].cat.categories
    setup(subset)
    model = sv.SparseVAE(subset, n_latent=3, n_hidden=8)
    assert "P5" not in model.perturbation_names
