"""The sparse rotation of the latent space (masked priors, once during training)."""

from __future__ import annotations

import numpy as np
import pytest
import scvi
import torch
from scipy.stats import ortho_group

import sparsevae as sv
from sparsevae.module._rotation import (
    latent_shift_sums,
    mean_shifts,
    sparse_rotation,
    sparsest_origin,
)

from .conftest import QUIET, small_simulation
from .test_combinations import _with_pairs


def _sparse_shifts(n_rows=40, n_latent=5, seed=0):
    rng = np.random.default_rng(seed)
    shifts = np.zeros((n_rows, n_latent))
    for row in shifts:
        targets = rng.choice(n_latent, size=rng.integers(1, 3), replace=False)
        row[targets] = rng.choice([-1, 1], size=len(targets)) * rng.normal(5, 0.5, len(targets))
    return shifts


def test_sparse_rotation_undoes_a_hidden_rotation():
    shifts = _sparse_shifts()
    hidden = ortho_group.rvs(5, random_state=1)
    rotation = sparse_rotation(torch.as_tensor(shifts @ hidden)).numpy()
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(5), atol=1e-10)
    # hidden @ rotation is a signed permutation: the true axes come back, in some order and sign
    product = np.abs(hidden @ rotation)
    assert np.allclose(np.sort(product, axis=1)[:, -1], 1.0, atol=0.02)
    assert sorted(product.argmax(axis=1)) == list(range(5))


def test_sparse_rotation_keeps_an_already_sparse_orientation():
    shifts = torch.as_tensor(_sparse_shifts(seed=2))
    rotation = sparse_rotation(shifts)
    assert torch.allclose(rotation.abs(), torch.eye(5, dtype=rotation.dtype), atol=0.02)


def test_sparse_rotation_returns_the_sparsest_start():
    # Random starts can only help: the best of several is at least as sparse as the identity
    # start alone (here strictly: a random start wins).
    shifts = torch.as_tensor(_sparse_shifts(n_rows=30, n_latent=6, seed=3)) @ torch.as_tensor(
        ortho_group.rvs(6, random_state=4)
    )
    alone = sparse_rotation(shifts, n_starts=1, n_steps=60)
    several = sparse_rotation(shifts, n_starts=6, n_steps=60)
    assert (shifts @ several).abs().sum() < (shifts @ alone).abs().sum() - 1e-6
    np.testing.assert_allclose((several @ several.T).numpy(), np.eye(6), atol=1e-10)


def _model(data=None, **train_kwargs):
    data = small_simulation() if data is None else data
    scvi.settings.seed = 0
    sv.SparseVAE.setup_anndata(data, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(data, n_latent=4, n_hidden=16)
    model.train(max_epochs=4, **train_kwargs, **QUIET)
    return model, data


def _encoded_cells():
    """A trained module in eval mode, its cells' counts, latent means and decoded log scales."""
    model, data = _model()
    module = model.module.eval()
    tensors = next(iter(model._make_data_loader(adata=data, batch_size=data.n_obs)))
    x = tensors["X"]
    with torch.no_grad():
        z = module.z_encoder(torch.log1p(x))[0].loc
        log_scale = module.decode(z, None)
    return module, x, z, log_scale


def test_rotating_the_latents_leaves_the_fit_unchanged():
    module, x, z, log_scale = _encoded_cells()
    rotation = torch.as_tensor(ortho_group.rvs(4, random_state=0), dtype=torch.float32)
    n_perturbations = module.prior.n_perturbations
    shifts = torch.randn(n_perturbations, 4)
    rows = torch.arange(n_perturbations) % 2 == 0
    old_mu = module.prior.mu.detach().clone()
    module.rotate_latents(rotation, shifts, rows)
    with torch.no_grad():
        z_rotated = module.z_encoder(torch.log1p(x))[0].loc
        assert torch.allclose(z_rotated, z @ rotation, atol=1e-5)
        assert torch.allclose(module.decode(z_rotated, None), log_scale, atol=1e-5)
    prior = module.prior
    assert torch.equal(prior.mu[rows], shifts[rows])
    assert torch.allclose(prior.mu[~rows], old_mu[~rows] @ rotation, atol=1e-6)
    assert torch.all(prior.logits == 0.0)  # undecided: pi = 0.5


def test_moving_the_origin_too_leaves_the_fit_unchanged():
    module, x, z, log_scale = _encoded_cells()
    rotation = torch.as_tensor(ortho_group.rvs(4, random_state=1), dtype=torch.float32)
    offset = torch.tensor([0.5, -1.0, 2.0, 0.0])
    n_perturbations = module.prior.n_perturbations
    rows = torch.zeros(n_perturbations, dtype=torch.bool)
    old_mu = module.prior.mu.detach().clone()
    module.rotate_latents(rotation, torch.zeros(n_perturbations, 4), rows, offset)
    with torch.no_grad():
        z_moved = module.z_encoder(torch.log1p(x))[0].loc
        assert torch.allclose(z_moved, z @ rotation - offset, atol=1e-5)
        assert torch.allclose(module.decode(z_moved, None), log_scale, atol=1e-4)
    assert torch.allclose(module.prior.mu, old_mu @ rotation - offset, atol=1e-5)


def test_sparsest_origin_is_the_median_shift():
    shifts = torch.as_tensor(_sparse_shifts(41, 5, seed=3)) + torch.tensor([0.3, 0, -2, 0, 1])
    origin = sparsest_origin(shifts)
    assert torch.allclose(origin, torch.tensor([0.3, 0, -2, 0, 1], dtype=origin.dtype))


def test_latent_shifts_are_perturbation_means_minus_control():
    model, data = _model(rotate_latents=False)
    model.module.eval()
    loader = model._make_data_loader(adata=data, batch_size=37)
    shifts, rows = mean_shifts(*latent_shift_sums(model.module, loader))
    z = model.get_latent_representation(data)
    labels = data.obs["perturbation"].astype(str).to_numpy()
    control = z[labels == "control"].mean(axis=0)
    names = list(model.knowledge.categories)
    for name in model.perturbation_names:
        code = names.index(name)
        assert bool(rows[code])
        np.testing.assert_allclose(
            shifts[code].numpy(), z[labels == name].mean(axis=0) - control, atol=1e-5
        )
    assert not bool(rows[names.index("control")])


def test_combination_cells_are_left_out_of_the_shifts():
    data = _with_pairs(small_simulation())
    scvi.settings.seed = 0
    sv.SparseVAE.setup_anndata(
        data, perturbation_key="perturbation", control="control", combination_delimiter="+"
    )
    model = sv.SparseVAE(data, n_latent=3, n_hidden=8)
    model.module.eval()
    loader = model._make_data_loader(adata=data, batch_size=50)
    _, counts = latent_shift_sums(model.module, loader)
    labels = data.obs["perturbation"].astype(str)
    assert counts[-1] == (labels == "control").sum()  # control: the last row
    assert counts.sum() == (~labels.str.contains("+", regex=False)).sum()


@pytest.fixture
def rotations(monkeypatch):
    """Epochs at which training rotated the latent space."""
    calls = []
    original = sv.module.SparseShiftVAE.rotate_latents

    def spy(module, *args):
        calls.append(module)
        return original(module, *args)

    monkeypatch.setattr(sv.module.SparseShiftVAE, "rotate_latents", spy)
    return calls


@pytest.mark.parametrize(
    ("prior", "rotate", "expected"),
    [
        ("spike_slab", None, 1),  # sVAE+: on by default
        ("spike_slab", False, 0),
        ("l1", None, 0),  # the sVAE baseline keeps its published training ...
        ("l1", True, 1),  # ... unless asked
        ("dense", None, 0),
        ("standard", None, 0),
    ],
)
def test_training_rotates_once_by_default_for_svae_plus(rotations, prior, rotate, expected):
    data = small_simulation()
    scvi.settings.seed = 0
    sv.SparseVAE.setup_anndata(data, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(data, n_latent=4, n_hidden=16, prior=prior)
    model.train(max_epochs=6, rotate_latents=rotate, **QUIET)
    assert len(rotations) == expected
    assert np.isfinite(model.history["elbo_train"].to_numpy(dtype=float)).all()


def test_transfer_never_rotates(rotations):
    data = small_simulation()
    labels = data.obs["perturbation"].astype(str)
    train, new = data[labels != "P5"].copy(), data[labels == "P5"].copy()
    model, _ = _model(train, rotate_latents=False)
    before = model.get_latent_representation(train)
    transferred = model.transfer(new, sparse=True, max_epochs=6, **QUIET)
    assert rotations == []
    np.testing.assert_array_equal(transferred.get_latent_representation(train), before)


@pytest.mark.parametrize("prior", ["dense", "standard"])
def test_rotation_is_refused_for_priors_without_a_preferred_orientation(prior):
    data = small_simulation()
    sv.SparseVAE.setup_anndata(data, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(data, n_latent=4, n_hidden=16, prior=prior)
    with pytest.raises(ValueError, match=f"rotate_latents=True.*'{prior}'"):
        model.train(max_epochs=2, rotate_latents=True, **QUIET)
