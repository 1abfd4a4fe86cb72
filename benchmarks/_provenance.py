"""How a results file was made: the command that wrote it and the commit it ran at.

Every benchmark that writes ``benchmarks/results/*.md`` puts :func:`provenance` under the
file's title, and ``tests/test_published_figures.py`` checks that every results file names
both. Import it inside ``main()`` (``from _provenance import provenance``): run as
``python benchmarks/NAME.py``, the script's folder is on ``sys.path``.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def commit() -> str:
    """``git rev-parse --short HEAD``, marked when tracked files have uncommitted changes.

    ``SPARSEVAE_COMMIT`` overrides it (a copy of the tree without ``.git``, on another
    machine); without either, ``"unknown (not a git checkout)"``.
    """
    if os.environ.get("SPARSEVAE_COMMIT"):
        return os.environ["SPARSEVAE_COMMIT"]
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{head} (with uncommitted changes)" if dirty else head


def command() -> str:
    """The command line of this process, as run from the project's root."""
    script = Path(sys.argv[0]).resolve()
    name = script.relative_to(ROOT).as_posix() if script.is_relative_to(ROOT) else script.name
    return shlex.join(["python", name, *sys.argv[1:]])


def provenance() -> str:
    """One Markdown line: ``Command: `python benchmarks/...`; commit abc1234.``."""
    return f"Command: `{command()}`; commit {commit()}."


def cpu_model() -> str:
    """The processor's name (``/proc/cpuinfo``), for the machine line of a results file."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def write_results(folder: Path, name: str, title: str, description: str, table) -> str:
    """Write ``name.csv`` and ``name.md`` (title, :func:`provenance`, description, table).

    ``table`` is a DataFrame; the Markdown shows it rounded to 3 digits. Returns the Markdown.
    """
    made_at = provenance()  # first: the csv below may be a tracked file this run changes
    table.to_csv(folder / f"{name}.csv", index=False)
    text = "\n\n".join(
        [f"# {title}", made_at, description, table.round(3).to_markdown(index=False)]
    )
    (folder / f"{name}.md").write_text(text + "\n")
    return text
