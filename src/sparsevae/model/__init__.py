"""AnnData-facing models."""

from ._graph_warning import EmptyGraphWarning
from ._guards import NonFiniteLossError
from ._knowledge import ModelKnowledge
from ._model import SparseVAE, default_max_epochs, default_n_layers
from ._safe_load import UnsafeModelFileError
from ._training_plan import SparseVAETrainingPlan

__all__ = [
    "EmptyGraphWarning",
    "ModelKnowledge",
    "NonFiniteLossError",
    "SparseVAE",
    "SparseVAETrainingPlan",
    "UnsafeModelFileError",
    "default_max_epochs",
    "default_n_layers",
]
