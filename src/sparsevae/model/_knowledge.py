"""What a fitted SparseVAE knows, in one place.

:class:`ModelKnowledge` holds everything the parts of :class:`~sparsevae.SparseVAE` read about
a registered, trained model: its categories (the perturbation labels, control included, in the
order of the prior's rows), the control label and the combination delimiter, the perturbation
and latent names that label every getter, the prior's readouts per category (mask
probabilities, shifts) and each category's mean latent, cached for the model's own data.

The parts of the model (interpretation, prediction, transfer, data checks) use this class's
public surface, ``model.module`` and scvi-tools' public model API; none reaches into another's
private helpers.

The cache of mean latents has one invalidation rule, checked on every read: it holds while the
networks that produce the latents are unchanged, i.e. while no parameter or buffer of the
module outside its prior has been written since the means were computed (training steps,
batch-norm recalibration, loading weights and moving devices all write them; training only the
prior's rows, as :meth:`~sparsevae.SparseVAE.transfer` does, does not).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi.model.base import BaseModelClass

from sparsevae._constants import CONTROL_KEY, REGISTRY_KEYS
from sparsevae._shifts import latent_shifts
from sparsevae._validation import unique_values
from sparsevae.module._readouts import category_shifts, targets

from ._matching import check_known_perturbations, unknown_perturbation_error


def _network_state(module: torch.nn.Module) -> tuple:
    """Write counters of the module's tensors outside its prior (see the module docstring)."""
    tensors = [
        tensor
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]
        if not name.startswith("prior.")
    ]
    return tuple((tensor.data_ptr(), tensor._version) for tensor in tensors)


class ModelKnowledge:
    """Names, categories, readouts and mean latents of one registered :class:`SparseVAE`.

    Reached as :attr:`SparseVAE.knowledge <sparsevae.SparseVAE.knowledge>`; built by the model.

    Parameters
    ----------
    model
        The model (registered with :meth:`~sparsevae.SparseVAE.setup_anndata`).
    """

    def __init__(self, model: BaseModelClass):
        self._model = model
        self._means: pd.DataFrame | None = None
        self._means_state: tuple | None = None
        self._log_libraries: pd.Series | None = None

    # ---- names ---------------------------------------------------------------------------
    @property
    def registry(self) -> dict:
        """scvi-tools' state registry of the perturbation field."""
        return self._model.adata_manager.get_state_registry(REGISTRY_KEYS.PERTURBATION_KEY)

    @property
    def perturbation_key(self) -> str:
        """The obs column of the perturbation labels given to ``setup_anndata``."""
        return self.registry.original_key

    @property
    def categories(self) -> list[str]:
        """Every label the model knows, control included, in the order of the prior's rows."""
        return [str(c) for c in self.registry.categorical_mapping]

    @property
    def control(self) -> str | None:
        """Label of the control cells, or ``None``."""
        return self.registry.get(CONTROL_KEY)

    @property
    def combination_delimiter(self) -> str | None:
        """Delimiter of combination labels (``"A+B"``), or ``None``."""
        return self._model.registry_["setup_args"].get("combination_delimiter")

    @property
    def control_index(self) -> int | None:
        """Row of the control among :attr:`categories` (``None`` without control)."""
        return None if self.control is None else self.categories.index(self.control)

    @property
    def perturbed_rows(self) -> np.ndarray:
        """Rows of :attr:`categories` that are perturbations (every row but control's)."""
        rows = np.arange(len(self.categories))
        return rows if self.control_index is None else np.delete(rows, self.control_index)

    @property
    def perturbation_names(self) -> list[str]:
        """Perturbations (control excluded), in the order of every getter's rows."""
        categories = self.categories
        return [categories[i] for i in self.perturbed_rows]

    @property
    def latent_names(self) -> list[str]:
        """``latent_0`` ... ``latent_{n_latent - 1}``."""
        return [f"latent_{i}" for i in range(self._model.module.n_latent)]

    # ---- labelled tables -----------------------------------------------------------------
    def frame(
        self, per_category: np.ndarray, perturbations: str | Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Perturbations × latents from a per-category array (the control row is dropped)."""
        frame = pd.DataFrame(
            np.asarray(per_category)[self.perturbed_rows],
            index=pd.Index(self.perturbation_names, name="perturbation"),
            columns=self.latent_names,
        )
        return self.select(frame, perturbations)

    def per_category(self, frame: pd.DataFrame, fill: float = 0.0) -> np.ndarray:
        """:meth:`frame`'s inverse: (n_categories, n_latent); control and NaN rows ``fill``."""
        full = np.full((len(self.categories), frame.shape[1]), fill, dtype=np.float32)
        full[self.perturbed_rows] = frame.fillna(fill).to_numpy(dtype=np.float32)
        return full

    def select(
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
            raise unknown_perturbation_error(self._model, unknown)
        return frame.loc[names]

    # ---- the prior's readouts ------------------------------------------------------------
    @torch.inference_mode()
    def mask_probabilities(self) -> np.ndarray:
        """P(gamma = 1) of every category, (n_categories, n_latent)."""
        return self._model.module.prior.mask_probabilities().detach().cpu().numpy()

    @torch.inference_mode()
    def category_shifts(
        self,
        readout: str = "evaluation_shifts",
        adata: AnnData | None = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """The prior's shift ``readout`` of every category, (n_categories, n_latent).

        ``readout``: ``"evaluation_shifts"`` (what the getters report) or ``"edge_shifts"``
        (the shift an edge has when on), read by :mod:`sparsevae.module._readouts`. Priors
        that learn no shift get the data's (:meth:`empirical_shifts` of ``adata``, default
        the model's own).
        """

        def empirical() -> torch.Tensor:
            return torch.as_tensor(self.empirical_shifts(adata, batch_size))

        shifts = category_shifts(self._model.module.prior, readout, empirical)
        return shifts.detach().cpu().numpy()

    @torch.inference_mode()
    def targets(self, threshold: float = 0.5, n_top: int = 2) -> np.ndarray:
        """The perturbation→latent graph of every category, bool (n_categories, n_latent).

        :func:`sparsevae.module._readouts.targets` of the evaluation shifts.
        """
        prior = self._model.module.prior
        shifts = torch.as_tensor(self.category_shifts("evaluation_shifts"))
        return targets(prior, shifts, threshold, n_top).cpu().numpy()

    # ---- mean latents --------------------------------------------------------------------
    def latent_means(
        self, adata: AnnData | None = None, batch_size: int | None = None
    ) -> pd.DataFrame:
        """Mean posterior mean of each category's cells, categories × latents.

        Only cells whose label is the category itself count (a combination's cells do not
        count for its singles). NaN rows: categories without cells of their own. For the
        model's own data (``adata=None``) the result is cached (see the module docstring).
        """
        if adata is None and self.cached_latent_means is not None:
            return self.cached_latent_means
        model = self._model
        data = model._validate_anndata(adata)
        check_known_perturbations(model, data)
        z = model.get_latent_representation(data, batch_size=batch_size)
        labels = data.obs[self.perturbation_key].astype(str).to_numpy()
        means = pd.DataFrame(z, columns=self.latent_names).groupby(labels).mean()
        means = means.reindex(pd.Index(self.categories, name="category"))
        if adata is None:
            self.keep_latent_means(means)
        return means

    def keep_latent_means(self, means: pd.DataFrame) -> None:
        """Cache ``means`` (categories × latents) as the model's own data's mean latents."""
        self._means = means
        self._means_state = _network_state(self._model.module)

    @property
    def cached_latent_means(self) -> pd.DataFrame | None:
        """The kept mean latents of the model's own data, or ``None`` (none, or stale)."""
        if self._means is not None and self._means_state != _network_state(self._model.module):
            self._means = self._means_state = None  # the networks changed since
        return self._means

    def empirical_shifts(
        self, adata: AnnData | None = None, batch_size: int | None = None
    ) -> np.ndarray:
        """Each category's mean latent shift, (n_categories, n_latent).

        The one definition of :func:`sparsevae._shifts.latent_shifts`: the mean latent of the
        category's cells minus that of control, or, without a control label, minus the
        per-latent median of the perturbations' mean latents (those with cells). NaN for
        categories without cells of their own, 0 for control.
        """
        means = self.latent_means(adata, batch_size).to_numpy()
        no_control = (
            f"adata has no control cells (label {self.control!r}) to measure latent shifts "
            "from. Pass adata= with control cells (a model loaded with only transfer cells "
            "does not keep its training controls)."
        )
        return self._shifts(means, no_control).astype(np.float32)

    def _shifts(self, means: np.ndarray, no_control: str) -> np.ndarray:
        """:func:`sparsevae._shifts.latent_shifts` of per-category ``means`` (control row 0)."""
        control = None
        if self.control is not None:
            control = means[self.control_index]
            if np.isnan(control).any():
                raise ValueError(no_control)
        rows = self.perturbed_rows
        shifts = np.zeros(means.shape)  # the control row stays 0
        shifts[rows] = latent_shifts(means[rows], control)
        return shifts

    # ---- library sizes: the depth model of predictions -----------------------------------
    def log_library_means(
        self, adata: AnnData | None = None, batch_size: int | None = None
    ) -> pd.Series:
        """Mean log library size of each category's own cells (NaN: none), by category.

        The library size is a cell's total count over the model's genes. For the model's own
        data (``adata=None``) the result is kept: it depends on the data only.
        :meth:`~sparsevae.SparseVAE.transfer` adds the new perturbations' from their cells.
        """
        if adata is None and self._log_libraries is not None:
            return self._log_libraries
        model = self._model
        data = model._validate_anndata(adata)
        check_known_perturbations(model, data)
        loader = model._make_data_loader(adata=data, batch_size=batch_size)
        library = np.concatenate(
            [tensors[REGISTRY_KEYS.X_KEY].sum(dim=1).numpy() for tensors in loader]
        ).astype(np.float64)
        labels = data.obs[self.perturbation_key].astype(str).to_numpy()
        with np.errstate(divide="ignore"):
            logs = pd.Series(np.log(library)).replace(-np.inf, np.nan)  # no counts: skipped
        means = logs.groupby(labels).mean().reindex(pd.Index(self.categories, name="category"))
        if adata is None:
            self.keep_log_library_means(means)
        return means

    def keep_log_library_means(self, means: pd.Series) -> None:
        """Keep ``means`` (by category) as the model's own data's mean log library sizes."""
        self._log_libraries = means

    def library_shifts(self) -> np.ndarray:
        """Each category's change of mean log library size, (n_categories,).

        The depth model of predictions: a perturbation changes a cell's library size (counts
        over the model's genes) by ``exp(shift)``, and a combination by the product of its
        singles' (the sum in log space, as latent shifts add). The reference is that of the
        latent shifts (:mod:`sparsevae._shifts`): control's mean, or without a control label
        the median of the perturbations'. NaN for categories without cells of their own, 0 for
        control.
        """
        means = self.log_library_means().to_numpy()[:, None]
        no_control = (
            f"The model's data have no control cells (label {self.control!r}) to measure "
            "library sizes from; pass depth='observed'."
        )
        return self._shifts(means, no_control)[:, 0]
