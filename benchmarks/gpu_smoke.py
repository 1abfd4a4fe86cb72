"""Every public entry point once on a GPU: does it run, where do its outputs live, how long.

Trains sVAE+ at its defaults on a small simulation with ``accelerator="gpu"`` (the in-training
rotation included), then calls each getter, tool, held-out and prediction function and the
command line's ``fit`` with ``--accelerator gpu``. Each step prints ``ok`` or the error and its
time; a results table goes to ``--out`` (default ``results/gpu_smoke.md``). Exit status 1 when
any step failed. Without a GPU it says so and exits 2 (nothing to check on a CPU-only machine;
the module's device handling is tested there by ``tests/test_device.py``).

Usage::

    python benchmarks/gpu_smoke.py --out results/gpu_smoke.md
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> int:
    from _provenance import provenance

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu_smoke.md")
    parser.add_argument("--max-epochs", type=int, default=60)
    parser.add_argument(
        "--accelerator", default="gpu", help="'cpu' runs the same steps here (a dry run)"
    )
    args = parser.parse_args()
    import torch

    if args.accelerator == "gpu" and not torch.cuda.is_available():
        print("no CUDA device: nothing to check here")
        return 2
    warnings.filterwarnings("ignore")
    import sparsevae as sv
    from sparsevae._io import write_h5ad
    from sparsevae._quiet import silence_lightning

    silence_lightning()
    rows: list[tuple[str, str, float]] = []

    def step(name, function):
        start = time.perf_counter()
        try:
            value = function()
            status = "ok"
        except Exception as error:  # record and go on: every failure in one run
            value, status = None, f"FAILED: {type(error).__name__}: {error}"[:300]
            traceback.print_exc()
        seconds = time.perf_counter() - start
        rows.append((name, status, seconds))
        print(f"{name:<40} {status:<10} {seconds:7.2f} s", flush=True)
        return value

    adata = sv.data.simulate_regime(
        "realistic", random_state=0, n_perturbations=40, n_genes=300, n_control_cells=300
    )
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(adata, n_latent=20)
    trainer = {"accelerator": args.accelerator, "devices": 1, "enable_progress_bar": False}
    step("train (defaults, rotation)", lambda: model.train(max_epochs=args.max_epochs, **trainer))
    on_gpu = args.accelerator == "gpu"
    step("module on the device", lambda: _assert(next(model.module.parameters()).is_cuda == on_gpu))
    step("get_latent_representation", model.get_latent_representation)
    step("get_mask_probabilities", model.get_mask_probabilities)
    step("get_intervention_targets", model.get_intervention_targets)
    step("get_perturbation_shifts", model.get_perturbation_shifts)
    step("get_target_table", model.get_target_table)
    step("get_latent_gene_loadings", model.get_latent_gene_loadings)
    step("get_marginal_ll", lambda: model.get_marginal_ll(n_mc_samples=20))
    step("get_interventional_nll", lambda: model.get_interventional_nll(n_particles=20))
    step("get_elbo", model.get_elbo)
    step("get_normalized_expression", model.get_normalized_expression)
    names = list(adata.uns["true_targets"].index)
    step("predict", lambda: model.predict(perturbation=f"{names[0]}"))
    step("get_treatment_effect", lambda: model.get_treatment_effect(perturbation=names[0]))
    step("tl.write_results", lambda: sv.tl.write_results(adata, model))
    step(
        "tl.cluster_perturbations",
        lambda: sv.tl.cluster_perturbations(
            adata, perturbation_key="perturbation", control="control"
        ),
    )
    graph = step(
        "evaluate.identifiability_report",
        lambda: sv.evaluate.identifiability_report(
            adata, methods=["svae+", "ivae"], max_epochs=20, train_kwargs=trainer
        ),
    )
    if graph is not None:
        print(graph[["method", "mcc_pearson", "f1"]].to_string())
    step(
        "tl.edge_stability (2 seeds)",
        lambda: sv.tl.edge_stability(
            adata,
            perturbation_key="perturbation",
            control="control",
            seeds=(0, 1),
            max_epochs=20,
            **trainer,
        ),
    )
    with tempfile.TemporaryDirectory() as tmp:
        step("save / load", lambda: sv.SparseVAE.load(_save(model, tmp), adata=adata))
        path = Path(tmp) / "data.h5ad"
        write_h5ad(adata, path)  # pandas 3 string arrays too
        command = [
            sys.executable, "-m", "sparsevae", "fit", str(path), "--perturbation-key",
            "perturbation", "--control", "control", "--max-epochs", "5", "--accelerator",
            args.accelerator, "--out", str(Path(tmp) / "fit"),
        ]  # fmt: skip
        step("CLI fit --accelerator gpu", lambda: subprocess.run(command, check=True))

    name = torch.cuda.get_device_name(0) if on_gpu else "cpu (dry run)"
    lines = [
        "# GPU smoke test",
        "",
        provenance(),
        "",
        f"Device: {name}; torch {torch.__version__}; `python benchmarks/gpu_smoke.py`.",
        "",
        "| step | status | seconds |",
        "|---|---|---|",
        *[f"| {n} | {s} | {t:.2f} |" for n, s, t in rows],
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(s == "ok" for _, s, _ in rows) else 1


def _assert(condition: bool) -> None:
    if not condition:
        raise AssertionError("expected True")


def _save(model, tmp: str) -> str:
    path = str(Path(tmp) / "model")
    model.save(path, overwrite=True)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
