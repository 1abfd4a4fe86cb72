"""Scanpy-style tools: functions that take ``adata`` first and write results into it."""

from ._cluster import cluster_perturbations
from ._results import write_results

__all__ = ["cluster_perturbations", "write_results"]
