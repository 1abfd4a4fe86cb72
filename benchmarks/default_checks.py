"""The README's quickstart at the package defaults, on several seeds: which perturbations get a target.

Trains ``sv.SparseVAE(norman2019_subset(), n_latent=10).train(max_epochs=300)`` (the README's
quickstart, setup as there) once per seed (``scvi.settings.seed``, 1 torch thread) and prints,
per seed, the training time, how many of the 33 perturbations have a target latent
(``get_intervention_targets``), the number of edges and the perturbations without a target.
Outputs are quoted in ``results/calibrated_default_checks.md``.

Usage::

    python benchmarks/default_checks.py 0 1 2
"""

from __future__ import annotations

import sys
import time
import warnings


def main(seeds: list[int]) -> None:
    import scvi
    import torch

    import sparsevae as sv
    from sparsevae._quiet import QUIET_TRAINER, silence_lightning

    warnings.filterwarnings("ignore")
    silence_lightning()
    torch.set_num_threads(1)
    for seed in seeds:
        adata = sv.data.norman2019_subset()
        sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
        scvi.settings.seed = seed
        model = sv.SparseVAE(adata, n_latent=10)
        start = time.perf_counter()
        model.train(max_epochs=300, **QUIET_TRAINER)
        seconds = time.perf_counter() - start
        targets = model.get_intervention_targets()
        has = targets.any(axis=1)
        print(
            f"seed {seed}: {seconds:.0f} s; {int(has.sum())} of {len(has)} perturbations have a "
            f"target; edges {int(targets.to_numpy().sum())}"
        )
        print(f"  without target: {sorted(has.index[~has])}")


if __name__ == "__main__":
    main([int(s) for s in sys.argv[1:]] or [0, 1, 2])
