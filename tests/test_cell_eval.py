"""Scoring with cell-eval (the `eval` extra): predictions in cell-eval's layout, scored.

The data: one simulated screen whose cells of each perturbation are split in two halves. The
real cells are one half (and the controls); the "truth" prediction is the other half (and the
same controls), which cell-eval should find nearly perfect; the "wrong" prediction is that half
with every perturbation's label moved to another perturbation, which it should not. The error
tests run without cell-eval: the checks come before it is imported.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import sparsevae as sv
from sparsevae.evaluate import score_with_cell_eval

KEY, CONTROL = "perturbation", "control"
N_PERTURBATIONS = 6
NEEDS_CELL_EVAL = pytest.mark.skipif(
    importlib.util.find_spec("cell_eval") is None,
    reason="cell-eval is not installed (the eval extra): pip install 'sparsevae[eval]'",
)


@pytest.fixture(scope="module")
def halves():
    """(real, truth, wrong): real half + controls, the other half, the other half relabelled."""
    adata = sv.data.simulate_sparse_shift(
        n_perturbations=N_PERTURBATIONS,
        n_cells_per_perturbation=60,
        n_latent=4,
        n_genes=40,
        random_state=0,
    )
    labels = adata.obs[KEY].astype(str).to_numpy()
    rng = np.random.default_rng(0)
    in_real = labels == CONTROL
    for label in set(labels) - {CONTROL}:
        cells = np.flatnonzero(labels == label)
        in_real[rng.permutation(cells)[: cells.size // 2]] = True
    real = adata[in_real].copy()
    truth = adata[~in_real | (labels == CONTROL)].copy()
    truth.obs = truth.obs[[KEY]]
    wrong = truth.copy()
    perturbations = sorted(set(labels) - {CONTROL})
    # Every perturbation's cells get the next perturbation's label (no label stays right).
    moved = dict(zip(perturbations, np.roll(perturbations, 1), strict=True))
    wrong.obs[KEY] = [moved.get(label, label) for label in wrong.obs[KEY].astype(str)]
    return real, truth, wrong


def _means(table):
    return table.groupby("metric")["value"].mean()


@NEEDS_CELL_EVAL
def test_the_truth_scores_better_than_a_wrong_prediction(halves):
    real, truth, wrong = halves
    right = score_with_cell_eval(truth, real, KEY, CONTROL, profile="minimal")
    wrong_table = score_with_cell_eval(wrong, real, KEY, CONTROL, profile="minimal")

    # The minimal profile: 7 metrics, the DE gene counts as a real and a predicted row.
    metrics = {
        "pearson_delta",
        "mse",
        "mae",
        "discrimination_score_l1",
        "overlap_at_N",
        "precision_at_N",
        "de_nsig_counts_real",
        "de_nsig_counts_pred",
    }
    for table in (right, wrong_table):
        assert list(table.columns) == ["perturbation", "metric", "value", "better"]
        assert table.shape == (N_PERTURBATIONS * len(metrics), 4)
        assert set(table["metric"]) == metrics
        assert sorted(set(table["perturbation"])) == [f"P{i}" for i in range(N_PERTURBATIONS)]
        assert table["value"].notna().all()
    better = right.drop_duplicates("metric").set_index("metric")["better"]
    assert better["pearson_delta"] == "higher" and better["mae"] == "lower"
    assert better["de_nsig_counts_real"] == ""

    right, wrong_means = _means(right), _means(wrong_table)
    assert right["pearson_delta"] > 0.95 > wrong_means["pearson_delta"] + 0.3
    assert right["discrimination_score_l1"] > wrong_means["discrimination_score_l1"]
    assert right["overlap_at_N"] > wrong_means["overlap_at_N"]
    assert right["mae"] < wrong_means["mae"]
    # The same real cells on both sides: the same real DE genes.
    assert right["de_nsig_counts_real"] == wrong_means["de_nsig_counts_real"]


@NEEDS_CELL_EVAL
def test_full_profile_with_the_base_mean_baseline_writes_cell_eval_files(halves, tmp_path):
    real, truth, _ = halves
    # Genes in another order and a real perturbation that is not predicted: both are handled.
    reordered = truth[:, truth.var_names[::-1]].copy()
    dropped = reordered[reordered.obs[KEY] != "P5"].copy()
    table = score_with_cell_eval(dropped, real, KEY, CONTROL, baseline=True, outdir=tmp_path)

    assert list(table.columns) == ["perturbation", "metric", "value", "better", "baseline"]
    assert sorted(set(table["perturbation"])) == [f"P{i}" for i in range(N_PERTURBATIONS - 1)]
    assert {"pearson_delta", "overlap_at_N", "discrimination_score_l1"} <= set(table["metric"])
    means = table.groupby("metric")[["value", "baseline"]].mean()
    assert means.loc["pearson_delta", "value"] > means.loc["pearson_delta", "baseline"]
    assert means.loc["mae", "value"] < means.loc["mae", "baseline"]
    for name in ("real_de.csv", "pred_de.csv", "results.csv", "agg_results.csv"):
        assert (tmp_path / name).is_file(), name
        assert (tmp_path / "baseline" / name).is_file(), name


@NEEDS_CELL_EVAL
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # scanpy, on 2 centroids
def test_a_metric_that_cell_eval_cannot_compute_is_named_in_a_warning(halves):
    real, truth, _ = halves
    two = truth[truth.obs[KEY].isin([CONTROL, "P0", "P1"])].copy()
    # Leiden clustering of two perturbation centroids fails inside cell-eval.
    with pytest.warns(UserWarning, match=r"could not compute 1 metric.*'clustering_agreement'"):
        table = score_with_cell_eval(two, real, KEY, CONTROL, profile="anndata")
    assert "clustering_agreement" not in set(table["metric"])
    assert {"pearson_delta", "pearson_edistance"} <= set(table["metric"])


# Errors: raised before cell-eval is imported, so they run without the extra.


def test_a_missing_perturbation_column_is_named(halves):
    real, truth, _ = halves
    with pytest.raises(
        KeyError, match=r"predicted.obs has no column 'perturbations'.*'perturbation'"
    ):
        score_with_cell_eval(truth, real, "perturbations", CONTROL)


def test_a_control_label_absent_from_either_side_is_named(halves):
    real, truth, _ = halves
    with pytest.raises(ValueError, match=r"'Control' is not in predicted.*Did you mean 'control'"):
        score_with_cell_eval(truth, real, KEY, "Control")
    no_control = real[real.obs[KEY] != CONTROL].copy()
    with pytest.raises(ValueError, match=r"'control' is not in real.obs\['perturbation'\]"):
        score_with_cell_eval(truth, no_control, KEY, CONTROL)


def test_a_predicted_perturbation_that_real_lacks_is_named(halves):
    real, truth, _ = halves
    fewer = real[real.obs[KEY] != "P3"].copy()
    with pytest.raises(ValueError, match=r"1 perturbation\(s\) of predicted are not in real.*'P3'"):
        score_with_cell_eval(truth, fewer, KEY, CONTROL)


def test_different_genes_are_named(halves):
    real, truth, _ = halves
    with pytest.raises(ValueError, match=r"different genes.*'gene_39'"):
        score_with_cell_eval(truth[:, :-1].copy(), real, KEY, CONTROL)


def test_scaled_values_are_refused(halves):
    real, truth, _ = halves
    scaled = truth.copy()
    dense = scaled.X.toarray()
    scaled.X = dense - dense.mean(axis=0)  # centred per gene, as sc.pp.scale leaves it
    with pytest.raises(ValueError, match=r"predicted\.X has negative values"):
        score_with_cell_eval(scaled, real, KEY, CONTROL)


def test_an_unknown_profile_is_named(halves):
    real, truth, _ = halves
    with pytest.raises(ValueError, match="profile='fast' is unknown"):
        score_with_cell_eval(truth, real, KEY, CONTROL, profile="fast")


def test_without_cell_eval_the_error_says_how_to_install(halves, monkeypatch):
    import builtins

    real, truth, _ = halves
    original = builtins.__import__

    def no_cell_eval(name, *args, **kwargs):
        if name == "cell_eval" or name.startswith("cell_eval."):
            raise ImportError(f"No module named {name!r}")
        return original(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cell_eval)
    with pytest.raises(ImportError, match=r'pip install "sparsevae\[eval\]"'):
        score_with_cell_eval(truth, real, KEY, CONTROL)
