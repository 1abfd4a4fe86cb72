"""Opening a saved model runs no code: restricted unpickling of ``model.pt``.

scvi-tools 1.4 reads model files with ``torch.load(..., weights_only=False)``, which unpickles
without restriction: a crafted ``model.pt`` runs any code it likes the moment it is opened.
Here every ``model.pt`` is read with ``weights_only=True`` and an explicit allowlist of the
types the package writes (numpy arrays, their dtypes, and bytes as protocol 2 encodes them);
a file that asks for anything else is refused before any of it runs
(:class:`UnsafeModelFileError`), unless the user opts in with ``trust_file=True``.

What :meth:`SparseVAE.save <sparsevae.SparseVAE.save>` writes fits that list: the training
history as plain arrays (:func:`plain_attributes`) rather than DataFrames, and the registry as
plain dicts. Files saved by 0.1.0 hold DataFrames and a ``defaultdict``; their pickled pandas
objects are rebuilt by :data:`_LEGACY_STAND_INS`, data-only stand-ins that record the
arrays they are given, so no pandas code runs on the file's contents either.
"""

from __future__ import annotations

import collections
import importlib
import io
import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

#: Keyword that opts in to unrestricted unpickling (documented on ``SparseVAE.load``).
TRUST_KEYWORD = "trust_file"
MODEL_FILE = "model.pt"

# numpy arrays: ``_reconstruct`` makes an empty array, ``ndarray.__setstate__`` fills it from
# raw bytes (or, for object arrays, from already-unpickled elements), for these dtypes only.
_DTYPES = (
    np.dtypes.BoolDType,
    np.dtypes.Int8DType,
    np.dtypes.Int16DType,
    np.dtypes.Int32DType,
    np.dtypes.Int64DType,
    np.dtypes.UInt8DType,
    np.dtypes.UInt16DType,
    np.dtypes.UInt32DType,
    np.dtypes.UInt64DType,
    np.dtypes.Float16DType,
    np.dtypes.Float32DType,
    np.dtypes.Float64DType,
    np.dtypes.StrDType,
    np.dtypes.ObjectDType,
)


def _numpy_reconstruct():
    """The ``_reconstruct`` of numpy, which every pickled array names.

    numpy 2 keeps it in ``numpy._core.multiarray``; numpy 1.x in ``numpy.core.multiarray``
    (1.26 also answers ``import numpy._core.multiarray``, but has no ``np._core`` attribute).
    """
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)._reconstruct
        except (ImportError, AttributeError):
            continue
    raise ImportError("numpy has no multiarray._reconstruct (neither numpy 1.x nor 2.x layout)")


_RECONSTRUCT = _numpy_reconstruct()


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol 2 uses it for bytes, and nothing else."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


def _empty_bytes() -> bytes:
    """``bytes()`` as protocol 2 writes ``b""``; no size argument (no memory bombs)."""
    return b""


#: Everything a model file written by this package may ask for (beyond torch's own tensors).
ALLOWED_GLOBALS: list = [
    np.ndarray,
    np.dtype,
    # Under both names: files written with numpy 2 name ``numpy._core``, with numpy 1.x
    # ``numpy.core``; either loads under either numpy.
    (_RECONSTRUCT, "numpy._core.multiarray._reconstruct"),
    (_RECONSTRUCT, "numpy.core.multiarray._reconstruct"),
    *_DTYPES,
    (_latin1_bytes, "_codecs.encode"),
    (_empty_bytes, "builtins.bytes"),
]


# ---- 0.1.0 files: data-only stand-ins for the pandas objects and defaultdict they hold ----
class _Recorded:
    """Stands in for a pickled class: keeps the arguments and state it is given, runs nothing."""

    def __init__(self, *args):
        self.args, self.state = args, None

    def __setstate__(self, state):
        self.state = state


class _RecordedFrame(_Recorded):
    """``pandas.core.frame.DataFrame`` while unpickling."""


class _RecordedBlockManager(_Recorded):
    """``pandas.core.internals.managers.BlockManager`` while unpickling."""


class _RecordedIndexClass:
    """``pandas.core.indexes.base.Index``: only passed to ``_new_Index`` as the class."""


def _recorded_index(cls, state: dict) -> pd.Index:
    if not isinstance(state, dict) or not isinstance(state.get("data"), np.ndarray):
        raise pickle.UnpicklingError("pandas Index in a saved model without array data")
    return pd.Index(state["data"], name=state.get("name"))


def _recorded_block(values, placement, ndim=2):
    if not isinstance(values, np.ndarray):
        raise pickle.UnpicklingError("pandas block in a saved model without array values")
    return values, placement


def _recorded_defaultdict(default_factory=None):
    # A plain dict receives the items; field_registries becomes a defaultdict again later.
    return {}


_LEGACY_STAND_INS: list = [
    (_RecordedFrame, "pandas.core.frame.DataFrame"),
    (_RecordedBlockManager, "pandas.core.internals.managers.BlockManager"),
    (_RecordedIndexClass, "pandas.core.indexes.base.Index"),
    (_recorded_index, "pandas.core.indexes.base._new_Index"),
    (_recorded_block, "pandas._libs.internals._unpickle_block"),
    (_recorded_defaultdict, "collections.defaultdict"),
    slice,  # block placements
    dict,  # the defaultdict's factory
]


def _frame_from_record(record: _RecordedFrame) -> pd.DataFrame:
    """A DataFrame from the recorded ``BlockManager(blocks, axes)`` of a 0.1.0 history."""
    manager = record.state.get("_mgr") if isinstance(record.state, dict) else None
    if not isinstance(manager, _RecordedBlockManager) or len(manager.args) != 2:
        raise pickle.UnpicklingError("a DataFrame in the saved model without its blocks")
    blocks, (columns, index) = manager.args
    values = np.empty((len(index), len(columns)), dtype=object)
    for block_values, placement in blocks:
        values[:, placement] = np.asarray(block_values).T
    return pd.DataFrame(values, index=index, columns=columns).infer_objects()


class UnsafeModelFileError(pickle.UnpicklingError):
    """A model file asks for a type outside the allowlist: it was refused, nothing ran."""


def _refusal(path: Path, data: bytes, error: Exception) -> UnsafeModelFileError:
    # torch lists the file's globals outside the allowlist by reading opcodes only.
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data))
    if unsafe:
        what = f"the type{'s' if len(unsafe) > 1 else ''} {', '.join(map(repr, unsafe))}"
    else:
        found = re.search(r"but got <class '([^']+)'>", str(error))
        what = f"the type {found.group(1)!r}" if found else "an operation outside the allowlist"
    return UnsafeModelFileError(
        f"{path} asks for {what}, which sparsevae never writes into a model file, so it was "
        "refused before any of it ran: the file may not be safe to open (a pickled object can "
        "run any code when it is loaded). If you trust its source (you saved it yourself, or "
        f"with another tool that pickles such objects), load it anyway with "
        f"SparseVAE.load(..., {TRUST_KEYWORD}=True)."
    )


def read_model_file(path: str | Path, *, trust_file: bool = False) -> dict:
    """The contents of a ``model.pt``, read without running code from it.

    Parameters
    ----------
    path
        The ``model.pt`` file.
    trust_file
        Unpickle without restriction (``weights_only=False``), for files from a trusted
        source that hold other types.

    Raises
    ------
    UnsafeModelFileError
        If the file asks for a type outside :data:`ALLOWED_GLOBALS` (and, for files saved
        by 0.1.0, their pandas history); nothing from the file runs.
    """
    path = Path(path)
    data = path.read_bytes()  # read once: what is checked is what is loaded
    if trust_file:
        contents = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    else:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS + _LEGACY_STAND_INS):
            try:
                contents = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as error:
                raise _refusal(path, data, error) from None
    return _normalised(contents)


def _normalised(contents: dict) -> dict:
    """Rebuild what ``save`` stores in plain form.

    The history's DataFrames and the registry's ``defaultdict``.
    """
    attributes = contents.get("attr_dict", {})
    history = attributes.get("history_")
    if isinstance(history, dict):
        attributes["history_"] = {key: _history_frame(value) for key, value in history.items()}
    registry = attributes.get("registry_")
    if isinstance(registry, dict) and isinstance(registry.get("field_registries"), dict):
        fields = collections.defaultdict(dict)
        fields.update(registry["field_registries"])
        registry["field_registries"] = fields
    return contents


def _history_frame(value) -> pd.DataFrame:
    if isinstance(value, pd.DataFrame):
        return value
    if isinstance(value, _RecordedFrame):
        return _frame_from_record(value)
    if isinstance(value, dict) and set(value) == {"index", "index_name", "columns", "values"}:
        return pd.DataFrame(
            value["values"],
            index=pd.Index(value["index"], name=value["index_name"]),
            columns=list(value["columns"]),
        )
    return value


def plain_attributes(history: dict | None, registry: dict) -> tuple[dict | None, dict]:
    """``history_`` and ``registry_`` as ``save`` writes them: arrays, lists and plain dicts.

    Each history DataFrame becomes ``{"index", "index_name", "columns", "values"}`` (numeric
    values as float64), and the registry's ``defaultdict`` of field registries a dict, so the
    file needs only :data:`ALLOWED_GLOBALS` to be read back.
    """
    plain_history = None
    if history is not None:
        plain_history = {}
        for key, frame in history.items():
            if not isinstance(frame, pd.DataFrame):
                plain_history[key] = frame
                continue
            values = frame.to_numpy()
            try:
                values = values.astype(np.float64)
            except (TypeError, ValueError):
                pass  # kept as is; a type outside the allowlist is refused at load, not lost
            plain_history[key] = {
                "index": frame.index.to_numpy(),
                "index_name": frame.index.name,
                "columns": [str(c) for c in frame.columns],
                "values": values,
            }
    plain_registry = dict(registry)
    if isinstance(registry.get("field_registries"), dict):
        plain_registry["field_registries"] = dict(registry["field_registries"])
    return plain_history, plain_registry


class SafeSaveLoadMixin:
    """``save`` and ``load`` of :class:`~sparsevae.SparseVAE` in scvi-tools' format.

    Every ``model.pt`` is read by :func:`read_model_file`: no code runs from the file.
    """

    def save(self, dir_path: str, *args, **kwargs) -> None:
        """Save the model as scvi-tools does (``model.pt``, optionally ``adata.h5ad``).

        Parameters are those of :meth:`scvi.model.base.BaseModelClass.save` (``prefix``,
        ``overwrite``, ``save_anndata``, ...). The training history and the registry are
        written as plain arrays and dicts (:func:`plain_attributes`), so that :meth:`load`
        reads the file with ``weights_only=True`` and a short allowlist.
        """
        history, registry = getattr(self, "history_", None), self.registry_
        self.history_, self.registry_ = plain_attributes(history, registry)
        try:
            super().save(dir_path, *args, **kwargs)
        finally:
            self.history_, self.registry_ = history, registry

    @classmethod
    def load(
        cls,
        dir_path: str,
        adata=None,
        *,
        trust_file: bool = False,
        **kwargs,
    ):
        """Load a model saved with :meth:`save`, without running code from the file.

        Parameters
        ----------
        dir_path
            Directory of the saved model.
        adata
            Data to attach (registered with the saved setup); default: the AnnData saved with
            the model (``save(..., save_anndata=True)``).
        trust_file
            ``False`` (default): ``model.pt`` is unpickled with ``weights_only=True`` and an
            allowlist of the types sparsevae writes; a file that asks for any other type is
            refused before any of it runs. ``True``: unpickle without restriction, which can
            run code from the file; only for files whose source you trust.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.load` (``accelerator``,
            ``device``, ``prefix``, ``backup_url``, ...).

        Raises
        ------
        UnsafeModelFileError
            (a ``pickle.UnpicklingError``) if ``model.pt`` asks for a type outside the
            allowlist; its message names the type.
        ValueError
            If ``adata``'s genes (names and order) differ from the model's, it holds
            perturbations the model has not learned (add them with :meth:`transfer` after
            loading with the training data), or no ``adata`` is given and none was saved.
        """
        import tempfile

        import anndata

        from ._matching import check_saved_model_fits

        prefix = kwargs.get("prefix") or ""
        backup_url = kwargs.pop("backup_url", None)
        model_path = Path(dir_path) / f"{prefix}{MODEL_FILE}"
        if not model_path.exists() and backup_url is not None:
            import urllib.request

            Path(dir_path).mkdir(parents=True, exist_ok=True)
            urllib.request.urlretrieve(backup_url, model_path)
        if not model_path.exists():
            raise ValueError(f"No saved model at {model_path}: save one with model.save(dir).")
        contents = read_model_file(model_path, trust_file=trust_file)
        if adata is not None:
            check_saved_model_fits(contents["attr_dict"], contents["var_names"], adata)
        else:
            saved = Path(dir_path) / f"{prefix}adata.h5ad"
            if not saved.exists():
                raise ValueError(
                    f"{dir_path} holds a model saved without its data, so load needs "
                    "adata=...: the training data or other cells with the model's genes in "
                    "the model's order (and perturbations it knows). To keep the data with "
                    "the model, save it with model.save(dir_path, save_anndata=True)."
                )
            adata = anndata.read_h5ad(saved)  # HDF5 arrays and strings: no unpickling
        # scvi-tools reads the file again with weights_only=False: give it the checked
        # contents, re-saved by this process, never the original bytes.
        with tempfile.TemporaryDirectory() as checked:
            torch.save(contents, Path(checked) / f"{prefix}{MODEL_FILE}")
            return super().load(checked, adata=adata, **kwargs)

    @staticmethod
    def load_registry(dir_path: str, prefix: str | None = None, trust_file: bool = False):
        """The registry saved with a model, read without running code from the file."""
        path = Path(dir_path) / f"{prefix or ''}{MODEL_FILE}"
        return read_model_file(path, trust_file=trust_file)["attr_dict"]["registry_"]

    @staticmethod
    def view_setup_args(dir_path: str, prefix: str | None = None, trust_file: bool = False):
        """Print the setup arguments of a saved model (read as :meth:`load_registry`)."""
        import rich.pretty  # noqa: F401  (scvi-tools 1.4 calls it without importing it)
        from scvi.data import AnnDataManager

        registry = SafeSaveLoadMixin.load_registry(dir_path, prefix, trust_file)
        AnnDataManager.view_setup_method_args(registry)
