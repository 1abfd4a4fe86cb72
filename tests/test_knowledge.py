"""What a fitted model knows (``SparseVAE.knowledge``): one place, one cache rule, declared rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import sparsevae as sv
from sparsevae.model import ModelKnowledge
from sparsevae.model._batch_norm import recalibrate_batch_norm
from sparsevae.module._priors import PRIOR_CLASSES, make_prior

from .conftest import QUIET, small_simulation


@pytest.fixture
def model():
    data = small_simulation()
    sv.SparseVAE.setup_anndata(data, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(data, n_latent=4, n_hidden=16)
    model.train(max_epochs=2, **QUIET)
    return model


def test_names_and_tables_come_from_one_place(model):
    knows = model.knowledge
    assert isinstance(knows, ModelKnowledge) and model.knowledge is knows
    assert knows.categories[knows.control_index] == model.control == "control"
    assert knows.perturbation_names == model.perturbation_names == [f"P{i}" for i in range(6)]
    assert knows.latent_names == model.latent_names
    pi = model.get_mask_probabilities()
    pd.testing.assert_frame_equal(knows.frame(knows.mask_probabilities()), pi)
    full = knows.per_category(pi)
    assert full.shape == (7, 4) and (full[knows.control_index] == 0).all()
    pd.testing.assert_frame_equal(knows.frame(full), pi, check_dtype=False)
    with pytest.raises(ValueError, match="readout"):
        knows.category_shifts("shifts")


def test_cached_latent_means_hold_until_the_networks_change(model):
    knows = model.knowledge
    assert knows.cached_latent_means is None
    means = knows.latent_means()
    assert knows.cached_latent_means is means  # kept, and read back without encoding
    with torch.no_grad():
        model.module.prior.mu.add_(1.0)  # the prior does not make the latents
    assert knows.cached_latent_means is means
    recalibrate_batch_norm(model)  # batch-norm statistics change the encoder's output
    assert knows.cached_latent_means is None
    again = knows.latent_means()
    assert again is not means and knows.cached_latent_means is again  # recomputed, kept
    model.train(max_epochs=1, n_epochs_kl_warmup=None, rotate_latents=False, **QUIET)
    assert knows.cached_latent_means is None  # trained: recomputed on the next read
    knows.latent_means()
    with torch.no_grad():
        next(model.module.z_encoder.parameters()).mul_(1.0)  # any write counts
    assert knows.cached_latent_means is None


def test_transfer_keeps_the_parents_latent_means(model):
    data = small_simulation(n_perturbations=8)
    new_cells = data[data.obs["perturbation"].isin(["P6", "P7", "control"])].copy()
    new = model.transfer(new_cells, max_epochs=2, sparse=True, **QUIET)
    kept = new.knowledge.cached_latent_means  # trained only prior rows: still valid
    assert kept is not None
    parent = model.knowledge.latent_means()
    pd.testing.assert_frame_equal(kept.loc[parent.index], parent)
    assert not kept.loc[["P6", "P7"]].isna().any().any()
    # the depth model's library sizes: the parent's, and the new ones from the transfer cells
    libraries = new.knowledge.log_library_means()
    pd.testing.assert_series_equal(
        libraries.loc[parent.index], model.knowledge.log_library_means(), check_names=False
    )
    labels = new_cells.obs["perturbation"].astype(str).to_numpy()
    by_hand = np.log(np.asarray(new_cells.X.sum(axis=1)).ravel()[labels == "P6"]).mean()
    assert libraries.loc["P6"] == pytest.approx(by_hand, rel=1e-6)
    assert new.knowledge.library_shifts()[new.knowledge.control_index] == 0


@pytest.mark.parametrize("name", sorted(PRIOR_CLASSES))
def test_priors_declare_every_per_category_tensor(name):
    """Exactly the declared tensors grow with the number of categories (never guessed)."""
    prior = make_prior(name, 3, 6, 0)
    small = prior.state_dict()
    large = make_prior(name, 7, 6, 0).state_dict()
    grows = {key for key in small if small[key].shape != large[key].shape}
    assert grows == set(prior.PER_CATEGORY)  # the instance's: SAMS-VAE's depends on its guide
    for key in grows:
        assert small[key].shape[0] == 3 and large[key].shape[0] == 7
