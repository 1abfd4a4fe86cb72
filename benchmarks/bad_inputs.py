"""Try every bad input we know of and record exactly what happens (error or warning text).

Each case builds a small simulated screen, breaks one thing and calls the public API. The
outcome is measured, not described: the exception type and message, or the warnings emitted
and the value returned. Writes a Markdown table and a CSV of the behaviours.

Usage::

    python benchmarks/bad_inputs.py   # writes benchmarks/results/bad_inputs.{md,csv}

``tests/test_bad_inputs.py`` runs every case and holds its behaviour (the error type, or a
warning and the value returned) to ``bad_inputs.csv``: a check that regresses fails the tests.

The table records behaviour, not digits: it must read the same on any CPU, instruction set
(``ATEN_CPU_CAPABILITY``) and number of threads, where floating-point results differ in their
last bits. So no behaviour holds a number computed in floating point: a value is written as its
decade (:func:`decade`, chosen with a wide margin to the decade's ends), and numbers computed by
training in a case's message (the minibatch sums of a ``NonFiniteLossError``) are shown as
``…`` (:func:`machine_digits`). Numbers read from the data (a count, a log-normalised value)
stay: they are the same everywhere.
"""

from __future__ import annotations

import argparse
import math
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import scvi
import torch
from scipy import sparse

import sparsevae as sv
from sparsevae._quiet import QUIET_TRAINER, silence_lightning

RESULTS = Path(__file__).parent / "results"
CASES: list[tuple[str, str, Callable]] = []
#: Every value :func:`decade` wrote, in order: the test checks each one's margin.
DECADE_VALUES: list[float] = []


def case(group: str, description: str, *, trained_numbers: bool = False):
    """Register a case. ``trained_numbers``: its message holds numbers computed by training
    (they differ between CPUs in the last digits), which the table shows as ``…``.
    """

    def register(function):
        function.trained_numbers = trained_numbers
        CASES.append((group, description, function))
        return function

    return register


def decade(value: float, name: str = "value") -> str:
    """The decade holding ``|value|``, e.g. ``"10^4 ≤ |loss| < 10^5"`` for 5.3e4 named "loss".

    Machine-independent where the digits are not, as long as ``value`` is not near a power of
    ten: a case that records a decade must sit well inside it (``tests/test_bad_inputs.py``
    checks that every value written here is at least a factor 1.5 from either end).
    """
    DECADE_VALUES.append(value)
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    low = math.floor(math.log10(abs(value)))
    return f"10^{low} ≤ |{name}| < 10^{low + 1}"


def decade_margin(value: float) -> float:
    """How far ``|value|`` is from the nearer end of its decade, as a factor (≥ 1)."""
    if not math.isfinite(value) or value == 0:
        return math.inf
    position = math.log10(abs(value)) % 1.0
    return 10 ** min(position, 1.0 - position)


_FLOAT = re.compile(r"(?<![\w.^])[-+]?(?:\d+\.\d+(?:e[-+]?\d+)?|\d+e[-+]?\d+)")


def machine_digits(message: str) -> str:
    """``message`` with every non-integer number replaced by ``…`` (integers, nan, inf stay)."""
    return _FLOAT.sub("…", message)


def screen(**kwargs):
    params = {
        "n_perturbations": 6,
        "n_cells_per_perturbation": 30,
        "n_latent": 4,
        "n_genes": 24,
        "decoder_width": 12,
        "random_state": 0,
    }
    return sv.data.simulate_sparse_shift(**(params | kwargs))


def setup(adata, **kwargs):
    params = {"perturbation_key": "perturbation", "control": "control"} | kwargs
    sv.SparseVAE.setup_anndata(adata, **params)
    return "registered"


def dense(adata) -> np.ndarray:
    return adata.X.toarray().astype(np.float32)


def relabel(adata, positions, label):
    labels = adata.obs["perturbation"].astype(object).to_numpy()
    labels[positions] = label
    adata.obs["perturbation"] = labels
    return adata


_TRAINED = {}


def trained():
    """A small sVAE+ trained for 3 epochs, saved once (shared by the after-training cases)."""
    if not _TRAINED:
        adata = screen()
        scvi.settings.seed = 0
        setup(adata)
        model = sv.SparseVAE(adata, n_latent=4, n_hidden=16)
        model.train(max_epochs=3, **QUIET_TRAINER)
        path = Path(tempfile.mkdtemp()) / "model"
        model.save(path)
        _TRAINED.update(model=model, path=path)
    return _TRAINED["model"], _TRAINED["path"]


# ---- counts -------------------------------------------------------------------------------
@case("counts", "non-integer count (0.5) in `adata.X` (CSR)")
def _():
    adata = screen()
    x = dense(adata)
    x[5, 2] = 0.5
    adata.X = sparse.csr_matrix(x)
    return setup(adata)


@case("counts", "log-normalised `adata.X` (normalize_total + log1p), raw counts in layer 'counts'")
def _():
    import scanpy as sc

    adata = screen()
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    return setup(adata)


@case("counts", "log1p counts in `adata.X`, no layers")
def _():
    adata = screen()
    adata.X = sparse.csr_matrix(np.log1p(dense(adata)))
    return setup(adata)


@case("counts", "normalised, not logged (counts per 10,000) in `adata.X`")
def _():
    import scanpy as sc

    adata = screen()
    sc.pp.normalize_total(adata, target_sum=1e4)
    return setup(adata)


@case("counts", "scaled data (`sc.pp.scale`, negative values) in `adata.X`")
def _():
    import scanpy as sc

    adata = screen()
    adata.X = dense(adata)
    sc.pp.scale(adata)
    return setup(adata)


@case("counts", "negative count (-3) in `adata.X` (CSC)")
def _():
    adata = screen()
    x = dense(adata)
    x[100, 7] = -3
    adata.X = sparse.csc_matrix(x)
    return setup(adata)


@case("counts", "NaN in `adata.X` (dense)")
def _():
    adata = screen()
    x = dense(adata)
    x[12, 0] = np.nan
    adata.X = x
    return setup(adata)


@case("counts", "inf in `adata.X` (CSR)")
def _():
    adata = screen()
    x = dense(adata)
    x[0, 23] = np.inf
    adata.X = sparse.csr_matrix(x)
    return setup(adata)


@case("counts", "NaN in the counts layer (`layer='counts'`)")
def _():
    adata = screen()
    x = dense(adata)
    x[3, 4] = np.nan
    adata.layers["counts"] = sparse.csr_matrix(x)
    return setup(adata, layer="counts")


@case("counts", "non-integer value in the counts layer")
def _():
    adata = screen()
    x = dense(adata)
    x[9, 9] = 1.5
    adata.layers["counts"] = x
    return setup(adata, layer="counts")


@case("counts", "strings (object dtype) in `adata.X`")
def _():
    adata = screen()
    adata.X = dense(adata).astype(object)
    return setup(adata)


@case("counts", "integer dtype counts (int64), valid")
def _():
    adata = screen()
    adata.X = dense(adata).astype(np.int64)
    return setup(adata)


@case("counts", "2 cells with zero total counts")
def _():
    adata = screen()
    x = dense(adata)
    x[[4, 150]] = 0
    adata.X = sparse.csr_matrix(x)
    return setup(adata)


@case("counts", "3 genes with zero counts in every cell")
def _():
    adata = screen()
    x = dense(adata)
    x[:, [0, 1, 2]] = 0
    adata.X = sparse.csr_matrix(x)
    return setup(adata)


# ---- keys ---------------------------------------------------------------------------------
@case("keys", "`perturbation_key='guide'` (no such column)")
def _():
    return setup(screen(), perturbation_key="guide")


@case("keys", "`perturbation_key='perturbaton'` (misspelt)")
def _():
    return setup(screen(), perturbation_key="perturbaton")


@case("keys", "`perturbation_key='Perturbation'` (wrong case)")
def _():
    return setup(screen(), perturbation_key="Perturbation")


@case("keys", "`perturbation_key=None`")
def _():
    return setup(screen(), perturbation_key=None)


@case("keys", "`layer='count'` (misspelt; layer 'counts' exists)")
def _():
    adata = screen()
    adata.layers["counts"] = adata.X.copy()
    return setup(adata, layer="count")


@case("keys", "`layer='counts'` (no layers at all)")
def _():
    return setup(screen(), layer="counts")


@case("keys", "`batch_key='lanes'` (misspelt; column 'lane' exists)")
def _():
    adata = screen()
    adata.obs["lane"] = "L1"
    return setup(adata, batch_key="lanes")


@case("keys", "`batch_key='perturbation'` (same column as the perturbations)")
def _():
    return setup(screen(), batch_key="perturbation")


@case("keys", "batch column with a NaN")
def _():
    adata = screen()
    adata.obs["lane"] = ["L1"] * (adata.n_obs - 1) + [np.nan]
    return setup(adata, batch_key="lane")


# ---- labels -------------------------------------------------------------------------------
@case("labels", "3 NaN perturbation labels")
def _():
    return setup(relabel(screen(), [0, 1, 2], np.nan))


@case("labels", "None as a perturbation label")
def _():
    return setup(relabel(screen(), [40], None))


@case("labels", "empty-string perturbation labels")
def _():
    return setup(relabel(screen(), [5, 6], ""))


@case("labels", "whitespace-only perturbation label")
def _():
    return setup(relabel(screen(), [7], "   "))


@case("labels", "labels 'nan' (missing values converted to text)")
def _():
    return setup(relabel(screen(), list(range(40, 52)), "nan"))


@case("labels", "`control='ctrl'` (label does not occur)")
def _():
    return setup(screen(), control="ctrl")


@case("labels", "`control='Control'` (wrong case)")
def _():
    return setup(screen(), control="Control")


@case("labels", "only control cells")
def _():
    adata = screen()
    return setup(adata[adata.obs["perturbation"] == "control"].copy())


@case("labels", "a single perturbation and `control=None`")
def _():
    adata = screen()
    return setup(adata[adata.obs["perturbation"] == "P0"].copy(), control=None)


@case("labels", "a single perturbation plus control, valid")
def _():
    adata = screen()
    keep = adata.obs["perturbation"].isin(["control", "P0"]).to_numpy()
    return setup(adata[keep].copy())


@case("labels", "a perturbation with 3 cells (P2)")
def _():
    adata = screen()
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    keep = labels != "P2"
    keep[np.flatnonzero(labels == "P2")[:3]] = True
    adata = adata[keep].copy()
    setup(adata)
    model = sv.SparseVAE(adata, n_latent=4)
    return f"registered; perturbation_names = {model.perturbation_names}"


@case("labels", "integer labels with `control=0`")
def _():
    adata = screen()
    codes = {name: i for i, name in enumerate(["control", *(f"P{i}" for i in range(6))])}
    adata.obs["perturbation"] = adata.obs["perturbation"].astype(str).map(codes).astype(int)
    setup(adata, control=0)
    model = sv.SparseVAE(adata, n_latent=4)
    return f"registered; control = {model.control!r}"


# ---- the AnnData ---------------------------------------------------------------------------
@case("anndata", "a numpy array instead of an AnnData")
def _():
    return setup(dense(screen()))


@case("anndata", "an AnnData with 0 cells")
def _():
    return setup(screen()[:0].copy())


@case("anndata", "a view (`adata[:100]`) passed to setup_anndata")
def _():
    return setup(screen()[:100])


@case("anndata", "`SparseVAE(adata)` without setup_anndata")
def _():
    sv.SparseVAE(screen())


# ---- after training -------------------------------------------------------------------------
@case("trained model", "`load` with the genes in another order")
def _():
    _, path = trained()
    adata = screen()
    sv.SparseVAE.load(path, adata=adata[:, adata.var_names[::-1]].copy())


@case("trained model", "`load` with 20 of the 24 genes")
def _():
    _, path = trained()
    sv.SparseVAE.load(path, adata=screen()[:, :20].copy())


@case("trained model", "`load` with data holding a perturbation the model has not seen")
def _():
    _, path = trained()
    sv.SparseVAE.load(path, adata=relabel(screen(), [0, 1, 2], "P7"))


@case("trained model", "`load` with a subset of the training cells, valid")
def _():
    model, path = trained()
    loaded = sv.SparseVAE.load(path, adata=screen()[:50].copy())
    same = loaded.knowledge.categories == model.knowledge.categories
    return f"loaded; categories in the model's order: {same}"


@case("trained model", "`get_latent_representation(adata)` with genes in another order")
def _():
    model, _ = trained()
    adata = screen()
    model.get_latent_representation(adata[:, adata.var_names[::-1]].copy())


@case("trained model", "`get_elbo(adata)` with other gene names")
def _():
    model, _ = trained()
    adata = screen()
    adata.var_names = [f"X{i}" for i in range(adata.n_vars)]
    model.get_elbo(adata)


@case("trained model", "`get_latent_representation(adata)` with a NaN count in new data")
def _():
    model, _ = trained()
    adata = screen()
    x = dense(adata)
    x[8, 8] = np.nan
    adata.X = sparse.csr_matrix(x)
    model.get_latent_representation(adata)


@case("trained model", "`get_latent_representation(adata)` with an unseen perturbation")
def _():
    model, _ = trained()
    z = model.get_latent_representation(relabel(screen(), list(range(30)), "P9"))
    return f"returned latents of shape {z.shape} (the encoder does not read labels)"


@case("trained model", "`get_elbo(adata)` with an unseen perturbation")
def _():
    model, _ = trained()
    model.get_elbo(relabel(screen(), list(range(30)), "P9"))


@case("trained model", "`get_interventional_nll(adata)` with an unseen perturbation")
def _():
    model, _ = trained()
    model.get_interventional_nll(relabel(screen(), list(range(30)), "P9"), n_particles=5)


@case("trained model", "`get_mask_probabilities(['P10'])` (unknown name)")
def _():
    model, _ = trained()
    model.get_mask_probabilities(["P10"])


@case("trained model", "`get_perturbation_shifts(perturbations='control')`")
def _():
    model, _ = trained()
    model.get_perturbation_shifts(perturbations="control")


@case("trained model", "`transfer(adata)` with genes in another order")
def _():
    model, _ = trained()
    adata = screen()
    model.transfer(adata[:, adata.var_names[::-1]].copy())


@case("trained model", "`transfer(adata)` without the perturbation column")
def _():
    model, _ = trained()
    adata = screen()
    adata.obs = adata.obs.rename(columns={"perturbation": "guide"})
    model.transfer(adata)


@case("trained model", "`transfer(adata)` with a cell of zero counts")
def _():
    model, _ = trained()
    adata = screen()
    x = dense(adata)
    x[0] = 0
    adata.X = sparse.csr_matrix(x)
    model.transfer(adata)


# ---- numerics ------------------------------------------------------------------------------
def _model_for_faults():
    adata = screen()
    scvi.settings.seed = 0
    setup(adata)
    return sv.SparseVAE(adata, n_latent=4, n_hidden=16)


def _wrap_loss(model, corrupt, step):
    from scvi.module.base import LossOutput

    module, original, calls = model.module, model.module.loss, []

    def loss(tensors, inference_outputs, generative_outputs, kl_weight=1.0, n_obs=1):
        out = original(tensors, inference_outputs, generative_outputs, kl_weight, n_obs)
        if module.training:
            calls.append(1)
            if len(calls) - 1 == step:
                return LossOutput(**corrupt(out))
        return out

    module.loss = loss


@case("numerics", "NaN injected into the kl_local term at training step 3", trained_numbers=True)
def _():
    model = _model_for_faults()

    def corrupt(out):
        kl = out.kl_local["kl_local"] * float("nan")
        return {
            "loss": out.loss + kl.mean(),
            "reconstruction_loss": out.reconstruction_loss,
            "kl_local": kl,
            "kl_global": out.kl_global,
        }

    _wrap_loss(model, corrupt, step=3)
    model.train(max_epochs=5, batch_size=64, train_size=1.0, **QUIET_TRAINER)


@case(
    "numerics", "inf injected into the reconstruction term at training step 5", trained_numbers=True
)
def _():
    model = _model_for_faults()

    def corrupt(out):
        rec = out.reconstruction_loss["reconstruction_loss"] + float("inf")
        return {
            "loss": out.loss + rec.mean(),
            "reconstruction_loss": rec,
            "kl_local": out.kl_local,
            "kl_global": out.kl_global,
        }

    _wrap_loss(model, corrupt, step=5)
    model.train(max_epochs=5, batch_size=64, train_size=1.0, **QUIET_TRAINER)


@case("numerics", "NaN gradient (finite loss) injected at training step 2", trained_numbers=True)
def _():
    model = _model_for_faults()
    px_r = model.module.px_r

    def corrupt(out):
        return {
            "loss": out.loss + 0.0 * torch.sqrt(px_r - px_r.detach()).sum(),
            "reconstruction_loss": out.reconstruction_loss,
            "kl_local": out.kl_local,
            "kl_global": out.kl_global,
        }

    _wrap_loss(model, corrupt, step=2)
    model.train(max_epochs=5, batch_size=64, train_size=1.0, **QUIET_TRAINER)


@case("numerics", "`lr=1e4`, `lr_prior=1e4` (absurd learning rates), 20 epochs")
def _():
    model = _model_for_faults()
    model.train(max_epochs=20, batch_size=64, lr=1e4, lr_prior=1e4, **QUIET_TRAINER)
    values = np.concatenate([v.to_numpy(float).ravel() for v in model.history.values()])
    return f"trained; all logged losses finite: {bool(np.isfinite(values).all())}"


@case("numerics", "inverse dispersion and encoder variance parameters set to 200 (exp overflows)")
def _():
    model = _model_for_faults()
    tensors = next(iter(model._make_data_loader(model.adata, batch_size=64)))
    with torch.no_grad():
        model.module.px_r.fill_(200.0)
        model.module.z_encoder.var_encoder.bias.fill_(200.0)
    model.module.train()
    _, _, out = model.module(tensors)
    loss = out.loss.item()
    # The loss's digits depend on the CPU (5.317e4 here, 5.318e4 on another): its decade does not.
    return f"loss finite: {math.isfinite(loss)}, {decade(loss, 'loss')}"


# ---- (a) names that must be unique (issue 29) ----------------------------------------------
def _report(**kwargs):
    params = {"methods": ("vae",), "heldout": ["P0"], "max_epochs": 1, "n_latent": 2}
    return sv.evaluate.interventional_nll_report(screen(), **(params | kwargs))


@case("unique names", "repeated gene names (`adata.var_names`) at setup")
def _():
    adata = screen()
    adata.var_names = ["gene_0", "gene_0", *adata.var_names[2:]]
    return setup(adata)


@case("unique names", "repeated cell names (`adata.obs_names`) at setup")
def _():
    adata = screen()
    adata.obs_names = ["cell_0", "cell_0", *adata.obs_names[2:]]
    return setup(adata)


@case("unique names", "label 'Control' beside `control='control'`")
def _():
    return setup(relabel(screen(), [0, 1, 2], "Control"))


@case("unique names", "labels 'P0' and 'P0 ' (a trailing space)")
def _():
    adata = screen()
    p0 = np.flatnonzero(adata.obs["perturbation"].astype(str).to_numpy() == "P0")
    return setup(relabel(adata, p0[:15], "P0 "))


@case("unique names", "labels 'P0' and 'p0' (case only)")
def _():
    adata = screen()
    p0 = np.flatnonzero(adata.obs["perturbation"].astype(str).to_numpy() == "P0")
    return setup(relabel(adata, p0[:15], "p0"))


@case("unique names", "combination label 'P0+P0' with `combination_delimiter='+'`")
def _():
    adata = screen()
    p4 = np.flatnonzero(adata.obs["perturbation"].astype(str).to_numpy() == "P4")
    return setup(relabel(adata, p4[:15], "P0+P0"), combination_delimiter="+")


@case("unique names", "`get_mask_probabilities(['P0', 'P1', 'P0'])`")
def _():
    model, _ = trained()
    model.get_mask_probabilities(["P0", "P1", "P0"])


@case("unique names", "`transfer(adata)` with the new label 'p0' beside the learned 'P0'")
def _():
    model, _ = trained()
    adata = screen()
    new = relabel(adata, slice(None), "p0")[:30].copy()
    return f"transferred; perturbation_names[-1] = {model.transfer(new).perturbation_names[-1]!r}"


@case("unique names", "`interventional_nll_report(methods=('vae', 'vae'))`")
def _():
    _report(methods=("vae", "vae"))


@case("unique names", "`interventional_nll_report(heldout=['P0', 'P1', 'P0'])`")
def _():
    _report(heldout=["P0", "P1", "P0"])


@case("unique names", "`identifiability_report(seeds=(0, 0))`")
def _():
    sv.evaluate.identifiability_report(screen(), methods=("vae",), seeds=(0, 0), max_epochs=1)


@case("unique names", "`write_results(adata, model, key_added='umap')` with `obsm['X_umap']`")
def _():
    model, _ = trained()
    adata = screen()
    adata.obsm["X_umap"] = np.zeros((adata.n_obs, 2))
    sv.tl.write_results(adata, model, key_added="umap")
    return f"written; obsm['X_umap'] has {adata.obsm['X_umap'].shape[1]} columns"


# ---- (b) arguments with which a call would do nothing (issue 29) ---------------------------
@case("no-op arguments", "`train(max_epochs=0)`")
def _():
    _model_for_faults().train(max_epochs=0, **QUIET_TRAINER)


@case("no-op arguments", "`train(train_size=0)` (scvi-tools reads 0 as 0.9)")
def _():
    _model_for_faults().train(max_epochs=1, train_size=0, **QUIET_TRAINER)


@case("no-op arguments", "`train(lr=0)`")
def _():
    _model_for_faults().train(max_epochs=1, lr=0, **QUIET_TRAINER)


@case("no-op arguments", "`get_mask_probabilities(perturbations=[])`")
def _():
    model, _ = trained()
    model.get_mask_probabilities(perturbations=[])


@case("no-op arguments", "`get_intervention_targets(n_top=0)`")
def _():
    model, _ = trained()
    model.get_intervention_targets(n_top=0)


@case("no-op arguments", "`get_treatment_effect(perturbation='control')` (the reference)")
def _():
    model, _ = trained()
    effect = model.get_treatment_effect(screen()[:30].copy(), perturbation="control", n_samples=1)
    return f"returned; every gene's effect is 0: {bool((effect == 0).all())}"


@case("no-op arguments", "`predict(adata, perturbation='P1', indices=[])`")
def _():
    model, _ = trained()
    model.predict(screen()[:30].copy(), perturbation="P1", indices=[])


@case("no-op arguments", "`interventional_nll_report(methods=[])`")
def _():
    _report(methods=[])


@case("no-op arguments", "`interventional_nll_report(n_top_genes=0)`")
def _():
    _report(n_top_genes=0)


@case("no-op arguments", "`edge_stability(seeds=(0,))`, one seed")
def _():
    adata = screen()
    sv.tl.edge_stability(
        adata, "perturbation", "control", seeds=(0,), n_latent=4, n_hidden=16, max_epochs=2,
        **QUIET_TRAINER,
    )  # fmt: skip
    frequencies = set(adata.uns["edge_stability"]["edges"]["frequency"])
    return f"returned; every frequency is 0 or 1: {frequencies <= {0.0, 1.0}}"


# ---- (c) learning again what the model knows (issue 29) ------------------------------------
@case("learning again", "`transfer(model.adata)` (the training data)")
def _():
    model, _ = trained()
    model.transfer(model.adata)


@case("learning again", "`transfer(adata)` holding only learned perturbations")
def _():
    model, _ = trained()
    adata = screen()
    model.transfer(adata[adata.obs["perturbation"].isin(["P0", "P1"])].copy())


@case("learning again", "`transfer(adata)` holding a new and a learned perturbation")
def _():
    model, _ = trained()
    adata = screen()
    adata = adata[adata.obs["perturbation"].isin(["P0", "P1"])].copy()
    adata = relabel(adata, np.flatnonzero(adata.obs["perturbation"] == "P0"), "P9")
    return f"transferred; new perturbation_names: {model.transfer(adata).perturbation_names[6:]}"


@case("learning again", "`train()` a second time")
def _():
    model = _model_for_faults()
    model.train(max_epochs=1, **QUIET_TRAINER)
    model.train(max_epochs=1, **QUIET_TRAINER)
    return f"trained again; epochs in the history: {len(model.history['elbo_train'])}"


@case("learning again", "`setup_anndata` again with another control after a model was built")
def _():
    model = _model_for_faults()
    setup(model.adata, control=None)
    return f"registered; the model's control is still {model.control!r}"


# ---- runner -------------------------------------------------------------------------------
def outcome(function) -> tuple[str, str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_lightning()
        try:
            value = function()
        except Exception as exc:
            message = str(exc)
            if getattr(function, "trained_numbers", False):
                message = machine_digits(message)
            return f"**{type(exc).__name__}**", message
    mine = [
        w
        for w in caught
        if issubclass(w.category, UserWarning) and "lightning" not in str(w.filename)
    ]
    texts = list(dict.fromkeys(str(w.message) for w in mine))
    if getattr(function, "trained_numbers", False):
        texts = [machine_digits(text) for text in texts]
    result = str(value) if value is not None else "returned"
    if texts:
        return "**UserWarning**, " + result, " / ".join(texts)
    return result, ""


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main() -> None:
    from _provenance import provenance

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "bad_inputs.md")
    args = parser.parse_args()
    # Speed only (tiny models train fastest on one thread): no behaviour depends on it.
    torch.set_num_threads(1)
    silence_lightning()
    rows = []
    lines = [
        "# Bad inputs and what sparsevae does with them",
        "",
        provenance(),
        "",
        "Measured by `python benchmarks/bad_inputs.py` (each row ran; the text is the exact "
        "message, except that numbers computed by training are shown as …: their last digits "
        "differ between CPUs). The behaviour column is what `tests/test_bad_inputs.py` holds "
        "every case to, on any machine: error type, warning, result, a value's decade, no "
        "digits that depend on the CPU.",
        "",
        "| # | group | bad input | behaviour | message |",
        "|---|---|---|---|---|",
    ]
    for number, (group, description, function) in enumerate(CASES, start=1):
        behaviour, message = outcome(function)
        rows.append(
            {"number": number, "group": group, "input": description, "behaviour": behaviour}
        )
        lines.append(
            f"| {number} | {group} | {cell(description)} | {cell(behaviour)} | {cell(message)} |"
        )
        print(f"{number:2d} {description}: {behaviour}", flush=True)
    args.out.write_text("\n".join(lines) + "\n")
    # What tests/test_bad_inputs.py holds every case to.
    pd.DataFrame(rows).to_csv(args.out.with_suffix(".csv"), index=False)
    print(f"wrote {args.out} and {args.out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
