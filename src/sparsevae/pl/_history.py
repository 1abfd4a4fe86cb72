"""Loss curves of a trained model (``model.history``), training and validation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ._utils import finish_many

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_MODES = ("train", "validation")


def _curve(history: Mapping[str, pd.DataFrame], key: str, mode: str) -> pd.Series | None:
    """One logged metric as a Series indexed by epoch; ``loss`` is logged as ``train_loss``."""
    name = f"{mode}_loss" if key == "loss" else f"{key}_{mode}"
    if name not in history:
        return None
    values = pd.DataFrame(history[name]).iloc[:, 0].astype(float).dropna()
    return values if len(values) else None


def training_history(
    model,
    keys: Sequence[str] = ("elbo", "reconstruction_loss", "kl_local"),
    *,
    start_epoch: int = 0,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> list[Axes] | None:
    """Loss curves per epoch, one panel per term, training and validation together.

    Parameters
    ----------
    model
        A trained :class:`~sparsevae.SparseVAE` (or its ``history`` dict).
    keys
        Terms to plot, as logged by :class:`~sparsevae.model.SparseVAETrainingPlan`:
        ``"elbo"`` (negative ELBO per cell), ``"reconstruction_loss"``, ``"kl_local"`` (KL of
        z per cell), ``"kl_global"`` (the sparsity term, for the whole data set) or ``"loss"``
        (the optimised loss, with the KL warm-up weight). Each is drawn from
        ``f"{key}_train"`` and, when validation ran, ``f"{key}_validation"``.
    start_epoch
        First epoch to draw: the first epochs' losses are often so large that they flatten
        the rest of the curve.
    ax
        One axes per key (a single axes for a single key); new ones by default.
    show, save
        Show the figure (by default only when not saved); save it to this path.

    Returns
    -------
    The list of axes, unless shown.

    Examples
    --------
    >>> model.train(max_epochs=100, check_val_every_n_epoch=1)
    >>> sv.pl.training_history(model, start_epoch=5)
    """
    history = getattr(model, "history", model)
    if not isinstance(history, Mapping) or not history:
        raise ValueError(
            "model has no training history; train it first (model.train()) or pass the "
            "model.history dict."
        )
    keys = [keys] if isinstance(keys, str) else list(keys)
    if not keys:
        raise ValueError("keys is empty; pass at least one term, e.g. keys=('elbo',).")
    curves = {key: {mode: _curve(history, key, mode) for mode in _MODES} for key in keys}
    absent = [key for key, modes in curves.items() if all(c is None for c in modes.values())]
    if absent:
        logged = sorted(history)
        raise KeyError(f"{absent} not in the training history; logged metrics: {logged}.")
    if ax is None:
        _, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False)
        axes = list(axes[0])
    else:
        axes = [ax] if not isinstance(ax, Sequence | np.ndarray) else list(ax)
        if len(axes) != len(keys):
            raise ValueError(f"ax must hold one axes per key ({len(keys)}), got {len(axes)}.")
    for axis, key in zip(axes, keys, strict=True):
        for mode, style in zip(_MODES, ("-", "--"), strict=True):
            curve = curves[key][mode]
            if curve is None:
                continue
            curve = curve[curve.index >= start_epoch]
            axis.plot(curve.index.to_numpy(), curve.to_numpy(), style, label=mode)
        axis.set_title(key.replace("_", " "))
        axis.set_xlabel("epoch")
        axis.set_ylabel("nats, whole data set" if key == "kl_global" else "nats per cell")
        axis.legend(frameon=False, fontsize="small")
    axes[0].get_figure().tight_layout()
    return finish_many(axes, show, save)
