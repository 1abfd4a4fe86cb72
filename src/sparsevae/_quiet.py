"""One place for keeping Lightning and scvi-tools quiet in scripts, the CLI and tests."""

from __future__ import annotations

import logging
import warnings

#: Trainer arguments for runs whose progress nobody watches (benchmarks, reports, tests).
QUIET_TRAINER = {
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "enable_checkpointing": False,
}

_NOISY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric", "scvi")


def silence_lightning() -> None:
    """Raise Lightning's and scvi-tools' log level to ERROR and drop their routine warnings."""
    import lightning  # noqa: F401  (configures its loggers on import; quiet them afterwards)

    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*fewer than 3 cells.*")
