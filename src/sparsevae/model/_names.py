"""The names every part of SparseVAE relies on: categories, control, perturbations, latents.

The mixins of :class:`~sparsevae.SparseVAE` (interpretation, prediction, transfer, data checks,
saving) use only these helpers, ``self.module`` and scvi-tools' ``adata_manager`` /
``_make_data_loader``; each helper is defined once, here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from sparsevae._constants import CONTROL_KEY, REGISTRY_KEYS
from sparsevae._validation import unique_values

from ._matching import unknown_perturbation_error


class NamesMixin:
    """Perturbation and latent names of a registered model, and DataFrames labelled by them."""

    @property
    def _perturbation_registry(self) -> dict:
        return self.adata_manager.get_state_registry(REGISTRY_KEYS.PERTURBATION_KEY)

    @property
    def _categories(self) -> list[str]:
        return [str(c) for c in self._perturbation_registry.categorical_mapping]

    @property
    def control(self) -> str | None:
        """Label of the control cells, or ``None``."""
        return self._perturbation_registry.get(CONTROL_KEY)

    @property
    def combination_delimiter(self) -> str | None:
        """Delimiter of combination labels (``"A+B"``), or ``None`` for one label per cell."""
        return self.registry_["setup_args"].get("combination_delimiter")

    @property
    def _control_index(self) -> int | None:
        return None if self.control is None else self._categories.index(self.control)

    @property
    def _perturbed_rows(self) -> np.ndarray:
        rows = np.arange(len(self._categories))
        return rows if self._control_index is None else np.delete(rows, self._control_index)

    @property
    def perturbation_names(self) -> list[str]:
        """Perturbations known to the model (control excluded), in the order of every getter."""
        return [self._categories[i] for i in self._perturbed_rows]

    @property
    def latent_names(self) -> list[str]:
        """Names of the latent variables: ``latent_0`` ... ``latent_{n_latent - 1}``."""
        return [f"latent_{i}" for i in range(self.module.n_latent)]

    def _frame(self, values: np.ndarray, perturbations: str | Sequence[str] | None = None):
        frame = pd.DataFrame(
            values,
            index=pd.Index(self.perturbation_names, name="perturbation"),
            columns=self.latent_names,
        )
        return self._select(frame, perturbations)

    def _select(
        self, frame: pd.DataFrame, perturbations: str | Sequence[str] | None
    ) -> pd.DataFrame:
        """Rows of ``frame`` for ``perturbations`` (all if ``None``).

        Raises for unknown names, for an empty selection (it would return nothing) and for
        repeated names (their rows would be returned twice).
        """
        if perturbations is None:
            return frame
        names = [perturbations] if isinstance(perturbations, str) else list(perturbations)
        names = unique_values(
            [str(name) for name in names],
            "perturbations",
            example=f"{self.perturbation_names[:2]!r} (or None for every perturbation)",
            why="their rows would be returned twice",
        )
        unknown = [name for name in names if name not in frame.index]
        if unknown:
            raise unknown_perturbation_error(self, unknown)
        return frame.loc[names]
