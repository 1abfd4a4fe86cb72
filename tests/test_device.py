"""Device correctness on a CPU-only machine: the module on PyTorch's ``meta`` device.

On a CPU-only machine every tensor is on the CPU, so a tensor created without the input's
device (``torch.ones(1)`` beside CUDA tensors) or an entry point that does not move its inputs
to the module's device (scvi-tools' ``auto_move_data``) goes unnoticed until a GPU run fails.
On the ``meta`` device (tensors with a shape and no data) the same mixes fail as they do on a
GPU: here every module entry point, every prior and the rotation's tensor steps run with the
module on ``meta``. The parts that go through numpy on purpose (``.cpu()``: the rotation's
assignment step, the getters' DataFrames) are outside; ``benchmarks/gpu_smoke.py`` runs those
on a GPU.
"""

from __future__ import annotations

import pytest
import torch

from sparsevae._constants import REGISTRY_KEYS
from sparsevae.module import SparseShiftVAE
from sparsevae.module._priors import PRIOR_CLASSES
from sparsevae.module._rotation import latent_shift_sums, signed_permutation

META = torch.device("meta")


@pytest.fixture(autouse=True)
def _no_distribution_checks():
    """Meta tensors have no values: argument checks of torch distributions are off.

    Those checks read values, and a boolean mask selects every row (``nonzero`` needs values
    to know how many).
    """
    import torch.fx.experimental._config as fx_config

    validate = torch.distributions.Distribution._validate_args
    before = validate, fx_config.meta_nonzero_assume_all_nonzero
    torch.distributions.Distribution.set_default_validate_args(False)
    fx_config.meta_nonzero_assume_all_nonzero = True
    yield
    torch.distributions.Distribution.set_default_validate_args(before[0])
    fx_config.meta_nonzero_assume_all_nonzero = before[1]


def _module(prior: str = "spike_slab", n_batch: int = 1) -> SparseShiftVAE:
    module = SparseShiftVAE(
        n_input=12, n_perturbations=4, control_index=0, n_batch=n_batch, n_latent=3, n_hidden=8,
        prior=prior,
    )  # fmt: skip
    return module.to(META)


def _tensors(device: torch.device, n_batch: int = 1) -> dict[str, torch.Tensor]:
    tensors = {
        REGISTRY_KEYS.X_KEY: torch.randint(0, 5, (6, 12)).float(),
        REGISTRY_KEYS.PERTURBATION_KEY: torch.tensor([[0], [1], [2], [3], [1], [2]]),
    }
    if n_batch > 1:
        tensors[REGISTRY_KEYS.BATCH_KEY] = torch.tensor([[0], [1], [0], [1], [0], [1]])
    return {key: value.to(device) for key, value in tensors.items()}


def test_a_tensor_made_on_the_cpu_fails_beside_meta_tensors():
    """The mechanism: what fails on a GPU fails on meta (the bug of the rotation, fixed)."""
    values = torch.ones(3, device=META)
    with pytest.raises(RuntimeError, match="device"):
        torch.where(values > 0, values, torch.ones(1))
    assert torch.where(values > 0, values, torch.ones_like(values)).device == META


@pytest.mark.parametrize("prior", sorted(PRIOR_CLASSES))
def test_training_step_stays_on_the_module_device(prior):
    """As Lightning runs it: the minibatch on the module's device, training mode."""
    module = _module(prior)
    module.train()
    _, _, loss = module(_tensors(META), loss_kwargs={"kl_weight": 0.5, "n_obs": 100})
    assert loss.loss.device == META
    module.prior.start_training()
    module.prior.freeze_masks(graph_learned=True)  # the relative floor, the frozen masks
    _, _, loss = module(_tensors(META), loss_kwargs={"kl_weight": 1.0, "n_obs": 100})
    assert loss.loss.device == META


@pytest.mark.parametrize("n_batch", [1, 2])
def test_entry_points_move_cpu_inputs_to_the_module_device(n_batch):
    """After training (eval mode) the getters pass CPU minibatches: every entry point moves them."""
    module = _module(n_batch=n_batch)
    module.eval()
    tensors = _tensors(torch.device("cpu"), n_batch)
    inference = module.inference(tensors[REGISTRY_KEYS.X_KEY])
    assert inference["z"].device == META
    # marginal_ll returns its values on the CPU on purpose (for numpy): on meta that last copy
    # is the one step that fails, and it fails for having no data, not for a device mix
    with pytest.raises(NotImplementedError, match="Cannot copy out of meta tensor"):
        module.marginal_ll(tensors, n_mc_samples=4)
    batch = tensors.get(REGISTRY_KEYS.BATCH_KEY)
    effects, base = module.latent_shift_effects(tensors[REGISTRY_KEYS.X_KEY], batch)
    assert effects.device == META and base.device == META


def test_rotation_steps_stay_on_the_module_device():
    """The in-training rotation's tensor steps: sums over a data pass, the signed permutation
    of the sparsest rotation, then rotating the module.

    Between them the shifts go through numpy on purpose (the one shift definition,
    :mod:`sparsevae._shifts`) and come back on the sums' device, which meta cannot show.
    """
    module = _module()
    module.eval()
    sums, counts = latent_shift_sums(module, [_tensors(META), _tensors(META)])
    assert sums.device == META and counts.device == META
    shifts = torch.zeros(4, 3, device=META)
    rows = torch.ones(4, dtype=torch.bool, device=META)
    rotation = signed_permutation(torch.eye(3, device=META), torch.tensor([2, 0, 1]))
    module.rotate_latents(rotation, shifts, rows, torch.zeros(3, device=META))
    assert rotation.device == META and module.prior.mu.device == META
