"""Batch-norm statistics of the trained networks, recomputed with their final weights.

In training mode batch normalisation uses each minibatch's own statistics; in eval mode (every
getter, the interventional NLL, predictions) it uses running statistics, an exponential moving
average (scvi-tools' layers: momentum 0.01, about the last 100 steps) of minibatch statistics
computed with *earlier* weights. With Adam at a constant learning rate the weights keep moving,
so the eval-mode networks are not the trained ones. The cost shows in the held-out
interventional NLL of every method, most for FactorVAE, whose adversarial total-correlation
term keeps its encoder moving (``benchmarks/batch_norm.py`` measures it for every method; see
the benchmarks page of the docs).

The fix is the one of stochastic weight averaging and "precise BN" (Wu & Johnson, 2021): after
training, one pass over the training cells in training mode, without gradients, with the
running statistics reset and averaged cumulatively (``torch.optim.swa_utils.update_bn``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from scvi.model.base import BaseModelClass


class _InferenceAndGenerative(nn.Module):
    """Forward of a scvi-tools module without the loss, on the module's device, no gradients."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, tensors: dict[str, torch.Tensor]):
        device = next(self.module.parameters()).device
        tensors = {key: value.to(device) for key, value in tensors.items()}
        with torch.no_grad():
            return self.module(tensors, compute_loss=False)


def recalibrate_batch_norm(model: BaseModelClass, batch_size: int = 256) -> int:
    """Recompute every batch-norm layer's running statistics on the training cells.

    Uses ``model.train_indices`` (all cells if the model has none), shuffled minibatches of
    ``batch_size`` as in training, dropout and mask sampling as in training. Parameters are
    not changed. Returns the number of batch-norm layers recomputed (0: nothing to do).
    """
    layers = [m for m in model.module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return 0
    indices = getattr(model, "train_indices", None)
    loader = model._make_data_loader(
        adata=model.adata, indices=indices, batch_size=batch_size, shuffle=True
    )
    torch.optim.swa_utils.update_bn(loader, _InferenceAndGenerative(model.module))
    model.module.eval()
    return len(layers)
