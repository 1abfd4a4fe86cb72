"""The README's quickstart at the defaults, on several seeds: which perturbations get a target.

Trains ``sv.SparseVAE(norman2019_subset(), n_latent=10).train(max_epochs=300)`` (the README's
quickstart, setup as there) once per seed (``scvi.settings.seed``, 1 torch thread) and prints,
per seed, the training time, how many of the 33 perturbations have a target latent
(``get_intervention_targets``), the number of edges and the perturbations without a target.
First it prints which perturbations have a clear effect on expression: the number of genes
whose log1p(CP10k) differs from control's by Welch's t-test at a Bonferroni-corrected 0.05
(a model-free yardstick for "a perturbation with a clear effect"). Outputs are quoted in
``results/calibrated_default_checks.md``.

Usage::

    python benchmarks/default_checks.py 0 1 2
"""

from __future__ import annotations

import sys
import time
import warnings


def clear_effects(adata) -> dict[str, int]:
    """Genes with a significant change from control per perturbation (Welch, Bonferroni 0.05)."""
    import numpy as np
    from scipy.stats import ttest_ind

    from sparsevae._normalize import log1p_cp10k

    counts = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    values, _ = log1p_cp10k(counts)
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    control = values[labels == "control"]
    result = {}
    for name in sorted(set(labels) - {"control"}):
        _, p = ttest_ind(values[labels == name], control, axis=0, equal_var=False)
        result[name] = int((np.nan_to_num(p, nan=1.0) < 0.05 / values.shape[1]).sum())
    return result


def main(seeds: list[int]) -> None:
    import scvi
    import torch
    from _provenance import provenance

    import sparsevae as sv
    from sparsevae._quiet import QUIET_TRAINER, silence_lightning

    print(provenance())  # quoted with the outputs in results/calibrated_default_checks.md
    warnings.filterwarnings("ignore")
    silence_lightning()
    torch.set_num_threads(1)
    effects = clear_effects(sv.data.norman2019_subset())
    clear = sorted(name for name, n in effects.items() if n > 0)
    print(f"{len(clear)} of {len(effects)} perturbations change at least one gene significantly:")
    print(f"  {clear}")
    print(f"  none: {sorted(set(effects) - set(clear))}")
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
        print(f"  with a clear effect but no target: {sorted(set(clear) - set(has.index[has]))}")


if __name__ == "__main__":
    main([int(s) for s in sys.argv[1:]] or [0, 1, 2])
