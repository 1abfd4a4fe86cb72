"""Where one hidden layer stops being the better depth: the rule behind ``n_layers="auto"``.

sVAE+ at its defaults but a fixed depth (``n_layers`` 1 and 2), on a simulated regime of
:data:`sparsevae.data.REGIMES` with its number of cells per perturbation changed, scored as in
``benchmarks/regimes.py`` (latent MCC, graph F1 after matching) with the final training loss
(``elbo_train``, mean of the last five epochs). ``sv.model.default_n_layers`` takes one layer
below a median of 100 cells per perturbation and two from 100: the rows around 100 are what
chose it, and ``elbo_train`` says whether the likelihood could have chosen instead.

Runnable in parts: each (regime, cells, depth, seed) is saved to ``results/depth_rule_parts/``
and skipped when already there; ``--merge-only`` builds the table from the parts.

Usage::

    python benchmarks/depth_rule.py --regime paper --cells 40 70 100 150 --seeds 0 1
    python benchmarks/depth_rule.py --regime realistic --cells 150 --jobs 2
    python benchmarks/depth_rule.py --merge-only
"""

from __future__ import annotations

import argparse
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).parent / "results"
PARTS = RESULTS / "depth_rule_parts"


def part_path(regime: str, cells: int, n_layers: int, seed: int) -> Path:
    return PARTS / f"{regime}__cells{cells}__layers{n_layers}__seed{seed}.csv"


def run_one(regime: str, cells: int, n_layers: int, seed: int) -> pd.DataFrame:
    """Simulate ``regime`` with ``cells`` per perturbation, train sVAE+ at ``n_layers``."""
    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    import sparsevae as sv
    from sparsevae._quiet import silence_lightning
    from sparsevae.model import default_max_epochs

    silence_lightning()
    adata = sv.data.simulate_regime(regime, n_cells_per_perturbation=cells, random_state=seed)
    control = "control" if (adata.obs["perturbation"] == "control").any() else None
    epochs = default_max_epochs(adata.n_obs)
    report, models = sv.evaluate.identifiability_report(
        adata,
        methods=["svae+"],
        seeds=[seed],
        control=control,
        max_epochs=epochs,
        model_kwargs={"n_layers": n_layers},
        return_models=True,
    )
    (model,) = models.values()
    own = report.iloc[0]
    row = {
        "regime": regime,
        "cells_per_perturbation": cells,
        "n_layers": n_layers,
        "seed": seed,
        "mcc_pearson": own["mcc_pearson"],
        "f1": own["f1"],
        "n_predicted_edges": own["n_predicted_edges"],
        "n_true_edges": own["n_true_edges"],
        "elbo_train_last5": float(model.history["elbo_train"].iloc[-5:].mean().item()),
        "epochs": epochs,
        "train_seconds": own["train_seconds"],
    }
    print(
        f"{regime} {cells} cells, {n_layers} layer(s), seed {seed}: MCC {row['mcc_pearson']:.3f} "
        f"F1 {row['f1']:.3f} loss {row['elbo_train_last5']:.2f} ({row['train_seconds']:.0f} s)",
        flush=True,
    )
    return pd.DataFrame([row])


def _run_and_save(job: tuple) -> None:
    frame = run_one(*job)
    PARTS.mkdir(parents=True, exist_ok=True)
    frame.to_csv(part_path(*job), index=False)


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per (regime, cells): mean MCC / F1 / loss at each depth, the depth each one favours."""
    from sparsevae.model import default_n_layers

    keys = ["regime", "cells_per_perturbation"]
    means = results.groupby([*keys, "n_layers"])[["mcc_pearson", "f1", "elbo_train_last5"]].mean()
    wide = means.unstack("n_layers")
    wide.columns = [f"{metric} ({n} layer{'s' * (n > 1)})" for metric, n in wide.columns]
    by = {"mcc_pearson": "higher MCC", "f1": "higher F1", "elbo_train_last5": "lower loss"}
    for metric, label in by.items():
        per_depth = means[metric].unstack("n_layers")
        best = per_depth.idxmin(axis=1) if metric.startswith("elbo") else per_depth.idxmax(axis=1)
        wide[label] = best
    wide["auto takes"] = [default_n_layers(cells) for _, cells in wide.index]
    wide["seeds"] = results.groupby(keys)["seed"].nunique()
    return wide.reset_index()


def merge() -> str:
    from _provenance import write_results

    results = pd.concat([pd.read_csv(p) for p in sorted(PARTS.glob("*.csv"))])
    keys = ["regime", "cells_per_perturbation", "n_layers", "seed"]
    table = results.sort_values(keys).round(3)
    text = write_results(
        RESULTS,
        "depth_rule",
        "Network depth against cells per perturbation (the rule of n_layers='auto')",
        (
            "sVAE+ at its defaults except `n_layers`, each regime of `sv.data.REGIMES` with its "
            "cells per perturbation changed, the default epochs, one torch thread per fit "
            "(`train_seconds` measured with two fits sharing the 2-core machine). "
            "`elbo_train_last5`: the training loss, mean of the last five epochs (lower is a "
            "better fit). Every row is one seed; parts in `results/depth_rule_parts/`. The "
            "summary below the table: means over seeds, the depth each criterion favours and "
            "the one `n_layers='auto'` takes."
        ),
        table,
    )
    text += "\n## Summary\n\n" + summary(results).round(3).to_markdown(index=False) + "\n"
    (RESULTS / "depth_rule.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--regime", default="paper")
    parser.add_argument("--cells", type=int, nargs="+", default=[40, 70, 100, 150])
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--jobs", type=int, default=1, help="fits at the same time")
    parser.add_argument("--merge-only", action="store_true")
    args = parser.parse_args()
    if not args.merge_only:
        from sparsevae.data import REGIMES

        if args.regime not in REGIMES:
            parser.error(f"--regime {args.regime!r} is unknown; choose one of {list(REGIMES)}.")
        jobs = [
            (args.regime, cells, n_layers, seed)
            for seed in args.seeds
            for cells in args.cells
            for n_layers in args.layers
            if not part_path(args.regime, cells, n_layers, seed).exists()
        ]
        start = time.perf_counter()
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(_run_and_save, jobs))
        print(f"{len(jobs)} fit(s) in {time.perf_counter() - start:.0f} s", flush=True)
    print(merge())


if __name__ == "__main__":
    main()
