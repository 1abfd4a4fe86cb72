"""The held-out-pairs protocol shared by ``combinations.py`` and ``simulated_pairs.py``.

Every listed pair is held out (never trained); ``sv.evaluate.make_splits`` halves its cells
(seeded): the *transfer* half (the split-half baseline, and what transfer models learn from),
the *evaluation* half (scored). Changes are of mean log1p(counts per 10,000) from the training
control cells.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from anndata import AnnData

import sparsevae as sv


class PairSplit(NamedTuple):
    train: AnnData
    transfer: AnnData
    evaluation: AnnData
    control: AnnData
    control_mean: np.ndarray
    training_changes: dict


def split_pairs(adata: AnnData, pairs: list[str], key: str, control: str, seed: int) -> PairSplit:
    """Cells of one seed's split, the training control cells and the training changes."""
    (split,) = sv.evaluate.make_splits(
        adata, perturbation_key=key, control=control, heldout=pairs, random_state=seed
    )
    roles = split.roles.to_numpy()
    train = adata[roles == "train"].copy()
    control_cells = train[train.obs[key] == control].copy()
    control_mean = sv.evaluate.mean_log_expression(control_cells)
    changes = sv.evaluate.observed_changes(train, key, control_mean, exclude=(control,))
    return PairSplit(
        train,
        adata[roles == "transfer"].copy(),
        adata[roles == "evaluation"].copy(),
        control_cells,
        control_mean,
        changes,
    )
