"""AnnData registration: the perturbation field.

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
from scvi.data._utils import _make_column_categorical
from scvi.data.fields import CategoricalObsField

from sparsevae._constants import CONTROL_KEY
from sparsevae._validation import perturbation_categories, validate_labels

logger = logging.getLogger(__name__)


class PerturbationField(CategoricalObsField):
    """Categorical obs field for perturbation labels with a control label.

    Only categories that occur are registered. On transfer to new data, unseen perturbations
    are appended after the registered ones instead of raising.
    """

    def __init__(self, registry_key: str, attr_key: str, control: str | None = None):
        super().__init__(registry_key, attr_key)
        self.control = control

    def register_field(self, adata: AnnData) -> dict:
        # The labels were checked by ``validate_perturbations`` in ``setup_anndata``.
        labels = adata.obs[self._original_attr_key]
        mapping = self._write_codes(adata, labels, perturbation_categories(labels))
        return {
            self.CATEGORICAL_MAPPING_KEY: mapping,
            self.ORIGINAL_ATTR_KEY: self._original_attr_key,
            CONTROL_KEY: self.control,
        }

    def _write_codes(self, adata: AnnData, labels: pd.Series, categories) -> np.ndarray:
        """Write the labels' codes in ``categories`` to the field's own ``obs`` column.

        The user's column is read, never written: its values, dtype and categories stay as
        they were. The codes go to ``adata.obs[attr_key]`` (``_scvi_perturbation``), as
        scvi-tools' categorical fields do.
        """
        # Built in the registry's order: pandas treats unordered categoricals with the same
        # categories in another order as equal, so ``astype`` would keep the wrong one and
        # every code (control's included) would point at another perturbation's row.
        column = pd.DataFrame(
            {self._original_attr_key: pd.Categorical(labels.astype(str), categories=categories)},
            index=adata.obs_names,
        )
        mapping = _make_column_categorical(
            column,
            self._original_attr_key,
            self.attr_key,
            categorical_dtype=CategoricalDtype(categories=categories),
        )
        adata.obs[self.attr_key] = column[self.attr_key].to_numpy()
        return mapping

    def transfer_field(
        self, state_registry: dict, adata_target: AnnData, extend_categories: bool = True, **kwargs
    ) -> dict:
        validate_labels(adata_target, self._original_attr_key)
        labels = adata_target.obs[self._original_attr_key].astype(str)
        mapping = list(state_registry[self.CATEGORICAL_MAPPING_KEY])
        new = [c for c in perturbation_categories(labels) if c not in set(mapping)]
        if new:
            logger.info("Perturbations not seen at registration, appended: %s", new)
        mapping = np.asarray(mapping + new, dtype=object)
        new_mapping = self._write_codes(adata_target, labels, mapping)
        return {
            self.CATEGORICAL_MAPPING_KEY: new_mapping,
            self.ORIGINAL_ATTR_KEY: self._original_attr_key,
            CONTROL_KEY: state_registry.get(CONTROL_KEY),
        }
