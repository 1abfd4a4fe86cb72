"""Label-conditional priors with learned variances: ``"ivae-var"`` (iVAE) and ``"clap"``."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scvi
import torch
import torch.nn.functional as F
from scvi.distributions import NegativeBinomial
from torch.distributions import MultivariateNormal, Normal, kl_divergence

import sparsevae as sv
from sparsevae._constants import METHODS
from sparsevae.module import (
    CLAPPrior,
    DensePrior,
    DenseVariancePrior,
    SparseShiftVAE,
    make_prior,
)
from sparsevae.module import _readouts as readouts
from sparsevae.module._label_priors import MAX_ABS_LOG_VARIANCE
from sparsevae.module._prior_base import Minibatch

from .conftest import QUIET, assert_transfer_kept_old_parameters, small_simulation

NAMES = ["ivae-var", "clap"]
HELDOUT = ["P4", "P5"]


def _random_clap(n_perturbations=4, n_latent=5, control_index=0, n_style=2, seed=0, **kwargs):
    torch.manual_seed(seed)
    prior = CLAPPrior(n_perturbations, n_latent, control_index, n_style=n_style, **kwargs)
    with torch.no_grad():
        prior.mu.copy_(2 * torch.randn_like(prior.mu))
        prior.log_var.copy_(torch.randn_like(prior.log_var))
        prior.style_loc.copy_(torch.randn_like(prior.style_loc))
        prior.style_tril.copy_(0.5 * torch.randn_like(prior.style_tril))
    return prior


def _random_dense_var(n_perturbations=4, n_latent=3, control_index=0, seed=0):
    torch.manual_seed(seed)
    prior = DenseVariancePrior(n_perturbations, n_latent, control_index)
    with torch.no_grad():
        prior.mu.copy_(2 * torch.randn_like(prior.mu))
        prior.log_var.copy_(torch.randn_like(prior.log_var))
    return prior


def _clap_covariance(prior: CLAPPrior, log_var_core: torch.Tensor) -> torch.Tensor:
    """The full prior covariance of one cell: diag(D_a) and G, block-diagonal."""
    raw = prior.style_tril[0].detach()
    tril = torch.tril(raw, -1) + torch.diag(torch.exp(torch.diagonal(raw)))
    return torch.block_diag(torch.diag(torch.exp(log_var_core)), tril @ tril.T)


# ---- iVAE with learned variances -------------------------------------------------------
def test_dense_var_kl_and_log_density_by_hand():
    prior = _random_dense_var()
    with torch.no_grad():
        prior.log_var[2, 1] = 9.0  # beyond the clamp: used as 7
    codes = torch.tensor([0, 1, 2, 3, 1])
    qz = Normal(torch.randn(5, 3), torch.rand(5, 3) + 0.3)
    mu = prior.mu.detach().numpy()
    log_var = np.clip(prior.log_var.detach().numpy(), -7, 7)
    mean, var = mu[codes], np.exp(log_var[codes])
    mean[0], var[0] = 0.0, 1.0  # control: N(0, I) whatever its row holds
    m, s2 = qz.loc.numpy(), qz.scale.numpy() ** 2
    expected = 0.5 * (s2 / var + (m - mean) ** 2 / var - 1 + np.log(var) - np.log(s2)).sum(-1)
    np.testing.assert_allclose(prior.kl(qz, codes).detach().numpy(), expected, rtol=1e-5)
    # the module's path: pz drawn by generative (kl_is_closed_form is False)
    assert not prior.kl_is_closed_form
    pz = prior.distribution(codes)
    np.testing.assert_allclose(prior.kl(qz, codes, pz).detach().numpy(), expected, rtol=1e-5)

    z = torch.randn(5, 4, 3)
    log_density = prior.log_density(z, codes).detach()
    assert log_density.shape == (5, 4)
    for cell in range(5):
        mvn = MultivariateNormal(
            torch.as_tensor(mean[cell]), torch.diag(torch.as_tensor(var[cell]))
        )
        direct = mvn.log_prob(z[cell]) + 1.5 * math.log(2 * math.pi)
        torch.testing.assert_close(log_density[cell], direct, rtol=1e-5, atol=1e-5)


def test_dense_var_sets_add_means_and_log_variances_and_control_is_fixed():
    prior = _random_dense_var(n_perturbations=5)
    with torch.no_grad():
        prior.mu[0] = 5.0  # control's row: never used
        prior.log_var[0] = 3.0
        prior.log_var[3, 0] = 6.0
        prior.log_var[4, 0] = 6.0  # a pair of 6 + 6 is clamped to 7
    codes = torch.tensor([[1, 2], [3, -1], [0, -1], [-1, -1], [3, 4]])
    mean, log_var = prior.cell_moments(codes)
    mu, lv = prior.mu.detach(), prior.log_var.detach()
    torch.testing.assert_close(mean[0], mu[1] + mu[2])
    torch.testing.assert_close(log_var[0], lv[1] + lv[2])
    torch.testing.assert_close(mean[1], mu[3])
    torch.testing.assert_close(log_var[1], lv[3])
    for cell in (2, 3):  # control and the empty set: N(0, I)
        assert torch.equal(mean[cell], torch.zeros(3)) and torch.equal(
            log_var[cell], torch.zeros(3)
        )
    assert log_var[4, 0].item() == MAX_ABS_LOG_VARIANCE
    torch.testing.assert_close(log_var[4, 1:], lv[3, 1:] + lv[4, 1:])
    # the set's distribution: variances multiply
    pz = prior.distribution(codes)
    torch.testing.assert_close(pz.scale[0].square(), lv[1].exp() * lv[2].exp())
    # readouts as iVAE: |mu| of perturbed rows, control 0
    shifts = readouts.evaluation_shifts(prior, lambda: None)
    assert torch.equal(shifts[0], torch.zeros(3)) and torch.equal(shifts[1:], mu[1:])


def test_dense_var_at_unit_variance_is_dense():
    dense_var = _random_dense_var()
    with torch.no_grad():
        dense_var.log_var.zero_()
    dense = DensePrior(4, 3, 0)
    with torch.no_grad():
        dense.mu.copy_(dense_var.mu)
    codes = torch.tensor([0, 1, 2, 3])
    qz = Normal(torch.randn(4, 3), torch.rand(4, 3) + 0.3)
    torch.testing.assert_close(dense_var.kl(qz, codes), dense.kl(qz, codes))
    z = torch.randn(4, 2, 3)
    torch.testing.assert_close(dense_var.log_density(z, codes), dense.log_density(z, codes))


def test_dense_var_without_control_every_row_is_free():
    prior = _random_dense_var(control_index=None)
    mean, log_var = prior.cell_moments(torch.tensor([0, 1]))
    assert torch.equal(mean, prior.mu[:2]) and torch.equal(log_var, prior.log_var[:2])


# ---- CLAP ------------------------------------------------------------------------------
def test_clap_kl_is_the_closed_form_of_core_and_full_covariance_style():
    prior = _random_clap()
    assert prior.kl_is_closed_form
    codes = torch.tensor([0, 1, 2, 3, 3])
    qz = Normal(torch.randn(5, 5), torch.rand(5, 5) + 0.3)
    kl = prior.kl(qz, codes).detach()
    mu, lv = prior.mu.detach(), prior.log_var.detach()
    raw = prior.style_tril[0].detach()
    tril = torch.tril(raw, -1) + torch.diag(torch.exp(torch.diagonal(raw)))
    for cell, code in enumerate(codes.tolist()):
        core_loc = torch.zeros(3) if code == 0 else mu[code]
        core_scale = torch.ones(3) if code == 0 else torch.exp(0.5 * lv[code])
        core = kl_divergence(
            Normal(qz.loc[cell, :3], qz.scale[cell, :3]), Normal(core_loc, core_scale)
        ).sum()
        style = kl_divergence(
            MultivariateNormal(qz.loc[cell, 3:], torch.diag(qz.scale[cell, 3:].square())),
            MultivariateNormal(prior.style_loc[0].detach(), scale_tril=tril),
        )
        torch.testing.assert_close(kl[cell], core + style, rtol=1e-5, atol=1e-5)
    # gradients reach every prior parameter of the KL (the classifier is not in it)
    prior.kl(qz, codes).sum().backward()
    for param in (prior.mu, prior.log_var, prior.style_loc, prior.style_tril):
        assert param.grad is not None and param.grad.abs().sum() > 0
    assert prior.classifier.weight.grad is None


def test_clap_log_density_uses_the_full_covariance():
    prior = _random_clap()
    codes = torch.tensor([[0, -1], [1, -1], [2, 3]])  # control, a single, a pair
    z = torch.randn(3, 6, 5)
    log_density = prior.log_density(z, codes).detach()
    assert log_density.shape == (3, 6)
    mu, lv = prior.mu.detach(), prior.log_var.detach()
    core_means = [torch.zeros(3), mu[1], mu[2] + mu[3]]
    core_log_vars = [torch.zeros(3), lv[1], lv[2] + lv[3]]
    for cell in range(3):
        loc = torch.cat([core_means[cell], prior.style_loc[0].detach()])
        mvn = MultivariateNormal(loc, _clap_covariance(prior, core_log_vars[cell]))
        direct = mvn.log_prob(z[cell]) + 2.5 * math.log(2 * math.pi)
        torch.testing.assert_close(log_density[cell], direct, rtol=1e-5, atol=1e-5)
    # cell_mean: the set's core mean and m; distribution: the marginal diagonal
    mean = prior.cell_mean(codes).detach()
    torch.testing.assert_close(mean[2], torch.cat([mu[2] + mu[3], prior.style_loc[0].detach()]))
    pz = prior.distribution(codes)
    covariance = _clap_covariance(prior, core_log_vars[2])
    torch.testing.assert_close(pz.scale[2].detach().square(), torch.diagonal(covariance))
    torch.testing.assert_close(pz.loc.detach(), mean)


def test_clap_with_no_style_is_dense_var_plus_the_predictor():
    clap = _random_clap(n_latent=3, n_style=0)
    dense = DenseVariancePrior(4, 3, 0)
    with torch.no_grad():
        dense.mu.copy_(clap.mu)
        dense.log_var.copy_(clap.log_var)
    codes = torch.tensor([0, 1, 2, 3])
    qz = Normal(torch.randn(4, 3), torch.rand(4, 3) + 0.3)
    torch.testing.assert_close(clap.kl(qz, codes), dense.kl(qz, codes))
    z = torch.randn(4, 2, 3)
    torch.testing.assert_close(clap.log_density(z, codes), dense.log_density(z, codes))


def test_clap_readouts_shift_core_latents_only():
    prior = _random_clap(n_perturbations=4, n_latent=5, control_index=1, n_style=2)
    pi = prior.mask_probabilities()
    expected = torch.tensor([[1.0, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0]])
    assert torch.equal(pi, expected)
    shifts = readouts.evaluation_shifts(prior, lambda: None).detach()
    assert torch.equal(shifts[:, 3:], torch.zeros(4, 2)) and torch.equal(shifts[1], torch.zeros(5))
    assert torch.equal(shifts[[0, 2, 3], :3], prior.mu.detach()[[0, 2, 3]])
    assert torch.equal(
        readouts.edge_shifts(prior, lambda: None), readouts.evaluation_shifts(prior, lambda: None)
    )
    big_style = shifts.clone()
    big_style[:, 3:] = 100.0  # never a target, however large
    targets = readouts.targets(prior, big_style, 0.5, 2)
    assert not targets[:, 3:].any() and targets[:, :3].sum(dim=1).tolist() == [2] * 4
    top = readouts.targets(prior, shifts, 0.5, 1)
    assert top[0, :3].tolist() == (shifts[0, :3].abs() == shifts[0, :3].abs().max()).tolist()


def test_clap_predictor_is_the_weighted_cross_entropy():
    prior = _random_clap(predictor_weight=0.7)
    qz = Normal(torch.randn(6, 5), torch.ones(6, 5))
    z = torch.randn(6, 5)
    codes = torch.tensor([0, 1, 2, 3, 3, 1])
    value = prior.batch_penalty(Minibatch(qz, z, codes, 0.0, 100))  # not warmed up
    logits = prior.classifier(z[:, :3])
    torch.testing.assert_close(value, 0.7 * F.cross_entropy(logits, codes))
    # sets of singles: mean over the slots; the empty set is labelled control
    sets = torch.tensor([[1, 2], [3, -1], [-1, -1], [0, -1], [2, 3], [1, -1]])
    log_p = F.log_softmax(logits, dim=-1).detach()
    by_hand = [
        -(log_p[0, 1] + log_p[0, 2]) / 2,
        -log_p[1, 3],
        -log_p[2, 0],
        -log_p[3, 0],
        -(log_p[4, 2] + log_p[4, 3]) / 2,
        -log_p[5, 1],
    ]
    torch.testing.assert_close(
        prior.batch_penalty(Minibatch(qz, z, sets, 1.0, 100)).detach(),
        0.7 * torch.stack(by_hand).mean(),
    )
    # the gradient reaches the classifier; the predictor reads z_core only
    z = z.clone().requires_grad_(True)
    prior.batch_penalty(Minibatch(qz, z, codes, 1.0, 100)).backward()
    assert prior.classifier.weight.grad.abs().sum() > 0
    assert prior.classifier.bias.grad.abs().sum() > 0
    assert z.grad[:, :3].abs().sum() > 0 and torch.equal(z.grad[:, 3:], torch.zeros(6, 2))
    assert prior.mu.grad is None
    assert (
        _random_clap(predictor_weight=0.0).batch_penalty(Minibatch(qz, z, codes, 1.0, 1)).item()
        == 0.0
    )


def test_clap_predictor_enters_the_module_loss_and_trains_the_classifier():
    torch.manual_seed(0)
    module = SparseShiftVAE(
        n_input=8, n_perturbations=3, control_index=0, n_hidden=8, n_latent=4, prior="clap",
        prior_kwargs={"predictor_weight": 2.0},
    )  # fmt: skip
    x = torch.poisson(torch.full((10, 8), 3.0)) + 1
    codes = torch.tensor([0, 1, 2, 1, 0, 2, 1, 1, 0, 2], dtype=torch.float32).unsqueeze(-1)
    tensors = {"X": x, "perturbation": codes}
    inference, generative, output = module(tensors)
    assert generative["pz"] is None  # closed-form KL
    z = inference["z"]
    prior = module.prior
    expected = 2.0 * F.cross_entropy(prior.classifier(z[:, : prior.n_core]), codes[:, 0].long())
    torch.testing.assert_close(output.extra_metrics["batch_penalty"], expected.detach())
    elbo = torch.mean(
        output.reconstruction_loss["reconstruction_loss"] + output.kl_local["kl_local"]
    )
    torch.testing.assert_close(output.loss, elbo + expected)
    output.loss.backward()
    assert prior.classifier.weight.grad.abs().sum() > 0
    assert module.z_encoder.mean_encoder.weight.grad.abs().sum() > 0
    # the classifier trains with the networks (lr), the rest of the prior at lr_prior
    ids = {id(p) for p in prior.shift_parameters()}
    assert ids == {id(prior.mu), id(prior.log_var), id(prior.style_loc), id(prior.style_tril)}


def test_clap_options_defaults_and_errors(adata):
    assert make_prior("clap", 5, 10, 0).n_style == 2
    assert make_prior("clap", 5, 2, 0).n_style == 1  # at least one core latent
    assert make_prior("clap", 5, 10, 0).hyperparameters() == {
        "n_style": 2,
        "predictor_weight": 1.0,
    }
    for n_style in (-1, 10, 11, 1.5):
        with pytest.raises(ValueError, match="n_style"):
            make_prior("clap", 5, 10, 0, n_style=n_style)
    with pytest.raises(ValueError, match="predictor_weight"):
        make_prior("clap", 5, 10, 0, predictor_weight=-1.0)
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    with pytest.raises(ValueError, match="n_style"):
        sv.SparseVAE(adata, n_latent=4, prior="clap", prior_kwargs={"n_style": 4})
    for name in NAMES:
        with pytest.raises(ValueError, match="n_styl"):  # the unknown key is named
            sv.SparseVAE(adata, prior=name, prior_kwargs={"n_styl": 1})
    with pytest.raises(ValueError, match="n_style"):
        sv.SparseVAE(adata, prior="ivae-var", prior_kwargs={"n_style": 1})
    with pytest.raises(ValueError, match="rotate_latents=True"):
        make_prior("clap", 5, 10, 0).resolve_rotation(True)
    assert METHODS["ivae-var"] == {"prior": "ivae-var"} and METHODS["clap"] == {"prior": "clap"}


# ---- the IWELBO ------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_marginal_ll_is_the_importance_weighted_elbo_under_the_learned_prior(name):
    torch.manual_seed(0)
    module = SparseShiftVAE(
        n_input=7, n_perturbations=4, control_index=0, n_hidden=8, n_latent=4, prior=name
    )
    with torch.no_grad():
        module.prior.mu.copy_(torch.randn_like(module.prior.mu))
        module.prior.log_var.copy_(torch.randn_like(module.prior.log_var))
        if name == "clap":
            module.prior.style_loc.copy_(torch.randn_like(module.prior.style_loc))
            module.prior.style_tril.copy_(0.5 * torch.randn_like(module.prior.style_tril))
    module.eval()
    x = torch.poisson(torch.full((3, 7), 4.0)) + 1
    codes = torch.tensor([[0.0], [2.0], [3.0]])
    tensors = {"X": x, "perturbation": codes}
    n_particles = 6
    torch.manual_seed(1)
    value = module.marginal_ll(tensors, n_mc_samples=n_particles)
    assert torch.isfinite(value).all()

    torch.manual_seed(1)  # the module's particles: eps ~ N(0, I), (n_cells, particles, d)
    with torch.no_grad():
        qz = module.encode(x)
        eps = torch.randn(3, n_particles, 4)
        z = qz.loc.unsqueeze(1) + qz.scale.unsqueeze(1) * eps
        rho = torch.softmax(
            module.decoder.px_scale_decoder[0](module.decoder.px_decoder(z.reshape(-1, 4))), -1
        ).reshape(3, n_particles, 7)
        theta = torch.exp(module.px_r)
        library = x.sum(-1, keepdim=True).unsqueeze(1)
        log_px = NegativeBinomial(mu=library * rho, theta=theta).log_prob(x.unsqueeze(1)).sum(-1)
        log_qz = Normal(qz.loc.unsqueeze(1), qz.scale.unsqueeze(1)).log_prob(z).sum(-1)
        prior = module.prior
        log_pz = torch.zeros(3, n_particles)
        for cell, code in enumerate(codes[:, 0].long().tolist()):
            if name == "clap":
                c = prior.n_core
                core_mu = prior.mu[code] * prior.is_perturbed[code]
                core_lv = prior.log_var[code] * prior.is_perturbed[code]
                loc = torch.cat([core_mu, prior.style_loc[0]])
                covariance = _clap_covariance(prior, core_lv)
                assert c == 2
            else:
                loc = prior.mu[code] * prior.is_perturbed[code]
                covariance = torch.diag(torch.exp(prior.log_var[code] * prior.is_perturbed[code]))
            log_pz[cell] = MultivariateNormal(loc, covariance).log_prob(z[cell])
        direct = torch.logsumexp(log_px + log_pz - log_qz, dim=1) - math.log(n_particles)
    torch.testing.assert_close(value, direct, rtol=1e-4, atol=1e-3)


# ---- the public API --------------------------------------------------------------------
@pytest.fixture(scope="module", params=NAMES)
def fitted(request):
    data = small_simulation()
    scvi.settings.seed = 0
    sv.SparseVAE.setup_anndata(data, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(data, prior=request.param)  # only the required arguments
    model.train(max_epochs=2, **QUIET)
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
    assert targets.to_numpy().sum(axis=1).tolist() == [2] * len(names)
    if model.prior_name == "clap":
        style = slice(13, 15)
        assert (pi.to_numpy()[:, style] == 0).all() and (pi.to_numpy()[:, :13] == 1).all()
        assert (shifts.to_numpy()[:, style] == 0).all() and not targets.to_numpy()[:, style].any()
    else:
        assert (pi.to_numpy() == 1).all()
    nll = model.get_interventional_nll(n_particles=5)
    assert np.isfinite(nll).all()
    assert np.isfinite(model.get_marginal_ll(n_mc_samples=5))

    model.save(tmp_path / "model")
    loaded = sv.SparseVAE.load(tmp_path / "model", adata=data)
    assert loaded.prior_name == model.prior_name
    pd.testing.assert_frame_equal(loaded.get_perturbation_shifts(), shifts)
    pd.testing.assert_frame_equal(loaded.get_intervention_targets(), targets)
    for key, value in model.module.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key].cpu(), value.cpu()), key
    scvi.settings.seed = 0
    first = model.get_interventional_nll(n_particles=5)
    scvi.settings.seed = 0
    np.testing.assert_allclose(loaded.get_interventional_nll(n_particles=5), first, rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_trains_on_combinations(name):
    data = small_simulation()
    labels = data.obs["perturbation"].astype(str).to_numpy().copy()
    for single, pair in (("P4", "P0+P1"), ("P5", "P2+P3")):
        rows = np.flatnonzero(labels == single)
        labels[rows[: len(rows) // 2]] = pair
    data.obs["perturbation"] = pd.Categorical(labels)
    scvi.settings.seed = 0
    sv.SparseVAE.setup_anndata(
        data, perturbation_key="perturbation", control="control", combination_delimiter="+"
    )
    model = sv.SparseVAE(data, n_latent=4, n_hidden=16, prior=name)
    model.train(max_epochs=2, **QUIET)
    assert np.isfinite(model.history["elbo_train"].to_numpy(dtype=float)).all()
    assert np.isfinite(model.get_interventional_nll(n_particles=3)).all()


@pytest.mark.parametrize(
    ("name", "prior_kwargs"),
    [("ivae-var", None), ("clap", {"n_style": 1, "predictor_weight": 0.5})],
)
def test_transfer_learns_the_new_variances_and_leaves_everything_else(
    name, prior_kwargs, monkeypatch
):
    data = small_simulation()
    labels = data.obs["perturbation"].astype(str)
    train = data[~labels.isin(HELDOUT).to_numpy()].copy()
    heldout = data[labels.isin(HELDOUT).to_numpy()].copy()
    scvi.settings.seed = 0
    sv.SparseVAE.setup_anndata(train, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(train, n_latent=4, n_hidden=16, prior=name, prior_kwargs=prior_kwargs)
    model.train(max_epochs=2, **QUIET)
    with pytest.raises(ValueError, match="sparse=True learns masks"):
        model.transfer(heldout.copy(), sparse=True)

    at_start = {}  # the new model's parameters when transfer training starts
    init_transfer = type(model.module.prior).init_transfer

    def recording_init_transfer(self, rows, latent_means, sparse):
        needs_training = init_transfer(self, rows, latent_means, sparse)
        at_start.update({k: v.detach().clone() for k, v in self.state_dict().items()})
        return needs_training

    monkeypatch.setattr(type(model.module.prior), "init_transfer", recording_init_transfer)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    new = model.transfer(heldout.copy(), max_epochs=3, **QUIET)
    assert new.perturbation_names == model.perturbation_names + HELDOUT
    assert new.module.prior.hyperparameters() == model.module.prior.hyperparameters()
    after = new.module.state_dict()
    n_old = assert_transfer_kept_old_parameters(model, before, after)
    assert torch.equal(at_start["log_var"][n_old:], torch.zeros(2, at_start["log_var"].shape[1]))
    assert (after["prior.log_var"][n_old:] != 0).any(dim=1).all()  # trained from 0
    assert torch.all(after["prior.mu"][n_old:].abs().sum(dim=1) > 0)
    assert all(p.requires_grad for p in new.module.parameters())
    assert np.isfinite(new.get_interventional_nll(heldout.copy(), n_particles=5)).all()
    if name == "clap":
        assert new.module.prior.n_style == 1
        # the new labels' classifier rows are trained with them (first dim n_perturbations)
        for key in ("classifier.weight", "classifier.bias"):
            trained_rows = after[f"prior.{key}"][n_old:]
            assert (trained_rows != at_start[key][n_old:]).any(), key
