from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

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
