"""``python -m scoresde``: the command line (see :mod:`scoresde.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
