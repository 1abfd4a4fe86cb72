"""Held-out interventions: splits, transfer, interventional NLL, report, plot and CLI."""

from __future__ import annotations

import copy

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import scvi
import torch

import sparsevae as sv
from sparsevae.cli import main
from sparsevae.evaluate._splits import EVALUATION, EXCLUDED, TRAIN, TRANSFER

from .conftest import QUIET, assert_transfer_kept_old_parameters, small_simulation

HELDOUT = ["P4", "P5"]


def _split_data(data):
    labels = data.obs["perturbation"].astype(str)
    train = data[~labels.isin(HELDOUT).to_numpy()].copy()
    heldout = data[labels.isin(HELDOUT).to_numpy()].copy()
    return train, heldout


def _fit(data, prior="spike_slab", epochs=3):
    scvi.settings.seed = 0
    sv.SparseVAE.setup_anndata(data, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(data, n_latent=4, n_hidden=16, prior=prior)
    model.train(max_epochs=epochs, **QUIET)
    return model


@pytest.fixture(scope="module")
def fitted():
    train, heldout = _split_data(small_simulation())
    return _fit(train), heldout


# ---- splits ------------------------------------------------------------------------------
def test_splits_are_reproducible_from_the_seed():
    data = small_simulation()
    first = sv.evaluate.make_splits(data, heldout={"a": HELDOUT, "b": ["P0"]}, random_state=3)
    again = sv.evaluate.make_splits(data, heldout={"a": HELDOUT, "b": ["P0"]}, random_state=3)
    other = sv.evaluate.make_splits(data, heldout={"a": HELDOUT, "b": ["P0"]}, random_state=4)
    assert [s.name for s in first] == ["a", "b"]
    for one, two in zip(first, again, strict=True):
        assert one.roles.equals(two.roles)
    assert not first[0].roles.equals(other[0].roles)


def test_split_roles_keep_heldout_cells_out_of_training():
    data = small_simulation()
    (split,) = sv.evaluate.make_splits(data, heldout=HELDOUT, transfer_fraction=0.3)
    labels = data.obs["perturbation"].astype(str)
    heldout = labels.isin(HELDOUT)
    assert (split.roles[heldout] != TRAIN).all()
    assert (split.roles[~heldout] == TRAIN).all()
    for perturbation in HELDOUT:
        roles = split.roles[labels == perturbation].value_counts()
        assert roles[TRANSFER] == round(30 * 0.3)
        assert roles[TRANSFER] + roles[EVALUATION] == 30


def test_split_errors_name_the_problem():
    data = small_simulation()
    with pytest.raises(ValueError, match="not perturbations"):
        sv.evaluate.make_splits(data, heldout=["P4", "nope"])
    with pytest.raises(ValueError, match="every perturbation"):
        sv.evaluate.make_splits(data, heldout=[f"P{i}" for i in range(6)])
    with pytest.raises(ValueError, match="transfer_fraction"):
        sv.evaluate.make_splits(data, heldout=HELDOUT, transfer_fraction=1.0)


def test_clusters_give_one_split_per_cluster():
    data = small_simulation()
    splits = sv.evaluate.make_splits(
        data, cluster_kwargs={"method": "hierarchical", "n_clusters": 3}
    )
    clusters = data.uns["perturbation_cluster"]["clusters"]
    assert len(splits) == 3
    held = sorted(p for s in splits for p in s.heldout)
    assert held == sorted(clusters.index)


def test_clusters_of_other_data_are_refused_not_used():
    """Clusters left in ``uns`` by a clustering of other data (here: before a subset) would hold
    out a perturbation the screen does not have, or never hold out one it has.
    """
    data = small_simulation()
    sv.evaluate.make_splits(data, cluster_kwargs={"method": "hierarchical", "n_clusters": 3})
    subset = data[data.obs["perturbation"].astype(str) != "P5"].copy()
    subset.obs["perturbation"] = subset.obs["perturbation"].cat.remove_unused_categories()
    with pytest.raises(ValueError, match=r"not in the screen: \['P5'\].*del adata.uns"):
        sv.evaluate.make_splits(subset)
    relabelled = data.copy()
    relabelled.obs["perturbation"] = relabelled.obs["perturbation"].cat.rename_categories(
        {"P0": "NEW"}
    )
    with pytest.raises(ValueError, match=r"not clustered: \['NEW'\]"):
        sv.evaluate.make_splits(relabelled)
    del subset.uns["perturbation_cluster"]  # as the message says: clustered again
    splits = sv.evaluate.make_splits(
        subset, cluster_kwargs={"method": "hierarchical", "n_clusters": 2}
    )
    assert sorted(p for s in splits for p in s.heldout) == [f"P{i}" for i in range(5)]


# ---- transfer ----------------------------------------------------------------------------
@pytest.mark.parametrize("sparse", [False, True])
def test_transfer_changes_only_the_new_perturbations(fitted, sparse):
    model, heldout = fitted
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    new = model.transfer(heldout.copy(), sparse=sparse, max_epochs=3, **QUIET)
    assert new.perturbation_names == model.perturbation_names + HELDOUT
    after = new.module.state_dict()
    n_old = assert_transfer_kept_old_parameters(model, before, after)
    mu = after["prior.mu"][n_old:]
    assert torch.all(mu.abs().sum(dim=1) > 0)  # the new shifts were learned
    pi = new.get_mask_probabilities().loc[HELDOUT].to_numpy()
    if sparse:
        # the new masks were trained: every logit left its start (moved by the optimiser, or
        # switched off by the relative floor when the masks froze) ...
        logits = after["prior.logits"][n_old:]
        assert torch.isfinite(logits).all()
        assert torch.all(logits != new.module.prior.logit_init)
        # ... and the shifts read the same graph: mu where pi > 0.5, 0 elsewhere
        shifts = new.get_perturbation_shifts().loc[HELDOUT].to_numpy()
        assert (shifts[pi <= 0.5] == 0).all() and (shifts[pi > 0.5] != 0).all()
    else:
        assert (pi > 0.5).all()  # gamma = 1: every edge on
    # every held-out perturbation keeps a target (each shifts its latents by about 5 SD)
    assert (pi > 0.5).any(axis=1).all()
    # the transferred model trains its networks again afterwards
    assert all(p.requires_grad for p in new.module.parameters())
    # its empirical shifts: the held-out cells' mean latent minus the training controls'
    train = model.adata
    control_mean = model.get_latent_representation(train)[
        train.obs["perturbation"].to_numpy() == "control"
    ].mean(axis=0)
    z = new.get_latent_representation(heldout.copy())
    labels = heldout.obs["perturbation"].astype(str).to_numpy()
    for p in HELDOUT:
        np.testing.assert_allclose(
            new.get_combination_shift(p).to_numpy(),
            z[labels == p].mean(axis=0) - control_mean,
            atol=1e-5,
        )


def test_dense_transfer_sets_mu_to_the_mean_posterior_mean(fitted):
    model, heldout = fitted
    new = model.transfer(heldout.copy())
    z = new.get_latent_representation(heldout.copy())
    labels = heldout.obs["perturbation"].astype(str).to_numpy()
    expected = np.stack([z[labels == p].mean(axis=0) for p in HELDOUT])
    np.testing.assert_allclose(
        new.get_perturbation_shifts().loc[HELDOUT].to_numpy(), expected, rtol=1e-5, atol=1e-5
    )


def test_transfer_and_nll_check_genes_and_perturbations(fitted):
    model, heldout = fitted
    with pytest.raises(ValueError, match="genes"):
        model.transfer(heldout[:, ::-1].copy())
    with pytest.raises(ValueError, match=r"has not learned.*transfer"):
        model.get_interventional_nll(heldout.copy(), n_particles=2)
    with pytest.raises(ValueError, match="sparse=True"):
        _fit(small_simulation(), prior="dense", epochs=1).transfer(heldout.copy(), sparse=True)


# ---- interventional NLL ------------------------------------------------------------------
def _tensors(model, data):
    model.module.eval()
    loader = model._make_data_loader(adata=data, batch_size=data.n_obs)
    return next(iter(loader))


def test_one_particle_iwelbo_is_the_single_sample_elbo(fitted):
    model, _ = fitted
    tensors = _tensors(model, model.adata)
    # float64: the check is of the algebra, not of float32 rounding
    module = copy.deepcopy(model.module).double()
    tensors = {k: v.double() if v.is_floating_point() else v for k, v in tensors.items()}
    module.eval()
    assert module._folded_decoder() is not None  # the fast path (batch norm folded) is checked
    torch.manual_seed(0)
    iwelbo = module.marginal_ll(tensors, n_mc_samples=1)
    with torch.no_grad():  # the same draw through the full forward pass and torch's own NB
        x = tensors["X"]
        qz, _ = module.z_encoder(torch.log1p(x))  # scvi's Encoder, not the module's encode
        torch.manual_seed(0)
        z = qz.rsample((1,))  # loc + scale * eps, eps drawn as marginal_ll draws it
        library = torch.log(x.sum(dim=1, keepdim=True))
        generative = module.generative(z, library, tensors["perturbation"])
        px = generative["px"]
        nb = torch.distributions.NegativeBinomial(
            total_count=px.theta, logits=torch.log(px.mu) - torch.log(px.theta)
        )
        elbo = (
            nb.log_prob(x).sum(-1) + generative["pz"].log_prob(z).sum(-1) - qz.log_prob(z).sum(-1)
        )[0]
    np.testing.assert_allclose(iwelbo.numpy(), elbo.numpy(), rtol=1e-9)


def test_iwelbo_grows_with_particles_and_chunks_agree(fitted):
    model, _ = fitted
    data = model.adata
    scvi.settings.seed = 0
    nll = {n: model.get_interventional_nll(data, n_particles=n).mean() for n in (1, 10, 200)}
    assert nll[1] > nll[10] > nll[200]
    scvi.settings.seed = 1
    chunked = model.get_interventional_nll(data, n_particles=200, particles_per_pass=7)
    with pytest.raises(ValueError, match="particles_per_pass must be >= 1"):
        model.get_interventional_nll(data, n_particles=200, particles_per_pass=0)
    assert np.isfinite(chunked).all()
    assert abs(chunked.mean() - nll[200]) < 0.05 * abs(nll[1] - nll[200]) + 1e-3


def test_interventional_nll_is_reproducible_with_the_seed(fitted):
    """The same seed draws the same particles: bitwise equal NLLs. A determinism check on one
    machine, not a portability one: another CPU or thread count may give other digits.
    """
    model, _ = fitted
    scvi.settings.seed = 5
    first = model.get_interventional_nll(n_particles=20)
    scvi.settings.seed = 5
    np.testing.assert_array_equal(first, model.get_interventional_nll(n_particles=20))


# ---- report ------------------------------------------------------------------------------
def test_report_rows_and_no_heldout_cell_in_training(monkeypatch):
    data = small_simulation()
    # P5 keeps one cell: it cannot be both transferred and evaluated
    labels = data.obs["perturbation"].astype(str).to_numpy()
    drop = np.flatnonzero(labels == "P5")[1:]
    data = data[np.setdiff1d(np.arange(data.n_obs), drop)].copy()
    seen = []
    original_train = sv.SparseVAE.train

    def spy(self, *args, **kwargs):
        seen.append(set(self.adata.obs["perturbation"].astype(str)))
        return original_train(self, *args, **kwargs)

    monkeypatch.setattr(sv.SparseVAE, "train", spy)
    report = sv.evaluate.interventional_nll_report(
        data,
        methods=("svae+", "vae"),
        heldout={"one": HELDOUT, "two": ["P0", "P1"]},
        seeds=(0, 1),
        max_epochs=2,
        n_particles=5,
        model_kwargs={"n_hidden": 16},
        n_latent=3,
    )
    assert list(report.columns[:7]) == [
        "method",
        "kind",
        "seed",
        "split",
        "perturbation",
        "n_cells",
        "n_transfer_cells",
    ]
    baselines = report[report["kind"] == "baseline"]
    report = report[report["kind"] == "model"]
    assert len(report) == 2 * 2 * 4  # methods × seeds × held-out perturbations
    # 3 baselines (no change, mean, split-half) per scored perturbation and seed, no NLL
    assert len(baselines) == 3 * 3 * 2 and baselines["interventional_nll"].isna().all()
    assert set(baselines["method"]) == set(sv.evaluate.BASELINES) - {"baseline: additive"}
    held = {"one": set(HELDOUT), "two": {"P0", "P1"}}
    trained_on = [labels for labels in seen if "control" in labels]  # not the transfers
    assert len(trained_on) == 2 * 2 * 2
    for labels in trained_on:
        assert any(labels.isdisjoint(h) for h in held.values())
    p5 = report[report["perturbation"] == "P5"]
    assert p5["interventional_nll"].isna().all()
    assert p5["note"].str.contains("too few").all()
    scored = report[report["perturbation"] != "P5"]
    assert np.isfinite(scored["interventional_nll"]).all()
    assert (scored["n_cells"] == 15).all() and (scored["n_transfer_cells"] == 15).all()
    table = sv.evaluate.split_table(report)
    assert set(table.loc[table["role"] == EXCLUDED, "cell"]) == set(
        data.obs_names[data.obs["perturbation"].astype(str) == "P5"]
    )
    # every method predicts from its perturbations' own latent shifts, the VAE too
    assert scored["pearson_all_genes"].notna().all()
    assert scored["pearson_all_genes"].between(-1, 1).all()
    low, high = scored["pearson_all_genes_low"], scored["pearson_all_genes_high"]
    assert (low <= scored["pearson_all_genes"]).all() and (
        scored["pearson_all_genes"] <= high
    ).all()
    assert p5["pearson_all_genes"].isna().all()
    summary = sv.evaluate.summarize_interventional_nll(report)
    assert set(summary.index) == {"svae+", "vae"}
    assert list(summary.columns) == ["one", "two", "all"]


def test_report_correlates_predicted_with_observed_change():
    """A model that fits its data (40 epochs do not: reconstructions of held-out and control
    cells then differ the wrong way) predicts the held-out change from its transfer cells.
    """
    data = small_simulation(n_cells_per_perturbation=60)
    report = sv.evaluate.interventional_nll_report(
        data,
        methods=("svae+", "ivae", "vae"),
        heldout=HELDOUT,
        max_epochs=200,
        n_particles=2,
        n_latent=4,
        n_top_genes=None,
        model_kwargs={"n_hidden": 16},
    )
    summary = sv.evaluate.summarize_effect_correlations(report)
    assert set(summary.index) == {"svae+", "ivae", "vae", *sv.evaluate.BASELINES} - {
        "baseline: additive"
    }
    assert (summary["n_scored"] == 2).all()
    no_change = summary.loc["baseline: no change"]
    assert no_change["n_no_change"] == 2 and np.isnan(no_change["pearson_all_genes"])
    models = summary[summary["kind"] == "model"]
    assert (models["n_no_change"] == 0).all()
    # transferred shifts point the way the held-out cells moved
    assert (models["pearson_all_genes"] > 0.6).all()
    assert (models["pearson_top20_de"] > 0.6).all()
    # and predict better than no change at all
    assert (models["mse_top20_de"] < no_change["mse_top20_de"]).all()


def test_report_rejects_bad_input_before_training():
    data = small_simulation()
    with pytest.raises(ValueError, match="Unknown method"):
        sv.evaluate.interventional_nll_report(data, methods=("svae++",), heldout=HELDOUT)
    with pytest.raises(ValueError, match="n_particles"):
        sv.evaluate.interventional_nll_report(data, heldout=HELDOUT, n_particles=0)


def test_interventional_nll_plot(tmp_path):
    rng = np.random.default_rng(0)
    report = pd.DataFrame(
        [
            {"method": m, "seed": 0, "split": s, "perturbation": f"{s}{i}", "n_cells": 5}
            | {"interventional_nll": 100 + rng.normal()}
            for m in ("svae+", "vae")
            for s in ("a", "b", "c")
            for i in range(3)
        ]
    )
    ax = sv.pl.interventional_nll(report, show=False, save=tmp_path / "nll.png")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["svae+", "vae"]
    assert (tmp_path / "nll.png").stat().st_size > 0
    ax = sv.pl.interventional_nll(report, relative_to="vae", show=False)
    assert "minus vae" in ax.get_ylabel()
    with pytest.raises(ValueError, match="relative_to"):
        sv.pl.interventional_nll(report, relative_to="ivae", show=False)


def test_cli_report_writes_markdown_csv_and_figures(tmp_path, capsys):
    path = tmp_path / "screen.h5ad"
    small_simulation().write_h5ad(path)
    out = tmp_path / "out"
    code = main(
        [
            "report",
            str(path),
            "--perturbation-key",
            "perturbation",
            "--control",
            "control",
            "--out",
            str(out),
            "--methods",
            "svae+,vae",
            "--n-clusters",
            "2",
            "--max-epochs",
            "2",
            "--n-particles",
            "5",
            "--n-latent",
            "3",
        ]
    )
    assert code == 0
    report = pd.read_csv(out / "report.csv")
    assert len(report[report["kind"] == "model"]) == 2 * 6
    assert set(report["split"]) == {"cluster_0", "cluster_1"}
    text = (out / "report.md").read_text()
    assert "Mean interventional NLL per held-out split" in text
    assert "Predicted vs observed mean change" in text
    effects_table = text.split("Per perturbation: Pearson delta")[1].split("## Figures")[0]
    rows = [line for line in effects_table.splitlines() if line.startswith("| cluster_")]
    assert len(rows) == len(report.drop_duplicates(["split", "perturbation"]))  # held-out only
    assert {"pearson_all_genes", "pearson_top20_de"} <= set(report.columns)
    assert "| svae+" in text
    assert "| baseline: split-half" in text
    for name in (
        "interventional_nll.png",
        "effect_metrics.png",
        "perturbation_clusters.png",
        "splits.csv",
    ):
        assert (out / name).stat().st_size > 0
    assert "all" in capsys.readouterr().out


def test_genes_are_selected_on_training_cells_only():
    from sparsevae.evaluate._cells import _select_genes

    data = small_simulation()
    heldout = data.obs["perturbation"].astype(str).isin(HELDOUT).to_numpy()
    counts = data.X.toarray()
    counts[:, 0] = 0
    counts[heldout, 0] = np.random.default_rng(0).poisson(500, heldout.sum())
    data.X = counts
    assert 0 in _select_genes(data, np.arange(data.n_obs), None, 5)
    assert 0 not in _select_genes(data, np.flatnonzero(~heldout), None, 5)
    assert len(_select_genes(data, np.flatnonzero(~heldout), None, 5)) == 5


def test_transferred_model_saves_and_loads(fitted, tmp_path):
    model, heldout = fitted
    new = model.transfer(heldout.copy())
    new.save(tmp_path / "model")
    loaded = sv.SparseVAE.load(tmp_path / "model", adata=heldout.copy())
    assert loaded.perturbation_names == new.perturbation_names
    pd.testing.assert_frame_equal(loaded.get_perturbation_shifts(), new.get_perturbation_shifts())
    scvi.settings.seed = 0
    first = new.get_interventional_nll(heldout.copy(), n_particles=5)
    scvi.settings.seed = 0
    np.testing.assert_allclose(
        loaded.get_interventional_nll(heldout.copy(), n_particles=5), first, rtol=1e-6
    )


def test_vae_shifts_without_control_cells_name_the_problem():
    train, _ = _split_data(small_simulation())
    model = _fit(train, prior="standard", epochs=1)
    with pytest.raises(ValueError, match="no control cells"):
        model.get_perturbation_shifts(train[train.obs["perturbation"] != "control"].copy())


def test_report_baselines_match_a_hand_computation():
    """The report's baseline rows, recomputed from its own split: split-half from the transfer
    cells, additive from the training singles, against the evaluation cells' observed change.
    """
    data = small_simulation()
    labels = data.obs["perturbation"].astype(str).to_numpy()
    pair_cells = np.flatnonzero(labels == "P5")
    relabelled = labels.copy()
    relabelled[pair_cells] = "P0+P1"  # a held-out "pair" whose singles are trained
    data.obs["perturbation"] = pd.Categorical(relabelled)
    report = sv.evaluate.interventional_nll_report(
        data,
        methods=("svae+",),
        heldout=["P4", "P0+P1"],
        combination_delimiter="+",
        max_epochs=2,
        n_particles=2,
        n_latent=3,
        n_top_genes=None,
        model_kwargs={"n_hidden": 16},
    )
    split = report.attrs["splits"]["heldout"]
    names = data.obs_names
    train = ~names.isin(split["transfer"] + split["evaluation"] + split["excluded"])
    control_mean = sv.evaluate.mean_log_expression(data[train & (relabelled == "control")])

    def change(cells):
        return sv.evaluate.mean_log_expression(data[cells]) - control_mean

    baselines = report[report["kind"] == "baseline"].set_index(["perturbation", "method"])
    for perturbation in ("P4", "P0+P1"):
        mine = relabelled == perturbation
        observed = change(mine & names.isin(split["evaluation"]))
        expected = {
            "baseline: split-half": change(mine & names.isin(split["transfer"])),
            "baseline: no change": np.zeros(data.n_vars),
        }
        if perturbation == "P0+P1":
            expected["baseline: additive"] = change(train & (relabelled == "P0")) + change(
                train & (relabelled == "P1")
            )
        for name, predicted in expected.items():
            metrics = sv.evaluate.effect_metrics(predicted, observed, control_mean)
            row = baselines.loc[(perturbation, name)]
            for metric, value in metrics.items():
                np.testing.assert_allclose(row[metric], value, rtol=1e-6, equal_nan=True)
    assert ("P4", "baseline: additive") not in baselines.index


def test_report_trains_every_method_of_the_family():
    """The seed's other methods go through the report by name: trained, transferred, scored."""
    others = [m for m in sv.evaluate.METHODS if m not in sv.evaluate.DEFAULT_METHODS]
    assert set(others) == {"ivae-var", "clap", "beta-tcvae", "factorvae", "dip-vae", "sams-vae"}
    report = sv.evaluate.interventional_nll_report(
        small_simulation(),
        methods=others,
        heldout=HELDOUT,
        max_epochs=3,
        n_particles=4,
        n_latent=4,
        n_top_genes=None,
        model_kwargs={"n_hidden": 16},
    )
    models = report[report["kind"] == "model"]
    assert set(models["method"]) == set(others)
    assert np.isfinite(models["interventional_nll"]).all()
    assert np.isfinite(models["mse_top20_de"]).all()
