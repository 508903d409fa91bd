"""The agent's side of the evidence bundle: read the logs, wrap a quote, encode (assay.evidence).

The agent reads the logs and ships them as bytes: it never parses them (the verifier does, with
the project's bounded parsers), so nothing on the node can be confused by a hostile log. The wire
format and its size caps are defined once, in ``assay.evidence`` (docs/evidence.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from assay.evidence import DEFAULT_CAPS, Evidence, encode_evidence, evidence_with_log

from . import __version__
from .errors import EventLogUnreadable
from .tpm import QuoteResult


def read_log(path: Path, cap: int, what: str = "event log") -> bytes:
    """Read a log file (securityfs files report size 0, so read to EOF), refusing more than cap."""
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)
    except OSError as exc:
        raise EventLogUnreadable(f"{what} {path}: {exc.strerror or exc}") from None
    if len(data) > cap:
        raise EventLogUnreadable(f"{what} {path}: larger than the {cap}-byte cap")
    if not data:
        raise EventLogUnreadable(f"{what} {path}: empty")
    return data


@dataclass(frozen=True, slots=True)
class ImaChunk:
    """IMA list bytes to send and where they start in the kernel's list (entries, bytes)."""

    data: bytes
    start: int = 0
    offset: int = 0


def read_ima_chunk(path: Path, cursor: tuple[int, int], cap: int) -> ImaChunk:
    """The IMA list from byte ``cursor[1]`` on — only the entries added since the verifier's
    last verified offset — read to EOF (securityfs reports size 0). A list shorter than the
    cursor (after a reboot) reads as an empty chunk, which the verifier refuses for this boot."""
    entries, offset = cursor
    try:
        with open(path, "rb") as f:
            if offset:
                f.seek(offset)
            data = f.read(cap + 1)
    except OSError as exc:
        raise EventLogUnreadable(f"IMA log {path}: {exc.strerror or exc}") from None
    if len(data) > cap:
        raise EventLogUnreadable(f"IMA log {path}: more than the {cap}-byte cap to send")
    if not data and not offset:
        raise EventLogUnreadable(f"IMA log {path}: empty")
    return ImaChunk(data, entries, offset)


def evidence_from_quote(
    node: str, quote: QuoteResult, event_log: bytes, ima: bytes | ImaChunk | None = None
) -> Evidence:
    """The bundle for one quote, carrying the log (``encode_bundle`` leaves it out if known)
    and the IMA list or the chunk of it the verifier asked for."""
    chunk = ImaChunk(ima) if isinstance(ima, bytes) else ima
    return evidence_with_log(
        node=node,
        agent_version=__version__,
        nonce=quote.nonce,
        attest=quote.attest,
        signature=quote.signature,
        pcrs=quote.pcrs,
        event_log=event_log,
        ima_log=None if chunk is None else chunk.data,
        ima_start=0 if chunk is None else chunk.start,
        ima_offset=0 if chunk is None else chunk.offset,
    )


def encode_bundle(ev: Evidence, *, known_event_log_sha256: bytes | None = None) -> bytes:
    """The bytes to send; the log is left out when the verifier holds a log of that digest."""
    data = encode_evidence(ev.without_known_log(known_event_log_sha256))
    if len(data) > DEFAULT_CAPS.bundle:
        raise EventLogUnreadable(
            f"evidence bundle of {len(data)} bytes exceeds {DEFAULT_CAPS.bundle}"
        )
    return data
