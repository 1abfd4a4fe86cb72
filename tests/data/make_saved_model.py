"""Write the saved model that ``tests/test_saved_model.py`` loads, and its expected outputs.

A model saved by one version must keep loading, with the same outputs, in later versions: the
test fails when a change breaks that (renamed parameters, a changed registry, other defaults).
Run this only to add a model for a new version (a new folder), never to make a failing test
pass by overwriting an old one::

    PYTHONPATH=src python tests/data/make_saved_model.py

Writes ``tests/data/saved_model_<version>/``: the scvi-tools save (``model.pt`` and
``adata.h5ad``), ``expected_latent.npy``, ``expected_pi.csv``, ``expected_shift.csv`` and
``versions.json``. The data are the simulator's with the parameters in ``SIMULATION``, so the
test can also rebuild them.
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import numpy as np
import scvi
import torch

import sparsevae as sv
from sparsevae._quiet import QUIET_TRAINER, silence_lightning

HERE = Path(__file__).parent
VERSION = sv.__version__
SIMULATION = {
    "n_perturbations": 6,
    "n_cells_per_perturbation": 30,
    "n_latent": 4,
    "n_genes": 24,
    "decoder_width": 12,
    "random_state": 0,
}
MODEL = {"n_latent": 4, "n_hidden": 16}


def saved_model_dir(sparsevae_version: str = VERSION) -> Path:
    return HERE / f"saved_model_{sparsevae_version}"


def main() -> None:
    torch.set_num_threads(1)
    silence_lightning()
    out = saved_model_dir()
    adata = sv.data.simulate_sparse_shift(**SIMULATION)
    scvi.settings.seed = 0
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(adata, **MODEL)
    model.train(max_epochs=5, batch_size=64, **QUIET_TRAINER)
    model.save(out, save_anndata=True, overwrite=True)
    np.save(out / "expected_latent.npy", model.get_latent_representation())
    model.get_mask_probabilities().to_csv(out / "expected_pi.csv")
    model.get_perturbation_shifts().to_csv(out / "expected_shift.csv")
    versions = {
        "sparsevae": VERSION,
        "scvi-tools": version("scvi-tools"),
        "torch": version("torch"),
        "anndata": version("anndata"),
        "simulation": SIMULATION,
        "model": MODEL,
    }
    (out / "versions.json").write_text(json.dumps(versions, indent=2) + "\n")
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
