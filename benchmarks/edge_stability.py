"""Edge stability on a simulation with known targets: are the stable edges the true ones.

``sv.tl.edge_stability`` trains one sVAE+ per seed (default alpha = K), matches every run's
latents to the reference run's and counts each edge's frequency. Here the reference run's
latents are then matched to the true latents (Hungarian on |corr| with ``obsm["z_true"]``, as
``sv.metrics.graph_scores`` does), and the stable graph (frequency >= 0.8) is compared with
``uns["true_targets"]``: precision, recall, and the frequency distribution of true and false
edges. The single reference run's own graph (pi > 0.5) is scored beside it. Nothing is tuned
on the truth: the settings below were fixed before the run.

Prints the figures and writes ``benchmarks/results/edge_stability.md``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/edge_stability.py            # 5 seeds, ~5 min, 1 core
    python benchmarks/edge_stability.py --seeds 0 1 --max-epochs 50   # a quick look
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"
BINS = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


def truth_coordinates(adata, edges: pd.DataFrame, reference_latents: list[str], z_reference):
    """Frequencies as a perturbations × true latents matrix (reference latents matched)."""
    import sparsevae as sv

    true_targets = pd.DataFrame(adata.uns["true_targets"])
    true_index, reference_index, corr = sv.metrics.match_latents(adata.obsm["z_true"], z_reference)
    frequency = edges.pivot(index="perturbation", columns="latent", values="frequency")
    frequency = frequency.loc[true_targets.index, reference_latents]
    matched = np.zeros(true_targets.shape)
    matched[:, true_index] = frequency.to_numpy()[:, reference_index]
    mcc = float(corr[true_index, reference_index].mean())
    return pd.DataFrame(matched, index=true_targets.index, columns=true_targets.columns), mcc


def scores(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    tp = int((truth & predicted).sum())
    n_predicted, n_true = int(predicted.sum()), int(truth.sum())
    return {
        "precision": tp / n_predicted if n_predicted else float("nan"),
        "recall": tp / n_true if n_true else float("nan"),
        "n_predicted": n_predicted,
        "n_true": n_true,
        "true_positives": tp,
    }


def histogram(values: np.ndarray, n_runs: int) -> pd.Series:
    """How many edges have each frequency k / n_runs."""
    counts = pd.Series(np.rint(values * n_runs).astype(int)).value_counts()
    counts = counts.reindex(range(n_runs + 1), fill_value=0)
    counts.index = [f"{k}/{n_runs}" for k in counts.index]
    return counts


def main() -> None:
    from _provenance import provenance

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--alphas", type=float, nargs="+", default=None)
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--n-perturbations", type=int, default=40)
    parser.add_argument("--n-cells", type=int, default=200, help="cells per perturbation")
    parser.add_argument("--n-latent", type=int, default=10)
    parser.add_argument("--n-genes", type=int, default=100)
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the simulation")
    parser.add_argument("--n-jobs", type=int, default=1, help="processes (one torch thread each)")
    parser.add_argument("--stable", type=float, default=0.8, help="frequency of a stable edge")
    parser.add_argument("--tag", default="edge_stability", help="name of the results file")
    args = parser.parse_args()

    import torch

    import sparsevae as sv
    from sparsevae._quiet import silence_lightning

    torch.set_num_threads(1)
    silence_lightning()
    warnings.filterwarnings("ignore", message=".*gene.*no counts.*")
    adata = sv.data.simulate_sparse_shift(
        n_perturbations=args.n_perturbations,
        n_cells_per_perturbation=args.n_cells,
        n_latent=args.n_latent,
        n_genes=args.n_genes,
        random_state=args.data_seed,
    )
    start = time.perf_counter()
    reference = sv.tl.edge_stability(
        adata,
        perturbation_key="perturbation",
        control="control",
        seeds=args.seeds,
        alphas=args.alphas,
        n_latent=args.n_latent,
        max_epochs=args.max_epochs,
        n_jobs=args.n_jobs,
    )
    seconds = time.perf_counter() - start
    results = adata.uns["edge_stability"]
    edges, runs = results["edges"], results["runs"]
    z_reference = reference.get_latent_representation()
    truth = pd.DataFrame(adata.uns["true_targets"]).to_numpy() > 0
    single = sv.metrics.graph_scores(
        adata.uns["true_targets"],
        reference.get_intervention_targets(),
        adata.obsm["z_true"],
        z_reference,
    )

    lines = [
        f"# Edge stability on a simulation ({args.tag})",
        "",
        provenance(),
        "",
        f"`sv.data.simulate_sparse_shift(n_perturbations={args.n_perturbations}, "
        f"n_cells_per_perturbation={args.n_cells}, n_latent={args.n_latent}, "
        f"n_genes={args.n_genes}, random_state={args.data_seed})`: {adata.n_obs} cells, "
        f"{int(truth.sum())} true edges of {truth.size}. `sv.tl.edge_stability` with seeds "
        f"{args.seeds}, n_latent {args.n_latent}, {args.max_epochs} epochs, alphas "
        f"{args.alphas or 'default (K)'}; {args.n_jobs} process(es) × 1 torch thread; total "
        f"{seconds:.0f} s ({runs['train_seconds'].sum():.0f} s of training, "
        f"{runs['train_seconds'].median():.0f} s per run).",
        "",
        "The reference run's latents are matched to the true latents (Hungarian on |corr| "
        "with `z_true`, all cells); an edge is stable if its frequency is at least "
        f"{args.stable:g}.",
        "",
        "Command: `OMP_NUM_THREADS=1 python benchmarks/edge_stability.py"
        + "".join(f" {a}" for a in sys.argv[1:])
        + "`",
        "",
        "## Matching quality of each run to the reference",
        "",
        runs.round(3).to_markdown(index=False),
        "",
    ]
    summary_rows = []
    for alpha in edges["alpha"].unique():
        at_alpha = edges[np.isclose(edges["alpha"], alpha)]
        n_runs = int(at_alpha["n_runs"].iloc[0])
        frequency, mcc = truth_coordinates(adata, at_alpha, reference.latent_names, z_reference)
        values = frequency.to_numpy()
        stable = scores(truth, values >= args.stable - 1e-12)
        if alpha != edges["alpha"].iloc[0]:  # the reference run is at the first alpha only
            single = {"precision": float("nan"), "recall": float("nan")}
        summary_rows.append(
            {
                "alpha": alpha,
                "n_runs": n_runs,
                **{f"stable {k}": v for k, v in stable.items()},
                "reference run precision": single["precision"],
                "reference run recall": single["recall"],
                "reference MCC vs truth": mcc,
            }
        )
        distribution = pd.DataFrame(
            {
                "true edges": histogram(values[truth], n_runs),
                "false edges (non-edges)": histogram(values[~truth], n_runs),
            }
        )
        distribution.index.name = "frequency"
        lines += [
            f"## alpha = {alpha:g}",
            "",
            f"Stable edges (frequency >= {args.stable:g}): precision "
            f"**{stable['precision']:.3f}**, recall **{stable['recall']:.3f}** "
            f"({stable['true_positives']} of {stable['n_predicted']} stable edges are true; "
            f"{stable['n_true']} true edges). The reference run alone (pi > 0.5): precision "
            f"{single['precision']:.3f}, recall {single['recall']:.3f}. Reference latents vs "
            f"truth: MCC {mcc:.3f}.",
            "",
            "Frequency of every (perturbation, true latent) pair:",
            "",
            distribution.to_markdown(),
            "",
        ]
        print(f"alpha {alpha:g}: stable precision {stable['precision']:.3f}, recall "
              f"{stable['recall']:.3f} ({stable['true_positives']}/{stable['n_predicted']}, "
              f"{stable['n_true']} true); reference run precision {single['precision']:.3f}, "
              f"recall {single['recall']:.3f}; MCC {mcc:.3f}")  # fmt: skip
        print(distribution.to_string())
    print(runs.round(3).to_string(index=False))
    print(f"total {seconds:.0f} s")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.tag}.md").write_text("\n".join(lines))
    pd.DataFrame(summary_rows).to_csv(RESULTS / f"{args.tag}.csv", index=False)


if __name__ == "__main__":
    main()
