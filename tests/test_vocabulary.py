"""One vocabulary of priors and methods: one spelling everywhere, old spellings warn."""

from __future__ import annotations

import pytest
import torch

import sparsevae as sv
from sparsevae._constants import DEPRECATED_NAMES, METHODS, PRIORS
from sparsevae.cli import main
from sparsevae.evaluate._identifiability import check_methods_and_seeds, method_kwargs
from sparsevae.module._priors import PRIOR_CLASSES

from .conftest import small_simulation


def test_one_registry_of_names():
    assert set(PRIOR_CLASSES) == set(PRIORS)  # every name spelled once, every prior registered
    assert all(cls.name == name for name, cls in PRIOR_CLASSES.items())
    for method, kwargs in METHODS.items():
        assert kwargs["prior"] in PRIOR_CLASSES, method
    # a prior that is itself one published method is spelled as that method
    shared = set(PRIOR_CLASSES) & set(METHODS)
    assert shared == {"ivae-var", "clap", "beta-tcvae", "dip-vae", "factorvae", "sams-vae"}
    assert all(METHODS[name]["prior"] == name for name in shared)


@pytest.mark.parametrize(("old", "new"), sorted(DEPRECATED_NAMES.items()))
def test_old_spellings_keep_working_with_a_warning(old, new):
    adata = small_simulation()
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    with pytest.warns(FutureWarning, match=rf"prior={old!r} is an old spelling; use {new!r}"):
        model = sv.SparseVAE(adata, n_latent=3, n_hidden=8, prior=old)
    assert model.prior_name == new and model.init_params_["non_kwargs"]["prior"] == new
    with pytest.warns(FutureWarning, match=rf"methods={old!r}"):
        assert method_kwargs(old) == METHODS[new]
    with pytest.warns(FutureWarning, match="old spelling"):
        methods, _ = check_methods_and_seeds([old, "svae+"], [0], 2)
    assert methods == [new, "svae+"]
    with pytest.warns(FutureWarning), pytest.raises(ValueError, match="repeat"):
        check_methods_and_seeds([old, new], [0], 2)  # one method named twice


def test_cli_accepts_old_spellings_with_a_warning(tmp_path):
    adata = small_simulation()
    path = tmp_path / "data.h5ad"
    adata.write_h5ad(path)
    args = ["fit", str(path), "--perturbation-key", "perturbation", "--control", "control"]
    args += ["--prior", "dip_vae", "--max-epochs", "1", "--n-latent", "3", "--out"]
    with pytest.warns(FutureWarning, match="--prior='dip_vae' is an old spelling"):
        assert main([*args, str(tmp_path / "out")]) == 0


def test_logit_init_can_be_set():
    adata = small_simulation()
    sv.SparseVAE.setup_anndata(adata, perturbation_key="perturbation", control="control")
    model = sv.SparseVAE(adata, n_latent=3, n_hidden=8, prior_kwargs={"logit_init": -1.0})
    logits = model.module.prior.logits.detach()
    assert torch.equal(logits, torch.full_like(logits, -1.0))
