"""``eventlog check FILE --golden G.yaml …``: appraise a log offline against golden sets.

The log's own replay is taken as the quoted state (``assume_quoted_for_review``): this reviews what
a log says, it proves nothing about a node. Exit 0 trusted, 1 untrusted, 3 unknown, 2 malformed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from assay.algorithms import HashAlg
from assay.errors import MalformedEvidence, VerificationFailed
from assay.eventlog import MAX_LOG_SIZE, assume_quoted_for_review, parse_event_log

from ._cli import EXIT_INVALID, EXIT_MALFORMED, EXIT_OK, EXIT_UNKNOWN, read_input

_EXIT = {"trusted": EXIT_OK, "untrusted": EXIT_INVALID, "unknown": EXIT_UNKNOWN}


def register_check(commands: Any) -> None:
    check = commands.add_parser("check", help="appraise an event log against golden sets (review)")
    check.add_argument("file", help="binary event log")
    check.add_argument(
        "--golden",
        action="append",
        required=True,
        metavar="G.yaml",
        help="golden set (YAML, or CoRIM if it ends in .cbor/.corim); repeatable",
    )
    check.add_argument("--bank", default="sha256", help="PCR bank to appraise (default sha256)")
    check.add_argument("--json", action="store_true", help="print the verdict as JSON")
    check.set_defaults(func=_run)


def _load(path: str) -> Any:
    from golden.corim import import_corim
    from golden.yamlfmt import load_yaml_file

    if path.endswith((".cbor", ".corim")):
        with open(path, "rb") as fh:
            return import_corim(fh.read(), path)
    return load_yaml_file(path)


def _run(args: argparse.Namespace) -> int:
    from .appraisal import appraise, compile_golden

    try:
        bank = HashAlg.from_bank(args.bank)
    except ValueError as exc:
        raise MalformedEvidence(str(exc), where="--bank") from None
    sets = [_load(p) for p in args.golden]
    log = parse_event_log(read_input(args.file, "event log", limit=MAX_LOG_SIZE))
    try:
        vlog = assume_quoted_for_review(log, bank)
    except VerificationFailed as exc:
        print(f"assay-verifier: error: {args.file}: {exc}", file=sys.stderr)
        return EXIT_MALFORMED
    verdict = appraise(vlog, compile_golden(sets))
    if args.json:
        print(json.dumps(verdict.to_json(), indent=2))
    else:
        for c in verdict.checks:
            if c.status != "pass":
                print(f"{c.status.upper():8} {c.id:28} {c.reason}: {c.message}")
        print(f"{verdict.status}: {verdict.reason}")
    return _EXIT[verdict.status]
