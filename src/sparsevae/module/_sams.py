"""SAMS-VAE (Bereket & Karaletsos, NeurIPS 2023) as a prior of the package's VAE.

The reference code (insitro/sams-vae, ``sams_vae/models/sams_vae/``) writes each cell's latent
variables as ``z = z_basal + sum_t d_t (m_t * e_t)``: a basal state ``z_basal ~ N(0, I)`` plus,
for each perturbation ``t`` the cell received, a sparse embedding. The mask ``m_t`` (one
Bernoulli(p) per latent) and the embedding ``e_t ~ N(0, s^2 I)`` are global: one per
perturbation, shared by its cells. The guide is ``q(m) q(e | m) q(z_basal | x, offset)``:
``q(m)`` Bernoulli with straight-through Gumbel-softmax draws, ``q(e)`` a Normal per
perturbation (mean-field) or ``q(e | m)`` an MLP of the mask and the perturbation
(correlated), and ``q(z_basal | x, offset)`` an encoder that also sees the cell's latent offset
``sum_t m_t * e_t`` (unless ``mean_field_encoder``).

Here this is one prior of the package's VAE (same encoder/decoder, readouts and metrics as every
other method): given the global draws, ``p(z | a, m, e) = N(offset_a, I)`` with ``offset_a =
sum_t m_t * e_t``; the module's encoder gives ``q(z_basal | x, offset)`` and reports ``z =
z_basal + offset``, so ``KL(q(z | x, a) || N(offset_a, I)) = KL(q(z_basal) || N(0, I))``: the
reference's local term. The global terms ``KL(q(m) || Bern(p)) + KL(q(e | m) || N(0, s^2))``
are the prior's :meth:`~SAMSPrior.penalty`, which enters the loss once per dataset (``/ N`` per
cell), as the reference's reweighting of the perturbation-plated terms does. docs/sams_vae.md
has the term-by-term correspondence with file and line of the reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from sparsevae._constants import PRIORS
from sparsevae.nn import gumbel_sigmoid

from ._prior_base import _MAX_LOGIT, PerturbationPrior

#: The guides of q(e) (the reference's SAMSVAEMeanFieldNormalGuide and
#: SAMSVAECorrelatedNormalGuide).
SAMS_GUIDES = ("mean_field", "correlated")
# The reference adds 1e-4 to every guide scale (``var_eps``).
_SCALE_EPS = 1e-4


class SAMSPrior(PerturbationPrior):
    """SAMS-VAE: ``z = z_basal + sum_t m_t * e_t``, ``m ~ Bern(p)``, ``e ~ N(0, s^2)``.

    ``P(m = 1)`` of each (perturbation, latent) under q is ``sigmoid(logits)``, read out as the
    graph ``pi > 0.5`` like sVAE+'s; the shift of an edge is the mean of ``q(e)`` (given the
    mask's mode, for the correlated guide). In training, each step draws one mask and one
    embedding per perturbation, shared by its cells in the minibatch (the reference draws one
    per particle); in evaluation the masks are their mode (``pi > 0.5``)
    and the embeddings their guide means.

    Parameters
    ----------
    temperature
        Temperature of the straight-through Gumbel-softmax mask draws (the reference's
        ``gs_temperature``, 1).
    mask_prior_prob
        p of the Bernoulli prior of every mask entry (the reference's Norman and demo runs:
        0.01; Replogle sweeps 0.1, 0.01, 0.001). An edge costs about ``log((1 - p) / p)`` nats
        whatever the number of perturbations (4.6 at 0.01).
    embedding_prior_scale
        s of the embeddings' prior N(0, s^2) (1).
    guide
        ``"mean_field"`` (default, the reference's demo): q(e) a Normal per perturbation;
        ``"correlated"``: q(e | m), an MLP of the mask and the perturbation
        (``embedding_encoder_n_layers`` layers of ``embedding_encoder_n_hidden``).
    mean_field_encoder
        ``False`` (default, as the reference): the encoder of z_basal also sees the cell's
        latent offset; ``True``: it sees the counts only.
    mask_init_logits
        Initial logit of q(m) (the reference: 0, pi = 0.5).
    embedding_loc_init_scale, embedding_scale_init
        q(e)'s initial means (``scale * N(0, 1)``; the reference: 0) and scales (1).
    embedding_encoder_n_layers, embedding_encoder_n_hidden
        The correlated guide's MLP (the reference's Norman runs: 4 layers of 400).
    """

    name = PRIORS.SAMS_VAE
    has_masks = True
    #: z = z_basal + offset: the module adds :meth:`cell_mean` to the encoder's output.
    adds_offset = True
    #: Per guide: the instance's PER_CATEGORY is its guide's (set in ``__init__``).
    PER_CATEGORY_BY_GUIDE: ClassVar[dict[str, tuple[str, ...]]] = {
        "mean_field": (*PerturbationPrior.PER_CATEGORY, "logits", "e_loc", "e_log_scale"),
        "correlated": (*PerturbationPrior.PER_CATEGORY, "logits", "e_input_rows"),
    }

    def __init__(
        self,
        n_perturbations: int,
        n_latent: int,
        control_index: int | None = None,
        temperature: float = 1.0,
        mask_prior_prob: float = 0.01,
        embedding_prior_scale: float = 1.0,
        guide: str = "mean_field",
        mean_field_encoder: bool = False,
        mask_init_logits: float = 0.0,
        embedding_loc_init_scale: float = 0.0,
        embedding_scale_init: float = 1.0,
        embedding_encoder_n_layers: int = 4,
        embedding_encoder_n_hidden: int = 400,
    ):
        super().__init__(n_perturbations, n_latent, control_index)
        if temperature <= 0:
            raise ValueError(f"`temperature` must be positive, got {temperature}.")
        if not 0 < mask_prior_prob < 1:
            raise ValueError(
                f"`mask_prior_prob` must be in (0, 1) (the reference uses 0.01), got "
                f"{mask_prior_prob}."
            )
        if not embedding_prior_scale > 0 or not embedding_scale_init > 0:
            raise ValueError(
                "`embedding_prior_scale` and `embedding_scale_init` must be positive, got "
                f"{embedding_prior_scale} and {embedding_scale_init}."
            )
        if guide not in SAMS_GUIDES:
            raise ValueError(f"`guide` must be one of {SAMS_GUIDES}, got {guide!r}.")
        if guide == "correlated" and embedding_encoder_n_layers < 1:
            raise ValueError(
                f"`embedding_encoder_n_layers` must be >= 1, got {embedding_encoder_n_layers}."
            )
        self.temperature = float(temperature)
        self.mask_prior_prob = float(mask_prior_prob)
        self.embedding_prior_scale = float(embedding_prior_scale)
        self.guide = guide
        self.PER_CATEGORY = self.PER_CATEGORY_BY_GUIDE[guide]
        self.mean_field_encoder = bool(mean_field_encoder)
        self.mask_init_logits = float(mask_init_logits)
        self.embedding_loc_init_scale = float(embedding_loc_init_scale)
        self.embedding_scale_init = float(embedding_scale_init)
        self.embedding_encoder_n_layers = int(embedding_encoder_n_layers)
        self.embedding_encoder_n_hidden = int(embedding_encoder_n_hidden)
        self.logits = nn.Parameter(torch.full((n_perturbations, n_latent), self.mask_init_logits))
        if guide == "mean_field":
            self.e_loc = nn.Parameter(
                self.embedding_loc_init_scale * torch.randn(n_perturbations, n_latent)
            )
            self.e_log_scale = nn.Parameter(
                torch.full((n_perturbations, n_latent), math.log(self.embedding_scale_init))
            )
        else:
            # The reference's MLP reads [m_t, one_hot(t)]; its first layer on a one-hot is a
            # row lookup, kept as a per-category table so that transfer can add rows.
            hidden = self.embedding_encoder_n_hidden
            self.e_input_rows = nn.Parameter(torch.randn(n_perturbations, hidden) * 0.01)
            self.e_input_mask = nn.Linear(n_latent, hidden)
            self.e_hidden = nn.ModuleList(
                nn.Linear(hidden, hidden) for _ in range(self.embedding_encoder_n_layers - 1)
            )
            self.e_mean = nn.Linear(hidden, n_latent)
            self.e_log_var = nn.Linear(hidden, n_latent)

    @property
    def encoder_sees_offset(self) -> bool:
        """Whether the encoder of z_basal reads the cell's latent offset (its input grows)."""
        return not self.mean_field_encoder

    def hyperparameters(self) -> dict[str, float | str | bool]:
        return {
            "temperature": self.temperature,
            "mask_prior_prob": self.mask_prior_prob,
            "embedding_prior_scale": self.embedding_prior_scale,
            "guide": self.guide,
            "mean_field_encoder": self.mean_field_encoder,
            "mask_init_logits": self.mask_init_logits,
            "embedding_loc_init_scale": self.embedding_loc_init_scale,
            "embedding_scale_init": self.embedding_scale_init,
            "embedding_encoder_n_layers": self.embedding_encoder_n_layers,
            "embedding_encoder_n_hidden": self.embedding_encoder_n_hidden,
        }

    @classmethod
    def default_alpha(cls, n_perturbed: int) -> float:
        """SAMS-VAE has no ``alpha``: its sparsity is ``mask_prior_prob``."""
        return 1.0

    # ---- the guide of the global variables -------------------------------------------------
    def _clamped_logits(self) -> torch.Tensor:
        return self.logits.clamp(-_MAX_LOGIT, _MAX_LOGIT)

    def _masks(self) -> torch.Tensor:
        """Every category's masks: drawn in training, their mode otherwise."""
        logits = self._clamped_logits()
        if self.training:
            return gumbel_sigmoid(logits, temperature=self.temperature, hard=True)
        return (logits > 0).to(logits.dtype)

    def _embedding_guide(self, masks: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Loc and scale of every category's q(e | m) given its ``masks`` (mean-field: unused)."""
        if self.guide == "mean_field":
            return self.e_loc, torch.exp(self.e_log_scale) + _SCALE_EPS
        hidden = F.leaky_relu(self.e_input_mask(masks) + self.e_input_rows)
        for layer in self.e_hidden:  # the reference's residual MLP
            hidden = F.leaky_relu(layer(hidden)) + hidden
        variance = torch.exp(self.e_log_var(hidden)) + _SCALE_EPS
        return self.e_mean(hidden), variance.sqrt()

    def _offsets(self) -> torch.Tensor:
        """``m_t * e_t`` of every category: drawn in training, the readout otherwise."""
        masks = self._masks()
        loc, scale = self._embedding_guide(masks)
        embeddings = loc + scale * torch.randn_like(loc) if self.training else loc
        return masks * embeddings

    # ---- per-cell quantities ---------------------------------------------------------------
    def cell_mean(self, perturbation: torch.Tensor) -> torch.Tensor:
        """Each cell's latent offset ``sum_t m_t * e_t`` (n, n_latent).

        In training, one draw per perturbation, shared by its cells in this call (the module
        calls it once per step).
        """
        codes, weight = self._codes(perturbation)
        # one draw of the whole table, as the reference's guide (O(K p) a step)
        per_slot = self._offsets()[codes] * weight.unsqueeze(-1)
        return per_slot.sum(dim=1)

    # ---- global term -----------------------------------------------------------------------
    def penalty(self) -> torch.Tensor:
        """``KL(q(m) || Bern(p)) + E_q(m) KL(q(e | m) || N(0, s^2))`` over the perturbations.

        Both in closed form (the reference scores one draw of each; same expectation, less
        noise); the correlated guide's expectation over m uses one draw of the masks.
        """
        logits = self._clamped_logits()
        pi = torch.sigmoid(logits)
        p = self.mask_prior_prob
        kl_masks = pi * (F.logsigmoid(logits) - math.log(p)) + (1.0 - pi) * (
            F.logsigmoid(-logits) - math.log1p(-p)
        )
        # the correlated guide's q(e | m) needs a draw of the masks; the mean-field one none
        masks = self._masks() if self.guide == "correlated" else None
        loc, scale = self._embedding_guide(masks)
        s = self.embedding_prior_scale
        kl_embeddings = (
            math.log(s) - torch.log(scale) + (scale.square() + loc.square()) / (2 * s * s) - 0.5
        )
        return ((kl_masks + kl_embeddings) * self.is_perturbed.unsqueeze(-1)).sum()

    # ---- readouts --------------------------------------------------------------------------
    def mask_probabilities(self) -> torch.Tensor:
        return torch.sigmoid(self._clamped_logits())

    def learned_shifts(self) -> torch.Tensor:
        """The mean of q(e) of each perturbation (given the mask's mode, correlated guide)."""
        masks = (self._clamped_logits() > 0).to(self.logits.dtype)
        loc, _ = self._embedding_guide(masks)
        return loc * self.is_perturbed.unsqueeze(-1)

    # ---- transfer --------------------------------------------------------------------------
    @torch.no_grad()
    def init_transfer(
        self, rows: list[int], latent_means: Callable[[], torch.Tensor], sparse: bool
    ) -> bool:
        """New perturbations: q(e) starts at their cells' mean latent, q(m) where training does.

        ``sparse=False`` switches every mask on (the paper's gamma = 1 transfer): the mean-field
        guide then needs no training; the correlated guide's q(e | m) rows are learned either
        way.
        """
        if self.guide == "mean_field":
            self.e_loc[rows] = torch.as_tensor(latent_means(), device=self.e_loc.device)
            self.e_log_scale[rows] = math.log(self.embedding_scale_init)
        else:
            self.e_input_rows[rows] = 0.0
        self.logits[rows] = self.mask_init_logits if sparse else _MAX_LOGIT
        return sparse or self.guide == "correlated"
