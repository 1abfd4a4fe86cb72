"""Models saved by earlier versions (``tests/data/saved_model_*``) still load, with their outputs.

If this fails after a change, the change breaks users' saved models: keep loading them (e.g.
map renamed parameters in ``load``) rather than regenerating the files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sparsevae as sv

DATA = Path(__file__).parent / "data"
SAVED = sorted(DATA.glob("saved_model_*"))


def test_a_saved_model_is_committed():
    assert SAVED, "tests/data/saved_model_* is missing; run tests/data/make_saved_model.py"
    for folder in SAVED:
        assert sum(f.stat().st_size for f in folder.iterdir()) < 1024**2


def _check_outputs(model, folder: Path):
    # The expected outputs were recorded on one machine: the tolerances hold across CPUs,
    # instruction sets and thread counts (the latents differ by at most ~2e-7 between AVX-512,
    # AVX2 and ATEN_CPU_CAPABILITY=default, 1 or 2 threads: 1/60 of the tolerance).
    np.testing.assert_allclose(
        model.get_latent_representation(),
        np.load(folder / "expected_latent.npy"),
        rtol=1e-5,
        atol=1e-5,
    )
    for name, getter in (
        ("pi", model.get_mask_probabilities),
        ("shift", model.get_perturbation_shifts),
    ):
        expected = pd.read_csv(folder / f"expected_{name}.csv", index_col=0)
        pd.testing.assert_frame_equal(
            getter(), expected, check_names=False, check_dtype=False, rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("folder", SAVED, ids=[f.name for f in SAVED])
def test_saved_model_loads_with_its_saved_data(folder):
    model = sv.SparseVAE.load(folder)
    assert model.is_trained_
    assert model.prior_name == "spike_slab" and model.control == "control"
    _check_outputs(model, folder)
    nll = model.get_interventional_nll(n_particles=3)
    assert nll.shape == (model.adata.n_obs,) and np.isfinite(nll).all()


@pytest.mark.parametrize("folder", SAVED, ids=[f.name for f in SAVED])
def test_saved_model_loads_with_rebuilt_data(folder):
    """The simulator rebuilds the same data from the saved parameters."""
    params = json.loads((folder / "versions.json").read_text())["simulation"]
    adata = sv.data.simulate_sparse_shift(**params)
    model = sv.SparseVAE.load(folder, adata=adata)
    _check_outputs(model, folder)
