"""``python -m sparsevae``: the command line (see :mod:`sparsevae.cli`)."""

import sys

from sparsevae.cli import main

if __name__ == "__main__":
    sys.exit(main())
