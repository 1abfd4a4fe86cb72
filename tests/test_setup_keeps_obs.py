"""Registration reads the user's perturbation column and never rewrites it."""

from __future__ import annotations

import anndata
import numpy as np
import pandas as pd
import pytest

import sparsevae as sv

from .conftest import small_simulation

CODES = "_scvi_perturbation"  # the field's own column, as scvi-tools' categorical fields


def _column(labels: pd.Series, kind: str) -> pd.Series:
    """The simulation's labels (strings) as the user might store them."""
    if kind == "strings":
        return labels.astype(str).astype(object)
    if kind == "categorical":
        return labels.astype(str).astype("category")
    if kind == "categorical, unsorted, unused":  # categories in the user's order, one unused
        order = [*sorted(set(labels.astype(str)), reverse=True), "not_in_data"]
        return pd.Series(pd.Categorical(labels.astype(str), categories=order), index=labels.index)
    if kind == "categorical of integers":
        codes = {label: i for i, label in enumerate(sorted(set(labels.astype(str))))}
        return labels.astype(str).map(codes).astype("category")
    raise ValueError(kind)


KINDS = ["strings", "categorical", "categorical, unsorted, unused", "categorical of integers"]


def _as_text(column: pd.Series) -> np.ndarray:
    return column.astype(str).to_numpy()


@pytest.mark.parametrize("kind", KINDS)
def test_setup_leaves_the_perturbation_column_as_it_was(kind):
    adata = small_simulation()
    adata.obs["perturbation"] = _column(adata.obs["perturbation"], kind)
    control = "0" if kind == "categorical of integers" else "control"
    before = adata.obs["perturbation"].copy()
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control=control)
    after = adata.obs["perturbation"]
    pd.testing.assert_series_equal(after, before)  # values, dtype, categories and their order
    assert after.dtype == before.dtype
    # The model reads the labels from its own column: each cell's code names its label.
    model = sv.SparseVAE(adata, n_latent=2, n_hidden=8)
    categories = np.asarray(model.knowledge.categories)
    np.testing.assert_array_equal(categories[adata.obs[CODES].to_numpy()], _as_text(before))
    assert model.control == control


@pytest.mark.parametrize("kind", ["strings", "categorical, unsorted, unused"])
def test_new_data_given_to_a_model_keep_their_column(kind):
    """Registering other cells with a model's setup (getters, ``load``) reads them only."""
    adata = small_simulation()
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(adata, n_latent=2, n_hidden=8)
    cells = adata[::3]
    new = anndata.AnnData(
        X=cells.X.copy(), obs=cells.obs[["perturbation"]].copy(), var=cells.var[[]].copy()
    )
    new.obs["perturbation"] = _column(new.obs["perturbation"], kind)
    before = new.obs["perturbation"].copy()
    registered = model._validate_anndata(new)  # what every getter does with new data
    pd.testing.assert_series_equal(registered.obs["perturbation"], before)
    assert registered.obs["perturbation"].dtype == before.dtype
    mapping = np.asarray(
        model.get_anndata_manager(registered).get_state_registry("perturbation")[
            "categorical_mapping"
        ]
    ).astype(str)
    np.testing.assert_array_equal(mapping[registered.obs[CODES].to_numpy()], _as_text(before))
