"""Held-out splits: which perturbations are held out; which of their cells transfer or evaluate."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from sparsevae._validation import repeated, validate_perturbations

logger = logging.getLogger(__name__)

#: Role of each cell in a split.
TRAIN, TRANSFER, EVALUATION, EXCLUDED = "train", "transfer", "evaluation", "excluded"
ROLES = (TRAIN, TRANSFER, EVALUATION, EXCLUDED)
#: A held-out perturbation needs at least one transfer and one evaluation cell.
MIN_HELDOUT_CELLS = 2


@dataclass(frozen=True)
class HeldoutSplit:
    """One held-out split.

    Attributes
    ----------
    name
        Split name (``"cluster_<id>"`` for clusters, else the given name).
    heldout
        Held-out perturbations.
    roles
        Role of every cell, indexed by ``obs_names``: ``"train"`` (training perturbations and
        control), ``"transfer"`` (held-out cells that teach the model the new shift),
        ``"evaluation"`` (held-out cells scored by the interventional NLL) or ``"excluded"``
        (cells of a held-out perturbation with fewer than 2 cells, which cannot be split; the
        report lists such perturbations with their count).
    """

    name: str
    heldout: tuple[str, ...]
    roles: pd.Series

    def to_dict(self) -> dict[str, list[str]]:
        """Held-out perturbations and the cell names of each non-training role."""
        cells = {
            role: [str(c) for c in self.roles.index[self.roles.to_numpy() == role]]
            for role in (TRANSFER, EVALUATION, EXCLUDED)
        }
        return {"heldout": list(self.heldout), **cells}


def _check_clusters_match(
    clusters: pd.DataFrame, perturbations: list[str], perturbation_key: str, cluster_key: str
) -> None:
    """Clusters kept in ``adata.uns`` must cover exactly the screen's perturbations.

    Otherwise they were computed for other data (a subset, other labels) and the splits would
    hold out perturbations the screen does not have, or never hold out some it does.
    """
    clustered = set(map(str, clusters.index))
    missing, extra = sorted(set(perturbations) - clustered), sorted(clustered - set(perturbations))
    if missing or extra:
        raise ValueError(
            f"adata.uns[{cluster_key!r}] clusters other perturbations than "
            f"adata.obs[{perturbation_key!r}] has (not clustered: {missing[:5]}, "
            f"{len(missing)} in all; not in the screen: {extra[:5]}, {len(extra)} in all): it "
            f"was computed for other data. Delete it (del adata.uns[{cluster_key!r}]) to "
            "cluster again, or pass heldout= a list or dict of perturbations."
        )


def _heldout_sets(
    adata: AnnData,
    heldout: str | Sequence[str] | Mapping[str, Sequence[str]],
    perturbations: list[str],
    perturbation_key: str,
    control: str | None,
    cluster_key: str,
    random_state: int,
    cluster_kwargs: dict,
) -> dict[str, list[str]]:
    if isinstance(heldout, str):
        if heldout != "clusters":
            raise ValueError(
                f"heldout={heldout!r}: pass 'clusters', a list of perturbations or a dict "
                "{split name: list of perturbations}."
            )
        if cluster_key not in adata.uns:
            from sparsevae.tl import cluster_perturbations

            clusters = cluster_perturbations(
                adata,
                perturbation_key=perturbation_key,
                control=control,
                key_added=cluster_key,
                random_state=random_state,
                **cluster_kwargs,
            )
            if clusters["cluster"].nunique() == 1 and len(clusters) > 1:
                # One cluster would hold out everything; two Ward clusters always split.
                logger.warning(
                    "Leiden found a single perturbation cluster; using 2 hierarchical "
                    "clusters instead (pass cluster_kwargs to choose)."
                )
                cluster_perturbations(
                    adata,
                    perturbation_key=perturbation_key,
                    control=control,
                    key_added=cluster_key,
                    random_state=random_state,
                    method="hierarchical",
                    n_clusters=2,
                )
        clusters = pd.DataFrame(adata.uns[cluster_key]["clusters"])
        _check_clusters_match(clusters, perturbations, perturbation_key, cluster_key)
        groups = clusters.groupby("cluster").groups
        order = sorted(groups, key=lambda c: (len(str(c)), str(c)))  # "2" before "10"
        return {f"cluster_{c}": sorted(map(str, groups[c])) for c in order}
    if isinstance(heldout, Mapping):
        return {str(k): [str(p) for p in v] for k, v in heldout.items()}
    return {"heldout": [str(p) for p in heldout]}


def make_splits(
    adata: AnnData,
    *,
    perturbation_key: str = "perturbation",
    control: str | None = "control",
    heldout: str | Sequence[str] | Mapping[str, Sequence[str]] = "clusters",
    transfer_fraction: float = 0.5,
    cluster_key: str = "perturbation_cluster",
    random_state: int = 0,
    cluster_kwargs: dict | None = None,
) -> list[HeldoutSplit]:
    """Held-out splits of a screen, reproducible from ``random_state``.

    Parameters
    ----------
    adata
        The screen.
    perturbation_key, control
        Perturbation column and control label.
    heldout
        ``"clusters"``: one split per perturbation cluster (``adata.uns[cluster_key]``, computed
        with :func:`sparsevae.tl.cluster_perturbations` if missing); a list of perturbations
        (one split named ``"heldout"``); or a dict ``{split name: perturbations}``.
    transfer_fraction
        Share of each held-out perturbation's cells used for transfer (the rest is
        evaluated); at least one cell goes to each side.
    cluster_key
        Key of the perturbation clusters in ``adata.uns``.
    random_state
        Seed of the cell shuffles (the same seed gives the same roles).
    cluster_kwargs
        Passed to :func:`sparsevae.tl.cluster_perturbations` when clusters are computed here.

    Returns
    -------
    One :class:`HeldoutSplit` per held-out set.
    """
    if not 0 < transfer_fraction < 1:
        raise ValueError(f"transfer_fraction must be in (0, 1), got {transfer_fraction}.")
    if not adata.obs_names.is_unique:
        raise ValueError(
            "adata.obs_names are not unique; splits are stored by cell name. Run "
            "`adata.obs_names_make_unique()` first."
        )
    categories = validate_perturbations(adata, perturbation_key, control)
    perturbations = [c for c in categories if c != control]
    sets = _heldout_sets(
        adata,
        heldout,
        perturbations,
        perturbation_key,
        control,
        cluster_key,
        random_state,
        cluster_kwargs or {},
    )
    if not sets:
        raise ValueError(
            f"heldout={heldout!r} defines no split, so nothing would be held out; pass "
            "'clusters', a list of perturbations or a dict {split name: perturbations}."
        )
    labels = adata.obs[perturbation_key].astype(str).to_numpy()
    splits = []
    for index, (name, held) in enumerate(sets.items()):
        twice = repeated(held)
        if twice:
            raise ValueError(
                f"Split {name!r} holds out {twice} more than once; name each held-out "
                f"perturbation once, e.g. {list(dict.fromkeys(held))!r}."
            )
        unknown = sorted(set(held) - set(perturbations))
        if unknown:
            raise ValueError(
                f"Split {name!r} holds out {unknown[:5]}, which are not perturbations of "
                f"adata.obs[{perturbation_key!r}] (the control cannot be held out)."
            )
        if not held:
            raise ValueError(f"Split {name!r} holds out no perturbation.")
        if set(held) >= set(perturbations):
            raise ValueError(
                f"Split {name!r} holds out every perturbation, leaving none to train on. Use "
                "more clusters (e.g. cluster_kwargs={'method': 'hierarchical', "
                "'n_clusters': 4}) or pass the held-out perturbations yourself."
            )
        rng = np.random.default_rng([random_state, index])
        roles = np.full(adata.n_obs, TRAIN, dtype=object)
        for perturbation in sorted(held):
            cells = rng.permutation(np.flatnonzero(labels == perturbation))
            if len(cells) < MIN_HELDOUT_CELLS:
                logger.warning(
                    "Split %r: %s has %d cell(s), too few to both transfer and evaluate; it is "
                    "reported with its count and no NLL.",
                    name,
                    perturbation,
                    len(cells),
                )
                roles[cells] = EXCLUDED
                continue
            n_transfer = int(np.clip(round(len(cells) * transfer_fraction), 1, len(cells) - 1))
            roles[cells[:n_transfer]] = TRANSFER
            roles[cells[n_transfer:]] = EVALUATION
        splits.append(
            HeldoutSplit(
                name=name,
                heldout=tuple(sorted(held)),
                roles=pd.Series(
                    pd.Categorical(roles, categories=ROLES), index=adata.obs_names, name=name
                ),
            )
        )
    return splits
