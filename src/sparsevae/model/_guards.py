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


def all_finite(loss_output: LossOutput, params: list[nn.Parameter]) -> bool:
    """Whether the loss and the gradient of every parameter in ``params`` are finite.

    One device synchronisation: the fast test is that the loss plus the sum of the gradients'
    norms (one ``foreach`` kernel) is finite, as NaN and infinity propagate through both. Only
    if it fails is every gradient checked on its own, so that finite gradients whose norm merely
    overflows float32 are not mistaken for non-finite ones. ``params`` is listed once by the
    caller: walking ``module.parameters()`` every step cost more than the check.
    """
    grads = [p.grad for p in params if p.grad is not None]
    total = loss_output.loss.detach()
    if grads:
        total = total + torch.stack(torch._foreach_norm(grads)).sum().to(total.device)
    if bool(torch.isfinite(total)):
        return True
    return bool(torch.isfinite(loss_output.loss).all()) and all(
        bool(torch.isfinite(g).all()) for g in grads
    )


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

    The copy lives on the module's device and is written in place, so keeping it costs one
    extra copy of the model in memory and one device-side copy per step. The module's tensors
    are listed once: training updates parameters and buffers in place, so the list stays
    valid (and walking ``state_dict()`` every step cost more than the copy).
    """

    def __init__(self, module: nn.Module):
        self._state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        live = module.state_dict(keep_vars=True)
        self._sources = [live[k].detach() for k in self._state]
        self._copies = list(self._state.values())

    @torch.no_grad()
    def save(self, module: nn.Module) -> None:
        torch._foreach_copy_(self._copies, self._sources)

    @torch.no_grad()
    def restore(self, module: nn.Module) -> None:
        module.load_state_dict(self._state)
