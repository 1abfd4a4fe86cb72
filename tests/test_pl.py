from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")

import anndata
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import sparsevae as sv


def test_mask_heatmap_renders_rows_and_columns(trained, tmp_path):
    model, data = trained
    data = data.copy()
    sv.tl.write_results(data, model)
    path = tmp_path / "pi.png"
    ax = sv.pl.mask_heatmap(data, show=False, save=path)
    assert path.stat().st_size > 0
    rows = {t.get_text() for t in ax.get_yticklabels()}
    columns = {t.get_text() for t in ax.get_xticklabels()}
    assert rows == set(model.perturbation_names)
    assert columns == set(model.latent_names)


def _gridlines_visible(ax):
    return any(line.get_visible() for line in ax.get_xgridlines() + ax.get_ygridlines())


def test_heatmaps_draw_no_grid_under_scanpy_style(trained):
    model, data = trained
    data = data.copy()
    sv.tl.write_results(data, model)
    with plt.rc_context({"axes.grid": True}):
        assert not _gridlines_visible(sv.pl.mask_heatmap(data, show=False))
        loadings = model.get_latent_gene_loadings()
        assert not _gridlines_visible(sv.pl.latent_genes(loadings, min_expression=0, show=False))
    plt.close("all")


def test_mask_heatmap_needs_results(adata):
    with pytest.raises(KeyError, match="write_results"):
        sv.pl.mask_heatmap(adata, show=False)


def test_graph_comparison(trained, tmp_path):
    model, data = trained
    axes = sv.pl.graph_comparison(
        data.uns["true_targets"],
        model.get_mask_probabilities(),
        data.obsm["z_true"],
        model.get_latent_representation(),
        show=False,
        save=tmp_path / "graph.png",
    )
    assert len(axes) == 2
    assert len(axes[1].get_yticklabels()) == 6
    assert (tmp_path / "graph.png").stat().st_size > 0


# ---- readability at many labels ------------------------------------------------------------
def _assert_readable(labels, min_size=4.0):
    """Every label is drawn at a legible size and no two labels overlap."""
    assert labels and all(t.get_fontsize() >= min_size for t in labels)
    fig = labels[0].get_figure()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda box: box.y0)
    for lower, upper in itertools.pairwise(boxes):
        assert upper.y0 >= lower.y1 - 0.5, "tick labels overlap"


@pytest.mark.parametrize("n_perturbations", [30, 200])
def test_mask_heatmap_labels_stay_readable(n_perturbations, tmp_path):
    rng = np.random.default_rng(0)
    names = [f"GENE{i}+GENE{i + 1}" for i in range(n_perturbations)]
    pi = pd.DataFrame(rng.random((n_perturbations, 15)), index=names)
    pi.columns = [f"latent_{i}" for i in range(15)]
    data = anndata.AnnData(np.zeros((2, 1)))
    data.uns["sparsevae"] = {"pi": pi}
    ax = sv.pl.mask_heatmap(data, show=False, save=tmp_path / "pi.png")
    labels = ax.get_yticklabels()
    assert sorted(t.get_text() for t in labels) == sorted(names)
    _assert_readable(labels)
    plt.close("all")


def test_perturbation_clusters_labels_stay_readable(tmp_path):
    names = [f"P{i:03d}" for i in range(200)]
    profiles = pd.DataFrame(np.random.default_rng(0).normal(size=(200, 5)), index=names)
    profiles.columns = [f"PC{i + 1}" for i in range(5)]
    clusters = pd.DataFrame({"cluster": [str(i % 7) for i in range(200)]}, index=names)
    data = anndata.AnnData(np.zeros((2, 1)))
    data.uns["perturbation_cluster"] = {"profiles": profiles, "clusters": clusters}
    ax = sv.pl.perturbation_clusters(data, show=False, save=tmp_path / "clusters.png")
    labels = ax.get_yticklabels()
    assert len(labels) == 200
    _assert_readable(labels)
    plt.close("all")


# ---- latent_genes --------------------------------------------------------------------------
def _loadings():
    """3 latents × 6 genes; latent_0 drives G0 up and G1 down, latent_1 drives G1 and G2."""
    values = {
        "latent_0": [3.0, -2.0, 0.5, 0.1, 0.0, 0.2],
        "latent_1": [0.1, 4.0, -1.0, 0.0, 0.3, 0.2],
        "latent_2": [0.0, 0.1, 0.2, 0.3, -0.4, 0.5],
    }
    genes = [f"G{i}" for i in range(6)]
    rows = [
        (latent, gene, v)
        for latent, vs in values.items()
        for gene, v in zip(genes, vs, strict=True)
    ]
    loadings = pd.DataFrame(rows, columns=["latent", "gene", "log2_fold_change"])
    loadings["expression_per_10k"] = loadings["gene"].map({g: 10.0 for g in genes} | {"G5": 0.5})
    loadings.attrs["shift"] = 1.0
    return loadings


def test_latent_genes_rows_are_each_latents_top_genes(tmp_path):
    path = tmp_path / "genes.png"
    ax = sv.pl.latent_genes(_loadings(), ["latent_0", "latent_1"], n_genes=2, show=False, save=path)
    assert path.stat().st_size > 0
    # latent_0: G0 (3), G1 (|-2|); latent_1: G1 (4, already shown), G2 (|-1|).
    assert [t.get_text() for t in ax.get_yticklabels()] == ["G0", "G1", "G2"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["latent_0", "latent_1"]
    mesh = ax.collections[0]
    np.testing.assert_allclose(mesh.get_array().reshape(3, 2), [[3, 0.1], [-2, 4], [0.5, -1]])
    assert mesh.get_clim() == (-4.0, 4.0)
    dots = ax.collections[1].get_offsets()
    np.testing.assert_allclose(dots, [[0.5, 0.5], [0.5, 1.5], [1.5, 2.5]])
    plt.close("all")


def test_latent_genes_default_is_all_latents_and_checks_input():
    ax = sv.pl.latent_genes(_loadings(), n_genes=1, min_expression=0, show=False)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["latent_0", "latent_1", "latent_2"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["G0", "G1", "G5"]
    # G5 (0.5 per 10k) is below the default min_expression: latent_2's next gene is G4.
    ax = sv.pl.latent_genes(_loadings(), n_genes=1, show=False)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["G0", "G1", "G4"]
    with pytest.raises(ValueError, match="min_expression=100"):
        sv.pl.latent_genes(_loadings(), min_expression=100, show=False)
    with pytest.raises(ValueError, match="latent_9"):
        sv.pl.latent_genes(_loadings(), ["latent_9"], show=False)
    with pytest.raises(KeyError, match="get_latent_gene_loadings"):
        sv.pl.latent_genes(_loadings().drop(columns="gene"), show=False)
    plt.close("all")


def test_latent_genes_of_a_trained_model(trained, tmp_path):
    model, data = trained
    loadings = model.get_latent_gene_loadings()
    ax = sv.pl.latent_genes(
        loadings, n_genes=3, min_expression=0, show=False, save=tmp_path / "genes.png"
    )
    genes = [t.get_text() for t in ax.get_yticklabels()]
    assert 3 <= len(genes) <= 12 and len(set(genes)) == len(genes)
    assert set(genes) <= set(data.var_names)
    top = loadings[loadings.latent == "latent_0"]
    strongest = top.loc[top.log2_fold_change.abs().idxmax(), "gene"]
    assert genes[0] == strongest
    plt.close("all")


def test_latent_genes_labels_stay_readable_at_200_genes():
    rng = np.random.default_rng(0)
    latents, genes = [f"latent_{i}" for i in range(40)], [f"GENE{i}" for i in range(400)]
    loadings = pd.DataFrame(
        {
            "latent": np.repeat(latents, len(genes)),
            "gene": np.tile(genes, len(latents)),
            "log2_fold_change": rng.normal(size=len(latents) * len(genes)),
            "expression_per_10k": 5.0,
        }
    )
    ax = sv.pl.latent_genes(loadings, n_genes=5, show=False)
    labels = ax.get_yticklabels()
    assert 150 <= len(labels) <= 200
    _assert_readable(labels)
    plt.close("all")


# ---- training_history ----------------------------------------------------------------------
def test_training_history_draws_train_and_validation(trained, tmp_path):
    model, _ = trained
    path = tmp_path / "history.png"
    axes = sv.pl.training_history(model, show=False, save=path)
    assert path.stat().st_size > 0
    assert [a.get_title() for a in axes] == ["elbo", "reconstruction loss", "kl local"]
    for axis, key in zip(axes, ("elbo", "reconstruction_loss", "kl_local"), strict=True):
        lines = axis.get_lines()
        assert [line.get_label() for line in lines] == ["train", "validation"]
        np.testing.assert_array_equal(lines[0].get_xdata(), [0, 1, 2])
        np.testing.assert_allclose(
            lines[0].get_ydata(), model.history[f"{key}_train"].to_numpy(float).ravel()
        )
        np.testing.assert_allclose(
            lines[1].get_ydata(), model.history[f"{key}_validation"].to_numpy(float).ravel()
        )
    plt.close("all")


def test_training_history_without_validation_and_from_epoch():
    epochs = pd.Index(range(10), name="epoch")
    history = {
        "elbo_train": pd.DataFrame({"elbo_train": np.linspace(100, 10, 10)}, index=epochs),
        "train_loss": pd.DataFrame({"train_loss": np.linspace(90, 9, 10)}, index=epochs),
    }
    _, ax = plt.subplots()
    axes = sv.pl.training_history(history, keys="elbo", start_epoch=4, ax=ax, show=False)
    assert axes == [ax]
    (line,) = ax.get_lines()
    np.testing.assert_array_equal(line.get_xdata(), range(4, 10))
    axes = sv.pl.training_history(history, keys=("elbo", "loss"), show=False)
    assert [len(a.get_lines()) for a in axes] == [1, 1]
    np.testing.assert_allclose(axes[1].get_lines()[0].get_ydata(), np.linspace(90, 9, 10))
    with pytest.raises(KeyError, match="kl_local"):
        sv.pl.training_history(history, keys=("kl_local",), show=False)
    with pytest.raises(ValueError, match="one axes per key"):
        sv.pl.training_history(history, keys=("elbo", "loss"), ax=ax, show=False)
    plt.close("all")
