"""Pure torch modules: the VAE and its perturbation priors."""

from ._module import SparseShiftVAE
from ._priors import (
    DensePrior,
    L1Prior,
    MaskedPrior,
    PerturbationPrior,
    SpikeSlabPrior,
    StandardPrior,
    make_prior,
)

__all__ = [
    "DensePrior",
    "L1Prior",
    "MaskedPrior",
    "PerturbationPrior",
    "SparseShiftVAE",
    "SpikeSlabPrior",
    "StandardPrior",
    "make_prior",
]
