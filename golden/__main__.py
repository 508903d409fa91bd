"""Entry point for ``python -m golden``."""

import sys


def main() -> int:
    print("assay-golden: not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
