"""One run of edge stability: what it needs, what it gives, and where it is kept.

:func:`sparsevae.tl.edge_stability` trains one model per (seed, alpha); this module holds a
run's plan (picklable for worker processes, also with a backed AnnData), its summary and the
checkpoint folder that keeps finished runs so a killed call resumes.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scvi

from sparsevae._checkpoint import open_checkpoint
from sparsevae._quiet import QUIET_TRAINER

if TYPE_CHECKING:
    from anndata import AnnData

    from sparsevae.model import SparseVAE


@dataclass
class _Run:
    """What one training run contributes: latents of the matching cells and its graph."""

    z: np.ndarray  # matching cells × latents (posterior means)
    pi: np.ndarray  # perturbations × latents
    targets: np.ndarray  # perturbations × latents, bool
    shifts: np.ndarray  # perturbations × latents, the edge's shift; NaN where no edge
    seconds: float


@dataclass
class _Plan:
    """Everything a run needs besides its seed and alpha (picklable, for worker processes)."""

    adata: AnnData
    perturbation_key: str
    control: str | None
    setup_kwargs: dict
    model_kwargs: dict
    train_kwargs: dict
    cells: np.ndarray
    threshold: float

    def __getstate__(self) -> dict:
        """The plan for a worker process.

        A backed AnnData (``read_h5ad(..., backed="r")``) cannot be pickled (h5py): the worker
        gets its file name and its in-memory ``obs`` and ``var`` and opens the file itself, so
        the counts are never copied.
        """
        state = dict(self.__dict__)
        if self.adata.isbacked:
            state["adata"] = (str(self.adata.filename), self.adata.obs, self.adata.var)
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state["adata"], tuple):
            import anndata

            filename, obs, var = state["adata"]
            adata = anndata.read_h5ad(filename, backed="r")
            adata.obs, adata.var = obs, var
            state["adata"] = adata
        self.__dict__.update(state)

    def register(self) -> None:
        from sparsevae.model import SparseVAE

        SparseVAE.setup_anndata(
            self.adata, self.perturbation_key, self.control, **self.setup_kwargs
        )

    def build(self, seed: int, alpha: float | None) -> SparseVAE:
        from sparsevae.model import SparseVAE

        scvi.settings.seed = seed  # initial weights, minibatch order, validation split
        return SparseVAE(self.adata, alpha=alpha, **self.model_kwargs)

    def train(self, model: SparseVAE) -> float:
        from sparsevae.model import EmptyGraphWarning

        start = time.perf_counter()
        with warnings.catch_warnings():
            # An empty graph in one run is what the table is for; no news for each run.
            warnings.simplefilter("ignore", EmptyGraphWarning)
            model.train(**{**QUIET_TRAINER, **self.train_kwargs})
        return time.perf_counter() - start

    def summarise(self, model: SparseVAE, seconds: float) -> _Run:
        pi = model.get_mask_probabilities()
        targets = model.get_intervention_targets(threshold=self.threshold)
        shifts = pd.DataFrame(np.nan, index=pi.index, columns=pi.columns)
        for row in model.get_target_table(threshold=self.threshold).itertuples(index=False):
            shifts.loc[row.perturbation, row.latent] = row.shift
        return _Run(
            z=np.asarray(model.get_latent_representation(indices=self.cells), dtype=np.float64),
            pi=pi.to_numpy(dtype=np.float64),
            targets=targets.to_numpy(dtype=bool),
            shifts=shifts.to_numpy(dtype=np.float64),
            seconds=seconds,
        )

    def run(self, seed: int, alpha: float) -> _Run:
        model = self.build(seed, alpha)
        return self.summarise(model, self.train(model))


def _run_in_process(plan: _Plan, seed: int, alpha: float) -> _Run:
    """One run in a worker process (one torch thread): register, build, train, summarise."""
    import torch

    from sparsevae._quiet import silence_lightning

    torch.set_num_threads(1)
    silence_lightning()
    warnings.filterwarnings("ignore", category=UserWarning)  # setup's data warnings: seen once
    plan.register()
    return plan.run(seed, alpha)


class _RunStore:
    """Finished runs on disk (see ``checkpoint_dir``).

    One ``.npz`` per (alpha, seed), and the reference run's model.
    """

    def __init__(self, folder: str | Path, settings: dict):
        self.folder = open_checkpoint(folder, settings, "an edge-stability call")

    def _path(self, alpha: float, seed: int) -> Path:
        return self.folder / f"run_alpha{float(alpha)!r}_seed{int(seed)}.npz"

    @property
    def reference_model(self) -> Path:
        return self.folder / "reference_model"

    def read(self, alpha: float, seed: int) -> _Run | None:
        path = self._path(alpha, seed)
        if not path.exists():
            return None
        with np.load(path) as saved:
            return _Run(
                z=saved["z"],
                pi=saved["pi"],
                targets=saved["targets"],
                shifts=saved["shifts"],
                seconds=float(saved["seconds"]),
            )

    def write(self, alpha: float, seed: int, run: _Run) -> None:
        """Write one run (to a temporary file first: a kill leaves no half file)."""
        partial = self._path(alpha, seed).with_suffix(".partial")
        with open(partial, "wb") as handle:
            np.savez(
                handle, z=run.z, pi=run.pi, targets=run.targets, shifts=run.shifts,
                seconds=np.float64(run.seconds),
            )  # fmt: skip
        partial.replace(self._path(alpha, seed))


#: Training arguments that change what is shown, not what is learned: not part of a checkpoint's
#: settings.
_DISPLAY = {"enable_progress_bar", "enable_model_summary", "logger", "log_every_n_steps"}


def _finished(future, key: tuple[float, int], store: _RunStore | None, progress, run=None) -> None:
    """A run is done (in a worker: ``future``; here: ``run``): write it, count it."""
    if future is not None:
        if future.cancelled() or future.exception() is not None:
            return  # the error surfaces where the result is read
        run = future.result()
    if store is not None:
        store.write(*key, run)
    progress.update(1)
