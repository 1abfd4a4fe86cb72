"""Diagnostic: what a relative floor on sVAE+'s graph readout would do, per regime.

Trains sVAE+ at its defaults but without the floor (``min_relative_shift=0``; 200 epochs, seed
0) on ``sv.data.simulate_regime(REGIME)`` and reads the graph as ``pi > 0.5`` and, in addition,
``|mu| >= r ×`` the perturbation's largest on-edge ``|mu|`` for several r, post hoc. Prints MCC
and graph F1, precision, recall and edges per r. The diagnostic that chose the default floor
(1/3, applied when the masks freeze: ``SpikeSlabPrior``'s ``min_relative_shift``;
docs/benchmarks.md, "Regimes").

Usage::

    python benchmarks/relative_floor.py paper
"""

from __future__ import annotations

import sys
import time
import warnings


def main(regime: str, epochs: int = 200) -> None:
    import pandas as pd
    import scvi
    import torch

    import sparsevae as sv
    from sparsevae._quiet import QUIET_TRAINER, silence_lightning

    warnings.filterwarnings("ignore")
    silence_lightning()
    torch.set_num_threads(1)
    adata = sv.data.simulate_regime(regime, random_state=0)
    control = "control" if (adata.obs["perturbation"] == "control").any() else None
    scvi.settings.seed = 0
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control=control)
    truth = adata.uns["true_targets"]
    model = sv.SparseVAE(adata, n_latent=truth.shape[1], prior_kwargs={"min_relative_shift": 0.0})
    start = time.perf_counter()
    model.train(max_epochs=epochs, **QUIET_TRAINER)
    z = model.get_latent_representation()
    pi = model.get_mask_probabilities().loc[truth.index]
    mu = pd.DataFrame(
        model.module.prior.mu.detach().cpu().numpy(), index=model.knowledge.categories
    )
    mu = mu.loc[truth.index]
    mu.columns = pi.columns
    on = pi > 0.5
    mcc = sv.metrics.mean_correlation_coefficient(adata.obsm["z_true"], z)
    print(f"{regime}: {time.perf_counter() - start:.0f} s, MCC {mcc:.3f}")
    largest = mu.abs().where(on, 0).max(axis=1)
    for r in (0.0, 0.1, 0.2, 0.25, 0.33):
        graph = on & mu.abs().ge(r * largest, axis=0)
        scores = sv.metrics.graph_scores(truth, graph, adata.obsm["z_true"], z)
        print(
            f"  relative floor {r}: F1 {scores['f1']:.3f} precision {scores['precision']:.3f} "
            f"recall {scores['recall']:.3f} edges {int(graph.to_numpy().sum())} of "
            f"{int(truth.to_numpy().sum())}"
        )


if __name__ == "__main__":
    main(sys.argv[1])
