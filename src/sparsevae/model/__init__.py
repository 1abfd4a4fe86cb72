"""AnnData-facing models."""

from ._graph_warning import EmptyGraphWarning
from ._guards import NonFiniteLossError
from ._model import SparseVAE, default_max_epochs
from ._safe_load import UnsafeModelFileError
from ._training_plan import SparseVAETrainingPlan

__all__ = [
    "EmptyGraphWarning",
    "NonFiniteLossError",
    "SparseVAE",
    "SparseVAETrainingPlan",
    "UnsafeModelFileError",
    "default_max_epochs",
]
