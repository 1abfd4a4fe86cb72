from __future__ import annotations

import os

import numpy as np
import pytest
import scvi
import torch
from hypothesis import settings as hypothesis_settings

import sparsevae as sv
from sparsevae._quiet import QUIET_TRAINER as QUIET
from sparsevae._quiet import silence_lightning

# Property tests draw the same examples on every run (CI cannot flake on a new draw);
# `HYPOTHESIS_PROFILE=explore python -m pytest tests/test_properties.py` searches afresh.
hypothesis_settings.register_profile("repeatable", derandomize=True, database=None)
hypothesis_settings.register_profile("explore", derandomize=False)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


def pytest_addoption(parser):
    parser.addoption(
        "--torch-threads",
        type=int,
        default=None,
        help="run every test with this many torch threads and fail a test that changes the "
        "count (CI's portability stage: 1, with ATEN_CPU_CAPABILITY=default)",
    )


def pytest_configure(config):
    threads = config.getoption("--torch-threads")
    if threads is not None:
        torch.set_num_threads(threads)


def pytest_report_header(config):
    return (
        f"torch {torch.__version__}: CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"{torch.get_num_threads()} thread(s)"
    )


@pytest.fixture(autouse=True)
def _torch_threads(request):
    """With ``--torch-threads N``: N threads in every test, checked after it (scanpy's numba
    code, for one, resets OpenMP's count unless ``NUMBA_NUM_THREADS`` is set).
    """
    threads = request.config.getoption("--torch-threads")
    if threads is not None:
        torch.set_num_threads(threads)
    yield
    if threads is not None:
        now = torch.get_num_threads()
        torch.set_num_threads(threads)
        assert now == threads, (
            f"torch had {now} threads at the end of this test, not the {threads} of "
            "--torch-threads: something reset the count (set NUMBA_NUM_THREADS too)"
        )


@pytest.fixture(autouse=True, scope="session")
def _quiet():
    silence_lightning()


def small_simulation(**kwargs):
    params = {
        "n_perturbations": 6,
        "n_cells_per_perturbation": 30,
        "n_latent": 4,
        "n_genes": 24,
        "decoder_width": 12,
        "random_state": 0,
    }
    params.update(kwargs)
    return sv.data.simulate_sparse_shift(**params)


def batched_model(n_latent: int, max_epochs: int):
    """A small sVAE+ with a batch covariate (every third cell in b0), and its data."""
    data = small_simulation()
    data.obs["batch"] = np.where(np.arange(data.n_obs) % 3 == 0, "b0", "b1")
    scvi.settings.seed = 0
    sv.SparseVAE.setup_anndata(
        data, perturbation_key="perturbation", control="control", batch_key="batch"
    )
    model = sv.SparseVAE(data, n_latent=n_latent, n_hidden=16)
    model.train(max_epochs=max_epochs, **QUIET)
    return model, data


@pytest.fixture
def adata():
    return small_simulation()


@pytest.fixture(scope="module")
def trained():
    """A small sVAE+ trained for a few epochs, with its AnnData."""
    data = small_simulation()
    scvi.settings.seed = 0
    sv.SparseVAE.setup_anndata(data, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(data, n_latent=4, n_hidden=16)
    model.train(max_epochs=3, check_val_every_n_epoch=1, **QUIET)
    return model, data


def assert_transfer_kept_old_parameters(model, before: dict, after: dict) -> int:
    """Transfer left the source model and every old row of the new one bitwise unchanged.

    ``before``: the source's state dict before transfer; ``after``: the new model's. Returns
    the number of old categories (the new rows start there).
    """
    n_old = len(model.knowledge.categories)
    for key, value in before.items():
        assert torch.equal(model.module.state_dict()[key], value), key  # source untouched
        if after[key].shape == value.shape:
            assert torch.equal(after[key], value), key
        else:
            assert torch.equal(after[key][:n_old], value), key
    return n_old
