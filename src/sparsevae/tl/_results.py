"""Write a trained model's results into the AnnData (scanpy-style ``tl``)."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from sparsevae._constants import RESULT_PARAMS_KEY, RESULT_PI_KEY, RESULT_SHIFT_KEY

if TYPE_CHECKING:
    from anndata import AnnData

    from sparsevae.model import SparseVAE

logger = logging.getLogger(__name__)


def _h5ad_safe(value):
    """Parameters as h5ad-writable values: None → "None", containers → JSON strings."""
    if value is None:
        return "None"
    if isinstance(value, bool | int | float | str | np.integer | np.floating):
        return value
    return json.dumps(value, default=str)


def _check_key_added(
    adata: AnnData,
    key_added,
    result_keys: Sequence[str],
    tool: str,
    *,
    obs: bool = False,
    obsm: str | None = None,
) -> None:
    """Raise for a ``key_added`` that is no name; warn before overwriting others' data.

    ``result_keys``: the keys ``tool`` writes into ``adata.uns[key_added]``; an earlier result
    of ``tool`` there is replaced as documented. Anything else already at ``uns[key_added]``
    (or ``obs[key_added]`` if ``obs``, ``obsm[obsm]`` if given) was written by someone else,
    and is overwritten with a warning.
    """
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"key_added must be a non-empty string, got {key_added!r}.")
    previous = adata.uns.get(key_added)
    if isinstance(previous, Mapping) and set(result_keys) <= set(previous):
        return  # an earlier result of this tool
    taken = [f"adata.uns[{key_added!r}]"] if key_added in adata.uns else []
    if obs and key_added in adata.obs:
        taken.append(f"adata.obs[{key_added!r}]")
    if obsm is not None and obsm in adata.obsm:
        taken.append(f"adata.obsm[{obsm!r}]")
    if taken:
        warnings.warn(
            f"{tool}(key_added={key_added!r}) overwrites {' and '.join(taken)}, which "
            f"{tool} did not write. Pass another key_added to keep what is there.",
            UserWarning,
            stacklevel=3,
        )


def write_results(
    adata: AnnData,
    model: SparseVAE,
    *,
    key_added: str = "sparsevae",
    batch_size: int | None = None,
) -> None:
    """Store the model's latents, mask probabilities and shifts in ``adata``.

    Writes

    - ``adata.obsm[f"X_{key_added}"]``: latent representation (cells × n_latent);
    - ``adata.uns[key_added]["pi"]``: DataFrame perturbations × latents, P(gamma = 1);
    - ``adata.uns[key_added]["shift"]``: DataFrame perturbations × latents, the shifts;
    - ``adata.uns[key_added]["params"]``: dict of the model's settings (prior, n_latent, ...).

    All of it survives ``adata.write_h5ad`` / ``anndata.read_h5ad``; scanpy continues from it,
    e.g. ``sc.pp.neighbors(adata, use_rep=f"X_{key_added}")``.

    Parameters
    ----------
    adata
        Cells to embed; their genes must match the model's (registered with the model's setup
        automatically if needed).
    model
        A trained :class:`~sparsevae.SparseVAE`.
    key_added
        Key under which results are stored. An earlier result of ``write_results`` there is
        replaced; other data at ``uns[key_added]`` or ``obsm[f"X_{key_added}"]`` are too, with
        a warning.
    batch_size
        Minibatch size for the latent representation.
    """
    _check_key_added(
        adata,
        key_added,
        (RESULT_PI_KEY, RESULT_SHIFT_KEY, RESULT_PARAMS_KEY),
        "write_results",
        obsm=f"X_{key_added}" if isinstance(key_added, str) else None,
    )
    latent = model.get_latent_representation(adata, batch_size=batch_size)
    pi = model.get_mask_probabilities()
    shift = model.get_perturbation_shifts()
    params = {
        name: _h5ad_safe(value) for name, value in model.init_params_.get("non_kwargs", {}).items()
    }
    params["prior"] = model.prior_name
    params["alpha"] = _h5ad_safe(getattr(model.module.prior, "alpha", None))
    params["control"] = _h5ad_safe(model.control)
    adata.obsm[f"X_{key_added}"] = latent
    adata.uns[key_added] = {
        RESULT_PI_KEY: pi,
        RESULT_SHIFT_KEY: shift,
        RESULT_PARAMS_KEY: params,
    }
    logger.info("Wrote obsm['X_%s'] and uns['%s'] (pi, shift, params).", key_added, key_added)
