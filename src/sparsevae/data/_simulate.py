"""The paper's sparse mechanism shift simulation, with the ground truth stored in the AnnData."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

CONTROL_LABEL = "control"


def _orthogonal(rng: np.random.Generator, n_in: int, n_out: int) -> np.ndarray:
    """An ``n_in × n_out`` matrix with orthonormal rows or columns (QR of a Gaussian)."""
    q, r = np.linalg.qr(rng.normal(size=(max(n_in, n_out), min(n_in, n_out))))
    q = q * np.sign(np.diag(r))  # make the draw uniform over orthogonal matrices
    return q if n_in >= n_out else q.T


def _random_decoder(
    rng: np.random.Generator, n_latent: int, n_genes: int, width: int, negative_slope: float
) -> list[np.ndarray]:
    """Weights of a 3-hidden-layer leaky-ReLU MLP with orthogonal, variance-preserving layers."""
    gain = np.sqrt(2.0 / (1.0 + negative_slope**2))
    dims = [n_latent, width, width, width, n_genes]
    return [
        _orthogonal(rng, d_in, d_out) * gain * np.sqrt(2.0 / (d_in + d_out))
        for d_in, d_out in itertools.pairwise(dims)
    ]


# Counts are drawn this many values (cells × genes) at a time, so that a screen of 10^6 cells ×
# 2,000 genes is simulated straight into a sparse matrix without a dense copy.
_CHUNK_VALUES = 2**23


def _logits(z: np.ndarray, weights: list[np.ndarray], negative_slope: float) -> np.ndarray:
    """The random decoder's gene logits (before standardisation)."""
    h = z
    for w in weights[:-1]:
        h = h @ w
        h = np.where(h > 0, h, negative_slope * h)
    return h @ weights[-1]


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)


def _logit_sd(z: np.ndarray, weights: list[np.ndarray], negative_slope: float, rows: int) -> float:
    """Standard deviation of all logits, computed ``rows`` cells at a time (float64 sums)."""
    total = total_sq = 0.0
    for start in range(0, z.shape[0], rows):
        logits = _logits(z[start : start + rows], weights, negative_slope)
        total += logits.sum()
        total_sq += np.square(logits).sum()
    n = z.shape[0] * weights[-1].shape[1]
    return float(np.sqrt(max(total_sq / n - (total / n) ** 2, 0.0)))


def _sample_counts(
    rng: np.random.Generator,
    z: np.ndarray,
    weights: list[np.ndarray],
    negative_slope: float,
    library: np.ndarray,
) -> sparse.csr_matrix:
    """Poisson counts of every cell as CSR: logits standardised over all cells, softmax over genes.

    Cells are processed in chunks of about ``_CHUNK_VALUES`` values; data that fit in one chunk
    are simulated in a single pass (the exact numbers earlier releases produced).
    """
    n_cells, n_genes = z.shape[0], weights[-1].shape[1]
    rows = max(1, _CHUNK_VALUES // n_genes)
    if n_cells <= rows:
        logits = _logits(z, weights, negative_slope)
        scale = logits.std()
    else:
        logits, scale = None, _logit_sd(z, weights, negative_slope, rows)
    blocks = []
    for start in range(0, n_cells, rows):
        block = (
            logits
            if logits is not None
            else _logits(z[start : start + rows], weights, negative_slope)
        )
        probs = _softmax(block / scale)
        counts = rng.poisson(library[start : start + rows] * probs).astype(np.float32)
        # A cell needs at least one count (its log library size is used by the model).
        empty = counts.sum(axis=1) == 0
        counts[empty, rng.integers(n_genes, size=int(empty.sum()))] = 1.0
        blocks.append(sparse.csr_matrix(counts))
    return blocks[0] if len(blocks) == 1 else sparse.vstack(blocks, format="csr")


def simulate_sparse_shift(
    n_perturbations: int = 100,
    n_cells_per_perturbation: int = 250,
    n_latent: int = 15,
    n_genes: int = 100,
    random_state: int | None = 0,
    *,
    n_targets: tuple[int, int] = (1, 3),
    shift_mean: float = 5.0,
    shift_sd: float = 0.5,
    library_size: float = 1e5,
    library_log_sd: float = 0.0,
    n_control_cells: int | None = None,
    decoder_width: int = 40,
    negative_slope: float = 0.2,
) -> AnnData:
    """Simulate a perturbation screen where each perturbation shifts a few latent variables.

    Follows Lopez et al. (2023): perturbation ``a`` targets between ``n_targets[0]`` and
    ``n_targets[1]`` distinct latents (drawn without replacement) and shifts each by a random
    sign × Normal(``shift_mean``, ``shift_sd``); ``z ~ N(shift_a, I)``; a random 3-layer
    leaky-ReLU MLP with orthogonal weights maps ``z`` to gene logits; softmax over genes;
    counts ~ Poisson(library × probabilities). Control cells have no shift.

    Parameters
    ----------
    n_perturbations
        Number of perturbations K (control excluded).
    n_cells_per_perturbation
        Cells per perturbation.
    n_latent
        Number of latent variables.
    n_genes
        Number of genes (at least ``decoder_width``).
    random_state
        Seed of the random generator; the same seed gives the same data.
    n_targets
        Inclusive range of the number of latents each perturbation targets.
    shift_mean, shift_sd
        Absolute shift of a targeted latent ~ Normal(shift_mean, shift_sd).
    library_size
        Median total counts per cell.
    library_log_sd
        Standard deviation of log library size across cells (0: all cells equal).
    n_control_cells
        Number of unperturbed cells labelled ``"control"`` (default: as many as one
        perturbation has; 0 for none).
    decoder_width, negative_slope
        Width and leaky-ReLU slope of the random decoder.

    Returns
    -------
    AnnData with integer counts in ``X`` (float32, CSR), ``obs["perturbation"]`` (categorical,
    ``"control"`` first, then ``"P000"``...), ``obsm["z_true"]``, ``uns["true_targets"]`` (0/1
    DataFrame perturbations × latents) and ``uns["true_shift"]`` (DataFrame), plus the
    simulation parameters in ``uns["simulation"]``.

    Examples
    --------
    >>> adata = simulate_sparse_shift(n_perturbations=10, n_cells_per_perturbation=50,
    ...                               n_latent=5, random_state=1)
    >>> adata.uns["true_targets"].sum(axis=1).between(1, 3).all()
    True
    """
    low, high = n_targets
    if not 1 <= low <= high <= n_latent:
        raise ValueError(
            f"n_targets={n_targets} must satisfy 1 <= low <= high <= n_latent ({n_latent})."
        )
    if n_genes < decoder_width or n_latent > decoder_width:
        raise ValueError(
            f"Need n_latent <= decoder_width <= n_genes for an injective decoder; got "
            f"n_latent={n_latent}, decoder_width={decoder_width}, n_genes={n_genes}."
        )
    if n_perturbations < 1 or n_cells_per_perturbation < 1:
        raise ValueError("n_perturbations and n_cells_per_perturbation must be positive.")
    rng = np.random.default_rng(random_state)
    n_control_cells = n_cells_per_perturbation if n_control_cells is None else n_control_cells

    targets = np.zeros((n_perturbations, n_latent))
    for a in range(n_perturbations):
        chosen = rng.choice(n_latent, size=rng.integers(low, high + 1), replace=False)
        targets[a, chosen] = 1.0
    signs = rng.choice([-1.0, 1.0], size=targets.shape)
    shift = targets * signs * rng.normal(shift_mean, shift_sd, size=targets.shape)

    width = len(str(n_perturbations - 1))
    names = [f"P{a:0{width}d}" for a in range(n_perturbations)]
    labels = np.repeat(names, n_cells_per_perturbation)
    means = np.repeat(shift, n_cells_per_perturbation, axis=0)
    if n_control_cells > 0:
        labels = np.concatenate([np.repeat(CONTROL_LABEL, n_control_cells), labels])
        means = np.concatenate([np.zeros((n_control_cells, n_latent)), means])
    z = means + rng.normal(size=means.shape)

    weights = _random_decoder(rng, n_latent, n_genes, decoder_width, negative_slope)
    library = library_size * np.exp(library_log_sd * rng.normal(size=(z.shape[0], 1)))
    counts = _sample_counts(rng, z, weights, negative_slope, library)

    categories = ([CONTROL_LABEL] if n_control_cells > 0 else []) + names
    obs = pd.DataFrame(
        {"perturbation": pd.Categorical(labels, categories=categories)},
        index=[f"cell_{i}" for i in range(z.shape[0])],
    )
    var = pd.DataFrame(index=[f"gene_{g}" for g in range(n_genes)])
    latent_names = [f"latent_{i}" for i in range(n_latent)]
    adata = AnnData(X=counts, obs=obs, var=var)
    adata.obsm["z_true"] = z.astype(np.float32)
    adata.uns["true_targets"] = pd.DataFrame(
        targets.astype(np.int64), index=names, columns=latent_names
    )
    adata.uns["true_shift"] = pd.DataFrame(shift, index=names, columns=latent_names)
    adata.uns["simulation"] = {
        "n_perturbations": n_perturbations,
        "n_cells_per_perturbation": n_cells_per_perturbation,
        "n_latent": n_latent,
        "n_genes": n_genes,
        "random_state": -1 if random_state is None else int(random_state),
        "n_targets": list(n_targets),
        "shift_mean": shift_mean,
        "shift_sd": shift_sd,
        "library_size": library_size,
        "library_log_sd": library_log_sd,
        "n_control_cells": n_control_cells,
    }
    return adata
