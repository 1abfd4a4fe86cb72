"""Genome scale: 10^6 cells × 2,000 genes × K = 10,000 perturbations, read from a backed h5ad.

Issue 31, items 3 and 4: the path a user takes on a genome-wide screen, measured end to end
on this machine, with scvi-tools' SCVI beside it on the same file.

Data (``--part data``, written once to ``--data-dir``): the ``genome_scale`` regime of
:data:`sparsevae.data.REGIMES` (negative-binomial counts from gene programmes, 30 true latents,
1-3 targets per perturbation, shifts of 1.5 SD) grown to 10,000 perturbations × 99 cells and
10,000 control cells = 1,000,000 cells × 2,000 genes, at a median depth of 1,000 UMIs over those
genes (24% of the entries non-zero, ~4 GB of CSR counts on disk).

Parts, each in a fresh process (so that its peak resident memory, ``VmHWM``, is its own), each
saved to ``results/genome_scale_parts/<part>.json`` when it ends and skipped when already there:

- ``svae``: ``anndata.read_h5ad(path, backed="r")``, ``SparseVAE.setup_anndata``,
  ``SparseVAE(adata, n_latent=30, n_layers=2)`` (the regime's p; two hidden layers as SCVI
  below and as every recorded run, where ``n_layers="auto"`` would now take one for 99 cells
  per perturbation; everything else at its defaults),
  ``model.train(max_epochs=EPOCHS)`` (2 by default: the first samples the masks; the rotation
  and the mask freezing fall in the second, so every phase of a default run is timed), then
  ``get_latent_representation`` over every cell, ``get_mask_probabilities``,
  ``get_intervention_targets``, ``get_target_table``, ``tl.write_results``,
  ``get_interventional_nll`` on 2,000 cells and ``model.save``; seconds and the peak memory
  after each step.
- ``scvi``: SCVI on the same backed file with the same networks (2 × 128, 30 latents, no
  dropout, batch normalisation, negative binomial with one dispersion per gene, observed
  library size), batch size (256) and epochs; its latent pass over every cell.

Both train with ``--threads`` torch threads (default 1) on 90% of the cells (the packages'
default split). The default number of epochs at this size (scvi-tools' rule, which sparsevae
follows) is 8; the full default fit's time is projected from the measured epochs (the
measured run's first epoch, one rotation epoch, the rest at the measured rate), not measured.

Usage::

    python benchmarks/genome_scale.py --part data
    python benchmarks/genome_scale.py --part svae
    python benchmarks/genome_scale.py --part scvi
    python benchmarks/genome_scale.py --merge-only
    python benchmarks/genome_scale.py --quick        # 20,000 cells, nothing saved

CPU only unless a GPU is lent (then ``--accelerator gpu``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from _memory import peak_rss_gib

RESULTS = Path(__file__).parent / "results"
PARTS = RESULTS / "genome_scale_parts"
OUT = RESULTS / "genome_scale.md"

SIZE = {
    "n_perturbations": 10_000,
    "n_cells_per_perturbation": 99,
    "n_control_cells": 10_000,
    "library_size": 1_000.0,
}
QUICK_SIZE = {**SIZE, "n_perturbations": 400, "n_cells_per_perturbation": 45, "n_genes": 500}
N_LATENT, BATCH_SIZE, EPOCHS, NLL_CELLS = 30, 256, 2, 2_000
ARCHITECTURE = {"n_hidden": 128, "n_layers": 2, "n_latent": N_LATENT, "dropout_rate": 0.0}


def data_path(data_dir: Path, quick: bool) -> Path:
    return data_dir / ("genome_scale_quick.h5ad" if quick else "genome_scale_1M.h5ad")


# ---- parts, each in a fresh process ---------------------------------------------------------
def write_data(path: str, quick: bool) -> dict:
    import sparsevae as sv
    from sparsevae._io import write_h5ad

    start = time.perf_counter()
    adata = sv.data.simulate_regime("genome_scale", **(QUICK_SIZE if quick else SIZE))
    simulate_s = time.perf_counter() - start
    del adata.obsm["z_true"]  # 240 MB the benchmark does not read; the true graph is in uns
    start = time.perf_counter()
    write_h5ad(adata, path)
    return {
        "part": "data",
        "cells": adata.n_obs,
        "genes": adata.n_vars,
        "perturbations": int(adata.obs["perturbation"].nunique()) - 1,
        "nonzero_fraction": adata.X.nnz / (adata.n_obs * adata.n_vars),
        "median_umis": float(np.median(np.asarray(adata.X.sum(axis=1)).ravel())),
        "file_gib": Path(path).stat().st_size / 2**30,
        "simulate_s": simulate_s,
        "write_s": time.perf_counter() - start,
        "peak_rss_gib": peak_rss_gib(),
    }


class _Steps:
    """Seconds and peak memory after each step of a part."""

    def __init__(self):
        self.row: dict = {}

    def __call__(self, name: str, function, *args, **kwargs):
        start = time.perf_counter()
        value = function(*args, **kwargs)
        self.row[f"{name}_s"] = time.perf_counter() - start
        self.row[f"{name}_peak_gib"] = peak_rss_gib()
        print(f"  {name}: {self.row[f'{name}_s']:.1f} s, peak {peak_rss_gib():.2f} GiB", flush=True)
        return value


def _epoch_timer():
    from lightning.pytorch.callbacks import Callback

    class EpochTimer(Callback):
        def __init__(self):
            self.seconds: list[float] = []
            self.rotation_epoch = None

        def on_train_epoch_start(self, trainer, pl_module):
            # sVAE+ rotates its latent space once, at the start of this epoch (SCVI: never)
            self.rotation_epoch = getattr(pl_module, "rotate_latents_at", None)
            self._start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


def _start(threads: int):
    import warnings

    import torch

    from sparsevae._quiet import silence_lightning

    torch.set_num_threads(threads)
    silence_lightning()
    warnings.filterwarnings("ignore")


def run_svae(path: str, epochs: int, threads: int, accelerator: str) -> dict:
    _start(threads)
    import anndata
    import scvi
    import torch

    import sparsevae as sv
    from sparsevae._quiet import QUIET_TRAINER
    from sparsevae.model._model import default_max_epochs

    scvi.settings.seed = 0
    step = _Steps()
    adata = step("read_backed", anndata.read_h5ad, path, backed="r")
    step(
        "setup_anndata",
        sv.SparseVAE.setup_anndata,
        adata,
        perturbation_key="perturbation",
        control="control",
    )
    model = step("model", sv.SparseVAE, adata, n_latent=N_LATENT, n_layers=2)
    timer = _epoch_timer()
    plan = {"callbacks": [timer], "accelerator": accelerator, **QUIET_TRAINER}
    step("train", model.train, max_epochs=epochs, **plan)
    module = model.module
    latent = step("get_latent_representation", model.get_latent_representation)
    pi = step("get_mask_probabilities", model.get_mask_probabilities)
    step("get_intervention_targets", model.get_intervention_targets)
    table = step("get_target_table", model.get_target_table)
    step("write_results", sv.tl.write_results, adata, model)
    cells = np.random.default_rng(0).choice(adata.n_obs, size=min(NLL_CELLS, adata.n_obs))
    nll = step("get_interventional_nll", model.get_interventional_nll, indices=np.sort(cells))
    folder = Path(path).with_suffix(".model")
    step("save", model.save, folder, overwrite=True)
    truth = adata.uns["true_targets"]
    edges = int((pi.to_numpy() > 0.5).sum())
    return {
        "part": "svae",
        "model": "SparseVAE",
        "cells": adata.n_obs,
        "genes": adata.n_vars,
        "K": len(model.perturbation_names),
        "p": module.n_latent,
        "threads": torch.get_num_threads(),
        "accelerator": accelerator,
        "epochs": epochs,
        "default_epochs": default_max_epochs(adata.n_obs),
        "epoch_seconds": timer.seconds,
        "rotation_epoch": timer.rotation_epoch,
        "latent_shape": list(latent.shape),
        "edges_after_training": edges,
        "true_edges": int(truth.to_numpy().sum()),
        "target_table_rows": len(table),
        "nll_mean": float(np.mean(nll)),
        "prior_parameters": sum(p.numel() for p in module.prior.parameters()),
        "peak_rss_gib": peak_rss_gib(),
        **step.row,
    }


def run_scvi(path: str, epochs: int, threads: int, accelerator: str) -> dict:
    _start(threads)
    import anndata
    import scvi
    import torch

    from sparsevae._quiet import QUIET_TRAINER

    scvi.settings.seed = 0
    step = _Steps()
    adata = step("read_backed", anndata.read_h5ad, path, backed="r")
    step("setup_anndata", scvi.model.SCVI.setup_anndata, adata)
    model = step(
        "model",
        scvi.model.SCVI,
        adata,
        gene_likelihood="nb",
        dispersion="gene",
        **ARCHITECTURE,
    )
    timer = _epoch_timer()
    plan = {"callbacks": [timer], "accelerator": accelerator, **QUIET_TRAINER}
    step("train", model.train, max_epochs=epochs, batch_size=BATCH_SIZE, **plan)
    step("get_latent_representation", model.get_latent_representation)
    return {
        "part": "scvi",
        "model": "SCVI",
        "cells": adata.n_obs,
        "genes": adata.n_vars,
        "p": N_LATENT,
        "threads": torch.get_num_threads(),
        "accelerator": accelerator,
        "epochs": epochs,
        "epoch_seconds": timer.seconds,
        "peak_rss_gib": peak_rss_gib(),
        **step.row,
    }


def _isolated(function, *args) -> dict:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


# ---- merge ------------------------------------------------------------------------------------
def _load(name: str) -> dict | None:
    path = PARTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def merge(command_line: str) -> str:
    import pandas as pd
    from _provenance import cpu_model, provenance

    data, svae, scvi = _load("data"), _load("svae"), _load("scvi")
    lines = [
        "# Genome scale: 10^6 cells × 2,000 genes × K = 10,000, from a backed h5ad",
        "",
        provenance(),
        "",
        f"Parts: `{command_line}`. Machine: {cpu_model()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; one torch thread per model unless the table says "
        "otherwise. See `benchmarks/genome_scale.py` for what each part does.",
        "",
    ]
    if data:
        lines += [
            f"Data: {data['cells']:,} cells × {data['genes']:,} genes, {data['perturbations']:,} "
            f"perturbations, median {data['median_umis']:.0f} UMIs per cell, "
            f"{data['nonzero_fraction']:.1%} non-zero, {data['file_gib']:.2f} GiB on disk "
            f"(simulated in {data['simulate_s']:.0f} s, written in {data['write_s']:.0f} s).",
            "",
        ]
    rows = []
    for row in (svae, scvi):
        if row is None:
            continue
        seconds = row["epoch_seconds"]
        rotation = row.get("rotation_epoch")
        rows.append(
            {
                "model": row["model"],
                "threads": row["threads"],
                "epochs": row["epochs"],
                "first epoch s": seconds[0],
                "later training epochs s": ", ".join(
                    f"{s:.0f}" for e, s in enumerate(seconds) if e > 0 and e != rotation
                )
                or "-",
                "rotation epoch s": seconds[rotation] if rotation is not None else float("nan"),
                "latent pass s": row["get_latent_representation_s"],
                "peak RSS GiB (whole run)": row["peak_rss_gib"],
                "peak RSS GiB after training": row["train_peak_gib"],
            }
        )
    if rows:
        table = pd.DataFrame(rows)
        lines += ["## Training from the backed file", "", table.round(3).to_markdown(index=False)]
        lines.append("")
    if svae:
        seconds = svae["epoch_seconds"]
        rotation = svae.get("rotation_epoch")
        training = [s for e, s in enumerate(seconds) if e != rotation]
        per_epoch = float(np.median(training))  # the first epoch when it is the only one
        rotation_s = seconds[rotation] if rotation is not None and rotation < len(seconds) else 0
        default = svae["default_epochs"]
        projected = rotation_s + (default - 1) * per_epoch
        steps = [
            "setup_anndata", "model", "get_latent_representation", "get_mask_probabilities",
            "get_intervention_targets", "get_target_table", "write_results",
            "get_interventional_nll", "save",
        ]  # fmt: skip
        lines += [
            "## sVAE+: the user's path, step by step",
            "",
            f"- Peak memory of the whole sVAE+ run (reading, setup, training, every getter, "
            f"writing results, saving): **{svae['peak_rss_gib']:.2f} GiB** (acceptance: under "
            "4 GiB).",
            f"- K = {svae['K']:,} perturbations, p = {svae['p']}; the prior holds "
            f"{svae['prior_parameters']:,} parameters.",
            f"- The default number of epochs at {svae['cells']:,} cells is {default}; a default "
            f"fit would take about **{projected / 60:.0f} minutes** here (projected: "
            f"{default - 1} training epochs at {per_epoch:.0f} s and the rotation epoch, "
            f"{rotation_s:.0f} s, as measured).",
            f"- After {svae['epochs']} epochs: {svae['edges_after_training']:,} edges "
            f"(true graph: {svae['true_edges']:,}); not a quality figure (a default run has "
            f"{default} epochs; the regime benchmark scores the graph).",
            "",
            "| step | seconds | peak GiB after it |",
            "|---|---|---|",
        ]
        for name in steps:
            lines.append(f"| {name} | {svae[name + '_s']:.1f} | {svae[name + '_peak_gib']:.2f} |")
        lines.append("")
    if svae and scvi:
        ratio = svae["epoch_seconds"][0] / scvi["epoch_seconds"][0]
        lines += [
            f"sVAE+ / SCVI time of the first epoch (the one training epoch both runs have "
            f"without sVAE+'s rotation): **{ratio:.2f}x** ({svae['epoch_seconds'][0]:.0f} s vs "
            f"{scvi['epoch_seconds'][0]:.0f} s); peak memory {svae['peak_rss_gib']:.2f} vs "
            f"{scvi['peak_rss_gib']:.2f} GiB.",
            "",
        ]
    text = "\n".join(lines)
    OUT.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("data", "svae", "scvi"), action="append")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/sparsevae_genome_scale"))
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--merge-only", action="store_true")
    parser.add_argument("--quick", action="store_true", help="small data, nothing saved")
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    path = data_path(args.data_dir, args.quick)
    if not args.merge_only:
        for part in args.part or ["data", "svae", "scvi"]:
            saved = PARTS / f"{part}.json"
            if saved.exists() and not args.quick:
                print(f"{part}: already measured", flush=True)
                continue
            if part != "data" and not path.exists():
                raise SystemExit(f"{path} is missing: run --part data first")
            print(f"{part} ...", flush=True)
            if part == "data":
                row = _isolated(write_data, str(path), args.quick)
            else:
                function = run_svae if part == "svae" else run_scvi
                row = _isolated(function, str(path), args.epochs, args.threads, args.accelerator)
            print(json.dumps({k: v for k, v in row.items() if not k.endswith("_gib")})[:400])
            if not args.quick:
                PARTS.mkdir(parents=True, exist_ok=True)
                saved.write_text(json.dumps(row, indent=1))
    if not args.quick:
        print(merge("python benchmarks/genome_scale.py --part data|svae|scvi"))


if __name__ == "__main__":
    main()
