"""Pure torch modules: the VAE and its perturbation priors."""

from ._label_priors import CLAPPrior, DenseVariancePrior
from ._masked_priors import L1Prior, MaskedPrior, SpikeSlabPrior
from ._module import SparseShiftVAE
from ._penalties import BetaTCVAEPrior, DIPVAEPrior, FactorVAEPrior
from ._prior_base import DensePrior, Minibatch, PerturbationPrior, StandardPrior
from ._priors import make_prior
from ._sams import SAMSPrior

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
    "SAMSPrior",
    "SparseShiftVAE",
    "SpikeSlabPrior",
    "StandardPrior",
    "make_prior",
]
