"""The prior registry: ``SparseVAE(prior=...)``, the CLI's ``--prior`` and ``make_prior``.

Adding a prior is one subclass of :class:`~sparsevae.module.PerturbationPrior` and one line
of :data:`PRIOR_CLASSES`.
"""

from __future__ import annotations

from sparsevae._constants import PRIORS

from ._masked_priors import L1Prior, MaskedPrior, SpikeSlabPrior
from ._prior_base import DensePrior, PerturbationPrior, StandardPrior

__all__ = [
    "PRIOR_CLASSES",
    "DensePrior",
    "L1Prior",
    "MaskedPrior",
    "PerturbationPrior",
    "SpikeSlabPrior",
    "StandardPrior",
    "make_prior",
]

#: The registry: prior name -> class. ``SparseVAE(prior=...)`` and the CLI read it.
PRIOR_CLASSES: dict[str, type[PerturbationPrior]] = {
    PRIORS.STANDARD: StandardPrior,
    PRIORS.DENSE: DensePrior,
    PRIORS.L1: L1Prior,
    PRIORS.SPIKE_SLAB: SpikeSlabPrior,
}


def make_prior(
    name: str,
    n_perturbations: int,
    n_latent: int,
    control_index: int | None,
    **options,
) -> PerturbationPrior:
    """Build the prior called ``name`` from the registry.

    ``options`` (``alpha``: the Beta parameter or the L1 weight, ``temperature``,
    ``logit_init``, ``estimator``) go to the priors that have them.
    """
    if name not in PRIOR_CLASSES:
        raise ValueError(f"Unknown prior {name!r}; choose one of {sorted(PRIOR_CLASSES)}.")
    return PRIOR_CLASSES[name].from_options(n_perturbations, n_latent, control_index, **options)
