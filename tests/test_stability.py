"""Edge stability (sv.tl.edge_stability, sv.pl.edge_stability) and the empty-graph warning."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import anndata
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scvi
import torch

import sparsevae as sv
from sparsevae._quiet import QUIET_TRAINER
from sparsevae.model._graph_warning import EmptyGraphWarning, warn_if_graph_is_empty
from sparsevae.module import SpikeSlabPrior
from sparsevae.tl._stability import (
    EDGE_COLUMNS,
    _align,
    _edge_table,
    _match_to_reference,
    _Run,
    _tables,
)

from .conftest import small_simulation

TINY = {"n_latent": 3, "n_hidden": 16, "max_epochs": 8}
SEEDS = (0, 1, 2)
ALPHAS = (5.0, 1.5)


def tiny_screen():
    return small_simulation(
        n_perturbations=5, n_cells_per_perturbation=25, n_latent=3, n_genes=20, decoder_width=8
    )


@pytest.fixture(scope="module")
def stability():
    adata = tiny_screen()
    reference = sv.tl.edge_stability(
        adata, "perturbation", "control", seeds=SEEDS, alphas=ALPHAS, **TINY
    )
    return adata, reference


# ---- matching ----------------------------------------------------------------------------
def test_matching_recovers_a_permutation_and_sign_flips():
    rng = np.random.default_rng(0)
    z_reference = rng.normal(size=(400, 4))
    permutation = np.array([2, 0, 3, 1])  # reference latent i is the run's latent permutation[i]
    signs = np.array([1.0, -1.0, 1.0, -1.0])
    z_run = np.empty_like(z_reference)
    z_run[:, permutation] = signs * z_reference * [1.0, 3.0, 0.5, 2.0]
    z_run += 0.1 * rng.normal(size=z_run.shape)
    order, found_signs, correlation = _match_to_reference(z_reference, z_run)
    np.testing.assert_array_equal(order, permutation)
    np.testing.assert_array_equal(found_signs, signs)
    assert (np.abs(correlation) > 0.95).all() and (np.sign(correlation) == signs).all()

    # The run's graph, written in its own latents, comes back in the reference's.
    targets = rng.random((6, 4)) > 0.5
    pi = rng.random((6, 4))
    shifts = np.where(targets, rng.normal(size=(6, 4)), np.nan)
    run = _Run(
        z=z_run,
        pi=np.empty_like(pi),
        targets=np.empty_like(targets),
        shifts=np.empty_like(shifts),
        seconds=0.0,
    )
    run.targets[:, permutation] = targets
    run.pi[:, permutation] = pi
    run.shifts[:, permutation] = shifts * signs
    aligned_targets, aligned_pi, aligned_shifts = _align(run, order, found_signs)
    np.testing.assert_array_equal(aligned_targets, targets)
    np.testing.assert_array_equal(aligned_pi, pi)
    np.testing.assert_allclose(aligned_shifts, shifts)


def test_a_run_matches_itself_exactly():
    z = np.random.default_rng(1).normal(size=(100, 3))
    order, signs, correlation = _match_to_reference(z, z)
    np.testing.assert_array_equal(order, [0, 1, 2])
    np.testing.assert_array_equal(signs, [1, 1, 1])
    np.testing.assert_allclose(correlation, 1.0)


def test_frequencies_are_fractions_of_runs():
    targets = np.array(
        [[[1, 0], [0, 0]], [[1, 1], [0, 0]], [[1, 0], [1, 0]], [[0, 0], [0, 0]]], dtype=bool
    )
    pi = np.where(targets, 0.9, 0.1)
    shifts = np.where(targets, [[[2.0, -1.0], [0.5, 0.0]]] * np.arange(1, 5)[:, None, None], np.nan)
    runs = list(zip(targets, pi, shifts, strict=True))
    table = _edge_table({7.0: runs}, ["A", "B"], ["latent_0", "latent_1"])
    assert list(table.columns) == EDGE_COLUMNS
    assert table["perturbation"].tolist() == ["A", "A", "B", "B"]
    assert table["latent"].tolist() == ["latent_0", "latent_1"] * 2
    np.testing.assert_allclose(table["frequency"], [3 / 4, 1 / 4, 1 / 4, 0.0])
    np.testing.assert_allclose(table["median_pi"], [0.9, 0.1, 0.1, 0.1])
    # median over the runs with the edge: runs 1-3 shift A→latent_0 by 2, 4, 6
    np.testing.assert_allclose(table["median_shift"], [4.0, -2.0, 1.5, np.nan])
    assert (table["alpha"] == 7.0).all() and (table["n_runs"] == 4).all()


def test_poor_matching_warns():
    rng = np.random.default_rng(0)
    reference = SimpleNamespace(latent_names=["latent_0", "latent_1"], perturbation_names=["A"])

    def run(z):
        graph = np.zeros((1, 2), dtype=bool)
        return _Run(
            z=z, pi=np.zeros((1, 2)), targets=graph, shifts=np.full((1, 2), np.nan), seconds=0
        )

    z = rng.normal(size=(300, 2))
    results = {(1.0, 0): run(z), (1.0, 1): run(rng.normal(size=(300, 2)))}  # unrelated latents
    with pytest.warns(UserWarning, match=r"seed=1, alpha=1 matches the reference run .* poorly"):
        tables = _tables(results, reference, [0, 1], [1.0], "edge_stability", {})
    assert tables["runs"]["mean_abs_corr"].iloc[1] < 0.5
    results[(1.0, 1)] = run(-z[:, ::-1])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        tables = _tables(results, reference, [0, 1], [1.0], "edge_stability", {})
    matching = tables["matching"]
    assert matching.loc[matching["seed"] == 1, "latent"].tolist() == ["latent_1", "latent_0"]
    assert matching.loc[matching["seed"] == 1, "sign"].tolist() == [-1, -1]


# ---- the tool ----------------------------------------------------------------------------
def test_edge_stability_writes_the_tables(stability):
    adata, reference = stability
    results = adata.uns["edge_stability"]
    edges, runs, matching = results["edges"], results["runs"], results["matching"]
    n_perturbations, n_latent = len(reference.perturbation_names), TINY["n_latent"]
    assert list(edges.columns) == EDGE_COLUMNS
    assert len(edges) == len(ALPHAS) * n_perturbations * n_latent
    assert set(edges["alpha"]) == set(ALPHAS) and (edges["n_runs"] == len(SEEDS)).all()
    assert set(edges["latent"]) == set(reference.latent_names)
    assert set(edges["perturbation"]) == set(reference.perturbation_names)
    # Frequencies are fractions of the runs at each alpha ...
    counts = edges["frequency"] * len(SEEDS)
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-12)
    assert edges["frequency"].between(0, 1).all() and edges["median_pi"].between(0, 1).all()
    # ... and matching maps each run's edges one-to-one onto the reference's latents.
    for alpha in ALPHAS:
        at_alpha = edges["alpha"] == alpha
        assert counts[at_alpha].sum() == pytest.approx(
            runs.loc[runs.alpha == alpha, "n_edges"].sum()
        )
    assert edges["median_shift"].isna().equals(edges["frequency"] == 0)

    assert len(runs) == len(SEEDS) * len(ALPHAS)
    assert runs[["seed", "alpha"]].values.tolist() == [[s, a] for a in ALPHAS for s in SEEDS]
    first = runs.iloc[0]
    assert first["reference"] and first["mean_abs_corr"] == pytest.approx(1.0)
    assert runs["reference"].sum() == 1 and runs["mean_abs_corr"].between(0, 1 + 1e-9).all()
    assert len(matching) == len(runs) * n_latent
    for _, run in matching.groupby(["seed", "alpha"]):
        assert sorted(run["latent"]) == sorted(run["reference_latent"]) == reference.latent_names

    # The returned model is the reference run: its own edges count at the first alpha.
    own = reference.get_intervention_targets()
    frequency = edges[edges["alpha"] == ALPHAS[0]].pivot(
        index="perturbation", columns="latent", values="frequency"
    )
    assert (frequency.loc[own.index, own.columns].to_numpy()[own.to_numpy()] >= 1 / 3).all()
    assert reference.module.prior.alpha == ALPHAS[0]
    params = results["params"]
    assert params["reference_seed"] == 0 and params["reference_alpha"] == ALPHAS[0]
    assert list(params["seeds"]) == list(SEEDS)


def test_default_alpha_is_the_number_of_perturbations():
    adata = tiny_screen()
    reference = sv.tl.edge_stability(adata, "perturbation", "control", seeds=(3,), **TINY)
    edges = adata.uns["edge_stability"]["edges"]
    assert (edges["alpha"] == 5.0).all() and (edges["n_runs"] == 1).all()
    assert set(edges["frequency"]) <= {0.0, 1.0}
    assert reference.module.prior.alpha == 5.0


def test_table_survives_write_h5ad(stability, tmp_path):
    adata, _ = stability
    adata.write_h5ad(tmp_path / "stability.h5ad")
    back = anndata.read_h5ad(tmp_path / "stability.h5ad").uns["edge_stability"]
    for name in ("edges", "runs", "matching"):
        pd.testing.assert_frame_equal(
            back[name].reset_index(drop=True),
            adata.uns["edge_stability"][name].reset_index(drop=True),
            check_index_type=False,
        )
    for name, value in adata.uns["edge_stability"]["params"].items():
        np.testing.assert_array_equal(back["params"][name], value)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"seeds": ()}, ValueError, "seeds is empty"),
        ({"seeds": (1, 1)}, ValueError, r"seeds=\[1, 1\] repeats a seed"),
        ({"alphas": []}, ValueError, "alphas is empty"),
        ({"alphas": [2.0, 0.0]}, ValueError, r"alphas must be positive .* \[0\.0\]"),
        ({"alphas": [-1]}, ValueError, "alphas must be positive"),
        ({"alpha": 3.0}, ValueError, r"alphas=\[3\.0\]"),
        ({"prior": "dense"}, ValueError, "needs a prior with masks"),
        ({"n_jobs": 0}, ValueError, "n_jobs must be a positive integer"),
        ({"threshold": 1.0}, ValueError, r"threshold must be in \[0, 1\)"),
        ({"perturbation_key": "guide"}, KeyError, "perturbation_key='guide'"),
    ],
)
def test_bad_input_fails_before_any_training(kwargs, error, message, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking the arguments")

    monkeypatch.setattr(sv.SparseVAE, "train", no_training)
    arguments = {"perturbation_key": "perturbation", "control": "control", **kwargs}
    with pytest.raises(error, match=message):
        sv.tl.edge_stability(tiny_screen(), **arguments)


def test_plot_reads_the_table(stability, tmp_path):
    adata, reference = stability
    plt.close("all")
    heatmap, path = sv.pl.edge_stability(adata, show=False)
    assert heatmap.get_title().startswith("edge frequency (alpha = 5, 3 runs)")
    assert len(heatmap.get_yticklabels()) == len(reference.perturbation_names)
    assert [t.get_text() for t in path.get_xticklabels()] == ["1.5", "5"]
    sv.pl.edge_stability(adata, alpha=1.5, show=False, save=tmp_path / "stability.png")
    assert (tmp_path / "stability.png").stat().st_size > 0
    with pytest.raises(ValueError, match=r"alpha=7 is not in the table"):
        sv.pl.edge_stability(adata, alpha=7, show=False)
    with pytest.raises(KeyError, match=r"run sv.tl.edge_stability"):
        sv.pl.edge_stability(adata, key="missing", show=False)
    plt.close("all")


@pytest.mark.slow
def test_parallel_runs_give_the_same_table():
    """Worker processes give the table of the runs in this process, bitwise. A determinism
    check on one machine (one thread each side), not a portability one: another CPU may give
    other digits.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' setting: identical arithmetic
    try:
        tables = []
        for n_jobs in (1, 2):
            adata = tiny_screen()
            sv.tl.edge_stability(
                adata, "perturbation", "control", seeds=(0, 1), n_jobs=n_jobs, **TINY
            )
            tables.append(adata.uns["edge_stability"])
    finally:
        torch.set_num_threads(threads)
    pd.testing.assert_frame_equal(tables[0]["edges"], tables[1]["edges"])
    pd.testing.assert_frame_equal(tables[0]["matching"], tables[1]["matching"])


# ---- the empty-graph warning -------------------------------------------------------------
def _fake_model(n_without_target: int, n_perturbations: int = 4):
    targets = np.zeros((n_perturbations, 3), dtype=bool)
    targets[n_without_target:, 0] = True
    prior = SpikeSlabPrior.from_options(n_perturbations, 3, None, alpha=2.0)
    return SimpleNamespace(
        module=SimpleNamespace(prior=prior),
        get_intervention_targets=lambda: pd.DataFrame(targets),
    )


def test_empty_graph_warning_counts_perturbations_without_target():
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmptyGraphWarning)
        warn_if_graph_is_empty(_fake_model(2))  # half: no warning
    with pytest.warns(EmptyGraphWarning, match=r"^3 of 4 perturbations have no target"):
        warn_if_graph_is_empty(_fake_model(3))


def test_training_warns_when_most_perturbations_lose_their_targets():
    adata = small_simulation()
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    scvi.settings.seed = 0
    model = sv.SparseVAE(adata, n_latent=3, n_hidden=16, alpha=1e4)
    with pytest.warns(EmptyGraphWarning) as record:
        model.train(max_epochs=6, **QUIET_TRAINER)
    (warning,) = [w for w in record if issubclass(w.category, EmptyGraphWarning)]
    message = str(warning.message)
    n_without = int((~model.get_intervention_targets().any(axis=1)).sum())
    assert n_without > 3
    assert message.startswith(f"{n_without} of 6 perturbations have no target latent")
    assert "alpha = 10000" in message and "sv.tl.edge_stability" in message
    assert "smaller alpha" in message
    assert warning.filename == __file__  # points at the user's train() call


def test_mask_free_priors_never_warn_about_an_empty_graph():
    adata = small_simulation()
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    for prior in ("dense", "standard"):
        model = sv.SparseVAE(adata, n_latent=3, n_hidden=16, prior=prior)
        with warnings.catch_warnings():
            warnings.simplefilter("error", EmptyGraphWarning)
            model.train(max_epochs=2, **QUIET_TRAINER)
