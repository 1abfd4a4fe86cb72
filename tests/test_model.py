from __future__ import annotations

import anndata
import numpy as np
import pandas as pd
import pytest
import scvi
import torch

import sparsevae as sv

from .conftest import QUIET, small_simulation


def test_getters_shapes_and_names(trained):
    model, data = trained
    z = model.get_latent_representation()
    assert z.shape == (data.n_obs, 4) and np.isfinite(z).all()
    names = [f"P{i}" for i in range(6)]
    latents = [f"latent_{i}" for i in range(4)]
    for frame in (
        model.get_mask_probabilities(),
        model.get_perturbation_shifts(),
        model.get_intervention_targets(),
    ):
        assert list(frame.index) == names
        assert list(frame.columns) == latents
    pi = model.get_mask_probabilities()
    assert ((pi >= 0) & (pi <= 1)).all().all()
    targets = model.get_intervention_targets(threshold=0.5)
    assert targets.dtypes.eq(bool).all()
    assert (targets == (pi > 0.5)).all().all()
    shifts = model.get_perturbation_shifts()
    assert (shifts.to_numpy()[~targets.to_numpy()] == 0).all()


def test_training_loss_is_finite(trained):
    model, _ = trained
    for key in ("train_loss", "elbo_train", "reconstruction_loss_train", "kl_local_train"):
        values = model.history[key].to_numpy(dtype=float)
        assert len(values) == 3 and np.isfinite(values).all()
    validation = model.history["elbo_validation"].to_numpy(dtype=float)
    assert len(validation) == 3 and np.isfinite(validation).all()


def test_validation_elbo_is_the_training_objective_on_held_out_cells(adata):
    """Validation: global term per *training* cell, expected KL over the masks (not hard)."""
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    scvi.settings.seed = 0
    model = sv.SparseVAE(adata, n_latent=4, n_hidden=16)
    # the last validation ran with the statistics training left: keep them to recompute it
    model.train(
        max_epochs=2,
        train_size=0.8,
        check_val_every_n_epoch=1,
        freeze_masks_at=None,
        recalibrate_batch_norm=False,
        **QUIET,
    )
    history = {k: float(v.iloc[-1, 0]) for k, v in model.history.items() if len(v)}
    n_train = len(model.train_indices)
    for mode in ("train", "validation"):
        expected = (
            history[f"reconstruction_loss_{mode}"]
            + history[f"kl_local_{mode}"]
            + history[f"kl_global_{mode}"] / n_train
        )
        assert history[f"elbo_{mode}"] == pytest.approx(expected, rel=1e-5)
    # the KL of the validation cells under the prior's training mode (expected over masks)
    module = model.module
    cells = adata[model.validation_indices]
    tensors = {
        "X": torch.as_tensor(cells.X.toarray() if hasattr(cells.X, "toarray") else cells.X),
        "perturbation": torch.as_tensor(
            adata.obs["_scvi_perturbation"].to_numpy()[model.validation_indices]
        ),
    }
    module.eval()
    module.prior.train()
    with torch.no_grad():
        qz = module.encode(tensors["X"].float())
        expected_kl = module.prior.kl(qz, tensors["perturbation"].reshape(-1, 1)).mean().item()
        module.prior.eval()
        hard_kl = module.prior.kl(qz, tensors["perturbation"].reshape(-1, 1)).mean().item()
    assert history["kl_local_validation"] == pytest.approx(expected_kl, rel=1e-4)
    assert expected_kl != pytest.approx(hard_kl, rel=1e-4)


def test_training_loss_is_the_negative_binomial_likelihood_of_scvis_decoder(adata):
    """The training loss (log means from the decoder's logits, per-gene terms hoisted) equals
    torch's negative binomial of scvi-tools' DecoderSCVI output, in training mode.
    """
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(adata, n_latent=4, n_hidden=16)
    module = model.module.double()  # float64: the check is of the algebra
    module.train()
    tensors = next(iter(model._make_data_loader(adata=adata, batch_size=64)))
    tensors = {k: v.double() if v.is_floating_point() else v for k, v in tensors.items()}
    inference, _, loss = module(tensors)
    with torch.no_grad():
        _, _, px_rate, _ = module.decoder("gene", inference["z"], inference["library"])
        theta = torch.exp(module.log_theta())
        nb = torch.distributions.NegativeBinomial(
            total_count=theta, logits=torch.log(px_rate) - torch.log(theta)
        )
        expected = -nb.log_prob(tensors["X"]).sum(-1)
    (reconstruction,) = loss.reconstruction_loss.values()
    np.testing.assert_allclose(reconstruction.detach(), expected, rtol=1e-9)


@pytest.mark.parametrize("training", [True, False])
def test_training_path_encodes_as_scvis_encoder(adata, training):
    """The training step runs scvi's Encoder layer by layer (no covariate concatenation, no
    argument checks): the same q(z | x) as calling the Encoder, dropout masks included.
    """
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(adata, n_latent=4, n_hidden=16, dropout_rate=0.3)
    module = model.module
    module.train(training)
    x = next(iter(model._make_data_loader(adata=adata, batch_size=64)))["X"]
    torch.manual_seed(0)
    expected, _ = module.z_encoder(torch.log1p(x))
    torch.manual_seed(0)
    qz = module.encode(x)
    assert torch.equal(qz.loc, expected.loc) and torch.equal(qz.scale, expected.scale)
    if training:  # dropout was active: a different seed gives a different q
        torch.manual_seed(1)
        assert not torch.equal(module.encode(x).loc, expected.loc)


def test_save_load_gives_identical_outputs(trained, tmp_path):
    model, data = trained
    model.save(tmp_path / "model")
    loaded = sv.SparseVAE.load(tmp_path / "model", adata=data)
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )
    pd.testing.assert_frame_equal(loaded.get_mask_probabilities(), model.get_mask_probabilities())
    pd.testing.assert_frame_equal(loaded.get_perturbation_shifts(), model.get_perturbation_shifts())
    assert loaded.prior_name == "spike_slab" and loaded.control == "control"


def test_write_results_survives_h5ad_round_trip(trained, tmp_path):
    model, data = trained
    data = data.copy()
    sv.tl.write_results(data, model, key_added="svp")
    path = tmp_path / "results.h5ad"
    data.write_h5ad(path)
    back = anndata.read_h5ad(path)
    np.testing.assert_allclose(back.obsm["X_svp"], model.get_latent_representation())
    pd.testing.assert_frame_equal(
        back.uns["svp"]["pi"], model.get_mask_probabilities(), check_names=False
    )
    pd.testing.assert_frame_equal(
        back.uns["svp"]["shift"], model.get_perturbation_shifts(), check_names=False
    )
    params = back.uns["svp"]["params"]
    assert params["prior"] == "spike_slab" and params["n_latent"] == 4
    assert params["alpha"] == 6.0  # default alpha = number of perturbations


@pytest.mark.parametrize(
    ("prior", "beta"), [("l1", 1.0), ("dense", 1.0), ("standard", 1.0), ("standard", 8.0)]
)
def test_baselines_share_the_module_and_differ_in_the_prior(prior, beta):
    data = small_simulation()
    sv.SparseVAE.setup_anndata(data, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(data, n_latent=4, n_hidden=16, prior=prior, beta=beta)
    reference = sv.SparseVAE(data, n_latent=4, n_hidden=16)
    shared = {k for k in reference.module.state_dict() if not k.startswith("prior.")}
    assert shared == {k for k in model.module.state_dict() if not k.startswith("prior.")}
    model.train(max_epochs=2, **QUIET)
    assert np.isfinite(model.history["train_loss"].to_numpy(dtype=float)).all()
    pi = model.get_mask_probabilities()
    targets = model.get_intervention_targets()
    assert pi.shape == targets.shape == (6, 4)
    if prior in ("dense", "standard"):
        assert (pi.to_numpy() == (1.0 if prior == "dense" else 0.0)).all()
        assert (targets.sum(axis=1) == 2).all()  # top-2 |shift| readout
    if prior == "standard":
        # empirical shift: mean latent of a perturbation minus that of control
        z = model.get_latent_representation()
        labels = data.obs["perturbation"].to_numpy()
        expected = z[labels == "P0"].mean(0) - z[labels == "control"].mean(0)
        np.testing.assert_allclose(
            model.get_perturbation_shifts().loc["P0"].to_numpy(), expected, atol=1e-5
        )


def test_beta_scales_the_kl_term():
    data = small_simulation()
    sv.SparseVAE.setup_anndata(data, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(data, n_latent=4, n_hidden=16, prior="standard", beta=8.0)
    model.module.eval()
    tensors = next(iter(model._make_data_loader(data, batch_size=64)))
    torch.manual_seed(0)
    _, _, out = model.module(tensors, loss_kwargs={"kl_weight": 1.0})
    expected = out.reconstruction_loss["reconstruction_loss"] + 8.0 * out.kl_local["kl_local"]
    assert out.loss.item() == pytest.approx(expected.mean().item(), rel=1e-5)


def test_invalid_model_arguments(adata):
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    with pytest.raises(ValueError, match="prior='spike'"):
        sv.SparseVAE(adata, prior="spike")
    with pytest.raises(ValueError, match="beta"):
        sv.SparseVAE(adata, beta=0)


@pytest.mark.parametrize("freeze_masks_at", [0.0, None])
def test_frozen_masks_stop_learning_the_graph(adata, freeze_masks_at):
    scvi.settings.seed = 0
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(adata, n_latent=4, n_hidden=16)
    model.train(max_epochs=3, freeze_masks_at=freeze_masks_at, **QUIET)
    logits = model.module.prior.logits.detach()
    kl_global = model.history["kl_global_train"].to_numpy(dtype=float)
    if freeze_masks_at == 0.0:  # frozen from the start: the graph stays at its initial state
        assert model.module.prior.masks_frozen
        assert torch.all(logits == 5.0)
        assert np.all(kl_global == 0.0)
    else:
        assert not model.module.prior.masks_frozen
        assert torch.any(logits != 5.0)
        assert np.all(kl_global > 0.0)


def test_default_alpha_is_the_priors(adata):
    """sVAE+: K (the paper); sVAE's published penalty: 1 (tuned by held-out NLL)."""
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    n_perturbed = len(adata.obs["perturbation"].cat.categories) - 1
    spike = sv.SparseVAE(adata, n_latent=3)
    l1 = sv.SparseVAE(adata, n_latent=3, prior="l1")
    assert spike.module.prior.hyperparameters()["alpha"] == n_perturbed
    assert l1.module.prior.hyperparameters()["alpha"] == 1.0
    assert sv.SparseVAE(adata, n_latent=3, prior="l1", alpha=7.0).module.prior.alpha == 7.0
