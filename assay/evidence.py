"""The evidence bundle (agent → verifier): one CBOR map, decoded once into an UNVERIFIED ``Evidence``.

The one definition of the wire format (docs/evidence.md), used by the agent (``encode_evidence``),
the verifier (``decode_evidence``; ``encode_evidence(canonical=True)`` for ``GET …/evidence``) and
every load generator. Layout: ``{"v": 1, "node": str, "agent_version": str, "nonce": bytes,
"attest": bytes, "signature": bytes, "pcrs": {bank: {int: bytes}}, "event_log_sha256": bytes,
"event_log": bytes (optional), "ima_log": bytes (optional), "ima_start": uint, "ima_offset":
uint (optional, with ``ima_log``: where a chunk of the IMA list starts)}``; keys not listed are
ignored.

Nothing in a decoded bundle is trusted: the quote is checked by ``verify_quote`` with the enrolled
AK, the log by replay against the verified quote. What the decoder guarantees is only the shape:
the size caps, the types, PCR indices 0..23 with digests of their bank's size, and that a log sent
hashes to ``event_log_sha256``. Every problem is one ``MalformedEvidence`` naming the field.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2

from .algorithms import HashAlg
from .cbor import CborError, loads_strict
from .errors import MalformedEvidence

VERSION = 1
WHERE = "evidence bundle"
MAX_SMALL = 4096
"""``nonce``, ``attest`` and ``signature``: far above any TPM's (a TPM2B_ATTEST is < 1 KiB)."""
MAX_TEXT = 253
"""``node`` and ``agent_version``: a DNS name's length."""
MAX_BANKS = 5
MAX_PCR = 23
MAX_IMA_START = 2**32 - 1
"""``ima_start``: an entry count (IMA lists grow for the life of a boot)."""
MAX_IMA_OFFSET = 2**48 - 1
"""``ima_offset``: a byte offset into the kernel's list."""


@dataclass(frozen=True, slots=True)
class EvidenceCaps:
    """Size caps in bytes, checked before anything is decoded or hashed."""

    bundle: int = 20 * 1024 * 1024
    event_log: int = 1024 * 1024
    ima_log: int = 16 * 1024 * 1024


DEFAULT_CAPS = EvidenceCaps()
"""What the agent sends at most and the verifier accepts unless its configuration says otherwise."""


@dataclass(frozen=True, slots=True)
class Evidence:
    """An evidence bundle as sent: UNVERIFIED (nothing in it is trusted before ``verify_quote``)."""

    node: str
    agent_version: str
    nonce: bytes
    attest: bytes
    """Marshalled TPM2B_ATTEST from TPM2_Quote."""
    signature: bytes
    """Marshalled TPMT_SIGNATURE."""
    pcrs: Mapping[HashAlg, Mapping[int, bytes]]
    event_log_sha256: bytes
    event_log: bytes | None
    """None when the sender knows the verifier holds the log of ``event_log_sha256``."""
    ima_log: bytes | None = None
    """The IMA list from entry ``ima_start`` (byte ``ima_offset`` of the kernel's list) on; the
    whole list when both are 0. The start is the sender's claim: the verifier compares it with
    the prefix it verified itself and never replays from a start it did not verify."""
    ima_start: int = 0
    ima_offset: int = 0

    def without_known_log(self, known_event_log_sha256: bytes | None) -> Evidence:
        """This bundle without the log bytes if the verifier said it holds a log of this digest."""
        if known_event_log_sha256 != self.event_log_sha256:
            return self
        return dataclasses.replace(self, event_log=None)


def evidence_with_log(
    *,
    node: str,
    agent_version: str,
    nonce: bytes,
    attest: bytes,
    signature: bytes,
    pcrs: Mapping[HashAlg, Mapping[int, bytes]],
    event_log: bytes,
    ima_log: bytes | None = None,
    ima_start: int = 0,
    ima_offset: int = 0,
) -> Evidence:
    """A bundle carrying ``event_log``, with ``event_log_sha256`` computed from it."""
    return Evidence(
        node=node,
        agent_version=agent_version,
        nonce=nonce,
        attest=attest,
        signature=signature,
        pcrs=pcrs,
        event_log_sha256=hashlib.sha256(event_log).digest(),
        event_log=event_log,
        ima_log=ima_log,
        ima_start=ima_start,
        ima_offset=ima_offset,
    )


# --- encoding ---------------------------------------------------------------------------------


def encode_evidence(ev: Evidence, *, canonical: bool = False) -> bytes:
    """The CBOR of a bundle.

    Keys in the order of docs/evidence.md, PCR indices ascending, banks in ``ev.pcrs`` order: the
    bytes agents have always sent. ``canonical=True`` sorts every map's keys (cbor2's canonical
    form, RFC 7049 §3.9), the form ``GET /v1/attestations/{id}/evidence`` returns.
    """
    doc: dict[str, Any] = {
        "v": VERSION,
        "node": ev.node,
        "agent_version": ev.agent_version,
        "nonce": ev.nonce,
        "attest": ev.attest,
        "signature": ev.signature,
        "pcrs": {
            alg.bank: {int(i): bytes(v) for i, v in sorted(values.items())}
            for alg, values in ev.pcrs.items()
        },
        "event_log_sha256": ev.event_log_sha256,
    }
    if ev.event_log is not None:
        doc["event_log"] = ev.event_log
    if ev.ima_log is not None:
        doc["ima_log"] = ev.ima_log
        if ev.ima_start or ev.ima_offset:  # a full list is sent as agents always sent it
            doc["ima_start"] = ev.ima_start
            doc["ima_offset"] = ev.ima_offset
    return bytes(cbor2.dumps(doc, canonical=canonical))


# --- decoding ---------------------------------------------------------------------------------


def _show(value: Any) -> str:
    """A short, safe description of an untrusted value for a message (never a huge repr)."""
    if type(value) is int and -(2**64) <= value < 2**64:
        return str(value)
    if isinstance(value, str) and len(value) <= 40:
        return repr(value)
    if isinstance(value, str | bytes | list | dict):
        return f"a {type(value).__name__} of length {len(value)}"
    return "null" if value is None else type(value).__name__


def _fail(message: str) -> MalformedEvidence:
    return MalformedEvidence(message, where=WHERE)


def _bytes(m: Mapping[str, Any], key: str, limit: int) -> bytes:
    value = m.get(key)
    if not isinstance(value, bytes):
        raise _fail(f"{key!r} must be a byte string")
    if len(value) > limit:
        raise _fail(f"{key!r} is {len(value)} bytes, more than {limit}")
    return value


def _optional_bytes(m: Mapping[str, Any], key: str, limit: int) -> bytes | None:
    return None if m.get(key) is None else _bytes(m, key, limit)


def _text(m: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = m.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise _fail(f"{key!r} must be a short text string")
    return value


def _bank(bank: Any, seen: Mapping[HashAlg, object]) -> HashAlg:
    try:
        alg = HashAlg.from_bank(bank) if isinstance(bank, str) else None
    except ValueError:
        alg = None
    if alg is None or alg in seen:
        raise _fail(f"'pcrs': unknown or repeated bank {_show(bank)}")
    return alg


def _pcrs(value: Any) -> dict[HashAlg, dict[int, bytes]]:
    if not isinstance(value, dict) or not value or len(value) > MAX_BANKS:
        raise _fail(f"'pcrs' must map 1..{MAX_BANKS} bank names to PCR values")
    out: dict[HashAlg, dict[int, bytes]] = {}
    for bank, values in value.items():
        alg = _bank(bank, out)
        if not isinstance(values, dict) or len(values) > MAX_PCR + 1:
            raise _fail(f"'pcrs'.{alg.bank} must map PCR indices to digests")
        bank_values: dict[int, bytes] = {}
        for pcr, digest in values.items():
            if type(pcr) is not int or not 0 <= pcr <= MAX_PCR:
                raise _fail(f"'pcrs'.{alg.bank}: bad PCR index {_show(pcr)}")
            if not isinstance(digest, bytes) or len(digest) != alg.digest_size:
                raise _fail(f"'pcrs'.{alg.bank}[{pcr}] must be {alg.digest_size} bytes")
            bank_values[pcr] = digest
        out[alg] = bank_values
    return out


def _uint(m: Mapping[str, Any], key: str, limit: int) -> int:
    value = m.get(key, 0)
    if type(value) is not int or not 0 <= value <= limit:  # bool is not an int here
        raise _fail(f"{key!r} must be an unsigned integer up to {limit}")
    return value


def _ima_start(m: Mapping[str, Any], ima_log: bytes | None) -> tuple[int, int]:
    """``ima_start``/``ima_offset``: both or neither, both zero or both positive, with a list."""
    if ("ima_start" in m) != ("ima_offset" in m):
        raise _fail("'ima_start' and 'ima_offset' go together")
    start, offset = _uint(m, "ima_start", MAX_IMA_START), _uint(m, "ima_offset", MAX_IMA_OFFSET)
    if (start == 0) != (offset == 0):
        raise _fail("'ima_start' and 'ima_offset' must both be 0 or both be positive")
    if start and ima_log is None:
        raise _fail("'ima_start' without 'ima_log'")
    return start, offset


def decode_evidence(data: bytes, caps: EvidenceCaps = DEFAULT_CAPS) -> Evidence:
    """Decode an untrusted bundle (size cap first, then strict CBOR, then each field)."""
    if len(data) > caps.bundle:
        raise _fail(f"{len(data)} bytes, more than {caps.bundle}")
    try:
        doc = loads_strict(data)
    except CborError as exc:
        raise _fail(f"not CBOR of the bundle profile: {exc}") from None
    if not isinstance(doc, dict):
        raise _fail("not a CBOR map")
    if type(doc.get("v")) is not int or doc["v"] != VERSION:  # True == 1 in Python
        raise _fail(f"unsupported version {_show(doc.get('v'))} (want {VERSION})")
    digest = _bytes(doc, "event_log_sha256", 32)
    if len(digest) != 32:
        raise _fail("'event_log_sha256' must be 32 bytes")
    log = _optional_bytes(doc, "event_log", caps.event_log)
    if log is not None and hashlib.sha256(log).digest() != digest:
        raise _fail("'event_log' does not hash to 'event_log_sha256'")
    nonce, attest, signature = (_bytes(doc, k, MAX_SMALL) for k in ("nonce", "attest", "signature"))
    ima_log = _optional_bytes(doc, "ima_log", caps.ima_log)
    ima_start, ima_offset = _ima_start(doc, ima_log)
    return Evidence(
        node=_text(doc, "node"),
        agent_version=_text(doc, "agent_version", required=False),
        nonce=nonce,
        attest=attest,
        signature=signature,
        pcrs=_pcrs(doc.get("pcrs")),
        event_log_sha256=digest,
        event_log=log,
        ima_log=ima_log,
        ima_start=ima_start,
        ima_offset=ima_offset,
    )
