"""Why sVAE+ does not redraw its own training effects: seen singles, in sample (issue 30).

The model of ``benchmarks/combinations.py`` (sVAE+ at defaults, ``n_latent=10``,
``combination_delimiter="+"``, trained on the Norman 2019 subset without the five pairs whose
singles have cells of their own) predicts the change of mean log1p(counts per 10,000) from
control of each seen single perturbation, on that perturbation's own training cells. Each
prediction variant changes ONE thing from the current default of
``model.get_treatment_effect(control_cells, single)``:

- **default**: control cells, each one's posterior mean plus the single's empirical latent
  shift, decoded (batch norm in eval mode), negative binomial counts drawn at the control
  cells' own library sizes (``statistic="sampled"``), minus the same for the unshifted cells;
- **prior shifts** (``source="prior"``) instead of empirical ones;
- **depth**: counts drawn at the perturbation's own cells' observed library sizes (resampled
  to the number of control cells), or at the control's scaled by a *depth model*, the
  perturbation's mean log library size minus control's (added in log space, so it adds up over
  the singles of a combination);
- **own cells encoded**: the perturbation's own cells' posterior means decoded (a pure
  reconstruction), instead of control cells shifted by the empirical shift: the decoder's
  ceiling, which separates encoder/shift errors from decoder errors;
- **expected statistic**: mean log1p(10,000 × the decoder's proportions) instead of drawn counts;
- **Poisson draws**: no overdispersion (the dispersion's part in the sampled statistic);
- **decoder batch norm in train mode** (statistics of the decoded cells) instead of eval mode.

Then combinations of the causes that matter, and the target: **split-half** (the observed
change of a random half of the perturbation's cells predicts that of the other half).

Three targets, each a perturbation's observed change from a control mean:

- *all*: the issue's in-sample figure, all the perturbation's cells against all training control
  cells (no split-half);
- *half*: the second half of its cells against all control cells: the split-half baseline's
  target. Variants that read the perturbation's own cells (library sizes, posterior means) read
  only the first half, as split-half does. The split-half baseline and the observed change share
  the control cells' sampling noise;
- *independent*: as *half*, but the control cells are halved too: predictions start from the
  first half of the control cells (the split-half baseline subtracts their mean), the scored
  change is the second half of the cells minus the second half of control. Nothing is shared.

Pearson delta over all genes and over the 20 genes with the largest observed |change|
(``sv.evaluate.score_predictions``). Last, the same variants for the held-out pairs (zero-shot)
against the additive baseline.

Usage::

    python benchmarks/prediction_diagnosis.py                      # seeds 0 1, 150 epochs
    python benchmarks/prediction_diagnosis.py --seeds 0 --max-epochs 30 --name quick
    # in parts, then one report of all of them:
    python benchmarks/prediction_diagnosis.py --seeds 2 3 4 --name prediction_diagnosis_seeds234
    python benchmarks/prediction_diagnosis.py --name prediction_diagnosis_5seeds --from-csv \
        benchmarks/results/prediction_diagnosis.csv \
        benchmarks/results/prediction_diagnosis_seeds234.csv
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scvi
import torch

import sparsevae as sv
from sparsevae._quiet import QUIET_TRAINER, silence_lightning
from sparsevae.model._predict import sampled_mean_log_expression

RESULTS = Path(__file__).parent / "results"
KEY, CONTROL = "perturbation", "control"
TARGET_SUM = 1e4
METRICS = ["pearson_all_genes", "pearson_top20_de"]
#: all: the issue's in-sample figure; half: split-half comparable; independent: control halved.
TARGETS = ("all", "half", "independent")

DEFAULT = "default: empirical, sampled, control cells, control depth"
PRIOR = "prior shifts"
OWN_DEPTH = "own cells' depth (observed library sizes)"
DEPTH_MODEL = "depth model (mean log library added)"
OWN_CELLS = "own cells encoded (reconstruction), control depth"
EXPECTED = "expected statistic (log1p of decoder mean × 1e4)"
POISSON = "Poisson draws (no overdispersion)"
BN_TRAIN = "decoder batch norm in train mode"
BY_HAND = "default, recomputed by hand (check)"
# Combinations of causes.
PRIOR_DEPTH = "prior shifts + own depth"
PRIOR_DEPTH_MODEL = "prior shifts + depth model"
OWN_CELLS_DEPTH = "own cells encoded + own depth (decoder ceiling)"
EXPECTED_OWN = "own cells encoded + expected statistic"
DEPTH_MODEL_POISSON = "depth model + Poisson draws"
# The predicted statistic minus the OBSERVED control mean (as split-half forms its change)
# instead of minus the model's own statistic of the control cells.
VS_OBSERVED = "change from observed control mean"
VS_OBSERVED_DEPTH = "change from observed control mean + depth model"
VS_OBSERVED_OWN_DEPTH = "change from observed control mean + own depth"
VS_OBSERVED_OWN = "own cells encoded + own depth, from observed control mean"
# Targets.
SPLIT_HALF = "split-half (target)"
ADDITIVE = "baseline: additive (observed A + observed B)"

ONE_CHANGE = [DEFAULT, PRIOR, OWN_DEPTH, DEPTH_MODEL, OWN_CELLS, EXPECTED, POISSON, BN_TRAIN]
COMBINED = [
    PRIOR_DEPTH,
    PRIOR_DEPTH_MODEL,
    OWN_CELLS_DEPTH,
    EXPECTED_OWN,
    DEPTH_MODEL_POISSON,
    VS_OBSERVED,
    VS_OBSERVED_DEPTH,
    VS_OBSERVED_OWN_DEPTH,
    VS_OBSERVED_OWN,
]
ORDER = [*ONE_CHANGE, *COMBINED, SPLIT_HALF, ADDITIVE, BY_HAND]


def eligible_pairs(labels: pd.Series) -> list[str]:
    """Pairs whose singles have cells of their own (held out, as in combinations.py)."""
    names = set(labels)
    return sorted(label for label in names if "+" in label and set(label.split("+")) <= names)


def dense(adata) -> np.ndarray:
    x = adata.X
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)


class Decoder:
    """The trained module's encoder and decoder, called as ``_decoded_means`` calls them."""

    def __init__(self, model: sv.SparseVAE):
        self.module = model.module
        self.module.eval()
        self.theta = torch.exp(self.module.log_theta()).detach().cpu().numpy()

    @torch.inference_mode()
    def encode(self, counts: np.ndarray) -> np.ndarray:
        return self.module.encode(torch.as_tensor(counts)).loc.numpy()

    @torch.inference_mode()
    def proportions(self, z: np.ndarray, batch_norm_train: bool = False) -> np.ndarray:
        """Decoder proportions; ``batch_norm_train``: batch statistics of these latents."""
        decoder = self.module.decoder
        if not batch_norm_train:
            return self.module.decode(torch.as_tensor(z, dtype=torch.float32)).exp().numpy()
        state = copy.deepcopy(decoder.state_dict())  # train mode updates running statistics
        decoder.train()
        try:
            return self.module.decode(torch.as_tensor(z, dtype=torch.float32)).exp().numpy()
        finally:
            decoder.eval()
            decoder.load_state_dict(state)


def sampled(proportions, library, theta, n_samples, seed) -> np.ndarray:
    """Mean log1p CP10k of NB counts drawn at ``library`` (the package's sampled statistic)."""
    return sampled_mean_log_expression(
        proportions, np.asarray(library, np.float64)[:, None], theta, n_samples, seed
    )


def expected(proportions) -> np.ndarray:
    return np.log1p(TARGET_SUM * proportions).mean(axis=0)


def predictions_for(
    label: str,
    model: sv.SparseVAE,
    net: Decoder,
    control: dict[str, np.ndarray],
    own_counts: np.ndarray,
    n_samples: int,
    seed: int,
    log_ratio: float | None = None,
) -> dict[str, np.ndarray]:
    """Every model variant's predicted change of ``label``, from control cells and ``own_counts``.

    ``control``: the control cells' posterior means ``z``, library sizes ``library`` and
    observed mean log1p CP10k ``mean``. ``log_ratio``: the depth model's log library shift
    (default: that of ``own_counts`` over the control cells).
    """
    rng = np.random.default_rng([seed, 7])
    control_z, control_library, control_mean = control["z"], control["library"], control["mean"]
    n_control = len(control_z)
    own_library = own_counts.sum(axis=1)
    own_z = net.encode(own_counts)
    shift = {
        source: model.get_combination_shift(label, source=source).to_numpy(np.float32)
        for source in ("empirical", "prior")
    }
    # Depth: the perturbation's own library sizes, resampled to the control cells' number, or
    # the control's scaled by the mean log library ratio (a depth model that adds up).
    own_depth = rng.choice(own_library, size=n_control, replace=True)
    if log_ratio is None:
        log_ratio = np.log(own_library).mean() - np.log(control_library).mean()
    model_depth = control_library * np.exp(log_ratio)
    control_depth_for_own = rng.choice(control_library, size=len(own_z), replace=True)
    poisson_theta = np.full_like(net.theta, 1e10)

    reference = net.proportions(control_z)
    empirical = net.proportions(control_z + shift["empirical"])
    prior = net.proportions(control_z + shift["prior"])
    own = net.proportions(own_z)

    def change(treated, treated_library, theta=net.theta):
        untreated = sampled(reference, control_library, theta, n_samples, seed)
        return sampled(treated, treated_library, theta, n_samples, seed) - untreated

    bn_reference = net.proportions(control_z, batch_norm_train=True)
    bn_treated = net.proportions(control_z + shift["empirical"], batch_norm_train=True)
    return {
        BY_HAND: change(empirical, control_library),
        OWN_DEPTH: change(empirical, own_depth),
        DEPTH_MODEL: change(empirical, model_depth),
        OWN_CELLS: change(own, control_depth_for_own),
        EXPECTED: expected(empirical) - expected(reference),
        POISSON: change(empirical, control_library, poisson_theta),
        BN_TRAIN: sampled(bn_treated, control_library, net.theta, n_samples, seed)
        - sampled(bn_reference, control_library, net.theta, n_samples, seed),
        PRIOR_DEPTH: change(prior, own_depth),
        PRIOR_DEPTH_MODEL: change(prior, model_depth),
        OWN_CELLS_DEPTH: change(own, own_library),
        EXPECTED_OWN: expected(own) - expected(reference),
        DEPTH_MODEL_POISSON: change(empirical, model_depth, poisson_theta),
        VS_OBSERVED: sampled(empirical, control_library, net.theta, n_samples, seed) - control_mean,
        VS_OBSERVED_DEPTH: sampled(empirical, model_depth, net.theta, n_samples, seed)
        - control_mean,
        VS_OBSERVED_OWN_DEPTH: sampled(empirical, own_depth, net.theta, n_samples, seed)
        - control_mean,
        VS_OBSERVED_OWN: sampled(own, own_library, net.theta, n_samples, seed) - control_mean,
    }


def fit(train, seed: int, max_epochs: int) -> sv.SparseVAE:
    scvi.settings.seed = seed
    sv.SparseVAE.setup_anndata(
        train, perturbation_key=KEY, control=CONTROL, combination_delimiter="+"
    )
    model = sv.SparseVAE(train, n_latent=10)
    model.train(max_epochs=max_epochs, **QUIET_TRAINER)
    return model


def score(predictions, cells_log, control_mean) -> pd.DataFrame:
    return sv.evaluate.score_predictions(predictions, cells_log, control_mean, n_boot=0)[METRICS]


def control_part(net: Decoder, counts: np.ndarray, log_values: np.ndarray) -> dict:
    return {"z": net.encode(counts), "library": counts.sum(axis=1), "mean": log_values.mean(0)}


def run_seed(adata, args, seed: int) -> tuple[list[dict], list[dict]]:
    """Train one model; score every variant on the seen singles and on the held-out pairs."""
    pairs = eligible_pairs(adata.obs[KEY].astype(str))
    (split,) = sv.evaluate.make_splits(
        adata, perturbation_key=KEY, control=CONTROL, heldout=pairs, random_state=seed
    )
    train = adata[split.roles.to_numpy() == "train"].copy()
    started = time.perf_counter()
    model = fit(train, seed, args.max_epochs)
    fit_seconds = time.perf_counter() - started
    net = Decoder(model)

    labels = train.obs[KEY].astype(str).to_numpy()
    counts = dense(train)
    control_cells = np.flatnonzero(labels == CONTROL)
    control_counts = counts[control_cells]
    control_log = sv.evaluate.log_normalized(train[control_cells])
    assert len(control_log) == len(control_counts), "a control cell without counts"
    control_mean = control_log.mean(axis=0)
    every_control = np.arange(len(control_cells))
    prior_shifts = model.get_perturbation_shifts()
    log_library = np.log(counts.sum(axis=1))

    singles = [
        name
        for name in model.perturbation_names
        if "+" not in name and (labels == name).sum() >= args.min_cells
    ]
    rows = []
    for index, single in enumerate(singles):
        own_counts = counts[labels == single]
        own_log = sv.evaluate.log_normalized(train[labels == single])
        rng = np.random.default_rng([seed, index])
        order = rng.permutation(len(own_counts))
        first, second = order[: len(order) // 2], order[len(order) // 2 :]
        control_order = rng.permutation(len(control_cells))
        half = len(control_order) // 2
        first_control, second_control = control_order[:half], control_order[half:]
        context = {
            "seed": seed,
            "single": single,
            "n_cells": len(own_counts),
            "depth_ratio": float(
                np.exp(log_library[labels == single].mean() - log_library[control_cells].mean())
            ),
            "n_prior_targets": int((prior_shifts.loc[single] != 0).sum()),
            "fit_seconds": fit_seconds,
        }
        # target: (control cells the predictions start from, own cells they may read, cells
        # scored, control cells of the scored change)
        targets = {
            "all": (every_control, order, order, every_control),
            "half": (every_control, first, second, every_control),
            "independent": (first_control, first, second, second_control),
        }
        for target, (start, readable, scored, scored_control) in targets.items():
            control = control_part(net, control_counts[start], control_log[start])
            predictions = {
                name: model.get_treatment_effect(
                    train[control_cells[start]].copy(),
                    perturbation=single,
                    random_state=seed,
                    source=source,
                ).to_numpy()
                for name, source in ((DEFAULT, "empirical"), (PRIOR, "prior"))
            }
            predictions.update(
                predictions_for(
                    single, model, net, control, own_counts[readable], args.n_samples, seed
                )
            )
            if target != "all":
                predictions[SPLIT_HALF] = own_log[readable].mean(axis=0) - control["mean"]
            scores = score(predictions, own_log[scored], control_log[scored_control].mean(0))
            for name, values in scores.iterrows():
                rows.append({**context, "target": target, "predictor": name, **values.to_dict()})

    # Held-out pairs (never trained): every pair cell scored, from all training control cells.
    control = control_part(net, control_counts, control_log)
    training_changes = {
        name: sv.evaluate.mean_log_expression(train[labels == name]) - control_mean
        for name in model.perturbation_names
        if (labels == name).any()
    }
    log_ratios = {
        name: log_library[labels == name].mean() - log_library[control_cells].mean()
        for name in training_changes
    }
    all_labels = adata.obs[KEY].astype(str).to_numpy()
    pair_rows = []
    for pair in pairs:
        cells = adata[all_labels == pair]
        pair_counts, pair_log = dense(cells), sv.evaluate.log_normalized(cells)
        predictions = {
            name: model.get_treatment_effect(
                train[control_cells].copy(), perturbation=pair, random_state=seed, source=source
            ).to_numpy()
            for name, source in ((DEFAULT, "empirical"), (PRIOR, "prior"))
        }
        predictions.update(
            predictions_for(
                pair,
                model,
                net,
                control,
                pair_counts,
                args.n_samples,
                seed,
                log_ratio=sum(log_ratios[s] for s in pair.split("+")),
            )
        )
        predictions[ADDITIVE] = sum(training_changes[s] for s in pair.split("+"))
        scores = score(predictions, pair_log, control_mean)
        for name, values in scores.iterrows():
            pair_rows.append({"seed": seed, "pair": pair, "predictor": name, **values.to_dict()})
    return rows, pair_rows


def depth_table(adata) -> pd.DataFrame:
    """Log library shift from control within the genes and over all genes, per label."""
    labels = adata.obs[KEY].astype(str).to_numpy()
    frame = pd.DataFrame(
        {
            "panel": np.log(np.asarray(adata.X.sum(axis=1)).ravel()),
            "all_genes": np.log(adata.obs["n_counts_total"].to_numpy(dtype=float)),
        }
    ).groupby(labels)
    out = frame.mean() - frame.mean().loc[CONTROL]
    out["panel_share"] = out["panel"] - out["all_genes"]
    out = out.drop(index=CONTROL)
    for label in out.index:
        parts = label.split("+")
        if len(parts) > 1 and all(part in out.index for part in parts):
            out.loc[label, "sum_of_singles"] = out.loc[parts, "panel"].sum()
            out.loc[label, "max_of_singles"] = out.loc[parts, "panel"].max()
    out["kind"] = ["pair" if "+" in label else "single" for label in out.index]
    return out.sort_values(["kind", "panel"])


def summary(table: pd.DataFrame, targets=TARGETS) -> pd.DataFrame:
    """Mean Pearson per predictor and target (columns: target, metric), and cases scored."""
    parts = {}
    for target in targets:
        grouped = table[table["target"] == target].groupby("predictor")
        part = grouped[METRICS].mean()
        part["n"] = grouped["pearson_all_genes"].count()
        parts[target] = part
    out = pd.concat(parts, axis=1)
    out.columns = [f"{target}: {metric.replace('pearson_', '')}" for target, metric in out.columns]
    return out.reindex([name for name in ORDER if name in out.index])


def report(frame: pd.DataFrame, header: str) -> str:
    """The Markdown report of the rows of one or more runs (the CSV's rows)."""
    table = frame[frame["kind"] == "seen single"].rename(columns={"perturbation": "single"})
    pairs = frame[frame["kind"] == "held-out pair"].rename(columns={"perturbation": "pair"})
    seeds = sorted(frame["seed"].unique())
    n_singles = table["single"].nunique()
    has_target = table["n_prior_targets"] > 0
    n_with_target = len(table.loc[has_target, ["seed", "single"]].drop_duplicates())
    wide = table[table["target"] == "half"].pivot_table(
        index="single", columns="predictor", values="pearson_all_genes"
    )
    shown = [DEFAULT, PRIOR, DEPTH_MODEL, VS_OBSERVED, VS_OBSERVED_DEPTH, SPLIT_HALF]
    per_single = pd.concat(
        [
            table.groupby("single")[["n_cells", "depth_ratio", "n_prior_targets"]].mean(),
            wide[shown],
        ],
        axis=1,
    ).sort_values("depth_ratio")
    default_all = table[(table["target"] == "all") & (table["predictor"] == DEFAULT)]
    depth_corr = np.corrcoef(
        np.abs(np.log(default_all["depth_ratio"])), default_all["pearson_all_genes"]
    )[0, 1]
    depth = depth_table(sv.data.norman2019_subset())
    pair_summary = pairs.groupby("predictor")[METRICS].mean()
    pair_summary["n"] = pairs.groupby("predictor")["pearson_all_genes"].count()
    pair_summary = pair_summary.reindex([n for n in ORDER if n in pair_summary.index])
    per_seed = frame.groupby("seed")[["fit_seconds", "seed_seconds"]].first()
    timing = "; ".join(
        f"seed {seed}: fit {row.fit_seconds:.0f} s, fit and scoring {row.seed_seconds:.0f} s"
        for seed, row in per_seed.iterrows()
    )
    settings = frame[["max_epochs", "n_samples", "min_cells"]].drop_duplicates()
    if len(settings) != 1:
        raise SystemExit(f"the rows mix runs with different settings:\n{settings}")
    max_epochs, n_samples, min_cells = settings.iloc[0]
    text = [
        "# Seen singles in sample: why sVAE+'s prediction misses its own training effects",
        "",
        header,
        "",
        f"Seeds {', '.join(map(str, seeds))}; {max_epochs} epochs; {n_samples} draws per cell; "
        f"one torch thread. Timing: {timing}.",
        "",
        (__doc__ or "").split("Usage::")[0].strip(),
        "",
        "## Seen singles: mean Pearson delta over singles and seeds",
        "",
        f"{n_singles} singles with at least {min_cells} training cells × {len(seeds)} seed(s). "
        "Columns: target, then Pearson over all genes and over the top 20 DE genes; `n`: "
        "(single, seed) cases with a Pearson (a prediction of no change has none: prior shifts "
        "of a single without a target latent, or a decoder whose batch norm erases the shift). "
        "Rows up to the batch-norm one change one thing from the default; the rows below "
        "combine causes.",
        "",
        summary(table).to_markdown(floatfmt=".3f"),
        "",
        f"### Only the {n_with_target} (single, seed) cases whose prior shift has a target",
        "",
        "The prior's mean above skips the singles it predicts unchanged; here every predictor "
        "is averaged over the same cases.",
        "",
        summary(table[has_target]).to_markdown(floatfmt=".3f"),
        "",
        "## Per single (target *half*, Pearson over all genes, mean over seeds)",
        "",
        "`depth_ratio`: geometric mean library size of the single's training cells over "
        "control's. Correlation over (single, seed) of |log depth_ratio| with the default's "
        f"Pearson (target *all*): {depth_corr:.2f}.",
        "",
        per_single.to_markdown(floatfmt=".3f"),
        "",
        "## Depth: library size within the 250 genes vs over all genes",
        "",
        "Mean log library size minus control's, within the 250 genes the model sees (its "
        "library) and over all genes before gene selection (`obs['n_counts_total']`, sequencing "
        "depth); `panel_share`: their difference (the change of the share of a cell's counts "
        "that fall in the 250 genes). For pairs, the sum and the larger of their singles' "
        "panel values (what a depth model could compose).",
        "",
        depth.to_markdown(floatfmt=".3f"),
        "",
        "## Held-out pairs (zero-shot, out of sample): mean over pairs and seeds",
        "",
        f"Pairs {', '.join(sorted(pairs['pair'].unique()))}: never trained. Every cell of the "
        "pair is scored against all training control cells (combinations.py scores half of "
        "them). Shifts and the depth model are the sums of the singles'; the rows that read "
        "'own cells' read the pair's cells (an oracle a zero-shot model does not have).",
        "",
        pair_summary.to_markdown(floatfmt=".3f"),
        "",
    ]
    return "\n".join(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--max-epochs", type=int, default=150)
    parser.add_argument("--n-samples", type=int, default=10)
    parser.add_argument("--min-cells", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="prediction_diagnosis", help="results file stem")
    parser.add_argument(
        "--from-csv",
        nargs="+",
        type=Path,
        default=None,
        help="rebuild the report from the CSVs of earlier runs (parts: e.g. different seeds)",
    )
    args = parser.parse_args()
    from _provenance import provenance

    header = provenance()  # before the runs: the code they run
    RESULTS.mkdir(exist_ok=True)
    if args.from_csv:
        frame = pd.concat([pd.read_csv(path) for path in args.from_csv], ignore_index=True)
        if frame.duplicated(["seed", "kind", "perturbation", "target", "predictor"]).any():
            raise SystemExit("the CSVs share (seed, perturbation) rows: pass each part once")
        names = ", ".join(f"`{path.as_posix()}`" for path in args.from_csv)
        header = (
            f"{header} Rebuilt from the rows of {names} (their commands: the .md files "
            "of the same names)."
        )
    else:
        torch.set_num_threads(args.threads)
        silence_lightning()
        rows = []
        for seed in args.seeds:
            started = time.perf_counter()
            singles, pairs = run_seed(adata=sv.data.norman2019_subset(), args=args, seed=seed)
            seconds = time.perf_counter() - started
            rows += [{**row, "kind": "seen single", "seed_seconds": seconds} for row in singles]
            rows += [{**row, "kind": "held-out pair", "seed_seconds": seconds} for row in pairs]
            print(f"seed {seed} done ({seconds:.0f} s)", flush=True)
        frame = pd.DataFrame(rows)
        frame["perturbation"] = frame["single"].fillna(frame["pair"])
        frame["target"] = frame["target"].fillna("pair")
        frame["fit_seconds"] = frame.groupby("seed")["fit_seconds"].transform("first")
        frame = frame.drop(columns=["single", "pair"]).assign(
            max_epochs=args.max_epochs, n_samples=args.n_samples, min_cells=args.min_cells
        )
        frame.to_csv(RESULTS / f"{args.name}.csv", index=False)
    text = report(frame, header)
    (RESULTS / f"{args.name}.md").write_text(text)
    print(text.split("## Per single")[0].split("## Seen singles")[1])


if __name__ == "__main__":
    main()
