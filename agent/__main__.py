"""Entry point for ``python -m agent`` and the ``assay-agent`` script."""

from __future__ import annotations

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
