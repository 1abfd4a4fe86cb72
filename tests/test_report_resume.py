"""A held-out report killed mid-way resumes from its checkpoint and gives the same table."""

from __future__ import annotations

import pandas as pd
import pytest

import sparsevae as sv
from sparsevae.evaluate import _heldout

from .conftest import small_simulation

SPLITS = {"first": ["P4"], "second": ["P5"]}
OPTIONS = {
    "methods": ("svae+", "vae"),
    "heldout": SPLITS,
    "max_epochs": 3,
    "n_particles": 2,
    "n_latent": 3,
    "n_top_genes": None,
    "n_boot": 5,
    "model_kwargs": {"n_hidden": 8},
}


def test_a_killed_report_resumes_with_the_same_table(tmp_path, monkeypatch):
    uninterrupted = sv.evaluate.interventional_nll_report(small_simulation(), **OPTIONS)

    evaluate_split = _heldout._evaluate_split
    calls = []

    def killed_at_the_second_split(adata, split, **kwargs):
        calls.append(split.name)
        if split.name == "second":
            raise KeyboardInterrupt  # the run is killed while it trains the second split
        return evaluate_split(adata, split, **kwargs)

    monkeypatch.setattr(_heldout, "_evaluate_split", killed_at_the_second_split)
    folder = tmp_path / "checkpoint"
    with pytest.raises(KeyboardInterrupt):
        sv.evaluate.interventional_nll_report(small_simulation(), checkpoint_dir=folder, **OPTIONS)
    assert sorted(p.name for p in folder.iterdir()) == ["first.csv", "settings.json"]

    calls.clear()
    monkeypatch.setattr(
        _heldout, "_evaluate_split", lambda adata, split, **kwargs: (
            calls.append(split.name) or evaluate_split(adata, split, **kwargs)
        ),
    )  # fmt: skip
    resumed = sv.evaluate.interventional_nll_report(
        small_simulation(), checkpoint_dir=folder, **OPTIONS
    )
    assert calls == ["second"]  # the finished split is read, not trained again
    pd.testing.assert_frame_equal(resumed, uninterrupted)
    assert resumed.attrs["splits"] == uninterrupted.attrs["splits"]


def test_a_checkpoint_of_other_settings_is_refused(tmp_path):
    folder = tmp_path / "checkpoint"
    options = {**OPTIONS, "methods": ("vae",), "heldout": {"first": ["P4"]}}
    sv.evaluate.interventional_nll_report(small_simulation(), checkpoint_dir=folder, **options)
    with pytest.raises(ValueError, match=r"other settings \(\['max_epochs'\]\).*another folder"):
        sv.evaluate.interventional_nll_report(
            small_simulation(), checkpoint_dir=folder, **{**options, "max_epochs": 4}
        )


def test_the_cli_report_resumes_with_resume(tmp_path, capsys):
    from sparsevae.cli import main

    path = tmp_path / "screen.h5ad"
    small_simulation().write_h5ad(path)
    out = tmp_path / "report"
    command = ["report", str(path), "--perturbation-key", "perturbation", "--control", "control"]
    command += ["--methods", "vae", "--heldout", "P4,P5", "--max-epochs", "2", "--n-latent", "3"]
    command += ["--n-particles", "2", "--n-top-genes", "all", "--out", str(out)]
    assert main([*command, "--resume"]) == 2  # nothing to continue yet
    assert "no report to continue" in capsys.readouterr().err
    assert main(command) == 0
    assert (out / "checkpoint" / "settings.json").exists()
    first = pd.read_csv(out / "report.csv")
    assert main([*command, "--resume"]) == 0  # every split read back: the same table
    pd.testing.assert_frame_equal(pd.read_csv(out / "report.csv"), first)
    epochs = command.index("--max-epochs") + 1
    changed = [*command[:epochs], "3", *command[epochs + 1 :]]
    assert main([*changed, "--resume"]) == 2
    assert "other settings (['max_epochs'])" in capsys.readouterr().err
