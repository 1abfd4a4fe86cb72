"""Does the perturbation→latent graph come out right at the defaults, in every regime.

Regimes: :data:`sparsevae.data.REGIMES` (the paper's simulation, realistic screens, weak
effects, few cells per perturbation, genome scale). Rows, every one at its package defaults
(``sv.evaluate.METHODS``), the same epochs for all:

- ``svae+``: sVAE+ with the calibrated sparsity (the default, ``sparsity="calibrated"``);
- ``svae+ (paper objective)``: sVAE+ with the published objective (``sparsity="paper"``);
- ``svae``: the L1 mask penalty;
- ``sams-vae``: SAMS-VAE (Bereket & Karaletsos 2023) at its reference defaults (mask prior
  0.01, mean-field guide, the encoder seeing the offset), the same decoder and training;
- ``... (one layer)``, ``... (two layers)``: the same method with a fixed depth of the
  encoder and decoder (``n_layers=1``, scvi-tools' default; ``n_layers=2``, the paper's)
  instead of the default ``"auto"`` (one layer below a median of 100 cells per perturbation,
  so one in every regime but the paper's);
- ``ivae`` and ``vae``: dense models, scored as trained and after the two-stage rival's step
  (latents rotated by the L1-sparsest rotation of the mean latent shifts, the graph read from
  the rotated shifts by the paper's top-2 rule and by the relative threshold; see
  ``sv.evaluate.posthoc_sparse_rotation``). Every method's post-hoc rows are in the table too.

Scores: MCC (Pearson) of the latents, graph precision / recall / F1 after the optimal matching
of latents, edges found and true edges, training time. All perturbations train (the graph is
the result; held-out NLL lives in ``benchmarks/simulation.py``).

Runnable in parts: each (regime, method, seed) is saved to ``results/regimes_parts/`` as it
finishes and skipped when already there; ``--merge-only`` builds the table from the parts.

Usage::

    python benchmarks/regimes.py --regimes realistic --seeds 0 --jobs 2
    python benchmarks/regimes.py --regimes paper --methods svae+ ivae --max-epochs 300
    python benchmarks/regimes.py --merge-only
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).parent / "results"
PARTS = RESULTS / "regimes_parts"
#: Benchmark rows: name -> (method of ``sv.evaluate.METHODS``, extra SparseVAE arguments).
ROWS = {
    "svae+": ("svae+", {}),
    "svae+ (paper objective)": ("svae+", {"sparsity": "paper"}),
    "svae+ (one layer)": ("svae+", {"n_layers": 1}),
    "ivae (one layer)": ("ivae", {"n_layers": 1}),
    "vae (one layer)": ("vae", {"n_layers": 1}),
    "svae+ (two layers)": ("svae+", {"n_layers": 2}),
    "ivae (two layers)": ("ivae", {"n_layers": 2}),
    "vae (two layers)": ("vae", {"n_layers": 2}),
    "sams-vae (two layers)": ("sams-vae", {"n_layers": 2}),
    "svae": ("svae", {}),
    "ivae": ("ivae", {}),
    "vae": ("vae", {}),
    "sams-vae": ("sams-vae", {}),
}
METRICS = ["mcc_pearson", "precision", "recall", "f1", "n_predicted_edges", "n_true_edges"]


def part_path(regime: str, row: str, seed: int, tag: str) -> Path:
    safe = row.replace(" ", "_").replace("(", "").replace(")", "")
    return PARTS / f"{tag}__{regime}__{safe}__seed{seed}.csv"


def run_one(regime: str, row: str, seed: int, max_epochs: int | None, threads: int) -> pd.DataFrame:
    """Simulate ``regime`` with ``seed``, train row ``row`` with ``seed``, return score rows."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    import sparsevae as sv
    from sparsevae._quiet import silence_lightning
    from sparsevae.model._model import default_max_epochs

    silence_lightning()
    method, model_kwargs = ROWS[row]
    adata = sv.data.simulate_regime(regime, random_state=seed)
    control = "control" if (adata.obs["perturbation"] == "control").any() else None
    epochs = max_epochs or default_max_epochs(adata.n_obs)
    report = sv.evaluate.identifiability_report(
        adata,
        methods=[method],
        seeds=[seed],
        control=control,
        max_epochs=epochs,
        model_kwargs=model_kwargs,
        posthoc_rotation=True,
    )
    report.insert(0, "regime", regime)
    report["method"] = row
    report["max_epochs"] = epochs
    report["n_cells"] = adata.n_obs
    report["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    own = report.iloc[0]
    best = report[report["rotation"] == "post-hoc"]["f1"].max()
    print(
        f"{regime:>13} {row:>24} seed {seed}: MCC {own['mcc_pearson']:.3f}  F1 {own['f1']:.3f} "
        f"({int(own['n_predicted_edges'])} edges of {int(own['n_true_edges'])})  post-hoc "
        f"F1 {best:.3f}  {epochs} epochs, {own['train_seconds']:.0f} s",
        flush=True,
    )
    return report


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd over seeds per (regime, method, rotation, readout)."""
    keys = ["regime", "method", "rotation", "graph_readout"]
    grouped = results.groupby(keys, sort=False)
    mean, sd = grouped[METRICS].mean(), grouped[METRICS].std()
    table = pd.DataFrame(index=mean.index)
    for metric in METRICS:
        digits = 0 if metric.startswith("n_") else 3
        table[metric] = [
            f"{m:.{digits}f} ± {s:.{digits}f}" if pd.notna(s) else f"{m:.{digits}f}"
            for m, s in zip(mean[metric], sd[metric], strict=True)
        ]
    table["train_seconds"] = grouped["train_seconds"].mean().round(0)
    table["epochs"] = grouped["max_epochs"].first()
    table["device"] = grouped["device"].first()
    table["n_seeds"] = grouped["seed"].nunique()
    order = {name: i for i, name in enumerate(ROWS)}
    regimes = list(_regime_names())
    table = table.reset_index()
    table["_r"] = table["regime"].map(lambda r: regimes.index(r) if r in regimes else 99)
    table["_m"] = table["method"].map(lambda m: order.get(m, 99))
    table = table.sort_values(["_r", "_m", "rotation", "graph_readout"], kind="stable")
    return table.drop(columns=["_r", "_m"]).set_index(keys)


def _regime_names() -> list[str]:
    from sparsevae.data import REGIMES

    return list(REGIMES)


def _ceilings() -> pd.Series:
    """Each regime's MCC ceiling (``benchmarks/regime_ceiling.py``), mean over its seeds."""
    path = RESULTS / "regime_ceiling.csv"
    if not path.exists():
        return pd.Series(dtype=float)
    return pd.read_csv(path).groupby("regime")["mcc_counts_and_label"].mean()


def verdict(results: pd.DataFrame) -> str:
    """Per regime: sVAE+ at defaults against the acceptance bars and the two-stage rival."""
    lines = []
    ceilings = _ceilings()
    for regime, part in results.groupby("regime", sort=False):
        own = part[(part["method"] == "svae+") & (part["rotation"] == "as trained")]
        rival = part[part["method"].isin(["ivae", "vae"]) & (part["rotation"] == "post-hoc")]
        if own.empty:
            continue
        f1, mcc = own["f1"].mean(), own["mcc_pearson"].mean()
        line = f"- {regime}: sVAE+ F1 {f1:.3f}, MCC {mcc:.3f} ({own['seed'].nunique()} seed(s))"
        if not rival.empty:  # the better dense model and readout, each a mean over its seeds
            best = rival.groupby(["method", "graph_readout"])["f1"].mean()
            (method, readout), top = best.idxmax(), best.max()
            line += f"; two-stage rival ({method} + rotation, {readout}) F1 {top:.3f}"
            line += "; sVAE+ F1 ≥ rival" if f1 >= top else "; sVAE+ F1 < rival"
        sams = part[(part["method"] == "sams-vae") & (part["rotation"] == "as trained")]
        if not sams.empty:
            line += (
                f"; SAMS-VAE F1 {sams['f1'].mean():.3f}, MCC {sams['mcc_pearson'].mean():.3f} "
                f"({sams['seed'].nunique()} seed(s))"
            )
        if regime in ceilings.index:
            line += f"; MCC ceiling {ceilings[regime]:.3f} (regime_ceiling.md)"
        line += "; F1 ≥ 0.9 and MCC ≥ 0.9" if f1 >= 0.9 and mcc >= 0.9 else "; below 0.9"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    from _provenance import provenance

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--regimes", nargs="+", default=None, help="default: all")
    parser.add_argument("--methods", nargs="+", default=list(ROWS), help=f"of {list(ROWS)}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--max-epochs", type=int, default=None, help="default: the package's default for the size"
    )
    parser.add_argument("--jobs", type=int, default=1, help="parallel processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--tag", default="regimes", help="name of the results files")
    parser.add_argument("--merge-only", action="store_true", help="only build the table")
    args = parser.parse_args()
    regimes = args.regimes or _regime_names()
    unknown = (set(regimes) - set(_regime_names())) | (set(args.methods) - set(ROWS))
    if unknown:
        parser.error(f"unknown regimes or methods {sorted(unknown)}")
    PARTS.mkdir(parents=True, exist_ok=True)
    jobs = [
        (r, m, s, args.max_epochs, args.threads)
        for r in regimes
        for s in args.seeds
        for m in args.methods
        if not part_path(r, m, s, args.tag).exists()
    ]
    start = time.perf_counter()
    if not args.merge_only and jobs:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = {pool.submit(run_one, *job): job for job in jobs}
            for future in as_completed(futures):  # each part saved as soon as it is done
                job = futures[future]
                try:
                    report = future.result()
                except Exception as error:  # keep the other parts; say which failed
                    print(f"FAILED {job[:3]}: {type(error).__name__}: {error}", flush=True)
                    continue
                report.to_csv(part_path(job[0], job[1], job[2], args.tag), index=False)
    files = sorted(PARTS.glob(f"{args.tag}__*.csv"))
    if not files:
        raise SystemExit(f"no results in {PARTS}/ yet")
    results = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    results.to_csv(RESULTS / f"{args.tag}.csv", index=False)
    table = summarise(results)
    header = (
        f"# Regime benchmark ({args.tag})\n\n"
        f"{provenance()}\n\n"
        "Every method at its package defaults, the same epochs for every row of a regime (column "
        "`epochs`), all perturbations trained, mean ± sd over seeds (each seed simulates new data "
        "and trains with that seed). Rows `as trained` / `model`: the method's own latents and "
        "graph; `post-hoc`: the two-stage rival's step (L1-sparsest rotation of the mean latent "
        "shifts, graph by the top-2 rule or the relative threshold). Settings: "
        "`sparsevae.data.REGIMES`. `train_seconds`: mean training time of one fit on the "
        f"`device` shown. Last invocation: {len(jobs)} run(s), {args.jobs} process(es) × "
        f"{args.threads} thread(s), {time.perf_counter() - start:.0f} s on {platform.node()}.\n\n"
    )
    text = header + table.to_markdown() + "\n\n## Verdict\n\n" + verdict(results) + "\n"
    (RESULTS / f"{args.tag}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
