"""Pure torch modules: the VAE and its perturbation priors."""

from ._module import SparseShiftVAE
from ._prior_base import Minibatch
from ._priors import (
    BetaTCVAEPrior,
    CLAPPrior,
    DensePrior,
    DenseVariancePrior,
    DIPVAEPrior,
    FactorVAEPrior,
    L1Prior,
    MaskedPrior,
    PerturbationPrior,
    SpikeSlabPrior,
    StandardPrior,
    make_prior,
)

__all__ = [
    "BetaTCVAEPrior",
    "CLAPPrior",
    "DIPVAEPrior",
    "DensePrior",
    "DenseVariancePrior",
    "FactorVAEPrior",
    "L1Prior",
    "MaskedPrior",
    "Minibatch",
    "PerturbationPrior",
    "SparseShiftVAE",
    "SpikeSlabPrior",
    "StandardPrior",
    "make_prior",
]
