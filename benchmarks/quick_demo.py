"""Wall time of the README's quick demo, ``sparsevae demo --quick``, and of importing the package.

Runs ``sparsevae demo --quick --seed SEED --out TMP`` in a fresh process ``--repeats`` times
(the whole command as a newcomer runs it: start-up, imports, simulation, five trainings of 50
epochs, scores and figures) and ``python -c "import sparsevae"`` as often (the part of it that
is importing torch, Lightning and scvi-tools), and writes ``results/quick_demo.md`` with the
times, the machine and the demo's printed table. The thread settings are the caller's: run it
with nothing else on the machine to measure what a newcomer sees.

Usage::

    python benchmarks/quick_demo.py              # 3 runs
    python benchmarks/quick_demo.py --repeats 1
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, done.stdout


def main() -> None:
    from _provenance import provenance

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    demo, imports, printed = [], [], ""
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as out:
            seconds, printed = timed(
                ["sparsevae", "demo", "--quick", "--seed", str(args.seed), "--out", out]
            )
        demo.append(seconds)
        imports.append(timed([sys.executable, "-c", "import sparsevae"])[0])
        print(f"demo {seconds:.1f} s, import {imports[-1]:.1f} s", flush=True)
    threads = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ}
    lines = [
        "# The quick demo's wall time",
        "",
        provenance(),
        "",
        f"`sparsevae demo --quick --seed {args.seed} --out TMP` in a fresh process, "
        f"{args.repeats} run(s); {platform.machine()}, {os.cpu_count()} CPU cores, Python "
        f"{platform.python_version()}, thread settings {threads or 'none (the defaults)'}.",
        "",
        "| run | demo, s | `import sparsevae`, s |",
        "|---|---|---|",
        *[
            f"| {i} | {d:.1f} | {m:.1f} |"
            for i, (d, m) in enumerate(zip(demo, imports, strict=True), 1)
        ],
        "",
        f"Median: demo {statistics.median(demo):.1f} s, import {statistics.median(imports):.1f} s.",
        "",
        "The demo's printed table (last run):",
        "",
        "```",
        printed.strip(),
        "```",
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quick_demo.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
