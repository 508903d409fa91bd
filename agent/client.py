"""HTTP client for the verifier's agent API (push model: the agent starts every exchange).

Responses are decoded into frozen dataclasses here; a 2xx body that is not what the API defines
is a BadVerifierResponse, never a partly-filled object.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote as urlquote

from assay import ak_proof
from assay.algorithms import HashAlg

from . import __version__
from ._transport import build_opener
from .errors import BadVerifierResponse, VerifierRefused, VerifierUnreachable

USER_AGENT = f"assay-agent/{__version__}"


@dataclass(frozen=True, slots=True)
class CredentialChallenge:
    enrollment_id: str
    activation_key: str
    """Returned only to this client; the activation must present it (nobody else can fail it)."""
    credential_blob: bytes
    encrypted_secret: bytes
    expires_at: str


@dataclass(frozen=True, slots=True)
class Challenge:
    nonce: bytes
    expires_at: str
    pcr_selection: Mapping[HashAlg, tuple[int, ...]]
    known_event_log_sha256: bytes | None


@dataclass(frozen=True, slots=True)
class AttestationResult:
    attestation_id: str
    status: str
    reason: str
    node_state: str
    checks: tuple[Mapping[str, Any], ...]
    next_challenge: Challenge | None = None
    """The nonce for the next round, when the verifier sends one (it saves a challenge request);
    verifiers that do not send it leave it None and the agent asks for a challenge."""
    ima_next: tuple[int, int] | None = None
    """Where the verifier wants this node's next IMA chunk to start (entries, bytes): the end of
    the prefix it verified; (0, 0) asks for the full list. None: the verifier tracks none."""


def _ima_next(body: Mapping[str, Any], where: str) -> tuple[int, int] | None:
    ima = body.get("ima")
    if ima is None:
        return None
    entries = ima.get("entries") if isinstance(ima, dict) else None
    offset = ima.get("offset") if isinstance(ima, dict) else None
    if not all(type(v) is int and 0 <= v < 2**48 for v in (entries, offset)):
        raise BadVerifierResponse(f"{where}: ima is not {{entries, offset}} of integers")
    assert isinstance(entries, int) and isinstance(offset, int)
    return entries, offset


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _field(body: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = body.get(key)
    if not isinstance(value, kind):
        raise BadVerifierResponse(f"{where}: field {key!r} missing or not {kind.__name__}")
    return value


def _unb64(body: Mapping[str, Any], key: str, where: str) -> bytes:
    try:
        return base64.b64decode(_field(body, key, str, where), validate=True)
    except (binascii.Error, ValueError):
        raise BadVerifierResponse(f"{where}: field {key!r} is not base64") from None


def _unhex(value: str, key: str, where: str, size: int | None = None) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise BadVerifierResponse(f"{where}: field {key!r} is not hex") from None
    if size is not None and len(raw) != size:
        raise BadVerifierResponse(f"{where}: field {key!r} has {len(raw)} bytes, not {size}")
    return raw


def _selection(raw: Any, where: str) -> dict[HashAlg, tuple[int, ...]]:
    if not isinstance(raw, dict) or not raw:
        raise BadVerifierResponse(f"{where}: pcr_selection is not a non-empty object")
    out: dict[HashAlg, tuple[int, ...]] = {}
    for bank, pcrs in raw.items():
        try:
            alg = HashAlg.from_bank(str(bank))
        except ValueError:
            raise BadVerifierResponse(f"{where}: unknown bank {bank!r} in pcr_selection") from None
        if not isinstance(pcrs, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= 23 for p in pcrs
        ):
            raise BadVerifierResponse(f"{where}: PCR list for {bank!r} is not integers 0-23")
        out[alg] = tuple(sorted(set(pcrs)))
    return out


MAX_RESPONSE = 4 * 1024 * 1024
"""Largest verifier response read (a verdict with every check is a few KiB)."""


class VerifierClient:
    """One verifier base URL; every call is one request with a timeout.

    The transport is the standard library's (urllib over http.client): the agent stays resident on
    every node, and this keeps it about 9 MB smaller than requests would.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        tls_ca: str | None = None,
        tls_pin: str | None = None,
        allow_insecure_http: bool = False,
    ) -> None:
        # The verifier is authenticated (CA bundle or pinned certificate) before anything is sent;
        # plain HTTP only to loopback unless allowed (agent/_transport.py).
        self._opener = build_opener(
            base_url, tls_ca=tls_ca, tls_pin=tls_pin, allow_insecure_http=allow_insecure_http
        )
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def close(self) -> None:
        """Nothing to release: each request opens and closes its own connection."""

    def _send(
        self, url: str, payload: bytes | None, headers: Mapping[str, str], method: str = "POST"
    ) -> tuple[int, bytes]:
        # The scheme is http(s), checked in __init__.
        request = urllib.request.Request(url, data=payload, method=method, headers=dict(headers))  # noqa: S310
        request.add_header("User-Agent", USER_AGENT)
        try:
            with self._opener.open(request, timeout=self.timeout) as resp:
                return int(resp.status), resp.read(MAX_RESPONSE)
        except urllib.error.HTTPError as exc:
            with exc:
                return int(exc.code), exc.read(MAX_RESPONSE)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise VerifierUnreachable(
                    f"verifier {self.base_url} refused: its TLS certificate is not trusted "
                    f"({getattr(reason, 'verify_message', None) or reason})"
                ) from None
            raise VerifierUnreachable(
                f"verifier {self.base_url} unreachable: {type(reason).__name__}"
            ) from None

    def _post(
        self,
        path: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        expect: int,
    ) -> dict[str, Any]:
        url = self.base_url + path
        sent = dict(headers or {})
        if json_body is not None:
            data = json.dumps(json_body).encode()
            sent["Content-Type"] = "application/json"
        status, raw = self._send(url, data if data is not None else b"", sent)
        if status >= 500:
            raise VerifierUnreachable(f"verifier {url} failed with HTTP {status}")
        body = self._json(raw, status, url)
        if 400 <= status < 500:
            err = body.get("error") if isinstance(body, dict) else None
            code = str(err.get("code", "")) if isinstance(err, dict) else ""
            message = str(err.get("message", "")) if isinstance(err, dict) else ""
            raise VerifierRefused(
                f"verifier refused (HTTP {status} {code or 'no code'}): {message}".rstrip(": "),
                code=code or f"http_{status}",
                status=status,
            )
        if status != expect or not isinstance(body, dict):
            raise BadVerifierResponse(f"{url}: HTTP {status}, expected {expect} with a JSON object")
        return body

    @staticmethod
    def _json(raw: bytes, status: int, url: str) -> Any:
        try:
            return json.loads(raw)
        except ValueError:
            if status < 400:
                raise BadVerifierResponse(f"{url}: HTTP {status} body is not JSON") from None
            return None

    def enroll(
        self,
        token: str | None,
        *,
        node: str,
        labels: Mapping[str, str],
        ek_cert: bytes | None,
        ek_public: bytes,
        ak_public: bytes,
    ) -> CredentialChallenge:
        where = "enrollment response"
        body = self._post(
            "/v1/enrollments",
            json_body={
                "node": node,
                # The verifier refuses node-chosen labels; an empty set is simply not sent.
                **({"labels": dict(labels)} if labels else {}),
                "ek_cert": _b64(ek_cert) if ek_cert is not None else None,
                "ek_public": _b64(ek_public),
                "ak_public": _b64(ak_public),
            },
            headers={"Authorization": f"Bearer {token}"} if token else None,
            expect=201,
        )
        return CredentialChallenge(
            enrollment_id=_field(body, "enrollment_id", str, where),
            activation_key=_field(body, "activation_key", str, where),
            credential_blob=_unb64(body, "credential_blob", where),
            encrypted_secret=_unb64(body, "encrypted_secret", where),
            expires_at=_field(body, "expires_at", str, where),
        )

    def activate(self, enrollment_id: str, activation_key: str, secret: bytes) -> str:
        body = self._post(
            f"/v1/enrollments/{urlquote(enrollment_id, safe='')}/activation",
            json_body={"secret": _b64(secret), "activation_key": activation_key},
            expect=200,
        )
        return str(_field(body, "state", str, "activation response"))

    def challenge(self, node: str, event_log_sha256: bytes | None = None) -> Challenge:
        """A nonce; the verifier says it holds our log only when we name its digest."""
        where = "challenge response"
        request = {} if event_log_sha256 is None else {"event_log_sha256": event_log_sha256.hex()}
        body = self._post(
            f"/v1/nodes/{urlquote(node, safe='')}/challenge", json_body=request, expect=201
        )
        return _challenge_of(body, where)

    def own_ear(self, node: str, nonce: bytes, attest: bytes, signature: bytes) -> str:
        """The node's own EAR, fetched with an AK proof (``assay.ak_proof``) instead of a token."""
        url = f"{self.base_url}/v1/nodes/{urlquote(node, safe='')}/ear"
        headers = {
            ak_proof.HEADER_NONCE: nonce.hex(),
            ak_proof.HEADER_QUOTE: _b64(attest),
            ak_proof.HEADER_SIGNATURE: _b64(signature),
        }
        status, raw = self._send(url, None, headers, method="GET")
        if status >= 500:
            raise VerifierUnreachable(f"verifier {url} failed with HTTP {status}")
        if status != 200:
            body = self._json(raw, status, url)
            err = body.get("error") if isinstance(body, dict) else None
            code = str(err.get("code", "")) if isinstance(err, dict) else ""
            raise VerifierRefused(
                f"verifier refused the EAR request (HTTP {status} {code or 'no code'})",
                code=code or f"http_{status}",
                status=status,
            )
        token = raw.decode("ascii", "replace").strip()
        if token.count(".") != 2:
            raise BadVerifierResponse(f"{url}: the answer is not a JWT")
        return token

    def submit(self, node: str, bundle: bytes) -> AttestationResult:
        where = "evidence response"
        body = self._post(
            f"/v1/nodes/{urlquote(node, safe='')}/evidence",
            data=bundle,
            headers={"Content-Type": "application/cbor"},
            expect=200,
        )
        status = _field(body, "status", str, where)
        if status not in ("trusted", "untrusted", "unknown"):
            raise BadVerifierResponse(
                f"{where}: status {status!r} is not trusted/untrusted/unknown"
            )
        checks = body.get("checks", [])
        if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
            raise BadVerifierResponse(f"{where}: checks is not a list of objects")
        following = body.get("next_challenge")
        if following is not None and not isinstance(following, dict):
            raise BadVerifierResponse(f"{where}: next_challenge is not an object")
        return AttestationResult(
            attestation_id=_field(body, "attestation_id", str, where),
            status=status,
            reason=str(body.get("reason", "")),
            node_state=str(body.get("node_state", "")),
            checks=tuple(checks),
            next_challenge=None if following is None else _challenge_of(following, where),
            ima_next=_ima_next(body, where),
        )


def _challenge_of(body: Mapping[str, Any], where: str) -> Challenge:
    """A challenge (or an evidence answer's next_challenge), checked field by field."""
    known = body.get("known_event_log_sha256")
    if known is not None and not isinstance(known, str):
        raise BadVerifierResponse(f"{where}: known_event_log_sha256 is not hex or null")
    return Challenge(
        nonce=_unhex(_field(body, "nonce", str, where), "nonce", where, 32),
        expires_at=_field(body, "expires_at", str, where),
        pcr_selection=_selection(body.get("pcr_selection"), where),
        known_event_log_sha256=None if known is None else _unhex(known, "known", where, 32),
    )
