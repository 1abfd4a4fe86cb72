"""The package under pandas' string arrays (pandas 3's default; pandas 2 with
``future.infer_string``): labels and names as ``StringDtype``, not ``object``.

A GPU machine with a newer pandas could not write the simulated AnnData (anndata refuses
nullable strings unless told), so the CLI never ran there. These tests turn the inference on
here, so the next such failure shows on any machine.
"""

from __future__ import annotations

import json

import anndata
import pandas as pd
import pytest

import sparsevae as sv
from sparsevae._io import write_h5ad
from sparsevae.cli import main

from .conftest import small_simulation


@pytest.fixture
def string_arrays():
    with pd.option_context("future.infer_string", True):
        yield


def test_the_inference_is_on(string_arrays):
    adata = small_simulation()
    copy = anndata.AnnData(obs=pd.DataFrame(index=list(adata.obs_names)))
    assert not pd.api.types.is_object_dtype(copy.obs_names.dtype)
    if hasattr(anndata.settings, "allow_write_nullable_strings"):  # what failed before
        assert anndata.settings.allow_write_nullable_strings is False


def test_write_h5ad_keeps_the_setting_and_round_trips(tmp_path, string_arrays):
    adata = small_simulation()
    adata.obs["guide"] = pd.array([f"g{i % 3}" for i in range(adata.n_obs)], dtype="string")
    adata.obs_names = pd.Index([f"c{i}" for i in range(adata.n_obs)], dtype="string")
    path = tmp_path / "screen.h5ad"
    write_h5ad(adata, path)
    back = anndata.read_h5ad(path)
    assert list(back.obs_names) == list(adata.obs_names)
    assert list(back.obs["guide"]) == list(adata.obs["guide"])
    if hasattr(anndata.settings, "allow_write_nullable_strings"):
        assert anndata.settings.allow_write_nullable_strings is False


def test_cli_fit_and_the_model_with_string_labels(tmp_path, string_arrays):
    """Setup, training, getters, results written, save and load, with every label a string
    array (what ``read_h5ad`` gives under pandas 3).
    """
    adata = small_simulation()
    adata.obs["perturbation"] = pd.array(adata.obs["perturbation"].astype(str), dtype="string")
    path = tmp_path / "screen.h5ad"
    write_h5ad(adata, path)
    out = tmp_path / "fit"
    args = ["fit", str(path), "--perturbation-key", "perturbation", "--control", "control"]
    assert main([*args, "--max-epochs", "2", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_perturbations"] == 6
    results = anndata.read_h5ad(out / "results.h5ad")
    assert results.obsm["X_sparsevae"].shape == (results.n_obs, 15)

    data = anndata.read_h5ad(path)
    sv.SparseVAE.setup_anndata(data, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(data, n_latent=3)
    model.train(max_epochs=2)
    assert model.get_mask_probabilities().shape == (6, 3)
    assert model.get_target_table().shape[0] >= 0
    sv.tl.write_results(data, model)
    write_h5ad(data, tmp_path / "with_results.h5ad")
    model.save(tmp_path / "model", overwrite=True)
    loaded = sv.SparseVAE.load(tmp_path / "model", adata=data)
    pd.testing.assert_frame_equal(loaded.get_mask_probabilities(), model.get_mask_probabilities())
