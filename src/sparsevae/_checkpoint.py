"""Folders where long computations keep their finished parts, so a killed call resumes.

The held-out report (finished splits) and edge stability (finished runs) write their parts into
a ``checkpoint_dir`` beside the call's settings (``settings.json``). A later call with the same
folder reads the finished parts instead of computing them again; one with other settings is
refused, naming them, since the parts would not belong to it.
"""

from __future__ import annotations

import json
from pathlib import Path


class CheckpointMismatchError(ValueError):
    """A ``checkpoint_dir`` holds the finished parts of a call with other settings."""


def open_checkpoint(folder: str | Path, settings: dict, what: str) -> Path:
    """Create ``folder`` with ``settings.json``, or check that the settings there are these.

    ``settings`` must be JSON-serialisable up to ``str`` of odd values (compared as they read
    back). ``what`` names the computation in the error (e.g. ``"a report"``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "settings.json"
    settings = json.loads(json.dumps(settings, default=str))  # as it reads back
    if path.exists():
        saved = json.loads(path.read_text())
        differ = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        if differ:
            raise CheckpointMismatchError(
                f"checkpoint_dir={str(folder)!r} holds {what} with other settings ({differ}); "
                f"its finished parts would not belong to this one. Use another folder, or "
                "delete this one to start afresh."
            )
    else:
        path.write_text(json.dumps(settings))
    return folder
