"""Opening a saved model runs no code: crafted files are refused, ours load as before."""

from __future__ import annotations

import datetime
import os
import pathlib
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import sparsevae as sv
from sparsevae.model import UnsafeModelFileError
from sparsevae.model._safe_load import ALLOWED_GLOBALS

from .conftest import small_simulation

FIXTURE = pathlib.Path(__file__).parent / "data" / "saved_model_0.1.0"


class WritesMarker:
    """Unpickling this runs a shell command: what a malicious model file would do."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo code ran > {self.marker}",))


def crafted_copy(tmp_path, extra) -> pathlib.Path:
    """A copy of the 0.1.0 fixture whose attr_dict gained the object ``extra``."""
    folder = tmp_path / "crafted"
    shutil.copytree(FIXTURE, folder)
    contents = torch.load(FIXTURE / "model.pt", weights_only=False)  # our own fixture
    contents["attr_dict"]["extra_"] = extra
    torch.save(contents, folder / "model.pt")
    return folder


def test_a_crafted_file_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "marker.txt"
    folder = crafted_copy(tmp_path, WritesMarker(marker))
    adata = small_simulation()
    for load in (
        lambda: sv.SparseVAE.load(folder),
        lambda: sv.SparseVAE.load(folder, adata=adata),
        lambda: sv.SparseVAE.load_registry(folder),
        lambda: sv.SparseVAE.view_setup_args(folder),
    ):
        with pytest.raises(
            UnsafeModelFileError, match=r"asks for the type '(posix|os)\.system'"
        ) as error:
            load()
        assert "may not be safe" in str(error.value) and "trust_file=True" in str(error.value)
        assert not marker.exists()
    # The same file with the opt-in runs the payload: the refusal above is what protects.
    sv.SparseVAE.load(folder, trust_file=True)
    assert marker.read_text() == "code ran\n"


def test_the_opt_in_loads_a_file_with_an_extra_type(tmp_path):
    folder = crafted_copy(tmp_path, datetime.date(2026, 12, 1))
    with pytest.raises(UnsafeModelFileError, match=r"'datetime\.date'"):
        sv.SparseVAE.load(folder)
    model = sv.SparseVAE.load(folder, trust_file=True)
    assert model.extra_ == datetime.date(2026, 12, 1)
    # Latents recorded on another machine: test_saved_model.py's tolerance, which holds across
    # CPUs (the encoder's float32 sums differ by ~2e-7 between instruction sets).
    np.testing.assert_allclose(
        model.get_latent_representation(),
        np.load(FIXTURE / "expected_latent.npy"),
        rtol=1e-5,
        atol=1e-5,
    )


def test_fresh_save_needs_only_the_allowlist_and_loads_the_same(trained, tmp_path):
    model, data = trained
    model.save(tmp_path / "model")
    path = tmp_path / "model" / "model.pt"
    with torch.serialization.safe_globals(ALLOWED_GLOBALS):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
        contents = torch.load(path, weights_only=True)  # no pandas, no defaultdict stand-ins
    history = contents["attr_dict"]["history_"]["elbo_train"]
    assert set(history) == {"index", "index_name", "columns", "values"}
    assert history["values"].dtype == np.float64
    # The model in memory keeps its DataFrames; the loaded one gets them back.
    assert isinstance(model.history["elbo_train"], pd.DataFrame)
    loaded = sv.SparseVAE.load(tmp_path / "model", adata=data)
    for key, frame in model.history.items():
        pd.testing.assert_frame_equal(loaded.history[key], frame.astype(np.float64))
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )
    pd.testing.assert_frame_equal(loaded.get_mask_probabilities(), model.get_mask_probabilities())
    registry = sv.SparseVAE.load_registry(tmp_path / "model")
    assert registry["setup_args"]["perturbation_key"] == "perturbation"


def test_the_010_fixture_history_is_rebuilt_without_pandas_unpickling():
    model = sv.SparseVAE.load(FIXTURE)
    reference = torch.load(FIXTURE / "model.pt", weights_only=False)["attr_dict"]["history_"]
    assert set(model.history) == set(reference)
    for key, frame in reference.items():
        pd.testing.assert_frame_equal(model.history[key], frame.infer_objects())


def test_a_missing_model_file_says_where(tmp_path):
    with pytest.raises(ValueError, match="No saved model at"):
        sv.SparseVAE.load(tmp_path, adata=small_simulation())
