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
import pandas as pd
import pytest

import sparsevae as sv
from sparsevae.evaluate import score_with_cell_eval
from sparsevae.evaluate._heldout import REPORT_COLUMNS

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


@pytest.fixture
def without_cell_eval(monkeypatch):
    """``import cell_eval`` fails, as where the extra is not installed."""
    import builtins

    original = builtins.__import__

    def no_cell_eval(name, *args, **kwargs):
        if name == "cell_eval" or name.startswith("cell_eval."):
            raise ImportError(f"No module named {name!r}")
        return original(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cell_eval)


def test_without_cell_eval_the_error_says_how_to_install(halves, without_cell_eval):
    real, truth, _ = halves
    with pytest.raises(ImportError, match=r'pip install "sparsevae\[eval\]"'):
        score_with_cell_eval(truth, real, KEY, CONTROL)


def _report_data():
    from .conftest import small_simulation

    return small_simulation(n_cells_per_perturbation=60)


@NEEDS_CELL_EVAL
def test_the_report_scores_methods_and_baselines_with_cell_eval(tmp_path):
    """``interventional_nll_report(cell_eval="minimal")``: every model and scored baseline row
    gets cell-eval's metrics, the project's own beside them; "no change" is not scored; a
    checkpointed report reads them back.
    """
    data = _report_data()
    kwargs = dict(
        methods=("svae+",),
        heldout=["P4", "P5"],
        max_epochs=5,
        n_particles=2,
        n_latent=4,
        n_top_genes=None,
        n_boot=0,
        cell_eval="minimal",
        checkpoint_dir=tmp_path / "checkpoint",
    )
    report = sv.evaluate.interventional_nll_report(data, **kwargs)
    columns = [c for c in report.columns if c.startswith("cell_eval_")]
    assert {"cell_eval_pearson_delta", "cell_eval_mae", "cell_eval_overlap_at_N"} <= set(columns)
    assert list(report.columns[: len(REPORT_COLUMNS)]) == REPORT_COLUMNS
    scored = report[report["method"] != "baseline: no change"]
    assert set(scored["method"]) == {
        "svae+",
        "baseline: mean of training perturbations",
        "baseline: split-half",
    }
    assert scored[columns].notna().all().all()
    assert len(scored) == 3 * 2  # (model + 2 baselines) × 2 held-out perturbations
    no_change = report[report["method"] == "baseline: no change"]
    assert no_change[columns].isna().all().all()
    # The split-half baseline is the same cells on both scorers' sides (transfer cells against
    # all training control cells, log1p(CP10k)): cell-eval's Pearson delta is the project's.
    split_half = report[report["method"] == "baseline: split-half"]
    np.testing.assert_allclose(
        split_half["cell_eval_pearson_delta"], split_half["pearson_all_genes"], atol=1e-5
    )
    # run again from the checkpoint: the same table, cell-eval columns included
    again = sv.evaluate.interventional_nll_report(data, **kwargs)
    assert list(again.columns) == list(report.columns)
    np.testing.assert_allclose(
        again[columns].to_numpy(dtype=float), report[columns].to_numpy(dtype=float)
    )


def test_the_report_checks_the_cell_eval_profile_before_training():
    data = _report_data()
    with pytest.raises(ValueError, match="cell_eval='fast' is not a cell-eval profile"):
        sv.evaluate.interventional_nll_report(data, heldout=["P4"], cell_eval="fast")
    with pytest.raises(ValueError, match="cell_eval needs a control label"):
        sv.evaluate.interventional_nll_report(
            data, heldout=["P4"], control=None, cell_eval="minimal"
        )


def test_the_report_without_cell_eval_says_how_to_install(without_cell_eval):
    with pytest.raises(ImportError, match=r"interventional_nll_report\(cell_eval=...\) needs"):
        sv.evaluate.interventional_nll_report(_report_data(), heldout=["P4"], cell_eval="minimal")


def _cli_report(tmp_path, *extra):
    from sparsevae.cli import main

    path = tmp_path / "screen.h5ad"
    _report_data().write_h5ad(path)
    return main(
        [
            "report",
            str(path),
            "--perturbation-key",
            KEY,
            "--out",
            str(tmp_path / "out"),
            "--methods",
            "svae+",
            "--heldout",
            "P4,P5",
            "--max-epochs",
            "3",
            "--n-particles",
            "2",
            "--n-latent",
            "3",
            *extra,
        ]
    )


@NEEDS_CELL_EVAL
def test_cli_report_with_cell_eval_writes_its_metrics(tmp_path):
    assert _cli_report(tmp_path, "--control", CONTROL, "--cell-eval", "minimal") == 0
    report = pd.read_csv(tmp_path / "out" / "report.csv")
    assert report.loc[report["method"] == "svae+", "cell_eval_pearson_delta"].notna().all()
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## Scored by cell-eval" in text and "cell-eval profile `minimal`" in text


def test_cli_report_names_a_bad_cell_eval_profile_or_missing_control(tmp_path, capsys):
    assert _cli_report(tmp_path, "--control", CONTROL, "--cell-eval", "fast") == 2
    assert "--cell-eval 'fast' is not a cell-eval profile" in capsys.readouterr().err
    assert _cli_report(tmp_path, "--cell-eval", "minimal") == 2
    assert "--cell-eval needs --control" in capsys.readouterr().err
