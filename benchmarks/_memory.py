"""Peak memory of a benchmark process (shared by ``speed.py`` and ``scaling.py``)."""

from __future__ import annotations

import resource


def peak_rss_gib() -> float:
    """Peak resident memory of this process in GiB.

    On Linux, ``VmHWM``: unlike ``ru_maxrss``, which a spawned child inherits from the parent it
    was forked from, it starts afresh at exec.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20  # KiB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
