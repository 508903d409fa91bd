"""The evidence bundle the agent sends: one CBOR map, schema in docs/evidence.md.

The agent reads the logs and ships them as bytes: it never parses them (the verifier does, with
the project's bounded parsers), so nothing on the node can be confused by a hostile log.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2

from . import __version__
from .errors import EventLogUnreadable
from .tpm import QuoteResult

BUNDLE_VERSION = 1
MAX_EVENT_LOG = 1 << 20
MAX_IMA_LOG = 16 << 20
MAX_BUNDLE = 20 << 20


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
class Evidence:
    node: str
    quote: QuoteResult
    event_log: bytes
    ima_log: bytes | None = None

    @property
    def event_log_sha256(self) -> bytes:
        return hashlib.sha256(self.event_log).digest()

    def to_cbor(self, *, known_event_log_sha256: bytes | None = None) -> bytes:
        """Encode the bundle; the log bytes are left out when the verifier holds that digest."""
        digest = self.event_log_sha256
        bundle: dict[str, Any] = {
            "v": BUNDLE_VERSION,
            "node": self.node,
            "agent_version": __version__,
            "nonce": self.quote.nonce,
            "attest": self.quote.attest,
            "signature": self.quote.signature,
            "pcrs": {
                alg.bank: {int(i): bytes(v) for i, v in sorted(values.items())}
                for alg, values in self.quote.pcrs.items()
            },
            "event_log_sha256": digest,
        }
        if known_event_log_sha256 != digest:
            bundle["event_log"] = self.event_log
        if self.ima_log is not None:
            bundle["ima_log"] = self.ima_log
        data: bytes = cbor2.dumps(bundle)
        if len(data) > MAX_BUNDLE:
            raise EventLogUnreadable(f"evidence bundle of {len(data)} bytes exceeds {MAX_BUNDLE}")
        return data
