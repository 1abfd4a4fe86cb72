"""Priors with sparse masks: sVAE+ (spike-and-slab, Beta(1, alpha)) and sVAE (L1)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal

from sparsevae._constants import PRIORS
from sparsevae.nn import gumbel_sigmoid

from ._prior_base import _MAX_LOGIT, MASK_ESTIMATORS, DensePrior, Minibatch


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
    alpha
        Sparsity: the Beta(1, alpha) parameter of :class:`SpikeSlabPrior`, the L1 weight of
        :class:`L1Prior`.
    temperature
        Gumbel-sigmoid temperature (``estimator="gumbel"`` only).
    logit_init
        Initial logit of every edge; 5 gives pi ~ 0.99 (all edges on, sparsity prunes them).
    estimator
        ``"exact"`` or ``"gumbel"``, see above.
    """

    PER_CATEGORY = (*DensePrior.PER_CATEGORY, "logits")
    has_masks = True

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

    def hyperparameters(self) -> dict[str, float]:
        return {"alpha": self.alpha}

    # ---- schedule and transfer (see PerturbationPrior) -------------------------------------
    def start_training(self) -> None:
        self.masks_frozen = False

    def freeze_masks(self, graph_learned: bool = True) -> None:
        self.masks_frozen = True

    def resolve_rotation(self, requested: bool | None) -> bool:
        return self.rotation_by_default if requested is None else bool(requested)

    def can_rotate(self) -> bool:
        return not self.masks_frozen

    @torch.no_grad()
    def init_transfer(
        self, rows: list[int], latent_means: Callable[[], torch.Tensor], sparse: bool
    ) -> bool:
        super().init_transfer(rows, latent_means, sparse)
        # gamma = 1 (the paper's transfer): the edge is on for sure; sparse: masks restart
        # where training starts and are learned.
        self.logits[rows] = self.logit_init if sparse else _MAX_LOGIT
        return sparse

    def _clamped_logits(self, codes: torch.Tensor | None = None) -> torch.Tensor:
        """The logits inside ``[-_MAX_LOGIT, _MAX_LOGIT]``; with ``codes``, only those rows.

        Per cell, only the minibatch's rows are gathered and then clamped: the same values and
        gradients as clamping all rows first (clamping is elementwise), without a pass over the
        whole (n_perturbations, n_latent) table per step (benchmarks/scaling.py).
        """
        logits = self.logits if codes is None else self.logits[codes]
        return logits.clamp(-_MAX_LOGIT, _MAX_LOGIT)

    def _gate(self, codes: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        logits = self._clamped_logits(codes)
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
        pi = torch.sigmoid(self._clamped_logits(codes))
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

    def mask_probabilities(self) -> torch.Tensor:
        return torch.sigmoid(self._clamped_logits())

    @torch.no_grad()
    def rotate(
        self,
        rotation: torch.Tensor,
        shifts: torch.Tensor,
        rows: torch.Tensor,
        offset: torch.Tensor | None = None,
    ) -> None:
        """As :meth:`DensePrior.rotate`, and every edge restarts undecided.

        The masks no longer match the new axes, so every edge restarts undecided (logit 0, pi =
        0.5). From there the first steps' gradients already point each edge to the side of 0.5 where
        the sparsity term's optimum lies; restarting from ``logit_init`` (all on) needed hundreds of
        steps to prune again, more than short runs on small data have left after the warm-up.
        """
        super().rotate(rotation, shifts, rows, offset)
        self.logits.fill_(0.0)

    def _log_one_minus_pi(self) -> torch.Tensor:
        # log(1 - sigmoid(l)) = logsigmoid(-l): finite for the clamped logits.
        return F.logsigmoid(-self._clamped_logits())


#: How :class:`SpikeSlabPrior` turns Beta(1, alpha) into a cost per edge (``sparsity=``).
SPARSITY_OBJECTIVES = ("calibrated", "paper")
#: :class:`SpikeSlabPrior`'s ``min_relative_shift`` when left unset, per objective.
DEFAULT_MIN_RELATIVE_SHIFT = {"calibrated": 1 / 3, "paper": 0.0}


class SpikeSlabPrior(MaskedPrior):
    """sVAE+ prior: pi ~ Beta(1, alpha), gamma ~ Bernoulli(pi), z | a ~ N(gamma * mu_a, I).

    ``P(gamma = 1)`` of each edge is the free parameter ``sigmoid(logit)``, read out as the
    graph ``pi > 0.5``. The global term (the cost of the edges) is one of two objectives:

    - ``"calibrated"`` (default): the variational spike-and-slab. ``q(gamma)`` is Bernoulli
      with the learned probability, and the global term is its KL divergence to the prior's
      marginal ``P(gamma = 1) = E[Beta(1, alpha)] = 1 / (1 + alpha)`` (the Beta integrated
      out, which is exact: the optimal ``q(pi | gamma)`` is its prior given ``gamma``). Per
      edge, the optimum is ``logit q = evidence + logit(1 / (1 + alpha))``: an edge is on
      when the data favour it by more than ``log(alpha)`` nats, about ``log K`` at the
      default ``alpha = K`` (3.0 nats for K = 20, 6.2 for K = 500, 7.6 for K = 2,000).
    - ``"paper"``: Lopez et al.'s practical choice. The Bernoulli prior probability is set
      equal to the posterior one, so only ``-log Beta(pi; 1, alpha)`` remains; an edge is on
      when its evidence exceeds about ``2 (alpha - 1)`` nats, which at ``alpha = K`` grows
      with the number of perturbations (an empty graph on screens of hundreds of
      perturbations with effects of 1-2 SD). Kept for faithfulness to the published tables.

    Parameters
    ----------
    alpha
        Second Beta parameter; larger is sparser (``alpha = 1``: uniform; with
        ``"calibrated"`` the prior inclusion probability is then 0.5).
    sparsity
        ``"calibrated"`` or ``"paper"``, see above.
    temperature, logit_init, estimator
        As for :class:`MaskedPrior`.
    min_relative_shift
        When the masks freeze (the last phase of training), an edge stays on only if its
        ``|mu|`` is at least this fraction of the largest ``|mu|`` among its perturbation's
        edges; the others are switched off (pi = 0) and the last epochs train without them.
        ``None``: 1/3 with ``"calibrated"``, 0 (no floor, as published) with ``"paper"``.
        Why: the calibrated bar of ``log(alpha)`` nats is low enough that, with hundreds of
        cells per perturbation, the small shifts a perturbation leaves on latents it does not
        target (the encoder's latent space is not exactly the true one: 0.25-1.2 SD where the
        true shift is 5 SD in the paper's simulation) pass it as well. Their size is a fraction
        of the perturbation's main shift; the floor is an effect size, relative because the
        leak scales with the main effect. Measured in ``benchmarks/results/regimes.md``.
    """

    name = PRIORS.SPIKE_SLAB
    rotation_by_default = True  # sVAE+: see sparsevae.module._rotation

    def __init__(
        self,
        n_perturbations: int,
        n_latent: int,
        control_index: int | None = None,
        alpha: float = 1.0,
        temperature: float = 1.0,
        logit_init: float = 5.0,
        estimator: str = "exact",
        sparsity: str = "calibrated",
        min_relative_shift: float | None = None,
    ):
        super().__init__(
            n_perturbations, n_latent, control_index, alpha, temperature, logit_init, estimator
        )
        if self.alpha <= 0:
            raise ValueError(f"`alpha` must be positive, got {self.alpha}.")
        if sparsity not in SPARSITY_OBJECTIVES:
            raise ValueError(f"`sparsity` must be one of {SPARSITY_OBJECTIVES}, got {sparsity!r}.")
        self.sparsity = sparsity
        if min_relative_shift is None:
            min_relative_shift = DEFAULT_MIN_RELATIVE_SHIFT[sparsity]
        if not 0 <= min_relative_shift <= 1:
            raise ValueError(
                f"`min_relative_shift` must be in [0, 1] (a fraction of the perturbation's "
                f"largest shift), got {min_relative_shift}."
            )
        self.min_relative_shift = float(min_relative_shift)

    def hyperparameters(self) -> dict[str, float | str]:
        return {
            "alpha": self.alpha,
            "sparsity": self.sparsity,
            "min_relative_shift": self.min_relative_shift,
        }

    def freeze_masks(self, graph_learned: bool = True) -> None:
        """Fix the masks to ``pi > 0.5``, first switching off edges below the relative floor.

        Masks frozen before they were learned (``graph_learned=False``: from the first epoch)
        keep their initial state; the floor would compare untrained shifts.
        """
        if not self.masks_frozen and graph_learned:
            self.prune_small_shifts()
        super().freeze_masks(graph_learned)

    @torch.no_grad()
    def prune_small_shifts(self) -> torch.Tensor:
        """Switch off the edges whose ``|mu|`` is below ``min_relative_shift`` × the largest.

        The largest is over the perturbation's edges that are on (``pi > 0.5``); pruned edges
        get pi = 0, so every readout (:meth:`mask_probabilities`, :meth:`shifts`,
        :meth:`targets`) sees the same graph. Idempotent. Returns the pruned edges (bool).
        """
        on = self._clamped_logits() > 0
        size = self.mu.abs()
        largest = torch.where(on, size, torch.zeros_like(size)).amax(dim=1, keepdim=True)
        weak = on & (size < self.min_relative_shift * largest)
        self.logits[weak] = -_MAX_LOGIT
        return weak

    def edge_threshold(self) -> float:
        """Nats of evidence an edge needs to be on (``pi > 0.5``) under this objective.

        The evidence of edge (a, i) is how much lower the summed KL term of a's cells is with
        the shift on than off. ``"calibrated"``: ``log(alpha)``; ``"paper"``: ``2 (alpha -
        1)`` (the stationary point of ``-E pi - (alpha - 1) log(1 - pi)`` at ``pi = 0.5``).
        """
        if self.sparsity == "calibrated":
            return math.log(self.alpha)
        return 2.0 * (self.alpha - 1.0)

    def penalty(self) -> torch.Tensor:
        if self.masks_frozen:
            return self.logits.new_zeros(())
        if self.sparsity == "calibrated":
            # KL(Bern(pi) || Bern(rho)), rho = 1 / (1 + alpha), from the logits (finite at the
            # clamp): pi log(pi / rho) + (1 - pi) log((1 - pi) / (1 - rho)).
            logits = self._clamped_logits()
            pi = torch.sigmoid(logits)
            log_rho, log_not_rho = -math.log1p(self.alpha), math.log(self.alpha / (1 + self.alpha))
            kl = pi * (F.logsigmoid(logits) - log_rho) + (1.0 - pi) * (
                F.logsigmoid(-logits) - log_not_rho
            )
            return (kl * self.is_perturbed.unsqueeze(-1)).sum()
        # log Beta(pi; 1, alpha) = log(alpha) + (alpha - 1) * log(1 - pi)
        log_density = math.log(self.alpha) + (self.alpha - 1.0) * self._log_one_minus_pi()
        return -(log_density * self.is_perturbed.unsqueeze(-1)).sum()


class L1Prior(MaskedPrior):
    """sVAE prior: masks as in sVAE+ but sparsity from the published L1 penalty.

    The published sVAE (Lopez et al. 2023's code) adds ``alpha * mean(pi)`` (the
    mean over perturbations and latents) to every minibatch's per-cell loss: not divided by the
    number of cells and not warmed up with the KL term. At the paper's size (20,000 training
    cells) this is about 15 times stronger than the same weight on ``sum(pi) / N``.
    """

    name = PRIORS.L1  # keeps its published training: no rotation unless asked

    @classmethod
    def default_alpha(cls, n_perturbed: int) -> float:
        """1: the lowest held-out NLL of {1, 10, 100} on the tuning simulation.

        ``benchmarks/simulation_tuning.py``; K prunes every edge at the published penalty's
        scale on small screens.
        """
        return 1.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.alpha < 0:
            raise ValueError(f"`alpha` (the L1 weight) must be non-negative, got {self.alpha}.")

    def batch_penalty(self, batch: Minibatch) -> torch.Tensor:
        if self.masks_frozen:
            return self.logits.new_zeros(())
        rows = self.is_perturbed.bool()
        return self.alpha * self.mask_probabilities()[rows].mean()
