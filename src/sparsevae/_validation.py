"""Checks of user input at registration, before anything trains.

Every check here runs in ``setup_anndata`` (and on new data given to a trained model), so a long
run never dies late on something that could have been found at the start. Each error names the
key or value that is wrong, shows an example, and says what to do. Nothing is dropped: problems
that do not stop training (a gene without counts, a perturbation with few cells) are warnings.
"""

from __future__ import annotations

import difflib
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd
from anndata import AnnData
from pandas.api.types import CategoricalDtype
from scipy import sparse

# Values read at a time when checking counts, so that no check ever densifies a large matrix.
_CHUNK_VALUES = 2**24
# Perturbations with fewer cells than this get a warning: their shift and mask rest on few cells.
MIN_CELLS_PER_PERTURBATION = 10
# log1p of 1e8 counts is 18.4: non-integer data whose largest value is below this is log-scaled.
_MAX_LOG_VALUE = 20.0
# Strings that missing labels become after ``astype(str)``.
_MISSING_AS_TEXT = {"nan", "NaN", "None", "<NA>", "NA"}
#: Labels (lower case) that usually mean unperturbed cells; with control=None they get a warning.
_CONTROL_NAMES = {
    "control",
    "ctrl",
    "non-targeting",
    "nontargeting",
    "non_targeting",
    "nt",
    "negative_control",
    "unperturbed",
}
_SHOWN = 5


def _location(layer: str | None) -> str:
    return "adata.X" if layer is None else f"adata.layers[{layer!r}]"


def _shown(values: Iterable) -> list:
    return list(values)[:_SHOWN]


def did_you_mean(value, options: Iterable) -> str:
    """`` Did you mean 'x'?`` for the closest of ``options`` (case-insensitive), else ``""``."""
    options = [str(o) for o in options]
    text = str(value)
    exact_case = [o for o in options if o.lower() == text.lower()]
    close = exact_case or difflib.get_close_matches(text, options, n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def _missing_obs_key(name: str, key, adata: AnnData) -> KeyError:
    columns = list(adata.obs.columns)
    return KeyError(
        f"{name}={key!r} is not a column of adata.obs.{did_you_mean(key, columns)} "
        f"Columns: {columns[:20]}{' ...' if len(columns) > 20 else ''}."
    )


def _missing_layer(layer, adata: AnnData) -> KeyError:
    layers = list(adata.layers)
    return KeyError(
        f"layer={layer!r} is not in adata.layers.{did_you_mean(layer, layers)} Layers: "
        f"{layers}. Pass the layer that holds raw counts, or layer=None to use adata.X."
    )


# ---- names that must be unique, lists that must not be empty ------------------------------
def repeated(values: Iterable) -> list:
    """The values that occur more than once in ``values``, in order of first occurrence."""
    values = list(values)
    counts = Counter(values)
    return [value for value in dict.fromkeys(values) if counts[value] > 1]


def unique_values(values, name: str, *, example: str, why: str) -> list:
    """``values`` as a list; raise ``ValueError`` if it is empty or repeats a value.

    ``name`` is the argument's name, ``example`` a valid value of it (shown in the error), and
    ``why`` what a repeat would do. A single string or number counts as one value.
    """
    if isinstance(values, str | int | float | np.number):
        values = [values]
    values = list(values)
    if not values:
        raise ValueError(
            f"{name} is empty, so the call would do nothing; pass at least one value, e.g. "
            f"{name}={example}."
        )
    twice = repeated(values)
    if twice:
        raise ValueError(
            f"{name}={values!r} repeats {twice}: {why}. Pass each value once, e.g. "
            f"{name}={list(dict.fromkeys(values))!r}."
        )
    return values


def validate_indices(indices) -> None:
    """Raise if ``indices`` (a getter's subset of cells) selects no cell."""
    if indices is not None and len(indices) == 0:
        raise ValueError(
            "indices selects no cell of adata, so there is nothing to compute; pass the "
            "positions of the cells to use, or indices=None for every cell."
        )


def validate_unique_names(adata: AnnData) -> None:
    """Raise if gene names repeat; warn if cell names do.

    Genes are matched to the model's by name (new data, ``load``, ``transfer``) and every
    gene-level output is indexed by name, so a repeated gene name is an error. Training does
    not depend on cell names; the outputs indexed by cell do, so repeated ones warn.
    """
    if not adata.var_names.is_unique:
        genes = list(repeated(adata.var_names))
        raise ValueError(
            f"adata.var_names are not unique: {len(genes)} gene name(s) occur more than once "
            f"(e.g. {_shown(genes)}). Genes are matched to the model's by name and every "
            "gene-level output (expression, treatment effects, loadings) is indexed by it. "
            "Make them unique first, e.g. `adata.var_names_make_unique()`, or sum the counts "
            "of genes that share a name."
        )
    if not adata.obs_names.is_unique:
        cells = list(repeated(adata.obs_names))
        warnings.warn(
            f"adata.obs_names are not unique: {len(cells)} cell name(s) occur more than once "
            f"(e.g. {_shown(cells)}). Training does not use them, but outputs indexed by cell "
            "(get_normalized_expression, predict, held-out splits) cannot tell those cells "
            "apart. Make them unique first: `adata.obs_names_make_unique()`.",
            UserWarning,
            stacklevel=4,
        )


def _canonical(label: str) -> str:
    return str(label).strip().casefold()


def check_label_variants(
    perturbation_key: str, control: str | None, new: Iterable[str], known: Iterable[str] = ()
) -> None:
    """Refuse labels that are another label up to surrounding spaces or case.

    ``new``: labels to check (at setup, all of them); ``known``: labels a trained model has
    already learned (at transfer). A label that is the control label up to case or spaces, or
    another label up to spaces, raises (its cells would be learned as a perturbation of their
    own); labels that differ only in case warn (different genes can be spelt so).
    """
    new, known = [str(c) for c in new], [str(c) for c in known]
    groups: dict[str, list[str]] = {}
    for label in dict.fromkeys([*known, *new]):
        groups.setdefault(_canonical(label), []).append(label)
    new_set = set(new)
    clashes = [group for group in groups.values() if len(group) > 1 and new_set & set(group)]
    column = f"adata.obs[{perturbation_key!r}]"
    if control is not None:
        like_control = [c for c in groups.get(_canonical(control), []) if c != control]
        like_control = [c for c in like_control if c in new_set]
        if like_control:
            raise ValueError(
                f"{column} has the label(s) {like_control} besides control={control!r}; they "
                "differ from it only in case or surrounding spaces, so their cells would be "
                "learned as a perturbation with a shift of its own. If they are control cells, "
                f"relabel them, e.g. `{column} = {column}.astype(str).replace("
                f"{{{like_control[0]!r}: {control!r}}})`; if not, give them a distinct name."
            )
    spaced = [group for group in clashes if len({c.strip() for c in group}) < len(group)]
    if spaced:
        raise ValueError(
            f"{column} has labels that differ only in surrounding spaces: {spaced[:5]}. Each "
            "would be learned as a perturbation of its own. Strip them first: "
            f"`{column} = {column}.astype(str).str.strip()`."
        )
    if clashes:
        warnings.warn(
            f"{column} has labels that differ only in case: {clashes[:5]}. They are learned as "
            "different perturbations; if they are the same, give them one spelling, e.g. "
            f"`{column} = {column}.astype(str).replace({{{clashes[0][1]!r}: "
            f"{clashes[0][0]!r}}})`.",
            UserWarning,
            stacklevel=4,
        )


# ---- the AnnData and its keys -------------------------------------------------------------
def validate_adata(adata) -> None:
    """Raise unless ``adata`` is a non-empty AnnData."""
    if not isinstance(adata, AnnData):
        raise TypeError(
            f"Expected an AnnData (cells × genes), got {type(adata).__name__}. Build one with "
            "`anndata.AnnData(X=counts, obs=cell_table)`."
        )
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(
            f"adata has {adata.n_obs} cells and {adata.n_vars} genes; it needs at least one of "
            "each."
        )


def validate_keys(
    adata: AnnData, perturbation_key, layer: str | None, batch_key: str | None
) -> None:
    """Raise if a key is missing from ``adata``, suggesting close matches."""
    if not isinstance(perturbation_key, str):
        raise TypeError(
            f"perturbation_key must be the name of a column of adata.obs, got {perturbation_key!r}."
        )
    if perturbation_key not in adata.obs:
        raise _missing_obs_key("perturbation_key", perturbation_key, adata)
    if layer is not None and layer not in adata.layers:
        raise _missing_layer(layer, adata)
    if batch_key is None:
        return
    if batch_key not in adata.obs:
        raise _missing_obs_key("batch_key", batch_key, adata)
    if batch_key == perturbation_key:
        raise ValueError(
            f"batch_key and perturbation_key are both {batch_key!r}. Batches enter the decoder "
            "and would explain the perturbation effects away: pass a column of technical "
            "batches (lanes, plates), or batch_key=None."
        )
    batches = adata.obs[batch_key]
    if batches.isna().any():
        raise ValueError(
            f"adata.obs[{batch_key!r}] has {int(batches.isna().sum())} missing (NaN) batch "
            f"label(s), e.g. cells {_shown(adata.obs_names[batches.isna().to_numpy()])}. Give "
            "every cell a batch or remove those cells."
        )


# ---- counts -------------------------------------------------------------------------------
def _value_chunks(matrix) -> Iterator[tuple[np.ndarray, callable]]:
    """Yield ``(values, locate)``: stored values in chunks, ``locate(i)`` -> (row, column).

    Sparse matrices are read through their stored values only (zeros are fine counts); dense
    ones in blocks of rows. Neither is copied whole.
    """
    if sparse.issparse(matrix):
        if matrix.format not in ("csr", "csc"):  # AnnData stores only these two
            matrix = matrix.tocsr()
        for start in range(0, matrix.data.size, _CHUNK_VALUES):
            yield (
                matrix.data[start : start + _CHUNK_VALUES],
                lambda i, start=start: _locate_stored(matrix, start + i),
            )
        return
    n_rows, n_cols = matrix.shape
    rows_per_chunk = max(1, _CHUNK_VALUES // max(n_cols, 1))
    for row in range(0, n_rows, rows_per_chunk):
        block = matrix[row : row + rows_per_chunk]
        if sparse.issparse(block):  # backed sparse matrices are read a block at a time
            block = block.tocsr()
            yield block.data, lambda i, row=row, block=block: _offset(_locate_stored(block, i), row)
        else:
            block = np.asarray(block)
            yield (
                block.ravel(),
                lambda i, row=row, n=block.shape[1]: (row + i // n, i % n),
            )


def _offset(position: tuple[int, int], row: int) -> tuple[int, int]:
    return position[0] + row, position[1]


def _locate_stored(matrix, index: int) -> tuple[int, int]:
    """Row and column of the ``index``-th stored value of a CSR or CSC matrix."""
    outer = int(np.searchsorted(matrix.indptr, index, side="right") - 1)
    inner = int(matrix.indices[index])
    return (outer, inner) if matrix.format == "csr" else (inner, outer)


def _axis_sums(matrix, axis: int) -> np.ndarray:
    if sparse.issparse(matrix) or isinstance(matrix, np.ndarray):
        return np.asarray(matrix.sum(axis=axis), dtype=np.float64).ravel()
    n_rows, n_cols = matrix.shape
    rows_per_chunk = max(1, _CHUNK_VALUES // max(n_cols, 1))
    sums = [
        np.asarray(matrix[row : row + rows_per_chunk].sum(axis=axis), dtype=np.float64).ravel()
        for row in range(0, n_rows, rows_per_chunk)
    ]
    return np.concatenate(sums) if axis == 1 else np.sum(sums, axis=0)


def _layers_hint(adata: AnnData, layer: str | None) -> str:
    others = [name for name in adata.layers if name != layer]
    if others:
        return f"Pass the layer with raw UMI counts, e.g. layer={others[0]!r} (layers: {others})."
    return (
        "adata.layers holds no other layer: store the raw UMI counts, e.g. "
        "`adata.layers['counts'] = raw_counts`, and pass layer='counts'."
    )


def _non_integer_kind(matrix) -> str:
    """What non-integer data probably are: log-normalised, normalised, or a few bad values."""
    n_bad = n_stored = 0
    largest = 0.0
    for values, _ in _value_chunks(matrix):
        n_bad += int(np.count_nonzero(values != np.round(values)))
        n_stored += values.size
        largest = max(largest, float(values.max(initial=0)))
    if largest <= _MAX_LOG_VALUE:
        return f"the values look log-normalised (the largest is {largest:.3g})"
    if n_bad < 0.01 * n_stored:
        return (
            f"only {n_bad} of {n_stored} stored values are not integers, so these may be "
            "counts with a few corrupted values: fix them"
        )
    return "the values look normalised or scaled"


def validate_counts(adata: AnnData, layer: str | None = None, *, warn_empty_genes=True) -> None:
    """Raise ``ValueError`` unless the counts are finite, non-negative integers in every cell.

    Every stored value is checked (in chunks, never densifying a sparse matrix), not a sample.
    Cells with zero total counts are refused: their library size has no logarithm. Genes with
    no counts in any cell only warn (``warn_empty_genes``): they are kept, and carry no signal.
    """
    validate_adata(adata)
    if layer is not None and layer not in adata.layers:
        raise _missing_layer(layer, adata)
    matrix = adata.X if layer is None else adata.layers[layer]
    where = _location(layer)
    if matrix is None:
        raise ValueError(f"{where} is empty; store raw counts there.")
    dtype = getattr(matrix, "dtype", np.dtype(np.float64))
    if dtype.kind not in "biuf":
        raise ValueError(f"{where} has dtype {dtype}, not numbers. Store raw integer counts there.")

    def example(values: np.ndarray, locate, index: int) -> str:
        row, col = locate(index)
        value = f"{float(values[index]):.6g}"
        return f"{value} for cell {adata.obs_names[row]!r}, gene {adata.var_names[col]!r}"

    is_float = dtype.kind == "f"
    for values, locate in _value_chunks(matrix):
        bad = np.flatnonzero(~np.isfinite(values)) if is_float else ()
        if len(bad):
            raise ValueError(
                f"{where} contains NaN or infinite values (e.g. "
                f"{example(values, locate, bad[0])}). Counts must be finite: "
                "fix or remove those cells before setup."
            )
        bad = np.flatnonzero(values < 0) if dtype.kind != "u" else ()
        if len(bad):
            raise ValueError(
                f"{where} contains negative values (e.g. "
                f"{example(values, locate, bad[0])}), so it does not hold raw "
                f"counts (scaled or centred data?). {_layers_hint(adata, layer)}"
            )
        bad = np.flatnonzero(values != np.round(values)) if is_float else ()
        if len(bad):
            raise ValueError(
                f"{where} contains non-integer values (e.g. "
                f"{example(values, locate, bad[0])}); {_non_integer_kind(matrix)}. sparsevae "
                f"models raw UMI counts. {_layers_hint(adata, layer)}"
            )

    empty_cells = _axis_sums(matrix, axis=1) == 0
    if empty_cells.any():
        raise ValueError(
            f"{int(empty_cells.sum())} cell(s) have zero total counts in {where} (e.g. "
            f"{_shown(adata.obs_names[empty_cells])}); their library size is undefined. Remove "
            "them first, e.g. `sc.pp.filter_cells(adata, min_counts=1)`."
        )
    if warn_empty_genes:
        empty_genes = _axis_sums(matrix, axis=0) == 0
        if empty_genes.any():
            warnings.warn(
                f"{int(empty_genes.sum())} of {adata.n_vars} gene(s) have no counts in any cell "
                f"of {where} (e.g. {_shown(adata.var_names[empty_genes])}). They are kept but "
                "carry no information; remove them with "
                "`sc.pp.filter_genes(adata, min_cells=1)` before setup.",
                UserWarning,
                stacklevel=3,
            )


# ---- perturbation labels ------------------------------------------------------------------
def perturbation_categories(labels: pd.Series) -> list[str]:
    """Categories that occur in ``labels``: categorical order if categorical, else sorted."""
    if isinstance(labels.dtype, CategoricalDtype):
        present = set(labels.unique())
        return [str(c) for c in labels.cat.categories if c in present]
    return sorted({str(c) for c in labels.unique()})


def validate_labels(adata: AnnData, perturbation_key: str) -> None:
    """Raise if the perturbation column is missing or has missing or empty labels."""
    if perturbation_key not in adata.obs:
        raise _missing_obs_key("perturbation_key", perturbation_key, adata)
    labels = adata.obs[perturbation_key]
    missing = labels.isna().to_numpy()
    if missing.any():
        raise ValueError(
            f"adata.obs[{perturbation_key!r}] has {int(missing.sum())} missing (NaN) label(s), "
            f"e.g. cells {_shown(adata.obs_names[missing])}. Give every cell a perturbation "
            "label (the control label for unperturbed cells) or remove those cells."
        )
    empty = (labels.astype(str).str.strip() == "").to_numpy()
    if empty.any():
        raise ValueError(
            f"adata.obs[{perturbation_key!r}] has {int(empty.sum())} empty label(s), e.g. cells "
            f"{_shown(adata.obs_names[empty])}. Give every cell a perturbation label (the "
            "control label for unperturbed cells) or remove those cells."
        )


def validate_perturbations(adata: AnnData, perturbation_key: str, control: str | None) -> list[str]:
    """Check the perturbation column and return its categories in model order.

    Raises for missing or empty labels, a ``control`` label that does not occur, labels that
    leave nothing to learn (only control, or a single perturbation without control), and labels
    that are the control label or another label up to case or surrounding spaces
    (:func:`check_label_variants`). Warns for perturbations with fewer than
    ``MIN_CELLS_PER_PERTURBATION`` cells (they are kept) and labels that differ only in case.
    """
    validate_labels(adata, perturbation_key)
    labels = adata.obs[perturbation_key]
    categories = perturbation_categories(labels)
    if control is not None and control not in categories:
        raise ValueError(
            f"control={control!r} does not occur in adata.obs[{perturbation_key!r}]."
            f"{did_you_mean(control, categories)} Labels include {categories[:10]}. Pass the "
            "label of unperturbed cells, or control=None if there are none."
        )
    check_label_variants(perturbation_key, control, categories)
    if control is not None and len(categories) == 1:
        raise ValueError(
            f"adata.obs[{perturbation_key!r}] holds only the control label {control!r}; at "
            "least one perturbation is needed."
        )
    if control is None and len(categories) == 1:
        raise ValueError(
            f"adata.obs[{perturbation_key!r}] holds a single label ({categories[0]!r}) and "
            "control=None: with one group there is no perturbation effect to learn. Add the "
            "control cells and pass control=..., or pass the column with per-cell "
            "perturbation labels."
        )
    if control is None:
        looks_like_control = [c for c in categories if c.strip().lower() in _CONTROL_NAMES]
        if looks_like_control:
            warnings.warn(
                f"control=None, but adata.obs[{perturbation_key!r}] has the label "
                f"{looks_like_control[0]!r}, which looks like unperturbed cells. Without "
                "control=..., it is treated as a perturbation with a shift of its own, and "
                f"there is no reference: pass control={looks_like_control[0]!r} if these "
                "cells are unperturbed.",
                UserWarning,
                stacklevel=3,
            )
    looks_missing = sorted(_MISSING_AS_TEXT.intersection(categories))
    if looks_missing:
        warnings.warn(
            f"adata.obs[{perturbation_key!r}] has the label(s) {looks_missing}, which look like "
            "missing values converted to text. They are treated as perturbations of that name; "
            "if those cells have no label, label or remove them.",
            UserWarning,
            stacklevel=3,
        )
    counts = labels.astype(str).value_counts()
    few = counts[counts < MIN_CELLS_PER_PERTURBATION].sort_values()
    if len(few):
        warnings.warn(
            f"{len(few)} label(s) of adata.obs[{perturbation_key!r}] have fewer than "
            f"{MIN_CELLS_PER_PERTURBATION} cells: {dict(few.head(10).items())}"
            f"{' ...' if len(few) > 10 else ''}. They are kept, but their shifts and masks rest "
            "on few cells; read their results with care.",
            UserWarning,
            stacklevel=3,
        )
    return categories


def validate_setup(
    adata: AnnData,
    perturbation_key,
    control: str | None,
    layer: str | None,
    batch_key: str | None,
    *,
    for_trained_model: bool = False,
) -> None:
    """All registration checks of :meth:`sparsevae.SparseVAE.setup_anndata`, cheapest first.

    ``for_trained_model``: the setup of a trained model is replayed on ``adata`` (``load``).
    Its labels need not include control or two groups, nor enough cells to learn from (the model
    has learned them already), and genes without counts do not warn; keys, labels and counts are
    checked as for training.
    """
    validate_adata(adata)
    if adata.is_view:
        raise ValueError(
            "adata is a view (a subset of another AnnData), and registration writes to "
            "adata.obs. Make it an AnnData of its own first: `adata = adata[cells].copy()`."
        )
    validate_keys(adata, perturbation_key, layer, batch_key)
    validate_unique_names(adata)
    if for_trained_model:
        validate_labels(adata, perturbation_key)
    else:
        validate_perturbations(adata, perturbation_key, control)
    validate_counts(adata, layer, warn_empty_genes=not for_trained_model)
