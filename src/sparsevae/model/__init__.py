"""AnnData-facing models."""

from ._guards import NonFiniteLossError
from ._model import SparseVAE
from ._training_plan import SparseVAETrainingPlan

__all__ = ["NonFiniteLossError", "SparseVAE", "SparseVAETrainingPlan"]
