"""Saved models open under numpy 1.x and 2.x alike (``numpy.core`` / ``numpy._core``)."""

from __future__ import annotations

import importlib.util
import sys
import types
import zipfile

import numpy as np
import torch

from sparsevae.model import _safe_load
from sparsevae.model._safe_load import read_model_file

SOURCE = _safe_load.__file__


def _fresh_copy(name: str) -> types.ModuleType:
    """``_safe_load`` executed again under another name (the package's copy stays as is)."""
    spec = importlib.util.spec_from_file_location(name, SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _allowed_names(module) -> dict:
    return {entry[1]: entry[0] for entry in module.ALLOWED_GLOBALS if isinstance(entry, tuple)}


def test_the_allowlist_builds_with_numpy_1_layout(monkeypatch):
    """Under numpy 1.x: no ``np._core``; ``_reconstruct`` is in ``numpy.core.multiarray``."""

    def reconstruct(*args):  # numpy 1.x's function, as far as this module can tell
        raise AssertionError("not called")

    legacy = types.ModuleType("numpy.core.multiarray")
    legacy._reconstruct = reconstruct
    monkeypatch.delattr(np, "_core")
    monkeypatch.setitem(sys.modules, "numpy._core.multiarray", None)  # import fails
    monkeypatch.setitem(sys.modules, "numpy.core.multiarray", legacy)
    module = _fresh_copy("_safe_load_under_numpy_1")
    names = _allowed_names(module)
    assert names["numpy.core.multiarray._reconstruct"] is reconstruct
    assert names["numpy._core.multiarray._reconstruct"] is reconstruct


def test_the_allowlist_names_both_layouts_under_this_numpy():
    names = _allowed_names(_safe_load)
    from numpy._core.multiarray import _reconstruct  # numpy 2, and numpy 1.26's stub

    assert names["numpy._core.multiarray._reconstruct"] is _reconstruct
    assert names["numpy.core.multiarray._reconstruct"] is _reconstruct


def _with_numpy_1_names(path):
    """Rewrite a torch file's pickle as numpy 1.x writes it: ``numpy.core.multiarray``."""
    with zipfile.ZipFile(path) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    (pickle_name,) = [name for name in entries if name.endswith("/data.pkl")]
    data = entries[pickle_name]
    assert b"numpy._core.multiarray\n_reconstruct\n" in data or b"numpy.core.multiarray" in data
    entries[pickle_name] = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)


def test_a_file_written_with_numpy_1_names_loads(tmp_path):
    path = tmp_path / "model.pt"
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    torch.save({"attr_dict": {"values_": values}}, path, pickle_protocol=2)
    _with_numpy_1_names(path)
    assert b"numpy.core.multiarray" in path.read_bytes()
    contents = read_model_file(path)
    np.testing.assert_array_equal(contents["attr_dict"]["values_"], values)
