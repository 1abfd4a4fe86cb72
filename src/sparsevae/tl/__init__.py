"""Scanpy-style tools: functions that take ``adata`` first and write results into it."""

from ._cluster import cluster_perturbations
from ._results import write_results
from ._stability import edge_stability

__all__ = ["cluster_perturbations", "edge_stability", "write_results"]
