"""The package as users get it: run from a fresh environment holding only the built wheel.

Run by ``.ci/run`` with that environment's python, from an empty folder outside the checkout
(so nothing is imported from ``src/``). It checks that the wheel carries its data, that the
installed console script runs ``fit`` and ``report`` on a tiny screen with their defaults
(only epochs and particles kept small) and writes every output it promises.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path


def run(*command: str) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def main() -> int:
    import sparsevae as sv

    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    where = Path(sv.__file__).resolve()
    if site not in where.parents:
        raise SystemExit(f"sparsevae imported from {where}, not from the environment's {site}")
    print(f"sparsevae {sv.__version__} from {where.parent}")

    norman = sv.data.norman2019_subset()
    print(f"norman2019_subset(): {norman.n_obs} cells x {norman.n_vars} genes")
    assert norman.n_obs > 0 and "perturbation" in norman.obs

    tiny = sv.data.simulate_sparse_shift(
        n_perturbations=6,
        n_cells_per_perturbation=30,
        n_latent=4,
        n_genes=24,
        decoder_width=12,
        random_state=0,
    )
    tiny.write_h5ad("tiny.h5ad")
    script = str(Path(sys.executable).parent / "sparsevae")
    required = ["tiny.h5ad", "--perturbation-key", "perturbation", "--control", "control"]
    run(script, "fit", *required, "--out", "fit_out", "--max-epochs", "3")
    for name in ("model/model.pt", "results.h5ad", "pi.csv", "targets.csv", "summary.json"):
        assert (Path("fit_out") / name).exists(), f"sparsevae fit did not write {name}"
    run(
        script,
        "report",
        *required,
        "--out",
        "report_out",
        "--max-epochs",
        "3",
        "--n-particles",
        "5",
    )
    for name in ("report.md", "report.csv", "splits.csv", "interventional_nll.png"):
        assert (Path("report_out") / name).exists(), f"sparsevae report did not write {name}"
    print("package check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
