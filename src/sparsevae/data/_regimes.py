"""Named simulation regimes: the paper's setting and screens that look like real ones.

One place for every setting the regime benchmark (``benchmarks/regimes.py``), the tests and the
docs use: :data:`REGIMES` maps a name to the keyword arguments of
:func:`~sparsevae.data.simulate_sparse_shift`, and :func:`simulate_regime` simulates one.

=================  =====  ====  =====  =======  =============  ============  ======  =========
regime             K      p     cells  genes    shift (SD)     decoder       noise   depth
=================  =====  ====  =====  =======  =============  ============  ======  =========
``paper``          100    15    250    100      5 ± 0.5        MLP           Pois.   1e5
``realistic``      200    20    70     1,000    1.5 (1.1-2.0)  programmes    NB(5)   3,000
``weak_effects``   200    20    70     1,000    0.9 (0.7-1.2)  programmes    NB(5)   3,000
``few_cells``      200    20    25     1,000    1.5 (1.1-2.0)  programmes    NB(5)   3,000
``genome_scale``   2,000  30    40     2,000    1.5 (1.1-2.0)  programmes    NB(5)   3,000
=================  =====  ====  =====  =======  =============  ============  ======  =========

"cells" are per perturbation; "shift" is the median absolute shift and the central 68% of a
log-normal (heavy-tailed: a few effects are much larger); the depth is the median library size,
with a log-SD of 0.4 across cells. Each perturbation targets 1-3 latents; realistic regimes have
1,000 control cells (2,000 at genome scale), the paper's none.
"""

from __future__ import annotations

from anndata import AnnData

from ._simulate import simulate_sparse_shift

_REAL = {
    "n_targets": (1, 3),
    "shift_distribution": "lognormal",
    "shift_mean": 1.5,
    "shift_sd": 0.3,
    "noise": "negative_binomial",
    "inverse_dispersion": 5.0,
    "decoder": "programmes",
    "library_size": 3000.0,
    "library_log_sd": 0.4,
}

#: Regime name -> keyword arguments of :func:`~sparsevae.data.simulate_sparse_shift`.
REGIMES: dict[str, dict] = {
    "paper": {
        "n_perturbations": 100,
        "n_cells_per_perturbation": 250,
        "n_latent": 15,
        "n_genes": 100,
        "n_control_cells": 0,
    },
    "realistic": {
        **_REAL,
        "n_perturbations": 200,
        "n_cells_per_perturbation": 70,
        "n_latent": 20,
        "n_genes": 1000,
        "n_control_cells": 1000,
    },
    "weak_effects": {
        **_REAL,
        "shift_mean": 0.9,
        "n_perturbations": 200,
        "n_cells_per_perturbation": 70,
        "n_latent": 20,
        "n_genes": 1000,
        "n_control_cells": 1000,
    },
    "few_cells": {
        **_REAL,
        "n_perturbations": 200,
        "n_cells_per_perturbation": 25,
        "n_latent": 20,
        "n_genes": 1000,
        "n_control_cells": 1000,
    },
    "genome_scale": {
        **_REAL,
        "n_perturbations": 2000,
        "n_cells_per_perturbation": 40,
        "n_latent": 30,
        "n_genes": 2000,
        "n_control_cells": 2000,
    },
}


def simulate_regime(name: str, random_state: int | None = 0, **overrides) -> AnnData:
    """Simulate the named regime of :data:`REGIMES`, with any setting overridden.

    Parameters
    ----------
    name
        A key of :data:`REGIMES`.
    random_state
        Seed of the simulation.
    **overrides
        Keyword arguments of :func:`~sparsevae.data.simulate_sparse_shift` that replace the
        regime's (e.g. ``n_perturbations=50`` for a smaller version).

    Returns
    -------
    The simulated AnnData, with the regime's name in ``uns["simulation"]["regime"]``.

    Examples
    --------
    >>> import sparsevae as sv
    >>> adata = sv.data.simulate_regime("realistic", n_perturbations=10, n_genes=200)
    >>> adata.uns["simulation"]["regime"], adata.uns["true_targets"].shape
    ('realistic', (10, 20))
    """
    if name not in REGIMES:
        raise ValueError(f"Unknown regime {name!r}; choose one of {list(REGIMES)}.")
    adata = simulate_sparse_shift(random_state=random_state, **{**REGIMES[name], **overrides})
    adata.uns["simulation"]["regime"] = name
    return adata
