"""Enrollment: prove the TPM is genuine and the AK lives in it, then pin the EK and bind the AK.

An explicit state machine per enrollment: ``challenged`` → ``activated`` (or ``failed`` after too
many wrong secrets, or past ``expires_at``). Anything else is refused with ``enrollment_step``.

What the node chooses: its name and its keys, nothing else. Its labels (which select its golden
sets) come from the enrollment token, or later from an admin; a re-enrollment keeps the node's
labels and state. One TPM is one node: an EK or AK bound to one name is refused for another
until an admin moves the node (``inventory.move_node``).

``start`` steps: 1. parse the EK and AK public areas; 2. chain the EK certificate to a configured
vendor CA (or accept a bare EK only where the operator allows it); 3. the certificate's key is the
EK sent; 4. the AK is a restricted signing key fixed to this TPM; 5. identity: the node name is not
held by a different EK (unless an admin allowed a replacement), and neither the EK nor the AK is
bound to another name; 6. use up a single-use token; 7. wrap a fresh secret for (EK, AK Name) with
MakeCredential and remember only its hash, and the hash of an activation key returned only to
this client.
``activate`` steps: 1. the enrollment exists and the caller holds its activation key (anyone else
is refused without touching it); 2. it is ``challenged`` and unexpired; 3. the secret matches
(constant time); 4. re-check the identity; 5. create or update the node: EK pinned, AK bound.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from assay.errors import VerificationFailed
from assay.tpm2 import ObjectAttributes, TpmPublic, make_credential, parse_public
from verifier.store import repo
from verifier.store.models import Enrollment, EnrollmentStep, Node, NodeState, iso

from . import events
from .context import Services
from .ekcert import CaPool, cert_fingerprint, load_ek_certificate, verify_ek_chain
from .errors import Conflict, Expired, Forbidden, NotFound, Unauthenticated
from .tokens import Caller

MAX_ACTIVATION_ATTEMPTS = 3
AK_REQUIRED = (
    ObjectAttributes.FIXED_TPM
    | ObjectAttributes.FIXED_PARENT
    | ObjectAttributes.SENSITIVE_DATA_ORIGIN
    | ObjectAttributes.RESTRICTED
    | ObjectAttributes.SIGN_ENCRYPT
)


@dataclass(frozen=True, slots=True)
class EnrollmentRequest:
    """What an enrolling node may say: its name and its keys (never its labels)."""

    node: str
    ek_cert: bytes | None
    ek_public: bytes
    ak_public: bytes


@dataclass(frozen=True, slots=True)
class EnrollmentChallenge:
    """The credential challenge, for the enrolling client only (the activation key is its own)."""

    enrollment_id: str
    activation_key: str
    credential_blob: bytes
    encrypted_secret: bytes
    expires_at: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "enrollment_id": self.enrollment_id,
            "activation_key": self.activation_key,
            "credential_blob": base64.b64encode(self.credential_blob).decode(),
            "encrypted_secret": base64.b64encode(self.encrypted_secret).decode(),
            "expires_at": iso(self.expires_at),
        }


@dataclass(frozen=True, slots=True)
class Activation:
    """An enrolled node: its name and the state it is in (a re-enrollment keeps the state)."""

    node: str
    state: NodeState

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "state": self.state}


def key_fingerprint(pub: TpmPublic) -> str:
    """SHA-256 of the key's SubjectPublicKeyInfo: the EK pin, independent of TPM encodings."""
    spki = pub.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def check_ak_attributes(ak: TpmPublic) -> None:
    attrs = ak.object_attributes
    missing = AK_REQUIRED & ~attrs
    if missing or attrs & ObjectAttributes.DECRYPT or ak.from_spki:
        raise VerificationFailed(
            f"the AK must be a restricted signing key fixed to its TPM (attributes {attrs!r})",
            code="ak_attributes",
        )


def _check_ek(svc: Services, req: EnrollmentRequest, ek: TpmPublic, now: dt.datetime) -> str | None:
    """Steps 2-3: the EK certificate chain and key; returns the certificate fingerprint."""
    if req.ek_cert is None:
        if not svc.config.allow_ek_without_cert:
            raise VerificationFailed(
                "an EK certificate is required (allow_ek_without_cert is off)",
                code="ek_cert_required",
            )
        return None
    cert = load_ek_certificate(req.ek_cert)
    verify_ek_chain(cert, CaPool.load(svc.config.ek_ca_dir), now)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if cert.public_key().public_bytes(der, spki) != ek.public_key().public_bytes(der, spki):
        raise VerificationFailed(
            "the EK certificate is for a different key than the EK public sent",
            code="ek_cert_mismatch",
        )
    return cert_fingerprint(cert)


def _check_identity(db: Session, name: str, ek_fp: str, ak_name: bytes) -> None:
    """Step 5: one TPM is one node, and a name keeps its TPM unless an admin allowed a new one."""
    node = repo.get_node(db, name)
    if node is not None and node.ek_fingerprint != ek_fp and not node.replace_allowed:
        raise Conflict(
            "ek_mismatch",
            f"node {name!r} is enrolled with a different EK; an admin must replace it first",
        )
    for other, what, code in (
        (repo.node_by_ek(db, ek_fp), "EK", "ek_in_use"),
        (repo.node_by_ak(db, ak_name), "AK", "ak_in_use"),
    ):
        if other is not None and other.name != name:
            raise Conflict(
                code,
                f"this TPM's {what} is enrolled as node {other.name!r}; "
                "an admin must move that node to a new name",
            )


def start(svc: Services, req: EnrollmentRequest, caller: Caller) -> EnrollmentChallenge:
    now = svc.now()
    # 1. Parse.
    ek = parse_public(req.ek_public)
    ak = parse_public(req.ak_public)
    # 2-3. EK certificate chain and key.
    cert_fp = _check_ek(svc, req, ek, now)
    # 4. AK attributes.
    check_ak_attributes(ak)
    ek_fp = key_fingerprint(ek)
    secret = secrets.token_bytes(32)
    blob, encrypted = make_credential(ek, ak.name, secret)
    enrollment_id = secrets.token_urlsafe(16)
    activation_key = secrets.token_urlsafe(32)
    expires = now + dt.timedelta(seconds=svc.config.enrollment_lifetime)
    # 5. Identity (a refusal is audited in its own transaction, so it survives the error).
    _refuse_audited(svc, req.node, ek_fp, ak.name, caller.actor, now)
    with svc.store.write() as db:
        _check_identity(db, req.node, ek_fp, ak.name)  # again, inside the transaction
        # 6. Single-use token.
        if caller.single_use and not repo.use_single_use_token(db, caller.token_id, now):
            raise Unauthenticated("token_used", "the single-use token was already used")
        # 7. Remember the challenge; the labels are the token's, never the node's.
        token = repo.get_token(db, caller.token_id)
        db.add(
            Enrollment(
                id=enrollment_id,
                node_name=req.node,
                labels=dict(token.labels) if token is not None else {},
                ek_public=ek.raw,
                ek_fingerprint=ek_fp,
                ek_cert_fingerprint=cert_fp,
                ak_public=ak.raw,
                ak_name=ak.name,
                secret_sha256=hashlib.sha256(secret).digest(),
                activation_key_sha256=_key_hash(activation_key),
                step=EnrollmentStep.CHALLENGED,
                attempts=0,
                token_id=caller.token_id,
                created_at=now,
                expires_at=expires,
            )
        )
        # The enrollment id is not audited: reviewers read the audit log, only the client acts.
        repo.audit(
            db, caller.actor, "enroll_start", req.node, "", {"ek_fingerprint": ek_fp}, now=now
        )
    return EnrollmentChallenge(enrollment_id, activation_key, blob, encrypted, expires)


def _key_hash(activation_key: str) -> bytes:
    return hashlib.sha256(activation_key.encode()).digest()


def _refuse_audited(
    svc: Services, name: str, ek_fp: str, ak_name: bytes, actor: str, now: dt.datetime
) -> None:
    with svc.store.read() as db:
        try:
            _check_identity(db, name, ek_fp, ak_name)
            return
        except Conflict as exc:
            refusal = exc
    with svc.store.write() as db:
        repo.audit(
            db,
            actor,
            "enroll_refused",
            name,
            refusal.code,
            {"ek_fingerprint": ek_fp, "ak_name": ak_name.hex()},
            now=now,
        )
    raise refusal


def activate(svc: Services, enrollment_id: str, secret: bytes, activation_key: str) -> Activation:
    now = svc.now()
    with svc.store.write() as db:
        row = _enrollment_of_client(db, enrollment_id, activation_key)  # 1.
        refusal = _refusal(db, row, secret, now)  # 2-3.
        if refusal is None:
            # 4-5. Identity, then pin and bind.
            _check_identity(db, row.node_name, row.ek_fingerprint, row.ak_name)
            node = _bind(db, row, now)
            row.step = EnrollmentStep.ACTIVATED
            details = {"ek_fingerprint": row.ek_fingerprint, "ak_name": row.ak_name.hex()}
            repo.audit(db, "agent", "enrolled", row.node_name, "", details, now=now)
            return Activation(node.name, node.state)
    raise refusal  # after the commit: the expiry or the failed attempt is kept


def _enrollment_of_client(db: Session, enrollment_id: str, activation_key: str) -> Enrollment:
    """Step 1: the enrollment, and only for the client that started it (anyone else changes
    nothing)."""
    row = db.get(Enrollment, enrollment_id)
    if row is None:
        raise NotFound("enrollment_unknown", "no such enrollment")
    if row.activation_key_sha256 is None or not hmac.compare_digest(
        _key_hash(activation_key), row.activation_key_sha256
    ):
        raise Forbidden(
            "activation_key_invalid", "this is not the client that started the enrollment"
        )
    return row


def _refusal(
    db: Session, row: Enrollment, secret: bytes, now: dt.datetime
) -> Expired | VerificationFailed | None:
    """Steps 2-3: the state machine and the secret (constant time). A refusal changes the row
    (expired; one more attempt, failed after the last) and is returned, to be raised once that
    change is committed."""
    if row.step != EnrollmentStep.CHALLENGED:
        raise Conflict("enrollment_step", f"enrollment is {row.step}, not awaiting activation")
    if row.expires_at <= now:
        row.step = EnrollmentStep.EXPIRED
        return Expired("enrollment_expired", "the enrollment challenge expired")
    if not hmac.compare_digest(hashlib.sha256(secret).digest(), row.secret_sha256):
        row.attempts += 1
        if row.attempts >= MAX_ACTIVATION_ATTEMPTS:
            row.step = EnrollmentStep.FAILED
        repo.audit(db, "agent", "activation_failed", row.node_name, "wrong secret", now=now)
        return VerificationFailed("the activated secret is wrong", code="activation_failed")
    return None


def _bind(db: Session, row: Enrollment, now: dt.datetime) -> Node:
    """Pin the EK and bind the AK. A known node keeps its labels and state (and a quarantine)."""
    node = repo.get_node(db, row.node_name)
    before = None if node is None else events.standing(node)
    if node is None:
        node = Node(name=row.node_name, golden_versions=[], labels=dict(row.labels))
        db.add(node)
        _set_state(node, NodeState.ENROLLED, "enrolled; awaiting the first attestation", now)
        node.enrolled_at = now
    elif node.ek_fingerprint != row.ek_fingerprint:  # an admin-approved replacement
        node.last_reset_count = node.last_restart_count = None
        node.boot_log_sha256 = None
        node.last_success_at = None
        node.last_attestation_id = None  # a release must not restore the old TPM's verdict
        if node.state != NodeState.QUARANTINED:
            msg = "new TPM enrolled; awaiting the first attestation"
            _set_state(node, NodeState.ENROLLED, msg, now)
        node.enrolled_at = now
    node.ek_public = row.ek_public
    node.ek_fingerprint = row.ek_fingerprint
    node.ek_cert_fingerprint = row.ek_cert_fingerprint
    node.ak_public = row.ak_public
    node.ak_name = row.ak_name
    node.replace_allowed = False
    try:
        db.flush()
    except IntegrityError:  # another instance bound this EK to another name just now
        raise Conflict("ek_in_use", "this TPM's EK was just enrolled as another node") from None
    events.node_state_changed(db, node, before, now=now)
    return node


def _set_state(node: Node, state: NodeState, reason: str, now: dt.datetime) -> None:
    node.state, node.reason, node.state_since = state, reason, now
