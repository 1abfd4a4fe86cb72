from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from .conftest import small_simulation


def test_shapes_and_ground_truth(adata):
    n_cells = 7 * 30  # 6 perturbations + control, 30 cells each
    assert adata.shape == (n_cells, 24)
    assert adata.obsm["z_true"].shape == (n_cells, 4)
    targets = adata.uns["true_targets"]
    shift = adata.uns["true_shift"]
    assert isinstance(targets, pd.DataFrame) and targets.shape == (6, 4)
    assert set(np.unique(targets.to_numpy())) <= {0, 1}
    assert targets.sum(axis=1).between(1, 3).all()
    # shifts are non-zero exactly on targets, with |shift| near 5
    assert ((shift.to_numpy() != 0) == (targets.to_numpy() == 1)).all()
    assert np.abs(shift.to_numpy()[targets.to_numpy() == 1]).min() > 3
    assert next(iter(adata.obs["perturbation"].cat.categories)) == "control"


def test_counts_are_integers_and_every_cell_has_counts(adata):
    x = adata.X.toarray()
    assert np.all(x == np.round(x)) and x.min() >= 0
    assert (x.sum(axis=1) > 0).all()


def test_latents_follow_the_shift(adata):
    z = pd.DataFrame(adata.obsm["z_true"]).groupby(adata.obs["perturbation"].to_numpy()).mean()
    shift = adata.uns["true_shift"]
    np.testing.assert_allclose(z.loc[shift.index].to_numpy(), shift.to_numpy(), atol=0.6)
    np.testing.assert_allclose(z.loc["control"].to_numpy(), 0.0, atol=0.6)


def test_seed_reproducible_and_distinct():
    a, b, c = small_simulation(), small_simulation(), small_simulation(random_state=1)
    assert (a.X != b.X).nnz == 0
    assert (a.X != c.X).nnz > 0


def test_without_controls_and_target_range():
    data = small_simulation(n_control_cells=0, n_targets=(2, 2))
    assert "control" not in data.obs["perturbation"].cat.categories
    assert (data.uns["true_targets"].sum(axis=1) == 2).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_targets"):
        small_simulation(n_targets=(0, 2))
    with pytest.raises(ValueError, match="decoder_width"):
        small_simulation(n_genes=5)


def test_bundled_norman_subset():
    import sparsevae as sv

    data = sv.data.norman2019_subset()
    assert data.shape == (3375, 250)
    assert (np.asarray(data.X.sum(axis=0)).ravel() > 0).all()  # every gene has counts
    labels = data.obs["perturbation"].astype(str)
    assert "control" in set(labels)
    assert labels.nunique() == 34
    assert labels.str.contains(r"\+").any()
