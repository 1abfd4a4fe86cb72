"""AnnData registration: input checks and the perturbation field.

The perturbation labels get a field of their own (not scvi-tools' ``labels``), which records
the control label and accepts perturbations that were not seen at registration when the setup
is transferred to new data (so held-out perturbations can be added to a trained model).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from anndata import AnnData
from pandas.api.types import CategoricalDtype
from scipy import sparse
from scvi.data._utils import _make_column_categorical
from scvi.data.fields import CategoricalObsField

logger = logging.getLogger(__name__)

CONTROL_KEY = "control"
# Rows read at a time when checking counts, so the check never densifies a large matrix.
_CHUNK = 10_000


def _location(layer: str | None) -> str:
    return "adata.X" if layer is None else f"adata.layers[{layer!r}]"


def validate_counts(adata: AnnData, layer: str | None = None) -> None:
    """Raise ``ValueError`` unless the counts are finite, non-negative integers.

    Every stored value is checked (in chunks of rows), not a sample, so a long run cannot fail
    late on a value that could have been found here. Cells with zero total counts are refused
    too: their library size has no logarithm.
    """
    if layer is not None and layer not in adata.layers:
        raise KeyError(
            f"layer={layer!r} is not in adata.layers (available: {list(adata.layers)}). "
            "Pass the layer that holds raw counts, or layer=None to use adata.X."
        )
    matrix = adata.X if layer is None else adata.layers[layer]
    where = _location(layer)
    if matrix is None:
        raise ValueError(f"{where} is empty; store raw counts there.")
    n_zero_cells = 0
    for start in range(0, adata.n_obs, _CHUNK):
        block = matrix[start : start + _CHUNK]
        values = block.data if sparse.issparse(block) else np.asarray(block)
        values = np.asarray(values)
        if not np.all(np.isfinite(values)):
            raise ValueError(
                f"{where} contains NaN or infinite values. Counts must be finite; remove or fix "
                "those cells before setup."
            )
        if np.any(values < 0):
            raise ValueError(
                f"{where} contains negative values, so it does not hold raw counts. Pass the "
                "layer with raw UMI counts (layer=...)."
            )
        if np.any(values != np.round(values)):
            raise ValueError(
                f"{where} contains non-integer values (e.g. log-normalised data). sparsevae "
                "models raw counts: pass the layer with raw UMI counts (layer=...)."
            )
        totals = np.asarray(block.sum(axis=1)).ravel()
        n_zero_cells += int(np.sum(totals == 0))
    if n_zero_cells:
        raise ValueError(
            f"{n_zero_cells} cell(s) have zero total counts in {where}; their library size is "
            "undefined. Remove them first, e.g. `sc.pp.filter_cells(adata, min_counts=1)`."
        )


def validate_perturbations(adata: AnnData, perturbation_key: str, control: str | None) -> list[str]:
    """Check the perturbation column and return its categories in model order."""
    if perturbation_key not in adata.obs:
        raise KeyError(
            f"perturbation_key={perturbation_key!r} is not a column of adata.obs "
            f"(columns: {list(adata.obs.columns)})."
        )
    labels = adata.obs[perturbation_key]
    if labels.isna().any():
        n_missing = int(labels.isna().sum())
        raise ValueError(
            f"adata.obs[{perturbation_key!r}] has {n_missing} missing (NaN) label(s). Give every "
            "cell a perturbation label (use the control label for unperturbed cells) or remove "
            "those cells."
        )
    as_str = labels.astype(str)
    if (as_str.str.strip() == "").any():
        raise ValueError(
            f"adata.obs[{perturbation_key!r}] has empty labels; give every cell a label."
        )
    categories = perturbation_categories(labels)
    if control is not None and control not in categories:
        raise ValueError(
            f"control={control!r} does not occur in adata.obs[{perturbation_key!r}]; "
            f"labels include {categories[:10]}. Pass the label of unperturbed cells, or "
            "control=None if there are none."
        )
    n_perturbed = len(categories) - (control is not None)
    if n_perturbed < 1:
        raise ValueError(
            f"adata.obs[{perturbation_key!r}] holds only the control label; at least one "
            "perturbation is needed."
        )
    return categories


def perturbation_categories(labels: pd.Series) -> list[str]:
    """Categories that occur in ``labels``: categorical order if categorical, else sorted."""
    if isinstance(labels.dtype, CategoricalDtype):
        present = set(labels.unique())
        return [str(c) for c in labels.cat.categories if c in present]
    return sorted(str(c) for c in labels.unique())


class PerturbationField(CategoricalObsField):
    """Categorical obs field for perturbation labels with a control label.

    Only categories that occur are registered. On transfer to new data, unseen perturbations
    are appended after the registered ones instead of raising.
    """

    def __init__(self, registry_key: str, attr_key: str, control: str | None = None):
        super().__init__(registry_key, attr_key)
        self.control = control

    def register_field(self, adata: AnnData) -> dict:
        categories = validate_perturbations(adata, self._original_attr_key, self.control)
        labels = adata.obs[self._original_attr_key]
        if not isinstance(labels.dtype, CategoricalDtype) or any(
            not isinstance(c, str) for c in labels.cat.categories
        ):
            adata.obs[self._original_attr_key] = labels.astype(str).astype("category")
        mapping = _make_column_categorical(
            adata.obs,
            self._original_attr_key,
            self.attr_key,
            categorical_dtype=CategoricalDtype(categories=categories),
        )
        return {
            self.CATEGORICAL_MAPPING_KEY: mapping,
            self.ORIGINAL_ATTR_KEY: self._original_attr_key,
            CONTROL_KEY: self.control,
        }

    def transfer_field(
        self, state_registry: dict, adata_target: AnnData, extend_categories: bool = True, **kwargs
    ) -> dict:
        self.validate_field(adata_target)
        labels = adata_target.obs[self._original_attr_key]
        if labels.isna().any():
            raise ValueError(
                f"adata.obs[{self._original_attr_key!r}] has missing (NaN) labels; give every "
                "cell a perturbation label."
            )
        adata_target.obs[self._original_attr_key] = labels.astype(str).astype("category")
        mapping = list(state_registry[self.CATEGORICAL_MAPPING_KEY])
        new = [c for c in perturbation_categories(labels.astype(str)) if c not in set(mapping)]
        if new:
            logger.info("Perturbations not seen at registration, appended: %s", new)
        mapping = np.asarray(mapping + new, dtype=object)
        new_mapping = _make_column_categorical(
            adata_target.obs,
            self._original_attr_key,
            self.attr_key,
            categorical_dtype=CategoricalDtype(categories=mapping),
        )
        return {
            self.CATEGORICAL_MAPPING_KEY: new_mapping,
            self.ORIGINAL_ATTR_KEY: self._original_attr_key,
            CONTROL_KEY: state_registry.get(CONTROL_KEY),
        }
