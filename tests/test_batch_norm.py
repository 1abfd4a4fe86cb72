"""Batch-norm statistics are recomputed with the final weights after training."""

from __future__ import annotations

import numpy as np
import scvi
import torch

import sparsevae as sv
from sparsevae.model._batch_norm import recalibrate_batch_norm

from .conftest import QUIET, small_simulation


def _first_encoder_layer(model):
    linear, batch_norm = model.module.z_encoder.encoder.fc_layers[0][:2]
    return linear, batch_norm


def _train(recalibrate: bool, **train_kwargs):
    data = small_simulation()
    scvi.settings.seed = 0
    sv.SparseVAE.setup_anndata(data, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(data, n_latent=4, n_hidden=16, n_layers=2)  # stacked layers
    # One minibatch holds every training cell, so the recomputed statistics are exactly the
    # training cells' mean and (unbiased) variance of the layer's input.
    model.train(
        max_epochs=3, batch_size=512, recalibrate_batch_norm=recalibrate, **QUIET, **train_kwargs
    )
    return model, data


def _hand_statistics(model, data):
    linear, _ = _first_encoder_layer(model)
    x = torch.as_tensor(np.asarray(data.X[model.train_indices].todense()), dtype=torch.float32)
    with torch.no_grad():
        h = linear(torch.log1p(x))  # the encoder's first layer before batch norm
    return h.mean(dim=0), h.var(dim=0)


def test_train_recomputes_running_statistics_on_the_training_cells():
    model, data = _train(recalibrate=True)
    mean, var = _hand_statistics(model, data)
    _, batch_norm = _first_encoder_layer(model)
    torch.testing.assert_close(batch_norm.running_mean, mean, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batch_norm.running_var, var, atol=1e-4, rtol=1e-4)
    assert batch_norm.momentum == 0.01  # scvi-tools' momentum is restored
    assert not model.module.training


def test_without_recalibration_the_moving_average_stays():
    model, data = _train(recalibrate=False)
    mean, _ = _hand_statistics(model, data)
    _, batch_norm = _first_encoder_layer(model)
    # three updates at momentum 0.01 from the initial 0: far from the training cells' mean
    assert not torch.allclose(batch_norm.running_mean, mean, atol=1e-2)


def test_recalibration_changes_buffers_only_and_clears_the_latent_cache():
    model, _ = _train(recalibrate=False)
    params = {k: v.clone() for k, v in model.module.named_parameters()}
    buffers = {k: v.clone() for k, v in model.module.named_buffers() if "running" in k}
    model.get_latent_representation()
    model.get_perturbation_shifts()  # fills the latent-mean cache
    assert recalibrate_batch_norm(model) == 4  # 2 encoder + 2 decoder layers
    for key, value in model.module.named_parameters():
        assert torch.equal(value, params[key]), key
    changed = [
        k
        for k, v in model.module.named_buffers()
        if "running" in k and not torch.equal(v, buffers[k])
    ]
    assert changed
    assert model.knowledge.cached_latent_means is None


def test_no_batch_norm_nothing_to_do():
    data = small_simulation()
    sv.SparseVAE.setup_anndata(data, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(data, n_latent=4, n_hidden=16, use_batch_norm="none")
    model.train(max_epochs=1, **QUIET)
    assert recalibrate_batch_norm(model) == 0
