"""Transfer: teach a trained SparseVAE the prior shift of perturbations it has not seen.

The paper's held-out protocol: encoder, decoder and dispersion stay frozen; only the new
perturbations' prior parameters are learned from a few of their cells. Every other parameter
of the model stays bitwise equal.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi.model.base import BaseModelClass

from sparsevae._constants import REGISTRY_KEYS
from sparsevae._validation import (
    check_label_variants,
    perturbation_categories,
    validate_counts,
    validate_indices,
)

from ._combinations import split_label
from ._matching import check_known_perturbations, check_same_genes, model_genes
from ._training_plan import TransferTrainingPlan

if TYPE_CHECKING:
    from typing import Self

logger = logging.getLogger(__name__)

#: Start of the warning of :meth:`TransferMixin.transfer` for labels the model has learned.
ALREADY_LEARNED = "adata holds perturbation(s) the model has already learned"


def learned_labels(
    labels: Iterable[str], known: Iterable[str], control: str | None, delimiter: str | None
) -> list[str]:
    """The ``labels`` (control excluded) every perturbation of which is in ``known``.

    With a combination ``delimiter``, a label is learned when each of its singles is.
    """
    known = set(known)
    return [
        label
        for label in map(str, labels)
        if label != control
        and set(split_label(label, delimiter, control) if delimiter else [label]) <= known
    ]


def copy_trained_tensors(trained: torch.nn.Module, new: torch.nn.Module) -> None:
    """Copy every tensor of ``trained`` into ``new``, which has rows for more categories.

    The prior's per-category tensors
    (:attr:`~sparsevae.module.PerturbationPrior.PER_CATEGORY`) go into their first rows (the
    added perturbations' rows follow); every other tensor must keep its shape.
    """
    per_category = {f"prior.{name}" for name in new.prior.PER_CATEGORY}
    state = new.state_dict()
    for key, value in trained.state_dict().items():
        if key in per_category:
            state[key][: value.shape[0]] = value
        elif state[key].shape == value.shape:
            state[key] = value.clone()
        else:
            raise RuntimeError(
                f"{key} has shape {tuple(value.shape)} in the trained model and "
                f"{tuple(state[key].shape)} in the transferred one, but the prior does not "
                "declare it per category (PerturbationPrior.PER_CATEGORY)."
            )
    new.load_state_dict(state)


def extend_latent_means(
    parent: BaseModelClass, new: BaseModelClass, adata: AnnData, added: list[str], batch_size
) -> np.ndarray:
    """After transfer: ``new`` keeps the parent's mean latents and library sizes, plus added's.

    The networks are the parent's, so the parent's means hold; the new perturbations' come
    from their cells in ``adata``.

    Returns the new perturbations' means, (len(added), n_latent): the gamma = 1 optimum of
    their prior shifts.
    """
    means = parent.knowledge.latent_means()
    index = pd.Index(new.knowledge.categories, name="category")
    means = means.reindex(index)
    libraries = parent.knowledge.log_library_means().reindex(index)
    if added:
        libraries.loc[added] = new.knowledge.log_library_means(adata, batch_size).loc[added]
        own = new.knowledge.latent_means(adata, batch_size)
        alone = [name for name in added if own.loc[name].isna().any()]
        if alone:
            raise ValueError(
                "transfer learns a new perturbation's shift from its cells alone, but adata "
                f"has no cells labelled only {alone[:10]} (they occur only in "
                "combinations). Add cells of each new single perturbation on its own."
            )
        means.loc[added] = own.loc[added].to_numpy()
    new.knowledge.keep_latent_means(means)
    new.knowledge.keep_log_library_means(libraries)
    return means.loc[added].to_numpy(dtype=np.float32)


class TransferMixin:
    """Held-out perturbations on :class:`~sparsevae.SparseVAE`.

    ``transfer`` learns new perturbations' prior rows; ``get_interventional_nll`` scores cells
    under p(z | a).
    """

    def transfer(
        self,
        adata: AnnData,
        *,
        sparse: bool = False,
        max_epochs: int = 100,
        batch_size: int = 256,
        lr_prior: float = 1e-2,
        **train_kwargs,
    ) -> Self:
        """A copy of this model that also knows the perturbations of ``adata`` it has not seen.

        Encoder, decoder and dispersion are frozen; only the new perturbations' prior
        parameters are learned from ``adata``'s cells (the paper's transfer step). Every
        parameter the model already had is copied unchanged, and this model is not modified.
        Perturbations in ``adata`` that the model knows keep their parameters (a warning names
        them), and data with nothing new to learn are refused. ``adata`` needs
        no ``setup_anndata``: it is registered with this model's setup, and its new labels are
        appended to the model's categories.

        Parameters
        ----------
        adata
            Counts of cells of the new perturbations (the same genes as the model's, same
            ``perturbation_key`` column).
        sparse
            ``False`` (the paper): gamma = 1 for new perturbations, and mu is set to its exact
            optimum, the mean of their cells' posterior means (no training needed; the
            priors with learned variances, ``"ivae-var"`` and ``"clap"``, start their new
            log-variances at 0 and train the new rows for ``max_epochs`` epochs).
            ``True``: masks are learned too (from that start, with the model's Beta(1, alpha)
            prior) for ``max_epochs`` epochs. Only for ``"spike_slab"`` / ``"l1"``.
        max_epochs, batch_size, lr_prior
            Training of the sparse transfer (and of the learned variances).
        **train_kwargs
            Passed to :meth:`train` for the sparse transfer (e.g. ``enable_progress_bar``).

        Returns
        -------
        A new :class:`SparseVAE` whose ``adata`` is ``adata``. For ``"standard"`` priors (VAE,
        beta-VAE) there is nothing to learn: the copy only knows the new labels.

        Raises
        ------
        ValueError
            When ``adata`` holds no perturbation the model has not learned (only known ones,
            only control cells, or the model's own training data): there would be nothing to
            learn. Also for ``max_epochs`` or ``batch_size`` below 1, and for a new label that
            is a known one up to surrounding spaces, or the control label up to case or
            spaces.

        Warns
        -----
        UserWarning
            When ``adata`` also holds perturbations the model has learned (named in the
            warning): they are not learned again, and keep their parameters; and for a new
            label that is a known one up to case.
        """
        prior = self.module.prior
        if sparse and not prior.has_masks:
            raise ValueError(
                f"sparse=True learns masks, but prior={prior.name!r} has none; use sparse=False."
            )
        self._check_if_trained(warn=False)
        if adata.n_obs == 0:
            raise ValueError("adata has no cells: transfer needs cells of the new perturbations.")
        if not max_epochs >= 1:
            raise ValueError(
                f"max_epochs={max_epochs!r}: the new perturbations' rows need at least one "
                "epoch where they are trained (sparse=True, learned variances); pass a positive "
                "number (default 100)."
            )
        if batch_size is not None and not batch_size >= 1:
            raise ValueError(
                f"batch_size={batch_size!r}: a minibatch needs at least one cell; pass a "
                "positive size (default 256)."
            )
        if adata is self.adata:
            raise ValueError(self._nothing_new_message(adata, own_data=True))
        check_same_genes(model_genes(self), adata)
        validate_counts(adata, self.registry_["setup_args"].get("layer"), warn_empty_genes=False)
        manager = self.adata_manager.transfer_fields(adata, extend_categories=True)
        mapping = manager.get_state_registry(REGISTRY_KEYS.PERTURBATION_KEY).categorical_mapping
        known = self.knowledge.categories
        new_names = [str(c) for c in mapping[len(known) :]]
        key = self.knowledge.perturbation_key
        check_label_variants(key, self.control, new_names, known=known)
        if not new_names:
            raise ValueError(self._nothing_new_message(adata, own_data=False))
        learned = learned_labels(
            perturbation_categories(adata.obs[key]),
            self.perturbation_names,
            self.control,
            self.combination_delimiter,
        )
        if learned:
            warnings.warn(
                f"{ALREADY_LEARNED}: {learned[:10]}{' ...' if len(learned) > 10 else ''}. "
                f"transfer learns only the new one(s), {new_names[:10]}; the learned ones keep "
                "their trained parameters, and their cells in adata do not change them. Leave "
                "those cells out to silence this; to learn a perturbation again from other "
                "cells, train a model without it and transfer it.",
                UserWarning,
                stacklevel=2,
            )
        cls = type(self)
        cls.register_manager(manager)

        params = {**self.init_params_["non_kwargs"], **self.init_params_["kwargs"]}
        # Keep the trained prior's options (e.g. its sparsity alpha, not K + the new ones);
        # those that are not SparseVAE arguments go to the prior through prior_kwargs.
        options = self.module.prior.hyperparameters()
        own = inspect.signature(cls.__init__).parameters
        params.update({k: v for k, v in options.items() if k in own})
        if extra := {k: v for k, v in options.items() if k not in own}:
            params["prior_kwargs"] = {**(params.get("prior_kwargs") or {}), **extra}
        new = cls(adata, **params)
        old_names, new_categories = known, new.knowledge.categories
        if new_categories[: len(old_names)] != old_names:  # the field appends; never reorders
            raise RuntimeError("Perturbation categories were reordered during transfer.")
        added = [c for c in new_categories[len(old_names) :] if c != new.control]
        logger.info("Transferring %d new perturbation(s): %s", len(added), added[:10])

        copy_trained_tensors(self.module, new.module)
        new.module.to(self.device)
        new.module.eval()
        new.is_trained_ = True
        latent_means = extend_latent_means(self, new, adata, added, batch_size)
        if not added:
            return new
        rows = [new_categories.index(name) for name in added]
        needs_training = new.module.prior.init_transfer(rows, lambda: latent_means, sparse)
        if needs_training:
            new._training_plan_cls = TransferTrainingPlan  # this run only
            try:  # the networks stay frozen: the cached latent means stay valid
                new.train(
                    max_epochs=max_epochs,
                    batch_size=batch_size,
                    lr_prior=lr_prior,
                    n_epochs_kl_warmup=None,
                    train_size=1.0,
                    recalibrate_batch_norm=False,  # frozen networks keep their statistics
                    plan_kwargs={"transfer_rows": rows},
                    **train_kwargs,
                )
            finally:
                del new._training_plan_cls
        return new

    def _nothing_new_message(self, adata: AnnData, own_data: bool) -> str:
        """The error of :meth:`transfer` for data that hold no perturbation to learn."""
        key = self.knowledge.perturbation_key
        labels = perturbation_categories(adata.obs[key]) if key in adata.obs else []
        perturbed = [label for label in labels if label != self.control]
        if own_data:
            what = "adata is the data this model was trained on"
        elif not perturbed:
            what = f"adata holds only control cells ({self.control!r})"
        else:
            what = (
                f"adata holds no perturbation the model has not learned: its labels "
                f"{perturbed[:10]}{' ...' if len(perturbed) > 10 else ''} are all known to it"
            )
        zero_shot = (
            " Combinations of learned singles need no transfer: predict them directly, e.g. "
            "`model.predict(control_cells, perturbation='A+B')`."
            if self.combination_delimiter is not None
            else ""
        )
        return (
            f"{what}, so transfer would learn nothing and return a copy of this model: it "
            "learns only new perturbations and keeps every learned one as it is. Pass cells "
            "of perturbations the model has not seen; to score or predict these cells, use "
            "the model's getters directly (e.g. `model.get_interventional_nll(adata)`)."
            f"{zero_shot}"
        )

    @torch.inference_mode()
    def get_interventional_nll(
        self,
        adata: AnnData | None = None,
        indices: np.ndarray | None = None,
        n_particles: int = 1000,
        batch_size: int | None = None,
        particles_per_pass: int | None = None,
    ) -> np.ndarray:
        """Interventional negative log-likelihood of each cell: -log p(x | a), estimated.

        The negative importance-weighted ELBO (Burda et al. 2016) with ``n_particles`` draws
        from q(z | x), decoded in vectorised chunks, under the evaluation readout of the prior
        (masks ``pi > 0.5``). With one particle it is the negative ELBO of a single draw; it
        decreases towards -log p(x | a) as ``n_particles`` grows. Observed library sizes are
        conditioned on, as in training.

        Parameters
        ----------
        adata
            Cells to evaluate (default: the model's); their perturbations must be known to the
            model (see :meth:`transfer`).
        indices
            Subset of cells of ``adata``.
        n_particles
            Importance samples per cell.
        batch_size
            Cells per minibatch (default: scvi-tools' ``settings.batch_size``).
        particles_per_pass
            Particles decoded at once (default: as many as fit about half a million values, which
            stay in the processor's cache).

        Returns
        -------
        Array of shape (n_cells,), in nats per cell (lower is better).
        """
        self._check_if_trained(warn=True)
        adata = self._validate_anndata(adata)
        check_known_perturbations(self, adata)
        if n_particles < 1:
            raise ValueError(f"n_particles must be >= 1, got {n_particles}.")
        if particles_per_pass is not None and particles_per_pass < 1:
            raise ValueError(
                f"particles_per_pass must be >= 1 (or None: as many as fit the cache), got "
                f"{particles_per_pass}."
            )
        validate_indices(indices)
        self.module.eval()
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        log_lik = [
            self.module.marginal_ll(
                tensors, n_mc_samples=n_particles, n_mc_samples_per_pass=particles_per_pass
            )
            for tensors in loader
        ]
        return -torch.cat(log_lik).numpy().astype(np.float64)
