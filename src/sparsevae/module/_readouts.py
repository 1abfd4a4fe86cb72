"""The readouts of a prior: the shifts and the perturbation→latent graph the getters report.

A service over the prior protocol (:class:`~sparsevae.module.PerturbationPrior`): no prior
implements these; each declares what they are read from.

- :meth:`~PerturbationPrior.learned_shifts`: the shift each perturbation's edges have when on
  (``mu``), or ``None`` for priors that learn none (VAE and the penalty baselines), whose
  shifts are then the data's (the ``empirical`` callable, the package's one definition
  :func:`sparsevae._shifts.latent_shifts`);
- :meth:`~PerturbationPrior.mask_probabilities` and :attr:`~PerturbationPrior.has_masks`:
  masked priors report the shift where ``pi > 0.5`` and the graph ``pi > threshold``; the
  others report every learned shift and the ``n_top`` largest ``|shift|`` per perturbation
  (the paper's readout);
- :meth:`~PerturbationPrior.readout_latents`: which latents can be targets (CLAP: its core).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sparsevae._shifts import top_abs

from ._prior_base import PerturbationPrior

#: The shift readouts, by name (``SparseVAE.knowledge.category_shifts``).
SHIFT_READOUTS = ("evaluation_shifts", "edge_shifts")


def edge_shifts(prior: PerturbationPrior, empirical: Callable[[], torch.Tensor]) -> torch.Tensor:
    """How far each category moves each latent when the edge is on, (n_categories, n_latent).

    ``empirical`` returns the data's mean latent shifts; it is called only for priors that
    learn no shift of their own.
    """
    learned = prior.learned_shifts()
    return empirical() if learned is None else learned


def evaluation_shifts(
    prior: PerturbationPrior, empirical: Callable[[], torch.Tensor]
) -> torch.Tensor:
    """The shift each category's prior mean has at evaluation, (n_categories, n_latent).

    Masked priors: the edge shift where ``pi > 0.5``, else 0. Others: the edge shift.
    """
    shifts = edge_shifts(prior, empirical)
    if prior.has_masks:
        shifts = shifts * (prior.mask_probabilities() > 0.5).to(shifts.dtype)
    return shifts


def category_shifts(
    prior: PerturbationPrior, readout: str, empirical: Callable[[], torch.Tensor]
) -> torch.Tensor:
    """The shift ``readout`` (one of :data:`SHIFT_READOUTS`) of every category."""
    if readout not in SHIFT_READOUTS:
        raise ValueError(f"readout={readout!r}; choose one of {SHIFT_READOUTS}.")
    read = evaluation_shifts if readout == "evaluation_shifts" else edge_shifts
    return read(prior, empirical)


def targets(
    prior: PerturbationPrior, shifts: torch.Tensor, threshold: float, n_top: int
) -> torch.Tensor:
    """The perturbation→latent graph, bool (n_categories, n_latent).

    Masked priors: ``pi > threshold``. Others: the ``n_top`` largest ``|shift|`` of
    ``shifts`` (:func:`evaluation_shifts`) per row among :meth:`readout_latents` (NaN rows:
    none), the package's one top-n readout :func:`sparsevae._shifts.top_abs`.
    """
    if prior.has_masks:
        return prior.mask_probabilities() > threshold
    allowed = prior.readout_latents()
    values = shifts.detach().to(device="cpu", dtype=torch.float64)
    if allowed is not None:
        values = values[:, allowed.cpu()]
    picked = torch.as_tensor(top_abs(values.numpy(), n_top))
    if allowed is not None:
        full = torch.zeros(shifts.shape, dtype=torch.bool)
        full[:, allowed.cpu()] = picked
        picked = full
    return picked.to(shifts.device)
