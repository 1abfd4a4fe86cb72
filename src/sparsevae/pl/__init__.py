"""Plots that read what ``sparsevae.tl`` wrote; each takes ``show``, ``save`` and ``ax``."""

from ._mask import graph_comparison, mask_heatmap

__all__ = ["graph_comparison", "mask_heatmap"]
