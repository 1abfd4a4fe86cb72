from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sparsevae import metrics


@pytest.fixture
def latents():
    return np.random.default_rng(0).normal(size=(500, 4))


def test_mcc_perfect_and_invariant_to_permutation_sign_scale(latents):
    assert metrics.mean_correlation_coefficient(latents, latents) == pytest.approx(1.0)
    transformed = latents[:, [2, 0, 3, 1]] * np.array([-1.0, 3.0, -0.5, 2.0]) + 7.0
    for method in ("pearson", "spearman"):
        assert metrics.mean_correlation_coefficient(latents, transformed, method) == (
            pytest.approx(1.0)
        )


def test_mcc_of_independent_latents_is_low(latents):
    other = np.random.default_rng(1).normal(size=latents.shape)
    assert metrics.mean_correlation_coefficient(latents, other) < 0.2


def test_mcc_of_rotation_is_below_one(latents):
    angle = np.pi / 4
    rotation = np.eye(4)
    rotation[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    score = metrics.mean_correlation_coefficient(latents, latents @ rotation)
    assert 0.8 < score < 0.9  # two latents recovered, two mixed at 45° (|corr| ≈ 0.71)
    # a rotation keeps all information: linear R² stays 1
    assert metrics.linear_r2(latents, latents @ rotation) == pytest.approx(1.0)


def test_spearman_sees_monotone_maps(latents):
    monotone = np.exp(latents)
    assert metrics.mean_correlation_coefficient(latents, monotone, "spearman") == (
        pytest.approx(1.0)
    )
    assert metrics.mean_correlation_coefficient(latents, monotone, "pearson") < 0.95


def test_input_errors(latents):
    with pytest.raises(ValueError, match="same cells"):
        metrics.mean_correlation_coefficient(latents, latents[:10])
    with pytest.raises(ValueError, match="method"):
        metrics.mean_correlation_coefficient(latents, latents, method="kendall")
    with pytest.raises(ValueError, match="NaN"):
        metrics.mean_correlation_coefficient(latents, np.full_like(latents, np.nan))


def _graph(n_perturbations=6, n_latent=4, seed=0):
    rng = np.random.default_rng(seed)
    truth = (rng.random((n_perturbations, n_latent)) < 0.4).astype(int)
    truth[np.arange(n_perturbations), rng.integers(n_latent, size=n_perturbations)] = 1
    return pd.DataFrame(truth, index=[f"P{i}" for i in range(n_perturbations)])


def test_graph_scores_perfect_and_invariant_to_permutation_and_sign(latents):
    truth = _graph()
    perfect = metrics.graph_scores(truth, truth.astype(float), latents, latents)
    assert perfect["precision"] == perfect["recall"] == perfect["f1"] == 1.0
    order = [3, 1, 0, 2]
    permuted_pi = truth.iloc[:, order].astype(float)  # inferred latent j is true latent order[j]
    z = latents[:, order] * np.array([-1, 1, -2, 1])
    assert metrics.graph_scores(truth, permuted_pi, latents, z)["f1"] == 1.0


def test_graph_scores_known_counts(latents):
    truth = pd.DataFrame([[1, 0, 0, 0], [0, 1, 1, 0]], index=["A", "B"])
    pi = pd.DataFrame([[0.9, 0.8, 0.0, 0.0], [0.0, 0.1, 0.7, 0.0]], index=["A", "B"])
    scores = metrics.graph_scores(truth, pi, latents, latents)
    # predicted: (A,0), (A,1), (B,2); true: (A,0), (B,1), (B,2) → tp 2, fp 1, fn 1
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["n_predicted_edges"] == 3


def test_graph_scores_row_alignment_and_errors(latents):
    truth = _graph()
    shuffled = truth.astype(float).iloc[::-1]
    assert metrics.graph_scores(truth, shuffled, latents, latents)["f1"] == 1.0
    with pytest.raises(ValueError, match="no row"):
        metrics.graph_scores(truth, shuffled.iloc[:2], latents, latents)


def test_columns_with_subnormal_spread_count_as_constant():
    """Hypothesis found MCC 0 one way and 1 the other, and a NaN R², for a column varying by
    5e-324: such columns are constant (no correlation, no predictive power) both ways.
    """
    z_true = np.array([[4.0], [0.0]])
    z = np.array([[5e-324], [0.0]])
    for method in ("pearson", "spearman"):
        assert metrics.mean_correlation_coefficient(z_true, z, method) == 0.0
        assert metrics.mean_correlation_coefficient(z, z_true, method) == 0.0
    assert metrics.linear_r2(np.array([[0.0], [1.0]]), z) == 0.0
