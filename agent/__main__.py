"""Entry point for ``python -m agent``."""

import sys


def main() -> int:
    print("assay-agent: not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
