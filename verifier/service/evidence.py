"""The agent's evidence bundle (CBOR): size-capped, decoded once into an unverified ``Evidence``.

Layout (docs/evidence.md): ``{"v": 1, "node": str, "agent_version": str, "nonce": bytes,
"attest": bytes, "signature": bytes, "pcrs": {bank: {int: bytes}}, "event_log_sha256": bytes,
"event_log": bytes (optional), "ima_log": bytes (optional)}``. Nothing here is trusted: the quote
is checked by ``verify_quote`` with the enrolled AK, the log by replay against the quote.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2

from assay.algorithms import HashAlg
from assay.errors import MalformedEvidence

from ._cbor import CborError, loads_strict

MAX_SMALL = 4096
WHERE = "evidence bundle"


@dataclass(frozen=True, slots=True)
class Evidence:
    """A decoded, UNVERIFIED evidence bundle."""

    node: str
    agent_version: str
    nonce: bytes
    attest: bytes
    signature: bytes
    pcrs: Mapping[HashAlg, Mapping[int, bytes]]
    event_log_sha256: bytes
    event_log: bytes | None
    ima_log: bytes | None


def show(value: Any) -> str:
    """A short, safe description of an untrusted value for a message (never a huge repr)."""
    if type(value) is int and -(2**64) <= value < 2**64:
        return str(value)
    if isinstance(value, str) and len(value) <= 40:
        return repr(value)
    if isinstance(value, str | bytes | list | dict):
        return f"a {type(value).__name__} of length {len(value)}"
    return "null" if value is None else type(value).__name__


def _bytes(m: Mapping[str, Any], key: str, limit: int, *, required: bool = True) -> bytes | None:
    value = m.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, bytes):
        raise MalformedEvidence(f"{key!r} must be a byte string", where=WHERE)
    if len(value) > limit:
        raise MalformedEvidence(f"{key!r} is {len(value)} bytes, more than {limit}", where=WHERE)
    return value


def _text(m: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = m.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or len(value) > 253:
        raise MalformedEvidence(f"{key!r} must be a short text string", where=WHERE)
    return value


def _pcrs(value: Any) -> dict[HashAlg, dict[int, bytes]]:
    if not isinstance(value, dict) or not value or len(value) > 5:
        raise MalformedEvidence("'pcrs' must map 1..5 bank names to PCR values", where=WHERE)
    out: dict[HashAlg, dict[int, bytes]] = {}
    for bank, values in value.items():
        try:
            alg = HashAlg.from_bank(bank) if isinstance(bank, str) else None
        except ValueError:
            alg = None
        if alg is None or alg in out:
            raise MalformedEvidence(f"'pcrs': unknown or repeated bank {show(bank)}", where=WHERE)
        if not isinstance(values, dict) or len(values) > 24:
            raise MalformedEvidence(
                f"'pcrs'.{alg.bank} must map PCR indices to digests", where=WHERE
            )
        bank_values: dict[int, bytes] = {}
        for pcr, digest in values.items():
            if type(pcr) is not int or not 0 <= pcr <= 23:
                raise MalformedEvidence(
                    f"'pcrs'.{alg.bank}: bad PCR index {show(pcr)}", where=WHERE
                )
            if not isinstance(digest, bytes) or len(digest) != alg.digest_size:
                raise MalformedEvidence(
                    f"'pcrs'.{alg.bank}[{pcr}] must be {alg.digest_size} bytes", where=WHERE
                )
            bank_values[pcr] = digest
        out[alg] = bank_values
    return out


def parse_evidence(data: bytes, *, max_bundle: int, max_event_log: int, max_ima: int) -> Evidence:
    """Decode a bundle; every problem is MalformedEvidence naming the field."""
    if len(data) > max_bundle:
        raise MalformedEvidence(f"{len(data)} bytes, more than {max_bundle}", where=WHERE)
    try:
        doc = loads_strict(data)
    except CborError as exc:
        raise MalformedEvidence(f"not CBOR of the bundle profile: {exc}", where=WHERE) from None
    if not isinstance(doc, dict):
        raise MalformedEvidence("not a CBOR map", where=WHERE)
    if type(doc.get("v")) is not int or doc["v"] != 1:  # True == 1 in Python
        raise MalformedEvidence(f"unsupported version {show(doc.get('v'))} (want 1)", where=WHERE)
    digest = _bytes(doc, "event_log_sha256", 32)
    assert digest is not None
    if len(digest) != 32:
        raise MalformedEvidence("'event_log_sha256' must be 32 bytes", where=WHERE)
    log = _bytes(doc, "event_log", max_event_log, required=False)
    if log is not None and hashlib.sha256(log).digest() != digest:
        raise MalformedEvidence("'event_log' does not hash to 'event_log_sha256'", where=WHERE)
    nonce, attest, signature = (_bytes(doc, k, MAX_SMALL) for k in ("nonce", "attest", "signature"))
    assert nonce is not None and attest is not None and signature is not None
    return Evidence(
        node=_text(doc, "node"),
        agent_version=_text(doc, "agent_version", required=False),
        nonce=nonce,
        attest=attest,
        signature=signature,
        pcrs=_pcrs(doc.get("pcrs")),
        event_log_sha256=digest,
        event_log=log,
        ima_log=_bytes(doc, "ima_log", max_ima, required=False),
    )


def encode_evidence(ev: Evidence) -> bytes:
    """The canonical CBOR of a bundle (for ``GET …/evidence``: the stored parts reassembled)."""
    doc: dict[str, Any] = {
        "v": 1,
        "node": ev.node,
        "agent_version": ev.agent_version,
        "nonce": ev.nonce,
        "attest": ev.attest,
        "signature": ev.signature,
        "pcrs": {alg.bank: dict(values) for alg, values in ev.pcrs.items()},
        "event_log_sha256": ev.event_log_sha256,
    }
    if ev.event_log is not None:
        doc["event_log"] = ev.event_log
    if ev.ima_log is not None:
        doc["ima_log"] = ev.ima_log
    return bytes(cbor2.dumps(doc, canonical=True))
