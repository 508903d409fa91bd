"""Entry point for ``python -m agent`` and the ``assay-agent`` script."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """The CLI; without tpm2-pytss (``pip install assay`` without ``[agent]``) one line, exit 2."""
    try:
        from ._cli import main as cli_main
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "tpm2_pytss":
            raise
        print(
            "assay-agent: tpm2-pytss is not installed: pip install 'assay[agent]', then "
            "python -m agent.lean_tss (docs/agent.md, 'Installing on a node')",
            file=sys.stderr,
        )
        return 2
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
