"""Shared plumbing of the ``pl`` functions: axes creation, saving and showing."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """Return ``ax`` or a fresh axes of size ``figsize``."""
    if ax is not None:
        return ax
    _, ax = plt.subplots(figsize=figsize)
    return ax


def finish(ax: Axes, show: bool | None, save: str | Path | None) -> Axes | None:
    """Save the figure of ``ax`` if asked, then show it (and return None) or return ``ax``.

    ``show=None`` shows only when nothing is saved, as scanpy does.
    """
    fig = ax.get_figure()
    if save is not None:
        fig.savefig(save, bbox_inches="tight", dpi=150)
    if show is None:
        show = save is None
    if show:
        plt.show()
        return None
    return ax


def finish_many(axes: list[Axes], show: bool | None, save: str | Path | None) -> list[Axes] | None:
    """:func:`finish` for a figure of several axes: save and show it once, or return ``axes``."""
    finish(axes[0], show=False, save=save)
    if show or (show is None and save is None):
        plt.show()
        return None
    return axes


def label_fontsize(n_labels: int) -> float:
    """Tick label size that stays readable from 10 to 200 labels."""
    return max(4.0, min(10.0, 400.0 / max(n_labels, 1)))


def symmetric_limit(values) -> float:
    """Largest absolute finite value (1 if there is none or it is 0).

    ``vmin=-limit, vmax=limit`` centre a diverging colour map at 0 (seaborn's ``center=``
    warns).
    """
    array = np.asarray(values, dtype=float)
    limit = float(np.nanmax(np.abs(array))) if array.size else 0.0
    return limit if limit > 0 else 1.0
