"""Transfer: teach a trained SparseVAE the prior shift of perturbations it has not seen.

The paper's held-out protocol: encoder, decoder and dispersion stay frozen; only the new
perturbations' prior parameters are learned from a few of their cells. Every other parameter
of the model stays bitwise equal.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING

import numpy as np
import torch
from anndata import AnnData

from sparsevae._validation import validate_counts

from ._matching import check_known_perturbations, check_same_genes, model_genes
from ._training_plan import TransferTrainingPlan

if TYPE_CHECKING:
    from ._model import SparseVAE

logger = logging.getLogger(__name__)


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
    ) -> SparseVAE:
        """A copy of this model that also knows the perturbations of ``adata`` it has not seen.

        Encoder, decoder and dispersion are frozen; only the new perturbations' prior
        parameters are learned from ``adata``'s cells (the paper's transfer step). Every
        parameter the model already had is copied unchanged, and this model is not modified.
        Perturbations in ``adata`` that the model knows keep their parameters. ``adata`` needs
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
            priors with learned variances, ``"dense_var"`` and ``"clap"``, start their new
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
        """
        self.module.prior.check_transfer(sparse)
        self._check_if_trained(warn=False)
        if adata.n_obs == 0:
            raise ValueError("adata has no cells: transfer needs cells of the new perturbations.")
        check_same_genes(model_genes(self), adata)
        validate_counts(adata, self.registry_["setup_args"].get("layer"), warn_empty_genes=False)
        manager = self.adata_manager.transfer_fields(adata, extend_categories=True)
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
        old_names, new_categories = self._categories, new._categories
        if new_categories[: len(old_names)] != old_names:  # the field appends; never reorders
            raise RuntimeError("Perturbation categories were reordered during transfer.")
        added = [c for c in new_categories[len(old_names) :] if c != new.control]
        logger.info("Transferring %d new perturbation(s): %s", len(added), added[:10])

        # Copy every trained tensor; prior tensors gain rows for the added perturbations.
        state = new.module.state_dict()
        for key, value in self.module.state_dict().items():
            if state[key].shape == value.shape:
                state[key] = value.clone()
            else:
                state[key][: value.shape[0]] = value
        new.module.load_state_dict(state)
        new.module.to(self.device)
        new.module.eval()
        new.is_trained_ = True
        latent_means = new._extend_latent_means(self, adata, added, batch_size)
        if not added:
            return new
        rows = [new_categories.index(name) for name in added]
        needs_training = new.module.prior.init_transfer(rows, lambda: latent_means, sparse)
        if needs_training:
            new._training_plan_cls = TransferTrainingPlan  # this run only
            cache = new._latent_mean_cache  # the encoder is frozen: the latents stay
            try:
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
                new._latent_mean_cache = cache
        return new

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
        self.module.eval()
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        log_lik = [
            self.module.marginal_ll(
                tensors, n_mc_samples=n_particles, n_mc_samples_per_pass=particles_per_pass
            )
            for tensors in loader
        ]
        return -torch.cat(log_lik).numpy().astype(np.float64)
