"""Registry keys, module output keys and result keys used across the package.

Keeping them here means no string literal for a tensor or an AnnData slot is repeated in
several files.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple


class _RegistryKeys(NamedTuple):
    X_KEY: str = "X"
    BATCH_KEY: str = "batch"
    PERTURBATION_KEY: str = "perturbation"


class _ModuleKeys(NamedTuple):
    X_KEY: str = "x"
    Z_KEY: str = "z"
    QZ_KEY: str = "qz"
    PZ_KEY: str = "pz"
    PX_KEY: str = "px"
    LOG_RATE_KEY: str = "log_px_rate"
    LIBRARY_KEY: str = "library"
    BATCH_INDEX_KEY: str = "batch_index"
    PERTURBATION_KEY: str = "perturbation"
    OFFSET_KEY: str = "latent_offset"


class _PriorNames(NamedTuple):
    """The one vocabulary of priors (``SparseVAE(prior=...)``, ``sparsevae fit --prior``).

    The four shift priors of the paper keep their names (sVAE+, sVAE, iVAE, VAE are methods
    built on them, :data:`METHODS`); a prior that is itself one published method is spelled as
    that method is in :data:`METHODS`, everywhere.
    """

    SPIKE_SLAB: str = "spike_slab"
    L1: str = "l1"
    DENSE: str = "dense"
    STANDARD: str = "standard"
    DENSE_VAR: str = "ivae-var"
    CLAP: str = "clap"
    BETA_TCVAE: str = "beta-tcvae"
    DIP_VAE: str = "dip-vae"
    FACTORVAE: str = "factorvae"
    SAMS_VAE: str = "sams-vae"


REGISTRY_KEYS = _RegistryKeys()
MODULE_KEYS = _ModuleKeys()
PRIORS = _PriorNames()

#: Method names of evaluation, benchmarks, the CLI's ``--methods`` and the docs, mapped to
#: SparseVAE keyword arguments. Names shared with :data:`PRIORS` are the same method.
METHODS: dict[str, dict] = {
    "svae+": {"prior": PRIORS.SPIKE_SLAB},
    # alpha: the L1 prior's default 1, chosen from {1, 10, 100} by held-out interventional
    # NLL on the tuning simulation (benchmarks/simulation_tuning.py)
    "svae": {"prior": PRIORS.L1},
    "ivae": {"prior": PRIORS.DENSE},
    "ivae-var": {"prior": PRIORS.DENSE_VAR},
    # beta: chosen from the paper's grid {8, 10, 30} the same way
    "beta-vae": {"prior": PRIORS.STANDARD, "beta": 8.0},
    "vae": {"prior": PRIORS.STANDARD},
    "beta-tcvae": {"prior": PRIORS.BETA_TCVAE},
    "dip-vae": {"prior": PRIORS.DIP_VAE},
    "factorvae": {"prior": PRIORS.FACTORVAE},
    "clap": {"prior": PRIORS.CLAP},
    "sams-vae": {"prior": PRIORS.SAMS_VAE},
}

#: Old spellings, kept working with a FutureWarning (wherever a prior or method is named).
DEPRECATED_NAMES: dict[str, str] = {
    "beta_tcvae": PRIORS.BETA_TCVAE,
    "dip_vae": PRIORS.DIP_VAE,
    "dense_var": PRIORS.DENSE_VAR,
}

#: The methods the reports train unless told otherwise: the paper's comparison. The other
#: methods of :data:`METHODS` are trained when named.
DEFAULT_METHODS: tuple[str, ...] = ("svae+", "svae", "ivae", "beta-vae", "vae")

#: Highly variable genes that a held-out evaluation keeps by default (chosen on each split's
#: training cells): ``n_top_genes`` of :func:`sparsevae.evaluate.interventional_nll_report`
#: and ``sparsevae report --n-top-genes``.
DEFAULT_N_TOP_GENES = 2000

#: Key of the control label in the perturbation field's state registry.
CONTROL_KEY = "control"

#: Counts per cell after normalisation (scanpy's ``normalize_total(target_sum=...)``): the scale
#: of every "per 10,000" expression, observed or predicted, in the package.
TARGET_SUM = 1e4

#: Keys written to ``adata.uns[key_added]`` by :func:`sparsevae.tl.cluster_perturbations`,
#: and the columns of its clusters table.
CLUSTERS_KEY = "clusters"
PROFILES_KEY = "profiles"
CLUSTER_PARAMS_KEY = "params"
CLUSTER_COLUMN = "cluster"
N_CELLS_COLUMN = "n_cells"

#: Keys written by :func:`sparsevae.tl.write_results`.
RESULT_PI_KEY = "pi"
RESULT_SHIFT_KEY = "shift"
RESULT_PARAMS_KEY = "params"


def canonical_name(name, argument: str):
    """``name`` in the one vocabulary of priors and methods (anything else is returned as is).

    An old spelling (:data:`DEPRECATED_NAMES`) keeps working with a FutureWarning that names
    the argument and the new spelling.
    """
    if isinstance(name, str) and name in DEPRECATED_NAMES:
        new = DEPRECATED_NAMES[name]
        warnings.warn(
            f"{argument}={name!r} is an old spelling; use {new!r} (the name of that method in "
            "evaluation, the CLI and the docs). The old one will be removed.",
            FutureWarning,
            stacklevel=3,
        )
        return new
    return name
