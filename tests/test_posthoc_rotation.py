"""The two-stage rival: a post-hoc sparse rotation of any model's latents, and its readouts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import sparsevae as sv

from .conftest import small_simulation


def _rotated_sparse_screen(seed: int = 0, n_perturbations: int = 30, n_latent: int = 5):
    """Latents with sparse true shifts (2 targets of +-5 each), seen through a random rotation."""
    rng = np.random.default_rng(seed)
    shifts = np.zeros((n_perturbations, n_latent))
    for a in range(n_perturbations):
        shifts[a, rng.choice(n_latent, 2, replace=False)] = rng.choice([-5.0, 5.0], 2)
    names = [f"P{a:02d}" for a in range(n_perturbations)]
    labels = np.repeat([*names, "control"], 50)
    z_true = np.concatenate(
        [s + rng.normal(size=(50, n_latent)) for s in shifts] + [rng.normal(size=(50, n_latent))]
    )
    rotation, _ = np.linalg.qr(rng.normal(size=(n_latent, n_latent)))
    truth = pd.DataFrame(shifts != 0, index=names).astype(int)
    return z_true, z_true @ rotation, labels, truth


def test_latent_mean_shifts_by_hand():
    z = np.array([[1.0, 0.0], [3.0, 2.0], [0.0, 1.0], [0.0, -1.0], [5.0, 5.0]])
    labels = ["A", "A", "control", "control", "B"]
    shifts = sv.evaluate.latent_mean_shifts(z, labels, "control")
    np.testing.assert_allclose(shifts.loc["A"], [2.0, 1.0])
    np.testing.assert_allclose(shifts.loc["B"], [5.0, 5.0])
    assert list(shifts.index) == ["A", "B"]
    # without control: from the per-latent median of the perturbations' means ("control" is
    # one of them here): A [2, 1], control [0, 0], B [5, 5] -> median [2, 1]
    no_control = sv.evaluate.latent_mean_shifts(z, labels)
    np.testing.assert_allclose(no_control.loc["A"], [0.0, 0.0])
    np.testing.assert_allclose(no_control.loc["B"], [3.0, 4.0])


def test_posthoc_rotation_undoes_a_rotation_of_sparse_shifts():
    z_true, z, labels, _ = _rotated_sparse_screen()
    before = sv.metrics.mean_correlation_coefficient(z_true, z)
    rotated, shifts = sv.evaluate.posthoc_sparse_rotation(z, labels, "control")
    after = sv.metrics.mean_correlation_coefficient(z_true, rotated)
    assert before < 0.8 and after > 0.99
    # the rotation is orthogonal: distances between cells are kept
    np.testing.assert_allclose(
        np.linalg.norm(rotated[:5] - rotated[5:10], axis=1),
        np.linalg.norm(z[:5] - z[5:10], axis=1),
        rtol=1e-8,
    )
    np.testing.assert_allclose(
        shifts.to_numpy(), sv.evaluate.latent_mean_shifts(rotated, labels, "control").to_numpy()
    )


def test_shift_targets_readouts_by_hand():
    shifts = pd.DataFrame([[4.0, -3.0, 1.0, 0.5], [0.1, 0.2, -6.0, 2.9]], index=["A", "B"])
    top2 = sv.evaluate.shift_targets(shifts, "top-2")
    np.testing.assert_array_equal(top2.to_numpy(), [[1, 1, 0, 0], [0, 0, 1, 1]])
    threshold = sv.evaluate.shift_targets(shifts, "threshold")  # |shift| >= half the row max
    np.testing.assert_array_equal(threshold.to_numpy(), [[1, 1, 0, 0], [0, 0, 1, 0]])
    with pytest.raises(ValueError, match="readout='top-3'"):
        sv.evaluate.shift_targets(shifts, "top-3")


def test_posthoc_readouts_recover_the_true_graph():
    z_true, z, labels, truth = _rotated_sparse_screen(seed=1)
    rotated, shifts = sv.evaluate.posthoc_sparse_rotation(z, labels, "control")
    for readout in sv.evaluate.POSTHOC_READOUTS:
        scores = sv.metrics.graph_scores(
            truth, sv.evaluate.shift_targets(shifts, readout), z_true, rotated
        )
        assert scores["f1"] == 1.0, readout


def test_identifiability_report_with_posthoc_rows():
    adata = small_simulation()
    report = sv.evaluate.identifiability_report(
        adata, methods=("ivae",), max_epochs=2, posthoc_rotation=True
    )
    assert list(report["rotation"]) == ["as trained", "post-hoc", "post-hoc"]
    assert list(report["graph_readout"]) == ["model", "top-2", "threshold"]
    trained, top2, _ = (report.iloc[i] for i in range(3))
    # rotation changes the latents' scores but not the training run
    assert trained["train_seconds"] == top2["train_seconds"]
    assert report[["mcc_pearson", "f1"]].notna().all().all()
    plain = sv.evaluate.identifiability_report(adata, methods=("ivae",), max_epochs=2)
    assert list(plain["rotation"]) == ["as trained"]
