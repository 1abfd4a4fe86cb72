"""The prior registry: ``SparseVAE(prior=...)``, the CLI's ``--prior`` and ``make_prior``.

Adding a prior is one subclass of :class:`~sparsevae.module.PerturbationPrior` and one line
of :data:`PRIOR_CLASSES`.
"""

from __future__ import annotations

from sparsevae._constants import canonical_name

from ._label_priors import CLAPPrior, DenseVariancePrior
from ._masked_priors import L1Prior, SpikeSlabPrior
from ._penalties import BetaTCVAEPrior, DIPVAEPrior, FactorVAEPrior
from ._prior_base import DensePrior, PerturbationPrior, StandardPrior
from ._sams import SAMSPrior

__all__ = ["PRIOR_CLASSES", "check_prior_kwargs", "make_prior", "prior_options"]

#: The registry: prior name -> class, keyed by each class's ``name`` (spelled once, in
#: :data:`sparsevae._constants.PRIORS`). ``SparseVAE(prior=...)`` and the CLI read it.
PRIOR_CLASSES: dict[str, type[PerturbationPrior]] = {
    cls.name: cls
    for cls in (
        StandardPrior,
        DensePrior,
        DenseVariancePrior,
        L1Prior,
        SpikeSlabPrior,
        BetaTCVAEPrior,
        DIPVAEPrior,
        FactorVAEPrior,
        CLAPPrior,
        SAMSPrior,
    )
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
    ``estimator``, ``sparsity``, and ``prior_kwargs`` such as ``logit_init``) go to the priors
    that have them.
    """
    name = canonical_name(name, "prior")
    if name not in PRIOR_CLASSES:
        raise ValueError(f"Unknown prior {name!r}; choose one of {sorted(PRIOR_CLASSES)}.")
    return PRIOR_CLASSES[name].from_options(n_perturbations, n_latent, control_index, **options)


#: Options every prior receives from SparseVAE's own arguments (ignored by those without them).
_MODEL_OPTIONS = {"alpha", "temperature", "estimator", "sparsity"}


def prior_options(name: str) -> list[str]:
    """The options of prior ``name`` that ``prior_kwargs`` may set (its ``__init__``'s)."""
    return [n for n in PRIOR_CLASSES[name].option_names() if n not in _MODEL_OPTIONS]


def check_prior_kwargs(name: str, prior_kwargs: dict | None) -> None:
    """Raise if ``prior_kwargs`` holds an option that prior ``name`` does not have."""
    if not prior_kwargs:
        return
    if name not in PRIOR_CLASSES:
        raise ValueError(f"Unknown prior {name!r}; choose one of {sorted(PRIOR_CLASSES)}.")
    unknown = sorted(set(prior_kwargs) - set(prior_options(name)))
    if unknown:
        raise ValueError(
            f"prior_kwargs {unknown} are not options of prior={name!r}; its options are "
            f"{prior_options(name) or 'none'} (alpha, temperature and sparsity are SparseVAE "
            "arguments)."
        )
