"""Writing AnnData to ``.h5ad`` whatever pandas makes of its strings.

pandas 3 (and pandas 2 with ``future.infer_string``) stores strings as ``StringDtype`` arrays:
every ``obs_names``, ``var_names`` and label column a user reads or builds. anndata writes
those only when ``anndata.settings.allow_write_nullable_strings`` is set (off by default, for
readers older than anndata 0.11), so a plain ``adata.write_h5ad`` fails there. The package writes
through :func:`write_h5ad`, which allows them for that one write and leaves the user's setting
as it was.
"""

from __future__ import annotations

import os

import anndata
from anndata import AnnData


def write_h5ad(adata: AnnData, path: str | os.PathLike) -> None:
    """``adata.write_h5ad(path)``, allowing pandas' string arrays where anndata has the setting."""
    settings = anndata.settings
    if hasattr(settings, "allow_write_nullable_strings"):
        with settings.override(allow_write_nullable_strings=True):
            adata.write_h5ad(path)
    else:  # anndata < 0.11 has no such setting (and writes what it can)
        adata.write_h5ad(path)
