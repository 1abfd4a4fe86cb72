"""Straight-through Gumbel-sigmoid (binary concrete) sampling.

torch ships ``RelaxedBernoulli`` but not the straight-through hard sample with a soft gradient,
which is what the spike-and-slab masks need, so this small function is written here.
"""

from __future__ import annotations

import torch


def gumbel_sigmoid(
    logits: torch.Tensor,
    temperature: float = 1.0,
    hard: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Draw relaxed Bernoulli samples, one per entry of ``logits``.

    Parameters
    ----------
    logits
        Log-odds of the Bernoulli probabilities, any shape.
    temperature
        Relaxation temperature; lower is closer to a hard 0/1 sample.
    hard
        Return exact 0/1 values in the forward pass while the backward pass uses the gradient of
        the relaxed sample (straight-through estimator).
    eps
        Keeps the uniform noise away from 0 and 1 so its logit stays finite.

    Returns
    -------
    Tensor of the same shape as ``logits`` with values in [0, 1] (exactly 0/1 when ``hard``).
    """
    u = torch.rand_like(logits).clamp_(eps, 1.0 - eps)
    logistic_noise = torch.log(u) - torch.log1p(-u)
    soft = torch.sigmoid((logits + logistic_noise) / temperature)
    if not hard:
        return soft
    hard_sample = (soft > 0.5).to(soft.dtype)
    return hard_sample + soft - soft.detach()
