"""The verifier's tables (SQLAlchemy 2 declarative models).

The schema is created and changed only by the Alembic migrations in ``migrations/``; these models
must match them (``tests/test_store.py`` compares the two). Times are stored as naive UTC and read
back as aware UTC (``UtcDateTime``), so SQLite and PostgreSQL behave the same. States and statuses
are StrEnums stored as their values (``EnumText``): the same strings as ever, and a value outside
the enum is refused on the way in and on the way out.
"""

from __future__ import annotations

import datetime as dt
import secrets
from enum import StrEnum
from typing import Any, Generic, TypeVar, overload

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from verifier.appraisal.verdict import VerdictStatus


class NodeState(StrEnum):
    """A node's inventory state. ``trusted``/``untrusted``/``unknown`` follow its last verdict;
    ``stale`` is a trusted node past its freshness window; ``quarantined`` only an admin lifts."""

    ENROLLED = "enrolled"
    TRUSTED = "trusted"
    UNTRUSTED = "untrusted"
    UNKNOWN = "unknown"
    STALE = "stale"
    QUARANTINED = "quarantined"

    @classmethod
    def after(cls, verdict: VerdictStatus) -> NodeState:
        """The state a verdict puts a node in (unless it is quarantined)."""
        return cls(verdict.value)


class AttestationSource(StrEnum):
    """Where an attestation's verdict came from: new evidence, or stored evidence appraised again."""

    EVIDENCE = "evidence"
    REAPPRAISAL = "reappraisal"


class EnrollmentStep(StrEnum):
    """The enrollment state machine: ``challenged`` → ``activated`` | ``failed`` | ``expired``."""

    CHALLENGED = "challenged"
    ACTIVATED = "activated"
    FAILED = "failed"
    EXPIRED = "expired"


@overload
def iso(value: dt.datetime) -> str: ...
@overload
def iso(value: None) -> None: ...
def iso(value: dt.datetime | None) -> str | None:
    """The one text form of a time the verifier shows: ISO 8601 in UTC with ``Z``."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored as naive UTC, returned as an aware UTC datetime."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        return value.replace(tzinfo=dt.UTC)


E = TypeVar("E", bound=StrEnum)


class EnumText(TypeDecorator[E], Generic[E]):
    """A StrEnum stored as its value in a VARCHAR (no database enum type, so no migration).

    Writing anything that is not one of the enum's values raises (``StatementError`` at flush);
    reading returns the member, or raises on a value that is not one (a row nothing wrote)."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[E], length: int = 16) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> E | None:
        return None if value is None else self.enum(value)


class Base(DeclarativeBase):
    pass


def new_row_version() -> int:
    """A new node row's first version: random, so a name enrolled again under a reused id (SQLite
    reuses the highest) never has the version of an old snapshot of that id."""
    return secrets.randbits(48)


class Node(Base):
    __tablename__ = "nodes"
    __table_args__ = (Index("ix_nodes_state_name", "state", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(253), unique=True)
    ek_public: Mapped[bytes] = mapped_column(LargeBinary)
    ek_fingerprint: Mapped[str] = mapped_column(String(64), index=True, unique=True)
    """One TPM is one node: an EK is bound to one name (an admin moves it, never an enrollment)."""
    ek_cert_fingerprint: Mapped[str | None] = mapped_column(String(64))
    ak_public: Mapped[bytes] = mapped_column(LargeBinary)
    ak_name: Mapped[bytes] = mapped_column(LargeBinary)
    labels: Mapped[dict[str, str]] = mapped_column(JSON)
    """Chosen by the operator (the enrollment token's labels, or an admin): they select golden sets."""
    state: Mapped[NodeState] = mapped_column(EnumText(NodeState), index=True)
    state_since: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    reason: Mapped[str] = mapped_column(Text, default="")
    replace_allowed: Mapped[bool] = mapped_column(Boolean, default=False)
    last_attestation_id: Mapped[int | None] = mapped_column(Integer)
    last_attested_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    last_success_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    last_reset_count: Mapped[int | None] = mapped_column(Integer)
    last_restart_count: Mapped[int | None] = mapped_column(Integer)
    last_reboot_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    boot_log_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    golden_versions: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The versions the last appraisal matched (name@version): what the node booted.
    booted_versions: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    enrolled_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    verdict_key: Mapped[str | None] = mapped_column(String(64))
    """What the last full attestation's verdict was computed from (log, quoted PCRs, golden rows,
    policy window, appraisal version): a re-attestation with the same key reuses that verdict."""
    last_clock: Mapped[int | None] = mapped_column(BigInteger)
    """The TPM clock of the last verified quote: a verdict is reused only while it advances."""
    row_version: Mapped[int] = mapped_column(
        BigInteger, default=new_row_version, server_default="1"
    )
    """Bumped by the database (a trigger, migration 0009) with every change of the row but the
    refresh of an unchanged re-attestation: a node snapshot kept by an instance is written on
    only while the row still has its version."""


class Enrollment(Base):
    """A pending credential-activation challenge: step ``challenged`` → ``activated``/``failed``."""

    __tablename__ = "enrollments"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    node_name: Mapped[str] = mapped_column(String(253), index=True)
    labels: Mapped[dict[str, str]] = mapped_column(JSON)
    ek_public: Mapped[bytes] = mapped_column(LargeBinary)
    ek_fingerprint: Mapped[str] = mapped_column(String(64))
    ek_cert_fingerprint: Mapped[str | None] = mapped_column(String(64))
    ak_public: Mapped[bytes] = mapped_column(LargeBinary)
    ak_name: Mapped[bytes] = mapped_column(LargeBinary)
    secret_sha256: Mapped[bytes] = mapped_column(LargeBinary)
    activation_key_sha256: Mapped[bytes | None] = mapped_column(LargeBinary)
    """Hash of the key returned only to the enrolling client; an activation must present it."""
    step: Mapped[EnrollmentStep] = mapped_column(EnumText(EnrollmentStep))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    token_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class Nonce(Base):
    """A used quote nonce, kept until it expires so that it is used once (the unique ``nonce`` is
    what makes it so, on any instance). Outstanding nonces are not stored: they carry their own
    node, expiry and tag (``repo.issue_nonce``)."""

    __tablename__ = "nonces"
    __table_args__ = (Index("ix_nonces_expires_at", "expires_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), index=True)
    nonce: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class ServiceKey(Base):
    """A secret the verifier instances share (created once, by whichever instance needs it first):
    ``nonce`` keys the stateless challenge nonces."""

    __tablename__ = "service_keys"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class EventLogBlob(Base):
    """A raw event log, content-addressed: stored once per boot, shared by its attestations."""

    __tablename__ = "event_logs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class Attestation(Base):
    __tablename__ = "attestations"
    __table_args__ = (Index("ix_attestations_node_time", "node_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    source: Mapped[AttestationSource] = mapped_column(EnumText(AttestationSource))
    status: Mapped[VerdictStatus] = mapped_column(EnumText(VerdictStatus))
    reason: Mapped[str] = mapped_column(Text)
    verdict: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    """Rows written before revision 0004 hold their verdict here; newer ones in ``verdicts``."""
    verdict_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    quote: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    pcrs: Mapped[dict[str, dict[str, str]]] = mapped_column(JSON)
    event_log_sha256: Mapped[str | None] = mapped_column(
        ForeignKey("event_logs.sha256"), index=True
    )
    agent_version: Mapped[str] = mapped_column(String(64), default="")
    reset_count: Mapped[int | None] = mapped_column(Integer)
    restart_count: Mapped[int | None] = mapped_column(Integer)
    reboot: Mapped[bool] = mapped_column(Boolean, default=False)
    golden_versions: Mapped[list[str]] = mapped_column(JSON, default=list)


class VerdictBlob(Base):
    """A verdict document, content-addressed (SHA-256 of its canonical JSON), zlib-compressed:
    the nodes of one fleet mostly share a handful of verdicts, so each is stored once."""

    __tablename__ = "verdicts"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    """Touched whenever a new attestation refers to it, so the blob GC's grace period holds."""


class AttestationRepeat(Base):
    """Unchanged re-attestations of one full attestation (same boot, log, PCRs, golden rows): a
    counter, first and last time, and the last quote as signed, updated in place."""

    __tablename__ = "attestation_repeats"

    attestation_id: Mapped[int] = mapped_column(
        ForeignKey("attestations.id", ondelete="CASCADE"), primary_key=True
    )
    count: Mapped[int] = mapped_column(Integer)
    first_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    last_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    last_nonce: Mapped[bytes] = mapped_column(LargeBinary)
    last_quote: Mapped[bytes] = mapped_column(LargeBinary)
    last_signature: Mapped[bytes] = mapped_column(LargeBinary)


class StoreVersion(Base):
    """Counters bumped in the same transaction as a change that in-process caches depend on
    (``golden``: golden sets, statuses, assignments): caches are invalidated by version."""

    __tablename__ = "store_versions"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class Lease(Base):
    """Who runs a background job until when, and where it got to (``cursor``): a job runs only
    in the lease holder and each batch commits only while the lease is still its own."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    cursor: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class ReappraisalJob(Base):
    """A batched re-appraisal (a golden set's retire or revoke, or a runtime policy's status
    change): the nodes with id > ``cursor`` that policy ``golden_name`` of ``kind`` applies to
    are still to do; any instance resumes an unfinished job."""

    __tablename__ = "reappraisal_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default="golden", server_default="golden")
    """``golden`` or ``runtime``: which assignments ``golden_name`` is matched against."""
    golden_name: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    cursor: Mapped[int] = mapped_column(Integer, default=0)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, index=True)


class VersionedColumns:
    """The columns of a stored policy version (golden sets, runtime policies): ``name@version``,
    the store's status and reason (which override the document's), the source document."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    format: Mapped[str] = mapped_column(String(16))
    source: Mapped[bytes] = mapped_column(LargeBinary)
    selector: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    changed_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class GoldenSetRow(VersionedColumns, Base):
    __tablename__ = "golden_sets"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_golden_name_version"),)

    # A canary version applies only to the nodes (of its set's assignment) matching this selector.
    canary: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)


class Assignment(Base):
    """Golden set ``golden_name`` (every version) applies to nodes whose labels match."""

    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("golden_name", "selector_key", name="uq_assignment"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    golden_name: Mapped[str] = mapped_column(String(200))
    selector: Mapped[dict[str, str]] = mapped_column(JSON)
    selector_key: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_sha256: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    role: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text, default="")
    single_use: Mapped[bool] = mapped_column(Boolean, default=False)
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    """For ``enroll`` tokens: the labels every node first enrolled with this token receives."""
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    used_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(300))
    reason: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# --- the review console (migration 0004) ----------------------------------------------------


class TriageState(StrEnum):
    """Where a reviewer has taken an incident: ``new`` → ``acknowledged`` → ``resolved``, or
    ``dismissed``; a resolved incident that fails again is ``new`` again."""

    NEW = "new"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    DISMISSED = "dismissed"


class DraftState(StrEnum):
    """A drafted golden version: ``draft`` → ``approved`` (a new active version) | ``rejected``."""

    DRAFT = "draft"
    APPROVED = "approved"
    REJECTED = "rejected"


class ConsoleSession(Base):
    """A signed-in console user: the cookie holds a random secret, the table only its SHA-256.

    The session acts as the token it was opened with (``token_id``): revoking or expiring the token
    ends the session too. ``csrf`` is the per-session token every form POST must carry."""

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[str] = mapped_column(String(32), index=True)
    role: Mapped[str] = mapped_column(String(16))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class Incident(Base):
    """Failures grouped across nodes: one check failing with one got-value (``key`` is their hash)."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    check_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(64))
    got: Mapped[str | None] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[TriageState] = mapped_column(EnumText(TriageState), index=True)
    assignee: Mapped[str] = mapped_column(String(200), default="")
    first_seen: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    last_seen: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    changed_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)


class IncidentNode(Base):
    """A node of an incident: when it first and last failed that way, and its latest attestation."""

    __tablename__ = "incident_nodes"
    __table_args__ = (UniqueConstraint("incident_id", "node_id", name="uq_incident_node"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), index=True)
    attestation_id: Mapped[int] = mapped_column(Integer)
    event: Mapped[int | None] = mapped_column(Integer)
    first_seen: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    last_seen: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    count: Mapped[int] = mapped_column(Integer, default=1)


class IncidentNote(Base):
    __tablename__ = "incident_notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(
        ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)


class ConsoleMarker(Base):
    """A named high-water mark (``incidents``: the last attestation id grouped into incidents)."""

    __tablename__ = "console_markers"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


class GoldenDraft(Base):
    """A new golden version drafted from a reviewed attestation; active only once a second person
    approves it (four-eyes). ``source`` is the drafted set as YAML, with its provenance."""

    __tablename__ = "golden_drafts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    golden_name: Mapped[str] = mapped_column(String(200), index=True)
    base_version: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    source: Mapped[bytes] = mapped_column(LargeBinary)
    attestation_id: Mapped[int] = mapped_column(Integer)
    node_name: Mapped[str] = mapped_column(String(253))
    events: Mapped[list[int]] = mapped_column(JSON)
    measurements: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    """What each selected event added: its index, PCR, kind, digest or text, label."""
    state: Mapped[DraftState] = mapped_column(EnumText(DraftState), index=True)
    reason: Mapped[str] = mapped_column(Text)
    drafted_by: Mapped[str] = mapped_column(String(200))
    drafted_token: Mapped[str] = mapped_column(String(32))
    drafted_at: Mapped[dt.datetime] = mapped_column(UtcDateTime)
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    decision_reason: Mapped[str | None] = mapped_column(Text)
