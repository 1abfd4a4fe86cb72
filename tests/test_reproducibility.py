"""Same seed on CPU -> identical latents, mask probabilities, training history and report rows.

These tests check determinism: the same machine, settings and thread count, run twice, give
the same bits. They do not check portability: on another CPU, instruction set
(``ATEN_CPU_CAPABILITY``) or number of threads the digits may differ (docs/robustness.md);
tests that compare with numbers recorded elsewhere use a tolerance instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scvi

import sparsevae as sv

from .conftest import QUIET, small_simulation


def _fit(seed: int):
    data = small_simulation()
    scvi.settings.seed = seed
    sv.SparseVAE.setup_anndata(data, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(data, n_latent=4, n_hidden=16)
    model.train(max_epochs=3, batch_size=64, check_val_every_n_epoch=1, **QUIET)
    return model


def test_same_seed_gives_identical_model_outputs():
    """Two fits with one seed are bitwise equal. A determinism check on one machine, not a
    portability one: another CPU or thread count may give other digits.
    """
    first, again, other = _fit(0), _fit(0), _fit(1)
    np.testing.assert_array_equal(
        first.get_latent_representation(), again.get_latent_representation()
    )
    pd.testing.assert_frame_equal(first.get_mask_probabilities(), again.get_mask_probabilities())
    pd.testing.assert_frame_equal(first.get_perturbation_shifts(), again.get_perturbation_shifts())
    for key in ("train_loss", "elbo_validation"):
        pd.testing.assert_frame_equal(first.history[key], again.history[key])
    scvi.settings.seed = 0
    nll_first = first.get_interventional_nll(n_particles=5)
    scvi.settings.seed = 0
    np.testing.assert_array_equal(nll_first, again.get_interventional_nll(n_particles=5))
    # Another seed gives another model: the comparison above can fail.
    assert not np.array_equal(first.get_latent_representation(), other.get_latent_representation())


def test_same_seed_gives_identical_report_rows():
    """Two reports with one seed are equal. A determinism check on one machine, not a
    portability one: another CPU or thread count may give other digits.
    """

    def report():
        return sv.evaluate.interventional_nll_report(
            small_simulation(),
            methods=("svae+", "vae"),
            heldout=["P4", "P5"],
            seeds=(0,),
            max_epochs=2,
            n_particles=5,
            n_latent=3,
            model_kwargs={"n_hidden": 16},
        )

    first, again = report(), report()
    models = first[first["kind"] == "model"]
    assert len(models) == 4 and models["interventional_nll"].notna().all()
    pd.testing.assert_frame_equal(first, again)
    assert first.attrs["splits"] == again.attrs["splits"]
