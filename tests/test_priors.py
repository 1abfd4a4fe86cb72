from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import beta as beta_distribution
from torch.distributions import kl_divergence

import sparsevae as sv
from sparsevae._quiet import QUIET_TRAINER
from sparsevae.cli import build_parser
from sparsevae.module import (
    DensePrior,
    L1Prior,
    PerturbationPrior,
    SpikeSlabPrior,
    StandardPrior,
    make_prior,
)
from sparsevae.module import _readouts as readouts
from sparsevae.module._prior_base import Minibatch
from sparsevae.module._priors import PRIOR_CLASSES
from sparsevae.nn import gumbel_sigmoid


def test_gumbel_sigmoid_is_hard_forward_soft_backward():
    torch.manual_seed(0)
    logits = torch.zeros(2000, requires_grad=True)
    sample = gumbel_sigmoid(logits, temperature=0.5)
    values = sample.detach()
    assert torch.all((values.abs() < 1e-6) | ((values - 1).abs() < 1e-6))
    assert 0.45 < sample.mean().item() < 0.55  # Bernoulli(0.5)
    sample.sum().backward()
    # soft backward: positive gradients, except where extreme noise saturates the sigmoid
    assert (logits.grad >= 0).all()
    assert (logits.grad > 0).float().mean() > 0.99
    high = gumbel_sigmoid(torch.full((2000,), 5.0))
    assert high.mean().item() > 0.97


def test_spike_slab_paper_penalty_is_the_beta_log_density():
    prior = SpikeSlabPrior(3, 2, control_index=0, alpha=7.0, sparsity="paper")
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([[0.0, 0.0], [-1.0, 2.0], [0.5, -3.0]]))
    pi = torch.sigmoid(prior.logits).detach().numpy()[1:]  # control row excluded
    expected = -beta_distribution(1.0, 7.0).logpdf(pi).sum()
    assert prior.penalty().item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("extreme", [1e4, -1e4])
def test_penalty_is_finite_at_saturated_probabilities(extreme):
    prior = SpikeSlabPrior(4, 3, alpha=50.0)
    with torch.no_grad():
        prior.logits.fill_(extreme)
    penalty = prior.penalty()
    penalty.backward()
    assert torch.isfinite(penalty)
    assert torch.isfinite(prior.logits.grad).all()
    pi = prior.mask_probabilities()
    assert (pi > 0).all() and (pi < 1).all()


def test_alpha_one_gives_no_sparsity_gradient():
    """Paper objective: Beta(1, 1) is flat. Calibrated: Bernoulli(0.5), no pull at pi = 0.5."""
    prior = SpikeSlabPrior(4, 3, alpha=1.0, sparsity="paper")
    prior.penalty().backward()
    assert torch.count_nonzero(prior.logits.grad) == 0
    prior = SpikeSlabPrior(4, 3, alpha=1.0)
    with torch.no_grad():
        prior.logits.zero_()
    prior.penalty().backward()
    assert torch.count_nonzero(prior.logits.grad) == 0


def test_l1_penalty_is_the_published_one_and_skips_control_rows():
    """The published sVAE: alpha * mean(pi) per minibatch, not / N, not warmed up."""
    prior = L1Prior(3, 2, control_index=1, alpha=2.0)
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([[0.0, 1.0], [9.0, 9.0], [-1.0, 2.0]]))
    pi = torch.sigmoid(torch.tensor([0.0, 1.0, -1.0, 2.0]))
    qz = torch.distributions.Normal(torch.zeros(4, 2), torch.ones(4, 2))
    for kl_weight in (0.0, 1.0):  # no warm-up
        value = prior.batch_penalty(
            Minibatch(qz, qz.loc, torch.zeros(4, dtype=torch.long), kl_weight, 100)
        )
        assert value.item() == pytest.approx(2.0 * pi.mean().item())
    assert prior.penalty().item() == 0.0  # nothing is divided by N
    prior.freeze_masks()
    assert (
        prior.batch_penalty(
            Minibatch(qz, qz.loc, torch.zeros(4, dtype=torch.long), 1.0, 100)
        ).item()
        == 0.0
    )


def test_control_cells_have_zero_shift_and_eval_mask_is_the_readout():
    prior = SpikeSlabPrior(3, 4, control_index=0, alpha=3.0)
    with torch.no_grad():
        prior.mu.fill_(2.0)
        prior.logits.copy_(torch.tensor([[5.0] * 4, [5.0, -5.0, 5.0, -5.0], [-5.0] * 4]))
    prior.eval()
    mean = prior.cell_mean(torch.tensor([0, 1, 2])).detach()
    np.testing.assert_array_equal(mean.numpy(), [[0] * 4, [2, 0, 2, 0], [0] * 4])
    np.testing.assert_array_equal(
        readouts.evaluation_shifts(prior, lambda: None).detach().numpy(), mean.numpy()
    )


def test_dense_and_standard_priors():
    dense = DensePrior(3, 2, control_index=2)
    mean = dense.cell_mean(torch.tensor([0, 2]))
    assert torch.equal(mean[0], dense.mu[0]) and torch.equal(mean[1], torch.zeros(2))
    assert torch.equal(dense.mask_probabilities(), torch.ones(3, 2))  # every latent shifted
    standard = StandardPrior(3, 2)
    assert standard.cell_mean(torch.tensor([0, 1])).abs().sum() == 0
    assert standard.penalty().item() == 0
    assert torch.equal(standard.mask_probabilities(), torch.zeros(3, 2))  # none is
    with pytest.raises(TypeError, match="abstract"):
        PerturbationPrior(3, 2)  # the protocol is not a prior of its own


def test_every_prior_answers_the_protocol():
    empirical = torch.tensor([[0.0, 0.0], [3.0, -1.0], [0.5, 2.0]])
    for name, cls in PRIOR_CLASSES.items():
        prior = make_prior(name, 3, 2, 0, alpha=3.0, temperature=1.0)
        assert isinstance(prior, cls) and prior.name == name
        assert prior.mask_probabilities().shape == (3, 2)
        shifts = readouts.evaluation_shifts(prior, lambda: empirical)
        assert shifts.shape == (3, 2) and readouts.edge_shifts(prior, lambda: empirical).shape == (
            3,
            2,
        )
        targets = readouts.targets(prior, shifts, 0.5, 1)
        assert targets.dtype == torch.bool and targets.shape == (3, 2)
        assert prior.resolve_rotation(None) is (name == "spike_slab")
        assert isinstance(prior.hyperparameters(), dict)
    standard = make_prior("standard", 3, 2, 0)
    assert torch.equal(readouts.evaluation_shifts(standard, lambda: empirical), empirical)
    assert readouts.targets(standard, empirical, 0.5, 1).tolist() == [
        [True, False],
        [True, False],
        [False, True],
    ]
    unknown = torch.tensor([[0.0, 0.0], [float("nan"), float("nan")], [0.5, 2.0]])
    assert readouts.targets(standard, unknown, 0.5, 1).tolist() == [
        [True, False],
        [False, False],  # no cells, no known shift: no target (not the first latent)
        [False, True],
    ]
    with pytest.raises(ValueError, match="rotate_latents=True needs a sparse prior"):
        make_prior("dense", 3, 2, 0).resolve_rotation(True)
    assert [name for name, cls in PRIOR_CLASSES.items() if cls.has_masks] == [
        "l1",
        "spike_slab",
        "sams-vae",
    ]
    assert make_prior("l1", 3, 2, 0, alpha=2.0).hyperparameters() == {"alpha": 2.0}


def test_a_new_prior_is_one_class_and_one_registry_line(monkeypatch, adata):
    """A prior that fixes every shift to twice the learned mu, registered and trained."""

    class DoubledPrior(DensePrior):
        name = "doubled"

        def cell_mean(self, perturbation):
            return 2.0 * super().cell_mean(perturbation)

    monkeypatch.setitem(PRIOR_CLASSES, "doubled", DoubledPrior)
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(adata, n_latent=4, n_hidden=16, prior="doubled")
    model.train(max_epochs=2, **QUIET_TRAINER)
    assert model.prior_name == "doubled"
    assert model.get_intervention_targets().to_numpy().sum(axis=1).tolist() == [2] * 6
    assert (
        "doubled"
        in build_parser()
        .parse_args(
            ["fit", "x.h5ad", "--perturbation-key", "p", "--out", "o", "--prior", "doubled"]
        )
        .prior
    )


def test_invalid_prior_parameters():
    with pytest.raises(ValueError, match="alpha"):
        SpikeSlabPrior(2, 2, alpha=0.0)
    with pytest.raises(ValueError, match="temperature"):
        SpikeSlabPrior(2, 2, temperature=0.0)
    with pytest.raises(ValueError, match="mask_estimator"):
        SpikeSlabPrior(2, 2, estimator="reinforce")


@pytest.mark.parametrize("prior_cls", [SpikeSlabPrior, L1Prior])
def test_exact_estimator_is_the_expected_kl_over_masks(prior_cls):
    """Training KL = sum over the 2^p masks of P(mask) * KL(q || N(mask * mu, I))."""
    torch.manual_seed(0)
    n_latent = 3
    prior = prior_cls(3, n_latent, control_index=0, alpha=5.0, estimator="exact")
    with torch.no_grad():
        prior.logits.copy_(torch.randn(3, n_latent) * 2)
        prior.mu.copy_(torch.randn(3, n_latent) * 3)
    perturbation = torch.tensor([0, 1, 2, 2, 1])
    qz = torch.distributions.Normal(torch.randn(5, n_latent), torch.rand(5, n_latent) + 0.3)
    prior.train()
    exact = prior.kl(qz, perturbation)

    pi = prior.mask_probabilities()[perturbation].detach()
    expected = torch.zeros(5)
    for bits in range(2**n_latent):
        gamma = torch.tensor([(bits >> i) & 1 for i in range(n_latent)], dtype=torch.float32)
        weight = (pi * gamma + (1 - pi) * (1 - gamma)).prod(dim=-1)
        shift = gamma * prior.mu[perturbation].detach() * prior.is_perturbed[perturbation, None]
        kl = kl_divergence(qz, torch.distributions.Normal(shift, torch.ones_like(shift)))
        expected += weight * kl.sum(dim=-1)
    torch.testing.assert_close(exact.detach(), expected, rtol=1e-5, atol=1e-5)
    # control cells (code 0) have no shift whatever their logits
    control_kl = kl_divergence(qz, torch.distributions.Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(exact[0].detach(), control_kl[0])

    # gradients reach both the logits and the shifts, deterministically
    exact.sum().backward()
    assert prior.logits.grad[1:].abs().min() > 0 and prior.mu.grad[1:].abs().min() > 0
    grad = prior.logits.grad.clone()
    prior.zero_grad()
    prior.kl(qz, perturbation).sum().backward()
    torch.testing.assert_close(prior.logits.grad, grad)

    # evaluation and frozen masks use the hard readout pi > 0.5, like the Gumbel estimator
    prior.eval()
    hard = (prior.mask_probabilities()[perturbation] > 0.5) * prior.mu[perturbation]
    hard = hard * prior.is_perturbed[perturbation, None]
    readout = kl_divergence(qz, torch.distributions.Normal(hard, torch.ones_like(hard))).sum(-1)
    torch.testing.assert_close(prior.kl(qz, perturbation), readout)
    prior.train()
    prior.masks_frozen = True
    torch.testing.assert_close(prior.kl(qz, perturbation), readout)


def test_per_cell_logits_gather_the_rows_then_clamp_bitwise_as_clamping_all_rows():
    """The KL reads only the minibatch's rows of the logits (no pass over all K rows per step):
    values and gradients are bitwise those of clamping the whole table first, also for logits
    beyond the clamp and for perturbations with several cells.
    """
    from sparsevae.module._prior_base import _MAX_LOGIT

    torch.manual_seed(0)
    prior = SpikeSlabPrior(6, 4, control_index=0, alpha=5.0).train()
    with torch.no_grad():
        prior.logits.copy_(torch.randn(6, 4) * 3)
        prior.logits[2, 1], prior.logits[3, 0] = 40.0, -_MAX_LOGIT  # beyond and at the clamp
        prior.mu.copy_(torch.randn(6, 4) * 2)
    perturbation = torch.tensor([0, 2, 2, 3, 5, 2, 3])
    qz = torch.distributions.Normal(torch.randn(7, 4), torch.rand(7, 4) + 0.3)

    def clamp_all_rows_first() -> torch.Tensor:
        codes, weight = prior._codes(perturbation)
        pi = torch.sigmoid(prior.logits.clamp(-_MAX_LOGIT, _MAX_LOGIT)[codes])[:, 0]
        mu = (prior.mu[codes] * weight.unsqueeze(-1))[:, 0]
        m, var = qz.loc, qz.scale.pow(2)
        expected_sq = pi * (m - mu).pow(2) + (1.0 - pi) * m.pow(2)
        return 0.5 * (var + expected_sq - 1.0 - torch.log(var)).sum(dim=-1)

    gradients = []
    for kl in (lambda: prior.kl(qz, perturbation), clamp_all_rows_first):
        prior.zero_grad()
        value = kl()
        (value.sum() + prior.penalty()).backward()
        gradients.append((value.detach(), prior.logits.grad.clone(), prior.mu.grad.clone()))
    for ours, reference in zip(*gradients, strict=True):
        assert torch.equal(ours, reference)


def test_gumbel_estimator_averages_to_the_exact_one():
    torch.manual_seed(1)
    kwargs = {"n_perturbations": 2, "n_latent": 4, "control_index": None, "alpha": 3.0}
    exact = SpikeSlabPrior(**kwargs, estimator="exact")
    gumbel = SpikeSlabPrior(**kwargs, estimator="gumbel")
    with torch.no_grad():
        exact.logits.copy_(torch.randn(2, 4))
        exact.mu.copy_(torch.randn(2, 4) * 2)
        gumbel.load_state_dict(exact.state_dict())
    perturbation = torch.zeros(20000, dtype=torch.long)
    qz = torch.distributions.Normal(torch.full((20000, 4), 0.5), torch.full((20000, 4), 0.8))
    with torch.no_grad():
        mc = gumbel.kl(qz, perturbation).mean()
        target = exact.kl(qz, perturbation).mean()
    assert mc.item() == pytest.approx(target.item(), rel=0.02)
