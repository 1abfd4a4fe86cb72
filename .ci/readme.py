"""Run the README's set-up commands exactly as written, so that README and CI cannot drift.

The commands are the non-comment lines of the first ``bash`` block under the README heading
``## Install and run``; each is announced by a comment ``# N. ...``. ``python .ci/readme.py N``
runs command N (1: install and demo, 2: tests) in bash from the repository root, line by line,
and exits with the first non-zero status. ``--print`` only prints the commands.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADING = "## Install and run"


def readme_commands(readme: Path = ROOT / "README.md") -> dict[int, list[str]]:
    """Command number -> its shell lines, from the first bash block under ``HEADING``."""
    text = readme.read_text(encoding="utf-8")
    start = text.find(HEADING)
    if start < 0:
        raise SystemExit(f"{readme}: no heading {HEADING!r}")
    block = re.search(r"```bash\n(.*?)```", text[start:], flags=re.DOTALL)
    if block is None:
        raise SystemExit(f"{readme}: no ```bash block under {HEADING!r}")
    commands: dict[int, list[str]] = {}
    number = None
    for line in block.group(1).splitlines():
        label = re.match(r"#\s*(\d+)\.", line.strip())
        if label:
            number = int(label.group(1))
            commands[number] = []
        elif line.strip() and not line.lstrip().startswith("#"):
            if number is None:
                raise SystemExit(f"{readme}: command {line!r} comes before any '# 1.' label")
            commands[number].append(line.strip())
    return commands


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("number", type=int, help="which README command to run")
    parser.add_argument("--print", action="store_true", help="print the lines, run nothing")
    args = parser.parse_args()
    commands = readme_commands()
    if args.number not in commands or not commands[args.number]:
        raise SystemExit(f"README.md has no command {args.number}; it has {sorted(commands)}")
    for line in commands[args.number]:
        if args.print:
            print(line)
            continue
        print(f"+ {line}", flush=True)
        start = time.perf_counter()
        code = subprocess.run(["bash", "-euo", "pipefail", "-c", line], cwd=ROOT).returncode
        print(f"  ({time.perf_counter() - start:.0f} s, exit {code})", flush=True)
        if code != 0:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
