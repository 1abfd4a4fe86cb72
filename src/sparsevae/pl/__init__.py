"""Plots that read what ``sparsevae.tl`` wrote; each takes ``show``, ``save`` and ``ax``."""

from ._clusters import perturbation_clusters
from ._mask import graph_comparison, mask_heatmap
from ._nll import interventional_nll

__all__ = ["graph_comparison", "interventional_nll", "mask_heatmap", "perturbation_clusters"]
