"""Pairs of perturbations in the simulator: latent-additive truth, earlier data unchanged."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scvi

import sparsevae as sv
from sparsevae._quiet import QUIET_TRAINER as QUIET
from sparsevae.data._simulate import _sample_counts

from .conftest import small_simulation

ROOT = Path(__file__).resolve().parent.parent
#: The last commit that changed the simulator before it learnt combinations.
BEFORE_COMBINATIONS = "7d6612d77af63f3c7224d5da6402b8de1b415cff"
SIMULATOR = "src/sparsevae/data/_simulate.py"

#: Settings that cover every branch of the simulator: MLP and programme decoders, Poisson and
#: negative-binomial counts, library spread, control cells or none, counts drawn in chunks.
CONFIGS = {
    "paper_small": {
        "n_perturbations": 6,
        "n_cells_per_perturbation": 30,
        "n_latent": 4,
        "n_genes": 40,
        "decoder_width": 24,
    },
    "mlp_controls_depth": {
        "n_perturbations": 8,
        "n_cells_per_perturbation": 20,
        "n_latent": 5,
        "n_genes": 60,
        "n_control_cells": 50,
        "library_log_sd": 0.4,
        "random_state": 3,
    },
    "programmes_nb": {
        "n_perturbations": 10,
        "n_cells_per_perturbation": 15,
        "n_latent": 6,
        "n_genes": 120,
        "decoder": "programmes",
        "noise": "negative_binomial",
        "shift_distribution": "lognormal",
        "shift_mean": 1.5,
        "shift_sd": 0.3,
        "library_size": 3000.0,
        "library_log_sd": 0.4,
        "n_control_cells": 40,
        "random_state": 7,
    },
    "chunked": {  # 4,500 cells x 4,000 genes: three chunks of counts
        "n_perturbations": 3,
        "n_cells_per_perturbation": 1500,
        "n_latent": 5,
        "n_genes": 4000,
        "n_control_cells": 0,
        "random_state": 2,
    },
}
#: SHA-256 (first 16 hex digits) of z_true, the labels and the dense counts of each setting, as
#: the simulator made them before combinations (at ``BEFORE_COMBINATIONS``).
DIGESTS = {
    "paper_small": ("6b7e3d3321436326", "762e53f6bb832ca6"),
    "mlp_controls_depth": ("04688997dbba2810", "925166798d526eed"),
    "programmes_nb": ("23f6bce307233f90", "23bb319480166ccb"),
    "chunked": ("2a38d5afa5144ea3", "0d85f58b9098e31f"),
}


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def _earlier_simulator():
    """``simulate_sparse_shift`` as of ``BEFORE_COMBINATIONS``, or skip without git history."""
    try:
        source = subprocess.run(
            ["git", "show", f"{BEFORE_COMBINATIONS}:{SIMULATOR}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"git history with {BEFORE_COMBINATIONS[:7]} is not available")
    spec = importlib.util.spec_from_loader("_simulate_before_combinations", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, "_simulate_before_combinations.py", "exec"), module.__dict__)
    return module.simulate_sparse_shift


def _same_data(new, old, same_categories: bool = True) -> None:
    np.testing.assert_array_equal(new.X.toarray(), old.X.toarray())
    np.testing.assert_array_equal(new.obsm["z_true"], old.obsm["z_true"])
    if same_categories:
        pd.testing.assert_frame_equal(new.obs, old.obs)
    else:  # the same labels, among more categories (the pairs')
        pd.testing.assert_frame_equal(new.obs.astype(str), old.obs.astype(str))
    pd.testing.assert_frame_equal(new.uns["true_targets"], old.uns["true_targets"])
    pd.testing.assert_frame_equal(new.uns["true_shift"], old.uns["true_shift"])


# ---- the default reproduces earlier data ----------------------------------------------------
@pytest.mark.parametrize("name", list(CONFIGS))
def test_default_reproduces_the_digests_of_earlier_data(name):
    adata = sv.data.simulate_sparse_shift(**CONFIGS[name])
    z_digest, x_digest = DIGESTS[name]
    assert _digest(adata.obsm["z_true"]) == z_digest
    assert _digest(adata.X.toarray()) == x_digest
    assert adata.uns["simulation"]["combinations"] == []
    assert "+" not in "".join(adata.obs["perturbation"].cat.categories)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_default_equals_the_simulator_before_combinations(name):
    earlier = _earlier_simulator()
    new, old = sv.data.simulate_sparse_shift(**CONFIGS[name]), earlier(**CONFIGS[name])
    _same_data(new, old)
    assert {key: new.uns["simulation"][key] for key in old.uns["simulation"]} == dict(
        old.uns["simulation"]
    )


@pytest.mark.parametrize("name", ["mlp_controls_depth", "programmes_nb"])
def test_pairs_only_append_cells(name):
    """Control and single-perturbation cells are the same with or without pairs."""
    without = sv.data.simulate_sparse_shift(**CONFIGS[name])
    with_pairs = sv.data.simulate_sparse_shift(
        **CONFIGS[name], n_combinations=3, n_cells_per_combination=7
    )
    assert with_pairs.n_obs == without.n_obs + 3 * 7
    _same_data(with_pairs[: without.n_obs].copy(), without, same_categories=False)
    assert list(with_pairs.obs["perturbation"].cat.categories[:-3]) == list(
        without.obs["perturbation"].cat.categories
    )


def test_a_given_scale_is_the_standardisation_it_replaces():
    """Pair cells reuse the singles' logit scale: with that scale, the same counts."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 3))
    weights = rng.normal(size=(3, 20))
    library = np.full((50, 1), 1e4)

    def logits_of(block):
        return np.tanh(block @ weights)

    standardised, scale = _sample_counts(np.random.default_rng(1), z, logits_of, 20, library)
    assert scale == pytest.approx(logits_of(z).std())
    given, same = _sample_counts(np.random.default_rng(1), z, logits_of, 20, library, scale=scale)
    assert same == scale
    assert (standardised != given).nnz == 0
    _, unit = _sample_counts(np.random.default_rng(1), z, logits_of, 20, library, standardise=False)
    assert unit == 1.0


# ---- the pairs --------------------------------------------------------------------------------
def test_pairs_have_the_right_count_labels_and_cells():
    adata = small_simulation(n_combinations=4, n_control_cells=20)
    pairs = adata.uns["simulation"]["combinations"]
    singles = list(adata.uns["true_targets"].index)
    assert len(pairs) == len(set(pairs)) == 4
    assert pairs == sorted(pairs)
    for pair in pairs:
        first, second = pair.split("+")
        assert first in singles and second in singles and first < second
    categories = list(adata.obs["perturbation"].cat.categories)
    assert categories == ["control", *singles, *pairs]
    counts = adata.obs["perturbation"].value_counts()
    assert (counts[pairs] == 30).all()  # n_cells_per_combination defaults to per perturbation
    assert (adata.obs["perturbation"].iloc[-4 * 30 :].isin(pairs)).all()  # pair cells last
    assert adata.uns["true_targets"].shape[0] == adata.uns["true_shift"].shape[0] == 6
    simulation = adata.uns["simulation"]
    assert simulation["n_combinations"] == 4 and simulation["n_cells_per_combination"] == 30
    x = adata.X.toarray()
    assert np.all(x == np.round(x)) and (x.sum(axis=1) > 0).all()


def test_every_pair_can_be_drawn_and_the_draw_is_seeded():
    every = small_simulation(n_combinations=15, n_cells_per_combination=2)  # 6 choose 2
    assert len(set(every.uns["simulation"]["combinations"])) == 15
    a = small_simulation(n_combinations=3, n_cells_per_combination=5, random_state=4)
    b = small_simulation(n_combinations=3, n_cells_per_combination=5, random_state=4)
    assert a.uns["simulation"]["combinations"] == b.uns["simulation"]["combinations"]
    assert (a.X != b.X).nnz == 0


@pytest.mark.parametrize("decoder", ["mlp", "programmes"])
def test_a_pairs_true_latent_mean_is_the_sum_of_its_singles_shifts(decoder):
    n_cells = 400
    adata = sv.data.simulate_sparse_shift(
        n_perturbations=8,
        n_cells_per_perturbation=20,
        n_latent=5,
        n_genes=60,
        decoder=decoder,
        n_combinations=5,
        n_cells_per_combination=n_cells,
        random_state=2,
    )
    shift = adata.uns["true_shift"]
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    for pair in adata.uns["simulation"]["combinations"]:
        first, second = pair.split("+")
        mean = adata.obsm["z_true"][labels == pair].mean(axis=0)
        # z ~ N(shift_A + shift_B, I): the mean of 400 cells is within 5 standard errors
        np.testing.assert_allclose(
            mean, shift.loc[first] + shift.loc[second], atol=5 / np.sqrt(n_cells)
        )


def test_the_decoder_is_not_additive_in_gene_space():
    """With the MLP decoder a pair's change of expression is not the sum of its singles'."""
    adata = sv.data.simulate_sparse_shift(
        n_perturbations=6,
        n_cells_per_perturbation=400,
        n_latent=4,
        n_genes=60,
        n_control_cells=400,
        n_combinations=3,
        n_cells_per_combination=400,
        random_state=0,
    )
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    control = sv.evaluate.mean_log_expression(adata[labels == "control"])

    def change(label):
        return sv.evaluate.mean_log_expression(adata[labels == label]) - control

    for pair in adata.uns["simulation"]["combinations"]:
        first, second = pair.split("+")
        additive = change(first) + change(second)
        error = np.abs(change(pair) - additive).max()
        # log1p(CP10k) units; two halves of a pair's 400 cells differ by at most about 0.1
        assert error > 0.5


@pytest.mark.filterwarnings("ignore::sparsevae.EmptyGraphWarning")  # 2 epochs learn no graph
def test_a_simulated_pair_is_predicted_zero_shot():
    adata = small_simulation(n_combinations=2, n_cells_per_combination=10)
    pair = adata.uns["simulation"]["combinations"][0]
    train = adata[~adata.obs["perturbation"].isin([pair]).to_numpy()].copy()
    scvi.settings.seed = 0
    sv.SparseVAE.setup_anndata(
        train, perturbation_key="perturbation", control="control", combination_delimiter="+"
    )
    model = sv.SparseVAE(train, n_latent=4, n_hidden=16)
    model.train(max_epochs=2, **QUIET)
    control = train[train.obs["perturbation"] == "control"].copy()
    effect = model.get_treatment_effect(control, perturbation=pair, n_samples=2)
    assert effect.shape == (adata.n_vars,) and np.isfinite(effect.to_numpy()).all()


# ---- bad arguments ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_combinations": -1}, "n_combinations"),
        ({"n_combinations": 16}, "15 distinct pairs"),  # 6 perturbations: 15 pairs
        ({"n_combinations": 2.0}, "n_combinations"),
        ({"n_combinations": True}, "n_combinations"),
        ({"n_combinations": 2, "n_cells_per_combination": 0}, "n_cells_per_combination"),
        ({"n_combinations": 2, "n_cells_per_combination": 1.5}, "n_cells_per_combination"),
    ],
)
def test_bad_combination_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        small_simulation(**kwargs)


def test_one_perturbation_has_no_pair():
    with pytest.raises(ValueError, match="0 distinct pairs"):
        small_simulation(n_perturbations=1, n_combinations=1)
