"""SparseVAE: the AnnData-facing model (scvi-tools ``BaseModelClass``)."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField, LayerField
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin, VAEMixin

from sparsevae._constants import PRIORS, REGISTRY_KEYS, canonical_name
from sparsevae._validation import validate_setup
from sparsevae.module import SparseShiftVAE
from sparsevae.module._masked_priors import SPARSITY_OBJECTIVES
from sparsevae.module._priors import PRIOR_CLASSES, check_prior_kwargs

from . import _batch_norm
from ._combinations import PerturbationSetField, validate_combinations
from ._fields import PerturbationField
from ._guards import NonFiniteLossError
from ._interpret import InterpretationMixin
from ._knowledge import ModelKnowledge
from ._matching import DataChecksMixin
from ._predict import PredictionMixin
from ._predicted_cells import PredictedCellsMixin
from ._safe_load import SafeSaveLoadMixin
from ._training_checks import (
    check_training_arguments,
    warn_if_models_keep_another_setup,
    warn_if_schedule_restarts,
)
from ._training_plan import SparseVAETrainingPlan, TransferTrainingPlan
from ._transfer import TransferMixin

logger = logging.getLogger(__name__)

# Lightning's DDP strategies that fail when a parameter gets no gradient in a step.
_DDP_WITHOUT_UNUSED_PARAMETERS = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")


def default_max_epochs(n_cells: int, epochs_cap: int = 400, decay_at_n_cells: int = 20_000) -> int:
    """Training epochs when ``train`` is given none: scvi-tools' heuristic, at least 2.

    ``epochs_cap`` epochs up to ``decay_at_n_cells`` cells, then ``epochs_cap *
    decay_at_n_cells / n_cells`` (about 8 million cell passes in all). scvi-tools 1.4 keeps
    its own copy of this rule private (``scvi.model._utils``), so it is restated here. The
    floor of 2 leaves sVAE+ one epoch before and one after its latent rotation.

    Examples
    --------
    >>> default_max_epochs(3_000), default_max_epochs(100_000), default_max_epochs(10**7)
    (400, 80, 2)
    """
    if n_cells < 1:
        raise ValueError(f"n_cells must be positive, got {n_cells}.")
    return max(2, min(epochs_cap, round(epochs_cap * decay_at_n_cells / n_cells)))


#: Median cells per perturbation from which :func:`default_n_layers` gives the paper's two
#: hidden layers (below it, one).
DEEP_FROM_CELLS_PER_PERTURBATION = 100


def default_n_layers(
    median_cells_per_perturbation: float, deep_from: float = DEEP_FROM_CELLS_PER_PERTURBATION
) -> int:
    """Hidden layers of the encoder and decoder when :class:`SparseVAE` is given ``"auto"``.

    Two (the paper's) when the median perturbation has at least ``deep_from`` cells, else one
    (scvi-tools' default). Each perturbation's shifts are learned from its own cells; with tens
    of cells the deeper networks find latents that fit the counts as well or better (so the
    training loss cannot choose the depth) but identify worse.
    Measured on simulated screens (docs: Benchmarks, "Network depth"): with 25 to 70 cells per
    perturbation and at genome scale, one layer recovered the graph and latents better (much
    better with 25 and 40 cells); on the paper's simulation, two did from 100 cells. The rule
    sees only cells: on a realistic screen (shallow counts, gene-programme decoder) with 150
    cells per perturbation one layer was still better, so there it takes the worse depth.

    Examples
    --------
    >>> default_n_layers(25), default_n_layers(99.5), default_n_layers(100), default_n_layers(250)
    (1, 1, 2, 2)
    """
    if not median_cells_per_perturbation > 0:
        raise ValueError(
            "median_cells_per_perturbation must be positive, got "
            f"{median_cells_per_perturbation!r}."
        )
    return 2 if median_cells_per_perturbation >= deep_from else 1


class SparseVAE(
    InterpretationMixin,
    PredictionMixin,
    PredictedCellsMixin,
    TransferMixin,
    DataChecksMixin,
    SafeSaveLoadMixin,
    VAEMixin,
    UnsupervisedTrainingMixin,
    BaseModelClass,
):
    """Sparse mechanism shift VAE (sVAE+) and its baselines for Perturb-seq counts.

    Each cell's latent variables follow ``z | a ~ N(gamma_a * mu_a, I)``: perturbation ``a``
    shifts only the latents its sparse mask ``gamma_a`` selects, which makes the latents
    identifiable. Counts follow a negative binomial with the observed library size.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_latent
        Number of latent variables.
    n_hidden, n_layers, dropout_rate
        Encoder and decoder MLPs: ``n_layers`` hidden layers of ``n_hidden`` units. The default
        ``n_layers="auto"`` takes :func:`default_n_layers` of the median number of cells per
        perturbation label (control excluded): the paper's two layers from 100 cells, one
        below, where two recovered the graph and latents worse (docs: Benchmarks, "Network
        depth"). The model summary says which was taken. Dropout is off by default (on the
        paper's simulation it cost ELBO and lowered the latents' MCC).
    prior
        ``"spike_slab"`` (sVAE+, default), ``"l1"`` (sVAE), ``"dense"`` (iVAE) or
        ``"standard"`` (VAE; with ``beta`` > 1, beta-VAE).
        Label-conditional priors with learned variances (see
        :mod:`sparsevae.module._label_priors`): ``"ivae-var"`` (iVAE as published,
        z | a ~ N(mu_a, diag(sigma_a^2))) and ``"clap"`` (CLAP: label-dependent core latents,
        ``n_style`` shared style latents with a full covariance, and a label predictor from
        the core weighted ``predictor_weight``; options in ``prior_kwargs``).
        Unsupervised disentanglement baselines, the VAE plus a penalty on q(z) (options in
        ``prior_kwargs``, see :mod:`sparsevae.module._penalties`):

        - ``"beta-tcvae"``: beta-TCVAE, total correlation weighted ``tc_beta`` (6).
        - ``"dip-vae"``: DIP-VAE, Cov[q(z)] pulled towards I (``lambda_od`` 10, ``dip_type``).
        - ``"factorvae"``: FactorVAE, discriminator-estimated total correlation, ``gamma`` (30).

        ``"sams-vae"``: SAMS-VAE (Bereket & Karaletsos 2023), the closest peer: ``z = z_basal +
        sum_t m_t * e_t`` with global masks ``m ~ Bernoulli(0.01)`` and embeddings ``e ~ N(0,
        1)`` learned variationally, the encoder seeing the cell's offset; options (e.g.
        ``mask_prior_prob``, ``guide="correlated"``) in ``prior_kwargs``, see
        :class:`~sparsevae.module.SAMSPrior` and docs/sams_vae.md.
    beta
        Weight of the KL divergence of z.
    alpha
        Sparsity: the Beta(1, alpha) parameter of ``"spike_slab"`` (default: the number of
        perturbations K, the paper's recommendation) or the weight of ``"l1"``'s published
        penalty ``alpha * mean(pi)`` (default: 1, chosen by held-out NLL on a tuning
        simulation, ``benchmarks/simulation_tuning.py``). The other priors have no sparsity
        level: an ``alpha`` given with them raises ``ValueError``.
    sparsity
        How ``"spike_slab"`` charges an edge (see :class:`~sparsevae.module.SpikeSlabPrior`):
        ``"calibrated"`` (default), the variational spike-and-slab, whose KL to the
        Beta-Bernoulli marginal keeps an edge when the data favour it by more than
        ``log(alpha)`` nats (about ``log K``); ``"paper"``, the published practical objective
        ``-log Beta(pi; 1, alpha)``, whose bar of about ``2 (alpha - 1)`` nats grows with the
        number of perturbations and empties the graph of large screens. Other priors have no
        such choice: another value with them raises ``ValueError``.
    temperature
        Gumbel-sigmoid temperature of the masks (``mask_estimator="gumbel"`` only).
    prior_kwargs
        The prior's own options beyond ``alpha`` and ``temperature``, e.g.
        ``{"gamma": 30.0}`` for ``"factorvae"``; each prior's class documents them (see
        :data:`~sparsevae.module.PRIOR_CLASSES`). An option the prior does not have is an
        error.
    use_batch_norm
        Where the MLPs use batch normalisation: ``"both"``, ``"encoder"``, ``"decoder"``,
        ``"none"``.
    mask_estimator
        How training averages the KL term over the masks of ``"spike_slab"`` / ``"l1"``:
        ``"exact"`` (default) computes the expectation in closed form, which the Gaussian
        prior allows, so the mask logits and shifts get exact, noise-free gradients;
        ``"gumbel"`` samples one straight-through Gumbel-sigmoid mask per cell, as the
        published code does. Both optimise the same objective.

    Examples
    --------
    >>> import sparsevae as sv
    >>> adata = sv.data.simulate_sparse_shift(n_perturbations=20, n_latent=5, random_state=0)
    >>> sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    >>> model = sv.SparseVAE(adata, n_latent=5)
    >>> model.train(max_epochs=20)
    >>> pi = model.get_mask_probabilities()
    """

    _module_cls = SparseShiftVAE
    _training_plan_cls = SparseVAETrainingPlan

    def __init__(
        self,
        adata: AnnData,
        n_latent: int = 15,
        n_hidden: int = 128,
        n_layers: int | Literal["auto"] = "auto",
        dropout_rate: float = 0.0,
        prior: Literal[
            "spike_slab",
            "l1",
            "dense",
            "ivae-var",
            "standard",
            "beta-tcvae",
            "dip-vae",
            "factorvae",
            "clap",
            "sams-vae",
        ] = PRIORS.SPIKE_SLAB,
        beta: float = 1.0,
        alpha: float | None = None,
        temperature: float = 1.0,
        use_batch_norm: Literal["encoder", "decoder", "none", "both"] = "both",
        mask_estimator: Literal["exact", "gumbel"] = "exact",
        prior_kwargs: dict | None = None,
        sparsity: Literal["calibrated", "paper"] = "calibrated",
    ):
        if adata is None:
            raise ValueError("SparseVAE needs an AnnData registered with setup_anndata.")
        super().__init__(adata)
        prior = canonical_name(prior, "prior")
        if prior not in PRIOR_CLASSES:
            raise ValueError(f"prior={prior!r} is unknown; choose one of {sorted(PRIOR_CLASSES)}.")
        check_prior_kwargs(prior, prior_kwargs)
        if n_latent < 1:
            raise ValueError(f"n_latent must be a positive integer, got {n_latent}.")
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta}.")
        if sparsity not in SPARSITY_OBJECTIVES:
            raise ValueError(
                f"sparsity={sparsity!r} is unknown; choose one of {SPARSITY_OBJECTIVES}."
            )
        if sparsity != "calibrated" and "sparsity" not in PRIOR_CLASSES[prior].option_names():
            raise ValueError(
                f"sparsity={sparsity!r} is an option of prior='spike_slab' (sVAE+); "
                f"prior={prior!r} has no Beta-Bernoulli masks. Leave sparsity unset."
            )
        if alpha is not None and "alpha" not in PRIOR_CLASSES[prior].option_names():
            raise ValueError(
                f"alpha={alpha!r} is the sparsity level of prior='spike_slab' (sVAE+) and "
                f"prior='l1' (sVAE); prior={prior!r} has none, so it would be ignored. Leave "
                "alpha unset (its own options go in prior_kwargs)."
            )
        n_layers, depth_note = self._resolve_n_layers(n_layers)
        n_perturbed = len(self.perturbation_names)
        default_alpha = PRIOR_CLASSES[prior].default_alpha(n_perturbed)
        resolved_alpha = float(default_alpha if alpha is None else alpha)
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            n_perturbations=len(self.knowledge.categories),
            control_index=self.knowledge.control_index,
            n_batch=self.summary_stats.n_batch,
            n_hidden=n_hidden,
            n_latent=n_latent,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            prior=prior,
            beta=beta,
            alpha=resolved_alpha,
            temperature=temperature,
            use_batch_norm=use_batch_norm,
            mask_estimator=mask_estimator,
            prior_kwargs=prior_kwargs,
            sparsity=sparsity,
        )
        self._model_summary_string = (
            f"SparseVAE with prior={prior!r}, n_latent={n_latent}, n_hidden={n_hidden}, "
            f"n_layers={n_layers}{depth_note}, beta={beta}, "
            + (
                f"alpha={resolved_alpha:g}, "
                if "alpha" in PRIOR_CLASSES[prior].option_names()
                else ""
            )
            + (f"sparsity={sparsity!r}, " if prior == PRIORS.SPIKE_SLAB else "")
            + f"{n_perturbed} perturbations."
        )
        self.init_params_ = self._get_init_params(locals())
        type(self)._models.add(self)

    def _resolve_n_layers(self, n_layers: int | str) -> tuple[int, str]:
        """The number of hidden layers, and a note for the summary when ``"auto"`` chose it."""
        if isinstance(n_layers, str) and n_layers == "auto":
            labels = self.adata.obs[self.knowledge.perturbation_key].astype(str)
            if self.control is not None:
                labels = labels[labels != self.control]
            counts = labels.value_counts()
            if counts.empty:  # only control cells: nothing to measure, the paper's depth
                return 2, " (auto: no perturbed cells)"
            median = float(counts.median())
            return default_n_layers(median), f" (auto: median {median:g} cells per perturbation)"
        if (
            isinstance(n_layers, bool)
            or not isinstance(n_layers, (int, np.integer))
            or n_layers < 1
        ):
            raise ValueError(f"n_layers must be a positive integer or 'auto', got {n_layers!r}.")
        return int(n_layers), ""

    #: Models alive now (weakly held): setup_anndata warns when it re-registers their data.
    _models: ClassVar[weakref.WeakSet] = weakref.WeakSet()

    # ---- registration --------------------------------------------------------------------
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        perturbation_key: str,
        control: str | None = None,
        layer: str | None = None,
        batch_key: str | None = None,
        combination_delimiter: str | None = None,
        **kwargs,
    ) -> None:
        """Register raw counts and perturbation labels of ``adata`` for SparseVAE.

        Parameters
        ----------
        adata
            Cells × genes AnnData with raw integer counts.
        perturbation_key
            Column of ``adata.obs`` with one perturbation label per cell.
        control
            Label of unperturbed cells (no shift), or ``None`` if there are none.
        layer
            Layer with the counts; ``None`` uses ``adata.X``.
        batch_key
            Optional column of ``adata.obs`` with batches (given to the decoder).
        combination_delimiter
            ``None`` (default): each label is one perturbation. A string such as ``"+"``: a
            label ``"A+B"`` is the set {A, B} of single perturbations. The model then learns
            one shift and mask per single, a cell's prior mean is the sum of its singles'
            shifts, getters list singles, and pairs of trained singles need no transfer.

        Raises
        ------
        KeyError
            If ``perturbation_key``, ``layer`` or ``batch_key`` is missing (close matches are
            suggested).
        ValueError
            For non-integer (e.g. log-normalised), negative or non-finite counts, cells with
            zero counts, missing or empty labels or batches, a ``control`` label that does not
            occur, only control cells, or a single perturbation without control; for repeated
            gene names, and for labels that are the control label up to case or surrounding
            spaces, or another label up to surrounding spaces.

        Warns
        -----
        UserWarning
            For genes without counts and perturbations with fewer than 10 cells (both are
            kept), repeated cell names, labels that differ only in case, and when a model
            built on ``adata`` has another setup (it keeps its own; the new setup applies to
            models built from now on).

        Every check runs here, before training, over every count (sparse matrices are read
        through their stored values, never densified).
        """
        if control is not None and not isinstance(control, str):
            control = str(control)  # labels are registered as strings
        setup_method_args = cls._get_setup_method_args(**locals())
        validate_setup(
            adata,
            perturbation_key,
            control,
            layer,
            batch_key,
            for_trained_model="source_registry" in kwargs,  # load replays a trained setup
        )
        if combination_delimiter is None:
            perturbation_field = PerturbationField(
                REGISTRY_KEYS.PERTURBATION_KEY, perturbation_key, control
            )
        else:
            validate_combinations(adata, perturbation_key, control, combination_delimiter)
            perturbation_field = PerturbationSetField(
                REGISTRY_KEYS.PERTURBATION_KEY, perturbation_key, control, combination_delimiter
            )
        anndata_fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            perturbation_field,
        ]
        if "source_registry" not in kwargs:  # not a replay of a trained model's setup
            warn_if_models_keep_another_setup(cls._models, adata, setup_method_args["setup_args"])
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    # ---- training ------------------------------------------------------------------------
    def train(
        self,
        max_epochs: int | None = None,
        batch_size: int = 256,
        lr: float = 2e-3,
        lr_prior: float = 1e-2,
        n_epochs_kl_warmup: int | None = 50,
        freeze_masks_at: float | None = 0.8,
        rotate_latents: bool | None = None,
        recalibrate_batch_norm: bool = True,
        plan_kwargs: dict | None = None,
        **kwargs,
    ):
        """Train with scvi-tools' runner and :class:`SparseVAETrainingPlan`.

        Parameters
        ----------
        max_epochs
            Passes over the data; default :func:`default_max_epochs` (scvi-tools' rule: 400
            for up to 20,000 cells, then ``400 * 20,000 / n_cells``, so that every default
            run takes about the same number of steps; at least 2).
        batch_size
            Minibatch size (256 with the default ``lr``; a smaller ``lr`` at this size learned
            the paper's simulation more slowly).
        lr
            Adam learning rate of the encoder and decoder.
        lr_prior
            Adam learning rate of the prior's shifts and mask logits. Each of them is informed
            by the cells of a single perturbation, so it needs a larger step than the shared
            networks to keep pace.
        n_epochs_kl_warmup
            Epochs over which the KL weight rises from 0 to 1 (capped at ``max_epochs``).
        freeze_masks_at
            Fraction of ``max_epochs`` after which masks are fixed to ``pi > 0.5`` and the
            sparsity term is dropped, so that the last epochs train under the prior that
            evaluation uses (``None``: never). Only for ``"spike_slab"`` / ``"l1"``.
        rotate_latents
            Once, when the KL warm-up ends (at most half-way through training), turn the latent
            space to the orientation in which the perturbations' mean latent shifts are
            sparsest (smallest L1 norm), then go on training; every mask restarts
            undecided (pi = 0.5).
            The fit of the data does not change (the decoder takes the rotation back); only the
            sparse prior can tell orientations apart, and gradient descent turns towards its
            preferred one slowly. On the paper's simulation this lifted the MCC of runs stuck
            with mixed latents from 0.69 / 0.73 to 0.96 / 0.96. ``None`` (default): on for
            sVAE+ (``"spike_slab"``), off for the sVAE baseline (``"l1"``, which keeps its
            published training; ``True`` turns it on). The ``"dense"`` and ``"standard"``
            priors prefer no orientation, so ``True`` is an error for them. See
            :mod:`sparsevae.module._rotation`.
        recalibrate_batch_norm
            After training, recompute the batch-norm layers' running statistics with the final
            weights in one pass over the training cells (no gradients; parameters unchanged).
            Eval mode, which every getter and the interventional NLL use, otherwise normalises
            with a moving average of statistics of earlier weights. See
            :mod:`sparsevae.model._batch_norm`; ``benchmarks/batch_norm.py`` measures the
            difference.
        plan_kwargs
            Further keyword arguments of :class:`SparseVAETrainingPlan`.
        **kwargs
            Passed to :meth:`scvi.model.base.UnsupervisedTrainingMixin.train` (``accelerator``,
            ``devices``, ``strategy``, ``train_size``, ``early_stopping``, ...) and to the
            Lightning trainer. ``strategy="ddp"`` (distributed data parallel, one process per
            device) becomes ``"ddp_find_unused_parameters_true"``: some parameters get no
            gradient in a step (the mask logits once masks are frozen, and the parts of
            scvi-tools' decoder that SparseVAE does not use), which plain DDP refuses. Run
            DDP from a script, not a notebook: Lightning starts the other processes by running
            the same command again.

        Raises
        ------
        NonFiniteLossError
            (a ``FloatingPointError``) when a loss term or a gradient becomes NaN or infinite.
            Its message names the term and the step; the model keeps the parameters of the last
            step with a finite loss.
        ValueError
            Before training, for arguments with which it would learn nothing: ``max_epochs``
            below 1, ``batch_size`` below 1, ``lr`` or ``lr_prior`` not positive, ``train_size``
            outside (0, 1] (scvi-tools would read 0 as 0.9).

        Warns
        -----
        EmptyGraphWarning
            (a ``UserWarning``, :class:`sparsevae.EmptyGraphWarning`) after training, when most
            perturbations have no target latent (the sparsity prior pruned their edges).
        UserWarning
            When the model is already trained and the new schedule restarts part of it (see
            below).

        Randomness (initial weights, minibatch order, validation split, mask noise) comes from
        ``scvi.settings.seed``: set it before building the model. On CPU, the same seed and
        number of threads give identical results.

        Training a trained model again continues from its parameters (as scvi-tools does; the
        history gains the new epochs and the cached latent means are recomputed), but under a
        new schedule: the KL warm-up starts again from 0 and, for sVAE+, the rotation runs again
        and every mask restarts undecided. That warns; pass ``n_epochs_kl_warmup=None,
        rotate_latents=False`` to only refine the model, or build a new one to start afresh.
        """
        if max_epochs is None:
            max_epochs = default_max_epochs(self.adata.n_obs)
            logger.info("max_epochs not given: %d for %d cells.", max_epochs, self.adata.n_obs)
        n_cells = self.adata.n_obs
        check_training_arguments(
            n_cells, default_max_epochs(n_cells), max_epochs, batch_size, lr, lr_prior,
            kwargs.get("train_size"),
        )  # fmt: skip
        warmup = None if n_epochs_kl_warmup is None else min(n_epochs_kl_warmup, max_epochs)
        if self.is_trained_ and not issubclass(self._training_plan_cls, TransferTrainingPlan):
            warn_if_schedule_restarts(self.module.prior, max_epochs, warmup, rotate_latents)
        strategy = kwargs.get("strategy")
        if isinstance(strategy, str) and strategy in _DDP_WITHOUT_UNUSED_PARAMETERS:
            kwargs["strategy"] = f"{strategy}_find_unused_parameters_true"
        plan = {
            "lr": lr,
            "lr_prior": lr_prior,
            "n_epochs_kl_warmup": warmup,
            "freeze_masks_at": freeze_masks_at,
            "rotate_latents": rotate_latents,
            **(plan_kwargs or {}),
        }
        try:
            result = super().train(
                max_epochs=max_epochs, batch_size=batch_size, plan_kwargs=plan, **kwargs
            )
        except NonFiniteLossError:
            self.module.eval()  # the plan restored the last good parameters; keep them usable
            raise
        if recalibrate_batch_norm:
            _batch_norm.recalibrate_batch_norm(self, batch_size)
        from ._graph_warning import warn_if_graph_is_empty

        warn_if_graph_is_empty(self)  # most perturbations without a target: say so
        return result

    # ---- what the model knows ------------------------------------------------------------
    @property
    def knowledge(self) -> ModelKnowledge:
        """What the fitted model knows, in one place: categories, names, readouts, mean latents.

        See :class:`~sparsevae.model.ModelKnowledge`; every part of the model reads it.
        """
        if self.__dict__.get("_knowledge") is None:
            self._knowledge = ModelKnowledge(self)
        return self._knowledge

    @property
    def control(self) -> str | None:
        """Label of the control cells, or ``None``."""
        return self.knowledge.control

    @property
    def combination_delimiter(self) -> str | None:
        """Delimiter of combination labels (``"A+B"``), or ``None`` for one label per cell."""
        return self.knowledge.combination_delimiter

    @property
    def perturbation_names(self) -> list[str]:
        """Perturbations known to the model (control excluded), in the order of every getter."""
        return self.knowledge.perturbation_names

    @property
    def latent_names(self) -> list[str]:
        """Names of the latent variables: ``latent_0`` ... ``latent_{n_latent - 1}``."""
        return self.knowledge.latent_names

    # ---- getters -------------------------------------------------------------------------
    @property
    def prior_name(self) -> str:
        """Name of the prior: ``"spike_slab"``, ``"l1"``, ``"dense"`` or ``"standard"``."""
        return self.module.prior.name

    @torch.inference_mode()
    def get_mask_probabilities(
        self, perturbations: str | Sequence[str] | None = None
    ) -> pd.DataFrame:
        """P(gamma = 1): the probability that each perturbation targets each latent.

        For the mask-free priors this is the prior's definition: 1 for ``"dense"`` (every
        latent is shifted) and 0 for ``"standard"`` (nothing is).

        Parameters
        ----------
        perturbations
            Rows to return (default: every perturbation the model knows). Unknown names raise
            a ``ValueError`` that lists the known ones.

        Returns
        -------
        DataFrame perturbations × latents with values in [0, 1].
        """
        self._check_if_trained(warn=True)
        return self.knowledge.frame(self.knowledge.mask_probabilities(), perturbations)

    @torch.inference_mode()
    def get_perturbation_shifts(
        self,
        adata: AnnData | None = None,
        batch_size: int | None = None,
        perturbations: str | Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Shift of the latent mean caused by each perturbation.

        For ``"spike_slab"`` / ``"l1"``: ``mu`` where ``pi > 0.5``, else 0. For ``"dense"``:
        ``mu``. For ``"standard"`` (no learned shift): the mean latent representation of the
        perturbation's cells minus that of control cells (without control: minus the
        per-latent median of the perturbations' means; one definition, :mod:`sparsevae._shifts`),
        computed on ``adata`` (default: the training data), whose perturbations must be known
        to the model. ``perturbations`` selects rows, as in :meth:`get_mask_probabilities`.
        """
        self._check_if_trained(warn=True)
        shifts = self.knowledge.category_shifts("evaluation_shifts", adata, batch_size)
        return self.knowledge.frame(shifts, perturbations)

    def get_intervention_targets(
        self,
        threshold: float = 0.5,
        n_top: int = 2,
        perturbations: str | Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """The perturbation→latent graph as booleans.

        Masked priors: ``pi > threshold``. Mask-free priors (iVAE, VAE): the ``n_top`` latents
        with the largest absolute shift per perturbation (the paper's readout).
        ``perturbations`` selects rows, as in :meth:`get_mask_probabilities`. A ``threshold``
        outside [0, 1) or an ``n_top`` below 1 would select nothing, and raises.
        """
        if not 0 <= threshold < 1:
            raise ValueError(
                f"threshold={threshold!r} must be in [0, 1): no mask probability exceeds 1, so "
                "no edge would be a target. The default is 0.5."
            )
        if isinstance(n_top, bool) or not isinstance(n_top, int | np.integer) or n_top < 1:
            raise ValueError(
                f"n_top={n_top!r} must be a positive integer: the latents with the largest "
                "|shift| that the mask-free priors count as targets (0 selects none). The "
                "default is 2."
            )
        self._check_if_trained(warn=True)
        return self.knowledge.frame(self.knowledge.targets(threshold, n_top), perturbations)
