"""Plots that read what ``sparsevae.tl`` (or a model getter) wrote.

Each takes ``show``, ``save`` and ``ax``.
"""

from ._clusters import perturbation_clusters
from ._effects import effect_metrics
from ._history import training_history
from ._latent import latent_genes
from ._mask import graph_comparison, mask_heatmap
from ._nll import interventional_nll
from ._stability import edge_stability

__all__ = [
    "edge_stability",
    "effect_metrics",
    "graph_comparison",
    "interventional_nll",
    "latent_genes",
    "mask_heatmap",
    "perturbation_clusters",
    "training_history",
]
