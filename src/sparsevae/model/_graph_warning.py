"""A warning after training when the perturbation→latent graph is (nearly) empty.

On real screens with few cells per perturbation, the default sparsity (``alpha`` = the number
of perturbations) can prune most edges: the model then reports no target for most
perturbations, which reads like "no effect" when it means "an effect below what the prior
lets through". :func:`warn_if_graph_is_empty` says so, with the counts, right after
:meth:`~sparsevae.SparseVAE.train`.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

#: The warning fires when more than this fraction of the perturbations has no target.
EMPTY_GRAPH_FRACTION = 0.5


class EmptyGraphWarning(UserWarning):
    """Most perturbations have no target latent after training (the prior pruned them)."""


def warn_if_graph_is_empty(
    model: BaseModelClass, fraction: float = EMPTY_GRAPH_FRACTION, stacklevel: int = 3
) -> None:
    """Warn when more than ``fraction`` of the perturbations have no target latent.

    Only priors with masks (``"spike_slab"``, ``"l1"``) are checked: the mask-free priors
    (``"dense"``, ``"standard"``) read their graph from the largest shifts and always have
    targets. Targets are those of :meth:`~sparsevae.SparseVAE.get_intervention_targets`
    (``pi > 0.5``).

    Parameters
    ----------
    model
        A trained :class:`~sparsevae.SparseVAE`.
    fraction
        Largest fraction of perturbations without a target that passes silently.
    stacklevel
        Passed to :func:`warnings.warn` (3: the caller of ``train``).

    Warns
    -----
    EmptyGraphWarning
        (a ``UserWarning``) naming how many perturbations have no target, the ``alpha`` of
        the prior, and what to try: :func:`sparsevae.tl.edge_stability` or a smaller
        ``alpha``.
    """
    prior = model.module.prior
    alpha = prior.hyperparameters().get("alpha")
    if alpha is None:  # no sparsity prior (iVAE, VAE): every perturbation has its top latents
        return
    targets = model.get_intervention_targets()
    n_perturbations = targets.shape[0]
    if n_perturbations == 0:
        return
    n_without = int((~targets.to_numpy().any(axis=1)).sum())
    if n_without <= fraction * n_perturbations:
        return
    warnings.warn(
        f"{n_without} of {n_perturbations} perturbations have no target latent (pi > 0.5): "
        f"their effects fell below the sparsity prior at alpha = {alpha:g} "
        f"(prior={prior.name!r}), so the graph says little about them. To see which edges "
        "hold across seeds and sparsity levels, run sv.tl.edge_stability(adata, "
        "perturbation_key=..., alphas=[...]); or train with a smaller alpha "
        "(SparseVAE(adata, alpha=...)).",
        EmptyGraphWarning,
        stacklevel=stacklevel,
    )
