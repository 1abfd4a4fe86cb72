"""Held-out pairs on a simulation whose truth is latent-additive: sVAE+ against the baselines.

``sv.data.simulate_sparse_shift(..., n_combinations=10)`` gives a screen with control cells,
single perturbations and 10 random pairs ``"A+B"`` whose cells have latents
``z ~ N(shift_A + shift_B, I)``: the truth is additive in the latent space, and the decoder is a
random leaky-ReLU MLP followed by a softmax over genes, so a pair's change of expression is
*not* the sum of its singles' changes. The gene-space additive baseline is wrong by
construction; a model that learns the latent space and the decoder should beat it.

Per seed (the seed of the data, of the split and of training): every pair is held out (never
trained; both its singles train), ``sv.evaluate.make_splits`` halves each pair's cells (the
transfer half is only the split-half baseline here), sVAE+ trains at its defaults with
``combination_delimiter="+"`` and ``n_latent`` the true number of latents, and each pair is
predicted zero-shot by ``get_treatment_effect`` on the training control cells, at defaults.
Predictors, all scored like ``benchmarks/combinations.py`` by ``sv.evaluate.score_predictions``
against the same evaluation cells and the same bootstrap resamples (Pearson delta over all
genes and the top 20 DE genes, MSE over those 20, L2 over all genes, 95% intervals over
cells):

- **sVAE+ zero-shot**;
- **baselines** (``sv.evaluate.baseline_predictions``): no change, mean of training
  perturbations, split-half (the pair's transfer half) and **additive** (observed change of A
  plus observed change of B, from the training cells);
- **truth**: the change of 2,000 fresh cells per pair simulated with the same seed (the same
  decoder, singles and pairs; ``n_cells_per_combination=2000``), the pair's change up to little
  sampling noise: what a perfect model would predict.

"Beyond the intervals": sVAE+ zero-shot's 95% interval and the additive baseline's do not
overlap, sVAE+ on the better side (for Pearson its low bound above additive's high bound; for
MSE and L2 its high bound below additive's low bound); the looser count compares sVAE+'s bound
with the additive baseline's point value. Sharper, the *paired* interval: the 95% interval of
sVAE+ minus additive over the same resamples (the evaluation cells' shared noise cancels). Every
predictor is also scored against the truth in place of the evaluation cells.

Runnable in parts: each (setting, seed) is saved to ``results/simulated_pairs_parts/`` when it
finishes and skipped when there; the tables are built from every part file.

Settings (``SETTINGS``): 40 perturbations × 150 cells, 500 control cells, 10 pairs × 150 cells,
10 latents, 200 genes; ``mlp`` is the paper's generator (shifts 5 ± 0.5 SD, Poisson, depth
1e5), ``mlp_realistic_noise`` the same decoder with the realistic regime's effects and noise
(log-normal shifts of median 1.5 SD, negative binomial theta 5, depth 3,000 with log-SD 0.4).
sVAE+ trains 200 epochs (on seed 0, 100 and 400 gave Pearson deltas within 0.005); about
35 s per (setting, seed) on one thread, 6 minutes in all.

Usage::

    python benchmarks/simulated_pairs.py                     # both settings, seeds 0-4
    python benchmarks/simulated_pairs.py --settings mlp --seeds 0 1
    python benchmarks/simulated_pairs.py --merge-only        # tables from the parts so far
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _pairs import METRIC_DIRECTION, paired_difference, split_pairs

RESULTS = Path(__file__).parent / "results"
PARTS = RESULTS / "simulated_pairs_parts"
KEY, CONTROL, DELIMITER = "perturbation", "control", "+"
ZERO_SHOT = "sVAE+ zero-shot"
ADDITIVE = "baseline: additive"
TRUTH = "truth (2,000 fresh cells)"
N_TRUTH_CELLS = 2000

_SCREEN = {
    "n_perturbations": 40,
    "n_cells_per_perturbation": 150,
    "n_latent": 10,
    "n_genes": 200,
    "n_control_cells": 500,
    "n_combinations": 10,
    "n_cells_per_combination": 150,
}
#: Setting name -> keyword arguments of ``sv.data.simulate_sparse_shift`` (random_state apart).
SETTINGS = {
    # The paper's generator (MLP decoder, shifts 5 ± 0.5 SD, Poisson, depth 1e5).
    "mlp": {**_SCREEN, "decoder": "mlp"},
    # The same MLP decoder with the realistic regime's effects and noise
    # (sv.data.REGIMES["realistic"] apart from its log-linear gene-programme decoder).
    "mlp_realistic_noise": {
        **_SCREEN,
        "decoder": "mlp",
        "shift_distribution": "lognormal",
        "shift_mean": 1.5,
        "shift_sd": 0.3,
        "noise": "negative_binomial",
        "inverse_dispersion": 5.0,
        "library_size": 3000.0,
        "library_log_sd": 0.4,
    },
}


def truth_changes(setting: dict, seed: int, pairs: list[str], control_mean) -> dict:
    """Each pair's change in ``N_TRUTH_CELLS`` fresh cells (same seed: same decoder and pairs).

    The simulation draws the pairs' latent noise in one block, so a pair's first cells share
    theirs with the benchmark's cells of the first pair; each pair's first
    ``n_cells_per_combination`` cells are dropped to keep the truth independent of them.
    """
    import sparsevae as sv

    skip = setting["n_cells_per_combination"]
    big = sv.data.simulate_sparse_shift(
        **{**setting, "n_cells_per_combination": skip + N_TRUTH_CELLS}, random_state=seed
    )
    if list(big.uns["simulation"]["combinations"]) != pairs:
        raise RuntimeError("the truth's simulation drew other pairs")
    labels = big.obs[KEY].astype(str).to_numpy()
    return {
        pair: sv.evaluate.mean_log_expression(big[np.flatnonzero(labels == pair)[skip:]])
        - control_mean
        for pair in pairs
    }


def run_one(name: str, seed: int, max_epochs: int, n_boot: int) -> pd.DataFrame:
    """Simulate, train, predict and score one (setting, seed): one row per (pair, predictor)."""
    import scvi

    import sparsevae as sv
    from sparsevae._quiet import QUIET_TRAINER

    setting = SETTINGS[name]
    start = time.perf_counter()
    adata = sv.data.simulate_sparse_shift(**setting, random_state=seed)
    pairs = list(adata.uns["simulation"]["combinations"])
    train, transfer, evaluation, control, control_mean, training_changes, *_ = split_pairs(
        adata, pairs, KEY, CONTROL, seed
    )
    truth = truth_changes(setting, seed, pairs, control_mean)

    scvi.settings.seed = seed
    sv.SparseVAE.setup_anndata(
        train, perturbation_key=KEY, control=CONTROL, combination_delimiter=DELIMITER
    )
    model = sv.SparseVAE(train, n_latent=setting["n_latent"])
    fit_start = time.perf_counter()
    model.train(max_epochs=max_epochs, **QUIET_TRAINER)
    fit_seconds = time.perf_counter() - fit_start

    targets = adata.uns["true_targets"]
    eval_labels = evaluation.obs[KEY].astype(str).to_numpy()
    transfer_labels = transfer.obs[KEY].astype(str).to_numpy()
    rows = []
    for index, pair in enumerate(pairs):
        a, b = pair.split(DELIMITER)
        shared = int((targets.loc[a].to_numpy() * targets.loc[b].to_numpy()).sum())
        transfer_change = (
            sv.evaluate.mean_log_expression(transfer[transfer_labels == pair]) - control_mean
        )
        predictions = {
            ZERO_SHOT: model.get_treatment_effect(
                control.copy(), perturbation=pair, random_state=seed
            ).to_numpy(),
            **sv.evaluate.baseline_predictions(
                pair,
                training_changes,
                transfer_change=transfer_change,
                combination_delimiter=DELIMITER,
            ),
            TRUTH: truth[pair],
        }
        cells = sv.evaluate.log_normalized(evaluation[eval_labels == pair])
        scores = sv.evaluate.score_predictions(
            predictions, cells, control_mean, n_boot=n_boot, random_state=[seed, index]
        )
        paired = paired_difference(
            predictions[ZERO_SHOT],
            predictions[ADDITIVE],
            cells,
            control_mean,
            n_boot,
            [seed, index],
            scores.loc[[ZERO_SHOT, ADDITIVE]],
        )
        for predictor, values in scores.iterrows():
            against_truth = sv.evaluate.effect_metrics(
                predictions[predictor], truth[pair], control_mean
            )
            rows.append(
                {
                    "setting": name,
                    "seed": seed,
                    "pair": pair,
                    "shared_target_latents": shared,
                    "predictor": predictor,
                    "n_cells": len(cells),
                    **values.to_dict(),
                    **{f"{k}_vs_truth": v for k, v in against_truth.items()},
                    **(paired if predictor == ZERO_SHOT else {}),
                }
            )
    table = pd.DataFrame(rows)
    table["fit_seconds"] = fit_seconds
    table["seconds"] = time.perf_counter() - start
    return table


def beyond(table: pd.DataFrame) -> pd.DataFrame:
    """Per (setting, seed, pair) and metric: does sVAE+ beat (or lose to) the additive baseline
    beyond the intervals? Columns ``<metric>_wins``, ``<metric>_wins_point``,
    ``<metric>_loses`` (bool).
    """
    index = ["setting", "seed", "pair"]
    zs = table[table["predictor"] == ZERO_SHOT].set_index(index)
    add = table[table["predictor"] == ADDITIVE].set_index(index)
    out = pd.DataFrame(index=zs.index)
    for metric, sign in METRIC_DIRECTION.items():
        if sign > 0:
            out[f"{metric}_wins"] = zs[f"{metric}_low"] > add[f"{metric}_high"]
            out[f"{metric}_wins_point"] = zs[f"{metric}_low"] > add[metric]
            out[f"{metric}_loses"] = zs[f"{metric}_high"] < add[f"{metric}_low"]
        else:
            out[f"{metric}_wins"] = zs[f"{metric}_high"] < add[f"{metric}_low"]
            out[f"{metric}_wins_point"] = zs[f"{metric}_high"] < add[metric]
            out[f"{metric}_loses"] = zs[f"{metric}_low"] > add[f"{metric}_high"]
        out[f"{metric}_difference"] = sign * (zs[metric] - add[metric])
        out[f"{metric}_paired"] = zs[f"{metric}_paired_low"] > 0
        out[f"{metric}_paired_loses"] = zs[f"{metric}_paired_high"] < 0
    return out


def report(table: pd.DataFrame, args, seconds: float) -> str:
    from _provenance import provenance

    metrics = list(METRIC_DIRECTION)
    order = list(dict.fromkeys(table["predictor"]))
    fits = table.groupby(["setting", "seed"])[["fit_seconds", "seconds"]].first()
    text = [
        "# Held-out pairs on a latent-additive simulation with a nonlinear decoder",
        "",
        provenance(),
        "",
        f"{args.max_epochs} epochs; {args.n_boot} bootstrap resamples; {args.threads} torch "
        f"thread(s). Time per (setting, seed): {fits['seconds'].mean():.0f} s on average "
        f"({fits['fit_seconds'].mean():.0f} s of it training), {fits['seconds'].sum():.0f} s "
        f"for the {len(fits)} cases in the tables ({seconds:.0f} s in this invocation).",
        "",
        "Data (`sv.data.simulate_sparse_shift`, `random_state` = the seed): "
        + "; ".join(
            f"**{name}**: " + ", ".join(f"{k}={v}" for k, v in setting.items())
            for name, setting in SETTINGS.items()
            if name in set(table["setting"])
        )
        + ". Both use the random leaky-ReLU MLP decoder with a softmax over genes; pairs have "
        "latents z ~ N(shift_A + shift_B, I), the truth additive in the latent space. Every pair "
        "is held out (never trained; both its singles trained); `sv.evaluate.make_splits` halves "
        "each pair's cells (the transfer half is the split-half baseline), the evaluation half "
        'is scored. sVAE+ at its defaults (`combination_delimiter="+"`, `n_latent` 10 as in '
        "the truth) predicts each pair zero-shot with `get_treatment_effect` on the training "
        "control cells, at defaults. Scores as in `benchmarks/combinations.py`: changes of mean "
        "log1p(counts per 10,000) from the training control cells, Pearson delta over all genes "
        "and the 20 genes with the largest observed change, MSE over those 20, L2 over all 200 "
        f"genes, each with a 95% bootstrap interval over the evaluation cells. {TRUTH}: each "
        "pair's change in 2,000 fresh cells simulated with the same seed (the same decoder, "
        "singles and pairs): what a perfect model would predict.",
        "",
        "**Beyond the intervals**: sVAE+ zero-shot's 95% interval and the additive baseline's "
        "do not overlap, sVAE+ on the better side (Pearson: its low bound above additive's high "
        "bound; MSE, L2: its high bound below additive's low bound). *Past the point*: sVAE+'s "
        "bound beyond the additive baseline's point value. *Loses*: the intervals do not "
        "overlap, additive on the better side. *Paired interval*: the 95% interval of sVAE+ "
        "minus additive over the same bootstrap resamples (positive favours sVAE+) lies above "
        "(or below) 0; it is the sharper test, since both predictors are scored on each "
        "resample and the cells' noise they share cancels. Pearson's percentile intervals can "
        "sit below the point value (resampling adds noise to the observed change), so a case "
        "can be beyond the intervals without being past the point.",
        "",
    ]
    for name in dict.fromkeys(table["setting"]):
        part = table[table["setting"] == name]
        wins = beyond(part)
        n = len(wins)
        summary = part.groupby("predictor", sort=False)[metrics].mean().loc[order]
        vs_truth = (
            part[part["predictor"] != TRUTH]
            .groupby("predictor", sort=False)[[f"{m}_vs_truth" for m in metrics]]
            .mean()
        )
        counts = pd.DataFrame(
            {
                "sVAE+ minus additive (better side +)": [
                    wins[f"{m}_difference"].mean() for m in metrics
                ],
                "beyond the intervals": [f"{int(wins[f'{m}_wins'].sum())}/{n}" for m in metrics],
                "past the point": [f"{int(wins[f'{m}_wins_point'].sum())}/{n}" for m in metrics],
                "loses": [f"{int(wins[f'{m}_loses'].sum())}/{n}" for m in metrics],
                "paired interval above 0": [
                    f"{int(wins[f'{m}_paired'].sum())}/{n}" for m in metrics
                ],
                "paired interval below 0": [
                    f"{int(wins[f'{m}_paired_loses'].sum())}/{n}" for m in metrics
                ],
            },
            index=metrics,
        )
        per_seed = part.pivot_table(
            index="seed", columns="predictor", values=metrics[0], aggfunc="mean"
        )[[p for p in order if p != "baseline: no change"]]
        seed_wins = wins.groupby("seed")[[f"{m}_wins" for m in metrics]].agg(
            lambda won: f"{int(won.sum())}/{len(won)}"
        )
        seed_wins.columns = [f"{m} beyond" for m in metrics]
        per_seed = per_seed.join(seed_wins)
        interval = part[part["predictor"].isin([ZERO_SHOT, ADDITIVE, TRUTH])][
            [
                "seed",
                "pair",
                "shared_target_latents",
                "predictor",
                "pearson_all_genes",
                "pearson_all_genes_low",
                "pearson_all_genes_high",
                "pearson_top20_de",
                "pearson_top20_de_low",
                "pearson_top20_de_high",
                "mse_top20_de",
                "mse_top20_de_low",
                "mse_top20_de_high",
            ]
        ]
        text += [
            f"## {name}: mean over {n} (pair, seed) cases "
            f"(seeds {', '.join(map(str, sorted(part['seed'].unique())))})",
            "",
            summary.to_markdown(floatfmt=".3f"),
            "",
            "sVAE+ zero-shot against the additive baseline, per metric (mean difference, "
            "oriented so that positive favours sVAE+; counts of (pair, seed) cases):",
            "",
            counts.to_markdown(floatfmt=".3f"),
            "",
            f"### {name}: scored against the truth instead of the evaluation cells",
            "",
            f"The same metrics with {TRUTH} as the observed change (no evaluation-cell noise; "
            "the top 20 DE genes are the truth's), mean over (pair, seed) cases:",
            "",
            vs_truth.to_markdown(floatfmt=".3f"),
            "",
            f"### {name}: per seed, Pearson delta over all genes (mean over pairs) and the "
            "cases sVAE+ wins beyond the intervals",
            "",
            per_seed.to_markdown(floatfmt=".3f"),
            "",
            f"### {name}: per pair and seed, with 95% intervals",
            "",
            interval.to_markdown(index=False, floatfmt=".3f"),
            "",
        ]
    return "\n".join(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--merge-only", action="store_true", help="only build the tables")
    parser.add_argument("--redo", action="store_true", help="recompute parts already saved")
    args = parser.parse_args()

    import torch

    from sparsevae._quiet import silence_lightning

    torch.set_num_threads(args.threads)
    silence_lightning()
    start = time.perf_counter()
    PARTS.mkdir(parents=True, exist_ok=True)
    config = {"max_epochs": args.max_epochs, "n_boot": args.n_boot}
    if not args.merge_only:
        for name in args.settings:
            for seed in args.seeds:
                part = PARTS / f"{name}_seed{seed}.csv"
                if part.exists() and not args.redo:
                    continue
                run_one(name, seed, args.max_epochs, args.n_boot).to_csv(part, index=False)
                saved = {**config, "threads": args.threads}
                part.with_suffix(".json").write_text(json.dumps(saved))
                print(f"{name} seed {seed} done ({time.perf_counter() - start:.0f} s)", flush=True)
    files = sorted(PARTS.glob("*.csv"))
    for file in files:
        saved = json.loads(file.with_suffix(".json").read_text())
        if {k: saved[k] for k in config} != config:
            raise SystemExit(f"{file.name} was made with {saved}, not {config}: rerun with --redo")
    if not files:
        raise SystemExit("no parts yet")
    table = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    table = table.sort_values(["setting", "seed"], kind="stable", key=_setting_order)
    table.to_csv(RESULTS / "simulated_pairs.csv", index=False)
    text = report(table, args, time.perf_counter() - start)
    (RESULTS / "simulated_pairs.md").write_text(text)
    print(text[:3000])


def _setting_order(column: pd.Series) -> pd.Series:
    return column.map(list(SETTINGS).index) if column.name == "setting" else column


if __name__ == "__main__":
    main()
