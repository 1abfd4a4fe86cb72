"""Three classes of bad input, each refused (or warned about) at every entry point (issue 29).

(a) names that must be unique and are not; (b) arguments with which a call would do nothing;
(c) asking the model to learn again what it already knows. Each error or warning names the
value and says what to do; the errors come before any training.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scvi

import sparsevae as sv
from sparsevae.cli import build_parser, main
from sparsevae.model._interpret import LOADING_COLUMNS

from .conftest import QUIET, assert_transfer_kept_old_parameters, small_simulation


def _relabel(adata, mapping: dict[str, str], n: int | None = None):
    """``adata`` with (the first ``n``) cells of each key of ``mapping`` relabelled."""
    labels = adata.obs["perturbation"].astype(str).to_numpy().copy()
    for old, new in mapping.items():
        rows = np.flatnonzero(labels == old)
        labels[rows[:n]] = new
    adata.obs["perturbation"] = labels
    return adata


def _setup(adata, **kwargs):
    params = {"perturbation_key": "perturbation", "control": "control", **kwargs}
    sv.SparseVAE.setup_anndata(adata, **params)
    return adata


def _fresh_model(adata=None, **kwargs):
    scvi.settings.seed = 0
    adata = _setup(small_simulation() if adata is None else adata, **kwargs)
    return sv.SparseVAE(adata, n_latent=3, n_hidden=16)


def _no_warning(function):
    """``function()``, failing on a UserWarning of sparsevae's but the graph's (tiny models
    have no edges); those of Lightning and scvi-tools (site-packages) do not count.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = function()
    ours = [
        str(w.message)
        for w in caught
        if issubclass(w.category, UserWarning)
        and not issubclass(w.category, sv.EmptyGraphWarning)
        and "site-packages" not in w.filename
    ]
    assert not ours, ours
    return result


@pytest.fixture(scope="module")
def pairs():
    """sVAE+ on singles and the pair P0+P1 (combination setup), trained for one epoch."""
    adata = _relabel(small_simulation(), {"P4": "P0+P1"}, n=15)
    model = _fresh_model(adata, combination_delimiter="+")
    model.train(max_epochs=1, **QUIET)
    return model, adata


def _loadings():
    return pd.DataFrame(
        {
            "latent": ["latent_0", "latent_0", "latent_1", "latent_1"],
            "gene": ["g0", "g1", "g0", "g1"],
            "log2_fold_change": [1.0, -1.0, 0.5, 2.0],
            "expression_per_10k": [10.0, 10.0, 10.0, 10.0],
        },
        columns=LOADING_COLUMNS,
    )


def _report(adata, **kwargs):
    params = {"methods": ("vae",), "heldout": ["P0"], "max_epochs": 1, "n_latent": 2}
    return sv.evaluate.interventional_nll_report(adata, **{**params, **kwargs})


def _identifiability(adata, **kwargs):
    params = {"methods": ("vae",), "max_epochs": 1}
    return sv.evaluate.identifiability_report(adata, **{**params, **kwargs})


def _cli(tmp_path, command, *options):
    path = tmp_path / "screen.h5ad"
    small_simulation().write_h5ad(path)
    base = [command, str(path), "--perturbation-key", "perturbation", "--control", "control"]
    return main([*base, "--out", str(tmp_path / "out"), *options])


@pytest.fixture
def no_training(monkeypatch):
    """Any training fails the test: the checks must come first."""

    def trained(*args, **kwargs):
        raise AssertionError("trained before refusing the input")

    monkeypatch.setattr(sv.SparseVAE, "train", trained)


# ==== (a) names that must be unique ============================================================
def test_setup_refuses_repeated_gene_names(adata):
    adata.var_names = ["g0", "g0", *adata.var_names[2:]]
    with pytest.raises(ValueError, match=r"var_names are not unique.*\['g0'\].*make_unique"):
        _setup(adata)


def test_setup_warns_about_repeated_cell_names(adata):
    adata.obs_names = ["c0", "c0", *adata.obs_names[2:]]
    with pytest.warns(UserWarning, match=r"obs_names are not unique.*\['c0'\].*make_unique"):
        _setup(adata)


def _cluster(adata):
    return sv.tl.cluster_perturbations(adata, method="hierarchical", n_clusters=2)


def _splits(adata):
    return sv.evaluate.make_splits(adata, heldout=["P1"])


@pytest.mark.parametrize("entry", [_setup, _cluster, _splits], ids=["setup", "cluster", "splits"])
@pytest.mark.parametrize(
    ("label", "variant", "message"),
    [
        ("control", "Control", r"\['Control'\] besides control='control'.*replace"),
        ("control", "control ", r"\['control '\] besides control='control'"),
        ("P0", "P0 ", r"differ only in surrounding spaces: \[\['P0', 'P0 '\]\].*str.strip"),
    ],
)
def test_labels_that_are_another_label_up_to_spaces_or_case_are_refused(
    adata, entry, label, variant, message
):
    with pytest.raises(ValueError, match=message):
        entry(_relabel(adata, {label: variant}, n=5))


def test_labels_that_differ_only_in_case_warn(adata):
    with pytest.warns(UserWarning, match=r"differ only in case: \[\['P0', 'p0'\]\]"):
        _setup(_relabel(adata, {"P0": "p0"}, n=15))


def test_setup_warns_about_a_combination_naming_a_single_twice(adata):
    adata = _relabel(adata, {"P4": "P0+P0"}, n=15)
    with pytest.warns(UserWarning, match=r"\{'P0\+P0': 'P0'\}.*a set"):
        _setup(adata, combination_delimiter="+")


@pytest.mark.parametrize(
    "getter",
    ["get_mask_probabilities", "get_perturbation_shifts", "get_intervention_targets"],
)
def test_getters_refuse_repeated_perturbations(trained, getter):
    model, _ = trained
    with pytest.raises(ValueError, match=r"perturbations=\['P0', 'P1', 'P0'\] repeats \['P0'\]"):
        getattr(model, getter)(perturbations=["P0", "P1", "P0"])


@pytest.mark.parametrize(
    "call",
    [
        lambda model, cells: model.get_combination_shift("P0+P0"),
        lambda model, cells: model.predict(cells, perturbation="P1+P1"),
        lambda model, cells: model.get_treatment_effect(cells, perturbation="P0 + P2+P0"),
    ],
    ids=["get_combination_shift", "predict", "get_treatment_effect"],
)
def test_a_combination_naming_a_single_twice_is_refused(pairs, call):
    model, adata = pairs
    with pytest.raises(
        ValueError, match=r"names \['P[01]'\] more than once.*Name each single once"
    ):
        call(model, adata[:20].copy())


@pytest.mark.parametrize(
    ("variant", "error", "message"),
    [
        ("p0", UserWarning, r"differ only in case: \[\['P0', 'p0'\]\]"),
        ("P0 ", ValueError, r"differ only in surrounding spaces: \[\['P0', 'P0 '\]\]"),
        ("CONTROL", ValueError, r"\['CONTROL'\] besides control='control'"),
    ],
)
def test_transfer_checks_new_labels_against_learned_ones(trained, variant, error, message):
    model, data = trained
    new = _relabel(data[data.obs["perturbation"] == "P1"].copy(), {"P1": variant})
    if error is UserWarning:
        with pytest.warns(UserWarning, match=message):
            model.transfer(new)
    else:
        with pytest.raises(error, match=message):
            model.transfer(new)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda a: _report(a, methods=["vae", "vae"]), r"methods=\['vae', 'vae'\] repeats"),
        (lambda a: _report(a, seeds=(0, 1, 0)), r"seeds=\[0, 1, 0\] repeats \[0\]"),
        (lambda a: _report(a, heldout=["P0", "P1", "P0"]), r"holds out \['P0'\] more than once"),
        (lambda a: _report(a, heldout={"s": ["P2", "P2"]}), r"'s' holds out \['P2'\] more"),
        (lambda a: _identifiability(a, methods=("vae", "vae")), r"repeats \['vae'\]"),
        (lambda a: _identifiability(a, seeds=[2, 2]), r"seeds=\[2, 2\] repeats \[2\]"),
        (
            lambda a: _identifiability(a, train_perturbations=["P0", "P0"]),
            r"train_perturbations=\['P0', 'P0'\] repeats",
        ),
        (
            lambda a: sv.tl.edge_stability(a, "perturbation", "control", alphas=[2, 2]),
            r"repeats a value",
        ),
    ],
    ids=[
        "report-methods",
        "report-seeds",
        "report-heldout",
        "report-heldout-dict",
        "identifiability-methods",
        "identifiability-seeds",
        "identifiability-train_perturbations",
        "edge_stability-alphas",
    ],
)
def test_evaluations_refuse_repeated_names_before_training(adata, no_training, call, message):
    with pytest.raises(ValueError, match=message):
        call(adata)


def test_latent_genes_refuses_repeated_and_empty_latents():
    with pytest.raises(ValueError, match=r"latents=\['latent_0', 'latent_0'\] repeats"):
        sv.pl.latent_genes(_loadings(), latents=["latent_0", "latent_0"], show=False)
    with pytest.raises(ValueError, match="latents is empty"):
        sv.pl.latent_genes(_loadings(), latents=[], show=False)


def test_write_results_warns_before_overwriting_data_it_did_not_write(trained):
    model, data = trained
    adata = data.copy()
    adata.obsm["X_umap"] = np.zeros((adata.n_obs, 2))
    with pytest.warns(UserWarning, match=r"overwrites adata.obsm\['X_umap'\].*another key_added"):
        sv.tl.write_results(adata, model, key_added="umap")
    _no_warning(lambda: sv.tl.write_results(adata, model, key_added="umap"))  # its own result
    with pytest.raises(ValueError, match="key_added must be a non-empty string"):
        sv.tl.write_results(adata, model, key_added="")


def test_cluster_perturbations_warns_before_overwriting_a_column_it_did_not_write(adata):
    adata.obs["lane"] = "L1"
    with pytest.warns(UserWarning, match=r"overwrites adata.obs\['lane'\], which"):
        sv.tl.cluster_perturbations(adata, key_added="lane", method="hierarchical", n_clusters=2)
    _no_warning(
        lambda: sv.tl.cluster_perturbations(
            adata, key_added="lane", method="hierarchical", n_clusters=2
        )
    )


def test_edge_stability_warns_before_overwriting_and_for_one_seed(adata, no_training):
    adata.uns["mine"] = {"notes": "keep"}
    with pytest.warns(UserWarning) as record, pytest.raises(ValueError, match="prior with masks"):
        sv.tl.edge_stability(
            adata, "perturbation", "control", seeds=(0,), key_added="mine", prior="dense"
        )
    messages = " / ".join(str(w.message) for w in record)
    assert "overwrites adata.uns['mine']" in messages
    assert "one seed (0)" in messages and "seeds=(0, 1, 2, 3, 4)" in messages


# ==== (b) arguments with which a call would do nothing =========================================
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_epochs": 0}, r"max_epochs=0: training needs at least one epoch"),
        ({"max_epochs": -1}, r"max_epochs=-1.*'never stop'"),
        ({"batch_size": 0}, r"batch_size=0: a minibatch needs at least one cell"),
        ({"lr": 0.0}, r"lr=0.0: .*pass a positive rate"),
        ({"lr_prior": -1e-3}, r"lr_prior=-0.001: "),
        ({"train_size": 0.0}, r"train_size=0.0 must be in \(0, 1\].*0.9"),
        ({"train_size": 1.5}, r"train_size=1.5 must be in \(0, 1\]"),
    ],
)
def test_train_refuses_arguments_that_train_nothing(kwargs, message):
    model = _fresh_model()
    with pytest.raises(ValueError, match=message):
        model.train(**{"max_epochs": 1, **kwargs, **QUIET})
    assert not model.is_trained_


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, c: m.get_mask_probabilities(perturbations=[]), "perturbations is empty"),
        (lambda m, c: m.get_perturbation_shifts(perturbations=()), "perturbations is empty"),
        (lambda m, c: m.get_intervention_targets(n_top=0), r"n_top=0 must be a positive"),
        (lambda m, c: m.get_intervention_targets(threshold=1.0), r"threshold=1.0 must be in"),
        (lambda m, c: m.get_target_table(n_top=0), r"n_top=0 must be a positive"),
        (lambda m, c: m.predict(c, perturbation="P1", indices=[]), "indices selects no cell"),
        (lambda m, c: m.get_normalized_expression(c, indices=[]), "indices selects no cell"),
        (lambda m, c: m.get_interventional_nll(c, indices=[]), "indices selects no cell"),
        (lambda m, c: m.transfer(c, max_epochs=0), r"max_epochs=0: the new perturbations"),
    ],
    ids=[
        "mask_probabilities",
        "perturbation_shifts",
        "targets-n_top",
        "targets-threshold",
        "target_table",
        "predict",
        "normalized_expression",
        "interventional_nll",
        "transfer",
    ],
)
def test_getters_refuse_arguments_that_select_or_compute_nothing(trained, call, message):
    model, data = trained
    with pytest.raises(ValueError, match=message):
        call(model, data[:30].copy())


@pytest.mark.parametrize(
    ("perturbation", "reference", "message"),
    [
        ("control", None, r"perturbation='control' and reference='control' are the same"),
        ("P1", "P1", r"'P1' and reference='P1' are the same.*zero by construction"),
        ("P0+P1", "P1+P0", r"'P0\+P1' and reference='P1\+P0' are the same"),
    ],
)
def test_treatment_effect_against_itself_warns_that_it_is_zero(
    pairs, perturbation, reference, message
):
    model, adata = pairs
    cells = adata[adata.obs["perturbation"] == "control"].copy()
    with pytest.warns(UserWarning, match=message):
        effect = model.get_treatment_effect(
            cells, perturbation=perturbation, reference=reference, n_samples=1
        )
    assert np.allclose(effect, 0.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda a: _report(a, methods=[]), r"methods is empty.*e.g. methods=\("),
        (lambda a: _report(a, seeds=()), "seeds is empty"),
        (lambda a: _report(a, max_epochs=0), r"max_epochs=0: every model needs"),
        (lambda a: _report(a, n_top_genes=0), r"n_top_genes=0 would select no gene"),
        (lambda a: _report(a, heldout={}), r"heldout=\{\} defines no split"),
        (lambda a: _report(a, heldout=[]), "holds out no perturbation"),
        (lambda a: _identifiability(a, methods=()), "methods is empty"),
        (lambda a: _identifiability(a, seeds=[]), "seeds is empty"),
        (lambda a: _identifiability(a, max_epochs=0), r"max_epochs=0"),
        (lambda a: _identifiability(a, train_perturbations=[]), "train_perturbations is empty"),
        (lambda a: sv.tl.edge_stability(a, "perturbation", "control", seeds=()), "is empty"),
    ],
    ids=[
        "report-methods",
        "report-seeds",
        "report-max_epochs",
        "report-n_top_genes",
        "report-heldout-dict",
        "report-heldout-list",
        "identifiability-methods",
        "identifiability-seeds",
        "identifiability-max_epochs",
        "identifiability-train_perturbations",
        "edge_stability-seeds",
    ],
)
def test_evaluations_refuse_arguments_that_train_nothing(adata, no_training, call, message):
    with pytest.raises(ValueError, match=message):
        call(adata)


def test_edge_stability_refuses_max_epochs_0_before_training(adata):
    with pytest.raises(ValueError, match=r"max_epochs=0: training needs at least one epoch"):
        sv.tl.edge_stability(
            adata, "perturbation", "control", seeds=(0, 1), max_epochs=0, n_latent=2
        )
    assert "edge_stability" not in adata.uns


# ==== (c) learning again what the model knows ================================================
def test_transfer_refuses_the_training_data(trained):
    model, data = trained
    with pytest.raises(ValueError, match="adata is the data this model was trained on"):
        model.transfer(data)
    with pytest.raises(ValueError, match=r"are all known to it.*Pass cells of perturbations"):
        model.transfer(data.copy())


def test_transfer_refuses_only_control_cells(trained):
    model, data = trained
    controls = data[data.obs["perturbation"] == "control"].copy()
    with pytest.raises(ValueError, match=r"holds only control cells \('control'\)"):
        model.transfer(controls)


def test_transfer_names_the_learned_perturbations_it_does_not_learn_again(trained):
    model, data = trained
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    cells = data[data.obs["perturbation"].isin(["P0", "P1", "control"])].copy()
    cells = _relabel(cells, {"P0": "PX"})
    with pytest.warns(
        UserWarning, match=r"already learned: \['P1'\].*only the new one\(s\), \['PX'\]"
    ):
        new = model.transfer(cells)
    assert new.perturbation_names == [*model.perturbation_names, "PX"]
    assert_transfer_kept_old_parameters(model, before, new.module.state_dict())


def test_transfer_of_learned_combinations_says_they_need_none(pairs):
    model, adata = pairs
    only_pairs = _relabel(adata[adata.obs["perturbation"] == "P2"].copy(), {"P2": "P1+P3"})
    with pytest.raises(ValueError, match=r"\['P1\+P3'\] are all known.*need no transfer"):
        model.transfer(only_pairs)


def test_transfer_and_score_scores_learned_combinations_zero_shot(pairs):
    model, adata = pairs
    cells = _relabel(adata[adata.obs["perturbation"] == "P2"].copy(), {"P2": "P1+P3"})
    transferred, nll = _no_warning(
        lambda: sv.evaluate.transfer_and_score(
            model, cells[:10].copy(), cells[10:].copy(), n_particles=2
        )
    )
    assert transferred is model and nll.shape == (cells.n_obs - 10,) and np.isfinite(nll).all()


def test_training_again_warns_what_the_new_schedule_restarts(adata):
    model = _fresh_model(adata)
    model.train(max_epochs=2, **QUIET)
    model.get_combination_shift("P0")  # fills the cache of latent means
    n_epochs = len(model.history["elbo_train"])
    with pytest.warns(UserWarning, match=r"already trained.*warms up again.*rotated again"):
        model.train(max_epochs=2, **QUIET)
    assert len(model.history["elbo_train"]) == 2 * n_epochs  # continued, history kept
    assert (
        model.knowledge.cached_latent_means is None
    )  # the latents changed: recomputed when needed
    _no_warning(
        lambda: model.train(max_epochs=1, n_epochs_kl_warmup=None, rotate_latents=False, **QUIET)
    )


def test_setup_again_with_other_arguments_warns_that_built_models_keep_theirs(adata):
    model = _fresh_model(adata)
    _no_warning(lambda: _setup(adata))  # the same setup again: nothing changes
    adata.obs["guide"] = adata.obs["perturbation"]
    with pytest.warns(
        UserWarning,
        match=r"keeps its own setup \(control='control', perturbation_key='perturbation'\); "
        r"this setup_anndata \(control=None, perturbation_key='guide'\) does not change it",
    ):
        _setup(adata, perturbation_key="guide", control=None)
    assert model.control == "control" and "control" not in model.perturbation_names


# ==== the command line =========================================================================
@pytest.mark.parametrize(
    "options",
    [
        ["report", "--methods", "vae,svae+,vae"],
        ["demo", "--methods", "vae,vae"],
        ["report", "--heldout", "P0,P1,P0"],
        ["report", "--heldout", ""],
        ["report", "--heldout", "P0,,P1"],
        ["fit", "--max-epochs", "0"],
        ["report", "--max-epochs", "0"],
    ],
)
def test_cli_stops_repeated_names_and_empty_lists_at_parsing(capsys, options):
    command, *rest = options
    args = [] if command == "demo" else ["d.h5ad", "--perturbation-key", "p"]
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args([command, *args, "--out", "o", *rest])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert rest[0] in err and ("repeats" in err or "empty" in err or "positive" in err)


def test_cli_report_refuses_repeated_seeds_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        sv.evaluate, "interventional_nll_report", lambda *a, **k: pytest.fail("trained")
    )
    assert _cli(tmp_path, "report", "--heldout", "P0", "--seeds", "0", "1", "0") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: seeds=[0, 1, 0] repeats [0]") and err.count("\n") == 1
