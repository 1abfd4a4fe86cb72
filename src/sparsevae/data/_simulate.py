"""The paper's sparse mechanism shift simulation, with the ground truth stored in the AnnData."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

CONTROL_LABEL = "control"
#: Delimiter of combination labels (``"P003+P017"``), as in
#: ``SparseVAE.setup_anndata(..., combination_delimiter="+")``.
COMBINATION_DELIMITER = "+"


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


def _logit_sd(z: np.ndarray, logits_of, rows: int) -> float:
    """Standard deviation of all logits, computed ``rows`` cells at a time (float64 sums)."""
    total = total_sq = 0.0
    n = 0
    for start in range(0, z.shape[0], rows):
        logits = logits_of(z[start : start + rows])
        total += logits.sum()
        total_sq += np.square(logits).sum()
        n += logits.size
    return float(np.sqrt(max(total_sq / n - (total / n) ** 2, 0.0)))


def _programme_logits(z: np.ndarray, baseline: np.ndarray, loadings: np.ndarray) -> np.ndarray:
    """Gene-programme decoder: log expression = gene baseline + sum of latent × loading."""
    return baseline + z @ loadings


def _gene_programmes(
    rng: np.random.Generator, n_latent: int, n_genes: int, programme_size: int, loading: float
) -> tuple[np.ndarray, np.ndarray]:
    """Baseline log expression per gene and each latent's programme of loadings.

    Baselines ~ N(0, 1.5) (expression spanning about three orders of magnitude, as in
    single-cell data); each latent loads on ``programme_size`` genes drawn at random
    (programmes may overlap), with loadings of random sign and magnitude ~ loading ×
    LogNormal(0, 0.5).
    """
    baseline = rng.normal(0.0, 1.5, size=n_genes)
    loadings = np.zeros((n_latent, n_genes))
    for i in range(n_latent):
        genes = rng.choice(n_genes, size=programme_size, replace=False)
        magnitude = loading * np.exp(0.5 * rng.normal(size=programme_size))
        loadings[i, genes] = rng.choice([-1.0, 1.0], size=programme_size) * magnitude
    return baseline, loadings


def _sample_counts(
    rng: np.random.Generator,
    z: np.ndarray,
    logits_of,
    n_genes: int,
    library: np.ndarray,
    inverse_dispersion: float | None = None,
    standardise: bool = True,
    scale: float | None = None,
) -> tuple[sparse.csr_matrix, float]:
    """Counts of every cell as CSR: softmax over genes of ``logits_of(z)`` times the library.

    ``standardise``: logits divided by their standard deviation over all cells (the paper's
    MLP decoder), or by ``scale`` if given (the same decoder for further cells). Poisson
    counts, or negative binomial ones (a Gamma-Poisson mixture with ``inverse_dispersion``
    theta, variance ``mean + mean^2 / theta``). Cells are processed in chunks of about
    ``_CHUNK_VALUES`` values; data that fit in one chunk are simulated in a single pass (the
    exact numbers earlier releases produced). Returns the counts and the scale the logits were
    divided by.
    """
    n_cells = z.shape[0]
    rows = max(1, _CHUNK_VALUES // n_genes)
    logits = None
    if not standardise:
        scale = 1.0
    if n_cells <= rows:
        logits = logits_of(z)
        if scale is None:
            scale = logits.std()
    elif scale is None:
        scale = _logit_sd(z, logits_of, rows)
    blocks = []
    for start in range(0, n_cells, rows):
        block = logits if logits is not None else logits_of(z[start : start + rows])
        mean = library[start : start + rows] * _softmax(block / scale)
        if inverse_dispersion is not None:
            mean = rng.gamma(inverse_dispersion, mean / inverse_dispersion)
        counts = rng.poisson(mean).astype(np.float32)
        # A cell needs at least one count (its log library size is used by the model).
        empty = counts.sum(axis=1) == 0
        counts[empty, rng.integers(n_genes, size=int(empty.sum()))] = 1.0
        blocks.append(sparse.csr_matrix(counts))
    counts = blocks[0] if len(blocks) == 1 else sparse.vstack(blocks, format="csr")
    return counts, float(scale)


def _choose_pairs(rng: np.random.Generator, n_perturbations: int, n_pairs: int) -> np.ndarray:
    """``n_pairs`` distinct unordered pairs of perturbations (rows ``i < j``), in sorted order."""
    first, second = np.triu_indices(n_perturbations, k=1)
    chosen = np.sort(rng.choice(first.size, size=n_pairs, replace=False))
    return np.stack([first[chosen], second[chosen]], axis=1)


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
    shift_distribution: str = "normal",
    noise: str = "poisson",
    inverse_dispersion: float = 5.0,
    decoder: str = "mlp",
    programme_size: int | None = None,
    programme_loading: float = 0.4,
    n_combinations: int = 0,
    n_cells_per_combination: int | None = None,
) -> AnnData:
    """Simulate a perturbation screen where each perturbation shifts a few latent variables.

    By default follows Lopez et al. (2023): perturbation ``a`` targets between
    ``n_targets[0]`` and ``n_targets[1]`` distinct latents (drawn without replacement) and
    shifts each by a random sign × Normal(``shift_mean``, ``shift_sd``); ``z ~ N(shift_a,
    I)``; a random 3-layer leaky-ReLU MLP with orthogonal weights maps ``z`` to gene logits;
    softmax over genes; counts ~ Poisson(library × probabilities). Control cells have no
    shift.

    Options reach screens that look like real ones (see :data:`sparsevae.data.REGIMES` for
    named settings): heavy-tailed effect sizes (``shift_distribution="lognormal"``), a
    gene-programme decoder (``decoder="programmes"``), negative-binomial counts
    (``noise="negative_binomial"``), a realistic depth and its spread (``library_size``,
    ``library_log_sd``) and control cells (``n_control_cells``). The defaults reproduce the
    data of earlier releases exactly.

    Combinations (``n_combinations``): distinct random pairs of perturbations ``A`` and ``B``,
    labelled ``"A+B"``, whose cells have ``z ~ N(shift_A + shift_B, I)``: the truth is additive
    in the latent space and goes through the same decoder (for the MLP, the same
    standardisation of the logits as the single perturbations' cells) and count model, so with
    a nonlinear decoder the pair's change of expression is not the sum of its singles'. Their
    cells are drawn after everything else: control and single-perturbation cells are the same
    with or without combinations.

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
        Width and leaky-ReLU slope of the random MLP decoder (``decoder="mlp"``).
    shift_distribution
        ``"normal"``: the absolute shift ~ Normal(shift_mean, shift_sd) (the paper).
        ``"lognormal"``: the absolute shift = shift_mean × exp(shift_sd × Normal(0, 1)),
        heavy-tailed with median
        ``shift_mean`` (in SD of the latent: 1-2 is a typical real effect).
    noise
        ``"poisson"`` (the paper) or ``"negative_binomial"`` (Gamma-Poisson with
        ``inverse_dispersion``: variance mean + mean^2 / theta).
    inverse_dispersion
        Theta of the negative binomial (one value for every gene; ``noise`` above).
    decoder
        ``"mlp"`` (the paper: a random MLP, logits standardised) or ``"programmes"``: log
        expression = a gene baseline ~ N(0, 1.5) + sum over latents of z × its loadings on a
        programme of ``programme_size`` random genes (loadings of random sign, magnitude
        ``programme_loading`` × LogNormal(0, 0.5)), so one latent moves a gene module.
    programme_size
        Genes per programme (default: ``max(5, n_genes // (2 * n_latent))``).
    programme_loading
        Median absolute loading: the change of a programme gene's log expression per SD of its
        latent.
    n_combinations
        Number of distinct pairs of perturbations with cells of their own (0: none, the data
        of earlier releases); at most ``n_perturbations * (n_perturbations - 1) / 2``.
    n_cells_per_combination
        Cells per pair (default: ``n_cells_per_perturbation``).

    Returns
    -------
    AnnData with integer counts in ``X`` (float32, CSR), ``obs["perturbation"]`` (categorical,
    ``"control"`` first, then ``"P000"``..., then the pairs ``"P003+P017"``... in sorted order,
    their cells last), ``obsm["z_true"]``, ``uns["true_targets"]`` (0/1 DataFrame single
    perturbations × latents) and ``uns["true_shift"]`` (DataFrame, single perturbations; a
    pair's shift is the sum of its singles'), the decoder that made the counts in
    ``uns["true_decoder"]`` (see :func:`true_log_expression`), plus the simulation parameters in
    ``uns["simulation"]`` (with the pairs' labels under ``"combinations"``).

    Examples
    --------
    >>> adata = simulate_sparse_shift(n_perturbations=10, n_cells_per_perturbation=50,
    ...                               n_latent=5, random_state=1)
    >>> bool(adata.uns["true_targets"].sum(axis=1).between(1, 3).all())
    True

    Two pairs with 30 cells each, labelled for ``combination_delimiter="+"``:

    >>> pairs = simulate_sparse_shift(n_perturbations=10, n_cells_per_perturbation=50,
    ...                               n_latent=5, random_state=1, n_combinations=2,
    ...                               n_cells_per_combination=30)
    >>> len(pairs.uns["simulation"]["combinations"]), pairs.n_obs - adata.n_obs
    (2, 60)
    """
    low, high = n_targets
    if not 1 <= low <= high <= n_latent:
        raise ValueError(
            f"n_targets={n_targets} must satisfy 1 <= low <= high <= n_latent ({n_latent})."
        )
    for name, value, allowed in (
        ("shift_distribution", shift_distribution, ("normal", "lognormal")),
        ("noise", noise, ("poisson", "negative_binomial")),
        ("decoder", decoder, ("mlp", "programmes")),
    ):
        if value not in allowed:
            raise ValueError(f"{name}={value!r} is unknown; choose one of {allowed}.")
    if noise == "negative_binomial" and not inverse_dispersion > 0:
        raise ValueError(f"inverse_dispersion must be positive, got {inverse_dispersion}.")
    if programme_size is None:
        programme_size = max(5, n_genes // (2 * n_latent))
    if decoder == "programmes" and not 1 <= programme_size <= n_genes:
        raise ValueError(f"programme_size must be in [1, n_genes={n_genes}], got {programme_size}.")
    if decoder == "mlp" and (n_genes < decoder_width or n_latent > decoder_width):
        raise ValueError(
            f"Need n_latent <= decoder_width <= n_genes for an injective decoder; got "
            f"n_latent={n_latent}, decoder_width={decoder_width}, n_genes={n_genes}."
        )
    if n_perturbations < 1 or n_cells_per_perturbation < 1:
        raise ValueError("n_perturbations and n_cells_per_perturbation must be positive.")
    n_pairs_possible = n_perturbations * (n_perturbations - 1) // 2
    if (
        isinstance(n_combinations, bool)
        or not isinstance(n_combinations, (int, np.integer))
        or not 0 <= n_combinations <= n_pairs_possible
    ):
        raise ValueError(
            f"n_combinations must be an integer from 0 to the {n_pairs_possible} distinct pairs "
            f"of n_perturbations={n_perturbations}, got {n_combinations!r}."
        )
    if n_cells_per_combination is None:
        n_cells_per_combination = n_cells_per_perturbation
    if (
        isinstance(n_cells_per_combination, bool)
        or not isinstance(n_cells_per_combination, (int, np.integer))
        or n_cells_per_combination < 1
    ):
        raise ValueError(
            f"n_cells_per_combination must be a positive integer, got {n_cells_per_combination!r}."
        )
    rng = np.random.default_rng(random_state)
    n_control_cells = n_cells_per_perturbation if n_control_cells is None else n_control_cells

    targets = np.zeros((n_perturbations, n_latent))
    for a in range(n_perturbations):
        chosen = rng.choice(n_latent, size=rng.integers(low, high + 1), replace=False)
        targets[a, chosen] = 1.0
    signs = rng.choice([-1.0, 1.0], size=targets.shape)
    if shift_distribution == "normal":
        magnitude = rng.normal(shift_mean, shift_sd, size=targets.shape)
    else:
        magnitude = shift_mean * np.exp(shift_sd * rng.normal(size=targets.shape))
    shift = targets * signs * magnitude

    width = len(str(n_perturbations - 1))
    names = [f"P{a:0{width}d}" for a in range(n_perturbations)]
    labels = np.repeat(names, n_cells_per_perturbation)
    means = np.repeat(shift, n_cells_per_perturbation, axis=0)
    if n_control_cells > 0:
        labels = np.concatenate([np.repeat(CONTROL_LABEL, n_control_cells), labels])
        means = np.concatenate([np.zeros((n_control_cells, n_latent)), means])
    z = means + rng.normal(size=means.shape)

    if decoder == "mlp":
        weights = _random_decoder(rng, n_latent, n_genes, decoder_width, negative_slope)
    else:
        baseline, loadings = _gene_programmes(
            rng, n_latent, n_genes, programme_size, programme_loading
        )
    library = library_size * np.exp(library_log_sd * rng.normal(size=(z.shape[0], 1)))
    if decoder == "mlp":
        logits_of = lambda block: _logits(block, weights, negative_slope)  # noqa: E731
    else:
        logits_of = lambda block: _programme_logits(block, baseline, loadings)  # noqa: E731
    theta = inverse_dispersion if noise == "negative_binomial" else None
    counts, scale = _sample_counts(
        rng, z, logits_of, n_genes, library, theta, standardise=decoder == "mlp"
    )

    pair_names: list[str] = []
    if n_combinations > 0:
        # Drawn after every other cell, so control and singles do not depend on the pairs.
        pairs = _choose_pairs(rng, n_perturbations, n_combinations)
        pair_names = [f"{names[i]}{COMBINATION_DELIMITER}{names[j]}" for i, j in pairs]
        pair_means = np.repeat(shift[pairs[:, 0]] + shift[pairs[:, 1]], n_cells_per_combination, 0)
        pair_z = pair_means + rng.normal(size=pair_means.shape)
        pair_library = library_size * np.exp(library_log_sd * rng.normal(size=(pair_z.shape[0], 1)))
        pair_counts, _ = _sample_counts(
            rng, pair_z, logits_of, n_genes, pair_library, theta, decoder == "mlp", scale
        )
        labels = np.concatenate([labels, np.repeat(pair_names, n_cells_per_combination)])
        z = np.concatenate([z, pair_z])
        counts = sparse.vstack([counts, pair_counts], format="csr")

    categories = ([CONTROL_LABEL] if n_control_cells > 0 else []) + names + pair_names
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
    if decoder == "mlp":
        adata.uns["true_decoder"] = {f"weights_{i}": w for i, w in enumerate(weights)}
        adata.uns["true_decoder"].update(negative_slope=negative_slope)
    else:
        adata.uns["true_decoder"] = {"baseline": baseline, "loadings": loadings}
    adata.uns["true_decoder"].update(kind=decoder, scale=scale)
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
        "shift_distribution": shift_distribution,
        "noise": noise,
        "inverse_dispersion": inverse_dispersion,
        "decoder": decoder,
        "programme_size": programme_size,
        "programme_loading": programme_loading,
        "n_combinations": int(n_combinations),
        "n_cells_per_combination": int(n_cells_per_combination),
        "combinations": pair_names,
    }
    return adata


def true_log_expression(adata: AnnData, z: np.ndarray) -> np.ndarray:
    """The simulated decoder's log gene fractions (log softmax of its logits) at latents ``z``.

    ``adata`` is the output of :func:`simulate_sparse_shift`; ``z`` (cells × latents) is in the
    coordinates of ``obsm["z_true"]``. A cell's expected counts are its library size times the
    exponential of these values, so this is the ground truth a decoder should learn (and what
    an oracle that knows the model uses, e.g. the ceiling in ``benchmarks/regime_ceiling.py``).

    Examples
    --------
    >>> adata = simulate_sparse_shift(n_perturbations=4, n_cells_per_perturbation=5, n_latent=3,
    ...                               n_genes=40)
    >>> log_fractions = true_log_expression(adata, adata.obsm["z_true"])
    >>> log_fractions.shape, bool(np.allclose(np.exp(log_fractions).sum(axis=1), 1.0))
    ((25, 40), True)
    """
    if "true_decoder" not in adata.uns:
        raise KeyError(
            "adata.uns['true_decoder'] is missing: simulate the data with "
            "sparsevae.data.simulate_sparse_shift (this release or later)."
        )
    spec = adata.uns["true_decoder"]
    z = np.asarray(z, dtype=np.float64)
    n_latent = adata.obsm["z_true"].shape[1]
    if z.ndim != 2 or z.shape[1] != n_latent:
        raise ValueError(
            f"z must be cells × {n_latent} latents (the columns of obsm['z_true']), got shape "
            f"{z.shape}."
        )
    if spec["kind"] == "mlp":
        weights = [np.asarray(spec[f"weights_{i}"]) for i in range(4)]
        logits = _logits(z, weights, float(spec["negative_slope"]))
    else:
        logits = _programme_logits(z, np.asarray(spec["baseline"]), np.asarray(spec["loadings"]))
    logits = logits / float(spec["scale"])
    logits = logits - logits.max(axis=1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
