"""Numerical guard of training: stop at the first NaN or infinite loss or gradient.

:class:`~sparsevae.model.SparseVAETrainingPlan` checks every step, before the optimiser moves,
that the loss and all gradients are finite. It keeps a copy of the parameters of the last step
that passed, so that a run which goes wrong stops with the last good parameters in the model and
an error that says which loss term failed and where, instead of training on NaNs for hours.
"""

from __future__ import annotations

import torch
from scvi.module.base import LossOutput
from torch import nn

#: The loss terms of :class:`~scvi.module.base.LossOutput`, named as in ``model.history``.
LOSS_TERMS = ("reconstruction_loss", "kl_local", "kl_global")


class NonFiniteLossError(FloatingPointError):
    """A loss term or gradient became NaN or infinite during training.

    Attributes
    ----------
    term
        ``"reconstruction_loss"``, ``"kl_local"``, ``"kl_global"`` (the prior's global term),
        ``"loss"`` (the total, when every term was finite) or ``"gradient"``.
    epoch, step
        Epoch and global optimiser step at which it happened.
    """

    def __init__(self, message: str, *, term: str, epoch: int, step: int):
        super().__init__(message)
        self.term = term
        self.epoch = epoch
        self.step = step


def loss_terms(loss_output: LossOutput) -> dict[str, torch.Tensor]:
    """Minibatch sums of each loss term, and the total loss."""
    return {
        "reconstruction_loss": loss_output.reconstruction_loss_sum.detach(),
        "kl_local": loss_output.kl_local_sum.detach(),
        "kl_global": loss_output.kl_global_sum.detach(),
        "loss": loss_output.loss.detach(),
    }


def all_finite(loss_output: LossOutput, module: nn.Module) -> bool:
    """Whether the loss and every gradient are finite (one device synchronisation)."""
    checks = [torch.isfinite(loss_output.loss).all()]
    checks += [torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None]
    return bool(torch.stack(checks).all())


def nonfinite_term(terms: dict[str, torch.Tensor]) -> str | None:
    """The first non-finite loss term (``"loss"`` if only the total is), or ``None``."""
    for name in (*LOSS_TERMS, "loss"):
        if not bool(torch.isfinite(terms[name]).all()):
            return name
    return None


def nonfinite_gradients(module: nn.Module) -> list[str]:
    """Names of the parameters whose gradient holds NaN or infinite values."""
    return [
        name
        for name, param in module.named_parameters()
        if param.grad is not None and not bool(torch.isfinite(param.grad).all())
    ]


def format_terms(terms: dict[str, torch.Tensor], sums: str = "minibatch") -> str:
    """``"minibatch sums: reconstruction_loss=..., kl_local=..., kl_global=...; loss=..."``."""
    parts = ", ".join(f"{name}={float(terms[name]):.6g}" for name in LOSS_TERMS)
    return f"{sums} sums: {parts}; loss={float(terms['loss']):.6g}"


class LastGoodParameters:
    """A copy of a module's state (parameters and buffers), refreshed in place.

    The copy lives on the module's device and is written with ``copy_``, so keeping it costs
    one extra copy of the model in memory and one device-side copy per step.
    """

    def __init__(self, module: nn.Module):
        self._state = {k: v.detach().clone() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def save(self, module: nn.Module) -> None:
        for key, value in module.state_dict().items():
            self._state[key].copy_(value)

    @torch.no_grad()
    def restore(self, module: nn.Module) -> None:
        module.load_state_dict(self._state)
