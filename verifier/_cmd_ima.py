"""``ima show|replay``: read an IMA measurement list (binary or ASCII, detected) and say what it
measured and what it replays to. Nothing here is verified: a file's own replay proves nothing
about a node; the values are for comparing with a quote."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any

from assay.algorithms import HashAlg
from assay.errors import MalformedEvidence
from assay.ima import MAX_IMA_LOG_SIZE, ImaEntry, ImaLog, parse_ima_log, replay_ima

from ._cli import EXIT_OK, read_input


def register(sub: Any) -> None:
    group = sub.add_parser("ima", help="inspect Linux IMA runtime measurement lists")
    commands = group.add_subparsers(dest="ima_command", metavar="SUBCOMMAND", required=True)
    show = commands.add_parser(
        "show",
        help="list the entries of an IMA measurement list",
        description="Print every entry: index, PCR, template, file digest, name (escaped), and "
        "signature / buffer details. Binary and ASCII lists are detected.",
    )
    show.add_argument("file", metavar="FILE", help="binary_runtime_measurements or the ASCII form")
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _template_hash_option(show)
    show.set_defaults(func=_show)
    rep = commands.add_parser(
        "replay",
        help="compute the PCR values an IMA measurement list replays to",
        description="Replay every entry into its PCR for every bank: SHA-1 from the logged "
        "template hashes, the other banks from the template data hashed with the bank's "
        "algorithm (Linux >= 5.8). Where kernels that extend the SHA-1 digest zero-padded "
        "(4.10-5.7) would give another value, it is listed under sha1_padded.",
    )
    rep.add_argument("file", metavar="FILE", help="binary_runtime_measurements or the ASCII form")
    rep.add_argument("--json", action="store_true", help="print JSON")
    _template_hash_option(rep)
    rep.set_defaults(func=_replay)


def _template_hash_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--template-hash",
        metavar="ALG",
        help="algorithm of the logged template hashes (default: from their size; needed only "
        "for an sm3 per-bank file)",
    )


def load_ima(path: str, template_hash: str | None = None) -> ImaLog:
    """Read and parse a list; a parse error names the file, the entry and the offset."""
    data = read_input(path, "IMA log", limit=MAX_IMA_LOG_SIZE)
    alg = HashAlg.from_bank(template_hash) if template_hash else None
    try:
        return parse_ima_log(data, template_hash_alg=alg)
    except MalformedEvidence as exc:
        raise MalformedEvidence(str(exc), where=path) from exc


def replay_json(log: ImaLog) -> dict[str, Any]:
    """The ``replay --json`` document."""
    state = replay_ima(log)
    out = state.to_json()
    doc: dict[str, Any] = {
        "entries": len(log.entries),
        "violations": state.violations,
        "templates": dict(sorted(Counter(e.template for e in log.entries).items())),
        "pcrs": out["pcrs"],
    }
    if out["sha1_padded"]:
        doc["sha1_padded"] = out["sha1_padded"]
    return doc


def _replay(args: argparse.Namespace) -> int:
    log = load_ima(args.file, args.template_hash)
    doc = replay_json(log)
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    templates = ", ".join(f"{n} {t}" for t, n in doc["templates"].items()) or "none"
    print(
        f"{args.file}: {log.format} IMA list, {doc['entries']} entries ({templates}), "
        f"{doc['violations']} violations"
    )
    for bank, values in doc["pcrs"].items():
        for pcr, value in values.items():
            print(f"{bank:<8} PCR{pcr:<2} {value}")
    for bank, values in doc.get("sha1_padded", {}).items():
        for pcr, value in values.items():
            print(f"{bank:<8} PCR{pcr:<2} {value}  (SHA-1 zero-padded, Linux 4.10-5.7)")
    return EXIT_OK


def entry_json(e: ImaEntry) -> dict[str, Any]:
    """One entry as JSON: the name escaped for display and as hex (it may be any bytes)."""
    out: dict[str, Any] = {
        "index": e.index,
        "offset": e.offset,
        "pcr": e.pcr,
        "template": e.template,
        "template_hash": e.template_hash.hex(),
        "violation": e.violation,
        "digest": f"{e.digest_alg}:{e.digest.hex()}" if e.digest_alg else None,
        "name": e.display_name,
        "name_hex": e.name.hex(),
    }
    if e.sig is not None:
        out["sig"] = {
            "type": e.sig.xattr_type,
            "version": e.sig.version,
            "hash_algo": e.sig.hash_algo,
            "keyid": f"{e.sig.keyid:08x}",
            "size": len(e.sig.signature),
        }
    if e.buf is not None:
        out["buf"] = e.buf.hex()
    if e.modsig is not None:
        out["modsig"] = {
            "digest": f"{e.modsig.digest_alg}:{e.modsig.digest.hex()}",
            "size": len(e.modsig.signature),
        }
    return out


def _show(args: argparse.Namespace) -> int:
    log = load_ima(args.file, args.template_hash)
    if args.json:
        doc = {
            "format": log.format,
            "template_hash": log.template_hash_alg.bank,
            "entries": [entry_json(e) for e in log.entries],
        }
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{args.file} — {log.format}, {len(log.entries)} entries", expand=False)
    for name in ("#", "PCR", "template", "digest", "name", "detail"):
        table.add_column(name, overflow="fold")
    for e in log.entries:
        digest = "violation" if e.violation else f"{e.digest_alg}:{e.digest.hex()[:16]}…"
        # Text, not markup: names come from the node, and "[...]" in them is just text.
        table.add_row(
            str(e.index), str(e.pcr), e.template, digest, Text(e.display_name), _detail(e)
        )
    Console(width=200 if not sys.stdout.isatty() else None).print(table)
    return EXIT_OK


def _detail(e: ImaEntry) -> str:
    parts = []
    if e.sig is not None:
        parts.append(f"sig v{e.sig.version} {e.sig.hash_algo} key {e.sig.keyid:08x}")
    if e.buf is not None:
        parts.append(f"buf {len(e.buf)} bytes")
    if e.modsig is not None:
        parts.append(f"modsig {len(e.modsig.signature)} bytes")
    return ", ".join(parts)
