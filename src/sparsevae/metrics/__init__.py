"""Identifiability metrics: MCC, linear R², perturbation→latent graph scores."""

from ._identifiability import (
    graph_scores,
    linear_r2,
    match_latents,
    matched_graph,
    mean_correlation_coefficient,
)

__all__ = [
    "graph_scores",
    "linear_r2",
    "match_latents",
    "matched_graph",
    "mean_correlation_coefficient",
]
