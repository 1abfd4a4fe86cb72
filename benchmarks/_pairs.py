"""The held-out-pairs protocol shared by ``combinations.py`` and ``simulated_pairs.py``.

Every listed pair is held out (never trained); ``sv.evaluate.make_splits`` halves its cells
(seeded): the *transfer* half (the split-half baseline, and what transfer models learn from),
the *evaluation* half (scored). Changes are of mean log1p(counts per 10,000) from the training
control cells.

With ``independent_control=True`` the control cells are halved too (seeded): one half is
held out of training and is the reference of the scored (observed) change only; the other
half trains the models, is what predictions start from, and is the reference of every
baseline's change. Nothing a predictor sees is then part of what it is scored against; by
default (the field's protocol) the observed change and the baselines subtract the same
control cells, so their sampling noise is shared between prediction and target.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from anndata import AnnData

METRIC_DIRECTION = {  # +1: higher is better
    "pearson_all_genes": 1,
    "pearson_top20_de": 1,
    "mse_top20_de": -1,
    "l2_top1000_expressed": -1,
}


class PairSplit(NamedTuple):
    train: AnnData
    transfer: AnnData
    evaluation: AnnData
    control: AnnData
    control_mean: np.ndarray
    training_changes: dict
    target_control: AnnData
    target_mean: np.ndarray


def split_pairs(
    adata: AnnData,
    pairs: list[str],
    key: str,
    control: str,
    seed: int,
    independent_control: bool = False,
) -> PairSplit:
    """Cells of one seed's split, the training control cells and the training changes.

    ``target_control`` / ``target_mean``: the control cells the scored change is taken from
    (and their mean log1p(CP10k)); the training control cells unless ``independent_control``.
    """
    import sparsevae as sv

    (split,) = sv.evaluate.make_splits(
        adata, perturbation_key=key, control=control, heldout=pairs, random_state=seed
    )
    roles = split.roles.to_numpy()
    train = adata[roles == "train"].copy()
    control_cells = train[train.obs[key] == control].copy()
    target_cells = control_cells
    if independent_control:
        order = np.random.default_rng([seed, 1]).permutation(control_cells.n_obs)
        held = control_cells.obs_names[order[: control_cells.n_obs // 2]]
        target_cells = control_cells[held].copy()
        train = train[~train.obs_names.isin(held)].copy()
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
        target_cells,
        sv.evaluate.mean_log_expression(target_cells),
    )


def paired_difference(
    ours, theirs, cells, control_mean, n_boot: int, random_state, scores
) -> dict[str, float]:
    """The 95% interval of ``ours`` minus ``theirs`` (predicted changes) per metric over the
    resamples of ``sv.evaluate.score_predictions`` (the same seed draws the same resamples; its
    gene sets too: the top 20 DE genes of all cells, every gene for L2, so at most 1,000
    genes), oriented so that positive favours ``ours``. ``scores``: score_predictions' rows of
    the two predictors, ours first, to check that the resamples are the same.
    """
    scored_ours, scored_theirs = scores.iloc[0], scores.iloc[1]
    n_cells = cells.shape[0]
    rng = np.random.default_rng(random_state)
    weights = rng.multinomial(n_cells, np.full(n_cells, 1.0 / n_cells), size=n_boot)
    resampled = weights @ cells / n_cells - control_mean
    observed = cells.mean(axis=0) - control_mean
    if observed.size > 1000:
        raise ValueError("the L2 metric here assumes at most 1,000 genes")
    top = np.argsort(-np.abs(observed), kind="stable")[:20]

    def metrics(predicted):
        def pearson(p, o):
            p = p - p.mean()
            o = o - o.mean(axis=1, keepdims=True)
            return (o @ p) / np.sqrt((p**2).sum() * (o**2).sum(axis=1))

        error = resampled - predicted
        return {
            "pearson_all_genes": pearson(predicted, resampled),
            "pearson_top20_de": pearson(predicted[top], resampled[:, top]),
            "mse_top20_de": (error[:, top] ** 2).mean(axis=1),
            "l2_top1000_expressed": np.sqrt((error**2).sum(axis=1)),
        }

    ours, theirs = metrics(ours), metrics(theirs)
    out = {}
    for metric, sign in METRIC_DIRECTION.items():
        # The same resamples as score_predictions: the same intervals of each predictor.
        for values, scored in ((ours[metric], scored_ours), (theirs[metric], scored_theirs)):
            bounds = np.quantile(values, [0.025, 0.975])
            expected = scored[[f"{metric}_low", f"{metric}_high"]].to_numpy(dtype=float)
            if not np.allclose(bounds, expected, atol=1e-9):
                raise RuntimeError(f"{metric}: not the resamples of score_predictions")
        difference = sign * (ours[metric] - theirs[metric])
        out[f"{metric}_paired_low"], out[f"{metric}_paired_high"] = np.quantile(
            difference, [0.025, 0.975]
        )
    return out
