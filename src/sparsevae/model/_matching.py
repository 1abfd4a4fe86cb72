"""Checks that an AnnData fits a trained model: the same genes, perturbations it knows.

Used wherever data meet a model after training: ``load``, ``transfer`` and every getter that
takes ``adata`` (through :class:`DataChecksMixin`). Without them, other genes (or the same
genes in another order) would run through the networks silently or fail deep inside torch with
a shape error, and unknown perturbations would index past the prior's rows.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd
from anndata import AnnData

from sparsevae._constants import REGISTRY_KEYS
from sparsevae._validation import did_you_mean, validate_counts

from ._combinations import split_label, unknown_singles_message

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass

_SHOWN = 5


def _field_state(registry: dict, key: str) -> dict:
    return registry["field_registries"][key]["state_registry"]


def check_same_genes(expected: Sequence[str], adata: AnnData) -> None:
    """Raise if ``adata``'s genes (names and order) differ from ``expected``, the model's."""
    # Compared as Python strings: pandas' string arrays ("string" from h5ad, "str" under
    # pandas 3) do not equal each other or object arrays of the same names.
    expected = pd.Index([str(v) for v in expected], dtype=object)
    names = pd.Index([str(v) for v in adata.var_names], dtype=object)
    if names.equals(expected):
        return
    missing = expected.difference(names)
    extra = names.difference(expected)
    if len(missing) == 0 and len(extra) == 0:
        detail = "the same genes in a different order"
    else:
        parts = []
        if len(missing):
            parts.append(
                f"{len(missing)} of the model's genes are missing (e.g. {list(missing[:_SHOWN])})"
            )
        if len(extra):
            parts.append(f"{len(extra)} are not in the model (e.g. {list(extra[:_SHOWN])})")
        detail = " and ".join(parts)
    raise ValueError(
        f"adata has {adata.n_vars} genes but the model was trained on {len(expected)}: "
        f"{detail}. Subset and order the genes as in training: "
        "`adata = adata[:, model.adata.var_names].copy()` (or the var_names saved with the model)."
    )


def model_genes(model: BaseModelClass) -> list[str]:
    """The genes the model was set up with, in order."""
    return list(_field_state(model.registry_, REGISTRY_KEYS.X_KEY)["column_names"])


def unknown_perturbation_error(model: BaseModelClass, unknown: Sequence[str]) -> ValueError:
    """The error for perturbation labels that the model has not learned."""
    known = model.perturbation_names
    if model.control is not None and model.control in unknown:
        return ValueError(
            f"{model.control!r} is the control label: control cells have no shift and no mask, "
            "so it has no row. Ask for perturbations only."
        )
    hint = did_you_mean(unknown[0], known) if len(unknown) == 1 else ""
    return ValueError(
        f"The model has not learned the perturbation(s) {list(unknown[:10])}.{hint} It knows "
        f"{len(known)}: {known[:10]}{' ...' if len(known) > 10 else ''}. Learn the shifts of "
        "new perturbations first with `model = model.transfer(adata_new)`, or ask only for "
        "known ones."
    )


def unknown_perturbations(model: BaseModelClass, adata: AnnData) -> list[str]:
    """Labels (singles, for combination setups) of ``adata`` that the model has not learned.

    ``adata`` must be registered with the model; registration appends unseen labels after the
    ones the prior has rows for.
    """
    mapping = model.get_anndata_manager(adata, required=True).get_state_registry(
        REGISTRY_KEYS.PERTURBATION_KEY
    )["categorical_mapping"]
    return [str(c) for c in mapping[model.module.prior.n_perturbations :]]


#: Getters that evaluate p(z | a), so refuse perturbations the model has not learned.
NEEDS_PRIOR = (
    "get_perturbation_shifts (prior 'standard')",
    "predict",
    "get_treatment_effect",
    "get_elbo",
    "get_marginal_ll",
    "get_reconstruction_error",
    "get_interventional_nll",
)


def warn_unknown_perturbations(model: BaseModelClass, adata: AnnData, getter: str) -> None:
    """Warn that ``adata`` holds labels the model has not learned, at a getter that needs none.

    The encoder reads counts only, so such getters are right for any cells; the warning says
    which labels are new and which calls need :meth:`~sparsevae.SparseVAE.transfer` first.
    """
    unseen = unknown_perturbations(model, adata)
    if not unseen:
        return
    warnings.warn(
        f"adata holds {len(unseen)} perturbation(s) the model has not learned: "
        f"{unseen[:10]}{' ...' if len(unseen) > 10 else ''}. {getter} does not use the labels "
        "(the encoder reads counts only), so its result is valid for these cells. The calls "
        f"that use p(z | a) refuse them: {', '.join(NEEDS_PRIOR)}; learn the new "
        "perturbations first with `model = model.transfer(adata)`.",
        UserWarning,
        stacklevel=3,
    )


def check_known_perturbations(model: BaseModelClass, adata: AnnData) -> None:
    """Raise if ``adata`` (registered with the model) holds perturbations it has not learned."""
    unseen = unknown_perturbations(model, adata)
    if unseen and model.combination_delimiter is not None:
        key = model.knowledge.perturbation_key
        labels = adata.obs[key].astype(str).to_numpy()
        where = unknown_singles_message(labels, unseen, model.combination_delimiter, model.control)
        raise ValueError(
            f"The model has not learned the single perturbation(s) {unseen[:10]}, used in "
            f"adata.obs[{key!r}] by {where}. Combinations are predicted zero-shot only when "
            "every single was trained: learn the new singles first with "
            "`model = model.transfer(adata_new)` (cells of each new single alone), or leave "
            "those cells out."
        )
    if unseen:
        raise unknown_perturbation_error(model, unseen)


def check_saved_model_fits(attr_dict: dict, var_names, adata: AnnData) -> None:
    """Before ``load``: raise if ``adata``'s genes or perturbations do not fit the saved model.

    ``attr_dict`` and ``var_names`` are read from the model file. scvi-tools itself only warns
    about other genes and then fails with a tensor size mismatch; here the error says which
    genes or labels differ and what to do.
    """
    check_same_genes([str(v) for v in var_names], adata)
    registry = attr_dict["registry_"]
    key = registry["setup_args"]["perturbation_key"]
    if key not in adata.obs:
        return  # setup_anndata names the missing column
    state = _field_state(registry, REGISTRY_KEYS.PERTURBATION_KEY)
    known = {str(c) for c in state["categorical_mapping"]}
    labels = adata.obs[key].dropna().astype(str).unique()
    delimiter = registry["setup_args"].get("combination_delimiter")
    if delimiter is not None:
        control = state.get("control")
        labels = {s for label in labels for s in split_label(label, delimiter, control)}
        labels |= {control} if control is not None else set()
    unseen = sorted(set(labels) - known)
    if unseen:
        raise ValueError(
            f"adata.obs[{key!r}] holds perturbation(s) the saved model has not learned: "
            f"{unseen[:10]}{did_you_mean(unseen[0], known) if len(unseen) == 1 else ''}. Load "
            f"the model with its training data (or a subset of it), then add the new "
            f"perturbations with `model.transfer(adata_new)`."
        )


class DataChecksMixin:
    """The checks above, on SparseVAE's getters.

    ``load`` uses them through :class:`~sparsevae.model._safe_load.SafeSaveLoadMixin`.
    """

    def _validate_anndata(self, adata: AnnData | None = None, copy_if_view: bool = True):
        """scvi-tools' check that ``adata`` is registered, plus its genes and (if new) counts."""
        if adata is not None:
            check_same_genes(model_genes(self), adata)
            if self.get_anndata_manager(adata) is None:  # not registered: never checked
                layer = self.registry_["setup_args"].get("layer")
                validate_counts(adata, layer, warn_empty_genes=False)
        return super()._validate_anndata(adata, copy_if_view=copy_if_view)

    def get_latent_representation(self, adata: AnnData | None = None, *args, **kwargs):
        """As scvi-tools' ``get_latent_representation`` (posterior means by default).

        The encoder reads counts only, so any cells with the model's genes work; cells with
        perturbations the model has not learned get a ``UserWarning`` naming them and the
        calls that need :meth:`transfer` first.
        """
        if adata is not None:
            warn_unknown_perturbations(
                self, self._validate_anndata(adata), "get_latent_representation"
            )
        return super().get_latent_representation(adata, *args, **kwargs)

    def differential_abundance(
        self, adata: AnnData | None = None, sample_key: str | None = None, *args, **kwargs
    ):
        """As scvi-tools' ``differential_abundance``, with ``sample_key`` checked first.

        ``sample_key`` names the column of ``adata.obs`` with each cell's sample: the log
        density of every cell under each sample's aggregated posterior is written to
        ``adata.obsm["da_log_probs"]`` (cells × samples), as scvi-tools does, and returned.
        (scvi-tools fails with ``KeyError: None`` when it is not given, and returns nothing.)
        """
        data = self._validate_anndata(adata)
        if sample_key is None or sample_key not in data.obs:
            given = "not given" if sample_key is None else f"{sample_key!r} is not in adata.obs"
            hint = did_you_mean(sample_key, list(data.obs.columns)) if sample_key else ""
            raise ValueError(
                f"differential_abundance needs sample_key=..., the column of adata.obs with each "
                f"cell's sample ({given}).{hint} Columns: {list(data.obs.columns)[:10]}."
            )
        super().differential_abundance(data, sample_key, *args, **kwargs)
        return data.obsm["da_log_probs"]

    # Getters that evaluate p(z | a) need every perturbation of ``adata`` to be known.
    def get_elbo(self, adata: AnnData | None = None, *args, **kwargs):
        """As scvi-tools' ``get_elbo``; raises if ``adata`` holds unknown perturbations."""
        check_known_perturbations(self, self._validate_anndata(adata))
        return super().get_elbo(adata, *args, **kwargs)

    def get_marginal_ll(self, adata: AnnData | None = None, *args, **kwargs):
        """As scvi-tools' ``get_marginal_ll``; raises if ``adata`` holds unknown perturbations."""
        check_known_perturbations(self, self._validate_anndata(adata))
        return super().get_marginal_ll(adata, *args, **kwargs)

    def get_reconstruction_error(self, adata: AnnData | None = None, *args, **kwargs):
        """As scvi-tools' ``get_reconstruction_error``; raises for unknown perturbations."""
        check_known_perturbations(self, self._validate_anndata(adata))
        return super().get_reconstruction_error(adata, *args, **kwargs)
