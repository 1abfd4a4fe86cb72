"""Unsupervised disentanglement baselines as priors: beta-TCVAE, DIP-VAE and FactorVAE.

Each is the VAE (z ~ N(0, I), labels ignored, :class:`~sparsevae.module.StandardPrior`)
plus a regulariser of the aggregate posterior q(z) computed on the minibatch
(:meth:`~sparsevae.module.PerturbationPrior.batch_penalty`). Like the VAE they learn no shift:
they need no transfer, and predict from the data's empirical latent shifts.

Added to the per-cell loss, for a minibatch of M cells:

- ``"beta-tcvae"`` (Chen et al., 2018): ``kl_weight * (tc_beta - 1) * TC``, the total
  correlation TC of q(z) estimated by minibatch-weighted sampling. Default ``tc_beta = 6``.
- ``"dip-vae"`` (Kumar et al., 2018):
  ``kl_weight * (lambda_od * sum_{i != j} C_ij^2 + lambda_d * sum_i (C_ii - 1)^2)``, C the
  covariance of the minibatch's posterior means (DIP-VAE-I) or of q(z) (DIP-VAE-II).
  Default ``lambda_od = 10``, ``lambda_d = 10 * lambda_od``, DIP-VAE-I.
- ``"factorvae"`` (Kim & Mnih, 2018): ``kl_weight * gamma * TC``, TC estimated by a
  discriminator's density ratio, plus the discriminator's cross-entropy. Default
  ``gamma = 30``.

Every regulariser is multiplied by the KL warm-up factor ``kl_weight``: each penalises a part
of (or a statistic of) the KL term, so it follows the KL term's warm-up (the published codes
train without warm-up; at ``kl_weight = 1`` the objectives are theirs). FactorVAE's
discriminator loss is not warmed up. The defaults are the middle of the grids of Locatello et
al. (2019)'s study (``disentanglement_lib/config/unsupervised_study_v1/sweep.py``).

References
----------
R. T. Q. Chen, X. Li, R. Grosse, D. Duvenaud. Isolating Sources of Disentanglement in
Variational Autoencoders. NeurIPS 2018, arXiv:1802.04942; code github.com/rtqichen/beta-tcvae
(``vae_quant.py``, ``VAE.elbo``).

A. Kumar, P. Sattigeri, A. Balakrishnan. Variational Inference of Disentangled Latent Concepts
from Unlabeled Observations. ICLR 2018, arXiv:1711.00848.

H. Kim, A. Mnih. Disentangling by Factorising. ICML 2018, arXiv:1802.05983; unofficial code
github.com/1Konny/FactorVAE (``solver.py``, ``ops.permute_dims``).

F. Locatello, S. Bauer, M. Lucic, G. Rätsch, S. Gelly, B. Schölkopf, O. Bachem. Challenging
Common Assumptions in the Unsupervised Learning of Disentangled Representations. ICML 2019,
arXiv:1811.12359; code github.com/google-research/disentanglement_lib
(``disentanglement_lib/methods/unsupervised/vae.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal

from sparsevae._constants import PRIORS

from ._prior_base import Minibatch, StandardPrior

#: DIP-VAE variants: "i" regularises Cov[mu(x)], "ii" Cov[mu(x)] + E[diag var(x)].
DIP_TYPES = ("i", "ii")
# FactorVAE's discriminator logits: column 0 "a sample of q(z)", column 1 "a sample of the
# product of its marginals" (dimension-wise permuted), as in Kim & Mnih's code.
_Q, _PERMUTED = 0, 1


def _check_nonnegative(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"`{name}` must be a finite non-negative number, got {value}.")
    return value


def minibatch_weighted_tc(qz: Normal, z: torch.Tensor, n_obs: int) -> torch.Tensor:
    """Total correlation of q(z) by minibatch-weighted sampling (Chen et al., 2018).

    With M cells in the minibatch and N in the data set, for each draw z_i
    ``log q(z_i) ~ logsumexp_j log q(z_i | x_j) - log(N M)`` and
    ``log prod_k q(z_ik) ~ sum_k [logsumexp_j log q(z_ik | x_j) - log(N M)]``;
    TC is the mean over i of their difference.
    The estimate keeps the constant ``(n_latent - 1) log(N M)`` that disentanglement_lib's
    ``total_correlation`` drops (it has no gradient); with narrow, well separated posteriors
    the estimate tends to that constant, so the logged loss of beta-TCVAE carries up to
    ``kl_weight * (tc_beta - 1) * (n_latent - 1) * log(N M)`` on top of the ELBO.

    Parameters
    ----------
    qz
        q(z | x) of the minibatch, loc and scale of shape (M, n_latent).
    z
        Draws of ``qz``, shape (M, n_latent).
    n_obs
        Number of training cells N.

    Returns
    -------
    The estimate, a scalar tensor (differentiable in ``z`` and ``qz``).
    """
    # log q(z_ik | x_j), shape (M_i, M_j, n_latent)
    log_q = Normal(qz.loc.unsqueeze(0), qz.scale.unsqueeze(0), validate_args=False).log_prob(
        z.unsqueeze(1)
    )
    log_nm = math.log(max(int(n_obs), 1) * z.shape[0])
    log_qz = torch.logsumexp(log_q.sum(dim=-1), dim=1) - log_nm
    log_prod_marginals = (torch.logsumexp(log_q, dim=1) - log_nm).sum(dim=-1)
    return (log_qz - log_prod_marginals).mean()


class BetaTCVAEPrior(StandardPrior):
    """beta-TCVAE (Chen et al., 2018): the VAE with its total correlation weighted ``tc_beta``.

    The KL term of the ELBO, averaged over the data, splits into index-code mutual
    information, total correlation TC = KL(q(z) || prod_k q(z_k)) and dimension-wise KL.
    beta-TCVAE weights only TC by ``tc_beta``: its objective is the ELBO minus
    ``(tc_beta - 1) * TC``, so :meth:`batch_penalty` adds ``kl_weight * (tc_beta - 1) * TC``
    to the per-cell loss, TC estimated on the minibatch by minibatch-weighted sampling
    (:func:`minibatch_weighted_tc`, the ``mss=False`` branch of ``VAE.elbo`` in
    github.com/rtqichen/beta-tcvae ``vae_quant.py``). TC is part of the KL term, so it follows
    the KL warm-up ``kl_weight``. SparseVAE's own ``beta`` (weight of the whole KL) stays 1.

    Parameters
    ----------
    n_perturbations, n_latent, control_index
        See :class:`~sparsevae.module.PerturbationPrior`.
    tc_beta
        Weight of the total correlation (1: the VAE). Default 6, the middle of Locatello et
        al. (2019)'s grid {1, 2, 4, 6, 8, 10}.
    """

    name = PRIORS.BETA_TCVAE

    def __init__(
        self,
        n_perturbations: int,
        n_latent: int,
        control_index: int | None = None,
        tc_beta: float = 6.0,
    ):
        super().__init__(n_perturbations, n_latent, control_index)
        self.tc_beta = _check_nonnegative("tc_beta", tc_beta)

    def hyperparameters(self) -> dict[str, float]:
        """``{"tc_beta": ...}``."""
        return {"tc_beta": self.tc_beta}

    def batch_penalty(self, batch: Minibatch) -> torch.Tensor:
        """``kl_weight * (tc_beta - 1) * TC``, TC by minibatch-weighted sampling."""
        if self.tc_beta == 1.0:
            return self.is_perturbed.new_zeros(())
        tc = minibatch_weighted_tc(batch.qz, batch.z, batch.n_obs)
        return batch.kl_weight * (self.tc_beta - 1.0) * tc


def dip_covariance(qz: Normal, dip_type: str = "i") -> torch.Tensor:
    """The covariance DIP-VAE regularises, shape (n_latent, n_latent).

    ``"i"``: Cov[mu(x)] of the minibatch's posterior means (the biased, 1/M estimate, as
    ``compute_covariance_z_mean`` of disentanglement_lib); ``"ii"``: Cov[mu(x)] +
    mean over cells of diag(var(x)), the covariance of q(z).
    """
    mean = qz.loc
    centred = mean - mean.mean(dim=0, keepdim=True)
    covariance = centred.T @ centred / mean.shape[0]
    if dip_type == "ii":
        covariance = covariance + torch.diag(qz.scale.square().mean(dim=0))
    return covariance


class DIPVAEPrior(StandardPrior):
    """DIP-VAE (Kumar et al., 2018): the VAE with q(z)'s covariance pulled towards the identity.

    :meth:`batch_penalty` adds
    ``kl_weight * (lambda_od * sum_{i != j} C_ij^2 + lambda_d * sum_i (C_ii - 1)^2)``
    to the per-cell loss, C the covariance of the minibatch's q(z) (:func:`dip_covariance`):
    Cov[mu(x)] for DIP-VAE-I (Eq. 6), Cov[mu(x)] + E[diag var(x)] for DIP-VAE-II (Eq. 7).
    Written as ``regularize_diag_off_diag_dip`` of disentanglement_lib
    (``methods/unsupervised/vae.py``). The penalty moves q(z) towards the prior's moments,
    like the KL term, so it follows the KL warm-up ``kl_weight``.

    Parameters
    ----------
    n_perturbations, n_latent, control_index
        See :class:`~sparsevae.module.PerturbationPrior`.
    lambda_od
        Weight of the off-diagonal entries. Default 10, the middle of Locatello et al.
        (2019)'s grid {1, 2, 5, 10, 20, 50}.
    lambda_d
        Weight of the diagonal entries. ``None``: ``10 * lambda_od`` for DIP-VAE-I and
        ``lambda_od`` for DIP-VAE-II, the rules of Kumar et al. and of Locatello et al.'s
        study (``lambda_d_factor`` 10 and 1).
    dip_type
        ``"i"`` (default) or ``"ii"``, see above.
    """

    name = PRIORS.DIP_VAE

    def __init__(
        self,
        n_perturbations: int,
        n_latent: int,
        control_index: int | None = None,
        lambda_od: float = 10.0,
        lambda_d: float | None = None,
        dip_type: str = "i",
    ):
        super().__init__(n_perturbations, n_latent, control_index)
        if dip_type not in DIP_TYPES:
            raise ValueError(f"`dip_type` must be one of {DIP_TYPES}, got {dip_type!r}.")
        self.dip_type = dip_type
        self.lambda_od = _check_nonnegative("lambda_od", lambda_od)
        if lambda_d is None:
            lambda_d = (10.0 if dip_type == "i" else 1.0) * self.lambda_od
        self.lambda_d = _check_nonnegative("lambda_d", lambda_d)

    def hyperparameters(self) -> dict[str, float | str]:
        """``lambda_od``, ``lambda_d`` (resolved) and ``dip_type``."""
        return {"lambda_od": self.lambda_od, "lambda_d": self.lambda_d, "dip_type": self.dip_type}

    def covariance_penalty(self, qz: Normal) -> torch.Tensor:
        """``lambda_od * sum_{i != j} C_ij^2 + lambda_d * sum_i (C_ii - 1)^2`` (no warm-up)."""
        covariance = dip_covariance(qz, self.dip_type)
        diagonal = torch.diagonal(covariance)
        off_diagonal = covariance - torch.diag(diagonal)
        return self.lambda_od * off_diagonal.square().sum() + self.lambda_d * (
            (diagonal - 1.0).square().sum()
        )

    def batch_penalty(self, batch: Minibatch) -> torch.Tensor:
        """``kl_weight`` times :meth:`covariance_penalty` of the minibatch."""
        return batch.kl_weight * self.covariance_penalty(batch.qz)


def permute_dims(z: torch.Tensor) -> torch.Tensor:
    """Permute every latent independently across the batch (Kim & Mnih's ``permute_dims``).

    The rows of the result are draws of the product of q(z)'s marginals.
    """
    order = torch.argsort(torch.rand(z.shape, device=z.device), dim=0)
    return torch.gather(z, 0, order)


def _discriminator(n_latent: int, n_hidden: int, n_layers: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_latent
    for _ in range(n_layers):
        layers += [nn.Linear(width, n_hidden), nn.LeakyReLU(0.2)]
        width = n_hidden
    layers.append(nn.Linear(width, 2))
    return nn.Sequential(*layers)


class FactorVAEPrior(StandardPrior):
    """FactorVAE (Kim & Mnih, 2018): the VAE with its total correlation weighted ``gamma``.

    TC = KL(q(z) || prod_k q(z_k)) is estimated by the density-ratio trick: a discriminator D
    (a child module, 2 logits: column 0 "a sample of q(z)", column 1 "a dimension-wise
    permuted sample") gives ``TC ~ mean_i [D(z_i)_0 - D(z_i)_1]``. :meth:`batch_penalty`
    returns, in one loss for the one optimiser (gradient separation instead of the paper's
    two optimisers):

    - ``kl_weight * gamma * TC``, with D's parameters detached: trains the encoder only
      (:meth:`total_correlation`); TC is a part of the KL term, so like beta-TCVAE's it follows
      the KL warm-up ``kl_weight``.
    - D's cross-entropy ``0.5 * (CE(D(z), q) + CE(D(permute_dims(z)), permuted))`` on the
      detached draws: trains D only (:meth:`discriminator_loss`), not warmed up. The permuted
      draws come from the same minibatch; the paper permutes a second minibatch.

    D is trained at the networks' learning rate ``lr`` (it is not in :meth:`shift_parameters`;
    the paper used Adam at 1e-4 for D). Its last loss and accuracy (mean of the two classes'
    accuracies) are kept in ``last_discriminator_loss`` / ``last_discriminator_accuracy``.

    Parameters
    ----------
    n_perturbations, n_latent, control_index
        See :class:`~sparsevae.module.PerturbationPrior`.
    gamma
        Weight of the total correlation. Default 30, the middle of Locatello et al. (2019)'s
        grid {10, 20, 30, 40, 50, 100}.
    discriminator_hidden, discriminator_layers
        Width and number of D's hidden layers (LeakyReLU 0.2). Default 4 of 256, smaller
        than the paper's 6 of 1000 for image models: the latent spaces here have a few to
        a few tens of dimensions.
    """

    name = PRIORS.FACTORVAE

    def __init__(
        self,
        n_perturbations: int,
        n_latent: int,
        control_index: int | None = None,
        gamma: float = 30.0,
        discriminator_hidden: int = 256,
        discriminator_layers: int = 4,
    ):
        super().__init__(n_perturbations, n_latent, control_index)
        self.gamma = _check_nonnegative("gamma", gamma)
        for key, value in (
            ("discriminator_hidden", discriminator_hidden),
            ("discriminator_layers", discriminator_layers),
        ):
            if int(value) != value or value < 1:
                raise ValueError(f"`{key}` must be a positive integer, got {value}.")
        self.discriminator_hidden = int(discriminator_hidden)
        self.discriminator_layers = int(discriminator_layers)
        self.discriminator = _discriminator(
            n_latent, self.discriminator_hidden, self.discriminator_layers
        )
        #: D's cross-entropy and accuracy at the last :meth:`batch_penalty` (detached).
        self.last_discriminator_loss: torch.Tensor | None = None
        self.last_discriminator_accuracy: torch.Tensor | None = None

    def hyperparameters(self) -> dict[str, float]:
        """``gamma`` and D's size."""
        return {
            "gamma": self.gamma,
            "discriminator_hidden": self.discriminator_hidden,
            "discriminator_layers": self.discriminator_layers,
        }

    def shift_parameters(self) -> list[nn.Parameter]:
        """None: the VAE learns no shift."""
        return []

    def adversary_parameters(self) -> list[nn.Parameter]:
        """The discriminator: its own Adam group (eps 1e-8, betas (0.5, 0.9)) at ``lr``."""
        return [p for p in self.discriminator.parameters() if p.requires_grad]

    def total_correlation(self, z: torch.Tensor) -> torch.Tensor:
        """``mean_i [D(z_i)_0 - D(z_i)_1]`` with D's parameters detached (gradient: z only)."""
        frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
        logits = torch.func.functional_call(self.discriminator, frozen, (z,))
        return (logits[:, _Q] - logits[:, _PERMUTED]).mean()

    def discriminator_loss(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """D's cross-entropy on ``z`` and its dimension-wise permutation, both detached.

        Returns the loss (gradient: D's parameters only) and D's accuracy (detached).
        """
        z = z.detach()
        logits_q = self.discriminator(z)
        logits_permuted = self.discriminator(permute_dims(z))
        label_q = torch.full((z.shape[0],), _Q, dtype=torch.long, device=z.device)
        label_permuted = torch.full_like(label_q, _PERMUTED)
        loss = 0.5 * (
            F.cross_entropy(logits_q, label_q) + F.cross_entropy(logits_permuted, label_permuted)
        )
        with torch.no_grad():
            accuracy = 0.5 * (
                (logits_q.argmax(dim=1) == _Q).float().mean()
                + (logits_permuted.argmax(dim=1) == _PERMUTED).float().mean()
            )
        return loss, accuracy

    def batch_penalty(self, batch: Minibatch) -> torch.Tensor:
        """``kl_weight * gamma * TC`` (trains the encoder) + D's loss (trains D)."""
        loss, accuracy = self.discriminator_loss(batch.z)
        self.last_discriminator_loss = loss.detach()
        self.last_discriminator_accuracy = accuracy
        return batch.kl_weight * self.gamma * self.total_correlation(batch.z) + loss
