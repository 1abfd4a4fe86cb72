"""The prior protocol and the priors without masks (standard: VAE, dense: iVAE).

Priors over the latent variables given the perturbation label.

Every method of the package is the same VAE with a different prior object (scvi-tools'
``sysvi`` does the same for its priors):

=====================  =========  ==========================================================
``prior=``             method     p(z | a)
=====================  =========  ==========================================================
``"standard"``         VAE        N(0, I); labels ignored (beta-VAE: ``beta`` > 1)
``"dense"``            iVAE       N(mu_a, I)
``"ivae-var"``         iVAE-var   N(mu_a, diag(sigma_a^2)), mean and variance learned
``"clap"``             CLAP       core N(mu_a, D_a), style N(m, G) shared; + label predictor
``"l1"``               sVAE       N(gamma_a * mu_a, I), L1 penalty on P(gamma = 1)
``"spike_slab"``       sVAE+      N(gamma_a * mu_a, I), pi ~ Beta(1, alpha), gamma ~ Bern(pi)
``"beta-tcvae"``       β-TCVAE    N(0, I); + (tc_beta - 1) * total correlation of q(z)
``"dip-vae"``          DIP-VAE    N(0, I); + penalty on Cov[q(z)] - I
``"factorvae"``        FactorVAE  N(0, I); + gamma * total correlation (discriminator)
``"sams-vae"``         SAMS-VAE   N(sum_t m_t * e_t, I), m ~ Bern(0.01), e ~ N(0, 1) global
=====================  =========  ==========================================================

The last three are unsupervised disentanglement baselines (:mod:`._penalties`): the VAE
plus a minibatch penalty on q(z) (:meth:`PerturbationPrior.batch_penalty`).
``"ivae-var"`` and ``"clap"`` learn label-dependent variances (:mod:`._label_priors`);
CLAP's core latents are the first ``n_latent - n_style``, its style latents the last; control
cells keep N(0, I) in both. ``"sams-vae"`` (:mod:`._sams`) learns its masks and embeddings
variationally and its encoder also reads the cell's offset (:attr:`PerturbationPrior.adds_offset`).

Control cells (``control_index``) always get a zero shift.

A cell's perturbation is a row of category codes, shape (n,) for one label per cell or (n, k)
for sets of singles (combinations, padded with -1). The shift of a set is the sum of its
singles' shifts: ``sum_t gamma_t * mu_t``.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar, NamedTuple

import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from sparsevae._constants import PRIORS

# Probabilities are kept inside [_PROB_EPS, 1 - _PROB_EPS] in every log-density so that a mask
# that has converged to exactly 0 or 1 never produces -inf (and then NaN gradients).
_PROB_EPS = 1e-6
#: How the KL term's expectation over the masks is computed in training (see MaskedPrior).
MASK_ESTIMATORS = ("exact", "gumbel")
_MAX_LOGIT = math.log((1.0 - _PROB_EPS) / _PROB_EPS)


class Minibatch(NamedTuple):
    """What :meth:`PerturbationPrior.batch_penalty` sees of a training step."""

    #: q(z | x) of the minibatch's cells (loc and scale of shape (n, n_latent)).
    qz: Normal
    #: Its reparameterised draws, (n, n_latent).
    z: torch.Tensor
    #: The cells' perturbation codes, (n, k) (see the module docstring).
    codes: torch.Tensor
    #: The KL warm-up factor, for terms that follow it.
    kl_weight: float
    #: The number of training cells (minibatch-weighted sampling).
    n_obs: int


class PerturbationPrior(nn.Module, ABC):
    """The prior protocol: p(z | a), its KL, and what the services around it read.

    A prior implements its density: the per-cell prior (:meth:`cell_mean`,
    :meth:`distribution`, :meth:`kl`, :meth:`log_density`) and its global and minibatch terms
    (:meth:`penalty`, :meth:`batch_penalty`), with its optimiser groups and options. It
    *declares* what the services read, so they never branch on which prior it is:

    - readouts (:mod:`._readouts`: shifts and the graph of the getters) read
      :meth:`learned_shifts`, :meth:`mask_probabilities`, :attr:`has_masks` and
      :meth:`readout_latents`;
    - the training schedule and rotation (:mod:`._rotation`, the training plan) call
      :meth:`start_training`, :meth:`freeze_masks`, :meth:`resolve_rotation`,
      :meth:`can_rotate` and, for priors with shifts, ``rotate``;
    - transfer (:mod:`sparsevae.model._transfer`) reads :attr:`PER_CATEGORY` and
      :attr:`has_masks` and calls :meth:`init_transfer`.

    Adding a prior is one subclass and one line of :data:`PRIOR_CLASSES`.

    Parameters
    ----------
    n_perturbations
        Number of perturbation categories, control included.
    n_latent
        Number of latent variables.
    control_index
        Category code of the control cells (no shift), or ``None`` if there is no control.
    """

    name: str
    #: Whether the prior has Bernoulli masks gamma (sVAE+, sVAE): the readouts use pi, sparse
    #: transfer learns masks, the latent space can be rotated to its sparsest orientation.
    has_masks: ClassVar[bool] = False
    #: The prior's parameters and buffers with one row per category, declared (never guessed
    #: from shapes): transfer gives them rows for the new perturbations and trains only those
    #: rows; every other tensor keeps its shape. A subclass adds its own names.
    PER_CATEGORY: ClassVar[tuple[str, ...]] = ("is_perturbed",)
    #: Whether z = z_basal + :meth:`cell_mean` (SAMS-VAE): the module then adds each cell's
    #: prior mean (drawn once per step in training) to the encoder's output, and the KL term
    #: compares q(z | x, a) with N(that mean, I).
    adds_offset: ClassVar[bool] = False

    @property
    def encoder_sees_offset(self) -> bool:
        """Whether the encoder also reads each cell's :meth:`cell_mean` (SAMS-VAE's default)."""
        return False

    def __init__(self, n_perturbations: int, n_latent: int, control_index: int | None = None):
        super().__init__()
        self.n_perturbations = n_perturbations
        self.n_latent = n_latent
        self.control_index = control_index
        is_perturbed = torch.ones(n_perturbations)
        if control_index is not None:
            is_perturbed[control_index] = 0.0
        self.register_buffer("is_perturbed", is_perturbed)

    @classmethod
    def default_alpha(cls, n_perturbed: int) -> float:
        """``alpha`` when the user leaves it unset (priors without one ignore it): K."""
        return float(n_perturbed)

    @classmethod
    def option_names(cls) -> list[str]:
        """The prior's options: the arguments of its ``__init__`` after ``control_index``."""
        for klass in cls.__mro__:  # the first __init__ that names its arguments
            parameters = list(inspect.signature(klass.__init__).parameters.values())
            if not any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
                return [p.name for p in parameters[4:] if p.kind is not p.VAR_KEYWORD]
        return []

    @classmethod
    def from_options(
        cls, n_perturbations: int, n_latent: int, control_index: int | None, **options
    ) -> PerturbationPrior:
        """Build from the model's prior options (``alpha``, ``temperature``, ``prior_kwargs``).

        A prior takes the options it has (:meth:`option_names`) and ignores the others.
        """
        names = cls.option_names()
        kept = {key: value for key, value in options.items() if key in names}
        return cls(n_perturbations, n_latent, control_index, **kept)

    # ---- per-cell quantities --------------------------------------------------------------
    def _codes(self, perturbation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes (n, k) with padding replaced by 0, and weights (n, k): 1 for perturbed slots.

        ``perturbation`` holds category codes, shape (n,) or (n, k) padded with negative codes.
        """
        codes = perturbation.reshape(perturbation.shape[0], -1).long()
        valid = codes >= 0
        codes = codes.clamp(min=0)
        return codes, self.is_perturbed[codes] * valid.to(self.is_perturbed.dtype)

    @abstractmethod
    def cell_mean(self, perturbation: torch.Tensor) -> torch.Tensor:
        """Prior mean of z for each cell; ``perturbation``: codes, shape (n,) or (n, k)."""

    def distribution(self, perturbation: torch.Tensor) -> Normal:
        """p(z | a) for each cell."""
        mean = self.cell_mean(perturbation)
        return Normal(mean, torch.ones_like(mean))

    @property
    def kl_is_closed_form(self) -> bool:
        """Whether :meth:`kl` computes its value from the codes alone, without a drawn ``pz``."""
        return False

    def kl(self, qz: Normal, perturbation: torch.Tensor, pz: Normal | None = None) -> torch.Tensor:
        """KL(q(z | x) || p(z | a)) summed over latents, one value per cell.

        ``pz``: the prior already drawn by the module's generative pass (so a sampled mask is
        drawn once per step); computed from ``perturbation`` when not given.
        """
        if pz is None:
            pz = self.distribution(perturbation)
        return kl_divergence(qz, pz).sum(dim=-1)

    def log_density(self, z: torch.Tensor, perturbation: torch.Tensor) -> torch.Tensor:
        """The log prior density log p(z | a), without its ``-d/2 log(2 pi)`` constant.

        The IWELBO's prior term.

        ``z``: shape (n_cells, n_particles, n_latent); ``perturbation``: codes, (n,) or (n, k).
        Returns shape (n_cells, n_particles).
        """
        pz = self.distribution(perturbation)
        loc, scale = pz.loc.unsqueeze(1), pz.scale.unsqueeze(1)
        return -0.5 * ((z - loc) / scale).square().sum(dim=-1) - torch.log(scale).sum(dim=-1)

    # ---- global quantities ----------------------------------------------------------------
    def penalty(self) -> torch.Tensor:
        """Negative log prior density of the global parameters (0 when there are none).

        Enters the loss as ``kl_weight * penalty / N`` (N training cells): the global term of
        Lopez et al. (2023)'s objective on the per-cell scale.
        """
        return self.is_perturbed.new_zeros(())

    def batch_penalty(self, batch: Minibatch) -> torch.Tensor:
        """A regulariser computed on the minibatch, added to the per-cell loss as returned.

        For methods whose objective is not an ELBO of this prior alone: the published sVAE's
        ``alpha * mean(pi)``, beta-TCVAE's total correlation, DIP-VAE's covariance penalty,
        FactorVAE's discriminator terms, CLAP's label predictor (see :class:`Minibatch`). Not
        part of the logged ELBO. 0 by default.
        """
        return self.is_perturbed.new_zeros(())

    def shift_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at ``lr_prior`` (the others, e.g. a classifier, at ``lr``)."""
        return [p for p in self.parameters() if p.requires_grad]

    def adversary_parameters(self) -> list[nn.Parameter]:
        """Parameters of an adversary (FactorVAE's discriminator): own Adam group, see there.

        Trained at ``lr`` with Adam's usual ``eps = 1e-8`` and Kim & Mnih's betas (0.5, 0.9):
        scvi-tools' ``eps = 0.01`` slowed a discriminator to near chance within a run.
        """
        return []

    def hyperparameters(self) -> dict[str, float]:
        """Options a copy of this prior must keep (e.g. on transfer, ``alpha``)."""
        return {}

    # ---- readouts of the model's getters --------------------------------------------------
    @abstractmethod
    def mask_probabilities(self) -> torch.Tensor:
        """P(gamma = 1), shape (n_perturbations, n_latent).

        By definition for mask-free priors: 1 where every latent is shifted, 0 where none is.
        """

    def learned_shifts(self) -> torch.Tensor | None:
        """The shift each category's edges have when on (``mu``; control 0), or ``None``.

        ``None``: the prior learns no shift (VAE, the penalty baselines); the readouts then
        report the data's (:mod:`sparsevae.module._readouts`).
        """
        return None

    def readout_latents(self) -> torch.Tensor | None:
        """Bool (n_latent,): the latents the top-n graph may pick (``None``: every latent)."""
        return None

    # ---- training schedule ----------------------------------------------------------------
    def start_training(self) -> None:
        """Called when a training run starts (masked priors: masks are sampled again)."""

    def freeze_masks(self, graph_learned: bool = True) -> None:
        """Fix the masks to their readout and drop the sparsity term (masked priors).

        ``graph_learned``: whether training has learned the masks before (False when they
        freeze at the first epoch); readouts that refine a learned graph act only then.
        """

    def resolve_rotation(self, requested: bool | None) -> bool:
        """Whether training gives the latent space its sparsest orientation once.

        ``requested``: the user's ``rotate_latents`` (``None``: the prior's default). A prior
        that prefers no orientation refuses ``True``.
        """
        if requested:
            raise ValueError(
                f"rotate_latents=True needs a sparse prior ('spike_slab' or 'l1'); the "
                f"{self.name!r} prior is the same for every rotation of the latent space. "
                "Leave rotate_latents unset."
            )
        return False

    def can_rotate(self) -> bool:
        """Whether :meth:`rotate` may be applied now."""
        return False

    # ---- transfer to new perturbations ----------------------------------------------------
    def init_transfer(
        self, rows: list[int], latent_means: Callable[[], torch.Tensor], sparse: bool
    ) -> bool:
        """Set the parameters of the new perturbations' ``rows`` before transfer training.

        ``latent_means`` returns the mean posterior mean of each new perturbation's cells,
        (len(rows), n_latent). Returns whether the rows still need training (sparse transfer).
        """
        return False


class StandardPrior(PerturbationPrior):
    """VAE prior: z ~ N(0, I) whatever the label (beta-VAE with ``beta`` > 1)."""

    name = PRIORS.STANDARD

    def cell_mean(self, perturbation: torch.Tensor) -> torch.Tensor:
        return torch.zeros(
            perturbation.shape[0], self.n_latent, device=perturbation.device, dtype=torch.float32
        )

    def mask_probabilities(self) -> torch.Tensor:
        return self.is_perturbed.new_zeros(self.n_perturbations, self.n_latent)


class DensePrior(PerturbationPrior):
    """iVAE prior: every perturbation shifts every latent, z | a ~ N(mu_a, I)."""

    name = PRIORS.DENSE
    PER_CATEGORY = (*PerturbationPrior.PER_CATEGORY, "mu")

    def __init__(self, n_perturbations: int, n_latent: int, control_index: int | None = None):
        super().__init__(n_perturbations, n_latent, control_index)
        self.mu = nn.Parameter(torch.randn(n_perturbations, n_latent))

    def mask_probabilities(self) -> torch.Tensor:
        return torch.ones_like(self.mu)

    @torch.no_grad()
    def init_transfer(
        self, rows: list[int], latent_means: Callable[[], torch.Tensor], sparse: bool
    ) -> bool:
        # With encoder and decoder frozen, mu enters the objective only through
        # sum_cells KL(q(z|x) || N(mu, I)), minimised by the mean of the posterior means: the
        # exact optimum of the paper's gamma = 1 transfer, and the start of the sparse one.
        self.mu[rows] = torch.as_tensor(latent_means(), device=self.mu.device)
        return False

    def _gate(self, codes: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Factor multiplying mu per cell and slot, shape (n, k, n_latent): here the weight."""
        return weight.unsqueeze(-1)

    def cell_mean(self, perturbation: torch.Tensor) -> torch.Tensor:
        codes, weight = self._codes(perturbation)
        return (self.mu[codes] * self._gate(codes, weight)).sum(dim=1)

    def learned_shifts(self) -> torch.Tensor:
        return self.mu * self.is_perturbed.unsqueeze(-1)

    @torch.no_grad()
    def rotate(
        self,
        rotation: torch.Tensor,
        shifts: torch.Tensor,
        rows: torch.Tensor,
        offset: torch.Tensor | None = None,
    ) -> None:
        """Follow a rotation z -> z @ R (- offset) of the latent space.

        ``shifts``: new (already rotated and moved) shifts, used for the perturbations flagged
        in ``rows``; the other rows of mu are rotated and moved.
        """
        moved = self.mu @ rotation - (0.0 if offset is None else offset)
        self.mu.copy_(torch.where(rows.unsqueeze(-1), shifts, moved))
