"""The tutorials run top to bottom: each is executed in its fast mode (``SPARSEVAE_FAST=1``)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).parents[1]
TUTORIALS = ROOT / "tutorials"
NOTEBOOKS = ["01_simulation.ipynb", "02_norman2019.ipynb"]


def _stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


def _has_figure(cell) -> bool:
    return any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_tutorial_shows_a_full_run(name):
    """The committed notebook holds the outputs of a full (not fast) run, every cell executed."""
    notebook = nbformat.read(TUTORIALS / name, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count is not None for cell in code)
    assert "fast mode: False" in _stdout(code[0])
    errors = [o for cell in code for o in cell.outputs if o.output_type == "error"]
    assert not errors


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_tutorial_runs_in_fast_mode(name, tmp_path, monkeypatch):
    notebook = nbformat.read(TUTORIALS / name, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    monkeypatch.setenv("SPARSEVAE_FAST", "1")
    # The kernel is a new process: make it import this checkout's package.
    paths = [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    # Fast mode trains tiny models: one thread is fastest and does not oversubscribe shared
    # CI cores. Numba's too: scanpy's numba code resets OpenMP's thread count, torch's included.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("NUMBA_NUM_THREADS", "1")
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # files the notebook writes go here
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "fast mode: True" in _stdout(code[0])
    plotting = [cell for cell in code if "sv.pl." in cell.source]
    assert plotting and all(_has_figure(cell) for cell in plotting)
