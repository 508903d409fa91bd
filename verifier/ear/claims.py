"""The EAR claim set (draft-ietf-rats-ear-04) for one node's standing, and its parser.

A relying party reads ``submods.boot.ear_status``: ``affirming`` only for a trusted node within
its freshness window; an untrusted or quarantined node is ``contraindicated``; a stale, unknown,
enrolled-but-never-attested node is ``none`` (no claim can be made). The trustworthiness vector
uses the AR4SI codes (0 no claim, 2–31 affirming, 32–95 warning, 96–127 contraindicated).

Reading accepts the older names (``ear.status``, ``ear.trustworthiness-vector``,
``ear.appraisal-policy-id``, ``ear.verifier-id`` and the ``veraison/ear`` profile) so tokens
from older issuers keep verifying; writing uses only the draft-04 names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from assay.errors import MalformedEvidence

EAR_PROFILE = "tag:ietf.org,2026:rats/ear#04"
OLD_PROFILES = frozenset({"tag:github.com,2023:veraison/ear", "tag:github.com,2022:veraison/ear"})
BOOT = "boot"
"""The boot submodule; ``runtime`` (``verifier.ear.runtime``) joins it for nodes a runtime policy
applies to."""

OLD_NAMES = {
    "ear.status": "ear_status",
    "ear.trustworthiness-vector": "ear_trustworthiness_vector",
    "ear.appraisal-policy-id": "ear_appraisal_policy_id",
    "ear.verifier-id": "ear_verifier_id",
}
TV_CLAIMS = (
    "instance-identity",
    "configuration",
    "executables",
    "file-system",
    "hardware",
    "runtime-opaque",
    "storage-opaque",
    "sourced-data",
)


class EarStatus(StrEnum):
    """The draft's four tiers, ordered from best to worst."""

    AFFIRMING = "affirming"
    WARNING = "warning"
    NONE = "none"
    CONTRAINDICATED = "contraindicated"

    @property
    def rank(self) -> int:
        return list(EarStatus).index(self)


@dataclass(frozen=True, slots=True)
class TrustVector:
    """AR4SI trustworthiness claims; 0 is "no claim"."""

    instance_identity: int = 0
    configuration: int = 0
    executables: int = 0
    hardware: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            k: v
            for k, v in (
                ("instance-identity", self.instance_identity),
                ("configuration", self.configuration),
                ("executables", self.executables),
                ("hardware", self.hardware),
            )
            if v != 0
        }


@dataclass(frozen=True, slots=True)
class Appraisal:
    """One submodule's result."""

    status: EarStatus
    vector: TrustVector
    policy_ids: tuple[str, ...]
    policy_kind: str = "golden"
    """What ``policy_ids`` name: golden sets, or runtime policies (``assay:runtime:…``)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ear_status": str(self.status),
            "ear_trustworthiness_vector": self.vector.to_json(),
        }
        if self.policy_ids:
            out["ear_appraisal_policy_id"] = f"assay:{self.policy_kind}:" + ",".join(
                self.policy_ids
            )
            out["ear_appraisal_policy_ids"] = list(self.policy_ids)
        return out


# Which trustworthiness claim a failing check speaks about, by its stable reason code.
_CONFIGURATION = ("cmdline", "secure_boot", "sb_", "sbat", "moklist", "db", "debug", "dma", "uefi")
_HARDWARE = ("firmware", "scrtm", "pcr_extended_outside_log")
_CRYPTO = ("pcr_", "bank_", "event_log", "separator", "stored_evidence", "sha1")


def _vector_for_failure(code: str) -> TrustVector:
    """AR4SI codes for an untrusted verdict: 96 contraindicated, 97 unrecognised, 99 evidence
    failed cryptographic validation (the log does not replay to the quote)."""
    identity = 2  # the quote verified with the enrolled AK, or there would be no verdict
    if code == "golden_revoked":
        return TrustVector(identity, executables=96)
    if code.startswith(_CRYPTO):
        return TrustVector(identity, executables=99, hardware=99)
    if code.startswith(_CONFIGURATION):
        return TrustVector(identity, configuration=96, executables=3)
    if code.startswith(_HARDWARE):
        return TrustVector(identity, hardware=97)
    return TrustVector(identity, executables=33)


def appraisal_for(state: str, reason_code: str, golden: tuple[str, ...]) -> Appraisal:
    """The boot submodule for a node's effective state (``stale`` already computed)."""
    if state == "trusted":
        # 3: only approved executables were loaded during the boot (runtime is not appraised).
        return Appraisal(EarStatus.AFFIRMING, TrustVector(2, 2, 3, 2), golden)
    if state == "untrusted":
        return Appraisal(EarStatus.CONTRAINDICATED, _vector_for_failure(reason_code), golden)
    if state == "quarantined":
        return Appraisal(EarStatus.CONTRAINDICATED, TrustVector(instance_identity=96), golden)
    return Appraisal(EarStatus.NONE, TrustVector(), golden)


@dataclass(frozen=True, slots=True)
class EarClaims:
    """The claim set of one token: whose standing, when, by whom, and each submodule."""

    node: str
    issuer: str
    iat: int
    exp: int
    verifier_build: str
    verifier_developer: str
    submods: Mapping[str, Appraisal]
    nonce: str | None = None
    state: str = ""
    reason: str = ""

    @property
    def status(self) -> EarStatus:
        """The worst submodule status (``none`` when there is no submodule at all)."""
        if not self.submods:
            return EarStatus.NONE
        return max((a.status for a in self.submods.values()), key=lambda s: s.rank)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "eat_profile": EAR_PROFILE,
            "iss": self.issuer,
            "sub": self.node,
            "iat": self.iat,
            "exp": self.exp,
            "ear_verifier_id": {
                "build": self.verifier_build,
                "developer": self.verifier_developer,
            },
            "submods": {name: a.to_json() for name, a in self.submods.items()},
            "assay_state": self.state,
            "assay_reason": self.reason,
        }
        if self.nonce is not None:
            out["eat_nonce"] = self.nonce
        return out


def _bad(message: str) -> MalformedEvidence:
    return MalformedEvidence(message, where="EAR claims")


def _renamed(data: Mapping[str, Any]) -> dict[str, Any]:
    return {OLD_NAMES.get(k, k): v for k, v in data.items()}


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**40:
        raise _bad(f"{key} must be a NumericDate (integer seconds)")
    return value


def _text(data: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = data.get(key, "" if not required else None)
    if not isinstance(value, str) or len(value) > 1024:
        raise _bad(f"{key} must be a string")
    return value


def _appraisal(name: str, raw: Any) -> Appraisal:
    if not isinstance(raw, dict):
        raise _bad(f"submods.{name} must be an object")
    data = _renamed(raw)
    try:
        status = EarStatus(str(data.get("ear_status")))
    except ValueError:
        raise _bad(f"submods.{name}.ear_status is not one of {', '.join(EarStatus)}") from None
    tv = data.get("ear_trustworthiness_vector", {})
    if not isinstance(tv, dict) or not all(
        k in TV_CLAIMS and isinstance(v, int) and not isinstance(v, bool) and -128 <= v <= 127
        for k, v in tv.items()
    ):
        raise _bad(f"submods.{name}.ear_trustworthiness_vector is not an AR4SI vector")
    ids = data.get("ear_appraisal_policy_ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise _bad(f"submods.{name}.ear_appraisal_policy_ids must be a list of strings")
    vector = TrustVector(
        tv.get("instance-identity", 0),
        tv.get("configuration", 0),
        tv.get("executables", 0),
        tv.get("hardware", 0),
    )
    return Appraisal(status, vector, tuple(ids))


def parse_claims(raw: Mapping[str, Any]) -> EarClaims:
    """Untrusted JSON (already signature-checked or not) → ``EarClaims``, or MalformedEvidence."""
    data = _renamed(raw)
    profile = data.get("eat_profile")
    if profile != EAR_PROFILE and profile not in OLD_PROFILES:
        raise _bad(f"eat_profile {profile!r} is not an EAR profile this verifier reads")
    submods = data.get("submods")
    if not isinstance(submods, dict) or not submods or len(submods) > 16:
        raise _bad("submods must be an object with 1..16 entries")
    vid = data.get("ear_verifier_id", {})
    if not isinstance(vid, dict):
        raise _bad("ear_verifier_id must be an object")
    nonce = data.get("eat_nonce")
    if nonce is not None and not isinstance(nonce, str):
        raise _bad("eat_nonce must be a string")
    return EarClaims(
        node=_text(data, "sub"),
        issuer=_text(data, "iss", required=False),
        iat=_int(data, "iat"),
        exp=_int(data, "exp"),
        verifier_build=str(vid.get("build", "")),
        verifier_developer=str(vid.get("developer", "")),
        submods={str(k): _appraisal(str(k), v) for k, v in submods.items()},
        nonce=nonce,
        state=_text(data, "assay_state", required=False),
        reason=_text(data, "assay_reason", required=False),
    )
