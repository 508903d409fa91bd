"""Enrollment: prove the TPM is genuine and the AK lives in it, then pin the EK and bind the AK.

An explicit state machine per enrollment: ``challenged`` → ``activated`` (or ``failed`` after too
many wrong secrets, or past ``expires_at``). Anything else is refused with ``enrollment_step``.

``start`` steps: 1. parse the EK and AK public areas; 2. chain the EK certificate to a configured
vendor CA (or accept a bare EK only where the operator allows it); 3. the certificate's key is the
EK sent; 4. the AK is a restricted signing key fixed to this TPM; 5. the node name is not held by a
different EK (unless an admin allowed a replacement); 6. use up a single-use token; 7. wrap a fresh
secret for (EK, AK Name) with MakeCredential and remember only its hash.
``activate`` steps: 1. the enrollment exists, is ``challenged`` and unexpired; 2. the secret
matches (constant time); 3. re-check the EK pin; 4. create or update the node: EK pinned, AK bound.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from sqlalchemy.orm import Session

from assay.errors import VerificationFailed
from assay.tpm2 import ObjectAttributes, TpmPublic, make_credential, parse_public
from verifier.store import repo
from verifier.store.models import Enrollment, Node

from .auth import Caller
from .context import Services
from .ekcert import CaPool, cert_fingerprint, load_ek_certificate, verify_ek_chain
from .errors import ApiError, conflict

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
    node: str
    labels: dict[str, str]
    ek_cert: bytes | None
    ek_public: bytes
    ak_public: bytes


@dataclass(frozen=True, slots=True)
class EnrollmentChallenge:
    enrollment_id: str
    credential_blob: bytes
    encrypted_secret: bytes
    expires_at: dt.datetime


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


def _check_pin(node: Node | None, ek_fp: str) -> None:
    if node is not None and node.ek_fingerprint != ek_fp and not node.replace_allowed:
        raise conflict(
            "ek_mismatch",
            f"node {node.name!r} is enrolled with a different EK; an admin must replace it first",
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
    expires = now + dt.timedelta(seconds=svc.config.enrollment_lifetime)
    # 5. EK pin (a refusal is audited in its own transaction, so it survives the error).
    with svc.store.read() as db:
        existing = repo.get_node(db, req.node)
    try:
        _check_pin(existing, ek_fp)
    except ApiError:
        with svc.store.write() as db:
            repo.audit(
                db,
                caller.actor,
                "enroll_refused",
                req.node,
                "different EK",
                {"ek_fingerprint": ek_fp},
                now=now,
            )
        raise
    with svc.store.write() as db:
        _check_pin(repo.get_node(db, req.node), ek_fp)  # again, inside the transaction
        # 6. Single-use token.
        if caller.single_use and not repo.use_single_use_token(db, caller.token_id, now):
            raise ApiError(401, "token_used", "the single-use token was already used")
        # 7. Remember the challenge.
        db.add(
            Enrollment(
                id=enrollment_id,
                node_name=req.node,
                labels=req.labels,
                ek_public=ek.raw,
                ek_fingerprint=ek_fp,
                ek_cert_fingerprint=cert_fp,
                ak_public=ak.raw,
                ak_name=ak.name,
                secret_sha256=hashlib.sha256(secret).digest(),
                step="challenged",
                attempts=0,
                token_id=caller.token_id,
                created_at=now,
                expires_at=expires,
            )
        )
        repo.audit(
            db,
            caller.actor,
            "enroll_start",
            req.node,
            "",
            {"enrollment_id": enrollment_id, "ek_fingerprint": ek_fp},
            now=now,
        )
    return EnrollmentChallenge(enrollment_id, blob, encrypted, expires)


def activate(svc: Services, enrollment_id: str, secret: bytes) -> Node:
    now = svc.now()
    with svc.store.write() as db:
        # 1. State machine.
        row = db.get(Enrollment, enrollment_id)
        if row is None:
            raise ApiError(404, "enrollment_unknown", "no such enrollment")
        if row.step != "challenged":
            raise conflict("enrollment_step", f"enrollment is {row.step}, not awaiting activation")
        if row.expires_at <= now:
            row.step = "expired"
            return_error = ApiError(410, "enrollment_expired", "the enrollment challenge expired")
        else:
            return_error = None
        # 2. Secret, constant time.
        if return_error is None and not hmac.compare_digest(
            hashlib.sha256(secret).digest(), row.secret_sha256
        ):
            row.attempts += 1
            if row.attempts >= MAX_ACTIVATION_ATTEMPTS:
                row.step = "failed"
            repo.audit(db, "agent", "activation_failed", row.node_name, "wrong secret", now=now)
            return_error = ApiError(422, "activation_failed", "the activated secret is wrong")
        if return_error is None:
            # 3-4. Pin and bind.
            node = repo.get_node(db, row.node_name)
            _check_pin(node, row.ek_fingerprint)
            node = _bind(db, node, row, now)
            row.step = "activated"
            repo.audit(
                db,
                "agent",
                "enrolled",
                row.node_name,
                "",
                {"ek_fingerprint": row.ek_fingerprint, "ak_name": row.ak_name.hex()},
                now=now,
            )
            return node
    raise return_error


def _bind(db: Session, node: Node | None, row: Enrollment, now: dt.datetime) -> Node:
    if node is None:
        node = Node(name=row.node_name, golden_versions=[])
        db.add(node)
    elif node.ek_fingerprint != row.ek_fingerprint:  # an admin-approved replacement
        node.last_reset_count = node.last_restart_count = None
        node.boot_log_sha256 = None
        node.last_success_at = None
    node.ek_public = row.ek_public
    node.ek_fingerprint = row.ek_fingerprint
    node.ek_cert_fingerprint = row.ek_cert_fingerprint
    node.ak_public = row.ak_public
    node.ak_name = row.ak_name
    node.labels = dict(row.labels)
    node.replace_allowed = False
    node.state = "enrolled"
    node.state_since = now
    node.reason = "enrolled; awaiting the first attestation"
    node.enrolled_at = now
    db.flush()
    return node
