"""Numerical guards: bounded parameters, and training that stops cleanly at a NaN."""

from __future__ import annotations

import pytest
import scvi
import torch
from scvi.module.base import LossOutput

import sparsevae as sv
from sparsevae.model import NonFiniteLossError

from .conftest import QUIET, small_simulation

FAILING_STEP = 3


def _model():
    data = small_simulation()
    scvi.settings.seed = 0
    sv.SparseVAE.setup_anndata(data, perturbation_key="perturbation", control="control")
    return sv.SparseVAE(data, n_latent=4, n_hidden=16)


def _inject(model, corrupt, *, in_training=True):
    """Wrap the module's loss: record the state at every training step, corrupt one step.

    ``corrupt(out)`` returns the LossOutput of the failing step (training step number
    ``FAILING_STEP``, or every validation step when ``in_training`` is False).
    """
    module = model.module
    original = module.loss
    states = []

    # Same arguments as the module's loss: the training plan reads them (n_obs).
    def loss(tensors, inference_outputs, generative_outputs, kl_weight=1.0, n_obs=1):
        out = original(tensors, inference_outputs, generative_outputs, kl_weight, n_obs)
        if module.training:
            states.append({k: v.detach().clone() for k, v in module.state_dict().items()})
            if in_training and len(states) - 1 == FAILING_STEP:
                return corrupt(out)
        elif not in_training:
            return corrupt(out)
        return out

    module.loss = loss
    return states


def _nan_term(term):
    def corrupt(out):
        terms = {
            "reconstruction_loss": out.reconstruction_loss["reconstruction_loss"],
            "kl_local": out.kl_local["kl_local"],
            "kl_global": out.kl_global["kl_global"],
        }
        terms[term] = terms[term] * float("nan")
        return LossOutput(
            loss=out.loss + terms[term].mean(),
            reconstruction_loss=terms["reconstruction_loss"],
            kl_local=terms["kl_local"],
            kl_global=terms["kl_global"],
        )

    return corrupt


def _same_state(module, state) -> bool:
    return all(torch.equal(value, state[key]) for key, value in module.state_dict().items())


@pytest.mark.parametrize("term", ["reconstruction_loss", "kl_local", "kl_global"])
def test_nan_loss_stops_with_the_term_and_keeps_the_last_good_parameters(term):
    model = _model()
    states = _inject(model, _nan_term(term))
    with pytest.raises(NonFiniteLossError) as error:
        model.train(max_epochs=5, batch_size=64, train_size=1.0, **QUIET)
    message = str(error.value)
    assert f"the {term} term of the loss is NaN" in message
    assert f"step {FAILING_STEP} (batch {FAILING_STEP} of the epoch)" in message
    assert f"parameters of step {FAILING_STEP - 1}" in message
    assert error.value.term == term and error.value.step == FAILING_STEP
    assert isinstance(error.value, FloatingPointError)
    assert len(states) == FAILING_STEP + 1  # nothing ran after the failing step
    # The parameters that gave the last finite loss, not those that gave the NaN.
    assert _same_state(model.module, states[FAILING_STEP - 1])
    assert not _same_state(model.module, states[FAILING_STEP])
    assert not model.module.training
    assert all(torch.isfinite(p).all() for p in model.module.parameters())


def test_infinite_total_loss_is_reported_as_such():
    model = _model()

    def corrupt(out):
        return LossOutput(
            loss=out.loss + float("inf"),
            reconstruction_loss=out.reconstruction_loss,
            kl_local=out.kl_local,
            kl_global=out.kl_global,
        )

    _inject(model, corrupt)
    with pytest.raises(NonFiniteLossError, match="the total loss is infinite"):
        model.train(max_epochs=2, batch_size=64, train_size=1.0, **QUIET)


def test_nan_gradient_stops_before_the_update():
    model = _model()

    def corrupt(out):
        px_r = model.module.px_r
        # sqrt has an infinite slope at 0: the loss stays finite, px_r's gradient is NaN.
        return LossOutput(
            loss=out.loss + 0.0 * torch.sqrt(px_r - px_r.detach()).sum(),
            reconstruction_loss=out.reconstruction_loss,
            kl_local=out.kl_local,
            kl_global=out.kl_global,
        )

    states = _inject(model, corrupt)
    with pytest.raises(NonFiniteLossError, match=r"gradient of \['px_r'\]") as error:
        model.train(max_epochs=2, batch_size=64, train_size=1.0, **QUIET)
    assert error.value.term == "gradient" and error.value.step == FAILING_STEP
    assert _same_state(model.module, states[FAILING_STEP])  # the update was not applied


def test_nan_validation_loss_stops_training():
    model = _model()
    _inject(model, _nan_term("kl_local"), in_training=False)
    with pytest.raises(NonFiniteLossError, match=r"validation of epoch 0.*kl_local term"):
        model.train(max_epochs=3, batch_size=64, check_val_every_n_epoch=1, **QUIET)


def test_extreme_parameters_keep_the_loss_finite():
    model = _model()
    module = model.module
    tensors = next(iter(model._make_data_loader(model.adata, batch_size=64)))
    with torch.no_grad():
        module.px_r.fill_(200.0)  # exp(200) overflows float32 without the bound
        module.z_encoder.var_encoder.bias.fill_(200.0)
    module.train()
    _, _, out = module(tensors)
    assert torch.isfinite(out.loss)
    assert torch.isfinite(module.marginal_ll(tensors, n_mc_samples=3)).all()
