"""SAMS-VAE (``prior="sams-vae"``): its terms against the reference's, and the public API."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from scvi.distributions import NegativeBinomial
from torch.distributions import Bernoulli, Normal, kl_divergence

import sparsevae as sv
from sparsevae._constants import METHODS, MODULE_KEYS
from sparsevae.cli import main
from sparsevae.module import SAMSPrior, SparseShiftVAE, make_prior

from .conftest import QUIET, assert_transfer_kept_old_parameters, small_simulation

HELDOUT = ["P4", "P5"]


def _random_prior(guide="mean_field", seed=0, **kwargs) -> SAMSPrior:
    torch.manual_seed(seed)
    prior = SAMSPrior(4, 3, 0, guide=guide, embedding_encoder_n_hidden=8, **kwargs)
    with torch.no_grad():
        prior.logits.copy_(2 * torch.randn_like(prior.logits))
        if guide == "mean_field":
            prior.e_loc.copy_(2 * torch.randn_like(prior.e_loc))
            prior.e_log_scale.copy_(0.5 * torch.randn_like(prior.e_log_scale))
    return prior


# ---- the terms of the objective ----------------------------------------------------------
def test_cell_mean_is_the_sum_of_masked_embeddings_and_one_draw_per_perturbation():
    prior = _random_prior()
    codes = torch.tensor([[0, -1], [1, -1], [2, -1], [1, 3], [1, -1]])
    prior.eval()
    masks = (prior.logits > 0).float()
    table = masks * prior.e_loc.detach()
    expected = torch.stack([0 * table[0], table[1], table[2], table[1] + table[3], table[1]])
    torch.testing.assert_close(prior.cell_mean(codes), expected)
    prior.train()
    torch.manual_seed(3)
    drawn = prior.cell_mean(codes)
    assert torch.equal(drawn[0], torch.zeros(3))  # control: no offset
    assert torch.equal(drawn[1], drawn[4])  # one draw per perturbation, shared by its cells
    assert not torch.equal(drawn, prior.cell_mean(codes))  # a new draw each step


@pytest.mark.parametrize("guide", ["mean_field", "correlated"])
def test_penalty_is_the_expectation_of_the_references_single_draw_terms(guide):
    """Closed-form KLs = the mean of the reference's ``log q - log p`` at guide draws.

    The reference (loss_modules.py, PerturbationPlatedELBOLossModule.loss) scores one draw of
    m and e per step under p and q; summed over the perturbations (control excluded).
    """
    prior = _random_prior(guide)
    prior.eval()
    torch.manual_seed(0)
    n_draws = 20_000
    logits = prior.logits.detach()[1:]
    p_m, q_m = Bernoulli(probs=torch.full_like(logits, 0.01)), Bernoulli(logits=logits)
    masks = q_m.sample((n_draws,))
    estimate = (q_m.log_prob(masks) - p_m.log_prob(masks)).sum(dim=(1, 2))
    with torch.no_grad():
        if guide == "mean_field":
            loc = prior.e_loc[1:].expand(n_draws, -1, -1)
            scale = prior.e_log_scale[1:].exp().expand(n_draws, -1, -1) + 1e-4
        else:  # the reference's MLP of [m_t, one_hot(t)], by hand
            rows = torch.arange(1, 4).repeat(n_draws)
            hidden = torch.nn.functional.leaky_relu(
                prior.e_input_mask(masks.reshape(-1, 3)) + prior.e_input_rows[rows]
            )
            for layer in prior.e_hidden:
                hidden = torch.nn.functional.leaky_relu(layer(hidden)) + hidden
            loc = prior.e_mean(hidden).reshape(n_draws, 3, 3)
            scale = (torch.exp(prior.e_log_var(hidden)) + 1e-4).sqrt().reshape(n_draws, 3, 3)
    q_e = Normal(loc, scale)
    e = q_e.sample()
    estimate = estimate + (q_e.log_prob(e) - Normal(0.0, 1.0).log_prob(e)).sum(dim=(1, 2))
    prior.train()
    with torch.no_grad():
        closed = torch.stack([prior.penalty() for _ in range(2_000)]).mean()
    standard_error = estimate.std() / math.sqrt(n_draws)
    assert abs(closed - estimate.mean()) < 4 * standard_error + 0.02


@pytest.mark.parametrize("mean_field_encoder", [False, True])
def test_the_kl_term_is_the_basal_kl_with_the_encoders_own_draw(mean_field_encoder):
    torch.manual_seed(0)
    module = SparseShiftVAE(
        n_input=7,
        n_perturbations=4,
        control_index=0,
        n_hidden=8,
        n_latent=3,
        prior="sams-vae",
        prior_kwargs={"mean_field_encoder": mean_field_encoder},
    )
    first = module.z_encoder.encoder.fc_layers[0][0]
    assert first.in_features == 7 + (0 if mean_field_encoder else 3)
    x = torch.poisson(torch.full((5, 7), 4.0)) + 1
    tensors = {"X": x, "perturbation": torch.tensor([[0.0], [1.0], [2.0], [1.0], [3.0]])}
    module.train()
    inference, generative, loss = module(tensors)
    offset = inference[MODULE_KEYS.OFFSET_KEY]
    assert torch.equal(offset[0], torch.zeros(3)) and torch.equal(offset[1], offset[3])
    qz, pz = inference[MODULE_KEYS.QZ_KEY], generative[MODULE_KEYS.PZ_KEY]
    assert torch.equal(pz.loc, offset)  # the KL compares with the encoder's own draw
    basal = Normal(qz.loc - offset, qz.scale)
    expected = kl_divergence(basal, Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(loss.kl_local["kl_local"], expected)
    # the encoder of z_basal reads the offset unless mean_field_encoder
    module.eval()
    with torch.no_grad():
        base = module.encode(x, offset=torch.zeros(5, 3)).loc
        moved = module.encode(x, offset=torch.ones(5, 3)).loc - 1.0
    assert torch.allclose(base, moved) == mean_field_encoder
    with pytest.raises(ValueError, match="needs the cells' perturbation codes"):
        module.encode(x)


def test_marginal_ll_is_the_iwelbo_with_the_readout_offset():
    torch.manual_seed(0)
    module = SparseShiftVAE(
        n_input=7, n_perturbations=4, control_index=0, n_hidden=8, n_latent=3, prior="sams-vae"
    )
    with torch.no_grad():
        module.prior.logits.copy_(3 * torch.randn_like(module.prior.logits))
        module.prior.e_loc.copy_(2 * torch.randn_like(module.prior.e_loc))
    module.eval()
    x = torch.poisson(torch.full((3, 7), 4.0)) + 1
    codes = torch.tensor([[0.0], [2.0], [3.0]])
    n_particles = 6
    torch.manual_seed(1)
    value = module.marginal_ll({"X": x, "perturbation": codes}, n_mc_samples=n_particles)
    torch.manual_seed(1)
    with torch.no_grad():
        offset = module.prior.cell_mean(codes.long())
        qz = module.encode(x, offset=offset)
        z = qz.loc.unsqueeze(1) + qz.scale.unsqueeze(1) * torch.randn(3, n_particles, 3)
        rho = torch.softmax(
            module.decoder.px_scale_decoder[0](module.decoder.px_decoder(z.reshape(-1, 3))), -1
        ).reshape(3, n_particles, 7)
        library = x.sum(-1, keepdim=True).unsqueeze(1)
        theta = torch.exp(module.px_r)
        log_px = NegativeBinomial(mu=library * rho, theta=theta).log_prob(x.unsqueeze(1)).sum(-1)
        log_pz = Normal(offset.unsqueeze(1), 1.0).log_prob(z).sum(-1)
        log_qz = Normal(qz.loc.unsqueeze(1), qz.scale.unsqueeze(1)).log_prob(z).sum(-1)
        direct = torch.logsumexp(log_px + log_pz - log_qz, dim=1) - math.log(n_particles)
    torch.testing.assert_close(value, direct, rtol=1e-4, atol=1e-3)


def test_options_defaults_and_errors():
    prior = make_prior("sams-vae", 5, 4, 0)
    assert (prior.mask_prior_prob, prior.embedding_prior_scale, prior.guide) == (
        0.01,
        1.0,
        "mean_field",
    )
    assert prior.encoder_sees_offset and torch.equal(
        prior.mask_probabilities(), torch.full((5, 4), 0.5)
    )
    assert METHODS["sams-vae"] == {"prior": "sams-vae"}
    for bad, match in (
        ({"mask_prior_prob": 0.0}, "mask_prior_prob"),
        ({"mask_prior_prob": 1.0}, "mask_prior_prob"),
        ({"embedding_prior_scale": 0.0}, "embedding_prior_scale"),
        ({"guide": "full"}, "guide"),
        ({"guide": "correlated", "embedding_encoder_n_layers": 0}, "embedding_encoder_n_layers"),
    ):
        with pytest.raises(ValueError, match=match):
            make_prior("sams-vae", 5, 4, 0, **bad)
    with pytest.raises(ValueError, match="rotate_latents=True"):
        prior.resolve_rotation(True)
    assert prior.resolve_rotation(None) is False  # the reference has no rotation
    # the correlated guide declares its own per-category table
    correlated = make_prior("sams-vae", 3, 4, 0, guide="correlated")
    grows = {
        key
        for key, value in correlated.state_dict().items()
        if value.shape
        != make_prior("sams-vae", 7, 4, 0, guide="correlated").state_dict()[key].shape
    }
    assert grows == set(correlated.PER_CATEGORY) == {"is_perturbed", "logits", "e_input_rows"}


# ---- the public API ------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["mean_field", "correlated"])
def fitted(request):
    data = small_simulation()
    scvi.settings.seed = 0
    sv.SparseVAE.setup_anndata(data, perturbation_key="perturbation", control="control")
    if request.param == "mean_field":
        model = sv.SparseVAE(data, prior="sams-vae")  # only the required arguments
    else:
        model = sv.SparseVAE(data, prior="sams-vae", prior_kwargs={"guide": "correlated"})
    model.train(max_epochs=3, **QUIET)
    return model, data


def test_trains_with_defaults_and_answers_every_getter(fitted, tmp_path):
    model, data = fitted
    for key in ("train_loss", "elbo_train", "kl_local_train", "kl_global_train"):
        assert np.isfinite(model.history[key].to_numpy(dtype=float)).all(), key
    n_latent, names = 15, model.perturbation_names
    assert model.get_latent_representation().shape == (data.n_obs, n_latent)
    pi = model.get_mask_probabilities()
    shifts = model.get_perturbation_shifts()
    targets = model.get_intervention_targets()
    assert pi.shape == shifts.shape == targets.shape == (len(names), n_latent)
    assert ((pi.to_numpy() > 0) & (pi.to_numpy() < 1)).all()
    np.testing.assert_array_equal(targets.to_numpy(), pi.to_numpy() > 0.5)
    assert (shifts.to_numpy()[~targets.to_numpy()] == 0).all()
    assert np.isfinite(model.get_interventional_nll(n_particles=5)).all()
    assert np.isfinite(model.get_marginal_ll(n_mc_samples=5))
    loadings = model.get_latent_gene_loadings()
    assert np.isfinite(loadings["log2_fold_change"]).all()
    assert model.get_treatment_effect(perturbation="P1").shape[0] == data.n_vars
    predicted = model.predict_perturbations(["P1"])
    assert set(predicted.obs["perturbation"].astype(str)) >= {"P1"}
    sv.tl.write_results(data, model, key_added="sams")
    assert data.obsm["X_sams"].shape == (data.n_obs, n_latent)

    model.save(tmp_path / "model")
    loaded = sv.SparseVAE.load(tmp_path / "model", adata=data)
    assert loaded.module.prior.hyperparameters() == model.module.prior.hyperparameters()
    pd.testing.assert_frame_equal(loaded.get_perturbation_shifts(), shifts)
    for key, value in model.module.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key].cpu(), value.cpu()), key
    scvi.settings.seed = 0
    first = model.get_interventional_nll(n_particles=5)
    scvi.settings.seed = 0
    np.testing.assert_allclose(loaded.get_interventional_nll(n_particles=5), first, rtol=1e-6)


def test_trains_on_combinations_and_predicts_a_zero_shot_pair():
    data = small_simulation()
    labels = data.obs["perturbation"].astype(str).to_numpy().copy()
    rows = np.flatnonzero(labels == "P4")
    labels[rows[: len(rows) // 2]] = "P0+P1"
    data.obs["perturbation"] = pd.Categorical(labels)
    scvi.settings.seed = 0
    sv.SparseVAE.setup_anndata(
        data, perturbation_key="perturbation", control="control", combination_delimiter="+"
    )
    model = sv.SparseVAE(data, n_latent=4, n_hidden=16, prior="sams-vae")
    model.train(max_epochs=2, **QUIET)
    assert np.isfinite(model.get_interventional_nll(n_particles=3)).all()
    shift = model.get_combination_shift("P2+P3", source="prior").to_numpy()
    singles = model.get_perturbation_shifts().loc[["P2", "P3"]].to_numpy().sum(axis=0)
    np.testing.assert_allclose(shift, singles, rtol=1e-6)


@pytest.mark.parametrize(
    ("guide", "sparse"), [("mean_field", True), ("mean_field", False), ("correlated", True)]
)
def test_transfer_learns_only_the_new_perturbations(guide, sparse):
    data = small_simulation()
    labels = data.obs["perturbation"].astype(str)
    train = data[~labels.isin(HELDOUT).to_numpy()].copy()
    heldout = data[labels.isin(HELDOUT).to_numpy()].copy()
    scvi.settings.seed = 0
    sv.SparseVAE.setup_anndata(train, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(
        train, n_latent=4, n_hidden=16, prior="sams-vae", prior_kwargs={"guide": guide}
    )
    model.train(max_epochs=2, **QUIET)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    new = model.transfer(heldout.copy(), sparse=sparse, max_epochs=3, **QUIET)
    assert new.perturbation_names == model.perturbation_names + HELDOUT
    assert new.module.prior.hyperparameters() == model.module.prior.hyperparameters()
    after = new.module.state_dict()
    n_old = assert_transfer_kept_old_parameters(model, before, after)
    pi = new.get_mask_probabilities().loc[HELDOUT].to_numpy()
    if sparse:  # learned from their start (pi = 0.5)
        assert (pi != 0.5).any(axis=1).all()
    else:  # every edge on, the shifts their cells' mean latents
        assert (pi > 0.99).all()
        means = new.knowledge.latent_means().loc[HELDOUT].to_numpy()
        np.testing.assert_allclose(after["prior.e_loc"][n_old:].numpy(), means, rtol=1e-5)
    assert np.isfinite(new.get_interventional_nll(heldout.copy(), n_particles=5)).all()


def test_cli_fits_sams_vae(tmp_path):
    data = small_simulation()
    path = tmp_path / "screen.h5ad"
    data.write_h5ad(path)
    out = tmp_path / "fit"
    argv = ["fit", str(path), "--perturbation-key", "perturbation", "--control", "control"]
    assert main([*argv, "--prior", "sams-vae", "--max-epochs", "2", "--out", str(out)]) == 0
    model = sv.SparseVAE.load(str(out / "model"), adata=data)
    assert model.prior_name == "sams-vae"
