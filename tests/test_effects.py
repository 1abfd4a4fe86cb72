"""Effect correlations: predicted vs observed mean change per gene."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

import sparsevae as sv

from .conftest import small_simulation


def test_effect_correlations_over_all_and_top_genes():
    rng = np.random.default_rng(0)
    observed = rng.normal(size=200)
    observed[:5] = [10, -9, 8, -7, 6]  # the five largest changes
    predicted = 2.0 * observed + 1.0
    r = sv.evaluate.effect_correlations(predicted, observed, n_top=5)
    assert r == pytest.approx({"pearson_all_genes": 1.0, "pearson_top5_de": 1.0})
    # only the top genes agree: the top-5 correlation sees them, the all-gene one the noise
    scrambled = np.concatenate([observed[:5], rng.normal(size=195)])
    r = sv.evaluate.effect_correlations(scrambled, observed, n_top=5)
    assert r["pearson_top5_de"] == pytest.approx(1.0)
    assert r["pearson_all_genes"] < 0.9


def test_no_predicted_change_has_no_correlation():
    r = sv.evaluate.effect_correlations(np.zeros(30), np.arange(30.0))
    assert np.isnan(r["pearson_all_genes"]) and np.isnan(r["pearson_top20_de"])


def test_effect_correlations_reject_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        sv.evaluate.effect_correlations(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="n_top"):
        sv.evaluate.effect_correlations(np.arange(3.0), np.arange(3.0), n_top=1)


@pytest.mark.parametrize("sparse", [False, True])
def test_mean_log_expression_normalises_each_cell(sparse):
    counts = np.array([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0], [2.0, 2.0, 4.0]])
    adata = AnnData(X=sp.csr_matrix(counts) if sparse else counts)
    expected = np.mean(
        [np.log1p(1e4 * np.array([0.25, 0.75, 0.0])), np.log1p(1e4 * np.array([0.25, 0.25, 0.5]))],
        axis=0,
    )  # the empty cell has no proportions and is skipped
    np.testing.assert_allclose(sv.evaluate.mean_log_expression(adata), expected)
    with pytest.raises(ValueError, match="no cell with counts"):
        sv.evaluate.mean_log_expression(adata[[1]])


# ---- the field's metrics, baselines and bootstrap --------------------------------------------
def _log_normalized_by_hand(counts: np.ndarray) -> np.ndarray:
    counts = counts[counts.sum(axis=1) > 0]
    return np.log1p(1e4 * counts / counts.sum(axis=1, keepdims=True))


def test_effect_metrics_by_hand():
    rng = np.random.default_rng(0)
    observed, predicted = rng.normal(size=50), rng.normal(size=50)
    expression = rng.uniform(size=50)
    metrics = sv.evaluate.effect_metrics(predicted, observed, expression)
    top = np.argsort(-np.abs(observed))[:20]
    assert metrics["pearson_all_genes"] == pytest.approx(np.corrcoef(predicted, observed)[0, 1])
    assert metrics["pearson_top20_de"] == pytest.approx(
        np.corrcoef(predicted[top], observed[top])[0, 1]
    )
    assert metrics["mse_top20_de"] == pytest.approx(np.mean((predicted - observed)[top] ** 2))
    # fewer than 1,000 genes: the L2 is over all of them
    assert metrics["l2_top1000_expressed"] == pytest.approx(np.linalg.norm(predicted - observed))
    flat = sv.evaluate.effect_metrics(np.zeros(50), observed)
    assert np.isnan(flat["pearson_all_genes"]) and flat["mse_top20_de"] > 0
    with pytest.raises(ValueError, match="expression has 3 genes"):
        sv.evaluate.effect_metrics(predicted, observed, np.ones(3))


def test_observed_changes_and_baselines_by_hand():
    data = small_simulation()
    counts = data.X.toarray()
    labels = data.obs["perturbation"].astype(str).to_numpy()
    control_mean = _log_normalized_by_hand(counts[labels == "control"]).mean(axis=0)
    changes = sv.evaluate.observed_changes(data, "perturbation", control_mean, exclude=("control",))
    assert sorted(changes) == sorted(set(labels) - {"control"})
    for label, change in changes.items():
        by_hand = _log_normalized_by_hand(counts[labels == label]).mean(axis=0) - control_mean
        np.testing.assert_allclose(change, by_hand, rtol=1e-5, atol=1e-5)
    transfer = np.arange(data.n_vars, dtype=float)
    training = {k: v for k, v in changes.items() if k in ("P0", "P1", "P2")}
    baselines = sv.evaluate.baseline_predictions(
        "P0+P1", training, transfer_change=transfer, combination_delimiter="+"
    )
    assert list(baselines) == list(sv.evaluate.BASELINES)
    np.testing.assert_array_equal(baselines["baseline: no change"], 0.0)
    np.testing.assert_allclose(
        baselines["baseline: mean of training perturbations"],
        (changes["P0"] + changes["P1"] + changes["P2"]) / 3,
    )
    np.testing.assert_array_equal(baselines["baseline: split-half"], transfer)
    np.testing.assert_allclose(baselines["baseline: additive"], changes["P0"] + changes["P1"])
    # the additive baseline needs every single trained, and a delimiter
    assert "baseline: additive" not in sv.evaluate.baseline_predictions(
        "P0+P5", training, combination_delimiter="+"
    )
    assert "baseline: additive" not in sv.evaluate.baseline_predictions("P0+P1", training)
    with pytest.raises(ValueError, match="training_changes is empty"):
        sv.evaluate.baseline_predictions("P0", {})


def test_score_predictions_bootstraps_the_same_cells_for_every_predictor():
    rng = np.random.default_rng(1)
    cells = rng.normal(loc=np.linspace(0, 2, 30), size=(40, 30))
    control_mean = np.zeros(30)
    observed = cells.mean(axis=0)
    good = observed + rng.normal(scale=0.1, size=30)
    predictions = {"good": good, "same": good.copy(), "noise": rng.normal(size=30)}
    scores = sv.evaluate.score_predictions(predictions, cells, control_mean, random_state=3)
    assert list(scores.index) == ["good", "same", "noise"]
    for name, prediction in predictions.items():  # the point estimates are effect_metrics'
        point = sv.evaluate.effect_metrics(prediction, observed, control_mean)
        for metric, value in point.items():
            assert scores.loc[name, metric] == pytest.approx(value)
            # percentile intervals: resampling adds noise to the observed mean, so for Pearson
            # the interval may sit just below the point estimate
            assert scores.loc[name, f"{metric}_low"] <= scores.loc[name, f"{metric}_high"]
    pd.testing.assert_series_equal(scores.loc["good"], scores.loc["same"], check_names=False)
    assert (
        scores.loc["good", "pearson_all_genes_low"] > scores.loc["noise", "pearson_all_genes_high"]
    )
    # the same random_state, run twice on this machine: equal (determinism, not portability)
    again = sv.evaluate.score_predictions(predictions, cells, control_mean, random_state=3)
    pd.testing.assert_frame_equal(scores, again)
    no_intervals = sv.evaluate.score_predictions(predictions, cells, control_mean, n_boot=0)
    assert no_intervals["pearson_all_genes_low"].isna().all()
