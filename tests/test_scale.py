"""Scale: counts stay sparse, AnnData read from disk (backed), distributed data parallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import anndata as ad
import numpy as np
import pytest
import scvi
from scipy import sparse

import sparsevae as sv
from sparsevae.cli import main
from sparsevae.data import _simulate

from .conftest import QUIET, small_simulation


def test_simulation_in_chunks_is_sparse_and_equal_to_one_pass(monkeypatch):
    """Large screens are simulated chunk by chunk straight into CSR, with the same numbers."""
    params = {"n_perturbations": 8, "n_genes": 300, "library_log_sd": 0.5, "random_state": 3}
    whole = sv.data.simulate_sparse_shift(**params)
    monkeypatch.setattr(_simulate, "_CHUNK_VALUES", 300 * 97)  # ~23 chunks, the last one short
    chunked = sv.data.simulate_sparse_shift(**params)
    assert sparse.isspmatrix_csr(chunked.X) and chunked.X.dtype == np.float32
    assert chunked.X.shape == whole.X.shape
    np.testing.assert_allclose(chunked.X.toarray(), whole.X.toarray())
    assert (np.asarray(chunked.X.sum(axis=1)) > 0).all()


def test_training_never_densifies_x(adata, monkeypatch):
    """The registered matrix is only ever sliced by minibatch: densifying it whole fails here."""

    def refuse(self, *args, **kwargs):
        if self.shape[0] == adata.n_obs:
            raise AssertionError("the whole count matrix was densified")
        return original(self, *args, **kwargs)

    original = sparse.csr_matrix.toarray
    monkeypatch.setattr(sparse.csr_matrix, "toarray", refuse)
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(adata, n_latent=4, n_hidden=16)
    model.train(max_epochs=1, **QUIET)
    assert model.get_latent_representation().shape == (adata.n_obs, 4)
    assert np.isfinite(model.get_interventional_nll(n_particles=5)).all()


def test_backed_anndata_trains_and_reads_like_in_memory(tmp_path):
    """An AnnData opened with backed='r' trains (its minibatches are read from disk) and gives
    the same outputs as the same data in memory.
    """
    path = tmp_path / "screen.h5ad"
    small_simulation().write_h5ad(path)
    models = {}
    for backed in (None, "r"):
        data = ad.read_h5ad(path, backed=backed)
        scvi.settings.seed = 0
        sv.SparseVAE.setup_anndata(data, perturbation_key="perturbation", control="control")
        models[backed] = sv.SparseVAE(data, n_latent=4, n_hidden=16)
        models[backed].train(max_epochs=2, batch_size=64, **QUIET)
    memory, backed = models[None], models["r"]
    # Rows of a minibatch are read from disk in sorted order, so each cell meets other noise
    # draws than in memory: the runs agree closely, not bitwise. The first epoch's ELBOs
    # differ by 2e-6 to 3e-5 (relative) with the CPU's instruction set and thread count: 1e-3
    # leaves a margin and still fails for data read wrongly.
    elbo_memory = memory.history["elbo_train"].to_numpy(dtype=float).ravel()
    elbo_backed = backed.history["elbo_train"].to_numpy(dtype=float).ravel()
    assert np.isfinite(elbo_backed).all()
    np.testing.assert_allclose(elbo_backed[0], elbo_memory[0], rtol=1e-3)
    # One trained model reads both copies of the data identically.
    np.testing.assert_array_equal(
        memory.get_latent_representation(backed.adata), memory.get_latent_representation()
    )
    nll = [memory.get_interventional_nll(a, n_particles=3) for a in (backed.adata, memory.adata)]
    assert nll[0].shape == nll[1].shape == (backed.adata.n_obs,)


def test_backed_transfer_predict_and_results(tmp_path):
    data = small_simulation(n_perturbations=8)
    held = data.obs["perturbation"].isin(["P6", "P7"]).to_numpy()
    data[~held].copy().write_h5ad(tmp_path / "train.h5ad")
    data[held].copy().write_h5ad(tmp_path / "held.h5ad")
    train = ad.read_h5ad(tmp_path / "train.h5ad", backed="r")
    heldout = ad.read_h5ad(tmp_path / "held.h5ad", backed="r")
    sv.SparseVAE.setup_anndata(train, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(train, n_latent=4, n_hidden=16)
    model.train(max_epochs=2, **QUIET)
    transferred = model.transfer(heldout)
    assert np.isfinite(transferred.get_interventional_nll(heldout, n_particles=3)).all()
    assert model.predict(train, perturbation="P0").shape == train.shape
    sv.tl.write_results(train, model)
    assert train.obsm["X_sparsevae"].shape == (train.n_obs, 4)


def test_cli_fit_backed(tmp_path):
    path = tmp_path / "screen.h5ad"
    small_simulation().write_h5ad(path)
    out = tmp_path / "fit"
    args = ["fit", str(path), "--perturbation-key", "perturbation", "--control", "control"]
    args += ["--n-latent", "3", "--max-epochs", "1", "--backed", "--out", str(out)]
    assert main(args) == 0
    assert json.loads((out / "summary.json").read_text())["n_cells"] == 210
    assert ad.read_h5ad(out / "results.h5ad").obsm["X_sparsevae"].shape == (210, 3)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="DDP over gloo is exercised on Linux")
def test_distributed_data_parallel_two_cpu_processes(tmp_path):
    """`sparsevae fit --strategy ddp --devices 2` trains in two processes (Lightning relaunches
    the command for the second); the first writes a model that loads and predicts.
    """
    path = tmp_path / "screen.h5ad"
    small_simulation(n_cells_per_perturbation=60).write_h5ad(path)
    out = tmp_path / "fit"
    command = [sys.executable, "-m", "sparsevae", "fit", str(path), "--perturbation-key"]
    command += ["perturbation", "--control", "control", "--n-latent", "3", "--max-epochs", "3"]
    command += ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["processes"] == 2

    data = ad.read_h5ad(path)
    model = sv.SparseVAE.load(out / "model", adata=data)
    assert model.history["elbo_train"].shape[0] == 3
    assert np.isfinite(model.history["elbo_train"].to_numpy(dtype=float)).all()
    assert model.get_latent_representation().shape == (data.n_obs, 3)
    predicted = model.predict(data[data.obs["perturbation"] == "control"].copy(), perturbation="P0")
    assert predicted.shape == (60, data.n_vars)
