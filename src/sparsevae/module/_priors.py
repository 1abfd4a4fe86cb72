"""Priors over the latent variables given the perturbation label.

Every method of the package is the same VAE with a different prior object (scvi-tools'
``sysvi`` does the same for its priors):

=====================  =========  ==========================================================
``prior=``             method     p(z | a)
=====================  =========  ==========================================================
``"standard"``         VAE        N(0, I); labels ignored (beta-VAE: ``beta`` > 1)
``"dense"``            iVAE       N(mu_a, I)
``"l1"``               sVAE       N(gamma_a * mu_a, I), L1 penalty on P(gamma = 1)
``"spike_slab"``       sVAE+      N(gamma_a * mu_a, I), pi ~ Beta(1, alpha), gamma ~ Bern(pi)
=====================  =========  ==========================================================

Control cells (``control_index``) always get a zero shift.

A cell's perturbation is a row of category codes, shape (n,) for one label per cell or (n, k)
for sets of singles (combinations, padded with -1). The shift of a set is the sum of its
singles' shifts: ``sum_t gamma_t * mu_t``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal, kl_divergence

from sparsevae._constants import PRIORS
from sparsevae.nn import gumbel_sigmoid

# Probabilities are kept inside [_PROB_EPS, 1 - _PROB_EPS] in every log-density so that a mask
# that has converged to exactly 0 or 1 never produces -inf (and then NaN gradients).
_PROB_EPS = 1e-6
#: How the KL term's expectation over the masks is computed in training (see MaskedPrior).
MASK_ESTIMATORS = ("exact", "gumbel")
_MAX_LOGIT = math.log((1.0 - _PROB_EPS) / _PROB_EPS)


class PerturbationPrior(nn.Module, ABC):
    """The prior protocol: p(z | a) = N(shift(a), I), and every question callers ask of it.

    A prior answers, without callers branching on which one it is: the per-cell prior
    (:meth:`cell_mean`, :meth:`distribution`, :meth:`kl`), its global term (:meth:`penalty`),
    the readouts of the model's getters (:meth:`mask_probabilities`,
    :meth:`evaluation_shifts`, :meth:`edge_shifts`, :meth:`targets`), the training schedule
    (:meth:`start_training`, :meth:`freeze_masks`, :meth:`resolve_rotation`,
    :meth:`can_rotate`), transfer to new perturbations (:meth:`check_transfer`,
    :meth:`effective_sparse_transfer`, :meth:`init_transfer`) and its hyperparameters
    (:meth:`hyperparameters`). Adding a prior is one subclass and one line of
    :data:`PRIOR_CLASSES`.

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
    #: Whether the prior learns a shift per perturbation from the data (iVAE, sVAE, sVAE+),
    #: so that an unseen perturbation's effect can be predicted from its transferred shift.
    learns_shifts: bool = False

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
    def from_options(
        cls, n_perturbations: int, n_latent: int, control_index: int | None, **options
    ) -> PerturbationPrior:
        """Build from the model's prior options (``alpha``, ``temperature``, ...); a prior takes
        those it has and ignores the others."""
        return cls(n_perturbations, n_latent, control_index)

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

    # ---- global quantities ----------------------------------------------------------------
    def penalty(self) -> torch.Tensor:
        """Negative log prior density of the global parameters (0 when there are none)."""
        return self.is_perturbed.new_zeros(())

    def hyperparameters(self) -> dict[str, float]:
        """Options a copy of this prior must keep (e.g. on transfer, ``alpha``)."""
        return {}

    # ---- readouts of the model's getters --------------------------------------------------
    @abstractmethod
    def mask_probabilities(self) -> torch.Tensor:
        """P(gamma = 1), shape (n_perturbations, n_latent); by definition for mask-free priors
        (1 where every latent is shifted, 0 where none is)."""

    @abstractmethod
    def evaluation_shifts(self, empirical: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Shift of each perturbation's prior mean at evaluation, (n_perturbations, n_latent).

        ``empirical`` returns the data's mean latent shifts (perturbation minus control); it
        is called only by priors that learn no shift of their own.
        """

    @abstractmethod
    def edge_shifts(self, empirical: Callable[[], torch.Tensor]) -> torch.Tensor:
        """How far each perturbation moves each latent when the edge is on (``mu``)."""

    @abstractmethod
    def targets(self, shifts: torch.Tensor, threshold: float, n_top: int) -> torch.Tensor:
        """The perturbation -> latent graph (bool, n_perturbations x n_latent) read from
        ``shifts`` (:meth:`evaluation_shifts`): ``pi > threshold`` for masked priors, the
        ``n_top`` largest ``|shift|`` per perturbation (the paper's readout) otherwise."""

    # ---- training schedule ----------------------------------------------------------------
    def start_training(self) -> None:
        """Called when a training run starts (masked priors: masks are sampled again)."""

    def freeze_masks(self) -> None:
        """Fix the masks to their readout and drop the sparsity term (masked priors)."""

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
    def check_transfer(self, sparse: bool) -> None:
        """Raise if this prior cannot transfer as asked (``sparse=True`` learns masks)."""
        if sparse:
            raise ValueError(
                f"sparse=True learns masks, but prior={self.name!r} has none; use sparse=False."
            )

    def effective_sparse_transfer(self, requested: bool) -> bool:
        """``sparse`` for :meth:`init_transfer` when a report asks for sparse transfer of every
        method: masks are learned where the prior has them."""
        return False

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

    def evaluation_shifts(self, empirical: Callable[[], torch.Tensor]) -> torch.Tensor:
        return empirical()

    def edge_shifts(self, empirical: Callable[[], torch.Tensor]) -> torch.Tensor:
        return empirical()

    def targets(self, shifts: torch.Tensor, threshold: float, n_top: int) -> torch.Tensor:
        return _top_abs(shifts, n_top)


def _top_abs(shifts: torch.Tensor, n_top: int) -> torch.Tensor:
    """The ``n_top`` largest ``|shift|`` per row, as a bool mask (NaN rows: none)."""
    values = torch.nan_to_num(shifts.abs(), nan=-1.0)
    n_top = min(n_top, values.shape[1])
    top = torch.argsort(-values, dim=1, stable=True)[:, :n_top]
    targets = torch.zeros_like(values, dtype=torch.bool)
    targets.scatter_(1, top, True)
    return targets


class DensePrior(PerturbationPrior):
    """iVAE prior: every perturbation shifts every latent, z | a ~ N(mu_a, I)."""

    name = PRIORS.DENSE
    learns_shifts = True

    def __init__(self, n_perturbations: int, n_latent: int, control_index: int | None = None):
        super().__init__(n_perturbations, n_latent, control_index)
        self.mu = nn.Parameter(torch.randn(n_perturbations, n_latent))

    def mask_probabilities(self) -> torch.Tensor:
        return torch.ones_like(self.mu)

    def evaluation_shifts(self, empirical: Callable[[], torch.Tensor]) -> torch.Tensor:
        return self.shifts()

    def edge_shifts(self, empirical: Callable[[], torch.Tensor]) -> torch.Tensor:
        return self.mu * self.is_perturbed.unsqueeze(-1)

    def targets(self, shifts: torch.Tensor, threshold: float, n_top: int) -> torch.Tensor:
        return _top_abs(shifts, n_top)

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

    def shifts(self) -> torch.Tensor:
        """Shift of each perturbation at evaluation, shape (n_perturbations, n_latent)."""
        return self.mu * self.is_perturbed.unsqueeze(-1)

    @torch.no_grad()
    def rotate(self, rotation: torch.Tensor, shifts: torch.Tensor, rows: torch.Tensor) -> None:
        """Follow a rotation z -> z @ R of the latent space.

        ``shifts``: new (already rotated) shifts, used for the perturbations flagged in
        ``rows``; the other rows of mu are rotated.
        """
        self.mu.copy_(torch.where(rows.unsqueeze(-1), shifts, self.mu @ rotation))


class MaskedPrior(DensePrior):
    """z | a ~ N(gamma_a * mu_a, I) with gamma_a ~ Bernoulli(sigmoid(logits_a)).

    In evaluation (and once masks are frozen) the mask is the readout ``pi > 0.5``. In training
    the KL term's expectation over the masks is taken in one of two ways:

    - ``"exact"``: the mask enters only the Gaussian prior of z, and the KL divergence of a
      diagonal Gaussian is a sum over latents that is linear in each ``gamma_i``, so
      ``E_gamma KL(q(z|x) || N(gamma * mu, I)) = sum_i pi_i KL_i(1) + (1 - pi_i) KL_i(0)``
      exactly. This is the same objective as sampling, with zero-variance gradients for the
      logits and shifts (Rao-Blackwellisation).
    - ``"gumbel"``: the published code's estimator, one straight-through Gumbel-sigmoid draw
      per cell (hard 0/1 forward, relaxed gradient backward).

    Parameters
    ----------
    temperature
        Gumbel-sigmoid temperature (``estimator="gumbel"`` only).
    logit_init
        Initial logit of every edge; 5 gives pi ~ 0.99 (all edges on, sparsity prunes them).
    estimator
        ``"exact"`` or ``"gumbel"``, see above.
    """

    #: ``rotate_latents`` when the user leaves it unset.
    rotation_by_default: bool = False

    def __init__(
        self,
        n_perturbations: int,
        n_latent: int,
        control_index: int | None = None,
        alpha: float = 1.0,
        temperature: float = 1.0,
        logit_init: float = 5.0,
        estimator: str = "exact",
    ):
        super().__init__(n_perturbations, n_latent, control_index)
        if temperature <= 0:
            raise ValueError(f"`temperature` must be positive, got {temperature}.")
        if estimator not in MASK_ESTIMATORS:
            raise ValueError(
                f"`mask_estimator` must be one of {MASK_ESTIMATORS}, got {estimator!r}."
            )
        self.temperature = temperature
        self.estimator = estimator
        self.logit_init = float(logit_init)
        self.logits = nn.Parameter(torch.full((n_perturbations, n_latent), float(logit_init)))
        #: Once True (set by the training plan for the last phase of training), masks are the
        #: readout pi > 0.5 in training too and the sparsity term is dropped.
        self.masks_frozen = False
        self.alpha = float(alpha)

    @classmethod
    def from_options(
        cls,
        n_perturbations: int,
        n_latent: int,
        control_index: int | None,
        *,
        alpha: float = 1.0,
        temperature: float = 1.0,
        logit_init: float = 5.0,
        estimator: str = "exact",
        **ignored,
    ) -> MaskedPrior:
        return cls(
            n_perturbations, n_latent, control_index, alpha, temperature, logit_init, estimator
        )

    def hyperparameters(self) -> dict[str, float]:
        return {"alpha": self.alpha}

    # ---- readouts, schedule and transfer (see PerturbationPrior) ---------------------------
    def targets(self, shifts: torch.Tensor, threshold: float, n_top: int) -> torch.Tensor:
        return self.mask_probabilities() > threshold

    def start_training(self) -> None:
        self.masks_frozen = False

    def freeze_masks(self) -> None:
        self.masks_frozen = True

    def resolve_rotation(self, requested: bool | None) -> bool:
        return self.rotation_by_default if requested is None else bool(requested)

    def can_rotate(self) -> bool:
        return not self.masks_frozen

    def check_transfer(self, sparse: bool) -> None:
        return None

    def effective_sparse_transfer(self, requested: bool) -> bool:
        return bool(requested)

    @torch.no_grad()
    def init_transfer(
        self, rows: list[int], latent_means: Callable[[], torch.Tensor], sparse: bool
    ) -> bool:
        super().init_transfer(rows, latent_means, sparse)
        # gamma = 1 (the paper's transfer): the edge is on for sure; sparse: masks restart
        # where training starts and are learned.
        self.logits[rows] = self.logit_init if sparse else _MAX_LOGIT
        return sparse

    def _clamped_logits(self) -> torch.Tensor:
        return self.logits.clamp(-_MAX_LOGIT, _MAX_LOGIT)

    def _gate(self, codes: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        logits = self._clamped_logits()[codes]
        if self.training and not self.masks_frozen:
            gamma = gumbel_sigmoid(logits, temperature=self.temperature, hard=True)
        else:
            gamma = (logits > 0).to(logits.dtype)
        return gamma * weight.unsqueeze(-1)

    @property
    def kl_is_closed_form(self) -> bool:
        """True while training with sampled masks under ``estimator="exact"``."""
        return self.training and not self.masks_frozen and self.estimator == "exact"

    def kl(self, qz: Normal, perturbation: torch.Tensor, pz: Normal | None = None) -> torch.Tensor:
        if not self.kl_is_closed_form:
            return super().kl(qz, perturbation, pz)
        # KL_i(gamma) = (var + (m - s)^2 - 1 - log var) / 2 for q = N(m, var), s = sum_t g_t mu_t.
        # With independent g_t ~ Bern(pi_t), E[(m - s)^2] = (m - E s)^2 + Var s, where
        # E s = sum_t pi_t mu_t and Var s = sum_t pi_t (1 - pi_t) mu_t^2 (per latent).
        codes, weight = self._codes(perturbation)
        pi = torch.sigmoid(self._clamped_logits()[codes])
        mu = self.mu[codes] * weight.unsqueeze(-1)
        m, var = qz.loc, qz.scale.pow(2)
        if codes.shape[1] == 1:  # one label per cell: the same value, in the historical form
            pi, mu = pi[:, 0], mu[:, 0]
            expected_sq = pi * (m - mu).pow(2) + (1.0 - pi) * m.pow(2)
        else:
            mean_shift = (pi * mu).sum(dim=1)
            var_shift = (pi * (1.0 - pi) * mu.pow(2)).sum(dim=1)
            expected_sq = (m - mean_shift).pow(2) + var_shift
        return 0.5 * (var + expected_sq - 1.0 - torch.log(var)).sum(dim=-1)

    def shifts(self) -> torch.Tensor:
        """Shift used at evaluation: mu where pi > 0.5, else 0."""
        gamma = (self._clamped_logits() > 0).to(self.mu.dtype)
        return self.mu * gamma * self.is_perturbed.unsqueeze(-1)

    def mask_probabilities(self) -> torch.Tensor:
        return torch.sigmoid(self._clamped_logits())

    def edge_shifts(self, empirical: Callable[[], torch.Tensor]) -> torch.Tensor:
        return self.mu * self.is_perturbed.unsqueeze(-1)

    @torch.no_grad()
    def rotate(self, rotation: torch.Tensor, shifts: torch.Tensor, rows: torch.Tensor) -> None:
        """As :meth:`DensePrior.rotate`; the masks no longer match the new axes, so every edge
        restarts undecided (logit 0, pi = 0.5). From there the first steps' gradients already
        point each edge to the side of 0.5 where the sparsity term's optimum lies; restarting
        from ``logit_init`` (all on) needed hundreds of steps to prune again, more than short
        runs on small data have left after the warm-up."""
        super().rotate(rotation, shifts, rows)
        self.logits.fill_(0.0)

    def _log_one_minus_pi(self) -> torch.Tensor:
        # log(1 - sigmoid(l)) = logsigmoid(-l): finite for the clamped logits.
        return F.logsigmoid(-self._clamped_logits())


class SpikeSlabPrior(MaskedPrior):
    """sVAE+ prior: pi ~ Beta(1, alpha), gamma ~ Bernoulli(pi), z | a ~ N(gamma * mu_a, I).

    The Bernoulli prior probability is set equal to the posterior one (the paper's practical
    choice), so the global term is ``-sum log Beta(pi; 1, alpha)`` over perturbed rows.

    Parameters
    ----------
    alpha
        Second Beta parameter; larger is sparser. ``alpha = 1`` is uniform (no sparsity).
    """

    name = PRIORS.SPIKE_SLAB
    rotation_by_default = True  # sVAE+: see sparsevae.module._rotation

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.alpha <= 0:
            raise ValueError(f"`alpha` must be positive, got {self.alpha}.")

    def penalty(self) -> torch.Tensor:
        if self.masks_frozen:
            return self.logits.new_zeros(())
        # log Beta(pi; 1, alpha) = log(alpha) + (alpha - 1) * log(1 - pi)
        log_density = math.log(self.alpha) + (self.alpha - 1.0) * self._log_one_minus_pi()
        return -(log_density * self.is_perturbed.unsqueeze(-1)).sum()


class L1Prior(MaskedPrior):
    """sVAE prior: masks as in sVAE+ but sparsity from an L1 penalty ``alpha * sum(pi)``.

    This is the first-order (L1) counterpart of the Beta term: for small pi,
    ``-log Beta(pi; 1, alpha) ~ (alpha - 1) * pi + const``.
    """

    name = PRIORS.L1  # keeps its published training: no rotation unless asked

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.alpha < 0:
            raise ValueError(f"`alpha` (the L1 weight) must be non-negative, got {self.alpha}.")

    def penalty(self) -> torch.Tensor:
        if self.masks_frozen:
            return self.logits.new_zeros(())
        pi = self.mask_probabilities()
        return self.alpha * (pi * self.is_perturbed.unsqueeze(-1)).sum()


#: The registry: prior name -> class. ``SparseVAE(prior=...)`` and the CLI read it.
PRIOR_CLASSES: dict[str, type[PerturbationPrior]] = {
    PRIORS.STANDARD: StandardPrior,
    PRIORS.DENSE: DensePrior,
    PRIORS.L1: L1Prior,
    PRIORS.SPIKE_SLAB: SpikeSlabPrior,
}


def make_prior(
    name: str,
    n_perturbations: int,
    n_latent: int,
    control_index: int | None,
    **options,
) -> PerturbationPrior:
    """Build the prior called ``name`` from the registry; ``options`` (``alpha``: the Beta
    parameter or the L1 weight, ``temperature``, ``logit_init``, ``estimator``) go to the
    priors that have them."""
    if name not in PRIOR_CLASSES:
        raise ValueError(f"Unknown prior {name!r}; choose one of {sorted(PRIOR_CLASSES)}.")
    return PRIOR_CLASSES[name].from_options(n_perturbations, n_latent, control_index, **options)
