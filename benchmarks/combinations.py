"""Held-out pairs on the bundled Norman 2019 subset: sVAE+ against the field's baselines.

Held out: every pair whose two singles have cells of their own (the pair is never trained).
``sv.evaluate.make_splits`` halves each pair's cells (seeded by the seed): the *transfer* half
teaches the models that need it the pair, the *evaluation* half is scored.

Predictors of a pair's change of mean log1p(counts per 10,000) from control:

- **SAMS-VAE zero-shot** (``prior="sams-vae"``, its reference defaults, the same training,
  shifts and statistic as sVAE+ zero-shot's default row; "prior shifts": from its learned
  masks and embeddings, the model's own composition of the pair);
- **sVAE+ zero-shot** (``combination_delimiter="+"``, no transfer):
  ``get_treatment_effect`` on the training control cells, with shifts from each single's own
  cells (``source="empirical"``, the default) or from the sparse prior (``source="prior"``),
  on counts drawn from the model (``statistic="sampled"``, the default, comparable with the
  observed statistic) or on log1p of the expected expression (``"expected"``: the statistic
  before issue 19, which shrinks low-expressed genes on the observed side only); counts are
  drawn at the control cells' library sizes moved by the depth model (``depth="model"``, the
  default since issue 30) or at their own (``"observed"``, before); the reference side is the
  model's prediction for the same control cells (default) or their observed statistic
  (``reference_statistic="observed"``: the predicted pair against the real control cells, the
  control sample then shared with the target, as the baselines share it);
- **one label per pair** (the published model, ``combination_delimiter=None``): the pair is a
  new label learned by transfer from the transfer half;
- **additive sVAE+, pair as a label**: the zero-shot model's own networks with the pair learned
  by transfer as a label of its own (only the pair's prior differs from zero-shot);
- **baselines** from observed cells only (``sv.evaluate.baseline_predictions``): no change, the
  mean change of the training perturbations, the split-half ceiling (the transfer half's own
  change) and the **additive baseline** (observed change of A + observed change of B).

Every predictor is scored by ``sv.evaluate.score_predictions`` against the same evaluation
cells and the same bootstrap resamples: Pearson delta over all genes and the top 20 DE genes,
MSE over the top 20 DE genes, L2 over the most expressed genes (here all 250), with 95%
intervals over cells. Models also get the interventional NLL of the evaluation cells. With the
eval extra installed (``pip install "sparsevae[eval]"``; ``--no-cell-eval`` skips it), the
zero-shot model and the baselines are also scored by cell-eval as cells
(``sv.evaluate.score_with_cell_eval``, profile ``minimal``): results in ``combinations.md``'s
last section and ``combinations_cell_eval.csv``.

Usage::

    python benchmarks/combinations.py                  # 150 epochs, seeds 0-4
    python benchmarks/combinations.py --seeds 0 --max-epochs 50 --n-particles 20
    python benchmarks/combinations.py --independent-control   # scored against unseen control

``--independent-control`` holds half of the control cells out of training and of every
prediction and baseline, and takes the scored change from them (``_pairs.split_pairs``): by
default, as in the field's benchmarks, the observed change and the baselines subtract the same
control cells, which share their sampling noise between target and baselines (results in
``combinations_independent_control.md``). Both write, per metric, sVAE+ zero-shot minus the
additive baseline on the same bootstrap resamples (``_pairs.paired_difference``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scvi
import torch
from _pairs import METRIC_DIRECTION, paired_difference, split_pairs

import sparsevae as sv
from sparsevae._quiet import QUIET_TRAINER, silence_lightning
from sparsevae.evaluate._cell_eval import cells_from_change

RESULTS = Path(__file__).parent / "results"
KEY, CONTROL = "perturbation", "control"
ZERO_SHOT = "sVAE+ zero-shot"
ZERO_SHOT_PRIOR = "sVAE+ zero-shot, prior shifts"
ZERO_SHOT_OLD = "sVAE+ zero-shot, prior shifts, expected statistic"
ZERO_SHOT_OBSERVED_DEPTH = "sVAE+ zero-shot, observed library sizes"
ZERO_SHOT_OBSERVED_CONTROL = "sVAE+ zero-shot, observed control reference"
ZERO_SHOT_PREDICTED_CONTROL = "sVAE+ zero-shot, predicted control cells"
INTERACTION = "observed singles + sVAE+ interaction"
SAMS_ZERO_SHOT = "SAMS-VAE zero-shot"
SAMS_ZERO_SHOT_PRIOR = "SAMS-VAE zero-shot, prior shifts"
ADDITIVE = "baseline: additive"
ONE_LABEL = "one label per pair (transfer)"
PAIR_TRANSFER = "sVAE+, pair as a label (transfer)"
METRICS = list(sv.evaluate.EFFECT_METRICS)


def eligible_pairs(labels: pd.Series) -> list[str]:
    """Combinations whose every single also has cells of its own: those a zero-shot model can
    predict (on the bundled subset: KLF1+MAP2K6, KLF1+TGFBR2, MAP2K3+MAP2K6, MAP2K3+SLC38A2,
    MAPK1+TGFBR2).
    """
    names = set(labels)
    return sorted(label for label in names if "+" in label and set(label.split("+")) <= names)


def fit(adata, delimiter, args, seed, prior: str = "spike_slab") -> sv.SparseVAE:
    scvi.settings.seed = seed
    sv.SparseVAE.setup_anndata(
        adata, perturbation_key=KEY, control=CONTROL, combination_delimiter=delimiter
    )
    alpha = args.alpha if prior == "spike_slab" else None
    model = sv.SparseVAE(adata, n_latent=args.n_latent, alpha=alpha, prior=prior)
    model.train(max_epochs=args.max_epochs, **QUIET_TRAINER)
    return model


def relabel(adata, names: dict[str, str]):
    """A copy whose perturbation labels are renamed by ``names`` (others kept)."""
    out = adata.copy()
    out.obs[KEY] = out.obs[KEY].astype(str).replace(names)
    return out


def with_control(blocks: list[ad.AnnData], control: ad.AnnData) -> ad.AnnData:
    """``blocks`` and the control cells in one AnnData (the layout cell-eval reads)."""

    def plain(data: ad.AnnData, label=None) -> ad.AnnData:
        labels = data.obs[KEY].astype(str).to_numpy() if label is None else label
        return ad.AnnData(
            X=data.X.toarray() if hasattr(data.X, "toarray") else np.asarray(data.X),
            obs=pd.DataFrame({KEY: labels}, index=data.obs_names.copy()),
            var=pd.DataFrame(index=data.var_names.copy()),
        )

    parts = [plain(block) for block in blocks] + [plain(control, CONTROL)]
    return ad.concat(parts, index_unique="-")


def cell_eval_rows(
    additive, pairs, control, transfer, evaluation, predictions, seed, sams, target_control
) -> list:
    """cell-eval's metrics (profile ``minimal``) of the zero-shot model and the baselines.

    Predicted cells sit beside ``control`` (the cells they were predicted from), the real
    pair cells beside ``target_control`` (the same cells, or an independent half).
    """
    labels = lambda data: data.obs[KEY].astype(str).to_numpy()  # noqa: E731
    real = with_control([evaluation[np.isin(labels(evaluation), pairs)]], target_control)
    zero_shot = additive.predict_perturbations(pairs, control, random_state=seed)
    predicted = {
        ZERO_SHOT: zero_shot,
        ZERO_SHOT_PREDICTED_CONTROL: additive.predict_perturbations(
            pairs, control, random_state=seed, control_cells="predicted"
        ),
        SAMS_ZERO_SHOT: sams.predict_perturbations(pairs, control, random_state=seed),
        "baseline: split-half": with_control([transfer[np.isin(labels(transfer), pairs)]], control),
        **{
            name: with_control(
                [cells_from_change(control, predictions[pair][name], pair, KEY) for pair in pairs],
                control,
            )
            for name in ("baseline: additive", "baseline: mean of training perturbations")
        },
    }
    rows = []
    for name, cells in predicted.items():
        scores = sv.evaluate.score_with_cell_eval(
            cells, real, KEY, CONTROL, profile="minimal", baseline=name == ZERO_SHOT
        )
        for _, row in scores.iterrows():
            rows.append({"predictor": name, "seed": seed, **row.drop("baseline", errors="ignore")})
            if name == ZERO_SHOT and "baseline" in row:
                rows.append(
                    {
                        "predictor": "cell-eval base-mean baseline",
                        "seed": seed,
                        **row.drop(["baseline", "value"]),
                        "value": row["baseline"],
                    }
                )
    return rows


def run_seed(adata, pairs: list[str], args, seed: int) -> tuple[list, list, list, list]:
    """Train, predict and score one seed: per-pair, seen-single, per-gene and cell-eval rows."""
    split = split_pairs(
        adata, pairs, KEY, CONTROL, seed, independent_control=args.independent_control
    )
    train, transfer, evaluation, control, control_mean, training_changes = split[:6]
    # the reference of the scored change: the training control cells, or with
    # --independent-control a half of them that no model or baseline saw
    target_control, target_mean = split.target_control, split.target_mean

    additive = fit(train.copy(), "+", args, seed)
    one_label = fit(train.copy(), None, args, seed).transfer(transfer, sparse=False)
    as_label = {pair: pair.replace("+", "&") for pair in pairs}
    pair_transfer = additive.transfer(relabel(transfer, as_label), sparse=False)
    scvi.settings.seed = seed
    nll = {
        ZERO_SHOT: additive.get_interventional_nll(evaluation.copy(), n_particles=args.n_particles),
        ONE_LABEL: one_label.get_interventional_nll(
            evaluation.copy(), n_particles=args.n_particles
        ),
        PAIR_TRANSFER: pair_transfer.get_interventional_nll(
            relabel(evaluation, as_label), n_particles=args.n_particles
        ),
    }

    # SAMS-VAE last, so that the sVAE+ rows draw the same random numbers as before it
    sams = fit(train.copy(), "+", args, seed, prior="sams-vae")
    nll[SAMS_ZERO_SHOT] = sams.get_interventional_nll(
        evaluation.copy(), n_particles=args.n_particles
    )

    def effect(model, label, **kwargs) -> np.ndarray:
        return model.get_treatment_effect(
            control.copy(), perturbation=label, random_state=seed, **kwargs
        ).to_numpy()

    eval_labels = evaluation.obs[KEY].astype(str).to_numpy()
    transfer_labels = transfer.obs[KEY].astype(str).to_numpy()
    rows, gene_rows, all_predictions = [], [], {}
    for pair in pairs:
        transfer_change = (
            sv.evaluate.mean_log_expression(transfer[transfer_labels == pair]) - control_mean
        )
        predictions = {
            ZERO_SHOT: effect(additive, pair),
            SAMS_ZERO_SHOT: effect(sams, pair),
            SAMS_ZERO_SHOT_PRIOR: effect(sams, pair, source="prior"),
            ZERO_SHOT_OBSERVED_DEPTH: effect(additive, pair, depth="observed"),
            ZERO_SHOT_OBSERVED_CONTROL: effect(additive, pair, reference_statistic="observed"),
            ZERO_SHOT_PRIOR: effect(additive, pair, source="prior"),
            # the additive baseline plus the model's non-additive part of the pair:
            # observed A + observed B + [model(A+B) - model(A) - model(B)]
            INTERACTION: sum(training_changes[single] for single in pair.split("+"))
            + effect(additive, pair)
            - sum(effect(additive, single) for single in pair.split("+")),
            ZERO_SHOT_OLD: effect(
                additive, pair, source="prior", statistic="expected", library_size=1e4, log1p=True
            ),
            ONE_LABEL: effect(one_label, pair),
            PAIR_TRANSFER: effect(pair_transfer, as_label[pair]),
            **sv.evaluate.baseline_predictions(
                pair,
                training_changes,
                transfer_change=transfer_change,
                combination_delimiter="+",
            ),
        }
        all_predictions[pair] = predictions
        cells = sv.evaluate.log_normalized(evaluation[eval_labels == pair])
        observed = cells.mean(axis=0) - control_mean
        gene_rows += [
            {
                "seed": seed,
                "pair": pair,
                "gene": gene,
                "observed": observed[g],
                "zero_shot": predictions[ZERO_SHOT][g],
                "additive": predictions["baseline: additive"][g],
            }
            for g, gene in enumerate(adata.var_names)
        ]
        scores = sv.evaluate.score_predictions(
            predictions,
            cells,
            target_mean,
            expression=control_mean,
            n_boot=args.n_boot,
            random_state=[seed, len(rows)],
        )
        paired = paired_difference(
            predictions[ZERO_SHOT],
            predictions[ADDITIVE],
            cells,
            target_mean,
            args.n_boot,
            [seed, len(rows)],
            scores.loc[[ZERO_SHOT, ADDITIVE]],
        )
        for name, values in scores.iterrows():
            mean_nll = float(nll[name][eval_labels == pair].mean()) if name in nll else np.nan
            rows.append(
                {
                    "predictor": name,
                    "seed": seed,
                    "pair": pair,
                    "n_cells": len(cells),
                    "n_target_latents": (
                        int((additive.get_combination_shift(pair, source="prior") != 0).sum())
                        if name.startswith("sVAE+ zero-shot")
                        else int((sams.get_combination_shift(pair, source="prior") != 0).sum())
                        if name.startswith("SAMS-VAE zero-shot")
                        else np.nan
                    ),
                    "interventional_nll": mean_nll,
                    **values.to_dict(),
                    **(paired if name == ZERO_SHOT else {}),
                }
            )
    single_rows = []
    for single, observed in training_changes.items():
        if "+" in single:
            continue
        for source, variant in (
            ("empirical", {}),
            ("empirical", {"depth": "observed"}),
            ("empirical", {"reference_statistic": "observed"}),
            ("prior", {}),
        ):
            predicted = effect(additive, single, source=source, **variant)
            # the single's training cells against the scored reference (in sample)
            scores = sv.evaluate.effect_metrics(
                predicted, observed + control_mean - target_mean, control_mean
            )
            name = ", ".join([source, *(f"{key}={value}" for key, value in variant.items())])
            single_rows.append({"seed": seed, "single": single, "source": name, **scores})
    cell_eval = []
    if args.cell_eval:
        cell_eval = cell_eval_rows(
            additive,
            pairs,
            control,
            transfer,
            evaluation,
            all_predictions,
            seed,
            sams,
            target_control,
        )
    return rows, single_rows, gene_rows, cell_eval


def where_zero_shot_loses(genes: pd.DataFrame, n_genes: int = 5) -> pd.DataFrame:
    """Per pair, the genes whose squared error the zero-shot model exceeds the additive
    baseline's by most (changes averaged over seeds first).
    """
    mean = genes.groupby(["pair", "gene"])[["observed", "zero_shot", "additive"]].mean()
    mean["excess_squared_error"] = (mean["zero_shot"] - mean["observed"]) ** 2 - (
        mean["additive"] - mean["observed"]
    ) ** 2
    top = mean.sort_values("excess_squared_error", ascending=False).groupby("pair").head(n_genes)
    return top.sort_index(level="pair", sort_remaining=False).reset_index()


def mean_table(table: pd.DataFrame, by: str) -> pd.DataFrame:
    """Mean of the metrics and NLL per predictor; NaN Pearson (no change) counts as missing."""
    grouped = table.groupby(by, sort=False)
    summary = grouped[["interventional_nll", *METRICS]].mean()
    summary["n_rows"] = grouped.size()
    summary["n_no_change"] = summary["n_rows"] - grouped["pearson_all_genes"].count()
    return summary


def _run_seed_in_child(pairs: list[str], args, seed: int):
    """:func:`run_seed` in a worker process: its own data, threads and logging."""
    torch.set_num_threads(args.threads)
    silence_lightning()
    return run_seed(sv.data.norman2019_subset(), pairs, args, seed)


def main() -> None:
    from _provenance import provenance

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-epochs", type=int, default=150)
    parser.add_argument("--n-latent", type=int, default=10)
    parser.add_argument("--n-particles", type=int, default=100)
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="Beta(1, alpha) sparsity of the models (default: their number of perturbations)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes")
    parser.add_argument(
        "--no-cell-eval",
        dest="cell_eval",
        action="store_false",
        help="skip cell-eval's metrics (they need the eval extra: pip install 'sparsevae[eval]')",
    )
    parser.add_argument(
        "--independent-control",
        action="store_true",
        help="hold half of the control cells out of training and every prediction and score "
        "against them (results/combinations_independent_control.*)",
    )
    parser.add_argument(
        "--pairs",
        nargs="+",
        default=None,
        help="pairs to hold out (default: every pair whose singles have cells of their own)",
    )
    args = parser.parse_args()
    # before this run writes its own results (they are tracked files: written first, they
    # would mark the commit as changed)
    made_at = provenance()
    torch.set_num_threads(args.threads)
    silence_lightning()
    start = time.perf_counter()

    adata = sv.data.norman2019_subset()
    labels = adata.obs[KEY].astype(str)
    eligible = eligible_pairs(labels)
    pairs = eligible if args.pairs is None else args.pairs
    wrong = sorted(set(pairs) - set(eligible))
    if wrong:
        raise SystemExit(
            f"--pairs {wrong}: not pairs whose singles have cells of their own; "
            f"choose from {eligible}"
        )
    rows, single_rows, gene_rows, cell_eval_scores = [], [], [], []
    # Each seed in a fresh process: a seed's figures do not depend on what ran before it in
    # the same process (with the SAMS-VAE rows added, seeds 1-4 of the sVAE+ rows moved
    # slightly when all seeds shared one process; each alone reproduced the earlier figures).
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=context, max_tasks_per_child=1) as pool:
        futures = {pool.submit(_run_seed_in_child, pairs, args, seed): seed for seed in args.seeds}
        finished = {}
        for future in as_completed(futures):
            finished[futures[future]] = future.result()
            print(f"seed {futures[future]} done ({time.perf_counter() - start:.0f} s)", flush=True)
    for seed in args.seeds:
        seed_rows, seed_singles, seed_genes, seed_cell_eval = finished[seed]
        rows += seed_rows
        single_rows += seed_singles
        gene_rows += seed_genes
        cell_eval_scores += seed_cell_eval
    table = pd.DataFrame(rows)
    singles = pd.DataFrame(single_rows)
    genes = pd.DataFrame(gene_rows)
    loses = where_zero_shot_loses(genes)
    # How much of the zero-shot model's excess error over the additive baseline (all genes,
    # changes averaged over seeds) the 20 worst genes of each pair carry.
    mean = genes.groupby(["pair", "gene"])[["observed", "zero_shot", "additive"]].mean()
    excess = (mean["zero_shot"] - mean["observed"]) ** 2 - (
        mean["additive"] - mean["observed"]
    ) ** 2
    share = excess.groupby("pair").apply(lambda e: e.nlargest(20).sum() / e.clip(lower=0).sum())
    seconds = time.perf_counter() - start

    summary = mean_table(table, "predictor")
    per_pair = (
        table.groupby(["pair", "predictor"], sort=False)[["pearson_all_genes", "pearson_top20_de"]]
        .mean()
        .unstack("pair")
    )
    # Where the zero-shot model loses to the additive baseline: per pair and gene.
    wide = table.pivot_table(index=["seed", "pair"], columns="predictor", values=METRICS[0])
    n_at_least = int((wide[ZERO_SHOT] >= wide["baseline: additive"]).sum())
    RESULTS.mkdir(exist_ok=True)
    name = "combinations" if args.alpha is None else f"combinations_alpha{args.alpha:g}"
    if args.independent_control:
        name += "_independent_control"
    table.to_csv(RESULTS / f"{name}.csv", index=False)
    command = (
        f"python benchmarks/combinations.py --max-epochs {args.max_epochs} --n-latent "
        f"{args.n_latent} --n-particles {args.n_particles} --n-boot {args.n_boot} --seeds "
        f"{' '.join(map(str, args.seeds))}"
        f"{'' if args.alpha is None else f' --alpha {args.alpha:g}'}"
        f"{'' if args.pairs is None else ' --pairs ' + ' '.join(args.pairs)}"
        f"{' --independent-control' if args.independent_control else ''}"
    )
    reference = (
        "Changes are of mean log1p(counts per 10,000) from control: **independent control** "
        "(`--independent-control`): half of the control cells (seeded) are held out of "
        "training; the models are trained on, and predict from, the other half, which is also "
        "the reference of every baseline's change (the singles' observed changes); the scored "
        "(observed) change of each pair, and of each seen single in sample, is taken from the "
        "held-out half, which nothing saw. Bootstrap intervals resample the evaluation cells "
        "only (the held-out control half stays fixed)."
        if args.independent_control
        else "Changes are of mean log1p(counts per 10,000) from the training control cells, "
        "the same cells for the observed change and every baseline (the field's protocol: "
        "their sampling noise is shared by target and baselines; `--independent-control` "
        "removes it)."
    )
    # sVAE+ zero-shot minus the additive baseline on the same bootstrap resamples
    paired_rows = []
    zero_rows = table[table["predictor"] == ZERO_SHOT]
    additive_rows = table[table["predictor"] == ADDITIVE].set_index(["seed", "pair"])
    for metric, sign in METRIC_DIRECTION.items():
        difference = sign * (zero_rows.set_index(["seed", "pair"])[metric] - additive_rows[metric])
        paired_rows.append(
            {
                "metric": metric,
                "sVAE+ minus additive (better side +)": difference.mean(),
                "sVAE+ better (point)": f"{int((difference > 0).sum())}/{len(difference)}",
                "paired interval above 0": (
                    f"{int((zero_rows[f'{metric}_paired_low'] > 0).sum())}/{len(zero_rows)}"
                ),
                "paired interval below 0": (
                    f"{int((zero_rows[f'{metric}_paired_high'] < 0).sum())}/{len(zero_rows)}"
                ),
            }
        )
    paired_table = pd.DataFrame(paired_rows)
    text = [
        "# Held-out pairs on the Norman 2019 subset: sVAE+ and the baselines",
        "",
        made_at,
        "",
        f"`{command}`; {args.threads} torch thread(s); {seconds:.0f} s in all. "
        f"{adata.n_obs} cells × {adata.n_vars} genes.",
        "",
        f"Held-out pairs (never trained; both singles trained as singles): {', '.join(pairs)}. "
        "`sv.evaluate.make_splits` halves each pair's cells: the transfer half teaches the "
        "transfer models the pair (and is the split-half baseline), the evaluation half is "
        f"scored. {reference} "
        "Pearson delta (higher is better) over all genes and the 20 genes with the largest "
        "observed change; MSE over those 20 and L2 over all genes (lower is better). NaN "
        "Pearson: a prediction that does not vary (no change); means skip it "
        "(`n_no_change` counts it). Interventional NLL: nats per evaluation cell.",
        "",
        "## Mean over pairs and seeds",
        "",
        summary.to_markdown(floatfmt=".3f"),
        "",
        f"{ZERO_SHOT} is at or above the additive baseline's Pearson over all genes on "
        f"{n_at_least} of {len(wide)} (seed, pair) cases.",
        "",
        "## sVAE+ zero-shot against the additive baseline, paired",
        "",
        "Per metric over the (seed, pair) cases: the mean difference (oriented so that "
        "positive favours sVAE+), the cases where sVAE+'s point value is better, and those "
        "where the 95% interval of the difference over the same bootstrap resamples of the "
        "evaluation cells lies above or below 0.",
        "",
        paired_table.to_markdown(index=False, floatfmt=".3f"),
        "",
        "## Per pair: Pearson delta, mean over seeds (all genes, top 20 DE)",
        "",
        per_pair.to_markdown(floatfmt=".3f"),
        "",
        "## Per pair and seed, with 95% bootstrap intervals over evaluation cells",
        "",
        table[
            [
                "predictor",
                "seed",
                "pair",
                "n_cells",
                "interventional_nll",
                "pearson_all_genes",
                "pearson_all_genes_low",
                "pearson_all_genes_high",
                "pearson_top20_de",
                "pearson_top20_de_low",
                "pearson_top20_de_high",
                "mse_top20_de",
                "l2_top1000_expressed",
            ]
        ].to_markdown(index=False, floatfmt=".3f"),
        "",
        "## Where the zero-shot model loses to the additive baseline",
        "",
        "Per pair, the 5 genes where the zero-shot model's squared error exceeds the additive "
        "baseline's most (observed and predicted changes averaged over seeds), and the share "
        "of the pair's positive excess error that its 20 worst genes carry: "
        + ", ".join(f"{pair} {value:.0%}" for pair, value in share.items())
        + ".",
        "",
        loses.to_markdown(index=False, floatfmt=".3f"),
        "",
        "## Seen singles (zero-shot model, in-sample): predicted vs observed change",
        "",
        singles.groupby("source")[METRICS].mean().to_markdown(floatfmt=".3f"),
        "",
        f"Mean over {singles['single'].nunique()} singles × {len(args.seeds)} seeds; Pearson "
        "means skip singles predicted unchanged (with prior shifts: those without a target "
        "latent).",
        "",
    ]
    if cell_eval_scores:
        scores = pd.DataFrame(cell_eval_scores)
        scores.to_csv(RESULTS / f"{name}_cell_eval.csv", index=False)
        per_metric = scores.groupby(["predictor", "metric"], sort=False)["value"].mean().unstack()
        better = scores.drop_duplicates("metric").set_index("metric")["better"]
        text += [
            "## cell-eval's metrics (profile `minimal`), mean over pairs and seeds",
            "",
            "The same held-out pairs and evaluation cells, scored by cell-eval "
            "(`sv.evaluate.score_with_cell_eval`), each cell normalised to log1p(counts per "
            "10,000): "
            + (
                "the real pair cells beside the held-out control half, every predicted side "
                "beside the training control cells it was predicted from"
                if args.independent_control
                else "every side as cells beside the same training control cells"
            )
            + ". Predicted cells: "
            "sVAE+ zero-shot from `predict_perturbations` (one negative binomial draw per "
            "control cell), beside the real control cells (its default) or, in the row "
            f"'{ZERO_SHOT_PREDICTED_CONTROL}', beside the model's own prediction of them "
            '(`control_cells="predicted"`, drawn alike); split-half, the pair\'s '
            "transfer-half cells; the additive and mean "
            "baselines, each control cell's log1p(CP10k) moved by the baseline's change "
            "(clipped at 0); cell-eval's own base-mean baseline beside the zero-shot model. "
            "Better: " + ", ".join(f"`{m}` {b or 'n/a'}" for m, b in better.items()) + ".",
            "",
            per_metric.to_markdown(floatfmt=".3f"),
            "",
        ]
    (RESULTS / f"{name}.md").write_text("\n".join(text))
    print("\n".join(text[:12]))


if __name__ == "__main__":
    main()
