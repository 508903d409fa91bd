"""Repository functions: every query the service and the CLI make, over one ``Session``.

They neither commit nor decide policy: the caller owns the transaction (``Store.write()``), so
one attestation, its event log and the node's new state land together or not at all.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import secrets
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from sqlalchemy import CursorResult, bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from . import hotpath
from .models import (
    Assignment,
    Attestation,
    AttestationSource,
    AuditEntry,
    EventLogBlob,
    GoldenSetRow,
    Node,
    NodeState,
    Nonce,
    ServiceKey,
    Token,
    VersionedColumns,
    iso,
)
from .prepared import Db, prepared

ROLES = ("admin", "reviewer", "scheduler", "enroll")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- labels and selectors -------------------------------------------------------------------


def selector_key(selector: Mapping[str, str]) -> str:
    """A canonical text form of a label selector (``k1=v1,k2=v2``, sorted); ``*`` for all nodes."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "*"


def selector_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- audit ----------------------------------------------------------------------------------


def audit(
    s: Session,
    actor: str,
    action: str,
    target: str,
    reason: str = "",
    details: Mapping[str, Any] | None = None,
    *,
    now: dt.datetime | None = None,
) -> AuditEntry:
    entry = AuditEntry(
        at=now or utcnow(),
        actor=actor,
        action=action,
        target=target,
        reason=reason,
        details=dict(details or {}),
    )
    s.add(entry)
    return entry


def audit_coalesced(
    s: Session,
    actor: str,
    action: str,
    target: str,
    reason: str,
    *,
    now: dt.datetime,
    window: dt.timedelta,
) -> AuditEntry:
    """Audit an unauthenticated event at most once per ``window`` per (action, target): later ones
    raise ``details.count`` and ``details.last_at`` of that row, so bogus posts cannot grow the
    table by one row each."""
    q = (
        select(AuditEntry)
        .where(AuditEntry.action == action, AuditEntry.target == target)
        .where(AuditEntry.at > now - window)
        .order_by(AuditEntry.id.desc())
        .limit(1)
    )
    entry = s.scalars(q).first()
    if entry is None:
        return audit(s, actor, action, target, reason, {"count": 1}, now=now)
    details = dict(entry.details or {})
    details["count"] = int(details.get("count", 1)) + 1
    details["last_at"] = iso(now)
    details["last_reason"] = reason[:300]
    entry.details = details
    return entry


def list_audit(s: Session, *, target: str | None = None, limit: int = 100) -> list[AuditEntry]:
    q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if target is not None:
        q = q.where(AuditEntry.target == target)
    return list(s.scalars(q))


# --- tokens ---------------------------------------------------------------------------------


def token_hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def create_token(
    s: Session,
    role: str,
    *,
    expires_at: dt.datetime | None,
    single_use: bool = False,
    description: str = "",
    labels: Mapping[str, str] | None = None,
    now: dt.datetime | None = None,
) -> tuple[str, Token]:
    """A new bearer token; only its hash is stored, the secret is returned once."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    token_id = secrets.token_hex(8)
    secret = f"assay_{token_id}_{secrets.token_urlsafe(32)}"
    row = Token(
        id=token_id,
        secret_sha256=token_hash(secret),
        role=role,
        description=description,
        single_use=single_use,
        labels=dict(labels or {}),
        created_at=now or utcnow(),
        expires_at=expires_at,
    )
    s.add(row)
    return secret, row


def find_token(s: Session, secret: str) -> Token | None:
    return s.scalars(select(Token).where(Token.secret_sha256 == token_hash(secret))).first()


def use_single_use_token(s: Session, token_id: str, now: dt.datetime) -> bool:
    """Mark a single-use token used; False if another request used it first."""
    result = s.execute(
        update(Token)
        .where(Token.id == token_id, Token.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    assert isinstance(result, CursorResult)
    return result.rowcount == 1


def list_tokens(s: Session) -> list[Token]:
    return list(s.scalars(select(Token).order_by(Token.created_at, Token.id)))


def get_token(s: Session, token_id: str) -> Token | None:
    return s.get(Token, token_id)


# --- nodes ----------------------------------------------------------------------------------


def get_node(s: Session, name: str, *, key_share: bool = False) -> Node | None:
    """``key_share``: hold the row against a delete until the transaction ends (PostgreSQL's FOR
    KEY SHARE, the lock a foreign key's check takes; SQLite's write transaction holds the whole
    database), so that rows inserted for it later in the transaction still have their node."""
    q = select(Node).where(Node.name == name)
    return s.scalars(q.with_for_update(read=True, key_share=True) if key_share else q).first()


def node_by_ek(s: Session, ek_fingerprint: str) -> Node | None:
    return s.scalars(select(Node).where(Node.ek_fingerprint == ek_fingerprint)).first()


def node_by_ak(s: Session, ak_name: bytes) -> Node | None:
    return s.scalars(select(Node).where(Node.ak_name == ak_name)).first()


def list_nodes(
    s: Session,
    *,
    states: Sequence[NodeState] | None = None,
    labels: Mapping[str, str] | None = None,
) -> list[Node]:
    q = select(Node).order_by(Node.name)
    if states:
        q = q.where(Node.state.in_(list(states)))
    nodes = list(s.scalars(q))
    if labels:
        nodes = [n for n in nodes if selector_matches(labels, n.labels)]
    return nodes


def node_attestations(s: Session, node_id: int, *, limit: int = 50) -> list[Attestation]:
    q = (
        select(Attestation)
        .where(Attestation.node_id == node_id)
        .order_by(Attestation.id.desc())
        .limit(limit)
    )
    return list(s.scalars(q))


def latest_evidence(s: Session, node_id: int) -> Attestation | None:
    """The newest attestation that came from the node itself (not a re-appraisal copy)."""
    q = (
        select(Attestation)
        .where(Attestation.node_id == node_id, Attestation.source == AttestationSource.EVIDENCE)
        .order_by(Attestation.id.desc())
        .limit(1)
    )
    return s.scalars(q).first()


# --- nonces ---------------------------------------------------------------------------------


_NONCE_KEY = "nonce"
_NONCE_MAC = b"assay nonce mac"
_NONCE_ENC = b"assay nonce enc"


@dataclass(frozen=True, slots=True)
class IssuedNonce:
    nonce: bytes
    expires_at: dt.datetime


def service_key(s: Session, name: str, now: dt.datetime) -> bytes:
    """The shared secret ``name``, created by the first instance that asks (a concurrent creator
    loses the insert and reads the winner's)."""
    row = s.get(ServiceKey, name)
    if row is not None:
        return row.value
    try:
        with s.begin_nested():
            s.add(ServiceKey(name=name, value=secrets.token_bytes(32), created_at=now))
    except IntegrityError:
        pass
    row = s.get(ServiceKey, name)
    assert row is not None
    return row.value


def nonce_key(s: Session, now: dt.datetime) -> bytes:
    """The shared key of the challenge nonces (never changes once created)."""
    return service_key(s, _NONCE_KEY, now)


@functools.lru_cache(maxsize=8)
def _nonce_keys(secret: bytes) -> tuple[bytes, bytes]:
    return (
        hmac.new(secret, _NONCE_ENC, hashlib.sha256).digest()[:16],
        hmac.new(secret, _NONCE_MAC, hashlib.sha256).digest(),
    )


_BLOCK_OPS: dict[tuple[bytes, bool], list[Any]] = {}
"""Idle AES-ECB contexts by (key, direction): making one was some 2% of a re-attestation."""


def _nonce_block(enc: bytes, block: bytes, *, decrypt: bool) -> bytes:
    # One AES block (a keyed permutation) hides the node and expiry: a nonce for a node that is
    # not enrolled (32 random bytes) looks like any other. An ECB context holds nothing between
    # whole blocks, so one is reused (never by two callers at once: each takes it off the list).
    if len(block) != 16:
        raise ValueError("a nonce block is 16 bytes")
    free = _BLOCK_OPS.get((enc, decrypt))
    if free is None:
        if len(_BLOCK_OPS) >= 16:
            _BLOCK_OPS.clear()
        free = _BLOCK_OPS.setdefault((enc, decrypt), [])
    try:
        op = free.pop()
    except IndexError:
        cipher = Cipher(algorithms.AES(enc), modes.ECB())  # noqa: S305 - one block, never repeated
        op = cipher.decryptor() if decrypt else cipher.encryptor()
    out: bytes = op.update(block)
    free.append(op)
    return out


def make_nonce(
    node_id: int, *, lifetime: dt.timedelta, now: dt.datetime, key: bytes
) -> IssuedNonce:
    """A 32-byte nonce for ``node_id`` that nothing stores: AES(expiry, node, 4 random bytes) and
    an HMAC over that block, under the shared ``nonce`` key. Any instance can check it, and an
    unauthenticated flood of challenges uses up nothing (nor can it evict the agent's)."""
    enc, mac = _nonce_keys(key)
    expires = int((now + lifetime).timestamp())
    block = _nonce_block(
        enc, struct.pack(">QI", expires, node_id) + secrets.token_bytes(4), decrypt=False
    )
    tag = hmac.new(mac, block, hashlib.sha256).digest()[:16]
    return IssuedNonce(block + tag, dt.datetime.fromtimestamp(expires, dt.UTC))


def issue_nonce(
    s: Session,
    node_id: int,
    *,
    lifetime: dt.timedelta,
    now: dt.datetime,
    key: bytes | None = None,
) -> IssuedNonce:
    """``make_nonce`` under the shared key (``key`` when the caller holds it, else read)."""
    return make_nonce(
        node_id, lifetime=lifetime, now=now, key=key if key is not None else nonce_key(s, now)
    )


@dataclass(frozen=True, slots=True)
class NonceCheck:
    """A nonce's stateless check: ``refused`` is a reason code, or None with its expiry."""

    refused: str | None
    expires_at: dt.datetime


def check_nonce(node_id: int, nonce: bytes, now: dt.datetime, key: bytes) -> NonceCheck:
    """Tag, owner and expiry of ``nonce`` (no I/O); whether it was used is the store's to say."""
    never = dt.datetime.fromtimestamp(0, dt.UTC)
    if len(nonce) != 32:
        return NonceCheck("nonce_unknown", never)
    enc, mac = _nonce_keys(key)
    block, tag = nonce[:16], nonce[16:]
    if not hmac.compare_digest(hmac.new(mac, block, hashlib.sha256).digest()[:16], tag):
        return NonceCheck("nonce_unknown", never)
    expires, owner = struct.unpack_from(">QI", _nonce_block(enc, block, decrypt=True))
    if owner != node_id:
        return NonceCheck("nonce_wrong_node", never)
    expires_at = dt.datetime.fromtimestamp(expires, dt.UTC)
    if expires_at <= now:
        return NonceCheck("nonce_expired", expires_at)
    return NonceCheck(None, expires_at)


def consume_nonce(
    s: Session, node_id: int, nonce: bytes, now: dt.datetime, key: bytes | None = None
) -> str | None:
    """Consume ``nonce`` for ``node_id`` exactly once, atomically across instances: its tag and
    expiry are checked, then it is recorded as used (the unique column refuses a second use).
    The node's expired used nonces are forgotten first (the attestation hot path leaves that to
    the retention job: ``check_nonce`` + ``hotpath.use_nonce``).

    Returns None on success, else a stable reason code: ``nonce_unknown``, ``nonce_wrong_node``,
    ``nonce_reused``, ``nonce_expired``.
    """
    checked = check_nonce(node_id, nonce, now, key if key is not None else nonce_key(s, now))
    if checked.refused is not None:
        return checked.refused
    s.execute(delete(Nonce).where(Nonce.node_id == node_id, Nonce.expires_at <= now))
    if not hotpath.use_nonce(s, node_id, nonce, now, checked.expires_at):
        return "nonce_reused"
    return None


# --- event logs -----------------------------------------------------------------------------


def put_event_log(s: Session, sha256_hex: str, data: bytes, now: dt.datetime) -> None:
    """Store a log once under its SHA-256 (a concurrent insert of the same log is harmless). A
    log already stored is only read: no insert, so no wait on another transaction's row."""
    if has_event_log(s, sha256_hex):
        return
    values = {"sha256": sha256_hex, "data": data, "size": len(data), "created_at": now}
    if s.get_bind().dialect.name == "postgresql":
        s.execute(pg_insert(EventLogBlob).values(**values).on_conflict_do_nothing())
    else:
        s.execute(sqlite_insert(EventLogBlob).values(**values).on_conflict_do_nothing())


def get_event_log(s: Session, sha256_hex: str) -> bytes | None:
    return s.scalars(select(EventLogBlob.data).where(EventLogBlob.sha256 == sha256_hex)).first()


_HAS_LOG = select(EventLogBlob.sha256).where(EventLogBlob.sha256 == bindparam("sha256"))


def has_event_log(s: Db, sha256_hex: str) -> bool:
    return prepared(s, _HAS_LOG).first(s, {"sha256": sha256_hex}) is not None


# --- golden sets and assignments ------------------------------------------------------------


V = TypeVar("V", bound=VersionedColumns)


def get_version(s: Session, model: type[V], name: str, version: str) -> V | None:
    """One stored version of a golden set or runtime policy (``model``)."""
    q = select(model).where(model.name == name, model.version == version)
    return s.scalars(q).first()


def list_versions(s: Session, model: type[V], *, name: str | None = None) -> list[V]:
    q = select(model).order_by(model.name, model.id)
    if name is not None:
        q = q.where(model.name == name)
    return list(s.scalars(q))


def versions_named(
    s: Session, model: type[V], names: set[str], *, defer_source: bool = False
) -> list[V]:
    """Every stored version (any status) of the sets or policies ``names``, oldest first;
    ``defer_source``: the document is read only when used (compiled policies are cached)."""
    if not names:
        return []
    q = select(model).where(model.name.in_(sorted(names))).order_by(model.id)
    if defer_source:
        q = q.options(defer(model.source))
    return list(s.scalars(q))


def get_golden(s: Session, name: str, version: str) -> GoldenSetRow | None:
    return get_version(s, GoldenSetRow, name, version)


def list_golden(s: Session, *, name: str | None = None) -> list[GoldenSetRow]:
    return list_versions(s, GoldenSetRow, name=name)


def list_assignments(s: Session) -> list[Assignment]:
    return list(s.scalars(select(Assignment).order_by(Assignment.id)))


def assign(s: Session, golden_name: str, selector: Mapping[str, str], now: dt.datetime) -> bool:
    """Assign every version of ``golden_name`` to nodes matching ``selector``; False if present."""
    return add_assignment(s, Assignment, "golden_name", golden_name, selector, now)


def add_assignment(
    s: Session,
    model: type[Any],
    name_field: str,
    name: str,
    selector: Mapping[str, str],
    now: dt.datetime,
) -> bool:
    """An assignment row of ``model`` (golden sets', runtime policies') unless one with this name
    and selector exists (False then)."""
    key = selector_key(selector)
    q = select(model).where(getattr(model, name_field) == name, model.selector_key == key)
    if s.scalars(q).first() is not None:
        return False
    s.add(model(**{name_field: name}, selector=dict(selector), selector_key=key, created_at=now))
    return True


def golden_names_for(labels: Mapping[str, str], assignments: Sequence[Assignment]) -> set[str]:
    return {a.golden_name for a in assignments if selector_matches(a.selector, labels)}


def golden_rows_for(s: Session, labels: Mapping[str, str]) -> list[GoldenSetRow]:
    """Every stored version (any status) of every golden set assigned to nodes with ``labels``,
    but a canary version only where its canary selector matches them too."""
    rows = versions_named(s, GoldenSetRow, golden_names_for(labels, list_assignments(s)))
    return [r for r in rows if r.canary is None or selector_matches(r.canary, labels)]
