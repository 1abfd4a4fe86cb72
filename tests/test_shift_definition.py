"""One definition of a perturbation's mean latent shift, and of the top-n graph readout.

The in-training rotation (``mean_shifts`` from sums and counts), a model's empirical shifts
(``SparseVAE.knowledge.empirical_shifts``) and the two-stage rival
(``sv.evaluate.latent_mean_shifts``)
all measure the same shift: the category's mean latent minus control's, or without control
cells minus the per-latent median of the perturbations' means (``sparsevae._shifts``).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from anndata import AnnData

import sparsevae as sv
from sparsevae._shifts import latent_shifts, shift_reference, top_abs
from sparsevae.model._training_plan import SparseVAETrainingPlan
from sparsevae.module import _readouts as readouts
from sparsevae.module._rotation import latent_shift_sums, mean_shifts, shift_origin

from .conftest import QUIET, small_simulation

#: Mean latents of four perturbations (2 cells each) and of control (3 cells): the median of
#: the perturbations' means per latent differs from the mean of all cells and from 0.
_MEANS = {
    "A": [4.0, 0.5, -1.0],
    "B": [0.5, 3.0, -1.0],
    "C": [0.5, 0.5, 6.0],
    "D": [1.0, 0.0, -1.5],
    "control": [0.2, -0.4, 0.3],
}
_PERTURBATIONS = ["A", "B", "C", "D"]


def _cells(with_control: bool):
    """A hand-made latent matrix and its labels: every category's cells spread about its mean."""
    rows, labels = [], []
    for name, mean in _MEANS.items():
        if name == "control" and not with_control:
            continue
        n = 3 if name == "control" else 2
        spread = np.linspace(-1.0, 1.0, n)[:, None] * np.array([[0.3, -0.2, 0.1]])
        rows.append(np.asarray(mean) + spread)
        labels += [name] * n
    return np.concatenate(rows), np.asarray(labels)


def _expected(with_control: bool) -> pd.DataFrame:
    means = pd.DataFrame(_MEANS).T
    reference = means.loc["control"] if with_control else means.loc[_PERTURBATIONS].median()
    return means.loc[_PERTURBATIONS] - reference


def _rotation_path(z, labels, with_control: bool) -> pd.DataFrame:
    """``mean_shifts`` from the sums and counts that ``latent_shift_sums`` would return.

    Rows: the perturbations, one without cells ("E"), then control last.
    """
    names = [*_PERTURBATIONS, "E"]
    sums = torch.zeros(len(names) + 1, z.shape[1], dtype=torch.float64)
    counts = torch.zeros(len(names) + 1, dtype=torch.float64)
    for row, name in enumerate([*names, "control"]):
        cells = labels == name
        sums[row] = torch.as_tensor(z[cells].sum(axis=0))
        counts[row] = float(cells.sum())
    shifts, rows = mean_shifts(sums, counts)
    assert rows.tolist() == [True] * 4 + [False]
    assert torch.equal(shifts[-1], torch.zeros(z.shape[1], dtype=torch.float64))  # no cells: 0
    return pd.DataFrame(shifts[:-1].numpy(), index=_PERTURBATIONS)


def _model_path(z, labels, with_control: bool, monkeypatch) -> pd.DataFrame:
    """``SparseVAE.knowledge.empirical_shifts`` of a model whose latents are ``z``."""
    rng = np.random.default_rng(0)
    adata = AnnData(
        X=rng.poisson(3.0, size=(len(labels), 8)).astype(np.float32),
        obs=pd.DataFrame({"perturbation": labels}, index=[f"c{i}" for i in range(len(labels))]),
    )
    control = "control" if with_control else None
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control=control)
    model = sv.SparseVAE(adata, n_latent=z.shape[1], n_hidden=8)
    monkeypatch.setattr(model, "get_latent_representation", lambda *args, **kwargs: z)
    shifts = model.knowledge.empirical_shifts()
    if with_control:
        np.testing.assert_array_equal(shifts[model.knowledge.control_index], 0.0)
    return pd.DataFrame(shifts[model.knowledge.perturbed_rows], index=model.perturbation_names)


@pytest.mark.parametrize("with_control", [True, False])
def test_the_three_paths_measure_the_same_shift(with_control, monkeypatch):
    z, labels = _cells(with_control)
    expected = _expected(with_control).to_numpy()
    control = "control" if with_control else None
    paths = {
        "rotation": _rotation_path(z, labels, with_control),
        "model": _model_path(z, labels, with_control, monkeypatch),
        "evaluate": sv.evaluate.latent_mean_shifts(z, labels, control),
    }
    for name, shifts in paths.items():
        assert list(shifts.index) == _PERTURBATIONS, name
        np.testing.assert_allclose(shifts.to_numpy(), expected, atol=1e-6, err_msg=name)


def test_without_control_the_reference_is_the_median_of_the_perturbation_means():
    z, labels = _cells(with_control=False)
    means = pd.DataFrame(z).groupby(labels).mean().to_numpy()
    shifts = sv.evaluate.latent_mean_shifts(z, labels)
    # an even number of perturbations: the midpoint of the two middle means, per latent
    np.testing.assert_allclose(means - shifts.to_numpy(), np.tile([0.75, 0.5, -1.0], (4, 1)))
    assert not np.allclose(np.median(means, axis=0), z.mean(axis=0))  # not the mean of cells
    np.testing.assert_allclose(shifts.median().to_numpy(), 0.0, atol=1e-12)
    # a perturbation without cells (NaN) is left out of the median and keeps a NaN shift
    with_empty = np.vstack([means, np.full(3, np.nan)])
    np.testing.assert_allclose(shift_reference(with_empty), [0.75, 0.5, -1.0])
    assert np.isnan(latent_shifts(with_empty)[-1]).all()
    # a "control" label that labels no cell is no control
    np.testing.assert_allclose(sv.evaluate.latent_mean_shifts(z, labels, "control"), shifts)
    # with control cells, control's mean is the reference
    np.testing.assert_array_equal(shift_reference(means, np.ones(3)), np.ones(3))


@pytest.mark.parametrize("control", ["control", None])
def test_after_the_rotation_the_prior_shifts_are_the_latents_shifts(control):
    """The rotation's mu, measured by the one definition in the new latent coordinates."""
    data = small_simulation()
    if control is None:
        data = data[data.obs["perturbation"] != "control"].copy()
    scvi.settings.seed = 0
    sv.SparseVAE.setup_anndata(data, perturbation_key="perturbation", control=control)
    model = sv.SparseVAE(data, n_latent=4, n_hidden=16)
    model.train(max_epochs=2, rotate_latents=False, **QUIET)
    module = model.module
    loader = model._make_data_loader(adata=data, batch_size=64)
    module.eval()
    sums, counts = latent_shift_sums(module, loader)
    before = model.get_latent_representation(data)
    plan = SimpleNamespace(
        module=module,
        trainer=SimpleNamespace(train_dataloader=loader, world_size=1, optimizers=[]),
        _last_good=SimpleNamespace(save=lambda module: None),
    )
    module.prior.start_training()  # masks not frozen: the rotation may run, as in training
    SparseVAETrainingPlan._rotate_latents(plan)
    module.eval()
    after = model.get_latent_representation(data)
    assert not np.allclose(after, before, atol=1e-3)  # it rotated
    labels = data.obs["perturbation"].astype(str).to_numpy()
    shifts = sv.evaluate.latent_mean_shifts(after, labels, control)
    mu = pd.DataFrame(module.prior.mu.detach().numpy(), index=model.knowledge.categories)
    np.testing.assert_allclose(mu.loc[shifts.index].to_numpy(), shifts.to_numpy(), atol=1e-4)
    if control is None:
        # the origin moved to the sparsest origin of the rotated means: their median is 0
        np.testing.assert_allclose(shifts.median().to_numpy(), 0.0, atol=1e-4)
        assert not np.allclose(shift_origin(sums, counts).numpy(), 0.0, atol=1e-2)
    else:
        # with control cells the origin stays: control's mean is rotated, not moved
        control_before = before[labels == "control"].mean(axis=0)
        control_after = after[labels == "control"].mean(axis=0)
        np.testing.assert_allclose(
            np.linalg.norm(control_after), np.linalg.norm(control_before), rtol=1e-4
        )


def test_top_abs_by_hand():
    shifts = np.array(
        [
            [4.0, -3.0, 1.0, 0.5],
            [0.1, 0.2, -6.0, 2.9],
            [1.0, -1.0, 1.0, 0.0],  # ties: the first latents
            [np.nan, 2.0, np.nan, np.nan],  # unknown shifts are no targets
            [np.nan] * 4,
        ]
    )
    np.testing.assert_array_equal(
        top_abs(shifts, 2),
        [[1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]],
    )
    assert top_abs(shifts, 9)[0].all() and not top_abs(shifts, 0).any()


def test_the_two_top_n_readouts_agree():
    rng = np.random.default_rng(0)
    shifts = np.round(rng.normal(size=(12, 5)), 1)  # rounding makes ties
    shifts[3, 1] = np.nan
    frame = pd.DataFrame(shifts)
    posthoc = sv.evaluate.shift_targets(frame, "top-2").to_numpy()
    prior = sv.module.DensePrior(n_perturbations=12, n_latent=5)
    model = readouts.targets(prior, torch.as_tensor(shifts, dtype=torch.float32), 0.5, 2).numpy()
    np.testing.assert_array_equal(posthoc, top_abs(shifts, 2))
    np.testing.assert_array_equal(model, top_abs(shifts, 2))
