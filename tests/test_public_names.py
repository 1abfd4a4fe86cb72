"""The warning and errors sparsevae raises for users are importable from public modules."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import sparsevae as sv

PUBLIC = ("EmptyGraphWarning", "NonFiniteLossError", "UnsafeModelFileError")
#: Modules whose exception classes never reach users: the CLI catches its own and prints them.
_NOT_FOR_USERS = {"sparsevae.cli", "sparsevae.__main__"}


def test_warning_and_errors_import_from_the_package_and_model():
    from sparsevae import EmptyGraphWarning, NonFiniteLossError, UnsafeModelFileError
    from sparsevae.model import EmptyGraphWarning as ModelEmptyGraphWarning
    from sparsevae.model import NonFiniteLossError as ModelNonFiniteLossError
    from sparsevae.model import UnsafeModelFileError as ModelUnsafeModelFileError

    assert EmptyGraphWarning is ModelEmptyGraphWarning
    assert NonFiniteLossError is ModelNonFiniteLossError
    assert UnsafeModelFileError is ModelUnsafeModelFileError
    assert issubclass(EmptyGraphWarning, UserWarning)
    assert issubclass(NonFiniteLossError, FloatingPointError)
    for name in PUBLIC:
        assert name in sv.__all__ and name in sv.model.__all__


def test_the_private_paths_still_work():
    from sparsevae.model._graph_warning import EmptyGraphWarning
    from sparsevae.model._guards import NonFiniteLossError
    from sparsevae.model._safe_load import UnsafeModelFileError

    assert (EmptyGraphWarning, NonFiniteLossError, UnsafeModelFileError) == (
        sv.EmptyGraphWarning,
        sv.NonFiniteLossError,
        sv.UnsafeModelFileError,
    )


def _package_classes():
    for info in pkgutil.walk_packages(sv.__path__, prefix="sparsevae."):
        if info.name in _NOT_FOR_USERS:
            continue
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == info.name and issubclass(cls, Warning | Exception):
                yield cls


@pytest.mark.parametrize("cls", sorted(_package_classes(), key=lambda c: c.__qualname__))
def test_every_warning_and_error_class_is_public(cls):
    """From the package and from its own subpackage (``sv.model``, ``sv.evaluate``, ...), or
    from the package's ``__all__`` when it is defined in a top-level module (shared by several
    subpackages, e.g. ``sparsevae._checkpoint``).
    """
    assert getattr(sv, cls.__name__, None) is cls
    part = cls.__module__.split(".")[1]
    if part.startswith("_"):  # a top-level private module
        assert cls.__name__ in sv.__all__
        return
    subpackage = getattr(sv, part)
    assert getattr(subpackage, cls.__name__, None) is cls
    assert cls.__name__ in subpackage.__all__


def test_the_api_reference_lists_them():
    api = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()
    for name in PUBLIC:
        assert f"model.{name}" in api, name
