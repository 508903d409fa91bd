"""``ear verify`` (a relying party's offline check of a node's EAR) and ``ear rotate-key``.

``ear verify TOKEN --jwks FILE|URL [--nonce HEX] [--node NAME] [--json]``: exit 0 when the token
verifies, is fresh and is affirming; 1 when it verifies but is not affirming, or is refused
(bad signature, unknown key, ``alg`` other than ES256, expired, wrong nonce, another node's);
2 when the token or the JWKS is malformed. TOKEN may be ``-`` (read stdin) or ``@FILE``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from assay.errors import MalformedEvidence, VerificationFailed

from ._cli import EXIT_INVALID, EXIT_MALFORMED, EXIT_OK, read_input

MAX_JWKS = 256 * 1024


def register(sub: Any) -> None:
    ear = sub.add_parser("ear", help="signed attestation results (EAR)").add_subparsers(
        dest="ear_command", metavar="SUBCOMMAND", required=True
    )
    verify = ear.add_parser("verify", help="check a node's EAR offline against a JWKS")
    verify.add_argument("token", help="the EAR (JWT), '-' for stdin, or @FILE")
    verify.add_argument("--jwks", required=True, metavar="FILE|URL", help="the verifier's keys")
    verify.add_argument("--nonce", metavar="HEX", help="the nonce the token must be bound to")
    verify.add_argument("--node", metavar="NAME", help="the node the token must be about")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.set_defaults(func=_verify)
    rotate = ear.add_parser("rotate-key", help="retire the EAR signing key and make a new one")
    rotate.add_argument("--config", metavar="FILE", help="verifier YAML configuration")
    rotate.add_argument("--database", metavar="URL", help="SQLAlchemy URL or SQLite file path")
    rotate.set_defaults(func=_rotate)


def _token(arg: str) -> str:
    if arg == "-":
        return sys.stdin.read(64 * 1024)
    if arg.startswith("@"):
        return read_input(arg[1:], "token", limit=64 * 1024).decode("ascii", "replace")
    return arg


def _jwks(source: str) -> dict[str, Any]:
    if source.startswith(("http://", "https://")):
        import requests

        try:
            resp = requests.get(source, timeout=5)
        except requests.RequestException as exc:
            raise MalformedEvidence(f"cannot fetch the JWKS: {exc}", where=source) from None
        if resp.status_code != 200 or len(resp.content) > MAX_JWKS:
            raise MalformedEvidence(f"JWKS answer {resp.status_code}", where=source)
        raw = resp.content
    else:
        raw = read_input(source, "JWKS", limit=MAX_JWKS)
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise MalformedEvidence(f"the JWKS is not JSON: {exc}", where=source) from None
    if not isinstance(data, dict):
        raise MalformedEvidence("the JWKS is not a JSON object", where=source)
    return data


def _out(args: argparse.Namespace, data: dict[str, Any], line: str) -> None:
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(line)


def _verify(args: argparse.Namespace) -> int:
    from verifier.ear.token import load_jwks, verify_ear

    try:
        keys = load_jwks(_jwks(args.jwks))
        nonce = args.nonce.lower() if args.nonce else None
        result = verify_ear(
            _token(args.token), keys, now=int(time.time()), nonce=nonce, node=args.node
        )
    except MalformedEvidence as exc:
        err = {"code": "malformed", "message": str(exc)}
        _out(args, {"valid": False, "affirming": False, "error": err}, f"malformed: {exc}")
        return EXIT_MALFORMED
    except VerificationFailed as exc:
        err = {"code": exc.code, "message": str(exc)}
        _out(args, {"valid": False, "affirming": False, "error": err}, f"refused: {exc}")
        return EXIT_INVALID
    c = result.claims
    line = f"{c.node}: {c.status} (state {c.state}, {c.reason}), expires in {c.exp - int(time.time())} s"
    _out(args, {**result.to_json(), "error": None}, line)
    return EXIT_OK if result.affirming else EXIT_INVALID


def _rotate(args: argparse.Namespace) -> int:
    from verifier.service import ear_keys

    from ._cmd_service import _services

    svc = _services(args)
    key = ear_keys.rotate(svc)
    print(json.dumps({"kid": key.kid, "created_at": key.created_at.isoformat()}))
    return EXIT_OK
