"""Issuing a node's EAR: its standing as of now, signed with the current EAR key.

What a token says comes only from the store: the node's effective state (``stale`` computed
from its freshness window, so a silent node is never ``affirming``), the reason **code** (never
the approved values a reason message may quote), its golden versions. ``exp`` is when a trusted
node would turn stale (last successful quote + window); any other standing expires one window
after issue, so relying parties re-ask.

A node may fetch its own EAR without a token by proving it holds its enrolled AK: it asks
``/challenge`` for a nonce as for attestation and sends a TPM2_Quote whose qualifying data is
``SHA-256("assay-ear-request\\0" || nonce)`` (``assay.ak_proof``). The quote verifies with the
enrolled AK only, the nonce is single use and short-lived, and the domain-separated digest means
such a quote can never be accepted as evidence (evidence must carry the nonce itself), nor
evidence as such a request.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass

from assay.ak_proof import ear_request_digest
from assay.errors import MalformedEvidence, VerificationFailed
from assay.tpm2 import parse_public, verify_quote_without_pcrs
from verifier.ear import EarClaims, appraisal_for, sign_ear
from verifier.ear.claims import BOOT
from verifier.ear.runtime import RUNTIME, boot_appraisal_for, runtime_appraisal_for
from verifier.store import repo
from verifier.store import runtime as rstore

from . import ear_keys
from .context import Services
from .errors import BadRequest, Unauthenticated
from .inventory import NodeView, get_node

DEVELOPER = "the Assay project"
_CODE = re.compile(r"([a-z][a-z0-9_]*):")
_HEX = frozenset("0123456789abcdef")


@functools.cache
def build_id() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"assay-verifier {version('assay')}"
    except PackageNotFoundError:
        return "assay-verifier (source)"


@dataclass(frozen=True, slots=True)
class IssuedEar:
    token: str
    claims: EarClaims


def reason_code(state: str, reason: str) -> str:
    match = _CODE.match(reason)
    if match:
        return match.group(1)
    return "all_checks_passed" if state == "trusted" else state


def parse_rp_nonce(text: str | None) -> str | None:
    """A relying party's nonce: 16..128 hex digits (8..64 bytes), kept as lower-case hex."""
    if text is None:
        return None
    value = text.lower()
    if not 16 <= len(value) <= 128 or len(value) % 2 or not set(value) <= _HEX:
        raise BadRequest("bad_query", "nonce must be 16..128 hex digits (8..64 bytes)")
    return value


def claims_for(
    svc: Services, view: NodeView, nonce: str | None, runtime: tuple[str, ...] | None = None
) -> EarClaims:
    """``runtime``: the runtime policies in force for the node (None: none applies to it, and
    the token has no runtime submodule)."""
    now = svc.now()
    window = svc.config.freshness_window
    iat = int(now.timestamp())
    code = reason_code(view.state, view.reason)
    submods = {BOOT: appraisal_for(view.state, code, view.golden)}
    if runtime is not None:
        submods[BOOT] = boot_appraisal_for(view.state, code, view.golden)
        submods[RUNTIME] = runtime_appraisal_for(view.state, code, runtime)
    exp = iat + max(1, int(window))
    if view.state == "trusted" and view.last_success_at is not None:
        exp = max(iat + 1, int((view.last_success_at + dt.timedelta(seconds=window)).timestamp()))
    return EarClaims(
        node=view.name,
        issuer=svc.config.ear_issuer,
        iat=iat,
        exp=exp,
        verifier_build=build_id(),
        verifier_developer=DEVELOPER,
        submods=submods,
        nonce=nonce,
        state=str(view.state),
        reason=code,
    )


def issue(svc: Services, node_name: str, *, nonce: str | None = None) -> IssuedEar:
    """The signed EAR of ``node_name`` (NotFound ``node_unknown`` for a node Assay does not know)."""
    with svc.store.read() as db:
        node = get_node(db, node_name)
        view = NodeView.of(node, svc.now(), svc.config.freshness_window)
        rows = rstore.rows_for(db, node.labels)
    runtime = tuple(f"{r.name}@{r.version}" for r in rows if r.status == "active") if rows else None
    claims = claims_for(svc, view, nonce, runtime)
    ring = ear_keys.keyring(svc)
    return IssuedEar(sign_ear(claims, ring.signing.key, ring.signing.kid), claims)


def authenticate_node(
    svc: Services, node_name: str, nonce: bytes, attest: bytes, signature: bytes
) -> None:
    """The caller holds ``node_name``'s enrolled AK: a quote over ``ear_request_digest(nonce)``
    made by it, for a nonce issued to this node and not used before (Unauthenticated else)."""
    now = svc.now()
    key = svc.nonce_key()
    with svc.store.write() as db:
        node = repo.get_node(db, node_name, key_share=True)  # a delete waits for the nonce's use
        if node is None:
            raise Unauthenticated("node_auth_failed", f"node {node_name!r} is not enrolled")
        ak_public = node.ak_public
        refused = repo.consume_nonce(db, node.id, nonce, now, key)
    if refused is not None:
        raise Unauthenticated(refused, f"nonce refused: {refused.removeprefix('nonce_')}")
    try:
        verify_quote_without_pcrs(
            attest, signature, parse_public(ak_public), ear_request_digest(nonce)
        )
    except (VerificationFailed, MalformedEvidence) as exc:
        code = getattr(exc, "code", "malformed_evidence")
        raise Unauthenticated("node_auth_failed", f"AK proof refused ({code}): {exc}") from None
