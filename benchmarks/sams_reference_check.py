"""SAMS-VAE faithfulness check: reference implementation vs sparsevae, same data and training.

No published SAMS-VAE figure can be reproduced here (the full Norman data is not available; the
reference's simulation has no published number; docs/sams_vae.md). So
the check is: the reference code (insitro/sams-vae at the local mirror's HEAD) and
``sv.SparseVAE(..., prior="sams-vae")``, trained the same way on the same simulated counts,
should recover the same graph and latents within seed noise.

Data: ``simulate_sams(seed=s)`` (``benchmarks/_sams_simulation.py``, the reference's generator
with Poisson counts), its training split (500 cells per perturbation, 50,000 cells; optionally
subsampled with ``--cells-per-perturbation``), 100 perturbations, no control cells, 15 true
latents. Latent metrics on the held-out test split (100 new cells per perturbation, 10,000) and
on the training cells.

Both implementations (settings in ``SETTINGS``):

- mean-field guide of the embeddings, encoder of z_basal sees the latent offset (reference
  defaults), ``mask_prior_prob`` 0.01 and ``embedding_prior_scale`` 1 (the reference's demo and
  Norman configs), mask logits start at 0 (pi = 0.5), q(e) means at 0, scales at 1, Gumbel
  temperature 1;
- negative binomial likelihood with the observed library size (reference ``library_nb``), one
  hidden layer of ``N_HIDDEN`` units in encoder and decoder, no batch norm, no dropout;
- Adam, lr 1e-3 for everything, eps 1e-8, weight decay 1e-6 (the reference's
  ``PerturbationLightningModule`` defaults), batch 512, the same number of steps
  (``--epochs`` passes of ceil(n / 512) minibatches; default 120 = 11,760 steps), no KL
  warm-up, no gradient clipping, one particle (the reference's default ``n_particles`` is 5).

Differences that remain (ours cannot be configured to match; none is in the SAMS-VAE prior
itself): the networks are scvi-tools' (ReLU, log1p input) where the reference's are
LeakyReLU MLPs on log-standardised input; the inverse dispersion starts at ``randn`` (the
reference: 1); ours computes KL(q(m) || p(m)) and KL(q(e) || p(e)) in closed form and the
local KL as KL(q(z_basal) || N(0, I)), the reference scores one draw of each (same
expectation); ours' minibatches come from scvi-tools' loader, the reference's from a
permutation drawn here.

Seeds 0-2 at 50 epochs (4,900 steps), mean ± sd, ours / reference: F1 (z-matched)
0.320 ± 0.015 / 0.332 ± 0.008, MCC (test) 0.444 ± 0.011 / 0.445 ± 0.011, edges 844 / 811,
last-epoch loss 158.30 / 157.94 (about 80% of the mask probabilities still within 0.2-0.8).

Reference: its ``SAMSVAEModel`` + ``SAMSVAEMeanFieldNormalGuide`` + ``SAMSVAE_ELBOLossModule``
trained by a plain torch loop (its Lightning module's ``training_step`` is one call of
``loss_module.loss``; the loop makes that call). The encoder input is ``log_standardize`` (the
demo and Norman setting) with the statistics built here as the reference's
``ObservationNormalizationStatistics`` from its own ``batch_log_mean`` / ``batch_log_std`` on the
training cells. Its latents are the guide's means: ``z = E[q(z_basal | x, offset)] + offset``
with ``offset = D (mode(q(m)) * E[q(e)])``. sparsevae: ``get_latent_representation`` (the same
readout) and ``get_mask_probabilities``.

Metrics: edges are ``q(m) > 0.5``. ``*_zmatch``: latents of the model matched to the true ones
by the best assignment on |corr(z_learned, z_true)| on the test cells, the mask's columns
permuted accordingly and compared entry by entry with the true mask (``sv.metrics.graph_scores``;
rows aligned by perturbation name). ``*_ref``: the reference's own ``get_mask_stats`` (its
latents matched to maximise true positives, as its training callback logs). MCC:
``sv.metrics.mean_correlation_coefficient(z_true, z)``.

Pyro (``pyro.distributions`` GammaPoisson / RelaxedBernoulliStraightThrough) is needed by the
reference only, and is not a sparsevae dependency: install it outside the venv with
``pip install --target /tmp/sams_ref_pkgs pyro-ppl pyro-api opt_einsum --no-deps``; the script
puts that folder on ``sys.path``.

Usage::

    python benchmarks/sams_reference_check.py --part reference --seeds 0 1 2
    python benchmarks/sams_reference_check.py --part ours --seeds 0 1 2
    python benchmarks/sams_reference_check.py --merge-only      # summary from the parts

Each (implementation, seed) is saved to ``results/sams_reference_check_parts/`` and skipped when
there (``--redo`` recomputes); every run rewrites ``results/sams_reference_check.md`` from all
parts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PARTS = RESULTS / "sams_reference_check_parts"
SUMMARY = RESULTS / "sams_reference_check.md"
MIRROR = Path("/work/.mirror/insitro+sams-vae/repo")
PYRO_DIR = Path("/tmp/sams_ref_pkgs")
INSTALL_HINT = (
    "The reference needs pyro-ppl (not a sparsevae dependency). Install it for this check only, "
    "outside the venv:\n    pip install --target /tmp/sams_ref_pkgs pyro-ppl pyro-api "
    "opt_einsum --no-deps\n(this script puts /tmp/sams_ref_pkgs on sys.path)."
)

N_LATENT = 15
N_HIDDEN = 128
BATCH_SIZE = 512
LR = 1e-3
WEIGHT_DECAY = 1e-6
ADAM_EPS = 1e-8
N_PARTICLES = 1
MASK_PRIOR_PROB = 0.01
EMBEDDING_PRIOR_SCALE = 1.0
SETTINGS = {
    "n_latent": N_LATENT,
    "n_hidden": N_HIDDEN,
    "n_layers": 1,
    "batch_size": BATCH_SIZE,
    "lr": LR,
    "weight_decay": WEIGHT_DECAY,
    "adam_eps": ADAM_EPS,
    "n_particles": N_PARTICLES,
    "mask_prior_prob": MASK_PRIOR_PROB,
    "embedding_prior_scale": EMBEDDING_PRIOR_SCALE,
    "guide": "mean_field",
    "mean_field_encoder": False,
    "likelihood": "library_nb",
}


# ---- data ---------------------------------------------------------------------------------
def load_data(seed: int, cells_per_perturbation: int | None):
    """The simulation's train split (optionally subsampled per perturbation) and test split."""
    sys.path.insert(0, str(HERE))
    from _sams_simulation import simulate_sams

    adata = simulate_sams(seed=seed, noise="poisson")
    train = adata[adata.obs["split"] == "train"].copy()
    if cells_per_perturbation is not None:
        rng = np.random.default_rng(seed)
        keep = np.concatenate(
            [
                rng.choice(np.flatnonzero(codes), cells_per_perturbation, replace=False)
                for codes in (
                    train.obs["perturbation"].to_numpy() == name
                    for name in train.obs["perturbation"].cat.categories
                )
            ]
        )
        train = train[np.sort(keep)].copy()
    test = adata[adata.obs["split"] == "test"].copy()
    truth = adata.uns["sams_simulation"]
    true_mask = pd.DataFrame(
        truth["mask"].astype(int),
        index=list(truth["perturbation_names"]),
        columns=[f"true_{j}" for j in range(truth["mask"].shape[1])],
    )
    return train, test, true_mask


def n_steps(n_cells: int, epochs: int) -> int:
    return epochs * -(-n_cells // BATCH_SIZE)


# ---- metrics ------------------------------------------------------------------------------
def score(true_mask, pi, z_true_test, z_test, z_true_train, z_train, get_mask_stats) -> dict:
    import sparsevae as sv

    pi = pi.loc[true_mask.index]
    zmatch = sv.metrics.graph_scores(true_mask, pi, z_true_test, z_test)
    ref_stats, _ = get_mask_stats(true_mask.to_numpy() > 0, pi.to_numpy() > 0.5)
    return {
        "f1_zmatch": zmatch["f1"],
        "precision_zmatch": zmatch["precision"],
        "recall_zmatch": zmatch["recall"],
        "f1_ref": float(ref_stats["f1"]),
        "precision_ref": float(ref_stats["precision"]),
        "recall_ref": float(ref_stats["recall"]),
        "n_edges_found": int((pi.to_numpy() > 0.5).sum()),
        "n_edges_true": int(true_mask.to_numpy().sum()),
        "frac_pi_undecided": float(((pi > 0.2) & (pi < 0.8)).to_numpy().mean()),
        "mcc_test": sv.metrics.mean_correlation_coefficient(z_true_test, z_test),
        "mcc_train": sv.metrics.mean_correlation_coefficient(z_true_train, z_train),
    }


def reference_get_mask_stats():
    """The reference's ``get_mask_stats`` (needs no pyro; scipy only)."""
    with tempfile.TemporaryDirectory() as tmp:
        extract_reference(Path(tmp))
        sys.path.insert(0, tmp)
        try:
            from sams_vae.analysis.simulation_metrics import get_mask_stats
        finally:
            sys.path.remove(tmp)
    return get_mask_stats


# ---- the reference ------------------------------------------------------------------------
def reference_commit() -> str:
    return subprocess.run(
        ["git", "-C", str(MIRROR), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def extract_reference(target: Path) -> None:
    """``git archive HEAD sams_vae`` of the mirror into ``target``.

    Only the package: one notebook blob of the mirror is missing, so archiving the whole tree
    fails.
    """
    archive = subprocess.run(
        ["git", "-C", str(MIRROR), "archive", "HEAD", "sams_vae"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)


def import_reference(target: Path):
    if PYRO_DIR.is_dir() and str(PYRO_DIR) not in sys.path:
        sys.path.insert(0, str(PYRO_DIR))
    try:
        import pyro.distributions  # noqa: F401
    except ImportError as error:
        raise SystemExit(f"pyro is not importable ({error}).\n{INSTALL_HINT}") from error
    extract_reference(target)
    sys.path.insert(0, str(target))
    # sams_vae.models.sams_vae pulls in sams_vae.data (anndata, pytorch_lightning: both present)
    from sams_vae.analysis.simulation_metrics import get_mask_stats
    from sams_vae.data.utils.batch_statistics import batch_log_mean, batch_log_std
    from sams_vae.data.utils.perturbation_datamodule import ObservationNormalizationStatistics
    from sams_vae.models.sams_vae import (
        SAMSVAE_ELBOLossModule,
        SAMSVAEMeanFieldNormalGuide,
        SAMSVAEModel,
    )

    return {
        "Model": SAMSVAEModel,
        "Guide": SAMSVAEMeanFieldNormalGuide,
        "Loss": SAMSVAE_ELBOLossModule,
        "get_mask_stats": get_mask_stats,
        "Stats": ObservationNormalizationStatistics,
        "batch_log_mean": batch_log_mean,
        "batch_log_std": batch_log_std,
    }


def dosages(adata, names) -> np.ndarray:
    """One-hot D (cells × perturbations), columns in ``names`` order."""
    codes = pd.Categorical(adata.obs["perturbation"], categories=names).codes
    return np.eye(len(names), dtype=np.float32)[codes]


def run_reference(seed: int, epochs: int, cells_per_perturbation: int | None) -> dict:
    import torch

    torch.set_num_threads(1)
    train, test, true_mask = load_data(seed, cells_per_perturbation)
    names = list(true_mask.index)
    with tempfile.TemporaryDirectory() as tmp:
        ref = import_reference(Path(tmp))
        X = torch.from_numpy(np.asarray(train.X, dtype=np.float32))
        D = torch.from_numpy(dosages(train, names))
        library = X.sum(1)  # the reference's PerturbationDataset: X.sum(1)
        log_mean = ref["batch_log_mean"](X)
        stats = ref["Stats"](log_x_mean=log_mean, log_x_std=ref["batch_log_std"](X, log_mean))
        torch.manual_seed(seed)
        model = ref["Model"](
            n_latent=N_LATENT,
            n_treatments=len(names),
            n_phenos=X.shape[1],
            mask_prior_prob=MASK_PRIOR_PROB,
            embedding_prior_scale=EMBEDDING_PRIOR_SCALE,
            likelihood_key="library_nb",
            decoder_n_layers=1,
            decoder_n_hidden=N_HIDDEN,
        )
        guide = ref["Guide"](
            n_latent=N_LATENT,
            n_treatments=len(names),
            n_phenos=X.shape[1],
            basal_encoder_n_layers=1,
            basal_encoder_n_hidden=N_HIDDEN,
            basal_encoder_input_normalization="log_standardize",
            x_normalization_stats=stats,
        )
        loss_module = ref["Loss"](model=model, guide=guide)
        D_obs_counts = D.sum(0)  # the reference's get_train_perturbation_obs_counts
        optimizer = torch.optim.Adam(
            loss_module.parameters(), lr=LR, eps=ADAM_EPS, weight_decay=WEIGHT_DECAY
        )
        rng = np.random.default_rng(seed)
        n = X.shape[0]
        losses, steps = [], 0
        start = time.perf_counter()
        loss_module.train()
        for _ in range(epochs):
            order = torch.from_numpy(rng.permutation(n))
            epoch_losses = []
            for batch in order.split(BATCH_SIZE):
                loss, _ = loss_module.loss(
                    X=X[batch],
                    D=D[batch],
                    D_obs_counts=D_obs_counts,
                    condition_values={"library_size": library[batch]},
                    n_particles=N_PARTICLES,
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                epoch_losses.append(loss.item())
                steps += 1
            losses.append(float(np.mean(epoch_losses)))
        train_seconds = time.perf_counter() - start
        if not np.isfinite(losses[-1]):
            raise FloatingPointError(f"reference loss is {losses[-1]}")

        loss_module.eval()
        with torch.no_grad():
            logits = guide.param_dict["q_mask_logits"]
            pi = pd.DataFrame(torch.sigmoid(logits).numpy(), index=names)
            offsets = (logits > 0).float() * guide.param_dict["q_E_loc"]  # mode(m) * E[e]

            def latents(adata):
                x = torch.from_numpy(np.asarray(adata.X, dtype=np.float32))
                offset = torch.from_numpy(dosages(adata, names)) @ offsets
                inputs = torch.cat([guide.normalization_module(x), offset], dim=-1)
                return (guide.z_basal_encoder(inputs).loc + offset).numpy()

            z_test, z_train = latents(test), latents(train)
        metrics = score(
            true_mask, pi, test.obsm["z_true"], z_test, train.obsm["z_true"], z_train,
            ref["get_mask_stats"],
        )  # fmt: skip
    return {
        "implementation": "reference",
        "seed": seed,
        "n_train_cells": n,
        "epochs": epochs,
        "steps": steps,
        **metrics,
        "train_seconds": train_seconds,
        "loss_last_epoch": losses[-1],
        "code": f"insitro/sams-vae@{reference_commit()}",
    }


# ---- sparsevae ----------------------------------------------------------------------------
def run_ours(seed: int, epochs: int, cells_per_perturbation: int | None) -> dict:
    import scvi
    import torch

    import sparsevae as sv

    torch.set_num_threads(1)
    train, test, true_mask = load_data(seed, cells_per_perturbation)
    get_mask_stats = reference_get_mask_stats()
    scvi.settings.seed = seed
    sv.SparseVAE.setup_anndata(train, perturbation_key="perturbation", control=None)
    model = sv.SparseVAE(
        train,
        n_latent=N_LATENT,
        n_layers=1,
        n_hidden=N_HIDDEN,
        dropout_rate=0.0,
        use_batch_norm="none",
        prior="sams-vae",
        prior_kwargs={
            "mask_prior_prob": MASK_PRIOR_PROB,
            "embedding_prior_scale": EMBEDDING_PRIOR_SCALE,
            "guide": "mean_field",
            "mean_field_encoder": False,
        },
    )
    start = time.perf_counter()
    model.train(
        max_epochs=epochs,
        batch_size=BATCH_SIZE,
        lr=LR,
        lr_prior=LR,
        n_epochs_kl_warmup=None,
        freeze_masks_at=None,
        train_size=1.0,
        plan_kwargs={"eps": ADAM_EPS, "weight_decay": WEIGHT_DECAY},
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    train_seconds = time.perf_counter() - start
    steps = int(model.trainer.global_step) if getattr(model, "trainer", None) else None
    pi = model.get_mask_probabilities()
    z_train = model.get_latent_representation()
    z_test = model.get_latent_representation(test)
    metrics = score(
        true_mask, pi, test.obsm["z_true"], z_test, train.obsm["z_true"], z_train, get_mask_stats
    )
    history = model.history.get("elbo_train")
    loss_last = float(history.iloc[-1, 0]) if history is not None else float("nan")
    return {
        "implementation": "ours",
        "seed": seed,
        "n_train_cells": train.n_obs,
        "epochs": epochs,
        "steps": steps if steps is not None else n_steps(train.n_obs, epochs),
        **metrics,
        "train_seconds": train_seconds,
        "loss_last_epoch": loss_last,
        "code": f"sparsevae {sv.__version__}",
    }


# ---- summary ------------------------------------------------------------------------------
COLUMNS = {
    "f1_zmatch": "F1 (z-matched)",
    "precision_zmatch": "precision (z-matched)",
    "recall_zmatch": "recall (z-matched)",
    "f1_ref": "F1 (ref. get_mask_stats)",
    "n_edges_found": "edges found",
    "n_edges_true": "true edges",
    "mcc_test": "MCC (test cells)",
    "mcc_train": "MCC (train cells)",
    "frac_pi_undecided": "frac. 0.2<pi<0.8",
    "loss_last_epoch": "train loss, last epoch",
    "train_seconds": "train time (s)",
}


def write_summary(commands: list[str]) -> None:
    from _provenance import provenance

    files = sorted(PARTS.glob("*.csv"))
    if not files:
        raise SystemExit("no parts yet")
    frame = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    lines = [
        "# SAMS-VAE: reference implementation vs sparsevae on the reference's simulation",
        "",
        provenance(),
        "",
        "Parts were written by: " + "; ".join(f"`{c}`" for c in commands) + ".",
        "",
        "Written by `benchmarks/sams_reference_check.py` (its docstring has the full protocol). "
        "No published SAMS-VAE number exists for this simulation; the check is that both "
        "implementations, trained the same way on the same data, agree within seed noise.",
        "",
        "Mean ± sd over seeds (data seed = training seed); one row per implementation.",
        "",
    ]
    header = ["implementation", "seeds", "cells", "steps", *COLUMNS.values()]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for impl, group in frame.groupby("implementation", sort=False):
        cells = [
            impl,
            " ".join(str(s) for s in sorted(group["seed"])),
            "/".join(str(v) for v in sorted(set(group["n_train_cells"]))),
            "/".join(str(v) for v in sorted(set(group["steps"]))),
        ]
        for col in COLUMNS:
            values = group[col].astype(float)
            digits = 0 if col in ("n_edges_found", "n_edges_true", "train_seconds") else 3
            sd = values.std(ddof=1) if len(values) > 1 else float("nan")
            cells.append(f"{values.mean():.{digits}f} ± {sd:.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Per seed:",
        "",
        frame.drop(columns=["code", "command"], errors="ignore").to_markdown(
            index=False, floatfmt=".3f"
        ),
    ]
    lines += [
        "",
        "Settings (both): " + ", ".join(f"{k}={v}" for k, v in SETTINGS.items()) + ". "
        "Code: " + "; ".join(sorted(set(frame["code"]))) + ".",
        "",
    ]
    SUMMARY.write_text("\n".join(lines))
    print(SUMMARY.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["reference", "ours", "both"], default="both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=120, help="passes over the training cells")
    parser.add_argument(
        "--cells-per-perturbation", type=int, default=None,
        help="subsample the training split (default: all 500 per perturbation)",
    )  # fmt: skip
    parser.add_argument("--merge-only", action="store_true", help="only write the summary")
    parser.add_argument("--redo", action="store_true", help="recompute parts already saved")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from _provenance import command

    PARTS.mkdir(parents=True, exist_ok=True)
    parts = ["reference", "ours"] if args.part == "both" else [args.part]
    if not args.merge_only:
        for seed in args.seeds:
            for impl in parts:
                path = PARTS / f"{impl}_seed{seed}.csv"
                if path.exists() and not args.redo:
                    print(f"{path.name} exists, skipped")
                    continue
                run = run_reference if impl == "reference" else run_ours
                row = run(seed, args.epochs, args.cells_per_perturbation)
                row["command"] = command()
                pd.DataFrame([row]).to_csv(path, index=False)
                print({k: v for k, v in row.items() if k != "command"}, flush=True)
    commands = sorted(
        {str(c) for f in PARTS.glob("*.csv") for c in pd.read_csv(f).get("command", [])}
    )
    write_summary(commands)


if __name__ == "__main__":
    main()
