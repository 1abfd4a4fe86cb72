"""Command line: ``sparsevae demo``, ``sparsevae fit`` and ``sparsevae report``."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import sys
import time
import warnings
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
        # 50 epochs: about 30 s in all on 2 CPU cores. Over simulation seeds 0-4 with the
        # calibrated sparsity, sVAE+ had the highest MCC on 3 seeds and the highest F1 on 1
        # (too many edges on this 5-SD generator: README, docs/benchmarks.md "Regimes").
        "max_epochs": 50,
    },
}


class CommandError(Exception):
    """Bad input to a command (a file, a column, a label, an option): one line, exit status 2.

    Only the steps that read and check what the user gave raise it (:func:`_checking_input`
    and the commands' own option checks). Any other error is a bug or a failure of the run,
    and keeps its traceback.
    """


#: What the package's input checks raise (``setup_anndata``, ``SparseVAE(...)``, the
#: evaluations' argument checks, ``sparsevae._validation``) and what reading a file raises.
_INPUT_ERRORS = (KeyError, ValueError, TypeError, OSError)


@contextlib.contextmanager
def _checking_input(*, quiet: bool = False):
    """Errors of the enclosed input checks become :class:`CommandError`.

    ``quiet``: hide the checks' warnings, for checks that the command repeats (and warns
    about) when it runs.
    """
    try:
        with warnings.catch_warnings():
            if quiet:
                warnings.simplefilter("ignore")
            yield
    except _INPUT_ERRORS as error:
        # KeyError's str() quotes its message; keep the message itself.
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise CommandError(str(message)) from error


def _output_dir(path: str) -> Path:
    """``--out``, created if needed."""
    out = Path(path)
    with _checking_input():
        out.mkdir(parents=True, exist_ok=True)
    return out


def _read_data(path: str, backed: bool = False):
    """The AnnData of ``DATA.h5ad`` (``backed``: counts stay on disk)."""
    import anndata

    with _checking_input():
        return anndata.read_h5ad(path, backed="r" if backed else None)


def _demo(args: argparse.Namespace) -> int:
    import sparsevae as sv

    setting = DEMO_SETTINGS["quick" if args.quick else "full"]
    max_epochs = args.max_epochs or setting["max_epochs"]
    out = _output_dir(args.out)
    adata = sv.data.simulate_sparse_shift(random_state=args.seed, **setting["simulation"])
    print(
        f"Simulated {adata.n_obs} cells × {adata.n_vars} genes, "
        f"{adata.uns['true_targets'].shape[0]} perturbations, "
        f"{adata.obsm['z_true'].shape[1]} latents (seed {args.seed})."
    )
    methods = args.methods
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


def _methods(text: str) -> list[str]:
    """``--methods``: comma-separated names of ``sv.evaluate.METHODS``."""
    from sparsevae._constants import METHODS, canonical_name
    from sparsevae._validation import repeated

    parts = [part.strip() for part in text.split(",") if part.strip()]
    methods = [canonical_name(part, "--methods") for part in parts]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise argparse.ArgumentTypeError(
            f"--methods {text!r}: unknown {unknown}; choose from {', '.join(METHODS)}."
        )
    if twice := repeated(methods):
        raise argparse.ArgumentTypeError(
            f"--methods {text!r} repeats {twice}: each method would be trained and reported "
            f"twice; name each once, e.g. {','.join(dict.fromkeys(methods))}."
        )
    return methods


def _heldout(text: str) -> list[str]:
    """``--heldout``: comma-separated perturbations, each named once."""
    from sparsevae._validation import repeated

    names = [part.strip() for part in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(
            f"--heldout {text!r} has an empty name; give perturbations separated by commas, "
            "e.g. P0,P1, or leave --heldout out to hold out each perturbation cluster."
        )
    if twice := repeated(names):
        raise argparse.ArgumentTypeError(
            f"--heldout {text!r} repeats {twice}; name each held-out perturbation once, e.g. "
            f"{','.join(dict.fromkeys(names))}."
        )
    return names


def _prior_kwargs(text: str) -> dict:
    """``--prior-kwargs``: a JSON object of the prior's options."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(
            f"--prior-kwargs {text!r} is not JSON ({error}); e.g. '{{\"gamma\": 30}}'."
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"--prior-kwargs {text!r}: give a JSON object.")
    return value


def _positive_int(text: str) -> int:
    """A count option: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer.")
    return value


def _n_layers(text: str) -> int | str:
    """``--n-layers``: ``auto`` or a positive number of hidden layers."""
    return "auto" if text == "auto" else _positive_int(text)


def _n_top_genes(text: str) -> int | None:
    """``--n-top-genes``: a positive number of genes, or ``all`` (``None``)."""
    return None if text == "all" else _positive_int(text)


def _devices(text: str) -> int | list[int] | str:
    """Lightning's ``devices``: ``"2"`` -> 2 devices, ``"0,1"`` -> devices 0 and 1, ``"auto"``."""
    if text == "auto":
        return text
    try:
        if "," in text:
            return [int(part) for part in text.split(",") if part.strip()]
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--devices {text!r}: give a number (2), a comma-separated list (0,1) or auto."
        ) from None


def _check_fit_options(args: argparse.Namespace) -> None:
    """Raise :class:`CommandError` for combinations of ``fit``'s options that do not go."""
    if args.alphas is not None and args.seeds is None:
        raise CommandError(
            "--alphas needs --seeds (the runs at each alpha), e.g. --seeds 0 1 2 3 4; for one "
            "fit at one sparsity use --alpha."
        )
    if args.alpha is not None and args.alphas is not None:
        raise CommandError(
            "Give --alpha (one sparsity) or --alphas (several, with --seeds), not both."
        )
    if args.seed is not None and args.seeds is not None:
        raise CommandError(
            "Give --seed (the training seed of one fit) or --seeds (one fit per seed, for the "
            "edge stability table), not both."
        )
    if args.seeds is None and (args.resume or args.jobs != 1):
        option = "--resume" if args.resume else "--jobs"
        raise CommandError(
            f"{option} is for --seeds (several runs, kept in OUT/checkpoint and trained in "
            "parallel); one fit has neither. Add --seeds, e.g. --seeds 0 1 2 3 4."
        )
    if args.seeds is not None and args.strategy is not None:
        raise CommandError(
            "--seeds trains one model per seed and alpha in this process; it cannot be "
            "combined with --strategy (distributed training of one model)."
        )


def _checkpoint_folder(out: Path, resume: bool, what: str) -> Path:
    """OUT/checkpoint, where a long command keeps its finished parts.

    Emptied for a fresh run; for ``--resume`` it must exist.
    """
    checkpoint = out / "checkpoint"
    if not resume and checkpoint.exists():
        shutil.rmtree(checkpoint)  # a fresh run: the last one's parts do not count
    elif resume and not checkpoint.exists():
        raise CommandError(
            f"--resume: {checkpoint} does not exist, so there is no {what} to continue; run "
            "without --resume to start one."
        )
    return checkpoint


def _fit(args: argparse.Namespace) -> int:
    import sparsevae as sv
    from sparsevae._io import write_h5ad
    from sparsevae.tl._stability import _check_alphas, _check_seeds

    _check_fit_options(args)
    out = _output_dir(args.out)
    adata = _read_data(args.data, backed=args.backed)
    setup = {
        "layer": args.layer,
        "batch_key": args.batch_key,
        "combination_delimiter": args.combination_delimiter,
    }
    model_kwargs = {
        "n_latent": args.n_latent,
        "n_layers": args.n_layers,
        "prior": args.prior,
        "sparsity": args.sparsity,
        "prior_kwargs": args.prior_kwargs,
    }
    train = {
        "max_epochs": args.max_epochs,
        "batch_size": args.batch_size,
        "accelerator": args.accelerator,
        "devices": args.devices,
        "enable_checkpointing": False,
        **({} if args.strategy is None else {"strategy": args.strategy}),
    }
    # Every check of the data and the options, before anything trains. With --seeds,
    # edge_stability registers the data and builds its models again (and warns then).
    alphas = args.alphas if args.alpha is None else [args.alpha]  # for --seeds
    with _checking_input(quiet=args.seeds is not None):
        if args.seeds is not None:
            _check_seeds(args.seeds)
            _check_alphas(alphas)
        else:  # one fit: the same command gives the same model (on CPU, same threads)
            import scvi

            scvi.settings.seed = 0 if args.seed is None else args.seed
        sv.SparseVAE.setup_anndata(
            adata, perturbation_key=args.perturbation_key, control=args.control, **setup
        )
        model = sv.SparseVAE(adata, alpha=None if alphas is None else alphas[0], **model_kwargs)
    if args.seeds is not None and model.module.prior.hyperparameters().get("alpha") is None:
        raise CommandError(
            "--seeds counts the edges of a sparse graph over runs, which needs a prior with "
            f"masks: --prior spike_slab (sVAE+) or l1 (sVAE), not --prior {args.prior}."
        )
    if args.seeds is None:
        model.train(**train)
    else:  # the reference run (first seed, first alpha) is the model written below
        from sparsevae._checkpoint import CheckpointMismatchError

        # Each finished run is kept in OUT/checkpoint: --resume continues a killed fit.
        checkpoint = _checkpoint_folder(out, args.resume, "edge-stability fit")
        try:
            model = sv.tl.edge_stability(
                adata,
                args.perturbation_key,
                args.control,
                seeds=args.seeds,
                alphas=alphas,
                n_jobs=args.jobs,
                checkpoint_dir=checkpoint,
                progress_bar=True,
                enable_progress_bar=args.jobs == 1,  # one bar per run, unless runs interleave
                **model_kwargs,
                **setup,
                **train,
            )
        except CheckpointMismatchError as error:  # --resume with other options than that run's
            raise CommandError(f"--resume: {error}") from error
    trainer = getattr(model, "trainer", None)  # none: a resumed reference model, loaded
    if trainer is not None and not trainer.is_global_zero:
        return 0  # distributed training: only the first process writes results
    model.save(out / "model", overwrite=True)
    sv.tl.write_results(adata, model)
    write_h5ad(adata, out / "results.h5ad")
    model.get_mask_probabilities().to_csv(out / "pi.csv")
    model.get_intervention_targets().to_csv(out / "targets.csv")
    sv.pl.mask_heatmap(adata, show=False, save=out / "pi_heatmap.png")
    targets = model.get_intervention_targets()
    summary = {
        "n_cells": adata.n_obs,
        "n_genes": adata.n_vars,
        "n_perturbations": len(model.perturbation_names),
        "n_latent": args.n_latent,
        "n_layers": model.init_params_["non_kwargs"]["n_layers"],
        **{k: v for k, v in model.module.prior.hyperparameters().items()},
        "processes": 1 if trainer is None else trainer.world_size,
        **({"seed": 0 if args.seed is None else args.seed} if args.seeds is None else {}),
        "edges": int(targets.to_numpy().sum()),
        "mean_targets_per_perturbation": float(targets.sum(axis=1).mean()),
    }
    written = "model/, results.h5ad, pi.csv, targets.csv, pi_heatmap.png"
    if args.seeds is not None:
        summary.update(_write_stability(adata, out))
        written += ", stability.csv, stability_runs.csv, stability.png"
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(pd.Series(summary).to_string())
    print(f"Wrote {written} to {out}/")
    return 0


def _write_stability(adata, out: Path) -> dict:
    """Write ``fit --seeds``'s stability table, runs and figure; return summary entries."""
    import sparsevae as sv
    from sparsevae.tl._stability import STABLE_FREQUENCY

    stability = adata.uns["edge_stability"]
    edges, runs = stability["edges"], stability["runs"]
    edges.to_csv(out / "stability.csv", index=False)
    runs.to_csv(out / "stability_runs.csv", index=False)
    sv.pl.edge_stability(adata, show=False, save=out / "stability.png")
    stable = edges[edges["frequency"] >= STABLE_FREQUENCY]
    return {
        "stability_runs": len(runs),
        "stable_edges_per_alpha": {
            f"{alpha:g}": int((stable["alpha"] == alpha).sum()) for alpha in edges["alpha"].unique()
        },
        "min_matching_quality": float(runs["mean_abs_corr"].min()),
    }


def _report_description(args: argparse.Namespace, adata, seconds: float) -> str:
    """The settings paragraph of ``report.md``."""
    return (
        f"{adata.n_obs} cells × {adata.n_vars} genes; perturbation key `{args.perturbation_key}`, "
        f"control `{args.control}`. Methods {', '.join(args.methods)}; seeds "
        f"{args.seeds}; {args.max_epochs} epochs; n_latent {args.n_latent}; "
        f"{args.n_particles} particles; transfer fraction {args.transfer_fraction}; "
        f"split seed {args.random_state}; genes: "
        + (
            f"the {args.n_top_genes} most variable of each split's training cells."
            if args.n_top_genes and args.n_top_genes < adata.n_vars
            else "all."
        )
        + (f" cell-eval profile `{args.cell_eval}`." if args.cell_eval else "")
        + f" Total {seconds / 60:.1f} min."
    )


def _report(args: argparse.Namespace) -> int:
    import sparsevae as sv
    from sparsevae._validation import validate_setup
    from sparsevae.evaluate._identifiability import check_methods_and_seeds
    from sparsevae.model._combinations import validate_combinations

    start = time.perf_counter()
    out = _output_dir(args.out)
    adata = _read_data(args.data)
    if not adata.obs_names.is_unique:
        print("note: cell names are not unique; made unique with obs_names_make_unique()")
        adata.obs_names_make_unique()
    methods = args.methods
    heldout = args.heldout or "clusters"
    cluster_kwargs = {}
    if args.n_clusters is not None:
        cluster_kwargs = {"method": "hierarchical", "n_clusters": args.n_clusters}
    # The report's checks of its inputs, before it trains (it runs them again, and warns
    # then). The perturbation clusters computed here are stored in adata.uns and reused.
    with _checking_input(quiet=True):
        check_methods_and_seeds(methods, args.seeds, args.max_epochs)
        validate_setup(adata, args.perturbation_key, args.control, args.layer, args.batch_key)
        if args.combination_delimiter is not None:
            validate_combinations(
                adata, args.perturbation_key, args.control, args.combination_delimiter
            )
        sv.evaluate.make_splits(
            adata,
            perturbation_key=args.perturbation_key,
            control=args.control,
            heldout=heldout,
            transfer_fraction=args.transfer_fraction,
            cluster_kwargs=cluster_kwargs,
            random_state=args.random_state,
        )
    if args.cell_eval is not None:
        from sparsevae.evaluate._cell_eval import check_cell_eval_profile

        if args.control is None:
            raise CommandError(
                "--cell-eval needs --control: cell-eval scores each perturbation against "
                "control cells."
            )
        try:
            check_cell_eval_profile(args.cell_eval, "sparsevae report --cell-eval")
        except (ValueError, ImportError) as error:
            raise CommandError(str(error).replace("cell_eval=", "--cell-eval ")) from error
    # Each finished split is kept in OUT/checkpoint: --resume continues a killed report.
    checkpoint = _checkpoint_folder(out, args.resume, "report")
    from sparsevae._checkpoint import CheckpointMismatchError

    try:
        report = sv.evaluate.interventional_nll_report(
            adata,
            perturbation_key=args.perturbation_key,
            control=args.control,
            layer=args.layer,
            batch_key=args.batch_key,
            combination_delimiter=args.combination_delimiter,
            methods=methods,
            heldout=heldout,
            seeds=args.seeds,
            max_epochs=args.max_epochs,
            n_particles=args.n_particles,
            n_latent=args.n_latent,
            transfer_fraction=args.transfer_fraction,
            n_top_genes=args.n_top_genes,
            cluster_kwargs=cluster_kwargs,
            random_state=args.random_state,
            progress_bar=True,
            checkpoint_dir=checkpoint,
            cell_eval=args.cell_eval,
        )
    except CheckpointMismatchError as error:  # --resume with other options than that run's
        raise CommandError(f"--resume: {error}") from error
    report.to_csv(out / "report.csv", index=False)
    sv.evaluate.split_table(report).to_csv(out / "splits.csv", index=False)
    figures = ["interventional_nll.png"]
    sv.pl.interventional_nll(report, show=False, save=out / figures[0])
    if report["l2_top1000_expressed"].notna().any():  # effects need a control label
        figures.append("effect_metrics.png")
        sv.pl.effect_metrics(report, show=False, save=out / figures[-1])
    if "vae" in methods and len(methods) > 1:
        figures.append("interventional_nll_vs_vae.png")
        sv.pl.interventional_nll(report, relative_to="vae", show=False, save=out / figures[-1])
    if heldout == "clusters":
        figures.append("perturbation_clusters.png")
        sv.pl.perturbation_clusters(adata, show=False, save=out / figures[-1])
        pd.DataFrame(adata.uns["perturbation_cluster"]["clusters"]).to_csv(out / "clusters.csv")
    seconds = time.perf_counter() - start
    markdown = sv.evaluate.report_markdown(
        report,
        title=f"Held-out interventions: {Path(args.data).name}",
        description=_report_description(args, adata, seconds),
        figures=figures,
    )
    (out / "report.md").write_text(markdown)
    print(sv.evaluate.summarize_interventional_nll(report).round(2).to_string())
    print(f"Wrote report.md, report.csv, splits.csv and figures to {out}/ ({seconds:.0f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``sparsevae`` argument parser."""
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.strategies import StrategyRegistry

    from sparsevae._constants import (
        DEFAULT_METHODS,
        DEFAULT_N_TOP_GENES,
        METHODS,
        PRIORS,
        canonical_name,
    )
    from sparsevae.module._masked_priors import SPARSITY_OBJECTIVES
    from sparsevae.module._priors import PRIOR_CLASSES  # the registry: --prior's choices

    # Lightning's names, checked here: a misspelt one fails at once, not when training starts.
    accelerators = sorted({"auto", "gpu", *AcceleratorRegistry.available_accelerators()})
    strategies = sorted({"auto", *StrategyRegistry.available_strategies()})

    parser = argparse.ArgumentParser(
        prog="sparsevae", description="Sparse mechanism shift VAE for Perturb-seq screens."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="simulate, fit sVAE+ and baselines, print metrics")
    demo.add_argument("--out", required=True, help="output directory")
    demo.add_argument(
        "--quick", action="store_true", help="a small simulation (under a minute on 2 CPU cores)"
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--max-epochs", type=_positive_int, default=None)
    demo.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        type=_methods,
        help=f"comma-separated methods of {', '.join(METHODS)}",
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
        "--n-layers",
        type=_n_layers,
        default="auto",
        help="hidden layers of the encoder and decoder: a number, or auto (one below a median "
        "of 100 cells per perturbation, else two; see sparsevae.model.default_n_layers)",
    )
    fit.add_argument(
        "--prior",
        default=PRIORS.SPIKE_SLAB,
        type=lambda text: canonical_name(text, "--prior"),  # old spellings warn
        choices=sorted(PRIOR_CLASSES),
    )
    fit.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="sparsity: Beta(1, alpha) of spike_slab (default: the number of perturbations K) "
        "or the L1 weight of l1 (default 1)",
    )
    fit.add_argument(
        "--sparsity",
        default="calibrated",
        choices=list(SPARSITY_OBJECTIVES),
        help="how spike_slab charges an edge: calibrated (an edge needs about log(alpha) nats "
        "of evidence) or paper (the published objective: about 2(alpha - 1) nats)",
    )
    fit.add_argument(
        "--prior-kwargs",
        type=_prior_kwargs,
        default=None,
        help="the prior's own options as JSON, e.g. '{\"gamma\": 30}' for factorvae",
    )
    fit.add_argument(
        "--combination-delimiter",
        default=None,
        help="labels such as 'A+B' are sets of single perturbations split at this string",
    )
    fit.add_argument("--max-epochs", type=_positive_int, default=None)
    fit.add_argument("--batch-size", type=_positive_int, default=256)
    fit.add_argument(
        "--backed",
        action="store_true",
        help="read counts from disk as needed (anndata backed='r') instead of loading them",
    )
    fit.add_argument(
        "--accelerator",
        default="auto",
        choices=accelerators,
        help="Lightning accelerator: cpu, gpu, auto, ...",
    )
    fit.add_argument(
        "--devices",
        type=_devices,
        default="auto",
        help="Lightning devices: a number, a list such as 0,1, or auto",
    )
    fit.add_argument(
        "--strategy",
        default=None,
        choices=strategies,
        metavar="STRATEGY",
        help="Lightning strategy, e.g. ddp for distributed data parallel over --devices",
    )
    fit.add_argument(
        "--seed",
        type=int,
        default=None,
        help="training seed of the fit (default 0: the same command gives the same model on "
        "the same CPU and threads)",
    )
    fit.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="train one model per seed (and alpha), write the edge stability table and figure "
        "(sv.tl.edge_stability); the first seed's model is the one saved",
    )
    fit.add_argument(
        "--alphas",
        type=float,
        nargs="+",
        default=None,
        help="sparsity levels for --seeds (default: the number of perturbations)",
    )
    fit.add_argument(
        "--jobs",
        type=_positive_int,
        default=1,
        help="with --seeds: runs training at the same time, one process each "
        "(sv.tl.edge_stability's n_jobs)",
    )
    fit.add_argument(
        "--resume",
        action="store_true",
        help="with --seeds: continue a killed fit with the same --out: finished runs "
        "(OUT/checkpoint) are read, not trained again; other settings are refused",
    )
    fit.add_argument("--out", required=True, help="output directory")
    fit.set_defaults(func=_fit)

    rep = sub.add_parser(
        "report", help="hold out perturbation clusters, transfer, report interventional NLL"
    )
    rep.add_argument("data", help="AnnData .h5ad with raw counts")
    rep.add_argument("--perturbation-key", required=True)
    rep.add_argument("--control", default=None, help="label of control cells")
    rep.add_argument("--layer", default=None, help="layer with counts (default: X)")
    rep.add_argument("--batch-key", default=None)
    rep.add_argument("--out", required=True, help="output directory")
    rep.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        type=_methods,
        help=f"comma-separated methods of {', '.join(METHODS)}",
    )
    rep.add_argument(
        "--heldout",
        default=None,
        type=_heldout,
        help="comma-separated perturbations (default: each cluster)",
    )
    rep.add_argument(
        "--n-clusters", type=int, default=None, help="hierarchical clusters (default: leiden)"
    )
    rep.add_argument(
        "--combination-delimiter",
        default=None,
        help="delimiter of combination labels (e.g. +): held-out pairs of trained singles are "
        "predicted zero-shot and get the additive baseline",
    )
    rep.add_argument("--seeds", type=int, nargs="+", default=[0])
    rep.add_argument(
        "--resume",
        action="store_true",
        help="continue a killed report with the same --out: finished splits (OUT/checkpoint) "
        "are read, not trained again; other settings than that run's are refused",
    )
    rep.add_argument("--max-epochs", type=_positive_int, default=200)
    rep.add_argument("--n-latent", type=_positive_int, default=15)
    rep.add_argument("--n-particles", type=_positive_int, default=1000)
    rep.add_argument("--transfer-fraction", type=float, default=0.5)
    rep.add_argument(
        "--n-top-genes",
        type=_n_top_genes,
        default=DEFAULT_N_TOP_GENES,
        help="highly variable genes chosen on each split's training cells, or all "
        f"(default: {DEFAULT_N_TOP_GENES}, as sv.evaluate.interventional_nll_report)",
    )
    rep.add_argument("--random-state", type=int, default=0, help="seed of clusters and splits")
    rep.add_argument(
        "--cell-eval",
        default=None,
        metavar="PROFILE",
        help="also score methods and baselines with cell-eval, the field's scorer, with this "
        "metric profile (minimal, vcc, full, de, anndata, pds); needs the eval extra: "
        "pip install 'sparsevae[eval]' (default: not scored)",
    )
    rep.set_defaults(func=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sparsevae`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from sparsevae._quiet import silence_lightning

    silence_lightning()
    from sparsevae.model import NonFiniteLossError

    try:
        return args.func(args)
    except (CommandError, NonFiniteLossError) as error:
        # Bad input, or training that diverged (the message names the loss term and step).
        # Any other error is a bug or a failure of the run: its traceback is shown.
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
