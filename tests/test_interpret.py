from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scvi
import torch

import sparsevae as sv

from .conftest import QUIET, batched_model, small_simulation


@torch.inference_mode()
def _direct_loadings(model, adata, shift, cells=None):
    """log2 fold changes from the decoder's softmax output, one latent at a time."""
    module = model.module
    module.eval()
    counts = adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X
    x = torch.as_tensor(np.asarray(counts, dtype=np.float32))
    cells = np.arange(adata.n_obs) if cells is None else np.asarray(cells)
    x = x[cells]
    z = torch.as_tensor(model.get_latent_representation(adata, indices=cells))
    library = torch.log(x.sum(1, keepdim=True))
    cat = ()
    if module.n_batch > 1:
        codes = adata.obs["_scvi_batch"].to_numpy()[cells]
        cat = (torch.as_tensor(codes).long().reshape(-1, 1),)
    base = module.decoder("gene", z, library, *cat)[0]
    rows = []
    for i in range(module.n_latent):
        moved = module.decoder("gene", z + shift * torch.eye(module.n_latent)[i], library, *cat)[0]
        rows.append(torch.log2(moved / base).mean(0).numpy())
    return np.stack(rows), base.mean(0).numpy() * 1e4


def _wide(loadings):
    return loadings.pivot(index="latent", columns="gene", values="log2_fold_change")


def test_loadings_are_a_tidy_table_of_every_latent_and_gene(trained):
    model, data = trained
    loadings = model.get_latent_gene_loadings()
    assert list(loadings.columns) == ["latent", "gene", "log2_fold_change", "expression_per_10k"]
    assert len(loadings) == 4 * data.n_vars
    assert list(loadings["latent"].cat.categories) == model.latent_names
    assert list(loadings["gene"][: data.n_vars]) == list(data.var_names)
    assert np.isfinite(loadings["log2_fold_change"]).all()
    assert loadings.attrs == {"shift": 1.0, "n_cells": data.n_obs}


def test_loadings_match_the_decoder_output(trained):
    model, data = trained
    loadings = model.get_latent_gene_loadings(shift=2.0, batch_size=17)
    expected, expression = _direct_loadings(model, data, 2.0)
    wide = _wide(loadings).loc[model.latent_names, list(data.var_names)]
    np.testing.assert_allclose(wide.to_numpy(), expected, rtol=1e-4, atol=1e-5)
    per_latent = loadings.groupby("latent", observed=True)["expression_per_10k"]
    for values in per_latent.apply(np.asarray):
        np.testing.assert_allclose(values, expression, rtol=1e-4)
    assert per_latent.sum().to_numpy() == pytest.approx(1e4)  # proportions sum to one
    # A latent moves genes both ways: the proportions sum to one.
    assert (wide.to_numpy().max(1) > 0).all() and (wide.to_numpy().min(1) < 0).all()


def test_loadings_on_a_subset_of_cells(trained):
    model, data = trained
    control = np.flatnonzero(data.obs["perturbation"].to_numpy() == "control")
    loadings = model.get_latent_gene_loadings(indices=control, shift=-1.0)
    assert loadings.attrs["n_cells"] == len(control)
    expected, _ = _direct_loadings(model, data, -1.0, cells=control)
    wide = _wide(loadings).loc[model.latent_names, list(data.var_names)]
    np.testing.assert_allclose(wide.to_numpy(), expected, rtol=1e-4, atol=1e-5)


def test_loadings_with_batches_keep_each_cells_batch():
    model, data = batched_model(n_latent=3, max_epochs=2)
    loadings = model.get_latent_gene_loadings(batch_size=25)
    expected, _ = _direct_loadings(model, data, 1.0)
    wide = _wide(loadings).loc[model.latent_names, list(data.var_names)]
    np.testing.assert_allclose(wide.to_numpy(), expected, rtol=1e-4, atol=1e-5)


def test_loadings_reject_bad_shift_and_genes(trained):
    model, data = trained
    with pytest.raises(ValueError, match="shift"):
        model.get_latent_gene_loadings(shift=0.0)
    with pytest.raises(ValueError, match="genes"):
        model.get_latent_gene_loadings(data[:, ::-1].copy())


def _model_with_known_prior(prior):
    data = small_simulation()
    scvi.settings.seed = 0
    sv.SparseVAE.setup_anndata(data, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(data, n_latent=4, n_hidden=16, prior=prior)
    model.train(max_epochs=1, **QUIET)
    return model


def test_target_table_lists_targets_with_pi_and_shift():
    model = _model_with_known_prior("spike_slab")
    prior = model.module.prior
    codes = {name: model.knowledge.categories.index(name) for name in model.perturbation_names}
    with torch.no_grad():
        prior.logits.fill_(-4.0)
        prior.mu.copy_(torch.arange(prior.mu.numel(), dtype=torch.float32).reshape(prior.mu.shape))
        prior.logits[codes["P0"], 1] = 2.0  # pi = 0.881
        prior.logits[codes["P0"], 3] = 0.5  # pi = 0.622
        prior.mu[codes["P0"], 1] = 0.5
        prior.mu[codes["P0"], 3] = -3.0
        prior.logits[codes["P2"], 0] = 1.0
    table = model.get_target_table()
    assert list(table.columns) == ["perturbation", "latent", "pi", "shift"]
    assert list(zip(table.perturbation, table.latent, strict=True)) == [
        ("P0", "latent_3"),  # |shift| 3 before |shift| 0.5
        ("P0", "latent_1"),
        ("P2", "latent_0"),
    ]
    np.testing.assert_allclose(
        table["pi"], [1 / (1 + np.exp(-0.5)), 1 / (1 + np.exp(-2)), 0.731], atol=1e-3
    )
    np.testing.assert_allclose(table["shift"][:2], [-3.0, 0.5])
    assert table["shift"][2] == float(prior.mu.detach()[codes["P2"], 0])
    strict = model.get_target_table(threshold=0.7)
    assert list(strict.latent) == ["latent_1", "latent_0"]


def test_target_table_of_mask_free_priors_uses_top_shifts():
    model = _model_with_known_prior("dense")
    table = model.get_target_table(n_top=2)
    assert table.groupby("perturbation").size().eq(2).all()
    assert (table["pi"] == 1.0).all()
    shifts = model.get_perturbation_shifts()
    for row in table.itertuples():
        assert row.shift == pytest.approx(shifts.loc[row.perturbation, row.latent])
    with pytest.raises(ValueError, match="threshold"):
        model.get_target_table(threshold=1.5)


def test_target_table_is_a_dataframe_with_known_perturbations(trained):
    model, _ = trained
    table = model.get_target_table()
    assert isinstance(table, pd.DataFrame)
    assert set(table.perturbation) <= set(model.perturbation_names)
    targets = model.get_intervention_targets()
    assert len(table) == int(targets.to_numpy().sum())
