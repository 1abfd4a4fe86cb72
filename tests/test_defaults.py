"""Every public function, method and CLI subcommand, called with only its required arguments.

Defaults are the product: a default that crashes (an import that scvi-tools 1.4 does not
export, a dependency that is not declared) must fail here, on a tiny screen, rather than on a
user's machine. Each call is checked for what it returns, not only that it ran.
"""

from __future__ import annotations

import inspect
import json
import warnings
from importlib.util import find_spec

import matplotlib

matplotlib.use("Agg")

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scvi
import torch

import sparsevae as sv
from sparsevae import cli
from sparsevae._quiet import QUIET_TRAINER
from sparsevae.model import default_max_epochs, default_n_layers

from .conftest import small_simulation

# Default runs train many models (the held-out report: five methods per split): about 75 s.
pytestmark = pytest.mark.slow

# The public namespaces and every name they export; a new public name without a call below
# fails test_every_public_name_is_called.
NAMESPACES = ("data", "tl", "pl", "metrics", "evaluate")
CALLED = {
    "data": {
        "REGIMES",
        "norman2019_subset",
        "simulate_regime",
        "simulate_sparse_shift",
        "true_log_expression",
    },
    "tl": {"cluster_perturbations", "edge_stability", "write_results"},
    "pl": {
        "edge_stability",
        "effect_metrics",
        "graph_comparison",
        "interventional_nll",
        "latent_genes",
        "mask_heatmap",
        "perturbation_clusters",
        "training_history",
    },
    "metrics": {
        "graph_scores",
        "linear_r2",
        "match_latents",
        "matched_graph",
        "mean_correlation_coefficient",
    },
    "evaluate": {
        "BASELINES",
        "DEFAULT_METHODS",
        "EFFECT_METRICS",
        "METHODS",
        "POSTHOC_READOUTS",
        "latent_mean_shifts",
        "posthoc_sparse_rotation",
        "shift_targets",
        "HeldoutSplit",
        "baseline_predictions",
        "effect_correlations",
        "effect_metrics",
        "log_normalized",
        "observed_changes",
        "score_predictions",
        "identifiability_report",
        "interventional_nll_report",
        "make_splits",
        "mean_log_expression",
        "method_kwargs",
        "report_markdown",
        "split_table",
        "summarize_effect_correlations",
        "summarize_interventional_nll",
        "transfer_and_score",
        "score_with_cell_eval",
        "CELL_EVAL_PROFILES",
        "CheckpointMismatchError",
    },
}


def tiny_screen():
    """Four perturbations and control, 20 cells each, 16 genes: seconds per default run."""
    return small_simulation(
        n_perturbations=4, n_cells_per_perturbation=20, n_latent=3, n_genes=16, decoder_width=8
    )


@pytest.fixture(scope="module")
def default_model():
    """sVAE+ with every default: ``SparseVAE(adata)``, then ``train()`` with no arguments.

    The setup names the control label, as every real screen does (see
    test_setup_without_control_warns_about_a_control_like_label for the required-only call).
    """
    adata = tiny_screen()
    scvi.settings.seed = 0
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(adata)
    model.train()
    return model, adata


@pytest.fixture(scope="module")
def default_report():
    """``interventional_nll_report(adata)`` with every default (five methods, clusters)."""
    return sv.evaluate.interventional_nll_report(tiny_screen())


def _trained_on(adata):
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(adata, n_latent=3, n_hidden=16)
    model.train(max_epochs=5, **QUIET_TRAINER)
    return model


def test_every_public_name_is_called():
    for namespace in NAMESPACES:
        exported = set(getattr(sv, namespace).__all__)
        assert exported == CALLED[namespace], namespace


def test_default_max_epochs_follows_scvi_tools_rule():
    assert default_max_epochs(210) == 400
    assert default_max_epochs(20_000) == 400
    assert default_max_epochs(100_000) == 80
    assert default_max_epochs(10**8) == 2  # floor: one epoch before, one after the rotation
    with pytest.raises(ValueError, match="n_cells"):
        default_max_epochs(0)


def test_default_n_layers_takes_one_layer_below_100_cells_per_perturbation():
    assert [default_n_layers(n) for n in (1, 25, 99.5, 100, 250)] == [1, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="median_cells_per_perturbation"):
        default_n_layers(0)


@pytest.mark.parametrize(("cells", "depth"), [(30, 1), (120, 2)])
def test_auto_depth_follows_the_median_cells_per_perturbation(cells, depth):
    adata = sv.data.simulate_sparse_shift(
        n_perturbations=6, n_latent=3, n_genes=50, n_cells_per_perturbation=cells, random_state=0
    )
    # one perturbation with many more cells does not move the median
    extra = adata[adata.obs["perturbation"] == adata.obs["perturbation"].iloc[0]].copy()
    adata = ad.concat([adata, *[extra] * 5], index_unique="-")
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation")
    model = sv.SparseVAE(adata, n_latent=3)
    hidden = [
        m for m in model.module.decoder.px_decoder.modules() if isinstance(m, torch.nn.Linear)
    ]
    assert len(hidden) == depth
    assert model.init_params_["non_kwargs"]["n_layers"] == depth  # saved: loads the same shape
    assert (
        f"n_layers={depth} (auto: median {cells} cells per perturbation)"
        in model._model_summary_string
    )
    for bad in (0, 1.5, "two", True):
        with pytest.raises(ValueError, match="n_layers must be a positive integer or 'auto'"):
            sv.SparseVAE(adata, n_latent=3, n_layers=bad)


def test_setup_without_control_warns_about_a_control_like_label():
    adata = tiny_screen()
    with pytest.warns(UserWarning, match=r"control=None, but .* has the label 'control'"):
        sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation")
    model = sv.SparseVAE(adata, n_hidden=8)
    assert model.control is None and "control" in model.perturbation_names
    relabelled = tiny_screen()
    relabelled.obs["perturbation"] = relabelled.obs["perturbation"].cat.rename_categories(
        {"control": "P9"}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no control-like label: no warning
        sv.SparseVAE.setup_anndata(relabelled, perturbation_key="perturbation")


def test_train_without_arguments_chooses_the_epochs(default_model):
    model, adata = default_model
    assert model.is_trained_
    assert len(model.history["elbo_train"]) == default_max_epochs(adata.n_obs) == 400
    assert np.isfinite(model.history["elbo_train"].to_numpy(dtype=float)).all()


def test_model_getters_with_required_arguments_only(default_model, tmp_path):
    model, adata = default_model
    n_pert, n_latent = 4, 15
    z = model.get_latent_representation()
    assert z.shape == (adata.n_obs, n_latent) and np.isfinite(z).all()
    pi = model.get_mask_probabilities()
    assert pi.shape == (n_pert, n_latent)
    assert ((pi.to_numpy() >= 0) & (pi.to_numpy() <= 1)).all()
    targets = model.get_intervention_targets()
    assert targets.dtypes.eq(bool).all() and targets.equals(pi > 0.5)
    shifts = model.get_perturbation_shifts()
    assert shifts.shape == (n_pert, n_latent)
    assert (shifts.to_numpy()[~targets.to_numpy()] == 0).all()
    table = model.get_target_table()
    assert list(table.columns) == ["perturbation", "latent", "pi", "shift"]
    assert len(table) == targets.to_numpy().sum()
    loadings = model.get_latent_gene_loadings()
    assert len(loadings) == n_latent * adata.n_vars
    assert np.isfinite(loadings["log2_fold_change"]).all()
    nll = model.get_interventional_nll()
    assert nll.shape == (adata.n_obs,) and np.isfinite(nll).all() and (nll > 0).all()
    assert np.isfinite(float(model.get_elbo()))
    assert np.isfinite(float(model.get_marginal_ll()))
    with pytest.raises(ValueError, match=r"differential_abundance needs sample_key=\.\.\."):
        model.differential_abundance()
    abundance = model.differential_abundance(sample_key="perturbation")
    assert abundance.shape == (adata.n_obs, 5) and np.isfinite(abundance.to_numpy()).all()
    errors = model.get_reconstruction_error()
    assert errors and all(np.isfinite(float(value)) for value in errors.values())


def test_prediction_getters_with_required_arguments_only(default_model):
    model, adata = default_model
    first = model.perturbation_names[0]
    shift = model.get_combination_shift(first)  # its own cells' mean latent minus control's
    z = model.get_latent_representation()
    labels = adata.obs["perturbation"].to_numpy()
    own = z[labels == first].mean(axis=0) - z[labels == "control"].mean(axis=0)
    np.testing.assert_allclose(shift.to_numpy(), own, atol=1e-5)
    predicted = model.predict(perturbation=first)
    assert predicted.shape == adata.shape
    np.testing.assert_allclose(np.asarray(predicted.X).sum(axis=1), 1.0, rtol=1e-4)
    effect = model.get_treatment_effect(perturbation=first)
    assert effect.shape == (adata.n_vars,) and np.isfinite(effect).all()
    cells = model.predict_perturbations(first)
    n_control = int((adata.obs["perturbation"] == "control").sum())
    assert cells.n_obs == 2 * n_control and set(cells.obs["perturbation"]) == {first, "control"}
    if find_spec("cell_eval") is not None:  # the eval extra; CI installs it
        scores = sv.evaluate.score_with_cell_eval(cells, adata)
        assert set(scores["perturbation"]) == {first} and set(sv.evaluate.CELL_EVAL_PROFILES)
    expression = model.get_normalized_expression()
    assert expression.shape == adata.shape and list(expression.columns) == list(adata.var_names)
    np.testing.assert_allclose(expression.to_numpy().sum(axis=1), 1.0, rtol=1e-4)
    control = np.flatnonzero(adata.obs["perturbation"] == "control")
    np.testing.assert_allclose(  # each cell's own perturbation: predict's reconstruction
        expression.to_numpy()[control],
        model.predict(perturbation="control", indices=control).X,
        rtol=1e-5,
    )


def test_transfer_save_and_load_with_required_arguments_only(default_model, tmp_path, capsys):
    model, adata = default_model
    new = small_simulation(
        n_perturbations=6, n_cells_per_perturbation=20, n_latent=3, n_genes=16, decoder_width=8
    )
    new = new[new.obs["perturbation"].isin(["P4", "P5"])].copy()
    transferred = model.transfer(new)
    assert transferred.perturbation_names == [*model.perturbation_names, "P4", "P5"]
    model.save(tmp_path / "model")
    registry = sv.SparseVAE.load_registry(tmp_path / "model")
    assert registry["setup_args"]["control"] == "control"
    sv.SparseVAE.view_setup_args(tmp_path / "model")
    assert "perturbation_key" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"saved without its data, so load needs adata="):
        sv.SparseVAE.load(tmp_path / "model")
    model.save(tmp_path / "with_data", save_anndata=True)
    assert sv.SparseVAE.load(tmp_path / "with_data").adata.n_obs == adata.n_obs
    loaded = sv.SparseVAE.load(tmp_path / "model", adata=adata)
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )


def test_tools_and_plots_with_required_arguments_only(default_model, default_report):
    model, adata = default_model
    data = adata.copy()
    sv.tl.write_results(data, model)
    assert data.obsm["X_sparsevae"].shape == (data.n_obs, 15)
    clusters = sv.tl.cluster_perturbations(data)
    assert set(clusters.index) == set(model.perturbation_names)
    assert data.obs["perturbation_cluster"].notna().all()
    stability = adata.copy()
    reference = sv.tl.edge_stability(stability, perturbation_key="perturbation")
    edges = stability.uns["edge_stability"]["edges"]
    assert reference.is_trained_ and len(stability.uns["edge_stability"]["runs"]) == 5
    assert (edges["alpha"] == 5.0).all()  # alpha = K; without control, 'control' counts too
    assert set(edges["latent"]) == set(reference.latent_names) and len(reference.latent_names) == 15
    plt.close("all")
    plots = [
        lambda: sv.pl.mask_heatmap(data),
        lambda: sv.pl.training_history(model),
        lambda: sv.pl.latent_genes(model.get_latent_gene_loadings()),
        lambda: sv.pl.graph_comparison(
            data.uns["true_targets"],
            model.get_mask_probabilities(),
            data.obsm["z_true"],
            data.obsm["X_sparsevae"],
        ),
        lambda: sv.pl.interventional_nll(default_report),
        lambda: sv.pl.effect_metrics(default_report),
        lambda: sv.pl.perturbation_clusters(data),
        lambda: sv.pl.edge_stability(stability),
    ]
    for number, plot in enumerate(plots, start=1):
        assert plot() is None  # shown (scanpy's convention without save=), not returned
        assert len(plt.get_fignums()) == number  # each drew one figure
    plt.close("all")


def test_data_and_metrics_with_required_arguments_only():
    adata = sv.data.simulate_sparse_shift()
    assert adata.n_obs > 0 and adata.uns["true_targets"].shape[1] == adata.obsm["z_true"].shape[1]
    norman = sv.data.norman2019_subset()
    assert norman.n_obs > 0 and "control" in set(norman.obs["perturbation"])
    realistic = sv.data.simulate_regime("realistic")
    assert realistic.uns["true_targets"].shape == (200, 20)
    assert set(sv.data.REGIMES) >= {"paper", "realistic", "genome_scale"}
    log_fractions = sv.data.true_log_expression(realistic, realistic.obsm["z_true"][:5])
    assert log_fractions.shape == (5, realistic.n_vars)
    np.testing.assert_allclose(np.exp(log_fractions).sum(axis=1), 1.0)
    rng = np.random.default_rng(0)
    z_true = rng.normal(size=(200, 3))
    z = z_true[:, [2, 0, 1]] * [1, -2, 3]
    assert sv.metrics.mean_correlation_coefficient(z_true, z) == pytest.approx(1.0)
    assert sv.metrics.linear_r2(z_true, z) == pytest.approx(1.0)
    assert list(sv.metrics.match_latents(z_true, z)[1]) == [1, 2, 0]
    truth = pd.DataFrame(np.eye(3, dtype=int), columns=["a", "b", "c"])
    pi = pd.DataFrame(np.eye(3)[:, [2, 0, 1]], columns=["x", "y", "z"])
    scores = sv.metrics.graph_scores(truth, pi, z_true, z)
    assert scores["f1"] == pytest.approx(1.0)
    matched = sv.metrics.matched_graph(truth, pi, z_true, z)
    assert list(matched.columns) == ["y→a", "z→b", "x→c"]
    np.testing.assert_array_equal(matched.to_numpy(), np.eye(3))


def test_evaluate_with_required_arguments_only(default_report):
    report = default_report
    models = report[report["kind"] == "model"]
    assert set(models["method"]) == {"svae+", "svae", "ivae", "beta-vae", "vae"}
    assert np.isfinite(models["interventional_nll"]).all()
    baselines = set(report.loc[report["kind"] == "baseline", "method"])
    assert baselines == set(sv.evaluate.BASELINES) - {"baseline: additive"}  # no pairs here
    summary = sv.evaluate.summarize_interventional_nll(report)
    assert set(summary.index) == set(models["method"]) and "all" in summary.columns
    effects = sv.evaluate.summarize_effect_correlations(report)
    assert set(effects.index) == set(report["method"])
    assert set(sv.evaluate.EFFECT_METRICS) <= set(effects.columns)
    assert set(sv.evaluate.split_table(report)["split"]) == set(report["split"])
    markdown = sv.evaluate.report_markdown(report)
    assert markdown.startswith("# Held-out interventions\n")
    assert "## Mean interventional NLL per held-out split" in markdown and "svae+" in markdown
    adata = tiny_screen()
    splits = sv.evaluate.make_splits(adata)
    assert splits and all(isinstance(s, sv.evaluate.HeldoutSplit) for s in splits)
    split = sv.evaluate.HeldoutSplit(splits[0].name, splits[0].heldout, splits[0].roles)
    assert split.to_dict() == splits[0].to_dict()
    expression = sv.evaluate.mean_log_expression(adata)
    assert expression.shape == (adata.n_vars,)
    assert sv.evaluate.method_kwargs("svae+") == {"prior": "spike_slab"}
    change = np.arange(30.0)
    assert sv.evaluate.effect_correlations(change, 2 * change)["pearson_all_genes"] == 1.0
    metrics = sv.evaluate.effect_metrics(change, 2 * change)
    assert metrics["pearson_all_genes"] == pytest.approx(1.0) and metrics["mse_top20_de"] > 0
    cells = sv.evaluate.log_normalized(adata)
    assert cells.shape == adata.shape
    control_mean = sv.evaluate.mean_log_expression(adata[adata.obs["perturbation"] == "control"])
    changes = sv.evaluate.observed_changes(adata, "perturbation", control_mean)
    assert set(changes) == set(adata.obs["perturbation"])
    predictions = sv.evaluate.baseline_predictions("P3", changes)
    assert set(predictions) == {"baseline: no change", "baseline: mean of training perturbations"}
    scores = sv.evaluate.score_predictions(predictions, cells[:20], control_mean)
    assert list(scores.columns[:3]) == [
        "pearson_all_genes",
        "pearson_all_genes_low",
        "pearson_all_genes_high",
    ]
    model = _trained_on(adata[adata.obs["perturbation"] != "P3"].copy())
    held = adata[adata.obs["perturbation"] == "P3"]
    transferred, nll = sv.evaluate.transfer_and_score(model, held[:10].copy(), held[10:].copy())
    assert "P3" in transferred.perturbation_names and nll.shape == (10,) and (nll > 0).all()
    identifiability = sv.evaluate.identifiability_report(adata)
    assert len(identifiability) == 5
    assert list(identifiability["method"]) == list(sv.evaluate.DEFAULT_METHODS)
    assert set(sv.evaluate.DEFAULT_METHODS) < set(sv.evaluate.METHODS)
    assert identifiability["mcc_pearson"].between(0, 1).all()
    z = model.get_latent_representation()
    labels = model.adata.obs["perturbation"].astype(str).to_numpy()
    shifts = sv.evaluate.latent_mean_shifts(z, labels)
    assert shifts.shape == (len(set(labels)), 3)  # no control given: every label is a row
    rotated, rotated_shifts = sv.evaluate.posthoc_sparse_rotation(z, labels)
    assert rotated.shape == z.shape and rotated_shifts.shape == shifts.shape
    for readout in sv.evaluate.POSTHOC_READOUTS:
        assert sv.evaluate.shift_targets(rotated_shifts, readout).to_numpy().any(axis=1).all()


def test_cli_subcommands_with_required_arguments_only(tmp_path, monkeypatch, capsys):
    data = tiny_screen()
    path = tmp_path / "screen.h5ad"
    data.write_h5ad(path)
    required = [str(path), "--perturbation-key", "perturbation"]

    assert cli.main(["fit", *required, "--out", str(tmp_path / "fit")]) == 0
    summary = json.loads((tmp_path / "fit" / "summary.json").read_text())
    assert summary["n_perturbations"] == 5  # no --control: 'control' is a perturbation too
    assert sv.SparseVAE.load(tmp_path / "fit" / "model", adata=data).is_trained_
    stability = ["fit", *required, "--seeds", "0", "1", "--out", str(tmp_path / "stability")]
    assert cli.main(stability) == 0
    assert pd.read_csv(tmp_path / "stability" / "stability_runs.csv")["seed"].tolist() == [0, 1]
    assert (tmp_path / "stability" / "stability.png").stat().st_size > 0

    assert cli.main(["report", *required, "--out", str(tmp_path / "report")]) == 0
    report_md = (tmp_path / "report" / "report.md").read_text()
    assert "Mean interventional NLL" in report_md and "svae+" in report_md

    # `demo --out` alone runs the paper's d = 15 simulation (minutes per method): keep its
    # code path and defaults, on a tiny simulation.
    tiny = {
        "simulation": {
            "n_perturbations": 4,
            "n_cells_per_perturbation": 20,
            "n_latent": 3,
            "n_genes": 16,
            "decoder_width": 8,
        },
        "max_epochs": 5,
    }
    monkeypatch.setitem(cli.DEMO_SETTINGS, "full", tiny)
    assert cli.main(["demo", "--out", str(tmp_path / "demo")]) == 0
    metrics = pd.read_csv(tmp_path / "demo" / "metrics.csv")
    assert list(metrics["method"]) == ["svae+", "svae", "ivae", "beta-vae", "vae"]
    assert "mcc_pearson" in capsys.readouterr().out


def test_public_methods_are_listed():
    """The model methods called above are all the public ones SparseVAE defines itself."""
    own = {
        name
        for cls in sv.SparseVAE.__mro__
        if cls.__module__.startswith("sparsevae")
        for name, member in vars(cls).items()
        if not name.startswith("_") and inspect.isfunction(getattr(member, "__func__", member))
    }
    called = {
        "get_combination_shift", "get_elbo", "get_intervention_targets",
        "get_interventional_nll", "get_latent_gene_loadings", "get_latent_representation",
        "get_marginal_ll", "get_mask_probabilities", "get_perturbation_shifts",
        "get_reconstruction_error", "get_target_table", "get_treatment_effect", "predict",
        "predict_perturbations",
        "train", "transfer", "save", "load", "load_registry", "view_setup_args",
        "get_normalized_expression", "differential_abundance",
        "setup_anndata",
    }  # fmt: skip
    assert own <= called, own - called
