"""sparsevae: identifiable latent variables from Perturb-seq screens (sVAE+ on scvi-tools)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import data, evaluate, metrics, pl, tl
from .evaluate import CheckpointMismatchError
from .model import EmptyGraphWarning, NonFiniteLossError, SparseVAE, UnsafeModelFileError

try:
    __version__ = version("sparsevae")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

# The warning and errors the package raises for users, importable from the top level too.
__all__ = [
    "CheckpointMismatchError",
    "EmptyGraphWarning",
    "NonFiniteLossError",
    "SparseVAE",
    "UnsafeModelFileError",
    "data",
    "evaluate",
    "metrics",
    "pl",
    "tl",
]
