from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import beta as beta_distribution

from sparsevae.module import DensePrior, L1Prior, PerturbationPrior, SpikeSlabPrior
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


def test_spike_slab_penalty_is_the_beta_log_density():
    prior = SpikeSlabPrior(3, 2, control_index=0, alpha=7.0)
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
    prior = SpikeSlabPrior(4, 3, alpha=1.0)
    prior.penalty().backward()
    assert torch.count_nonzero(prior.logits.grad) == 0


def test_l1_penalty_and_control_rows():
    prior = L1Prior(3, 2, control_index=1, alpha=2.0)
    pi = prior.mask_probabilities().detach()
    assert prior.penalty().item() == pytest.approx(2.0 * (pi[0].sum() + pi[2].sum()).item())


def test_control_cells_have_zero_shift_and_eval_mask_is_the_readout():
    prior = SpikeSlabPrior(3, 4, control_index=0, alpha=3.0)
    with torch.no_grad():
        prior.mu.fill_(2.0)
        prior.logits.copy_(torch.tensor([[5.0] * 4, [5.0, -5.0, 5.0, -5.0], [-5.0] * 4]))
    prior.eval()
    mean = prior.cell_mean(torch.tensor([0, 1, 2])).detach()
    np.testing.assert_array_equal(mean.numpy(), [[0] * 4, [2, 0, 2, 0], [0] * 4])
    np.testing.assert_array_equal(prior.shifts().detach().numpy(), mean.numpy())


def test_dense_and_standard_priors():
    dense = DensePrior(3, 2, control_index=2)
    mean = dense.cell_mean(torch.tensor([0, 2]))
    assert torch.equal(mean[0], dense.mu[0]) and torch.equal(mean[1], torch.zeros(2))
    assert dense.mask_probabilities() is None
    standard = PerturbationPrior(3, 2)
    assert standard.cell_mean(torch.tensor([0, 1])).abs().sum() == 0
    assert standard.penalty().item() == 0


def test_invalid_prior_parameters():
    with pytest.raises(ValueError, match="alpha"):
        SpikeSlabPrior(2, 2, alpha=0.0)
    with pytest.raises(ValueError, match="temperature"):
        SpikeSlabPrior(2, 2, temperature=0.0)
