"""The one definition of a perturbation's mean latent shift, and the top-n graph readout.

**Mean latent shift.** A category's shift is the mean posterior mean of the cells labelled
with exactly that category minus a reference (:func:`latent_shifts`). The reference
(:func:`shift_reference`) is the mean of the control cells when there are control cells;
without them it is the per-latent median of the perturbations' mean latents, the *sparsest
origin*: nothing in the data places the origin then (the decoder's first-layer bias absorbs
any translation, as its weights absorb any rotation), and the median minimises the L1 norm of
the shifts, so the perturbations that leave a latent alone (most of them, in a sparse graph)
share its origin and get no shift there. Measured from the mean of all cells (or from 0) every
perturbation would shift every latent a little.

Every shift of the package is this one: the in-training rotation
(:func:`sparsevae.module._rotation.mean_shifts`, which moves the latent origin to this
reference when there are no control cells), the empirical shifts of a model
(``SparseVAE.knowledge.empirical_shifts``: predictions from the data, the shifts of priors that
learn none) and :func:`sparsevae.evaluate.latent_mean_shifts` (the two-stage rival). It works on
arrays of category means (numpy); callers with torch tensors convert.

**Top-n readout** (:func:`top_abs`): the graph of a model without masks, the ``n_top``
largest ``|shift|`` of each perturbation (the paper's readout for iVAE and VAE, and the
``"top-2"`` readout of the two-stage rival).

This module imports nothing from the package: every layer may use it.
"""

from __future__ import annotations

import warnings

import numpy as np


def shift_reference(means: np.ndarray, control: np.ndarray | None = None) -> np.ndarray:
    """The origin that shifts are measured from, shape (n_latent,).

    Parameters
    ----------
    means
        The perturbations' mean latents, (n_perturbations, n_latent); a row of NaN (a
        perturbation without cells) is ignored.
    control
        The control cells' mean latent, (n_latent,), or ``None`` when there are no control
        cells.

    Returns
    -------
    ``control`` when given; else the per-latent median of ``means`` over the rows with cells
    (the midpoint of the two middle values for an even number of rows; any point between them
    is as sparse). NaN where no row has cells.
    """
    if control is not None:
        return np.asarray(control)
    means = np.asarray(means)
    with warnings.catch_warnings():  # a latent without any finite mean: NaN, as documented
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(means, axis=0) if means.shape[0] else np.full(means.shape[1], np.nan)


def latent_shifts(means: np.ndarray, control: np.ndarray | None = None) -> np.ndarray:
    """Each perturbation's mean latent shift: ``means`` minus :func:`shift_reference`.

    ``means``: the perturbations' mean latents, (n_perturbations, n_latent), NaN rows for
    perturbations without cells (their shifts stay NaN); ``control``: the control cells' mean
    latent or ``None`` (no control cells: the per-latent median of ``means``). Returns the
    shifts in the shape of ``means``.
    """
    means = np.asarray(means)
    return means - shift_reference(means, control)


def top_abs(shifts: np.ndarray, n_top: int) -> np.ndarray:
    """The ``n_top`` largest ``|shift|`` of each row, as a bool mask of the shape of ``shifts``.

    Ties go to the first latent. A NaN shift (not known: no cells) is never a target, and a
    row has at most as many targets as known shifts.
    """
    shifts = np.asarray(shifts)
    magnitude = np.nan_to_num(np.abs(shifts), nan=-1.0)
    n_top = max(0, min(int(n_top), shifts.shape[1]))
    order = np.argsort(-magnitude, axis=1, kind="stable")[:, :n_top]
    targets = np.zeros(shifts.shape, dtype=bool)
    np.put_along_axis(targets, order, True, axis=1)
    return targets & ~np.isnan(shifts)
