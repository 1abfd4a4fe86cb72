"""Command line: ``sparsevae demo`` and ``sparsevae fit``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

#: The paper's d = 15 simulation, and a small one for a quick look.
DEMO_SETTINGS = {
    "full": {
        "simulation": {
            "n_perturbations": 100,
            "n_cells_per_perturbation": 250,
            "n_latent": 15,
            "n_genes": 100,
        },
        "max_epochs": 300,
    },
    "quick": {
        "simulation": {
            "n_perturbations": 20,
            "n_cells_per_perturbation": 150,
            "n_latent": 5,
            "n_genes": 60,
            "n_targets": (1, 2),
        },
        "max_epochs": 100,
    },
}


def _demo(args: argparse.Namespace) -> int:
    import sparsevae as sv

    setting = DEMO_SETTINGS["quick" if args.quick else "full"]
    max_epochs = args.max_epochs or setting["max_epochs"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    adata = sv.data.simulate_sparse_shift(random_state=args.seed, **setting["simulation"])
    print(
        f"Simulated {adata.n_obs} cells × {adata.n_vars} genes, "
        f"{adata.uns['true_targets'].shape[0]} perturbations, "
        f"{adata.obsm['z_true'].shape[1]} latents (seed {args.seed})."
    )
    methods = args.methods.split(",")
    print(f"Training {', '.join(methods)} for {max_epochs} epochs each ...", flush=True)
    report, models = sv.evaluate.identifiability_report(
        adata, methods=methods, seeds=(args.seed,), max_epochs=max_epochs, return_models=True
    )
    report.to_csv(out / "metrics.csv", index=False)
    columns = ["method", "mcc_pearson", "mcc_spearman", "r2", "precision", "recall", "f1"]
    print(report[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))

    # Outputs of the first method (sVAE+ by default): latents, pi and learned vs true graph.
    model = models[(methods[0], args.seed)]
    trained = model.adata
    sv.tl.write_results(trained, model)
    np.save(out / "latent.npy", trained.obsm["X_sparsevae"])
    pi = model.get_mask_probabilities()
    pi.to_csv(out / "pi.csv")
    sv.pl.graph_comparison(
        trained.uns["true_targets"],
        pi,
        trained.obsm["z_true"],
        trained.obsm["X_sparsevae"],
        show=False,
        save=out / "graph.png",
    )
    print(f"Wrote metrics.csv, latent.npy, pi.csv and graph.png to {out}/")
    return 0


def _fit(args: argparse.Namespace) -> int:
    import anndata

    import sparsevae as sv

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    adata = anndata.read_h5ad(args.data)
    sv.SparseVAE.setup_anndata(
        adata,
        perturbation_key=args.perturbation_key,
        control=args.control,
        layer=args.layer,
        batch_key=args.batch_key,
    )
    model = sv.SparseVAE(adata, n_latent=args.n_latent, prior=args.prior)
    model.train(max_epochs=args.max_epochs, enable_checkpointing=False)
    model.save(out / "model", overwrite=True)
    sv.tl.write_results(adata, model)
    adata.write_h5ad(out / "results.h5ad")
    model.get_mask_probabilities().to_csv(out / "pi.csv")
    model.get_intervention_targets().to_csv(out / "targets.csv")
    sv.pl.mask_heatmap(adata, show=False, save=out / "pi_heatmap.png")
    targets = model.get_intervention_targets()
    summary = {
        "n_cells": adata.n_obs,
        "n_genes": adata.n_vars,
        "n_perturbations": len(model.perturbation_names),
        "n_latent": args.n_latent,
        "edges": int(targets.to_numpy().sum()),
        "mean_targets_per_perturbation": float(targets.sum(axis=1).mean()),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(pd.Series(summary).to_string())
    print(f"Wrote model/, results.h5ad, pi.csv, targets.csv, pi_heatmap.png to {out}/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``sparsevae`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="sparsevae", description="Sparse mechanism shift VAE for Perturb-seq screens."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="simulate, fit sVAE+ and baselines, print metrics")
    demo.add_argument("--out", required=True, help="output directory")
    demo.add_argument("--quick", action="store_true", help="a small simulation (about a minute)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--max-epochs", type=int, default=None)
    demo.add_argument(
        "--methods", default="svae+,svae,ivae,beta-vae,vae", help="comma-separated methods"
    )
    demo.set_defaults(func=_demo)

    fit = sub.add_parser("fit", help="fit sVAE+ on an .h5ad file and write its results")
    fit.add_argument("data", help="AnnData .h5ad with raw counts")
    fit.add_argument("--perturbation-key", required=True)
    fit.add_argument("--control", default=None, help="label of control cells")
    fit.add_argument("--layer", default=None, help="layer with counts (default: X)")
    fit.add_argument("--batch-key", default=None)
    fit.add_argument("--n-latent", type=int, default=15)
    fit.add_argument(
        "--prior", default="spike_slab", choices=["spike_slab", "l1", "dense", "standard"]
    )
    fit.add_argument("--max-epochs", type=int, default=None)
    fit.add_argument("--out", required=True, help="output directory")
    fit.set_defaults(func=_fit)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sparsevae`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from sparsevae._quiet import silence_lightning

    silence_lightning()
    try:
        return args.func(args)
    except (KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
