"""``eventlog show|replay|check``: read a binary event log and say what it measured."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from typing import Any

from assay.algorithms import HashAlg
from assay.errors import MalformedEvidence
from assay.eventlog import (
    MAX_LOG_SIZE,
    EventLog,
    assume_quoted_for_review,
    parse_event_log,
    replay,
)

from . import _cmd_check
from ._cli import EXIT_OK, read_input


def register(sub: Any) -> None:
    group = sub.add_parser("eventlog", help="inspect TCG measured-boot event logs")
    commands = group.add_subparsers(dest="eventlog_command", metavar="SUBCOMMAND", required=True)

    show = commands.add_parser(
        "show",
        help="list the events of a log",
        description="Print every event: index, PCR, type, digest per bank and a decoded description.",
    )
    show.add_argument(
        "file", metavar="FILE", help="binary event log (binary_bios_measurements format)"
    )
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show.add_argument(
        "--full-digests", action="store_true", help="do not shorten digests in the table"
    )
    show.set_defaults(func=_show)

    rep = commands.add_parser(
        "replay",
        help="compute the PCR values a log replays to",
        description="Replay every measured event into PCR values, per bank the log carries. "
        "EV_NO_ACTION events and the 0xFFFFFFFF trailer are not extended; StartupLocality and H-CRTM "
        "set PCR0's starting value.",
    )
    rep.add_argument("file", metavar="FILE", help="binary event log")
    rep.add_argument("--json", action="store_true", help="print JSON: banks, workarounds, warnings")
    rep.set_defaults(func=_replay)

    _cmd_check.register_check(commands)


def load_log(path: str) -> EventLog:
    """Read and parse a log file; a parse error names the file as well as the event and offset."""
    return _read_log(path)[1]


def _read_log(path: str) -> tuple[bytes, EventLog]:
    """:func:`load_log`, with the file's bytes."""
    data = read_input(path, "event log", limit=MAX_LOG_SIZE)
    try:
        return data, parse_event_log(data, max_size=MAX_LOG_SIZE)
    except MalformedEvidence as exc:
        raise MalformedEvidence(str(exc), where=path) from exc


def _coverage_workarounds(log: EventLog) -> list[dict[str, Any]]:
    """Workarounds the log needs in its best bank (the table's coverage entries: without a quote
    there is nothing to compare a replay with, so replay entries cannot be told here)."""
    bank = HashAlg.SHA256 if HashAlg.SHA256 in log.banks else log.banks[0]
    verified = assume_quoted_for_review(log, bank)
    return [w.to_json() for w in verified.all_workarounds()]


def _replay(args: argparse.Namespace) -> int:
    log = load_log(args.file)
    result = replay(log)
    out = result.to_json()
    doc = {
        "banks": out["banks"],
        "start_locality": out["start_locality"],
        "workarounds": _coverage_workarounds(log),
        "warnings": out["warnings"],
    }
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    print(
        f"{args.file}: {log.format} log, {len(log.events)} events, PCR0 starts at locality "
        f"{result.start_locality}"
    )
    for bank, values in doc["banks"].items():
        print(f"{bank}:")
        for pcr, value in values.items():
            print(f"  PCR{pcr:<2} {value}")
    for w in doc["workarounds"]:
        print(f"workaround {w['name']}: PCR{w['pcr']} event {w['event']}: {w['detail']}")
    for warning in doc["warnings"]:
        print(f"warning: {warning}")
    return EXIT_OK


def _event_json(log: EventLog, index: int) -> dict[str, Any]:
    event = log.events[index]
    decoded = event.decode()
    return {
        "index": event.index,
        "pcr": event.pcr,
        "type": event.event_type,
        "type_name": event.type_name,
        "digests": {alg.bank: d.hex() for alg, d in event.digests.items()},
        "size": len(event.data),
        "description": decoded.describe(),
        "decoded": decoded.to_json(),
    }


def _show(args: argparse.Namespace) -> int:
    data, log = _read_log(args.file)
    events = [_event_json(log, i) for i in range(len(log.events))]
    workarounds = _coverage_workarounds(log)
    by_event = {i: w["name"] for w in workarounds for i in w["events"] if i is not None}
    for ev in events:
        ev["workaround"] = by_event.get(ev["index"])
    if args.json:
        doc = {
            "format": log.format,
            "banks": [b.bank for b in log.banks],
            "startup_locality": log.startup_locality,
            "sha256": hashlib.sha256(data).hexdigest(),
            "events": events,
            "workarounds": workarounds,
        }
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{args.file} — {log.format}, {len(events)} events", expand=False)
    for name in ("#", "PCR", "type", *(b.bank for b in log.banks), "description"):
        table.add_column(name, overflow="fold")
    for ev in events:
        digests = [_short(ev["digests"].get(b.bank, "-"), args.full_digests) for b in log.banks]
        pcr = "trailer" if ev["pcr"] == 0xFFFFFFFF else str(ev["pcr"])
        description = ev["description"]
        if ev["workaround"]:
            description += f" [workaround {ev['workaround']}]"
        # Text, not markup: descriptions come from the log, and "[...]" in them is just text.
        table.add_row(str(ev["index"]), pcr, ev["type_name"], *digests, Text(description))
    console = Console(width=200 if not sys.stdout.isatty() else None)
    console.print(table)
    for w in workarounds:
        console.print(
            f"workaround {w['name']}: PCR{w['pcr']} event {w['event']}: {w['detail']}",
            markup=False,
        )
    return EXIT_OK


def _short(digest: str, full: bool) -> str:
    return digest if full or len(digest) <= 16 else digest[:12] + "…"
