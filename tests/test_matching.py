"""Data meeting a trained model: other genes, unseen perturbations, bad counts at getters/load."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import sparsevae as sv

from .conftest import small_simulation


def fresh():
    """The training data of the ``trained`` fixture, as a new, unregistered AnnData."""
    return small_simulation()


def test_getters_refuse_other_genes(trained):
    model, _ = trained
    data = fresh()
    reordered = data[:, data.var_names[::-1]].copy()
    with pytest.raises(ValueError, match="the same genes in a different order"):
        model.get_latent_representation(reordered)
    fewer = data[:, 2:].copy()
    with pytest.raises(
        ValueError, match=r"2 of the model's genes are missing \(e.g. \['gene_0', 'gene_1'\]\)\. "
    ):
        model.get_latent_representation(fewer)
    renamed = data.copy()
    renamed.var_names = [f"X{i}" for i in range(renamed.n_vars)]
    with pytest.raises(ValueError, match="24 of the model's genes are missing"):
        model.get_elbo(renamed)


def test_getters_check_the_counts_of_new_data(trained):
    model, _ = trained
    data = fresh()
    dense = data.X.toarray()
    dense[1, 1] = 0.5
    data.X = sparse.csr_matrix(dense)
    with pytest.raises(ValueError, match="non-integer"):
        model.get_latent_representation(data)


def test_unseen_perturbations(trained):
    model, _ = trained
    data = fresh()
    labels = data.obs["perturbation"].astype(str).to_numpy()
    labels[labels == "P5"] = "P9"
    data.obs["perturbation"] = labels
    # The encoder does not read labels: cells of new perturbations can be embedded, and the
    # user is told which labels are new and which calls need transfer first.
    with pytest.warns(UserWarning, match=r"not learned: \['P9'\]\. get_latent_representation") as w:
        z = model.get_latent_representation(data)
    assert z.shape == (data.n_obs, 4) and np.isfinite(z).all()
    assert "get_interventional_nll" in str(w[0].message) and "transfer" in str(w[0].message)
    with pytest.warns(UserWarning, match=r"\['P9'\]\. get_latent_gene_loadings does not use"):
        model.get_latent_gene_loadings(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # known labels only: no warning
        model.get_latent_representation(fresh())
    # Anything that evaluates p(z | a) needs the perturbation to be learned first.
    for getter in (model.get_elbo, model.get_reconstruction_error, model.get_marginal_ll):
        with pytest.raises(ValueError, match=r"has not learned the perturbation\(s\) \['P9'\]"):
            getter(data)
    with pytest.raises(ValueError, match=r"model\.transfer"):
        model.get_interventional_nll(data, n_particles=2)


def test_getters_select_perturbations_by_name(trained):
    model, _ = trained
    pi = model.get_mask_probabilities()
    two = model.get_mask_probabilities(["P3", "P1"])
    assert list(two.index) == ["P3", "P1"]
    np.testing.assert_array_equal(two.to_numpy(), pi.loc[["P3", "P1"]].to_numpy())
    assert list(model.get_perturbation_shifts(perturbations="P2").index) == ["P2"]
    assert model.get_intervention_targets(perturbations=["P0"]).shape == (1, 4)
    with pytest.raises(ValueError, match=r"\['P10'\]\. Did you mean 'P1'.*knows 6"):
        model.get_mask_probabilities(["P10"])
    with pytest.raises(ValueError, match="'control' is the control label"):
        model.get_perturbation_shifts(perturbations=["control"])


def test_load_refuses_other_genes_and_unseen_perturbations(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "model")
    data = fresh()
    with pytest.raises(ValueError, match="the same genes in a different order"):
        sv.SparseVAE.load(tmp_path / "model", adata=data[:, data.var_names[::-1]].copy())
    with pytest.raises(ValueError, match="adata has 20 genes but the model was trained on 24"):
        sv.SparseVAE.load(tmp_path / "model", adata=data[:, :20].copy())
    labels = data.obs["perturbation"].astype(str).to_numpy()
    labels[:3] = "P7"
    data.obs["perturbation"] = labels
    with pytest.raises(ValueError, match=r"saved model has not learned: \['P7'\].*transfer"):
        sv.SparseVAE.load(tmp_path / "model", adata=data)
    # A subset of the training cells loads fine, even one perturbation without control.
    subset = fresh()
    subset = subset[(subset.obs["perturbation"] == "P1").to_numpy()][:5].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "few cells" / "one label" complaint
        loaded = sv.SparseVAE.load(tmp_path / "model", adata=subset)
    np.testing.assert_allclose(
        loaded.get_latent_representation(), model.get_latent_representation(subset)
    )


def test_transfer_refuses_other_genes(trained):
    model, _ = trained
    data = fresh()
    with pytest.raises(ValueError, match="different order"):
        model.transfer(data[:, data.var_names[::-1]].copy())


def test_new_data_get_the_models_category_codes(trained, tmp_path):
    """Labels of new data map to the model's rows, whatever order pandas sorts them in."""
    model, data = trained
    new = fresh()  # same labels; sorted they would put "control" last, not first
    model.get_latent_representation(new)  # registers ``new`` with the model's setup
    np.testing.assert_array_equal(
        new.obs["_scvi_perturbation"].to_numpy(), data.obs["_scvi_perturbation"].to_numpy()
    )
    model.save(tmp_path / "model")
    loaded = sv.SparseVAE.load(tmp_path / "model", adata=fresh())
    assert (
        loaded.knowledge.categories
        == model.knowledge.categories
        == ["control", *(f"P{i}" for i in range(6))]
    )
    pd.testing.assert_frame_equal(loaded.get_mask_probabilities(), model.get_mask_probabilities())
