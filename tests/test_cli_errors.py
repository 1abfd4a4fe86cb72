"""The CLI: bad input is one line and exit status 2; a bug inside the package is a traceback."""

from __future__ import annotations

import inspect

import pytest

import sparsevae as sv
from sparsevae._constants import DEFAULT_N_TOP_GENES
from sparsevae.cli import build_parser, main

from .conftest import small_simulation

REPORT_OPTIONS = ["--methods", "svae+,vae", "--max-epochs", "1", "--n-latent", "2"]


@pytest.fixture
def screen(tmp_path):
    path = tmp_path / "screen.h5ad"
    small_simulation().write_h5ad(path)
    return str(path)


def _fit(screen, tmp_path, *options):
    base = ["fit", screen, "--perturbation-key", "perturbation", "--control", "control"]
    return main([*base, "--n-latent", "2", "--out", str(tmp_path / "fit"), *options])


def _report(screen, tmp_path, *options):
    base = ["report", screen, "--perturbation-key", "perturbation", "--control", "control"]
    return main([*base, *REPORT_OPTIONS, "--out", str(tmp_path / "report"), *options])


def _raises(error):
    def fail(*args, **kwargs):
        raise error

    return fail


def test_an_internal_key_error_in_fit_is_not_reported_as_bad_input(screen, tmp_path, monkeypatch):
    monkeypatch.setattr(sv.SparseVAE, "train", _raises(KeyError("bug inside the package")))
    with pytest.raises(KeyError, match="bug inside the package"):
        _fit(screen, tmp_path)


def test_an_internal_error_in_report_is_not_reported_as_bad_input(screen, tmp_path, monkeypatch):
    for error in (KeyError("bug"), ValueError("bug")):
        monkeypatch.setattr(sv.evaluate, "interventional_nll_report", _raises(error))
        with pytest.raises(type(error), match="bug"):
            _report(screen, tmp_path, "--heldout", "P0,P1")


def test_training_that_diverges_is_one_line(screen, tmp_path, monkeypatch, capsys):
    diverged = sv.NonFiniteLossError("step 3: loss=nan", term="loss", epoch=0, step=3)
    monkeypatch.setattr(sv.SparseVAE, "train", _raises(diverged))
    assert _fit(screen, tmp_path) == 2
    assert capsys.readouterr().err == "error: step 3: loss=nan\n"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--heldout", "P0,P99"], "holds out ['P99'], which are not perturbations"),
        (["--transfer-fraction", "1.5"], "transfer_fraction must be in (0, 1)"),
        (["--layer", "counts"], "layer='counts' is not in adata.layers"),
        (["--batch-key", "lane"], "batch_key='lane' is not a column of adata.obs"),
        (["--heldout", "control"], "the control cannot be held out"),
    ],
)
def test_report_names_bad_input_before_training(
    screen, tmp_path, monkeypatch, capsys, options, message
):
    monkeypatch.setattr(
        sv.evaluate, "interventional_nll_report", _raises(AssertionError("trained"))
    )
    assert _report(screen, tmp_path, *options) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_report_names_a_bad_control_and_key(screen, tmp_path, capsys):
    base = ["report", screen, *REPORT_OPTIONS, "--out", str(tmp_path / "r")]
    assert main([*base, "--perturbation-key", "perturbation", "--control", "ctrl"]) == 2
    assert "control='ctrl' does not occur" in capsys.readouterr().err
    assert main([*base, "--perturbation-key", "guide"]) == 2
    assert capsys.readouterr().err.startswith("error: perturbation_key='guide'")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--seeds", "0", "0"], "repeats a seed"),
        (["--seeds", "0", "1", "--alphas", "2", "-1"], "alphas must be positive"),
        (["--seeds", "0", "1", "--prior", "dense"], "needs a prior with masks"),
        (["--seeds", "0", "1", "--prior-kwargs", '{"gamma": 30}'], "'gamma'"),
        (["--prior", "dense", "--sparsity", "paper"], "sparsity='paper' is an option"),
    ],
)
def test_fit_names_bad_options_before_training(
    screen, tmp_path, monkeypatch, capsys, options, message
):
    monkeypatch.setattr(sv.SparseVAE, "train", _raises(AssertionError("trained")))
    monkeypatch.setattr(sv.tl, "edge_stability", _raises(AssertionError("trained")))
    assert _fit(screen, tmp_path, *options) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


@pytest.mark.parametrize(
    "options",
    [
        ["fit", "--accelerator", "gpx"],
        ["fit", "--strategy", "dpp"],
        ["fit", "--batch-size", "0"],
        ["report", "--n-particles", "0"],
        ["report", "--n-top-genes", "-5"],
    ],
)
def test_misspelt_trainer_options_and_bad_counts_stop_at_parsing(capsys, options):
    command, *rest = options
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(
            [command, "d.h5ad", "--perturbation-key", "p", "--out", "o", *rest]
        )
    assert stop.value.code == 2
    assert rest[0] in capsys.readouterr().err


def test_report_selects_as_many_genes_as_the_library_by_default():
    library = inspect.signature(sv.evaluate.interventional_nll_report).parameters["n_top_genes"]
    args = ["report", "d.h5ad", "--perturbation-key", "p", "--out", "o"]
    assert build_parser().parse_args(args).n_top_genes == library.default == DEFAULT_N_TOP_GENES
    assert DEFAULT_N_TOP_GENES == 2000
    assert build_parser().parse_args([*args, "--n-top-genes", "all"]).n_top_genes is None
    assert build_parser().parse_args([*args, "--n-top-genes", "300"]).n_top_genes == 300
