"""Label-conditional Gaussian priors with learned variances: iVAE (as published) and CLAP.

Two priors of the identifiability family whose variance, not only whose mean, depends on the
perturbation label:

- :class:`DenseVariancePrior` (``prior="ivae-var"``): iVAE as
  Khemakhem et al. define it, z | a ~ N(mu_a, diag(sigma_a^2)), with a learned mean and
  log-variance per perturbation and latent. The package's ``"dense"`` prior fixes the
  variance to 1.
- :class:`CLAPPrior` (``prior="clap"``): CLAP's split of the latent space into a core block,
  z_core | a ~ N(mu_a, D_a) (D_a diagonal, learned per label), and a style block shared by
  all labels, z_style ~ N(m, G) (G a full covariance, learned through its Cholesky factor),
  with a linear predictor of the label from z_core whose cross-entropy is added to the loss.

In both, control cells keep the reference prior N(0, I) (mean and variance fixed; without a
control label every row is free). A set of singles (combinations) adds its singles' means, as
every prior of the package does, and adds their log-variances, so the variances multiply: the
log-variance is additive on its own scale as the mean is on its, a single whose variance
stays 1 is neutral in any set (with added variances two such singles would give a pair of
variance 2), and the empty set is N(0, I). The sum is clamped again to the safe range.

References
----------
- I. Khemakhem, D. P. Kingma, R. P. Monti, A. Hyvärinen. Variational autoencoders and nonlinear
  ICA: a unifying framework. AISTATS 2020 (arXiv:1907.04809).
- A. Taeb, N. Ruggeri, C. Schnuck, F. Yang. Provable concept learning for interpretable
  predictions using variational autoencoders (CLAP). arXiv:2204.00492, 2022.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal

from sparsevae._constants import PRIORS

from ._prior_base import DensePrior, Minibatch, PerturbationPrior

#: Learned log-variances are clamped to [-7, 7]: variances in [9e-4, 1.1e3] (standard
#: deviations 0.03 to 33). Far inside float32, and the KL's ratio of the encoder's variance
#: (bounded to [1e-4, 1e4]) to the prior's stays below 1e8. A hard clamp: a raw value that
#: steps past a bound gets no gradient there and stays, with the bound's variance.
MAX_ABS_LOG_VARIANCE = 7.0
#: The Cholesky factor's log-diagonal is clamped to half that range (its square is a variance).
_MAX_ABS_LOG_CHOLESKY = MAX_ABS_LOG_VARIANCE / 2


def _clamp_log_var(log_var: torch.Tensor) -> torch.Tensor:
    return log_var.clamp(-MAX_ABS_LOG_VARIANCE, MAX_ABS_LOG_VARIANCE)


def _set_moments(
    mu: torch.Tensor, log_var: torch.Tensor, codes: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and log-variance of each cell's set of singles, (n, d) each.

    ``codes``, ``weight``: as :meth:`PerturbationPrior._codes` returns them (weight 0 for
    control and padding). Means add, log-variances add (variances multiply); the sum is
    clamped again.
    """
    w = weight.unsqueeze(-1)
    mean = (mu[codes] * w).sum(dim=1)
    cell_log_var = (_clamp_log_var(log_var)[codes] * w).sum(dim=1)
    return mean, _clamp_log_var(cell_log_var)


def _diagonal_kl(
    qz_loc: torch.Tensor, qz_var: torch.Tensor, loc: torch.Tensor, log_var: torch.Tensor
) -> torch.Tensor:
    """KL(N(qz_loc, qz_var) || N(loc, exp(log_var))) per latent."""
    ratio = (qz_var + (qz_loc - loc).square()) * torch.exp(-log_var)
    return 0.5 * (ratio - 1.0 + log_var - torch.log(qz_var))


class _LearnedVarianceMixin:
    """Rotation refusal with the reason that holds for priors with learned variances."""

    def resolve_rotation(self, requested: bool | None) -> bool:
        if requested:
            raise ValueError(
                f"rotate_latents=True needs a sparse prior ('spike_slab' or 'l1'); the "
                f"{self.name!r} prior learns its variances per latent, and the latent space's "
                "rotation is not implemented for it. Leave rotate_latents unset."
            )
        return False


class DenseVariancePrior(_LearnedVarianceMixin, DensePrior):
    """iVAE prior as published: z | a ~ N(mu_a, diag(sigma_a^2)), both learned.

    ``mu`` and ``log_var`` (shape (n_perturbations, n_latent), log_var initialised to 0) are
    learned per perturbation and latent; ``log_var`` is clamped to
    ``[-MAX_ABS_LOG_VARIANCE, MAX_ABS_LOG_VARIANCE]`` = [-7, 7]. Control cells keep N(0, I);
    without a control label every row is free. A set of singles adds the means and the
    log-variances (variances multiply). Readout: the ``n_top`` largest ``|mu|`` (as iVAE).

    Transfer learns both: ``mu`` starts at the mean posterior mean of the new perturbation's
    cells (the optimum whatever the variance, for cells of that label alone), ``log_var`` at
    0, and the rows are trained
    (:class:`~sparsevae.model.TransferTrainingPlan`); ``sparse=True`` is refused (no masks).
    """

    name = PRIORS.DENSE_VAR
    PER_CATEGORY = (*DensePrior.PER_CATEGORY, "log_var")

    def __init__(self, n_perturbations: int, n_latent: int, control_index: int | None = None):
        super().__init__(n_perturbations, n_latent, control_index)
        self.log_var = nn.Parameter(torch.zeros(n_perturbations, n_latent))

    def cell_moments(self, perturbation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior mean and log-variance of z for each cell, (n, n_latent) each."""
        codes, weight = self._codes(perturbation)
        return _set_moments(self.mu, self.log_var, codes, weight)

    def distribution(self, perturbation: torch.Tensor) -> Normal:
        mean, log_var = self.cell_moments(perturbation)
        return Normal(mean, torch.exp(0.5 * log_var), validate_args=False)

    @torch.no_grad()
    def init_transfer(
        self, rows: list[int], latent_means: Callable[[], torch.Tensor], sparse: bool
    ) -> bool:
        super().init_transfer(rows, latent_means, sparse)
        self.log_var[rows] = 0.0
        return True  # the variances are learned by TransferTrainingPlan


class CLAPPrior(_LearnedVarianceMixin, PerturbationPrior):
    """CLAP prior: z = (z_core, z_style), core depends on the label, style does not.

    The first ``n_latent - n_style`` latents are core, z_core | a ~ N(mu_a, D_a) with ``mu``
    and the log-diagonal ``log_var`` of D_a learned per perturbation (control: N(0, I); sets of
    singles add means and log-variances, as :class:`DenseVariancePrior`). The last ``n_style``
    latents are style, z_style ~ N(m, G) for every label, ``m`` (``style_loc``) and G = L L^T
    learned, L (``style_tril``) lower-triangular with an exp-parametrised positive diagonal,
    initialised to the identity. KL(q || p) is computed in closed form from the codes.

    A linear classifier from the sampled z_core to the perturbation label adds
    ``predictor_weight`` times its cross-entropy to each minibatch's loss (:meth:`batch_penalty`,
    not warmed up, not part of the logged ELBO). A set of singles scores the mean over its slots
    of ``-log softmax`` at each slot's code; the empty set (control cells under
    ``combination_delimiter``) is labelled control.

    ``style_loc`` and ``style_tril`` have a leading dimension of 1 (shared by all labels): the
    transfer's rule (parameters whose first dimension is the number of perturbations are
    per-perturbation rows) then never takes them for rows, even when ``n_style`` equals the
    number of perturbations.

    Parameters
    ----------
    n_perturbations, n_latent, control_index
        As :class:`PerturbationPrior`.
    n_style
        Number of style latents, in ``[0, n_latent)``; 0 makes CLAP ``"ivae-var"`` plus the
        predictor. Default (``None``): 2, or ``n_latent - 1`` when ``n_latent`` < 3: a small
        block for label-independent variation (cell size, cell cycle) that leaves most latents
        to the labels.
    predictor_weight
        Weight of the label predictor's cross-entropy (>= 0). The default 1 adds it as one
        more log-likelihood term, log p(a | z_core), at the scale of the ELBO's per-cell terms.
    """

    name = PRIORS.CLAP
    PER_CATEGORY = (
        *PerturbationPrior.PER_CATEGORY, "mu", "log_var", "classifier.weight", "classifier.bias"
    )  # fmt: skip

    def __init__(
        self,
        n_perturbations: int,
        n_latent: int,
        control_index: int | None = None,
        n_style: int | None = None,
        predictor_weight: float = 1.0,
    ):
        super().__init__(n_perturbations, n_latent, control_index)
        if n_style is None:
            n_style = min(2, max(n_latent - 1, 0))
        if isinstance(n_style, bool) or int(n_style) != n_style or not 0 <= n_style < n_latent:
            raise ValueError(
                f"`n_style` must be an integer in [0, n_latent) = [0, {n_latent}) so that at "
                f"least one latent is core (label-dependent), got {n_style!r}."
            )
        if not predictor_weight >= 0:
            raise ValueError(f"`predictor_weight` must be >= 0, got {predictor_weight}.")
        self.n_style = int(n_style)
        self.n_core = n_latent - self.n_style
        self.predictor_weight = float(predictor_weight)
        self.mu = nn.Parameter(torch.randn(n_perturbations, self.n_core))
        self.log_var = nn.Parameter(torch.zeros(n_perturbations, self.n_core))
        self.style_loc = nn.Parameter(torch.zeros(1, self.n_style))
        self.style_tril = nn.Parameter(torch.zeros(1, self.n_style, self.n_style))
        self.classifier = nn.Linear(self.n_core, n_perturbations)

    def hyperparameters(self) -> dict[str, float]:
        return {"n_style": self.n_style, "predictor_weight": self.predictor_weight}

    def shift_parameters(self) -> list[nn.Parameter]:
        """mu, log_var, style_loc and style_tril at ``lr_prior``; the classifier at ``lr``.

        The classifier is a network shared by every cell (O(1) gradients), like the decoder.
        """
        params = (self.mu, self.log_var, self.style_loc, self.style_tril)
        return [p for p in params if p.requires_grad]

    # ---- the style block -------------------------------------------------------------------
    def style_scale_tril(self) -> torch.Tensor:
        """The Cholesky factor L of the style covariance G = L L^T, (n_style, n_style)."""
        raw = self.style_tril[0]
        log_diagonal = torch.diagonal(raw).clamp(-_MAX_ABS_LOG_CHOLESKY, _MAX_ABS_LOG_CHOLESKY)
        return torch.tril(raw, diagonal=-1) + torch.diag_embed(torch.exp(log_diagonal))

    def style_covariance(self) -> torch.Tensor:
        """G, the style block's full covariance, (n_style, n_style)."""
        tril = self.style_scale_tril()
        return tril @ tril.T

    # ---- per-cell quantities ---------------------------------------------------------------
    def core_moments(self, perturbation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of z_core for each cell, (n, n_core) each."""
        codes, weight = self._codes(perturbation)
        return _set_moments(self.mu, self.log_var, codes, weight)

    def cell_mean(self, perturbation: torch.Tensor) -> torch.Tensor:
        mean, _ = self.core_moments(perturbation)
        return torch.cat([mean, self.style_loc.expand(mean.shape[0], -1)], dim=-1)

    def distribution(self, perturbation: torch.Tensor) -> Normal:
        """A diagonal Normal: the core prior, and the style block's *marginal* diagonal.

        The style latents are correlated under G; this gives each its marginal N(m_i, G_ii).
        The KL (:meth:`kl`) and the IWELBO (:meth:`log_density`) use the full covariance.
        """
        mean, log_var = self.core_moments(perturbation)
        style_scale = self.style_scale_tril().square().sum(dim=-1).sqrt()  # sqrt(diag L L^T)
        n = mean.shape[0]
        loc = torch.cat([mean, self.style_loc.expand(n, -1)], dim=-1)
        scale = torch.cat([torch.exp(0.5 * log_var), style_scale.expand(n, -1)], dim=-1)
        return Normal(loc, scale, validate_args=False)

    @property
    def kl_is_closed_form(self) -> bool:
        return True

    def kl(self, qz: Normal, perturbation: torch.Tensor, pz: Normal | None = None) -> torch.Tensor:
        """KL(q(z | x) || p(z | a)) in closed form; ``pz`` is ignored.

        Core: the diagonal Gaussians' KL per latent. Style (q diagonal, S = diag(q's
        variances)): ``0.5 [tr(G^-1 S) + (m - m_q)^T G^-1 (m - m_q) - d + log|G| - log|S|]``.
        """
        mean, log_var = self.core_moments(perturbation)
        c = self.n_core
        loc, var = qz.loc, qz.scale.square()
        kl = _diagonal_kl(loc[:, :c], var[:, :c], mean, log_var).sum(dim=-1)
        if self.n_style == 0:
            return kl
        tril = self.style_scale_tril()
        inverse = torch.linalg.solve_triangular(
            tril, torch.eye(self.n_style, dtype=tril.dtype, device=tril.device), upper=False
        )  # L^-1; G^-1 = L^-T L^-1
        style_var = var[:, c:]
        trace = style_var @ inverse.square().sum(dim=0)  # tr(G^-1 S) = sum_ij (L^-1)_ij^2 S_jj
        whitened = (loc[:, c:] - self.style_loc) @ inverse.T  # L^-1 (m_q - m), per cell
        log_det_g = 2.0 * torch.log(torch.diagonal(tril)).sum()
        kl_style = 0.5 * (
            trace
            + whitened.square().sum(dim=-1)
            - self.n_style
            + log_det_g
            - torch.log(style_var).sum(dim=-1)
        )
        return kl + kl_style

    def log_density(self, z: torch.Tensor, perturbation: torch.Tensor) -> torch.Tensor:
        """The log prior density without ``-d/2 log(2 pi)``; style with its full covariance.

        ``z``: (n_cells, n_particles, n_latent). Returns (n_cells, n_particles).
        """
        mean, log_var = self.core_moments(perturbation)
        c = self.n_core
        core = z[..., :c] - mean.unsqueeze(1)
        log_p = -0.5 * (core.square() * torch.exp(-log_var).unsqueeze(1)).sum(dim=-1)
        log_p = log_p - 0.5 * log_var.sum(dim=-1, keepdim=True)
        if self.n_style == 0:
            return log_p
        tril = self.style_scale_tril()
        diff = z[..., c:] - self.style_loc  # (n, P, n_style)
        whitened = torch.linalg.solve_triangular(tril, diff.unsqueeze(-1), upper=False)
        log_p = log_p - 0.5 * whitened.squeeze(-1).square().sum(dim=-1)
        return log_p - torch.log(torch.diagonal(tril)).sum()

    def predictor_loss(self, z: torch.Tensor, perturbation: torch.Tensor) -> torch.Tensor:
        """The label predictor's cross-entropy per cell, (n,), from draws z of shape (n, d).

        Mean over a set's slots of ``-log softmax`` at each slot's code; the empty set is
        labelled control (no slot and no control: 0).
        """
        codes = perturbation.reshape(perturbation.shape[0], -1).long()
        valid = codes >= 0
        if self.control_index is not None:
            empty = ~valid.any(dim=1, keepdim=True)
            first = torch.zeros_like(valid)
            first[:, 0] = True
            codes = torch.where(empty & first, self.control_index, codes)
            valid = valid | (empty & first)
        log_p = F.log_softmax(self.classifier(z[..., : self.n_core]), dim=-1)
        picked = log_p.gather(-1, codes.clamp(min=0)) * valid.to(log_p.dtype)
        return -picked.sum(dim=-1) / valid.sum(dim=-1).clamp(min=1).to(log_p.dtype)

    def batch_penalty(self, batch: Minibatch) -> torch.Tensor:
        """``predictor_weight`` times the minibatch's mean cross-entropy (not warmed up)."""
        if self.predictor_weight == 0:
            return self.is_perturbed.new_zeros(())
        return self.predictor_weight * self.predictor_loss(batch.z, batch.codes).mean()

    # ---- readouts --------------------------------------------------------------------------
    def _pad_style(self, core: torch.Tensor) -> torch.Tensor:
        """(n_perturbations, n_core) -> (n_perturbations, n_latent), zeros on style."""
        return torch.cat([core, core.new_zeros(core.shape[0], self.n_style)], dim=-1)

    def mask_probabilities(self) -> torch.Tensor:
        """1 on core latents for perturbed rows, 0 on style latents and control."""
        return self._pad_style(self.is_perturbed.unsqueeze(-1).expand(-1, self.n_core))

    def learned_shifts(self) -> torch.Tensor:
        return self._pad_style(self.mu * self.is_perturbed.unsqueeze(-1))

    def readout_latents(self) -> torch.Tensor:
        """The core latents: style is never a target."""
        return torch.arange(self.n_latent, device=self.mu.device) < self.n_core

    # ---- transfer --------------------------------------------------------------------------
    @torch.no_grad()
    def init_transfer(
        self, rows: list[int], latent_means: Callable[[], torch.Tensor], sparse: bool
    ) -> bool:
        """Set ``mu`` rows to the core part of the latent means, ``log_var`` rows to 0; train.

        The classifier's rows of the new labels (first dimension n_perturbations) are trained
        with them; every other parameter stays fixed.
        """
        means = torch.as_tensor(latent_means(), device=self.mu.device, dtype=self.mu.dtype)
        self.mu[rows] = means[:, : self.n_core]
        self.log_var[rows] = 0.0
        return True
