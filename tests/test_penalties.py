"""beta-TCVAE, DIP-VAE and FactorVAE priors: their penalties by hand, and through the API."""

from __future__ import annotations

import copy
import inspect
import math
import time

import numpy as np
import pytest
import scvi
import torch
from torch.distributions import Normal

import sparsevae as sv
from sparsevae._constants import METHODS
from sparsevae.model._training_plan import SparseVAETrainingPlan
from sparsevae.module import BetaTCVAEPrior, DIPVAEPrior, FactorVAEPrior, make_prior
from sparsevae.module._penalties import permute_dims
from sparsevae.module._prior_base import Minibatch

from .conftest import QUIET, small_simulation

NAMES = ("beta-tcvae", "dip-vae", "factorvae")
CODES = torch.zeros(4, dtype=torch.long)  # labels are ignored


def _tiny_batch():
    """4 cells x 3 latents, chosen by hand (latents 0 and 1 correlated)."""
    loc = torch.tensor([[0.0, 0.1, -1.0], [1.0, 1.2, 0.5], [-1.0, -0.8, 0.3], [0.5, 0.4, -0.2]])
    scale = torch.tensor([[0.5, 1.0, 0.8], [0.3, 0.6, 1.2], [1.1, 0.4, 0.7], [0.9, 0.5, 0.6]])
    z = torch.tensor([[0.2, 0.3, -0.7], [1.1, 0.9, 0.1], [-1.4, -0.6, 0.9], [0.3, 0.8, -0.5]])
    return Normal(loc, scale), z


def _log_normal(x, mean, sd):
    return -0.5 * math.log(2 * math.pi) - math.log(sd) - 0.5 * ((x - mean) / sd) ** 2


def _logsumexp(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


# ---- beta-TCVAE ---------------------------------------------------------------------------
def test_beta_tcvae_penalty_is_minibatch_weighted_sampling_by_hand():
    qz, z = _tiny_batch()
    loc, scale, draws = qz.loc.numpy(), qz.scale.numpy(), z.numpy()
    m, d = draws.shape
    n_obs = 100
    log_nm = math.log(n_obs * m)
    tc = 0.0
    for i in range(m):
        joint = [
            sum(_log_normal(draws[i, k], loc[j, k], scale[j, k]) for k in range(d))
            for j in range(m)
        ]
        log_qz = _logsumexp(joint) - log_nm
        log_prod = 0.0
        for k in range(d):
            log_prod += (
                _logsumexp([_log_normal(draws[i, k], loc[j, k], scale[j, k]) for j in range(m)])
                - log_nm
            )
        tc += (log_qz - log_prod) / m
    prior = BetaTCVAEPrior(3, 3, control_index=0, tc_beta=4.0)
    value = prior.batch_penalty(Minibatch(qz, z, CODES, 0.5, n_obs))
    assert value.item() == pytest.approx(0.5 * 3.0 * tc, rel=1e-5)
    # tc_beta = 1 is the VAE, and the penalty follows the KL warm-up
    assert (
        BetaTCVAEPrior(3, 3, tc_beta=1.0).batch_penalty(Minibatch(qz, z, CODES, 1.0, n_obs)).item()
        == 0
    )
    assert prior.batch_penalty(Minibatch(qz, z, CODES, 0.0, n_obs)).item() == 0


def test_beta_tcvae_penalty_sees_correlation_and_has_gradients():
    torch.manual_seed(0)
    u = torch.randn(256, 1)
    scale = torch.full((256, 3), 0.1)
    correlated = Normal(torch.cat([u, u, u], dim=1), scale)
    independent = Normal(torch.randn(256, 3), scale)
    prior = BetaTCVAEPrior(2, 3, tc_beta=2.0)
    tc_correlated = prior.batch_penalty(Minibatch(correlated, correlated.sample(), CODES, 1.0, 256))
    tc_independent = prior.batch_penalty(
        Minibatch(independent, independent.sample(), CODES, 1.0, 256)
    )
    # 2.06 apart with this draw (2.1-2.7 with other seeds): a margin of 1 does not hang on
    # the draw's last digits, which differ between CPUs.
    assert tc_correlated.item() > tc_independent.item() + 1.0
    loc = torch.randn(8, 3, requires_grad=True)
    qz = Normal(loc, torch.ones(8, 3))
    prior.batch_penalty(Minibatch(qz, qz.rsample(), CODES, 1.0, 50)).backward()
    assert torch.isfinite(loc.grad).all() and loc.grad.abs().sum() > 0


# ---- DIP-VAE ------------------------------------------------------------------------------
@pytest.mark.parametrize("dip_type", ["i", "ii"])
def test_dip_vae_penalty_is_the_covariance_penalty_by_numpy(dip_type):
    qz, z = _tiny_batch()
    mean = qz.loc.numpy().astype(np.float64)
    centred = mean - mean.mean(axis=0)
    covariance = centred.T @ centred / mean.shape[0]  # np.cov(..., bias=True)
    np.testing.assert_allclose(covariance, np.cov(mean.T, bias=True))
    if dip_type == "ii":
        covariance = covariance + np.diag((qz.scale.numpy().astype(np.float64) ** 2).mean(axis=0))
    off = covariance - np.diag(np.diag(covariance))
    expected = 2.0 * (off**2).sum() + 7.0 * ((np.diag(covariance) - 1.0) ** 2).sum()
    prior = DIPVAEPrior(3, 3, lambda_od=2.0, lambda_d=7.0, dip_type=dip_type)
    value = prior.batch_penalty(Minibatch(qz, z, CODES, 0.3, 100))
    assert value.item() == pytest.approx(0.3 * expected, rel=1e-5)


def test_dip_vae_options():
    assert DIPVAEPrior(2, 2, lambda_od=3.0).lambda_d == 30.0  # DIP-VAE-I: 10 * lambda_od
    assert DIPVAEPrior(2, 2, lambda_od=3.0, dip_type="ii").lambda_d == 3.0  # DIP-VAE-II
    assert DIPVAEPrior(2, 2).hyperparameters() == {
        "lambda_od": 10.0,
        "lambda_d": 100.0,
        "dip_type": "i",
    }
    with pytest.raises(ValueError, match="dip_type"):
        DIPVAEPrior(2, 2, dip_type="iii")
    with pytest.raises(ValueError, match="lambda_od"):
        DIPVAEPrior(2, 2, lambda_od=-1.0)


# ---- FactorVAE ----------------------------------------------------------------------------
def _numpy_discriminator(prior, z):
    """D's forward pass in numpy from its state dict (LeakyReLU 0.2)."""
    state = {
        k: v.detach().numpy().astype(np.float64)
        for k, v in prior.discriminator.state_dict().items()
    }
    linear = sorted({int(k.split(".")[0]) for k in state})
    h = np.asarray(z, dtype=np.float64)
    for position, index in enumerate(linear):
        h = h @ state[f"{index}.weight"].T + state[f"{index}.bias"]
        if position < len(linear) - 1:
            h = np.where(h > 0, h, 0.2 * h)
    return h


def _cross_entropy(logits, label):
    logits = logits - logits.max(axis=1, keepdims=True)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -log_softmax[:, label].mean()


def test_permute_dims_permutes_each_latent_independently():
    torch.manual_seed(0)
    z = torch.arange(200.0).reshape(50, 4) + torch.tensor([0.0, 1000.0, 2000.0, 3000.0])
    permuted = permute_dims(z)
    for k in range(4):
        assert sorted(permuted[:, k].tolist()) == sorted(z[:, k].tolist())
    rows = (permuted - torch.tensor([0.0, 1000.0, 2000.0, 3000.0])) // 4
    assert not (rows == rows[:, :1]).all()  # the latents of a row come from different cells


def test_factorvae_penalty_by_hand_and_gradient_separation():
    torch.manual_seed(1)
    prior = FactorVAEPrior(3, 3, gamma=5.0, discriminator_hidden=7, discriminator_layers=2)
    qz, z0 = _tiny_batch()
    z = z0.clone().requires_grad_(True)
    n_obs, kl_weight = 100, 0.4

    torch.manual_seed(123)
    permuted = permute_dims(z0).numpy()
    torch.manual_seed(123)
    value = prior.batch_penalty(Minibatch(qz, z, CODES, kl_weight, n_obs))

    logits = _numpy_discriminator(prior, z0.numpy())
    tc = (logits[:, 0] - logits[:, 1]).mean()
    ce = 0.5 * (
        _cross_entropy(logits, 0) + _cross_entropy(_numpy_discriminator(prior, permuted), 1)
    )
    assert prior.total_correlation(z0).item() == pytest.approx(tc, rel=1e-5)
    assert value.item() == pytest.approx(kl_weight * 5.0 * tc + ce, rel=1e-5)
    assert prior.last_discriminator_loss.item() == pytest.approx(ce, rel=1e-5)
    assert 0.0 <= prior.last_discriminator_accuracy.item() <= 1.0

    # Gradient separation: z gets the gradient of the TC term only, D that of its loss only.
    value.backward()
    params = list(prior.discriminator.parameters())
    reference = copy.deepcopy(prior.discriminator)
    z_ref = z0.clone().requires_grad_(True)
    tc_term = kl_weight * 5.0 * (reference(z_ref)[:, 0] - reference(z_ref)[:, 1]).mean()
    (grad_z,) = torch.autograd.grad(tc_term, z_ref, retain_graph=True)
    torch.testing.assert_close(z.grad, grad_z)
    assert grad_z.abs().sum() > 0
    torch.manual_seed(123)
    d_loss, _ = prior.discriminator_loss(z0)
    grad_d = torch.autograd.grad(d_loss, params)
    for param, expected in zip(params, grad_d, strict=True):
        torch.testing.assert_close(param.grad, expected)
    # the TC term alone would have given D a different (non-zero) gradient
    tc_grad_d = torch.autograd.grad(tc_term, list(reference.parameters()))
    assert sum(g.abs().sum() for g in tc_grad_d) > 0
    assert prior.shift_parameters() == []


def test_factorvae_discriminator_learns_to_spot_correlated_latents():
    """The default D, alone, under the networks' Adam settings (lr 2e-3, scvi-tools' eps)."""
    torch.manual_seed(0)
    prior = FactorVAEPrior(2, 3, gamma=30.0)
    optimizer = torch.optim.Adam(prior.parameters(), lr=2e-3, eps=0.01)

    def correlated(n):
        u = torch.randn(n, 1)
        return torch.cat([u, u + 0.1 * torch.randn(n, 1), -u + 0.1 * torch.randn(n, 1)], dim=1)

    qz = Normal(torch.zeros(256, 3), torch.ones(256, 3))  # not used by FactorVAE's penalty
    with torch.no_grad():
        _, accuracy_before = prior.discriminator_loss(correlated(2000))
    for _ in range(150):
        optimizer.zero_grad()
        prior.batch_penalty(Minibatch(qz, correlated(256), CODES, 1.0, 1000)).backward()
        optimizer.step()
    with torch.no_grad():
        _, accuracy = prior.discriminator_loss(correlated(2000))
        tc = prior.total_correlation(correlated(2000))
        _, accuracy_independent = prior.discriminator_loss(torch.randn(2000, 3))
    assert accuracy_before.item() < 0.65
    assert accuracy.item() > 0.8
    assert tc.item() > 1.0  # the density-ratio TC of strongly dependent latents
    assert accuracy_independent.item() < 0.65  # nothing to tell apart in N(0, I)


def test_factorvae_options_and_discriminator_size():
    prior = make_prior(
        "factorvae", 3, 5, 0, gamma=10.0, discriminator_hidden=8, discriminator_layers=2
    )
    linear = [m for m in prior.discriminator if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(5, 8), (8, 8), (8, 2)]
    default = FactorVAEPrior(3, 5)
    linear = [m for m in default.discriminator if isinstance(m, torch.nn.Linear)]
    assert len(linear) == 5 and linear[0].out_features == 256
    assert isinstance(default.discriminator[1], torch.nn.LeakyReLU)
    assert default.discriminator[1].negative_slope == 0.2
    assert default.hyperparameters() == {
        "gamma": 30.0,
        "discriminator_hidden": 256,
        "discriminator_layers": 4,
    }
    with pytest.raises(ValueError, match="discriminator_layers"):
        FactorVAEPrior(3, 5, discriminator_layers=0)
    with pytest.raises(ValueError, match="gamma"):
        FactorVAEPrior(3, 5, gamma=float("nan"))


def test_factorvae_discriminator_trains_inside_the_one_optimiser(adata):
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    scvi.settings.seed = 0
    model = sv.SparseVAE(adata, n_latent=4, n_hidden=16, prior="factorvae")
    discriminator = model.module.prior.discriminator
    # D has its own group of the one optimiser: lr, Adam's usual eps and Kim & Mnih's betas
    plan = SparseVAETrainingPlan(model.module, lr=1e-3, lr_prior=1e-2)
    groups = plan.configure_optimizers()["optimizer"].param_groups
    assert len(groups) == 2
    networks, adversary = groups
    assert {id(p) for p in adversary["params"]} == {id(p) for p in discriminator.parameters()}
    assert adversary["lr"] == 1e-3 and adversary["eps"] == 1e-8
    assert adversary["betas"] == (0.5, 0.9)
    assert not {id(p) for p in discriminator.parameters()} & {id(p) for p in networks["params"]}

    before = copy.deepcopy(discriminator.state_dict())
    model.train(max_epochs=3, **QUIET)
    after = discriminator.state_dict()
    for key, value in before.items():
        # weight decay alone moves a parameter by ~1e-7 in 3 steps; D's loss by ~1e-4
        assert (value - after[key].cpu()).abs().max() > 1e-5, key
    assert model.module.prior.last_discriminator_loss is not None


# ---- through the public API ---------------------------------------------------------------
def test_defaults_and_registration():
    assert BetaTCVAEPrior(2, 2).hyperparameters() == {"tc_beta": 6.0}
    annotation = str(inspect.signature(sv.SparseVAE.__init__).parameters["prior"].annotation)
    for name in NAMES:
        prior = make_prior(name, 3, 2, 0, alpha=3.0, temperature=1.0)
        assert prior.name == name and repr(name) in annotation
        assert prior.mask_probabilities().sum() == 0
        assert prior.shift_parameters() == []
    methods = {m: kw["prior"] for m, kw in METHODS.items()}
    assert methods["beta-tcvae"] == "beta-tcvae"
    assert methods["dip-vae"] == "dip-vae"
    assert methods["factorvae"] == "factorvae"


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("beta-tcvae", {"tc_beta": 3.0}),
        ("dip-vae", {"lambda_od": 2.0, "dip_type": "ii"}),
        ("factorvae", {"gamma": 10.0, "discriminator_hidden": 8, "discriminator_layers": 1}),
    ],
)
def test_prior_kwargs_reach_the_prior_and_bad_keys_are_refused(adata, name, options):
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(adata, n_latent=3, n_hidden=8, prior=name, prior_kwargs=options)
    hyper = model.module.prior.hyperparameters()
    assert {k: hyper[k] for k in options} == options
    with pytest.raises(ValueError, match="not_an_option"):
        sv.SparseVAE(adata, prior=name, prior_kwargs={"not_an_option": 1.0})
    with pytest.raises(ValueError, match=r"\['beta'\]"):
        sv.SparseVAE(adata, prior=name, prior_kwargs={"beta": 4.0})  # beta is SparseVAE's own


@pytest.mark.parametrize("name", NAMES)
def test_trains_through_the_public_api(name, tmp_path):
    data = small_simulation()
    sv.SparseVAE.setup_anndata(data, perturbation_key="perturbation", control="control")
    scvi.settings.seed = 0
    model = sv.SparseVAE(data, prior=name)
    start = time.perf_counter()
    model.train(max_epochs=2, **QUIET)
    print(f"{name}: 2 epochs in {time.perf_counter() - start:.2f} s")
    assert model.prior_name == name
    for key in ("train_loss", "elbo_train"):
        assert np.isfinite(model.history[key].to_numpy(dtype=float)).all()
    z = model.get_latent_representation()
    assert z.shape == (data.n_obs, 15) and np.isfinite(z).all()
    targets = model.get_intervention_targets()
    assert targets.shape == (6, 15) and (targets.sum(axis=1) == 2).all()  # top-2 |shift|
    assert np.isfinite(float(model.get_marginal_ll(n_mc_samples=5)))

    model.save(tmp_path / "model")
    loaded = sv.SparseVAE.load(tmp_path / "model", adata=data)
    assert loaded.prior_name == name
    assert loaded.module.prior.hyperparameters() == model.module.prior.hyperparameters()
    np.testing.assert_allclose(loaded.get_latent_representation(), z, rtol=1e-6, atol=1e-6)
    for key, value in model.module.prior.state_dict().items():
        torch.testing.assert_close(loaded.module.prior.state_dict()[key], value)

    new = data[data.obs["perturbation"] == "P0"].copy()
    new.obs["perturbation"] = "PX"  # an unseen label: the copy keeps the prior's options
    copied = model.transfer(new)
    assert copied.perturbation_names == [*model.perturbation_names, "PX"]
    assert copied.module.prior.hyperparameters() == model.module.prior.hyperparameters()
