"""Identifiability on the paper's simulation: every method, as trained and post-hoc rotated.

Setting (Lopez et al. 2023, d = 15 table): K = 100 perturbations, p = 15 latents, 250 cells per
perturbation, 100 genes, **no control cells** (the published generator has none; ``--controls``
adds 250 unshifted cells, which pin the latent origin); the first 80 perturbations train.
Seeds change both the simulated data and the training seed. The last 20 perturbations are held
out: each model learns their shifts on half of their cells (``SparseVAE.transfer``) and the
interventional NLL (negative IWELBO, 1,000 particles) is averaged over the other half, per
perturbation, then over perturbations.

Every method runs at its defaults (``sv.evaluate.METHODS``; sVAE's alpha and beta-VAE's beta
as chosen by ``benchmarks/simulation_tuning.py`` on a separate simulation). Rows:

- ``as trained``: the model's latents and its own graph readout;
- ``post-hoc``: the two-stage rival's step given to every method: latents rotated by the
  L1-sparsest rotation of the perturbations' mean latent shifts
  (``sv.evaluate.posthoc_sparse_rotation``), the graph read from the rotated shifts by the
  paper's top-2 rule and by the relative threshold (|shift| >= half the row's largest), both
  fixed before any run;
- ``svae+ (rotation off)``: sVAE+ without its in-training rotation.

Runnable in parts: every (method, seed) is saved to ``results/<tag>_parts/`` as it finishes
and skipped when already there; the table is built from every part file.

Usage::

    python benchmarks/simulation.py                          # 5 seeds, all methods
    python benchmarks/simulation.py --seeds 0 1 --methods svae+ vae --jobs 2
    python benchmarks/simulation.py --merge-only             # table from the parts so far
"""

from __future__ import annotations

import argparse
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).parent / "results"
PUBLISHED = pd.DataFrame(
    {
        "mcc_pearson": [0.46, 0.48, 0.47, 0.72, 0.88],
        "f1": [None, None, 0.17, 0.31, 0.51],
        "interventional_nll": [327.10, 392.68, 323.26, 318.26, 315.43],
    },
    index=pd.Index(["vae", "beta-vae", "ivae", "svae", "svae+"], name="method"),
)
METRICS = ["mcc_pearson", "mcc_spearman", "r2", "precision", "recall", "f1", "interventional_nll"]
#: Benchmark variants of a method: name -> (method, SparseVAE.train keyword arguments).
VARIANTS = {"svae+ (rotation off)": ("svae+", {"rotate_latents": False})}
ORDER = [
    "svae+",
    "svae+ (rotation off)",
    "svae",
    "ivae",
    "ivae-var",
    "clap",
    "beta-vae",
    "beta-tcvae",
    "factorvae",
    "dip-vae",
    "vae",
]


def heldout_nll(
    model, adata, heldout: list[str], control: str | None, seed: int, n_particles: int
) -> float:
    """Transfer to the held-out perturbations on half their cells; mean NLL of the other half."""
    import numpy as np

    import sparsevae as sv

    (split,) = sv.evaluate.make_splits(adata, heldout=heldout, control=control, random_state=seed)
    roles = split.roles.to_numpy()
    evaluation = adata[roles == "evaluation"].copy()
    _, nll = sv.evaluate.transfer_and_score(
        model, adata[roles == "transfer"].copy(), evaluation, seed=seed, n_particles=n_particles
    )
    labels = evaluation.obs["perturbation"].astype(str).to_numpy()
    return float(np.mean([nll[labels == p].mean() for p in heldout]))


def run_one(
    name: str,
    seed: int,
    max_epochs: int,
    n_train: int,
    threads: int,
    n_particles: int,
    controls: bool,
    model_kwargs: dict,
) -> pd.DataFrame:
    """Simulate with ``seed``, train method ``name`` with ``seed`` and return its score rows."""
    import torch

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    import sparsevae as sv
    from sparsevae._quiet import silence_lightning

    silence_lightning()
    method, train_kwargs = VARIANTS.get(name, (name, {}))
    adata = sv.data.simulate_sparse_shift(
        n_perturbations=100,
        n_cells_per_perturbation=250,
        n_latent=15,
        n_genes=100,
        n_control_cells=250 if controls else 0,
        random_state=seed,
    )
    control = "control" if controls else None
    names = list(adata.uns["true_targets"].index)
    train, heldout = names[:n_train], names[n_train:]
    report, models = sv.evaluate.identifiability_report(
        adata,
        methods=[method],
        seeds=[seed],
        train_perturbations=train,
        control=control,
        max_epochs=max_epochs,
        model_kwargs=model_kwargs.get(method),
        train_kwargs=train_kwargs,
        return_models=True,
        posthoc_rotation=True,
    )
    report["method"] = name
    report["interventional_nll"] = (
        heldout_nll(models[(method, seed)], adata, heldout, control, seed, n_particles)
        if heldout
        else float("nan")
    )
    first = report.iloc[0]
    posthoc = report.iloc[1]
    print(
        f"{name:>20} seed {seed}: MCC {first['mcc_pearson']:.3f} (post-hoc "
        f"{posthoc['mcc_pearson']:.3f})  F1 {first['f1']:.3f} (post-hoc top-2 "
        f"{posthoc['f1']:.3f})  NLL {first['interventional_nll']:.2f}  "
        f"({first['train_seconds']:.0f} s)",
        flush=True,
    )
    return report


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd over seeds per (method, rotation, graph readout), beside the published means."""
    keys = ["method", "rotation", "graph_readout"]
    grouped = results.groupby(keys, sort=False)[METRICS]
    mean, sd = grouped.mean(), grouped.std()
    table = pd.DataFrame(index=mean.index)
    for metric in METRICS:
        table[metric] = [
            f"{m:.3f} ± {s:.3f}" if pd.notna(s) else f"{m:.3f}"
            for m, s in zip(mean[metric], sd[metric], strict=True)
        ]
    table["n_seeds"] = results.groupby(keys, sort=False)["seed"].nunique()
    table["nan_loss"] = results.groupby(keys, sort=False)["nan_loss"].any()
    order = {name: i for i, name in enumerate(ORDER)}
    table = table.reset_index()
    table["_order"] = table["method"].map(lambda m: order.get(m, len(order)))
    table = table.sort_values(["_order", "rotation", "graph_readout"], kind="stable")
    return table.drop(columns="_order").set_index(keys)


def paired_nll(results: pd.DataFrame, reference: str = "svae+") -> pd.DataFrame:
    """Held-out NLL of each method minus the reference's on the same seed, over seeds."""
    nll = results.drop_duplicates(["method", "seed"]).pivot(
        index="seed", columns="method", values="interventional_nll"
    )
    if reference not in nll:
        return pd.DataFrame()
    difference = nll.sub(nll[reference], axis=0).drop(columns=reference)
    table = pd.DataFrame(
        {
            "mean": difference.mean(),
            "min": difference.min(),
            "max": difference.max(),
            "seeds below the reference": (difference < 0).sum(),
            "n_seeds": difference.notna().sum(),
        }
    )
    table.index.name = f"method (minus {reference})"
    return table.sort_values("mean")


def main() -> None:
    from _provenance import provenance

    from sparsevae.evaluate import METHODS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--methods", nargs="+", default=[m for m in ORDER])
    parser.add_argument("--max-epochs", type=int, default=300)
    parser.add_argument("--n-train", type=int, default=80, help="training perturbations")
    parser.add_argument("--jobs", type=int, default=1, help="parallel processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--n-particles", type=int, default=1000, help="IWELBO particles")
    parser.add_argument("--controls", action="store_true", help="add 250 control cells")
    parser.add_argument("--tag", default=None, help="name of the results files")
    parser.add_argument("--merge-only", action="store_true", help="only build the table")
    parser.add_argument(
        "--tuned",
        default=str(RESULTS / "simulation_tuning.csv"),
        help="tuning results (benchmarks/simulation_tuning.py); 'none' for package defaults",
    )
    args = parser.parse_args()
    tag = args.tag or ("simulation_controls" if args.controls else "simulation")
    unknown = set(args.methods) - set(METHODS) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {ORDER}")
    parts = RESULTS / f"{tag}_parts"
    parts.mkdir(parents=True, exist_ok=True)
    model_kwargs = tuned_kwargs(args.tuned)

    start = time.perf_counter()
    jobs = [
        (m, s, args.max_epochs, args.n_train, args.threads, args.n_particles, args.controls)
        for s in args.seeds
        for m in args.methods
        if not (parts / f"{m.replace(' ', '_')}__seed{s}.csv").exists()
    ]
    if not args.merge_only and jobs:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = {pool.submit(run_one, *job, model_kwargs): job for job in jobs}
            for future, job in futures.items():
                future.result().to_csv(
                    parts / f"{job[0].replace(' ', '_')}__seed{job[1]}.csv", index=False
                )
    files = sorted(parts.glob("*.csv"))
    if not files:
        raise SystemExit(f"no results in {parts}/ yet")
    results = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    table = summarise(results)
    results.to_csv(RESULTS / f"{tag}.csv", index=False)
    setting = "250 control cells" if args.controls else "no control cells (the paper's setting)"
    tuned = ", ".join(f"{m}: {kw}" for m, kw in model_kwargs.items()) or "none (defaults)"
    header = (
        f"# Simulation benchmark ({tag})\n\n"
        f"{provenance()}\n\n"
        f"K = 100, p = 15, 250 cells/perturbation, 100 genes, {setting}; first {args.n_train} "
        f"perturbations for training, the other {100 - args.n_train} held out for the "
        f"interventional NLL ({args.n_particles} particles); seeds "
        f"{sorted(results['seed'].unique().tolist())}; {args.max_epochs} epochs; mean ± sd over "
        f"seeds; tuned values: {tuned}. Training time of one run: "
        f"{results['train_seconds'].min():.0f}–{results['train_seconds'].max():.0f} s "
        f"({results['train_seconds'].min() / 60:.1f}–{results['train_seconds'].max() / 60:.1f} "
        f"min). This invocation: {len(jobs)} runs, "
        f"{args.jobs} process(es) × {args.threads} torch thread(s), "
        f"{time.perf_counter() - start:.0f} s.\n\n"
        "Rows: `as trained` / `model` = the method's own latents and graph readout; `post-hoc` = "
        "latents rotated by the L1-sparsest rotation of the mean latent shifts, graph by the "
        "paper's top-2 rule or the relative threshold (|shift| >= 0.5 × the row's largest). "
        "The interventional NLL does not depend on the rotation.\n\n"
    )
    paired = paired_nll(results)
    if len(paired):
        published = (
            "\n\n## Held-out NLL paired by seed\n\nEach method's interventional NLL minus "
            "sVAE+'s on the same seed (same simulation, same held-out cells): mean, smallest and "
            "largest difference over seeds, and on how many seeds the method was below sVAE+.\n\n"
            + paired.to_markdown(floatfmt=".3f")
        )
    else:
        published = ""
    published += "\n\nPublished (Lopez et al. 2023, Table 1, mean of 5 seeds):\n\n"
    published += PUBLISHED.to_markdown()
    (RESULTS / f"{tag}.md").write_text(header + table.to_markdown() + published + "\n")
    print(header + table.to_string())


def tuned_kwargs(path: str) -> dict[str, dict]:
    """SparseVAE keyword arguments chosen by the tuning script, per method ({} if none)."""
    if path == "none" or not Path(path).exists():
        return {}
    tuning = pd.read_csv(path)
    chosen = tuning[tuning["chosen"]]
    return {row.method: {row.parameter: float(row.value)} for row in chosen.itertuples()}


if __name__ == "__main__":
    main()
