"""Identifiability metrics: matched correlation (MCC), linear R² and graph recovery.

Latents of a VAE are identifiable at best up to permutation and scaling (and sign), so inferred
latents are first matched one-to-one to the true ones by the Hungarian algorithm
(:func:`scipy.optimize.linear_sum_assignment`) on absolute correlations.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata
from sklearn.linear_model import LinearRegression
from sklearn.metrics import f1_score, precision_score, r2_score, recall_score

# Columns whose values differ by less than the smallest normal float64 are constant: their
# spread is subnormal, where correlations and regressions lose all precision.
_TINY = np.finfo(np.float64).tiny


def _varies(array: np.ndarray) -> np.ndarray:
    """Which columns vary (by more than ``_TINY``)."""
    return np.ptp(array, axis=0) >= _TINY


def _as_2d(name: str, values) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array (cells × latents), got shape {array.shape}.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return array


def _abs_correlation(
    z_true: np.ndarray, z: np.ndarray, method: Literal["pearson", "spearman"]
) -> np.ndarray:
    """Absolute correlation between every true latent (rows) and every inferred latent (columns)."""
    if z_true.shape[0] != z.shape[0]:
        raise ValueError(
            f"z_true has {z_true.shape[0]} cells but z has {z.shape[0]}; pass the same cells."
        )
    varies_true, varies = _varies(z_true), _varies(z)
    if method == "spearman":
        z_true, z = rankdata(z_true, axis=0), rankdata(z, axis=0)
    elif method != "pearson":
        raise ValueError(f"method must be 'pearson' or 'spearman', got {method!r}.")
    d = z_true.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(z_true, z, rowvar=False)[:d, d:]
    # A constant column has no defined correlation: it explains nothing.
    corr = np.nan_to_num(np.abs(corr), nan=0.0)
    corr[~varies_true, :] = 0.0
    corr[:, ~varies] = 0.0
    return corr


def match_latents(
    z_true, z, method: Literal["pearson", "spearman"] = "pearson"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match inferred latents to true ones, maximising the total absolute correlation.

    Returns
    -------
    ``(true_index, inferred_index, abs_corr)``: matched column pairs and the absolute
    correlation matrix (true × inferred).
    """
    corr = _abs_correlation(_as_2d("z_true", z_true), _as_2d("z", z), method)
    true_index, inferred_index = linear_sum_assignment(corr, maximize=True)
    return true_index, inferred_index, corr


def mean_correlation_coefficient(
    z_true, z, method: Literal["pearson", "spearman"] = "pearson"
) -> float:
    """Mean correlation coefficient (MCC) between true and inferred latents.

    The mean over matched pairs of the absolute Pearson (or Spearman) correlation, after the
    optimal one-to-one matching. 1.0 means every true latent is recovered exactly up to
    permutation, sign and (for Spearman, monotone) scaling.

    Parameters
    ----------
    z_true
        True latents, cells × d.
    z
        Inferred latents for the same cells, cells × d'.
    method
        ``"pearson"`` or ``"spearman"``.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.random.default_rng(0).normal(size=(100, 3))
    >>> mean_correlation_coefficient(z, -2 * z[:, [2, 0, 1]])
    1.0
    """
    true_index, inferred_index, corr = match_latents(z_true, z, method)
    return float(np.round(corr[true_index, inferred_index].mean(), 12))


def linear_r2(z_true, z) -> float:
    """R² of a linear regression predicting the true latents from the inferred ones.

    Averaged uniformly over true latents; 1.0 when ``z_true`` is an affine map of ``z``.
    """
    z_true, z = _as_2d("z_true", z_true), _as_2d("z", z)
    if z_true.shape[0] != z.shape[0]:
        raise ValueError(
            f"z_true has {z_true.shape[0]} cells but z has {z.shape[0]}; pass the same cells."
        )
    informative = _varies(z)  # constant columns predict nothing (and break the fit)
    if informative.any():
        prediction = LinearRegression().fit(z[:, informative], z_true).predict(z[:, informative])
    else:
        prediction = np.broadcast_to(z_true.mean(axis=0), z_true.shape)
    return float(r2_score(z_true, prediction, multioutput="uniform_average"))


def _matched(true_targets, pi, z_true, z):
    """Align ``pi``'s rows to ``true_targets`` and match the latents.

    Returns ``(true_targets, pi, true_index, inferred_index)``, the matching that of
    :func:`match_latents` (Pearson).
    """
    true_targets = pd.DataFrame(true_targets)
    pi = pd.DataFrame(pi)
    missing = true_targets.index.difference(pi.index)
    if len(missing):
        raise ValueError(
            f"pi has no row for {len(missing)} perturbation(s) of true_targets, e.g. "
            f"{list(missing[:5])}. Pass pi for the same perturbations (held-out ones excluded "
            "from true_targets)."
        )
    pi = pi.loc[true_targets.index]
    true_index, inferred_index, _ = match_latents(z_true, z, "pearson")
    if true_targets.shape[1] != np.asarray(z_true).shape[1]:
        raise ValueError("true_targets must have one column per true latent (column of z_true).")
    if pi.shape[1] != np.asarray(z).shape[1]:
        raise ValueError("pi must have one column per inferred latent (column of z).")
    return true_targets, pi, true_index, inferred_index


def matched_graph(true_targets: pd.DataFrame, pi: pd.DataFrame, z_true, z) -> pd.DataFrame:
    """``pi`` with its latents matched to the true ones, for reading beside ``true_targets``.

    Latents are matched as in :func:`graph_scores` (Hungarian on the absolute Pearson
    correlation of ``z`` and ``z_true``). Rows follow ``true_targets``; columns are the matched
    inferred latents in the order of the true latents they match, named
    ``"<inferred>→<true>"``.

    Examples
    --------
    >>> matched = matched_graph(adata.uns["true_targets"], pi, adata.obsm["z_true"], z)
    """
    true_targets, pi, true_index, inferred_index = _matched(true_targets, pi, z_true, z)
    order = np.argsort(true_index)
    matched = pi.iloc[:, inferred_index[order]].astype(float)
    matched.columns = [
        f"{c}→{true_targets.columns[t]}"
        for c, t in zip(matched.columns, true_index[order], strict=True)
    ]
    return matched


def graph_scores(
    true_targets: pd.DataFrame,
    pi: pd.DataFrame,
    z_true,
    z,
    threshold: float = 0.5,
) -> dict[str, float]:
    """Precision, recall and F1 of the learned perturbation→latent graph.

    Inferred latents are matched to true latents by absolute Pearson correlation of ``z`` and
    ``z_true`` (sign-agnostic); the columns of ``pi`` are reordered accordingly, thresholded at
    ``threshold`` and compared with ``true_targets`` entry by entry.

    Parameters
    ----------
    true_targets
        Perturbations × true latents, 0/1 (``uns["true_targets"]`` of the simulator).
    pi
        Perturbations × inferred latents: probabilities, or booleans (a readout already made).
        Rows are aligned to ``true_targets`` by name.
    z_true, z
        True and inferred latents of the same cells, used for the matching.
    threshold
        An edge is predicted where ``pi > threshold``.

    Returns
    -------
    dict with ``precision``, ``recall``, ``f1`` and ``n_predicted_edges``, ``n_true_edges``.
    """
    true_targets, pi, true_index, inferred_index = _matched(true_targets, pi, z_true, z)
    predicted = np.zeros(true_targets.shape, dtype=bool)
    predicted[:, true_index] = pi.to_numpy(dtype=float)[:, inferred_index] > threshold
    truth = true_targets.to_numpy() > 0
    y_true, y_pred = truth.ravel(), predicted.ravel()
    return {
        "precision": float(precision_score(y_true, y_pred, zero_division=0.0)),
        "recall": float(recall_score(y_true, y_pred, zero_division=0.0)),
        "f1": float(f1_score(y_true, y_pred, zero_division=0.0)),
        "n_predicted_edges": int(y_pred.sum()),
        "n_true_edges": int(y_true.sum()),
    }
