"""The ``assay-verifier`` / ``python -m verifier`` command line.

One parser, one top-level error handler: a domain error becomes one line on stderr and an exit
code, never a traceback. Each command group lives in its own ``_cmd_*`` module that registers its
sub-parsers and sets ``func`` (a callable taking the parsed namespace and returning an exit code).

Exit codes: 0 success / trusted / valid, 1 invalid or untrusted, 2 malformed input or usage,
3 unknown verdict, 4 configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from assay.errors import AssayError, ConfigurationError, MalformedEvidence

from . import __version__

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_MALFORMED = 2
EXIT_UNKNOWN = 3
EXIT_CONFIG = 4

Registrar = Callable[[Any], None]


def _registrars() -> list[Registrar]:
    """The command groups, each in its own module (imported here: they use this module's helpers)."""
    from . import _cmd_ear, _cmd_eventlog, _cmd_ima, _cmd_k8s, _cmd_quote, _cmd_service

    return [
        _cmd_eventlog.register,
        _cmd_quote.register,
        _cmd_service.register,
        _cmd_ima.register,
        _cmd_ear.register,
        _cmd_k8s.register,
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="assay-verifier",
        description="Assay verifier: parse and replay TPM event logs, verify quotes, "
        "appraise boots against golden measurements, and run the attestation service.",
    )
    parser.add_argument("--version", action="version", version=f"assay-verifier {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _registrars():
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except MalformedEvidence as exc:
        _error(str(exc))
        return EXIT_MALFORMED
    except ConfigurationError as exc:
        _error(str(exc))
        return EXIT_CONFIG
    except AssayError as exc:
        _error(str(exc))
        return EXIT_INVALID
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        _error(f"{where}{exc.strerror or exc}")
        return EXIT_MALFORMED
    except KeyboardInterrupt:
        return 130


def _error(message: str) -> None:
    print(f"assay-verifier: error: {message}", file=sys.stderr)


def read_input(path: str, what: str, *, limit: int) -> bytes:
    """Read a file the user named; refuse ones larger than ``limit`` bytes before reading them."""
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise MalformedEvidence(f"{what} is larger than {limit} bytes", where=path)
    return data
