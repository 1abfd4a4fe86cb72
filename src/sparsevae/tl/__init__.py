"""Scanpy-style tools: functions that take ``adata`` first and write results into it."""

from ._results import write_results

__all__ = ["write_results"]
