"""``python -m golden`` / ``assay-golden``: build, inspect and manage golden reference sets.

One parser, one error handler: a domain error is one line on stderr and an exit code
(0 ok, 1 differences found / invalid, 2 malformed input or usage, 4 configuration error).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from assay.errors import AssayError, ConfigurationError

from . import _cmd_runtime
from .model import ROLES, GoldenSet, Status

EXIT_OK, EXIT_DIFF, EXIT_MALFORMED, EXIT_CONFIG = 0, 1, 2, 4
DEB_CACHE = Path.home() / ".cache" / "assay" / "debs"


def _load(path: str) -> GoldenSet:
    from .corim import import_corim
    from .yamlfmt import load_yaml_file

    if path.endswith((".cbor", ".corim")):
        with open(path, "rb") as fh:
            return import_corim(fh.read(), path)
    return load_yaml_file(path)


def _save(g: GoldenSet, path: str) -> None:
    from .yamlfmt import dump_yaml

    with open(path, "w", encoding="utf-8") as fh:
        fh.write(dump_yaml(g))


def _cmd_capture(args: argparse.Namespace) -> int:
    from assay.algorithms import HashAlg
    from assay.eventlog import MAX_LOG_SIZE, assume_quoted_for_review, parse_event_log

    from .capture import capture

    with open(args.from_log, "rb") as fh:
        raw = fh.read(MAX_LOG_SIZE + 1)
    vlog = assume_quoted_for_review(parse_event_log(raw), HashAlg.from_bank(args.bank))
    described = f"captured from event log {hashlib.sha256(raw).hexdigest()[:16]}"
    captured = capture(vlog, name=args.name, version=args.version, description=described)
    # Leave aspects to other sets (e.g. boot chain and kernel from the vendor's packages).
    drop: dict[str, Any] = {}
    for aspect in args.without:
        drop.update(_CAPTURE_ASPECTS[aspect])
    _save(dataclasses.replace(captured, **drop), args.output)
    return EXIT_OK


_CAPTURE_ASPECTS: dict[str, dict[str, Any]] = {
    "boot-apps": {"boot_apps": (), "boot_order": ()},
    "cmdlines": {"cmdlines": ()},
    "initrds": {"initrds": ()},
}


def _cmd_add_efi(args: argparse.Namespace) -> int:
    from .authenticode import authenticode_file
    from .model import BootApp, digests

    app = BootApp(args.label, args.role, digests(authenticode_file(args.file)))
    if args.set:
        _save(_load(args.set).with_boot_apps([app]), args.set)
    if args.json or not args.set:
        print(
            json.dumps(
                {
                    "label": app.label,
                    "role": app.role,
                    **{a.bank: d.hex() for a, d in app.digests.items()},
                }
            )
        )
    return EXIT_OK


def _cmd_from_deb(args: argparse.Namespace) -> int:
    from .debs import set_from_debs

    _save(set_from_debs(args.packages, name=args.name, version=args.version), args.output)
    return EXIT_OK


def _cache(args: argparse.Namespace) -> Path:
    return Path(args.cache).expanduser() if args.cache else DEB_CACHE


def _cmd_from_apt(args: argparse.Namespace) -> int:
    from .apt import from_apt

    g = from_apt(args.packages, _cache(args), name=args.name, version=args.version)
    _save(g, args.output)
    print(f"{args.output}: {g.ref} {g.description}")
    return EXIT_OK


def _cmd_watch_apt(args: argparse.Namespace) -> int:
    from .apt import draft_next, update

    current = _load(args.against)
    while True:
        if args.update:
            update()
        draft = draft_next(current, args.packages, _cache(args))
        if draft is not None:
            _save(draft, args.output)
            print(f"{args.output}: draft {draft.ref} ({draft.description}); {current.ref} differs")
            return EXIT_DIFF
        print(f"{current.ref}: the archive offers nothing new for {', '.join(args.packages)}")
        if not args.every:
            return EXIT_OK
        time.sleep(args.every)


def _cmd_show(args: argparse.Namespace) -> int:
    from .yamlfmt import dump_yaml, to_plain

    g = _load(args.set)
    print(json.dumps(to_plain(g), indent=2, default=str) if args.json else dump_yaml(g), end="\n")
    return EXIT_OK


def _cmd_validate(args: argparse.Namespace) -> int:
    for path in args.sets:
        g = _load(path)
        print(f"{path}: {g.ref} ({g.status}) is valid")
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    g = _load(args.set)
    status: Status = "revoked" if args.command == "revoke" else "retired"
    _save(g.with_status(status, args.reason), args.set)
    return EXIT_OK


def _diff(old: Any, new: Any, path: str, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in dict.fromkeys([*old, *new]):
            _diff(old.get(key), new.get(key), f"{path}.{key}" if path else str(key), out)
    elif isinstance(old, list) and isinstance(new, list):
        removed = [x for x in old if x not in new]
        added = [x for x in new if x not in old]
        out.extend(f"- {path}: {json.dumps(x)}" for x in removed)
        out.extend(f"+ {path}: {json.dumps(x)}" for x in added)
    elif old != new:
        out.append(f"~ {path}: {json.dumps(old)} -> {json.dumps(new)}")


def _cmd_diff(args: argparse.Namespace) -> int:
    from .yamlfmt import to_plain

    out: list[str] = []
    _diff(to_plain(_load(args.old)), to_plain(_load(args.new)), "", out)
    print(json.dumps(out, indent=2) if args.json else "\n".join(out or ["no differences"]))
    return EXIT_DIFF if out else EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from .corim import export_corim

    with open(args.output, "wb") as fh:
        fh.write(export_corim(_load(args.set)))
    return EXIT_OK


def _cmd_import(args: argparse.Namespace) -> int:
    _save(_load(args.file), args.output)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="assay-golden", description="Manage golden measurement sets.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    c = sub.add_parser(
        "capture",
        help="build a set from a known-good event log",
        description="Build a golden set from a known-good node's event log: firmware, Secure Boot "
        "keys and databases, boot applications, command lines, initrds, MokLists, SbatLevel, and "
        "every other event of PCRs 0-9 and 14 by digest (measurements), so the set accounts for "
        "exactly what the log measured. Review it before use.",
    )
    c.add_argument("--from-log", required=True, metavar="FILE", help="binary event log")
    c.add_argument(
        "-o", "--output", required=True, metavar="SET.yaml", help="where to write the set"
    )
    c.add_argument("--name", default="captured", help="set name (default: captured)")
    c.add_argument("--version", default="1", help="set version (default: 1)")
    c.add_argument(
        "--bank", default="sha256", help="PCR bank to take digests from (default: sha256)"
    )
    c.add_argument(
        "--without",
        action="append",
        default=[],
        choices=sorted(_CAPTURE_ASPECTS),
        help="leave this aspect to other sets (repeatable), e.g. boot-apps when the boot chain "
        "comes from `from-deb`",
    )
    c.set_defaults(func=_cmd_capture)
    c = sub.add_parser("add-efi", help="Authenticode digests of an EFI binary")
    c.add_argument("file")
    c.add_argument("--label", required=True)
    c.add_argument("--role", choices=ROLES, default="other")
    c.add_argument("--set", metavar="SET.yaml", help="add the binary to this set (in place)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_cmd_add_efi)
    c = sub.add_parser(
        "from-deb",
        help="a set from shim/GRUB/kernel Debian packages",
        description="Boot applications by Authenticode digest (PCR4) and each kernel image's plain "
        "digest, which GRUB measures into PCR9 when it loads it, from the packages alone.",
    )
    c.add_argument("packages", nargs="+", metavar="PACKAGE.deb")
    c.add_argument("-o", "--output", required=True, metavar="SET.yaml")
    c.add_argument("--name", default="debian")
    c.add_argument("--version", default="1")
    c.set_defaults(func=_cmd_from_deb)
    c = sub.add_parser(
        "from-apt",
        help="a set from packages resolved and downloaded through apt",
        description="Like from-deb, but each PACKAGE[=VERSION] is resolved through apt (the "
        "machine's configured archive; without =VERSION, apt's candidate) and downloaded with "
        "apt-get download into the cache. A metapackage such as linux-image-amd64 is followed to "
        "the versioned kernel package its Depends: pins.",
    )
    c.add_argument("packages", nargs="+", metavar="PACKAGE[=VERSION]")
    c.add_argument("-o", "--output", required=True, metavar="SET.yaml")
    c.add_argument("--name", default="debian")
    c.add_argument("--version", help="the set's version (default: the kernel package's version)")
    c.add_argument("--cache", metavar="DIR", help=f"where .debs are kept (default {DEB_CACHE})")
    c.set_defaults(func=_cmd_from_apt)
    c = sub.add_parser(
        "watch-apt",
        help="draft the next version of a set when the archive offers new binaries",
        description="Build the set PACKAGE… make today (as from-apt) and compare the binaries it "
        "approves with --against. Exit 0 when nothing changed, 1 when a draft was written to "
        "-o (review it, then add it to the verifier beside the current version: a rollout).",
    )
    c.add_argument("packages", nargs="+", metavar="PACKAGE[=VERSION]")
    c.add_argument("--against", required=True, metavar="SET.yaml", help="the current version")
    c.add_argument("-o", "--output", required=True, metavar="NEXT.yaml")
    c.add_argument("--cache", metavar="DIR", help=f"where .debs are kept (default {DEB_CACHE})")
    c.add_argument("--update", action="store_true", help="run apt-get update first (root)")
    c.add_argument(
        "--every",
        type=float,
        metavar="SECONDS",
        help="keep checking at this interval until a draft",
    )
    c.set_defaults(func=_cmd_watch_apt)
    c = sub.add_parser("diff", help="differences between two sets (exit 1 if any)")
    c.add_argument("old")
    c.add_argument("new")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_cmd_diff)
    c = sub.add_parser("show", help="print a set")
    c.add_argument("set")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_cmd_show)
    c = sub.add_parser("validate", help="check sets against the schema")
    c.add_argument("sets", nargs="+")
    c.set_defaults(func=_cmd_validate)
    c = sub.add_parser("retire", help="mark a set retired (in place)")
    c.add_argument("set")
    c.add_argument("--reason")
    c.set_defaults(func=_cmd_status)
    c = sub.add_parser("revoke", help="mark a set revoked with a reason (in place)")
    c.add_argument("set")
    c.add_argument("--reason", required=True)
    c.set_defaults(func=_cmd_status)
    c = sub.add_parser("export", help="write a set as CoRIM")
    c.add_argument("set")
    c.add_argument("--corim", dest="output", required=True, metavar="OUT.cbor")
    c.set_defaults(func=_cmd_export)
    c = sub.add_parser("import", help="read a CoRIM into a YAML set")
    c.add_argument("file")
    c.add_argument("-o", "--output", required=True, metavar="SET.yaml")
    c.set_defaults(func=_cmd_import)
    _cmd_runtime.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigurationError as exc:
        print(f"assay-golden: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except AssayError as exc:
        print(f"assay-golden: error: {exc}", file=sys.stderr)
        return EXIT_MALFORMED
    except ValueError as exc:  # a bad --bank name
        print(f"assay-golden: error: {exc}", file=sys.stderr)
        return EXIT_MALFORMED
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"assay-golden: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_MALFORMED


if __name__ == "__main__":
    sys.exit(main())
