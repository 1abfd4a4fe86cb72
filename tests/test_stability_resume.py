"""Edge stability at scale: a killed call resumes from its checkpoint with the same table, and
parallel runs read a backed file without copying it into the workers.
"""

from __future__ import annotations

import anndata
import pandas as pd
import pytest
import torch

import sparsevae as sv
from sparsevae._io import write_h5ad
from sparsevae.tl import _stability

from .conftest import small_simulation

TINY = {"n_latent": 3, "n_hidden": 16, "max_epochs": 4}
SEEDS = (0, 1, 2)


def tiny_screen():
    return small_simulation(
        n_perturbations=5, n_cells_per_perturbation=25, n_latent=3, n_genes=20, decoder_width=8
    )


def _same_tables(left: dict, right: dict) -> None:
    pd.testing.assert_frame_equal(left["edges"], right["edges"])
    pd.testing.assert_frame_equal(left["matching"], right["matching"])
    timings = ["train_seconds"]  # the only column that is not a result
    pd.testing.assert_frame_equal(
        left["runs"].drop(columns=timings), right["runs"].drop(columns=timings)
    )


def test_a_killed_call_resumes_with_the_same_table(tmp_path, monkeypatch):
    adata = tiny_screen()
    sv.tl.edge_stability(adata, "perturbation", "control", seeds=SEEDS, **TINY)
    uninterrupted = adata.uns["edge_stability"]

    run = _stability._Plan.run
    calls = []

    def killed_at_the_last_seed(plan, seed, alpha):
        calls.append(seed)
        if seed == SEEDS[-1]:
            raise KeyboardInterrupt  # killed while the last run trains
        return run(plan, seed, alpha)

    monkeypatch.setattr(_stability._Plan, "run", killed_at_the_last_seed)
    folder = tmp_path / "checkpoint"
    with pytest.raises(KeyboardInterrupt):
        sv.tl.edge_stability(
            tiny_screen(), "perturbation", "control", seeds=SEEDS, checkpoint_dir=folder, **TINY
        )
    assert sorted(p.name for p in folder.iterdir()) == [
        "reference_model", "run_alpha5.0_seed0.npz", "run_alpha5.0_seed1.npz", "settings.json",
    ]  # fmt: skip

    calls.clear()
    monkeypatch.setattr(
        _stability._Plan,
        "run",
        lambda plan, seed, alpha: calls.append(seed) or run(plan, seed, alpha),
    )
    train = _stability._Plan.train
    trained = []
    monkeypatch.setattr(
        _stability._Plan, "train", lambda plan, model: trained.append(1) or train(plan, model)
    )
    resumed_data = tiny_screen()
    resumed = sv.tl.edge_stability(
        resumed_data, "perturbation", "control", seeds=SEEDS, checkpoint_dir=folder, **TINY
    )
    assert calls == [SEEDS[-1]] and len(trained) == 1  # finished runs are read, not trained
    _same_tables(resumed_data.uns["edge_stability"], uninterrupted)
    assert resumed.latent_names == list(uninterrupted["edges"]["latent"].unique())
    assert resumed.get_mask_probabilities().shape == (5, 3)  # the reference model, loaded


def test_a_checkpoint_of_other_settings_is_refused(tmp_path):
    folder = tmp_path / "checkpoint"
    options = {"seeds": (0, 1), "checkpoint_dir": folder, **TINY}
    sv.tl.edge_stability(tiny_screen(), "perturbation", "control", **options)
    with pytest.raises(sv.CheckpointMismatchError, match=r"\['seeds'\].*another folder"):
        sv.tl.edge_stability(
            tiny_screen(), "perturbation", "control", **{**options, "seeds": (0, 2)}
        )
    with pytest.raises(sv.CheckpointMismatchError, match=r"\['train_kwargs'\]"):
        sv.tl.edge_stability(
            tiny_screen(), "perturbation", "control", **{**options, "max_epochs": 5}
        )
    # what only changes the display is not a setting
    sv.tl.edge_stability(
        tiny_screen(), "perturbation", "control", enable_progress_bar=True, progress_bar=True,
        **options,
    )  # fmt: skip


def test_parallel_runs_read_a_backed_file(tmp_path):
    """A backed AnnData cannot be pickled (h5py): workers open its file instead, and give the
    table of the runs in this process.
    """
    path = tmp_path / "screen.h5ad"
    write_h5ad(tiny_screen(), path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' setting: identical arithmetic
    try:
        tables = []
        for n_jobs in (1, 2):
            backed = anndata.read_h5ad(path, backed="r")
            sv.tl.edge_stability(
                backed, "perturbation", "control", seeds=(0, 1), n_jobs=n_jobs, **TINY
            )
            tables.append(backed.uns["edge_stability"])
            backed.file.close()
    finally:
        torch.set_num_threads(threads)
    _same_tables(tables[0], tables[1])


def test_the_cli_fit_with_seeds_resumes_and_runs_in_parallel(tmp_path, capsys):
    from sparsevae.cli import main

    path = tmp_path / "screen.h5ad"
    write_h5ad(tiny_screen(), path)
    out = tmp_path / "fit"
    command = ["fit", str(path), "--perturbation-key", "perturbation", "--control", "control"]
    command += ["--n-latent", "3", "--max-epochs", "2", "--seeds", "0", "1", "--out", str(out)]
    assert main([*command, "--resume"]) == 2  # nothing to continue yet
    assert "no edge-stability fit to continue" in capsys.readouterr().err
    assert main([*command, "--jobs", "2"]) == 0
    first = pd.read_csv(out / "stability.csv")
    assert (out / "checkpoint" / "settings.json").exists()
    assert main([*command, "--resume"]) == 0  # every run read back
    pd.testing.assert_frame_equal(pd.read_csv(out / "stability.csv"), first)
    assert main([*command[:-5], "--seeds", "0", "2", "--out", str(out), "--resume"]) == 2
    assert "other settings (['seeds'])" in capsys.readouterr().err
    one_fit = ["fit", str(path), "--perturbation-key", "perturbation", "--out", str(tmp_path / "o")]
    for option in (["--resume"], ["--jobs", "2"]):
        assert main([*one_fit, *option]) == 2
        assert "is for --seeds" in capsys.readouterr().err
