"""Combinations of perturbations: labels such as ``"A+B"`` registered as sets of singles.

With ``setup_anndata(..., combination_delimiter="+")`` the prior has one row per *single*
perturbation, and each cell carries the set of its singles as a fixed-width row of category
codes padded with ``-1`` (``adata.obsm["_sparsevae_perturbation_set"]``). The control label is
the empty set. The priors sum the singles' shifts (see
:meth:`sparsevae.module.PerturbationPrior.cell_mean`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import rich.table
from anndata import AnnData
from scvi.data.fields import BaseAnnDataField

from sparsevae._constants import CONTROL_KEY
from sparsevae._validation import did_you_mean, repeated, validate_labels

logger = logging.getLogger(__name__)

DELIMITER_KEY = "combination_delimiter"
WIDTH_KEY = "n_max_perturbations"
#: Code of an empty slot in a cell's row of perturbation codes.
PAD_CODE = -1
_OBSM_KEY = "_sparsevae_perturbation_set"


def split_label(label: str, delimiter: str, control: str | None) -> list[str]:
    """The singles of ``label`` (``[]`` for the control label), duplicates removed, in order."""
    label = str(label)
    if control is not None and label == control:
        return []
    return list(dict.fromkeys(_parts(label, delimiter)))


def _parts(label: str, delimiter: str) -> list[str]:
    """The parts of ``label`` between delimiters, stripped, repeats kept."""
    return [part.strip() for part in str(label).split(delimiter)]


def validate_combinations(
    adata: AnnData, perturbation_key: str, control: str | None, delimiter: str
) -> None:
    """Raise for labels with empty parts and for the control label inside a combination.

    Warns for labels that name a single twice (``"A+A"``): a cell's perturbations are a set,
    so the label is registered as ``{A}``.
    """
    if not isinstance(delimiter, str) or delimiter == "":
        raise ValueError(
            f"combination_delimiter must be a non-empty string such as '+', got {delimiter!r}."
        )
    if control is not None and delimiter in control:
        raise ValueError(
            f"control={control!r} contains combination_delimiter={delimiter!r}; control must "
            "be a single label. Rename the control cells' label or choose another delimiter."
        )
    as_sets = {}
    for label in adata.obs[perturbation_key].astype(str).unique():
        parts = split_label(label, delimiter, control)
        if any(part == "" for part in parts):
            raise ValueError(
                f"adata.obs[{perturbation_key!r}] has the label {label!r}, which has an empty "
                f"part when split at {delimiter!r}. Write combinations as 'A{delimiter}B'."
            )
        if control is not None and control in parts:
            rest = delimiter.join(p for p in parts if p != control)
            raise ValueError(
                f"adata.obs[{perturbation_key!r}] has the label {label!r}, which combines the "
                f"control label {control!r} with perturbations. Control is the empty set: drop "
                f"it from the combination (e.g. {rest!r})."
            )
        if label != control and repeated(_parts(label, delimiter)):
            as_sets[label] = delimiter.join(parts)
    if as_sets:
        warnings.warn(
            f"adata.obs[{perturbation_key!r}] has {len(as_sets)} label(s) that name a single "
            f"perturbation more than once: {dict(list(as_sets.items())[:5])} (label: as "
            "registered). A cell's perturbations are a set, each shifted once; if a repeat "
            "means a larger dose, give it a label of its own.",
            UserWarning,
            stacklevel=4,
        )


def single_categories(labels: pd.Series, delimiter: str, control: str | None) -> list[str]:
    """Control (if any) then the sorted singles that occur in ``labels``."""
    singles = set()
    for label in labels.astype(str).unique():
        singles.update(split_label(label, delimiter, control))
    return ([control] if control is not None else []) + sorted(singles)


def encode_sets(
    labels: Sequence[str], categories: Sequence[str], delimiter: str, control: str | None
) -> np.ndarray:
    """Rows of category codes (padded with ``PAD_CODE``), one per label; width >= 1."""
    index = {name: i for i, name in enumerate(categories)}
    unique = pd.unique(np.asarray(labels, dtype=object))
    sets = {label: [index[s] for s in split_label(label, delimiter, control)] for label in unique}
    width = max([1] + [len(codes) for codes in sets.values()])
    rows = {label: codes + [PAD_CODE] * (width - len(codes)) for label, codes in sets.items()}
    return np.asarray([rows[label] for label in labels], dtype=np.float32).reshape(-1, width)


class PerturbationSetField(BaseAnnDataField):
    """Per-cell sets of single perturbations, parsed from combination labels.

    The state registry has the keys of the single-label field (``categorical_mapping``: the
    singles, control first; ``original_key``; ``control``) plus the delimiter. On transfer,
    singles not seen at registration are appended after the registered ones.
    """

    CATEGORICAL_MAPPING_KEY = "categorical_mapping"
    ORIGINAL_ATTR_KEY = "original_key"

    def __init__(self, registry_key: str, perturbation_key: str, control: str | None, delimiter):
        super().__init__()
        self._registry_key = registry_key
        self._original_attr_key = perturbation_key
        self.control = control
        self.delimiter = delimiter

    @property
    def registry_key(self) -> str:
        return self._registry_key

    @property
    def attr_name(self) -> str:
        return "obsm"

    @property
    def attr_key(self) -> str:
        return _OBSM_KEY

    @property
    def is_empty(self) -> bool:
        return False

    def validate_field(self, adata: AnnData) -> None:
        validate_labels(adata, self._original_attr_key)

    def _write(self, adata: AnnData, categories: list[str]) -> dict:
        labels = adata.obs[self._original_attr_key].astype(str).to_numpy()
        adata.obsm[_OBSM_KEY] = encode_sets(labels, categories, self.delimiter, self.control)
        return {
            self.CATEGORICAL_MAPPING_KEY: np.asarray(categories, dtype=object),
            self.ORIGINAL_ATTR_KEY: self._original_attr_key,
            CONTROL_KEY: self.control,
            DELIMITER_KEY: self.delimiter,
        }

    def register_field(self, adata: AnnData) -> dict:
        self.validate_field(adata)
        labels = adata.obs[self._original_attr_key]
        return self._write(adata, single_categories(labels, self.delimiter, self.control))

    def transfer_field(self, state_registry: dict, adata_target: AnnData, **kwargs) -> dict:
        self.validate_field(adata_target)
        mapping = [str(c) for c in state_registry[self.CATEGORICAL_MAPPING_KEY]]
        labels = adata_target.obs[self._original_attr_key]
        seen = set(mapping)
        new = [c for c in single_categories(labels, self.delimiter, self.control) if c not in seen]
        if new:
            logger.info("Perturbations not seen at registration, appended: %s", new)
        return self._write(adata_target, mapping + new)

    def get_summary_stats(self, state_registry: dict) -> dict:
        return {"n_perturbation": len(state_registry[self.CATEGORICAL_MAPPING_KEY])}

    def view_state_registry(self, state_registry: dict) -> rich.table.Table | None:
        return None


def unknown_singles_message(
    labels: Sequence[str], unknown: Sequence[str], delimiter: str, control: str | None
) -> str:
    """Which labels hold which unknown singles, e.g. ``"'A+X' (X)"``."""
    unknown = set(unknown)
    found = []
    for label in pd.unique(np.asarray(labels, dtype=object)):
        missing = [s for s in split_label(label, delimiter, control) if s in unknown]
        if missing:
            found.append(f"{label!r} ({', '.join(missing)})")
    return ", ".join(found[:10])


def parse_perturbation(
    label: str, known: Sequence[str], delimiter: str | None, control: str | None
) -> list[str]:
    """Singles of a label asked for by the user; raise naming any single the model lacks."""
    label = str(label)
    if control is not None and label == control:
        return []
    twice = repeated(_parts(label, delimiter)) if delimiter else []
    if twice:
        once = delimiter.join(dict.fromkeys(_parts(label, delimiter)))
        raise ValueError(
            f"perturbation={label!r} names {twice} more than once; a combination is a set of "
            f"singles, each shifted once. Name each single once, e.g. {once!r}."
        )
    parts = split_label(label, delimiter, control) if delimiter else [label]
    unknown = [part for part in parts if part not in set(known)]
    if unknown:
        hint = did_you_mean(unknown[0], known)
        how = (
            f"Combine known singles with {delimiter!r}."
            if delimiter
            else "Set up the data with combination_delimiter=... to combine singles."
        )
        raise ValueError(
            f"perturbation={label!r}: the model has not learned {unknown}.{hint} It knows "
            f"{len(known)} perturbation(s), e.g. {list(known[:10])}. {how} Learn new "
            "perturbations first with `model = model.transfer(adata_new)`."
        )
    return parts
