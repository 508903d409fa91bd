"""``golden runtime from-deb|capture|show|export|import``: build, inspect and convert runtime (IMA)
policies (YAML; CoRIM with ``export --corim`` and ``import``, like golden sets).

Errors go to golden's one handler (``golden.__main__.main``): a malformed package or log and a bad
policy file are one line on stderr with an exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runtime import RuntimePolicy

EXIT_OK = 0


def register(sub: Any) -> None:
    group = sub.add_parser("runtime", help="runtime (IMA) policies: build from packages or a log")
    commands = group.add_subparsers(dest="runtime_command", metavar="SUBCOMMAND", required=True)
    c = commands.add_parser(
        "from-deb",
        help="a runtime policy from the files of Debian packages",
        description="Approve every regular file the packages install, by digest, under the path "
        "IMA logs for it (spaces as '_'; on merged-/usr systems /bin, /sbin and /lib* files also "
        "under /usr). Review the policy, then add it to the verifier beside the current one.",
    )
    c.add_argument("packages", nargs="+", metavar="PACKAGE.deb")
    c.add_argument("-o", "--output", required=True, metavar="POLICY.yaml")
    c.add_argument("--name", default="debian-runtime")
    c.add_argument("--version", default="1")
    c.add_argument(
        "--hash",
        action="append",
        metavar="ALG",
        help="digest algorithm, repeatable (default sha256; the node's ima_hash must be one)",
    )
    c.add_argument(
        "--exclude", action="append", default=[], metavar="GLOB", help="names not judged"
    )
    c.add_argument("--status", choices=("draft", "active"), default="active")
    c.add_argument(
        "--no-merged-usr", action="store_true", help="do not approve /bin… files under /usr too"
    )
    c.set_defaults(func=_from_deb)
    c = commands.add_parser(
        "capture",
        help="a runtime policy from a known-good node's IMA list",
        description="Approve every file and buffer the list measured, by digest, and the SELinux "
        "state and policy hash it ran with. Violations and names under --exclude are left out "
        "and reported. The list proves nothing by itself: capture only from a reviewed node.",
    )
    c.add_argument("--from-log", required=True, metavar="IMA_LOG", help="binary or ASCII list")
    c.add_argument("-o", "--output", required=True, metavar="POLICY.yaml")
    c.add_argument("--name", default="captured-runtime")
    c.add_argument("--version", default="1")
    c.add_argument(
        "--exclude", action="append", default=[], metavar="GLOB", help="names not judged"
    )
    c.set_defaults(func=_capture)
    c = commands.add_parser("show", help="check and print a runtime policy (YAML or CoRIM)")
    c.add_argument("policy", metavar="POLICY.yaml")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_show)
    c = commands.add_parser("export", help="write a runtime policy as CoRIM")
    c.add_argument("policy", metavar="POLICY.yaml")
    c.add_argument("--corim", dest="output", required=True, metavar="OUT.cbor")
    c.set_defaults(func=_export)
    c = commands.add_parser("import", help="read a runtime policy's CoRIM into YAML")
    c.add_argument("file", metavar="POLICY.cbor")
    c.add_argument("-o", "--output", required=True, metavar="POLICY.yaml")
    c.set_defaults(func=_import)


def _save(text: str, path: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def _from_deb(args: argparse.Namespace) -> int:
    from assay.algorithms import HashAlg

    from .runtime_build import runtime_from_debs
    from .runtime_yaml import dump_runtime_yaml

    algs = tuple(dict.fromkeys(HashAlg.from_bank(h) for h in (args.hash or ["sha256"])))
    policy = runtime_from_debs(
        args.packages,
        name=args.name,
        version=args.version,
        algs=algs,
        exclude=args.exclude,
        status=args.status,
        merged_usr=not args.no_merged_usr,
    )
    _save(dump_runtime_yaml(policy), args.output)
    print(f"{args.output}: {policy.ref}, {len(policy.files)} paths ({policy.description})")
    return EXIT_OK


def _capture(args: argparse.Namespace) -> int:
    from assay.errors import MalformedEvidence
    from assay.ima import MAX_IMA_LOG_SIZE, parse_ima_log

    from .runtime_build import runtime_from_log
    from .runtime_yaml import dump_runtime_yaml

    with open(args.from_log, "rb") as fh:
        data = fh.read(MAX_IMA_LOG_SIZE + 1)
    try:
        log = parse_ima_log(data)
    except MalformedEvidence as exc:
        raise MalformedEvidence(str(exc), where=args.from_log) from exc
    got = runtime_from_log(log, name=args.name, version=args.version, exclude=args.exclude)
    _save(dump_runtime_yaml(got.policy), args.output)
    p = got.policy
    print(f"{args.output}: {p.ref}, {len(p.files)} files, {len(p.buffers)} buffers")
    if got.excluded:
        print(f"left out: {got.excluded} entries under --exclude")
    for name in got.violations:
        print(f"left out: violation on {name} (exclude it, or find out why it was open for write)")
    for name in got.unapprovable:
        print(f"left out: {name}: no policy digest for this algorithm")
    return EXIT_OK


def _load(path: str) -> RuntimePolicy:
    from .corim import MAX_CORIM_BYTES
    from .runtime_corim import import_runtime_corim
    from .runtime_yaml import load_runtime_file

    if path.endswith((".cbor", ".corim")):
        with open(path, "rb") as fh:
            return import_runtime_corim(fh.read(MAX_CORIM_BYTES + 1), path)
    return load_runtime_file(path)


def _export(args: argparse.Namespace) -> int:
    from .runtime_corim import export_runtime_corim

    data = export_runtime_corim(_load(args.policy))
    with open(args.output, "wb") as fh:
        fh.write(data)
    return EXIT_OK


def _import(args: argparse.Namespace) -> int:
    from .runtime_yaml import dump_runtime_yaml

    _save(dump_runtime_yaml(_load(args.file)), args.output)
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    from .runtime_yaml import dump_runtime_yaml, runtime_to_plain

    policy = _load(args.policy)
    if args.json:
        json.dump(runtime_to_plain(policy), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(dump_runtime_yaml(policy))
    return EXIT_OK
