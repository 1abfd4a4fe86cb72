from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from torch.distributions import Normal, kl_divergence

import sparsevae as sv
from sparsevae.module import SpikeSlabPrior
from sparsevae.module import _readouts as readouts

from .conftest import QUIET, small_simulation


def _with_pairs(adata):
    """Relabel half of P4's cells 'P0+P1' and half of P5's 'P2+P3' (shapes only, not biology)."""
    labels = adata.obs["perturbation"].astype(str).to_numpy().copy()
    for single, pair in (("P4", "P0+P1"), ("P5", "P2+P3")):
        rows = np.flatnonzero(labels == single)
        labels[rows[: len(rows) // 2]] = pair
    adata.obs["perturbation"] = pd.Categorical(labels)
    return adata


# ---- the prior --------------------------------------------------------------------------------
def test_exact_kl_of_a_combination_matches_enumeration_over_masks():
    torch.manual_seed(0)
    n_latent = 3
    prior = SpikeSlabPrior(5, n_latent, control_index=0)
    with torch.no_grad():
        prior.logits.copy_(torch.randn(5, n_latent))
        prior.mu.copy_(2 * torch.randn(5, n_latent))
    codes = torch.tensor([[1, 2, 3], [4, 1, -1], [0, -1, -1], [2, 0, 3]])  # 0 = control
    qz = Normal(torch.randn(4, n_latent), torch.rand(4, n_latent) + 0.5)
    prior.train()
    exact = prior.kl(qz, codes)

    pi = torch.sigmoid(prior.logits).detach()
    brute = torch.zeros(4)
    for cell in range(4):
        singles = [int(c) for c in codes[cell] if c > 0]  # control and padding: no shift
        n_slots = len(singles) * n_latent
        for bits in itertools.product([0.0, 1.0], repeat=n_slots):
            gamma = torch.tensor(bits).reshape(len(singles), n_latent) if singles else None
            shift, weight = torch.zeros(n_latent), torch.ones(())
            for slot, single in enumerate(singles):
                g = gamma[slot]
                shift = shift + g * prior.mu[single].detach()
                weight = weight * torch.prod(pi[single] ** g * (1 - pi[single]) ** (1 - g))
            q = Normal(qz.loc[cell], qz.scale[cell])
            brute[cell] += weight * kl_divergence(q, Normal(shift, 1.0)).sum()
    assert torch.allclose(exact.detach(), brute, atol=1e-4)


def test_one_label_per_cell_and_padded_sets_give_the_same_prior():
    torch.manual_seed(1)
    prior = SpikeSlabPrior(4, 3, control_index=0)
    with torch.no_grad():
        prior.logits.copy_(torch.randn(4, 3))
    single = torch.tensor([0, 1, 2, 3])
    padded = torch.tensor([[0, -1], [1, -1], [-1, 2], [3, -1]])
    qz = Normal(torch.randn(4, 3), torch.ones(4, 3))
    prior.train()
    assert torch.allclose(prior.kl(qz, single), prior.kl(qz, padded), atol=1e-5)
    prior.eval()
    assert torch.equal(prior.cell_mean(single), prior.cell_mean(padded))
    pair = prior.cell_mean(torch.tensor([[1, 2]]))[0]
    assert torch.allclose(
        pair,
        readouts.evaluation_shifts(prior, lambda: None)[1]
        + readouts.evaluation_shifts(prior, lambda: None)[2],
    )


# ---- registration -----------------------------------------------------------------------------
def test_setup_registers_singles_and_sets():
    adata = _with_pairs(small_simulation())
    sv.SparseVAE.setup_anndata(
        adata, perturbation_key="perturbation", control="control", combination_delimiter="+"
    )
    model = sv.SparseVAE(adata, n_latent=3, n_hidden=8)
    assert model.perturbation_names == ["P0", "P1", "P2", "P3", "P4", "P5"]
    assert model.module.prior.n_perturbations == 7
    codes = adata.obsm["_sparsevae_perturbation_set"]
    assert codes.shape == (adata.n_obs, 2)
    names = np.asarray(model.knowledge.categories)
    pair = np.flatnonzero(adata.obs["perturbation"] == "P0+P1")[0]
    control = np.flatnonzero(adata.obs["perturbation"] == "control")[0]
    assert list(names[codes[pair].astype(int)]) == ["P0", "P1"]
    assert list(codes[control]) == [-1, -1]  # control is the empty set
    assert model.get_mask_probabilities().shape == (6, 3)


@pytest.mark.parametrize(
    ("label", "message"), [("P0+", "empty part"), ("control+P1", "control label")]
)
def test_setup_rejects_malformed_combinations(label, message):
    adata = small_simulation()
    labels = adata.obs["perturbation"].astype(str).to_numpy().copy()
    labels[:3] = label
    adata.obs["perturbation"] = labels
    with pytest.raises(ValueError, match=message):
        sv.SparseVAE.setup_anndata(
            adata, perturbation_key="perturbation", control="control", combination_delimiter="+"
        )


def test_without_delimiter_a_pair_is_its_own_label():
    adata = _with_pairs(small_simulation())
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(adata, n_latent=3, n_hidden=8)
    assert "P0+P1" in model.perturbation_names
    assert "_sparsevae_perturbation_set" not in adata.obsm


# ---- a trained model ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_pairs():
    """sVAE+ on singles P0..P5 and the pair P0+P1; P2+P3 is held out."""
    adata = _with_pairs(small_simulation())
    held_out = (adata.obs["perturbation"] == "P2+P3").to_numpy()
    train, test = adata[~held_out].copy(), adata[held_out].copy()
    scvi.settings.seed = 0
    sv.SparseVAE.setup_anndata(
        train, perturbation_key="perturbation", control="control", combination_delimiter="+"
    )
    model = sv.SparseVAE(train, n_latent=3, n_hidden=16)
    model.train(max_epochs=3, **QUIET)
    return model, train, test


def test_zero_shot_pair_has_an_interventional_nll(trained_pairs):
    model, _, test = trained_pairs
    nll = model.get_interventional_nll(test, n_particles=5)
    assert nll.shape == (test.n_obs,)
    assert np.isfinite(nll).all()


def test_pair_with_an_unknown_single_names_it(trained_pairs):
    model, _, test = trained_pairs
    test = test.copy()
    test.obs["perturbation"] = "P2+PX"
    with pytest.raises(ValueError, match=r"'PX'.*'P2\+PX'"):
        model.get_interventional_nll(test, n_particles=2)
    with pytest.raises(ValueError, match="PX"):
        model.predict(perturbation="P0+PX")


def _own_shift(model, adata, label):
    """Mean posterior mean of ``label``'s cells minus control's (the hand computation)."""
    z = model.get_latent_representation(adata)
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    return z[labels == label].mean(axis=0) - z[labels == "control"].mean(axis=0)


def test_shift_of_a_pair_is_the_sum_of_its_singles(trained_pairs):
    model, train, _ = trained_pairs
    shifts = model.get_perturbation_shifts()
    pair = model.get_combination_shift("P2+P3", source="prior")
    assert np.allclose(pair.to_numpy(), (shifts.loc["P2"] + shifts.loc["P3"]).to_numpy())
    own = _own_shift(model, train, "P2") + _own_shift(model, train, "P3")
    assert np.allclose(model.get_combination_shift("P2+P3").to_numpy(), own, atol=1e-5)
    for source in ("empirical", "prior"):
        assert np.allclose(model.get_combination_shift("control", source=source), 0.0)
    with pytest.raises(ValueError, match="source='bogus' is unknown"):
        model.get_combination_shift("P2", source="bogus")


def test_empirical_shift_needs_cells_of_its_own(trained_pairs):
    _, train, _ = trained_pairs
    only_in_pair = train[(train.obs["perturbation"] != "P1").to_numpy()].copy()  # P1: in P0+P1
    sv.SparseVAE.setup_anndata(
        only_in_pair, perturbation_key="perturbation", control="control", combination_delimiter="+"
    )
    model = sv.SparseVAE(only_in_pair, n_latent=3, n_hidden=16)
    model.train(max_epochs=1, **QUIET)
    with pytest.raises(ValueError, match=r"\['P1'\] have no cells of their own.*source='prior'"):
        model.get_combination_shift("P0+P1")
    model.get_combination_shift("P0+P1", source="prior")
    model.get_combination_shift("P0")
    # control is no shift, even when a single has no empirical shift (NaN * 0 is NaN)
    assert (model.get_combination_shift("control") == 0).all()
    control = only_in_pair[only_in_pair.obs["perturbation"] == "control"].copy()
    assert np.isfinite(model.get_treatment_effect(control, perturbation="P0")).all()


def _decode(model, adata, shift):
    """Decoder mean at the encoder's posterior mean plus ``shift`` (the reference computation)."""
    module = model.module.eval()
    counts = adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X
    x = torch.as_tensor(np.asarray(counts, dtype=np.float32))
    with torch.no_grad():
        qz, _ = module.z_encoder(torch.log1p(x))
        z = qz.loc + torch.as_tensor(shift, dtype=torch.float32)
        return module.decoder("gene", z, torch.zeros(x.shape[0], 1))[0].numpy()


def test_predict_shapes_and_control_to_control(trained_pairs):
    model, train, _ = trained_pairs
    control = train[train.obs["perturbation"] == "control"].copy()
    predicted = model.predict(control, perturbation="control", library_size=1e4)
    assert predicted.shape == control.shape
    assert list(predicted.var_names) == list(control.var_names)
    assert (predicted.obs["predicted_perturbation"] == "control").all()
    assert np.allclose(predicted.X.sum(axis=1), 1e4, rtol=1e-4)
    # control -> control is the model's own reconstruction of the control cells
    reconstruction = _decode(model, control, np.zeros(3)) * 1e4
    assert np.allclose(predicted.X, reconstruction, rtol=1e-4, atol=1e-3)


def test_predict_a_zero_shot_pair_adds_the_singles_shifts(trained_pairs):
    model, train, _ = trained_pairs
    control = train[train.obs["perturbation"] == "control"].copy()
    shifts = model.get_perturbation_shifts()
    predicted = model.predict(control, perturbation="P2+P3", source="prior")
    expected = _decode(model, control, (shifts.loc["P2"] + shifts.loc["P3"]).to_numpy())
    assert np.allclose(predicted.X, expected, rtol=1e-4, atol=1e-7)
    own = _own_shift(model, train, "P2") + _own_shift(model, train, "P3")
    predicted = model.predict(control, perturbation="P2+P3")
    assert np.allclose(predicted.X, _decode(model, control, own), rtol=1e-4, atol=1e-6)


def test_predict_removes_the_cells_own_shift(trained_pairs):
    model, train, _ = trained_pairs
    cells = train[train.obs["perturbation"] == "P0+P1"].copy()
    as_control = model.predict(cells, perturbation="control").X
    shift = model.get_combination_shift("P0+P1").to_numpy()
    assert np.allclose(as_control, _decode(model, cells, -shift), rtol=1e-4, atol=1e-7)


def test_treatment_effect_is_the_difference_of_predicted_means(trained_pairs):
    model, train, _ = trained_pairs
    control = train[train.obs["perturbation"] == "control"].copy()
    effect = model.get_treatment_effect(control, perturbation="P0", statistic="expected")
    assert list(effect.index) == list(control.var_names)
    treated = model.predict(control, perturbation="P0").X.mean(axis=0)
    untreated = model.predict(control, perturbation="control").X.mean(axis=0)
    assert np.allclose(effect.to_numpy(), treated - untreated, atol=1e-7)
    for statistic in ("sampled", "expected"):  # the same draws on both sides: exactly 0
        same = model.get_treatment_effect(control, perturbation="control", statistic=statistic)
        assert np.allclose(same, 0.0)
    logged = model.get_treatment_effect(
        control, perturbation="P0", statistic="expected", library_size=1e4, log1p=True
    )
    treated = np.log1p(model.predict(control, perturbation="P0", library_size=1e4).X)
    untreated = np.log1p(model.predict(control, perturbation="control", library_size=1e4).X)
    assert np.allclose(logged.to_numpy(), treated.mean(0) - untreated.mean(0), atol=1e-5)


def _drawn_statistic(model, cells, label, library, n_samples, seed):
    """By hand: mean log1p(counts per 10,000) of NB draws from the predicted proportions."""
    theta = np.exp(model.module.log_theta().detach().numpy()).astype(np.float64)
    proportions = model.predict(cells, perturbation=label).X.astype(np.float64)
    rng = np.random.default_rng(seed)
    mean = np.broadcast_to(proportions * library, (n_samples, *proportions.shape))
    counts = rng.poisson(rng.gamma(theta, mean / theta))
    keep = counts.sum(-1) > 0
    normalised = 1e4 * counts[keep] / counts[keep].sum(-1, keepdims=True)
    return np.log1p(normalised).mean(axis=0)


def _log_library_shift(data, label):
    library = np.log(np.asarray(data.X.sum(axis=1), dtype=np.float64).ravel())
    labels = data.obs["perturbation"].astype(str).to_numpy()
    return library[labels == label].mean() - library[labels == "control"].mean()


def test_sampled_treatment_effect_by_hand(trained_pairs):
    """The default: NB draws from each control cell's predicted proportions at its library
    size times the depth model's change (the perturbation's mean log library minus control's;
    a pair's singles add in log space), minus the same draws under control at the cells' own
    library sizes. Options: observed library sizes; the observed control statistic.
    """
    model, train, _ = trained_pairs
    control = train[train.obs["perturbation"] == "control"].copy()
    library = np.asarray(control.X.sum(axis=1), dtype=np.float64).reshape(-1, 1)
    untreated = _drawn_statistic(model, control, "control", library, 3, 7)
    for label, change in (
        ("P0", _log_library_shift(train, "P0")),
        ("P0+P1", _log_library_shift(train, "P0") + _log_library_shift(train, "P1")),
    ):
        effect = model.get_treatment_effect(
            control, perturbation=label, n_samples=3, random_state=7
        )
        treated = _drawn_statistic(model, control, label, library * np.exp(change), 3, 7)
        assert np.allclose(effect.to_numpy(), treated - untreated, atol=1e-6)
    observed_depth = model.get_treatment_effect(
        control, perturbation="P0", n_samples=3, random_state=7, depth="observed"
    )
    treated = _drawn_statistic(model, control, "P0", library, 3, 7)
    assert np.allclose(observed_depth.to_numpy(), treated - untreated, atol=1e-6)
    observed_control = model.get_treatment_effect(
        control, perturbation="P0", n_samples=3, random_state=7, reference_statistic="observed"
    )
    treated = _drawn_statistic(
        model, control, "P0", library * np.exp(_log_library_shift(train, "P0")), 3, 7
    )
    expected = treated - sv.evaluate.mean_log_expression(control)
    assert np.allclose(observed_control.to_numpy(), expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"reference_statistic='observed'.*every cell labelled"):
        model.get_treatment_effect(train, perturbation="P0", reference_statistic="observed")
    with pytest.raises(ValueError, match="depth='sequenced' is unknown"):
        model.get_treatment_effect(control, perturbation="P0", depth="sequenced")
    with pytest.raises(ValueError, match="library_size and log1p apply to statistic='expected'"):
        model.get_treatment_effect(control, perturbation="P0", library_size=1e4)
    with pytest.raises(ValueError, match="statistic='mean' is unknown"):
        model.get_treatment_effect(control, perturbation="P0", statistic="mean")


def test_sampled_statistic_matches_the_observed_one_on_the_same_distribution():
    """Counts drawn from a known NB, summarised like observed cells, agree with the sampled
    statistic of the same parameters (the two sides of an effect correlation are comparable).
    """
    from anndata import AnnData

    from sparsevae.model._predict import sampled_mean_log_expression

    rng = np.random.default_rng(0)
    proportions = rng.dirichlet(np.full(40, 0.5), size=3000)
    library = rng.integers(500, 3000, size=(3000, 1)).astype(float)
    theta = rng.uniform(0.5, 5.0, size=40)
    observed = rng.poisson(rng.gamma(theta, proportions * library / theta))
    stat_observed = sv.evaluate.mean_log_expression(AnnData(X=observed.astype(np.float32)))
    stat_sampled = sampled_mean_log_expression(proportions, library, theta, 5, random_state=1)
    assert np.abs(stat_observed - stat_sampled).max() < 0.15  # about 4 standard errors
    # log1p of the expected proportions is a different (larger) quantity for sparse genes
    expected = np.log1p(1e4 * proportions).mean(axis=0)
    assert np.abs(expected - stat_observed).max() > 0.3


def test_combination_model_saves_and_loads(trained_pairs, tmp_path):
    model, train, _ = trained_pairs
    model.save(tmp_path / "model", save_anndata=False)
    loaded = sv.SparseVAE.load(tmp_path / "model", adata=train.copy())
    assert loaded.combination_delimiter == "+"
    assert loaded.perturbation_names == model.perturbation_names
    shifts = model.get_combination_shift("P2+P3")
    assert np.allclose(loaded.get_combination_shift("P2+P3"), shifts)


def test_transfer_teaches_a_new_single_that_then_combines(trained_pairs):
    model, train, _ = trained_pairs
    new = train[train.obs["perturbation"] == "P5"].copy()
    new.obs["perturbation"] = "PX"
    transferred = model.transfer(new)
    assert transferred.perturbation_names == [*model.perturbation_names, "PX"]
    pair = new.copy()
    pair.obs["perturbation"] = "P0+PX"
    assert np.isfinite(transferred.get_interventional_nll(pair, n_particles=3)).all()
    only_in_pairs = pair.copy()
    only_in_pairs.obs["perturbation"] = "P1+PY"
    with pytest.raises(ValueError, match="PY"):
        transferred.transfer(only_in_pairs)


# ---- predicted cells for the field's scorers ------------------------------------------------
def test_predict_perturbations_returns_counts_beside_the_control_cells(trained_pairs):
    model, train, _ = trained_pairs
    control = train[train.obs["perturbation"] == "control"]
    n_control = control.n_obs
    predicted = model.predict_perturbations(["P0", "P2+P3"])  # a seen single, a zero-shot pair
    assert predicted.n_obs == 3 * n_control and list(predicted.var_names) == list(train.var_names)
    labels = predicted.obs["perturbation"].astype(str)
    assert labels.value_counts().to_dict() == {
        "P0": n_control,
        "P2+P3": n_control,
        "control": n_control,
    }
    assert (predicted.obs["predicted"] == (labels != "control")).all()
    assert predicted.obs_names.is_unique
    assert np.array_equal(predicted.X, np.round(predicted.X)) and (predicted.X >= 0).all()
    observed = predicted[labels == "control"]
    counts = control.X.toarray() if hasattr(control.X, "toarray") else control.X
    np.testing.assert_array_equal(observed.X, np.asarray(counts, dtype=np.float32))
    # expected counts: the base cells' library sizes moved by the depth model
    library = np.asarray(control.X.sum(axis=1), dtype=np.float64).ravel()
    expected = predicted[labels == "P0"].layers["expected"].sum(axis=1)
    moved = library * np.exp(_log_library_shift(train, "P0"))
    np.testing.assert_allclose(expected, moved, rtol=1e-4)
    same_depth = model.predict_perturbations("P0", depth="observed", include_control=False)
    np.testing.assert_allclose(same_depth.layers["expected"].sum(axis=1), library, rtol=1e-4)
    assert same_depth.n_obs == n_control
    # draws of the expected counts: means agree over cells, and the seed fixes them
    again = model.predict_perturbations(["P0", "P2+P3"])
    np.testing.assert_array_equal(again.X, predicted.X)
    sample = model.predict_perturbations("P0", n_cells=5, include_control=False)
    assert sample.n_obs == 5 and sample.obs["base_cell"].isin(control.obs_names).all()
    assert predicted.uns["sparsevae_prediction"]["depth"] == "model"


def test_predicted_control_cells_are_the_models_own_reference(trained_pairs):
    """``control_cells="predicted"``: the control group is drawn from the model like the
    predicted cells, so the change between the groups' mean log1p(CP10k) is the model's own
    effect, that of ``get_treatment_effect`` (same statistic, fewer draws).
    """
    model, train, _ = trained_pairs
    control = train[train.obs["perturbation"] == "control"].copy()
    observed = model.predict_perturbations("P0", control)
    predicted = model.predict_perturbations("P0", control, control_cells="predicted")
    labels = predicted.obs["perturbation"].astype(str).to_numpy()
    assert predicted.obs["predicted"].all() and (labels == "control").sum() == control.n_obs
    # the perturbed cells are the same draws either way; only the control group differs
    np.testing.assert_array_equal(predicted[labels == "P0"].X, observed[labels == "P0"].X)
    assert not np.array_equal(predicted[labels == "control"].X, observed[labels == "control"].X)
    assert np.array_equal(predicted.X, np.round(predicted.X))
    assert predicted.uns["sparsevae_prediction"]["control_cells"] == "predicted"

    # the expected counts of both groups are the model's: their change is get_treatment_effect's
    def mean_log(group):
        expected = predicted[labels == group].layers["expected"].astype(np.float64)
        return np.log1p(1e4 * expected / expected.sum(axis=1, keepdims=True)).mean(axis=0)

    effect = model.get_treatment_effect(
        control, "P0", statistic="expected", library_size=1e4, log1p=True
    ).to_numpy()
    np.testing.assert_allclose(mean_log("P0") - mean_log("control"), effect, atol=1e-4)
    # (the observed control group's expected counts are its observed counts: not the model's)
    assert predicted[labels == "control"].layers["expected"].sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"perturbations": ["control"]}, "includes the control label"),
        ({"perturbations": ["P0", "P0"]}, "repeats"),
        ({"perturbations": []}, "perturbations is empty"),
        ({"perturbations": "P9"}, "P9"),
        ({"perturbations": "P0", "n_cells": 0}, "n_cells=0 must be a positive integer"),
        ({"perturbations": "P0", "depth": "sequenced"}, "depth='sequenced' is unknown"),
        ({"perturbations": "P0", "control_cells": "real"}, "control_cells='real' is unknown"),
    ],
)
def test_predict_perturbations_refuses_bad_input(trained_pairs, kwargs, message):
    model, _, _ = trained_pairs
    with pytest.raises(ValueError, match=message):
        model.predict_perturbations(**kwargs)
