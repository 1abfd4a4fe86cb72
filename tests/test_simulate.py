from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import sparsevae as sv

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


def test_realistic_options_give_overdispersed_programme_counts():
    common = dict(
        n_perturbations=4,
        n_cells_per_perturbation=400,
        n_latent=3,
        n_genes=150,
        decoder="programmes",
        library_size=3000.0,
        random_state=0,
    )
    poisson = sv.data.simulate_sparse_shift(**common)
    nb = sv.data.simulate_sparse_shift(noise="negative_binomial", inverse_dispersion=2.0, **common)
    control = (nb.obs["perturbation"] == "control").to_numpy()

    def dispersion(adata):  # variance / mean of the most expressed genes among control cells
        x = adata.X[control].toarray()
        top = np.argsort(-x.mean(axis=0))[:20]
        return float(np.median(x[:, top].var(axis=0) / x[:, top].mean(axis=0)))

    # same expected counts; the NB's variance mean + mean^2 / 2 is many times the Poisson's
    assert dispersion(nb) > 3 * dispersion(poisson)
    lib = np.asarray(nb.X.sum(axis=1)).ravel()
    assert 2500 < np.median(lib) < 3500  # the stated depth
    assert nb.uns["simulation"]["decoder"] == "programmes"


def test_lognormal_shifts_are_heavy_tailed_around_their_median():
    adata = sv.data.simulate_sparse_shift(
        n_perturbations=300,
        n_cells_per_perturbation=1,
        n_latent=5,
        shift_distribution="lognormal",
        shift_mean=1.5,
        shift_sd=0.5,
        random_state=1,
    )
    shifts = np.abs(adata.uns["true_shift"].to_numpy()[adata.uns["true_targets"].to_numpy() == 1])
    assert np.median(shifts) == pytest.approx(1.5, rel=0.1)
    assert shifts.max() > 2 * 1.5  # a long right tail: more than twice the median
    assert shifts.min() > 0


@pytest.mark.parametrize(
    "name", ["paper", "realistic", "weak_effects", "few_cells", "genome_scale"]
)
def test_every_regime_simulates(name):
    small = {"n_perturbations": 6, "n_cells_per_perturbation": 5}
    if name != "paper":
        small.update(n_genes=200, n_control_cells=20)
    adata = sv.data.simulate_regime(name, random_state=0, **small)
    assert adata.uns["simulation"]["regime"] == name
    assert adata.uns["true_targets"].shape[0] == 6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"noise": "nb"}, "noise='nb'"),
        ({"decoder": "linear"}, "decoder='linear'"),
        ({"shift_distribution": "t"}, "shift_distribution='t'"),
        ({"noise": "negative_binomial", "inverse_dispersion": 0.0}, "inverse_dispersion"),
    ],
)
def test_bad_simulation_options_name_themselves(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sv.data.simulate_sparse_shift(n_perturbations=2, n_cells_per_perturbation=2, **kwargs)


def test_unknown_regime_lists_the_known_ones():
    with pytest.raises(ValueError, match="choose one of"):
        sv.data.simulate_regime("realist")


@pytest.mark.parametrize("decoder", ["mlp", "programmes"])
def test_the_stored_decoder_made_the_counts(decoder, tmp_path):
    """``uns["true_decoder"]`` survives a write and read, and gives the counts' gene fractions."""
    from sparsevae._io import write_h5ad

    adata = sv.data.simulate_sparse_shift(
        n_perturbations=4, n_cells_per_perturbation=40, n_latent=3, n_genes=50,
        library_size=2e5, decoder=decoder, random_state=3,
    )  # fmt: skip
    write_h5ad(adata, tmp_path / "sim.h5ad")
    adata = __import__("anndata").read_h5ad(tmp_path / "sim.h5ad")
    x = adata.X.toarray()
    observed = np.log(x.sum(0) + 1) - np.log(x.sum() + x.shape[1])
    expected = np.log(np.exp(sv.data.true_log_expression(adata, adata.obsm["z_true"])).mean(0))
    assert np.abs(observed - expected).max() < 0.1  # the genes' total fractions
    # Each cell's: closer with its own latents than with another cell's.
    cell_fractions = np.log((x + 1) / x.sum(1, keepdims=True))
    z = adata.obsm["z_true"]
    own = np.abs(cell_fractions - sv.data.true_log_expression(adata, z))
    others = np.abs(cell_fractions - sv.data.true_log_expression(adata, z[::-1]))
    assert np.median(own) < 0.5 * np.median(others)


def test_true_log_expression_names_what_is_missing():
    adata = sv.data.simulate_sparse_shift(n_perturbations=2, n_cells_per_perturbation=5,
                                          n_latent=3, n_genes=40)  # fmt: skip
    del adata.uns["true_decoder"]
    with pytest.raises(KeyError, match="true_decoder"):
        sv.data.true_log_expression(adata, adata.obsm["z_true"])
    adata = sv.data.simulate_sparse_shift(n_perturbations=2, n_cells_per_perturbation=5,
                                          n_latent=3, n_genes=40)  # fmt: skip
    with pytest.raises(ValueError, match=r"cells × 3 latents.*\(15, 2\)"):
        sv.data.true_log_expression(adata, adata.obsm["z_true"][:, :2])
