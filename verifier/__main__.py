"""Entry point for ``python -m verifier`` and the ``assay-verifier`` console script."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
