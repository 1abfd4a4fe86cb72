"""AnnData-facing models."""

from ._model import SparseVAE
from ._training_plan import SparseVAETrainingPlan

__all__ = ["SparseVAE", "SparseVAETrainingPlan"]
