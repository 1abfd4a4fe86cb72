from __future__ import annotations

import contextlib
import json

import anndata
import pandas as pd
import pytest

import sparsevae as sv
from sparsevae.cli import main

from .conftest import small_simulation


def test_demo_quick_writes_outputs(tmp_path, capsys):
    code = main(
        ["demo", "--quick", "--out", str(tmp_path), "--max-epochs", "2", "--methods", "svae+,vae"]
    )
    assert code == 0
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert list(metrics["method"]) == ["svae+", "vae"]
    assert metrics[["mcc_pearson", "r2", "f1"]].notna().all().all()
    assert metrics["mcc_pearson"].between(0, 1).all()
    pi = pd.read_csv(tmp_path / "pi.csv", index_col=0)
    assert pi.shape == (20, 5)
    assert (tmp_path / "graph.png").stat().st_size > 0
    assert "mcc_pearson" in capsys.readouterr().out


def test_fit_on_h5ad(tmp_path):
    data = small_simulation()
    path = tmp_path / "screen.h5ad"
    data.write_h5ad(path)
    out = tmp_path / "fit"
    code = main(
        [
            "fit",
            str(path),
            "--perturbation-key",
            "perturbation",
            "--control",
            "control",
            "--n-latent",
            "3",
            "--max-epochs",
            "2",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_perturbations"] == 6 and summary["n_latent"] == 3 and summary["seed"] == 0
    assert (out / "results.h5ad").exists() and (out / "pi_heatmap.png").exists()
    assert summary["n_layers"] == 1  # auto: 30 cells per perturbation


def test_fit_takes_the_depth(tmp_path, capsys):
    path = tmp_path / "screen.h5ad"
    small_simulation().write_h5ad(path)
    base = ["fit", str(path), "--perturbation-key", "perturbation", "--control", "control"]
    base += ["--n-latent", "3", "--max-epochs", "2"]
    assert main([*base, "--n-layers", "2", "--out", str(tmp_path / "two")]) == 0
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["n_layers"] == 2
    for bad in ("0", "deep"):
        with pytest.raises(SystemExit):
            main([*base, "--n-layers", bad, "--out", str(tmp_path / bad)])
        assert "--n-layers" in capsys.readouterr().err


def test_fit_is_reproducible_and_takes_a_seed(tmp_path, capsys):
    """The same command gives the same model; --seed changes it; --seed with --seeds is refused."""
    path = tmp_path / "screen.h5ad"
    small_simulation().write_h5ad(path)
    base = ["fit", str(path), "--perturbation-key", "perturbation", "--control", "control"]
    base += ["--n-latent", "3", "--max-epochs", "2", "--out"]
    pis = []
    for name, extra in (("a", []), ("b", []), ("c", ["--seed", "1"])):
        assert main([*base, str(tmp_path / name), *extra]) == 0
        pis.append(pd.read_csv(tmp_path / name / "pi.csv", index_col=0))
    pd.testing.assert_frame_equal(pis[0], pis[1])
    assert not pis[0].equals(pis[2])
    assert main([*base, str(tmp_path / "d"), "--seed", "1", "--seeds", "0", "1"]) == 2
    assert "Give --seed" in capsys.readouterr().err


def test_fit_reports_bad_key(tmp_path, capsys):
    data = small_simulation()
    path = tmp_path / "screen.h5ad"
    data.write_h5ad(path)
    code = main(["fit", str(path), "--perturbation-key", "guide", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "perturbation_key='guide'" in capsys.readouterr().err


def test_fit_reports_a_misspelt_key_and_a_missing_file(tmp_path, capsys):
    data = small_simulation()
    path = tmp_path / "screen.h5ad"
    data.write_h5ad(path)
    code = main(["fit", str(path), "--perturbation-key", "perturbaton", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: perturbation_key='perturbaton'")  # no KeyError quotes
    assert "Did you mean 'perturbation'?" in err
    code = main(["fit", str(tmp_path / "missing.h5ad"), "--perturbation-key", "p", "--out", "o"])
    assert code == 2
    assert "missing.h5ad" in capsys.readouterr().err


def test_fit_with_seeds_writes_the_stability_table(tmp_path):
    data = small_simulation()
    path = tmp_path / "screen.h5ad"
    data.write_h5ad(path)
    out = tmp_path / "fit"
    base = ["fit", str(path), "--perturbation-key", "perturbation", "--control", "control"]
    options = ["--n-latent", "3", "--max-epochs", "3", "--out", str(out)]
    code = main([*base, *options, "--seeds", "0", "1", "--alphas", "6", "2"])
    assert code == 0
    edges = pd.read_csv(out / "stability.csv")
    assert sorted(edges["alpha"].unique()) == [2.0, 6.0] and len(edges) == 2 * 6 * 3
    runs = pd.read_csv(out / "stability_runs.csv")
    assert runs[["seed", "alpha"]].values.tolist() == [[0, 6], [1, 6], [0, 2], [1, 2]]
    assert (out / "stability.png").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stability_runs"] == 4 and set(summary["stable_edges_per_alpha"]) == {"6", "2"}
    results = anndata.read_h5ad(out / "results.h5ad")
    assert "edge_stability" in results.uns and "sparsevae" in results.uns


def test_fit_alphas_need_seeds(tmp_path, capsys):
    data = small_simulation()
    path = tmp_path / "screen.h5ad"
    data.write_h5ad(path)
    code = main(
        ["fit", str(path), "--perturbation-key", "perturbation", "--alphas", "2", "--out", "o"]
    )
    assert code == 2
    assert "--alphas needs --seeds" in capsys.readouterr().err


def test_fit_with_one_alpha_and_the_paper_objective(tmp_path, capsys):
    data = small_simulation()
    path = tmp_path / "screen.h5ad"
    data.write_h5ad(path)
    args = ["fit", str(path), "--perturbation-key", "perturbation", "--control", "control"]
    out = tmp_path / "fit"
    extra = ["--alpha", "3", "--sparsity", "paper", "--max-epochs", "2", "--out", str(out)]
    assert main([*args, *extra]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["alpha"] == 3.0 and summary["sparsity"] == "paper"
    model = sv.SparseVAE.load(str(out / "model"), adata=data)
    assert model.module.prior.sparsity == "paper" and model.module.prior.alpha == 3.0
    # the paper objective belongs to spike_slab: another prior is refused, by name
    bad = ["--prior", "dense", "--sparsity", "paper", "--max-epochs", "2", "--out", str(out)]
    assert main([*args, *bad]) == 2
    assert "sparsity='paper' is an option of prior='spike_slab'" in capsys.readouterr().err


def test_fit_with_another_prior_and_its_options(tmp_path):
    data = small_simulation()
    path = tmp_path / "screen.h5ad"
    data.write_h5ad(path)
    args = ["fit", str(path), "--perturbation-key", "perturbation", "--control", "control"]
    out = tmp_path / "fit"
    extra = ["--prior", "dip-vae", "--prior-kwargs", '{"lambda_od": 2.0}', "--max-epochs", "2"]
    assert main([*args, *extra, "--out", str(out)]) == 0
    model = sv.SparseVAE.load(str(out / "model"), adata=data)
    assert model.module.prior.hyperparameters()["lambda_od"] == 2.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--methods", "svae+,foo"], "unknown ['foo']"),
        (["--prior-kwargs", "{gamma: 30}"], "is not JSON"),
        (["--prior-kwargs", '{"gamma": 30}'], "'gamma'"),  # not an option of spike_slab
    ],
)
def test_cli_names_a_bad_method_or_prior_option(tmp_path, capsys, argv, message):
    data = small_simulation()
    path = tmp_path / "screen.h5ad"
    data.write_h5ad(path)
    command = "report" if argv[0] == "--methods" else "fit"
    with contextlib.suppress(SystemExit):
        code = main([command, str(path), "--perturbation-key", "perturbation", *argv, "--out", "o"])
        assert code == 2
    assert message in capsys.readouterr().err
