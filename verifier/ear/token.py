"""EAR tokens: ES256 JWS compact serialisation, signed and verified with joserfc.

``verify_ear`` steps (the code is labelled with the same numbers; the failure code in brackets):
 1. Shape: at most 16 KiB, three base64url parts, a JSON header (MalformedEvidence).
 2. The header's ``alg`` is exactly ES256 — never ``none``, never an HMAC or RSA algorithm that
    would let a public key be misused [``ear_bad_alg``]; a ``kid`` is present.
 3. The key is the JWKS entry with that ``kid`` (EC P-256 only) [``ear_unknown_key``].
 4. The signature verifies with it [``ear_bad_signature``].
 5. The claim set parses (profile, submods, times) (MalformedEvidence).
 6. Not expired, not issued in the future beyond the skew [``ear_expired``, ``ear_not_yet_valid``].
 7. The relying party's nonce, when it supplied one, is the token's ``eat_nonce``
    [``ear_nonce_mismatch``]; the node it asked about is the token's ``sub`` [``ear_wrong_node``].
Only then is the result a ``VerifiedEar``; whether it is affirming is the caller's question.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

from assay.errors import MalformedEvidence, VerificationFailed

from .claims import EarClaims, EarStatus, parse_claims

ALG = "ES256"
TYP = "eat+jwt"
MAX_TOKEN = 16 * 1024
CLOCK_SKEW = 60


@dataclass(frozen=True, slots=True)
class VerifiedEar:
    """An EAR whose signature, times, nonce and node all checked out."""

    claims: EarClaims
    kid: str

    @property
    def affirming(self) -> bool:
        return self.claims.status == EarStatus.AFFIRMING

    def to_json(self) -> dict[str, Any]:
        c = self.claims
        return {
            "valid": True,
            "affirming": self.affirming,
            "status": str(c.status),
            "node": c.node,
            "kid": self.kid,
            "iat": c.iat,
            "exp": c.exp,
            "nonce": c.nonce,
            "state": c.state,
            "reason": c.reason,
            "submods": {k: a.to_json() for k, a in c.submods.items()},
        }


def sign_ear(claims: EarClaims, key: ECKey, kid: str) -> str:
    header = {"alg": ALG, "typ": TYP, "kid": kid}
    return jwt.encode(header, claims.to_json(), key, algorithms=[ALG])


def _b64json(part: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise MalformedEvidence(f"the {what} is not base64url JSON: {exc}", where="EAR") from None
    if not isinstance(value, dict):
        raise MalformedEvidence(f"the {what} is not a JSON object", where="EAR")
    return value


def load_jwks(data: Mapping[str, Any]) -> KeySet:
    """A JWKS document → joserfc KeySet of EC P-256 public keys (MalformedEvidence otherwise)."""
    keys = data.get("keys")
    if not isinstance(keys, list) or not keys or len(keys) > 64:
        raise MalformedEvidence("a JWKS needs 'keys': a list of 1..64 keys", where="JWKS")
    if not all(isinstance(k, dict) and k.get("kty") == "EC" and "kid" in k for k in keys):
        raise MalformedEvidence("every JWKS key must be an EC key with a kid", where="JWKS")
    public = [{k: v for k, v in key.items() if k != "d"} for key in keys]
    try:
        return KeySet.import_key_set({"keys": public})
    except (JoseError, ValueError, TypeError) as exc:
        raise MalformedEvidence(f"a JWKS key does not import: {exc}", where="JWKS") from None


def _refuse(code: str, message: str) -> VerificationFailed:
    return VerificationFailed(message, code=code)


def _header(token: str) -> dict[str, Any]:
    # 1. Shape.
    if len(token) > MAX_TOKEN:
        raise MalformedEvidence(f"the token is longer than {MAX_TOKEN} bytes", where="EAR")
    parts = token.strip().split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise MalformedEvidence("an EAR is three base64url parts joined by '.'", where="EAR")
    header = _b64json(parts[0], "header")
    _b64json(parts[1], "claim set")
    # 2. Algorithm and key id.
    if header.get("alg") != ALG:
        raise _refuse("ear_bad_alg", f"alg {header.get('alg')!r} refused: only {ALG} is accepted")
    if not isinstance(header.get("kid"), str) or not header["kid"]:
        raise _refuse("ear_unknown_key", "the token names no kid")
    return header


def verify_ear(
    token: str,
    jwks: KeySet,
    *,
    now: int,
    nonce: str | None = None,
    node: str | None = None,
) -> VerifiedEar:
    """Steps 1–7 above; ``now`` in seconds since the epoch."""
    header = _header(token.strip())
    kid = str(header["kid"])
    # 3. The key.
    key = next((k for k in jwks.keys if k.kid == kid), None)
    if not isinstance(key, ECKey) or key.curve_name != "P-256":
        raise _refuse("ear_unknown_key", f"no P-256 key with kid {kid!r} in the JWKS")
    # 4. Signature.
    try:
        decoded = jwt.decode(token.strip(), key, algorithms=[ALG])
    except JoseError as exc:
        raise _refuse("ear_bad_signature", f"the signature does not verify: {exc}") from None
    # 5. Claims.
    claims = parse_claims(decoded.claims)
    # 6. Times.
    if claims.exp <= now:
        raise _refuse("ear_expired", f"the token expired {now - claims.exp} s ago")
    if claims.iat > now + CLOCK_SKEW:
        raise _refuse("ear_not_yet_valid", "the token was issued in the future")
    # 7. Nonce and node.
    if nonce is not None and not hmac.compare_digest(
        (claims.nonce or "").encode(), nonce.lower().encode()
    ):
        raise _refuse("ear_nonce_mismatch", "the token is not bound to the nonce supplied")
    if node is not None and claims.node != node:
        raise _refuse("ear_wrong_node", f"the token is about {claims.node!r}, not {node!r}")
    return VerifiedEar(claims, kid)
