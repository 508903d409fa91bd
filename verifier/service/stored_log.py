"""An attestation's stored evidence verified again: the quote with the node's enrolled AK, the log
replayed against it. What the console shows as *verified* (and what a promotion may take values
from) comes only from here; the raw log is shown too, but as what the node sent."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from assay.errors import MalformedEvidence, VerificationFailed
from assay.eventlog import EventLog, VerifiedBootLog, parse_event_log
from assay.tpm2 import parse_public, verify_quote
from verifier.store import repo
from verifier.store.models import Attestation, Node

from .attestation import pcrs_from_json, verified_log
from .context import Services


@dataclass(frozen=True, slots=True)
class StoredLog:
    """The stored log of one attestation: parsed (untrusted), and verified when it still is."""

    raw: bytes | None
    parsed: EventLog | None
    verified: VerifiedBootLog | None
    problem: str
    """Why ``verified`` (or ``parsed``) is None; empty when both are there."""


def load(svc: Services, db: Session, row: Attestation, node: Node) -> StoredLog:
    raw = repo.get_event_log(db, row.event_log_sha256) if row.event_log_sha256 else None
    if raw is None:
        return StoredLog(None, None, None, "no event log is stored for this attestation")
    try:
        parsed = parse_event_log(raw)
    except MalformedEvidence as exc:
        return StoredLog(raw, None, None, f"the stored log does not parse: {exc}")
    try:
        quote = verify_quote(
            row.quote,
            row.signature,
            parse_public(node.ak_public),
            row.nonce,
            pcrs_from_json(row.pcrs),
        )
        vlog = verified_log(svc, quote, svc.config.hash_alg, row.event_log_sha256 or "", raw)
    except (VerificationFailed, MalformedEvidence) as exc:
        return StoredLog(raw, parsed, None, f"the stored evidence no longer verifies: {exc}")
    return StoredLog(raw, parsed, vlog, "")
