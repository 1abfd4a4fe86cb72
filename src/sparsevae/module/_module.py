"""The sparse mechanism shift VAE as a pure torch module (scvi-tools ``BaseModuleClass``)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from scvi.distributions import NegativeBinomial
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from scvi.nn import DecoderSCVI, Encoder, FCLayers
from torch.distributions import Normal

from sparsevae._constants import MODULE_KEYS, PRIORS, REGISTRY_KEYS

from ._prior_base import Minibatch
from ._priors import PerturbationPrior, make_prior

# Bounds that keep every distribution's parameters finite in float32 (exp overflows above 88):
# posterior variances up to 1e4 (the prior's is 1) and inverse dispersions within
# [exp(-15), exp(15)] (about 3e-7 to 3e6; beyond that the negative binomial is Poisson).
_MAX_LOG_VARIANCE = math.log(1e4)
_MAX_ABS_LOG_THETA = 15.0


def _bounded_exp(x: torch.Tensor) -> torch.Tensor:
    """Exp with its input capped: the encoder's variance activation, finite for any input."""
    return torch.exp(x.clamp(max=_MAX_LOG_VARIANCE))


def nb_log_prob_constant(x: torch.Tensor, log_theta: torch.Tensor) -> torch.Tensor:
    """The part of ``sum_g log NB(x_g; mu_g, theta_g)`` that does not depend on mu, per cell.

    ``sum_g lgamma(x + theta) - lgamma(x + 1) - lgamma(theta) + theta log theta``; the terms of
    theta alone are computed once per gene rather than once per cell and gene.
    """
    theta = torch.exp(log_theta)
    per_gene = (theta * log_theta - torch.lgamma(theta)).sum()
    return (torch.lgamma(x + theta) - torch.lgamma(x + 1)).sum(dim=-1) + per_gene


def nb_log_prob(x: torch.Tensor, log_mu: torch.Tensor, log_theta: torch.Tensor) -> torch.Tensor:
    """``sum_g log NB(x_g; mu_g, theta_g)`` per cell, from log means and log inverse dispersions.

    The same value as scvi-tools' ``log_nb_positive`` (up to its 1e-8 guards), written as
    ``constant + x log mu - (x + theta) log(theta + mu)``: working from ``log mu`` (the
    decoder's log-softmax plus the log library size) needs no guard against ``log 0``, and
    the per-gene terms are not repeated for every cell (about a third fewer operations).
    """
    theta = torch.exp(log_theta)
    log_theta_mu = torch.log(theta + torch.exp(log_mu))
    return (
        nb_log_prob_constant(x, log_theta)
        + (x * log_mu).sum(dim=-1)
        - ((x + theta) * log_theta_mu).sum(dim=-1)
    )


def _run_layers(fc_layers: FCLayers, x: torch.Tensor) -> torch.Tensor:
    """``FCLayers`` without covariates on a 2-d input: its layers in order.

    The same function as ``FCLayers.forward`` there, without its concatenation of the input
    with an empty covariate list at every linear layer (a copy of the activations, forward
    and backward, four times a step).
    """
    for layers in fc_layers.fc_layers:
        for layer in layers:
            if layer is not None:
                x = layer(x)
    return x


def _perturbation_codes(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Each cell's perturbation codes, shape (n, k).

    k = 1 for one label per cell, else the width of the padded sets of singles (combinations).
    """
    codes = tensors[REGISTRY_KEYS.PERTURBATION_KEY]
    return codes.reshape(codes.shape[0], -1).long()


class SparseShiftVAE(BaseModuleClass):
    """Encoder q(z | x), negative binomial decoder p(x | z) and a perturbation prior p(z | a).

    Parameters
    ----------
    n_input
        Number of genes.
    n_perturbations
        Number of perturbation categories (control included).
    control_index
        Category code of control cells, or ``None``.
    n_batch
        Number of batches (1: no batch covariate). Batches enter the decoder only.
    n_hidden, n_latent, n_layers, dropout_rate
        Architecture of the encoder and decoder MLPs.
    prior
        ``"spike_slab"`` (sVAE+), ``"l1"`` (sVAE), ``"dense"`` (iVAE) or ``"standard"`` (VAE).
    beta
        Weight of the KL term (beta-VAE when > 1).
    alpha
        Beta(1, alpha) parameter for ``"spike_slab"``; L1 weight for ``"l1"``.
    temperature
        Gumbel-sigmoid temperature of the masks (``mask_estimator="gumbel"``).
    mask_estimator
        ``"exact"`` (expected KL over the masks in closed form) or ``"gumbel"``
        (straight-through Gumbel-sigmoid draws); see :class:`~sparsevae.module.MaskedPrior`.
    use_batch_norm
        Where to use batch normalisation in the MLPs.
    prior_kwargs
        Options of the prior beyond the above (e.g. FactorVAE's ``gamma``): arguments of its
        ``__init__``.
    sparsity
        The cost of an edge under ``"spike_slab"``: ``"calibrated"`` or ``"paper"``; see
        :class:`~sparsevae.module.SpikeSlabPrior`.
    """

    def __init__(
        self,
        n_input: int,
        n_perturbations: int,
        control_index: int | None = None,
        n_batch: int = 1,
        n_hidden: int = 128,
        n_latent: int = 15,
        n_layers: int = 2,
        dropout_rate: float = 0.1,
        prior: str = PRIORS.SPIKE_SLAB,
        beta: float = 1.0,
        alpha: float = 1.0,
        temperature: float = 1.0,
        use_batch_norm: Literal["encoder", "decoder", "none", "both"] = "both",
        mask_estimator: Literal["exact", "gumbel"] = "exact",
        prior_kwargs: dict | None = None,
        sparsity: Literal["calibrated", "paper"] = "calibrated",
    ):
        super().__init__()
        self.n_input = n_input
        self.n_latent = n_latent
        self.n_batch = n_batch
        self.beta = float(beta)
        batch_norm_encoder = use_batch_norm in ("encoder", "both")
        batch_norm_decoder = use_batch_norm in ("decoder", "both")
        cat_list = [n_batch] if n_batch > 1 else None

        def encoder(n_features: int) -> Encoder:
            return Encoder(
                n_features,
                n_latent,
                n_layers=n_layers,
                n_hidden=n_hidden,
                dropout_rate=dropout_rate,
                use_batch_norm=batch_norm_encoder,
                var_activation=_bounded_exp,
                return_dist=True,
            )

        self.z_encoder = encoder(n_input)
        self.decoder = DecoderSCVI(
            n_latent,
            n_input,
            n_cat_list=cat_list,
            n_layers=n_layers,
            n_hidden=n_hidden,
            use_batch_norm=batch_norm_decoder,
        )
        # One inverse dispersion per gene (log scale), as scVI's dispersion="gene".
        self.px_r = torch.nn.Parameter(torch.randn(n_input))
        self.prior: PerturbationPrior = make_prior(
            prior,
            n_perturbations,
            n_latent,
            control_index,
            alpha=alpha,
            temperature=temperature,
            estimator=mask_estimator,
            sparsity=sparsity,
            **(prior_kwargs or {}),
        )
        if self.prior.encoder_sees_offset:
            # SAMS-VAE's encoder of z_basal also reads the cell's latent offset; built after
            # the prior so that every other prior's networks start from the same random draws
            # as before SAMS-VAE existed
            self.z_encoder = encoder(n_input + n_latent)

    def log_theta(self) -> torch.Tensor:
        """Log inverse dispersion per gene, bounded so that theta stays finite and positive."""
        return self.px_r.clamp(-_MAX_ABS_LOG_THETA, _MAX_ABS_LOG_THETA)

    # ---- plumbing ------------------------------------------------------------------------
    def _get_inference_input(self, tensors: dict[str, torch.Tensor], **kwargs) -> dict:
        return {
            MODULE_KEYS.X_KEY: tensors[REGISTRY_KEYS.X_KEY],
            MODULE_KEYS.PERTURBATION_KEY: tensors[REGISTRY_KEYS.PERTURBATION_KEY],
        }

    def _get_generative_input(
        self, tensors: dict[str, torch.Tensor], inference_outputs: dict, **kwargs
    ) -> dict:
        batch = tensors.get(REGISTRY_KEYS.BATCH_KEY)
        return {
            MODULE_KEYS.Z_KEY: inference_outputs[MODULE_KEYS.Z_KEY],
            MODULE_KEYS.LIBRARY_KEY: inference_outputs[MODULE_KEYS.LIBRARY_KEY],
            MODULE_KEYS.BATCH_INDEX_KEY: batch,
            MODULE_KEYS.PERTURBATION_KEY: tensors[REGISTRY_KEYS.PERTURBATION_KEY],
            MODULE_KEYS.OFFSET_KEY: inference_outputs.get(MODULE_KEYS.OFFSET_KEY),
        }

    # ---- model ---------------------------------------------------------------------------
    @auto_move_data
    def inference(
        self, x: torch.Tensor, perturbation: torch.Tensor | None = None, n_samples: int = 1
    ) -> dict:
        """q(z | x) from log1p counts; ``library`` is the observed log library size.

        ``perturbation`` (the cells' codes) is read only by priors that add a latent offset
        (SAMS-VAE, :attr:`~sparsevae.module.PerturbationPrior.adds_offset`): the offset, drawn
        once here per step in training, is returned as ``latent_offset`` for the KL term.
        """
        library = torch.log(x.sum(dim=1, keepdim=True))
        offset = self.latent_offset(perturbation)
        qz = self.encode(x, offset=offset)
        if n_samples > 1:
            z = qz.rsample((n_samples,))
            library = library.expand(n_samples, -1, -1)
        else:
            z = qz.rsample()
        return {
            MODULE_KEYS.QZ_KEY: qz,
            MODULE_KEYS.Z_KEY: z,
            MODULE_KEYS.LIBRARY_KEY: library,
            MODULE_KEYS.OFFSET_KEY: offset,
        }

    def latent_offset(self, perturbation: torch.Tensor | None) -> torch.Tensor | None:
        """Each cell's latent offset for priors that add one (SAMS-VAE), else ``None``.

        Raises if such a prior is given no perturbation codes: every cell would be read as a
        control cell.
        """
        if not self.prior.adds_offset:
            return None
        if perturbation is None:
            raise ValueError(
                f"prior={self.prior.name!r} adds each cell's perturbation offset to its latent "
                "variables: encoding needs the cells' perturbation codes."
            )
        return self.prior.cell_mean(perturbation.reshape(perturbation.shape[0], -1).long())

    def encode(
        self,
        x: torch.Tensor,
        perturbation: torch.Tensor | None = None,
        offset: torch.Tensor | None = None,
    ) -> Normal:
        """q(z | x) from counts: scvi's ``Encoder`` on log1p counts, run layer by layer.

        The one place that encodes cells: training, the IWELBO, the rotation's data pass,
        predictions and the gene loadings all call it. The same distribution as
        ``self.z_encoder(torch.log1p(x))`` (tested), without drawing the sample the encoder
        draws and built without ``Normal``'s argument checks (the variance is positive by
        construction, and the checks synchronise on every call). Dropout follows the module's
        mode.

        For priors that add a latent offset (SAMS-VAE), the encoder gives q(z_basal | x,
        offset) and this returns q(z) with ``z = z_basal + offset``; ``offset`` is computed
        from ``perturbation`` (the cells' codes) when not given (:meth:`latent_offset`).
        """
        if offset is None:
            offset = self.latent_offset(perturbation)
        encoder = self.z_encoder
        inputs = torch.log1p(x)
        if offset is not None and self.prior.encoder_sees_offset:
            inputs = torch.cat([inputs, offset], dim=-1)
        hidden = _run_layers(encoder.encoder, inputs)
        variance = encoder.var_activation(encoder.var_encoder(hidden)) + encoder.var_eps
        loc = encoder.mean_encoder(hidden)
        if offset is not None:
            loc = loc + offset
        return Normal(loc, variance.sqrt(), validate_args=False)

    @auto_move_data
    def generative(
        self,
        z: torch.Tensor,
        library: torch.Tensor,
        perturbation: torch.Tensor,
        batch_index: torch.Tensor | None = None,
        latent_offset: torch.Tensor | None = None,
    ) -> dict:
        """p(x | z), its log means, and the prior p(z | a) of each cell.

        The prior is ``None`` in training when its KL term is computed in closed form from the
        perturbation codes (``mask_estimator="exact"``): no mask needs drawing then. With a
        ``latent_offset`` (SAMS-VAE, drawn by :meth:`inference`), it is ``N(offset, I)``: the
        same draw as the encoder's.
        """
        log_scale = self.decode(z, batch_index)
        log_rate = log_scale + library
        px = NegativeBinomial(
            mu=torch.exp(log_rate), theta=torch.exp(self.log_theta()), scale=torch.exp(log_scale)
        )
        pz = None
        if latent_offset is not None:
            pz = Normal(latent_offset, torch.ones_like(latent_offset), validate_args=False)
        elif not self.prior.kl_is_closed_form:
            pz = self.prior.distribution(perturbation.reshape(perturbation.shape[0], -1).long())
        return {MODULE_KEYS.PX_KEY: px, MODULE_KEYS.PZ_KEY: pz, MODULE_KEYS.LOG_RATE_KEY: log_rate}

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
        generative_outputs: dict,
        kl_weight: float = 1.0,
        n_obs: int = 1,
    ) -> LossOutput:
        """Per-cell negative ELBO averaged over the minibatch plus the prior's global term / N.

        The objective of Lopez et al. (2023), ``N * mean(rec + kl_weight * KL) + kl_weight *
        penalty``, divided by the number of training cells N, so the logged loss reads per
        cell, plus the prior's
        minibatch regulariser (:meth:`~sparsevae.module.PerturbationPrior.batch_penalty`,
        0 for the ELBO methods; not part of the logged ELBO).
        """
        x = tensors[REGISTRY_KEYS.X_KEY]
        qz: Normal = inference_outputs[MODULE_KEYS.QZ_KEY]
        log_rate = generative_outputs[MODULE_KEYS.LOG_RATE_KEY]
        reconstruction = -nb_log_prob(x, log_rate, self.log_theta())
        pz = generative_outputs[MODULE_KEYS.PZ_KEY]  # None when the KL is in closed form
        kl_z = self.prior.kl(qz, _perturbation_codes(tensors), pz)
        penalty = self.prior.penalty()
        z = inference_outputs[MODULE_KEYS.Z_KEY]
        codes = _perturbation_codes(tensors)
        batch_penalty = self.prior.batch_penalty(Minibatch(qz, z, codes, kl_weight, n_obs))
        loss = (
            torch.mean(reconstruction + kl_weight * self.beta * kl_z)
            + kl_weight * penalty / max(n_obs, 1)
            + batch_penalty
        )
        return LossOutput(
            loss=loss,
            reconstruction_loss=reconstruction,
            kl_local=kl_z,
            kl_global=penalty,
            extra_metrics={"batch_penalty": batch_penalty.detach()},
        )

    # ---- orientation of the latent space ------------------------------------------------
    @torch.no_grad()
    def rotate_latents(
        self,
        rotation: torch.Tensor,
        shifts: torch.Tensor,
        rows: torch.Tensor,
        offset: torch.Tensor | None = None,
    ) -> None:
        """Rotate the latent space, z -> z @ R - c, leaving the networks' function unchanged.

        The encoder's mean layer is rotated and the decoder's first layer takes the rotation
        back, so the decoder's output for an encoded cell is the same as before (the encoder's
        variances stay per latent, an approximation that training corrects). The prior follows
        (:meth:`~sparsevae.module.DensePrior.rotate`): ``shifts`` (rotated, shape
        (n_perturbations, n_latent)) replace mu for the perturbations flagged in ``rows``.
        ``offset`` (c, shape (n_latent,); default none) also moves the origin: without control
        cells nothing else places it; the training plan moves it to the perturbations'
        per-latent median (the reference of the one shift definition, :mod:`sparsevae._shifts`),
        and ``shifts`` are then given from the new origin (the perturbations' mean latents
        ``@ R - c``). See :mod:`sparsevae.module._rotation` for why and when.
        """
        mean_layer = self.z_encoder.mean_encoder
        mean_layer.weight.copy_(rotation.T @ mean_layer.weight)
        mean_layer.bias.copy_(mean_layer.bias @ rotation)
        first_layer = self.decoder.px_decoder.fc_layers[0][0]  # inputs: z, then covariates
        first_layer.weight[:, : self.n_latent] = first_layer.weight[:, : self.n_latent] @ rotation
        if offset is not None:  # W z' + b = W (z' - c) + (b + W c)
            mean_layer.bias.sub_(offset)
            first_layer.bias.add_(first_layer.weight[:, : self.n_latent] @ offset)
        self.prior.rotate(rotation, shifts, rows, offset)

    # ---- importance-weighted likelihood --------------------------------------------------
    def decode(self, z: torch.Tensor, batch_index: torch.Tensor | None = None) -> torch.Tensor:
        """Log of the decoder's gene proportions, from its logits (stabler than log(softmax)).

        The one place that decodes latents (the IWELBO calls :meth:`_decode_log_scale` with
        the folded decoder computed once for all its particles).

        ``z`` may carry leading particle dimensions; they are flattened so that batch
        normalisation sees one 2-d input (scvi's FCLayers loops over a 3-d input's first axis).
        ``batch_index`` broadcasts against ``z.shape[:-1] + (1,)`` (shape (n_cells, 1) for z of
        shape (n_cells, n_latent) or (n_samples, n_cells, n_latent)). In eval mode without
        batch covariates the decoder runs as plain matrix products with batch normalisation
        folded into the weights (:meth:`_folded_decoder`).
        """
        folded = self._folded_decoder() if self.n_batch <= 1 else None
        return self._decode_log_scale(z, batch_index, folded)

    def _decode_log_scale(
        self,
        z: torch.Tensor,
        batch_index: torch.Tensor | None,
        folded: list[tuple[torch.Tensor, torch.Tensor]] | None,
    ) -> torch.Tensor:
        """:meth:`decode` with the folded decoder given (``None``: use the modules)."""
        lead, n_latent = z.shape[:-1], z.shape[-1]
        z_flat = z.reshape(-1, n_latent)
        if folded is not None:
            *hidden_layers, (weight, bias) = folded
            hidden = z_flat
            for w, b in hidden_layers:
                hidden = torch.addmm(b, hidden, w.t()).relu_()
            logits = torch.addmm(bias, hidden, weight.t())
            return torch.log_softmax(logits, dim=-1).reshape(*lead, -1)
        if self.n_batch > 1 and batch_index is not None:
            cat = batch_index.expand(*lead, 1).reshape(-1, 1)
            hidden = self.decoder.px_decoder(z_flat, cat)
        else:
            hidden = _run_layers(self.decoder.px_decoder, z_flat)
        logits = self.decoder.px_scale_decoder[0](hidden)  # the Linear before scvi's Softmax
        return torch.log_softmax(logits, dim=-1).reshape(*lead, -1)

    def _folded_decoder(self) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """The eval-mode decoder as (weight, bias) pairs, batch normalisation folded in.

        In eval mode ``BatchNorm(W z + b) = W' z + b'`` with ``W' = s W``,
        ``b' = s (b - running_mean) + beta`` and ``s = gamma / sqrt(running_var + eps)``, so the
        decoder is Linear-ReLU-Linear-ReLU-Linear: about twice as fast for the many particles of
        the IWELBO. Returns ``None`` (use the modules) in training mode or for layer types this
        does not cover (layer norm).
        """
        if self.decoder.training:
            return None
        folded = []
        for layers in self.decoder.px_decoder.fc_layers:
            linear, batch_norm, layer_norm, activation = layers[0], layers[1], layers[2], layers[3]
            if layer_norm is not None or not isinstance(activation, torch.nn.ReLU):
                return None
            weight, bias = linear.weight, linear.bias
            if batch_norm is not None:
                scale = batch_norm.weight / torch.sqrt(batch_norm.running_var + batch_norm.eps)
                weight = weight * scale.unsqueeze(-1)
                bias = (bias - batch_norm.running_mean) * scale + batch_norm.bias
            folded.append((weight, bias))
        output = self.decoder.px_scale_decoder[0]
        folded.append((output.weight, output.bias))
        return folded

    @auto_move_data
    @torch.inference_mode()
    def latent_shift_effects(
        self,
        x: torch.Tensor,
        batch_index: torch.Tensor | None,
        shift: float = 1.0,
        perturbation: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Effect of shifting each latent on the decoder's gene proportions, summed over cells.

        Returns ``sum_c log rho(z_c + shift * e_i) - log rho(z_c)``, shape (n_latent, n_genes),
        and ``sum_c rho(z_c)``, shape (n_genes,), where ``z_c`` is cell c's posterior mean,
        ``rho`` the decoder's gene proportions and ``e_i`` the i-th unit vector. All latents
        are shifted in one decoder pass over n_latent × n_cells inputs. Batch normalisation
        follows the module's mode: call ``eval()`` first. ``perturbation``: the cells' codes
        (needed by priors that add a latent offset, :meth:`latent_offset`).
        """
        qz = self.encode(x, perturbation)
        z = qz.loc
        steps = shift * torch.eye(self.n_latent, device=z.device, dtype=z.dtype)
        shifted = z.unsqueeze(0) + steps.unsqueeze(1)  # (n_latent, n_cells, n_latent)
        base = self.decode(z, batch_index)
        moved = self.decode(shifted, batch_index)
        return (moved - base.unsqueeze(0)).sum(dim=1), base.exp().sum(dim=0)

    @auto_move_data
    @torch.inference_mode()
    def marginal_ll(
        self,
        tensors: dict[str, torch.Tensor],
        n_mc_samples: int = 1000,
        return_mean: bool = False,
        n_mc_samples_per_pass: int | None = None,
        max_elements_per_pass: int = 2**19,
    ) -> torch.Tensor | float:
        """Importance-weighted ELBO (Burda et al. 2016): an estimate of log p(x | a) per cell.

        ``log (1/S) sum_s p(x | z_s) p(z_s | a) / q(z_s | x)`` with ``z_s ~ q(z | x)``. The
        encoder runs once; particles are drawn and decoded in chunks of
        ``n_mc_samples_per_pass`` (default: as many as fit ``max_elements_per_pass`` values of
        particles × cells × genes), and chunks are combined with ``logsumexp``. Masks and batch
        normalisation follow the module's mode: call ``eval()`` first for the evaluation
        readout (hard masks ``pi > 0.5``).

        The negative binomial terms that do not depend on z (the log-gamma terms) are computed
        once per cell rather than once per particle: they are most of the likelihood's cost.
        Signature as scvi-tools' ``VAE.marginal_ll``, so ``model.get_marginal_ll`` uses it.
        """
        x = tensors[REGISTRY_KEYS.X_KEY]
        perturbation = _perturbation_codes(tensors)
        batch_index = tensors.get(REGISTRY_KEYS.BATCH_KEY)
        if batch_index is not None:
            batch_index = batch_index.unsqueeze(1)  # (n_cells, 1, 1): broadcasts over particles
        qz = self.encode(x, perturbation)
        folded = self._folded_decoder() if self.n_batch <= 1 else None
        library = x.sum(dim=-1, keepdim=True)
        log_theta = self.log_theta()
        theta = torch.exp(log_theta)
        # nb_log_prob with mu = L * rho (L the library size, rho the decoder's proportions):
        # x.log mu - (x + theta).log(theta + mu)
        #   = x.log rho - (x + theta).log(theta / L + rho) - sum(theta) log L,
        # so per particle only rho is needed; the z-free terms are computed once per cell.
        constant = (
            nb_log_prob_constant(x, log_theta) - theta.sum() * torch.log(library).squeeze(-1)
        ).unsqueeze(-1)
        x_column, x_theta = x.unsqueeze(-1), (x + theta).unsqueeze(-1)
        theta_per_library = (theta / library).unsqueeze(1)  # (n_cells, 1, n_genes)
        # Gaussian log density written out (no per-pass argument validation); with
        # z = loc + scale * eps, log q(z | x) = -|eps|^2 / 2 - sum(log scale) - const
        log_q_constant = torch.log(qz.scale).sum(dim=-1, keepdim=True)
        n_cells, n_latent = qz.loc.shape
        if n_mc_samples_per_pass is None:
            n_mc_samples_per_pass = max_elements_per_pass // max(x.shape[0] * x.shape[1], 1)
        n_per_pass = int(min(max(n_mc_samples_per_pass, 1), n_mc_samples))
        chunk_lse = []
        for start in range(0, n_mc_samples, n_per_pass):
            # cells first, (n_cells, particles, ...): each cell's sums over genes are one
            # batched matrix-vector product
            shape = (n_cells, min(n_per_pass, n_mc_samples - start), n_latent)
            eps = torch.randn(shape, dtype=x.dtype, device=x.device)
            z = torch.addcmul(qz.loc.unsqueeze(1), qz.scale.unsqueeze(1), eps)
            log_rho = self._decode_log_scale(z, batch_index, folded)
            x_log_rho = torch.bmm(log_rho, x_column)
            # rho <= 1 and theta / L >= exp(-15) / L keep the log finite
            log_sum = log_rho.exp_().add_(theta_per_library).log_()
            log_px = constant + (x_log_rho - torch.bmm(log_sum, x_theta)).squeeze(-1)
            # log p(z | a) - log q(z | x); the 2 pi terms cancel
            log_pz = self.prior.log_density(z, perturbation)
            log_qz = -0.5 * eps.square().sum(dim=-1) - log_q_constant
            chunk_lse.append(torch.logsumexp(log_px + log_pz - log_qz, dim=1))
        log_lik = torch.logsumexp(torch.stack(chunk_lse), dim=0) - math.log(n_mc_samples)
        if return_mean:
            return log_lik.mean().item()
        return log_lik.cpu()

    @torch.inference_mode()
    def sample(self, tensors: dict[str, torch.Tensor], n_samples: int = 1) -> torch.Tensor:
        """Draw counts from p(x | z) with z from the encoder (posterior predictive)."""
        inference_kwargs = {"n_samples": n_samples}
        _, generative_outputs = self.forward(
            tensors, inference_kwargs=inference_kwargs, compute_loss=False
        )
        return generative_outputs[MODULE_KEYS.PX_KEY].sample().cpu()
