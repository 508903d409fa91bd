"""Enrollment and attestation against the service with real swtpm TPMs (never a mock).

Two swtpm nodes are manufactured with the project-local CA (testkit.swtpm) and booted from the real
Secure Boot log with the boot simulator. The service runs in-process (Flask test client, SQLite);
the TPM side uses the agent's TPM module directly, so each step can be driven and checked.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flask.testing import FlaskClient
from sqlalchemy import func, select

from agent.evidence import encode_bundle, evidence_from_quote
from agent.tpm import AkBlobs, Tpm
from assay.algorithms import HashAlg
from assay.tpm2 import ObjectAttributes, marshal_public, public_from_key
from golden.model import digests
from golden.yamlfmt import dump_yaml, load_yaml
from testkit import swtpm
from testkit.bootsim import simulate_boot
from tests.conftest import CORPUS
from tests.test_service_api import golden_yaml
from verifier.service import ServiceConfig, create_app
from verifier.service.context import Services
from verifier.store import Store, repo, upgrade
from verifier.store.models import Attestation, AuditEntry, EventLogBlob

pytestmark = pytest.mark.swtpm

SB_LOG = CORPUS / "qemu-ovmf-debian12" / "secureboot-shim-grub-kernel.bin"
PCRS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14)


@dataclass(frozen=True)
class Tpms:
    a: swtpm.SwtpmNode
    b: swtpm.SwtpmNode
    ca_dir: Path
    log: bytes


def _boot(node: swtpm.SwtpmNode, log: bytes) -> swtpm.SwtpmNode:
    node = swtpm.start(node, startup=False)
    simulate_boot(node.tcti, log, eventlog_out=node.eventlog)
    return node


@pytest.fixture(scope="module")
def tpms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tpms]:
    base = tmp_path_factory.mktemp("swtpm-service")
    ca = base / "ca"
    log = SB_LOG.read_bytes()
    nodes = [swtpm.provision(base / name, ca, banks="sha1,sha256") for name in ("a", "b")]
    started: list[swtpm.SwtpmNode] = []
    try:
        for n in nodes:
            started.append(_boot(n, log))
        vendor = base / "vendor-ca"
        swtpm.export_ca(ca, vendor)
        yield Tpms(started[0], started[1], vendor, log)
    finally:
        for n in started:
            swtpm.stop(n)
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class Svc:
    client: FlaskClient
    store: Store
    services: Services
    admin: dict[str, str]
    enroll_token: str

    def evidence_count(self) -> int:
        with self.store.read() as db:
            return int(db.scalar(select(func.count()).select_from(Attestation)) or 0)


@pytest.fixture
def svc(tpms: Tpms, tmp_path: Path) -> Iterator[Svc]:
    store = Store(str(tmp_path / "v.db"))
    upgrade(store)
    with store.write() as db:
        admin, _ = repo.create_token(db, "admin", expires_at=None)
        # The operator chooses the labels: they ride on the enrollment token, not the request.
        enroll, _ = repo.create_token(db, "enroll", expires_at=None, labels={"pool": "web"})
    app = create_app(
        ServiceConfig(database=str(tmp_path / "v.db"), ek_ca_dir=str(tpms.ca_dir)), store=store
    )
    s = Svc(
        app.test_client(),
        store,
        app.extensions["assay"],
        {"Authorization": f"Bearer {admin}"},
        enroll,
    )
    resp = s.client.post(
        "/v1/golden",
        data=golden_yaml("fleet", "1"),
        headers={**s.admin, "Content-Type": "application/yaml"},
    )
    assert resp.status_code == 201, resp.json
    resp = s.client.post(
        "/v1/golden/assignments",
        headers=s.admin,
        json={"golden": "fleet", "selector": {"pool": "web"}},
    )
    assert resp.status_code == 200
    try:
        yield s
    finally:
        store.close()


def next_kernel_yaml(name: str, version: str) -> str:
    """The captured set, with the kernel's digest replaced: what a rollout's next version holds."""
    gs = load_yaml(golden_yaml(name, version))
    last = gs.boot_apps[-1]  # the kernel: the last boot application in PCR4
    apps = (
        *gs.boot_apps[:-1],
        dataclasses.replace(last, digests=digests({HashAlg.SHA256: bytes(32)})),
    )
    assert apps != gs.boot_apps
    return dump_yaml(dataclasses.replace(gs, boot_apps=apps))


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def start_enrollment(
    s: Svc, tpm: Tpm, name: str, *, ak: AkBlobs | None = None, ek_kind: str = "rsa"
) -> tuple[Any, AkBlobs]:
    ek = tpm.endorsement_key(ek_kind)
    ak = ak or tpm.create_ak(ek.kind, "ecc")
    resp = s.client.post(
        "/v1/enrollments",
        headers={"Authorization": f"Bearer {s.enroll_token}"},
        json={
            "node": name,
            "ek_cert": _b64(ek.cert) if ek.cert else None,
            "ek_public": _b64(ek.public),
            "ak_public": _b64(ak.public),
        },
    )
    return resp, ak


def enroll(s: Svc, node: swtpm.SwtpmNode, name: str, *, state: str = "enrolled") -> AkBlobs:
    """Enroll with credential activation; ``state``: the node's state after (kept on re-enroll)."""
    with Tpm(node.tcti) as tpm:
        resp, ak = start_enrollment(s, tpm, name)
        assert resp.status_code == 201, resp.json
        secret = tpm.activate_credential(
            ak,
            base64.b64decode(resp.json["credential_blob"]),
            base64.b64decode(resp.json["encrypted_secret"]),
        )
    act = activate(s, resp, secret)
    assert act.status_code == 200, act.json
    assert act.json == {"node": name, "state": state}
    return ak


def activate(s: Svc, started: Any, secret: bytes, *, key: str | None = None) -> Any:
    """POST the activation as the client that started the enrollment (or with ``key``)."""
    return s.client.post(
        f"/v1/enrollments/{started.json['enrollment_id']}/activation",
        json={
            "secret": _b64(secret),
            "activation_key": started.json["activation_key"] if key is None else key,
        },
    )


def attest(
    s: Svc,
    node: swtpm.SwtpmNode,
    ak: AkBlobs,
    name: str,
    *,
    log: bytes,
    quote_node: swtpm.SwtpmNode | None = None,
) -> Any:
    ch = s.client.post(f"/v1/nodes/{name}/challenge")
    assert ch.status_code == 201, ch.json
    nonce = bytes.fromhex(ch.json["nonce"])
    known = ch.json["known_event_log_sha256"]
    with Tpm((quote_node or node).tcti) as tpm:
        q = tpm.quote(ak, nonce, {HashAlg.SHA256: PCRS})
    body = encode_bundle(
        evidence_from_quote(name, q, log),
        known_event_log_sha256=bytes.fromhex(known) if known else None,
    )
    return s.client.post(
        f"/v1/nodes/{name}/evidence", data=body, headers={"Content-Type": "application/cbor"}
    )


def test_enroll_attest_trusted_then_reattest_reuses_the_verified_log(tpms: Tpms, svc: Svc) -> None:
    ak = enroll(svc, tpms.a, "web-1")
    first = attest(svc, tpms.a, ak, "web-1", log=tpms.log)
    assert first.status_code == 200, first.json
    assert (first.json["status"], first.json["node_state"]) == ("trusted", "trusted"), first.json
    assert first.json["reboot"] is False
    hits_before = svc.services.logs.hits
    second = attest(svc, tpms.a, ak, "web-1", log=tpms.log)  # log omitted: the verifier holds it
    assert second.json["status"] == "trusted"
    # Issue 14: the stored verdict is reused (no re-appraisal: not even the verified log is
    # looked up) and the re-attestation is counted on the boot's full record.
    assert svc.services.logs.hits == hits_before
    assert second.json["attestation_id"] == first.json["attestation_id"]
    node = svc.client.get("/v1/nodes/web-1", headers=svc.admin).json
    assert node["state"] == "trusted" and node["golden"] == ["fleet@1"]
    assert node["last_attestation_id"] == second.json["attestation_id"]
    with svc.store.read() as db:
        assert db.scalar(select(func.count()).select_from(EventLogBlob)) == 1  # once per boot
    assert svc.evidence_count() == 1  # one full record, its repeat counted
    [entry] = svc.client.get("/v1/nodes/web-1/attestations", headers=svc.admin).json["attestations"]
    assert entry["repeats"]["count"] == 1
    full = svc.client.get(
        f"/v1/attestations/{second.json['attestation_id']}", headers=svc.admin
    ).json
    assert full["verdict"]["status"] == "trusted" and full["golden"] == ["fleet@1"]
    raw = svc.client.get(
        f"/v1/attestations/{second.json['attestation_id']}/evidence", headers=svc.admin
    )
    assert raw.mimetype == "application/cbor" and tpms.log in raw.data


def test_revoking_the_golden_set_flags_the_node_without_new_evidence(tpms: Tpms, svc: Svc) -> None:
    # A second, still active version approves another machine's boot (a rollout in progress).
    other = next_kernel_yaml("fleet", "2")
    assert (
        svc.client.post(
            "/v1/golden", data=other, headers={**svc.admin, "Content-Type": "application/yaml"}
        ).status_code
        == 201
    )
    ak = enroll(svc, tpms.a, "web-1")
    assert attest(svc, tpms.a, ak, "web-1", log=tpms.log).json["status"] == "trusted"
    before = svc.evidence_count()
    resp = svc.client.post(
        "/v1/golden/fleet/1/revoke",
        headers=svc.admin,
        json={"reason": "CVE-2026-0001 in the kernel"},
    )
    assert resp.status_code == 200, resp.json
    [re] = resp.json["reappraised"]
    assert (re["node"], re["status"], re["state"]) == ("web-1", "untrusted", "untrusted"), re
    full = svc.client.get(f"/v1/attestations/{re['attestation_id']}", headers=svc.admin).json
    assert any(
        "CVE-2026-0001" in (c["message"] or "")
        for c in full["verdict"]["checks"]
        if c["status"] == "fail"
    ), full["verdict"]
    node = svc.client.get("/v1/nodes/web-1", headers=svc.admin).json
    assert node["state"] == "untrusted" and node["reason"] == re["reason"]
    atts = svc.client.get("/v1/nodes/web-1/attestations", headers=svc.admin).json["attestations"]
    assert [a["source"] for a in atts] == ["reappraisal", "evidence"]
    assert svc.evidence_count() == before + 1  # the re-appraisal, no new evidence


def test_quote_from_another_tpm_is_refused(tpms: Tpms, svc: Svc) -> None:
    ak_a = enroll(svc, tpms.a, "web-1")
    with Tpm(tpms.b.tcti) as tpm_b:
        ak_b = tpm_b.create_ak(tpm_b.endorsement_key("rsa").kind, "ecc")
    resp = attest(svc, tpms.a, ak_b, "web-1", log=tpms.log, quote_node=tpms.b)
    assert resp.status_code == 422 and resp.json["error"]["code"] == "bad_signature", resp.json
    assert svc.evidence_count() == 0
    assert attest(svc, tpms.a, ak_a, "web-1", log=tpms.log).json["status"] == "trusted"


def test_reenrolling_a_name_with_another_ek_is_refused_until_an_admin_replaces(
    tpms: Tpms, svc: Svc
) -> None:
    enroll(svc, tpms.a, "web-1")
    with Tpm(tpms.b.tcti) as tpm_b:
        resp, _ = start_enrollment(svc, tpm_b, "web-1")
    assert resp.status_code == 409 and resp.json["error"]["code"] == "ek_mismatch"
    with svc.store.read() as db:
        assert next(e.action for e in repo.list_audit(db, target="web-1")) == "enroll_refused"
    ok = svc.client.post("/v1/nodes/web-1/replace", headers=svc.admin, json={"reason": "new board"})
    assert ok.status_code == 200
    enroll(svc, tpms.b, "web-1")
    node = svc.client.get("/v1/nodes/web-1", headers=svc.admin).json
    with Tpm(tpms.b.tcti) as tpm_b:
        from assay.tpm2 import parse_public
        from verifier.service.enrollment import key_fingerprint

        assert node["ek_fingerprint"] == key_fingerprint(
            parse_public(tpm_b.endorsement_key("rsa").public)
        )


def test_activation_is_a_state_machine_with_a_constant_time_secret(tpms: Tpms, svc: Svc) -> None:
    with Tpm(tpms.a.tcti) as tpm:
        resp, ak = start_enrollment(svc, tpm, "web-2")
        secret = tpm.activate_credential(
            ak,
            base64.b64decode(resp.json["credential_blob"]),
            base64.b64decode(resp.json["encrypted_secret"]),
        )
    wrong = activate(svc, resp, bytes(len(secret)))
    assert (wrong.status_code, wrong.json["error"]["code"]) == (422, "activation_failed")
    # Not enrolled yet; the unauthenticated challenge does not say so (issue 10 §5).
    assert svc.client.post("/v1/nodes/web-2/challenge").status_code == 201
    assert svc.client.get("/v1/nodes/web-2", headers=svc.admin).status_code == 404
    assert activate(svc, resp, secret).status_code == 200
    again = activate(svc, resp, secret)
    assert (again.status_code, again.json["error"]["code"]) == (409, "enrollment_step")


def test_three_wrong_secrets_fail_the_enrollment(tpms: Tpms, svc: Svc) -> None:
    with Tpm(tpms.a.tcti) as tpm:
        resp, ak = start_enrollment(svc, tpm, "web-3")
        secret = tpm.activate_credential(
            ak,
            base64.b64decode(resp.json["credential_blob"]),
            base64.b64decode(resp.json["encrypted_secret"]),
        )
    for _ in range(3):
        assert activate(svc, resp, b"x" * 32).status_code == 422
    late = activate(svc, resp, secret)
    assert (late.status_code, late.json["error"]["code"]) == (409, "enrollment_step")


def test_expired_enrollment_cannot_be_activated(tpms: Tpms, svc: Svc) -> None:
    with Tpm(tpms.a.tcti) as tpm:
        resp, _ = start_enrollment(svc, tpm, "web-4")
    svc.services.clock = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    late = activate(svc, resp, b"y" * 32)
    assert (late.status_code, late.json["error"]["code"]) == (410, "enrollment_expired")


def test_ek_certificate_from_an_unknown_ca_is_refused(tpms: Tpms, svc: Svc, tmp_path: Path) -> None:
    other = tmp_path / "other-ca"
    other.mkdir()
    # A CA directory holding only the issuing CA, without its root: the chain cannot end.
    shutil.copy(next(tpms.ca_dir.glob("*issuer*")), other)
    svc.services.config = svc.services.config.__class__(
        database=svc.services.config.database, ek_ca_dir=str(other)
    )
    with Tpm(tpms.a.tcti) as tpm:
        resp, _ = start_enrollment(svc, tpm, "web-5")
    assert (resp.status_code, resp.json["error"]["code"]) == (422, "ek_cert_untrusted"), resp.json


def test_missing_ek_certificate_needs_operator_consent(tpms: Tpms, svc: Svc) -> None:
    with Tpm(tpms.a.tcti) as tpm:
        ek = tpm.endorsement_key("rsa")
        ak = tpm.create_ak(ek.kind, "ecc")
    resp = svc.client.post(
        "/v1/enrollments",
        headers={"Authorization": f"Bearer {svc.enroll_token}"},
        json={
            "node": "web-6",
            "ek_cert": None,
            "ek_public": _b64(ek.public),
            "ak_public": _b64(ak.public),
        },
    )
    assert (resp.status_code, resp.json["error"]["code"]) == (422, "ek_cert_required")


def test_ek_certificate_of_another_tpm_is_refused(tpms: Tpms, svc: Svc) -> None:
    with Tpm(tpms.a.tcti) as tpm_a, Tpm(tpms.b.tcti) as tpm_b:
        ek_a, ek_b = tpm_a.endorsement_key("rsa"), tpm_b.endorsement_key("rsa")
        ak = tpm_a.create_ak(ek_a.kind, "ecc")
    assert ek_b.cert is not None
    resp = svc.client.post(
        "/v1/enrollments",
        headers={"Authorization": f"Bearer {svc.enroll_token}"},
        json={
            "node": "web-7",
            "ek_cert": _b64(ek_b.cert),
            "ek_public": _b64(ek_a.public),
            "ak_public": _b64(ak.public),
        },
    )
    assert (resp.status_code, resp.json["error"]["code"]) == (422, "ek_cert_mismatch")


def test_ak_that_is_not_a_restricted_signing_key_is_refused(tpms: Tpms, svc: Svc) -> None:
    loose = public_from_key(
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        attributes=ObjectAttributes.SIGN_ENCRYPT | ObjectAttributes.FIXED_TPM,
    )
    with Tpm(tpms.a.tcti) as tpm:
        ek = tpm.endorsement_key("rsa")
    assert ek.cert is not None
    resp = svc.client.post(
        "/v1/enrollments",
        headers={"Authorization": f"Bearer {svc.enroll_token}"},
        json={
            "node": "web-8",
            "ek_cert": _b64(ek.cert),
            "ek_public": _b64(ek.public),
            "ak_public": _b64(marshal_public(loose)),
        },
    )
    assert (resp.status_code, resp.json["error"]["code"]) == (422, "ak_attributes")


def test_single_use_enroll_token_works_once(tpms: Tpms, svc: Svc) -> None:
    resp = svc.client.post(
        "/v1/tokens", headers=svc.admin, json={"role": "enroll", "single_use": True}
    )
    svc.enroll_token = resp.json["token"]
    enroll(svc, tpms.a, "web-9")
    with Tpm(tpms.a.tcti) as tpm:
        again, _ = start_enrollment(svc, tpm, "web-10")
    assert (again.status_code, again.json["error"]["code"]) == (401, "token_used")


def test_reboot_is_detected_from_the_reset_counter(tpms: Tpms, svc: Svc) -> None:
    ak = enroll(svc, tpms.a, "web-1")
    assert attest(svc, tpms.a, ak, "web-1", log=tpms.log).json["reboot"] is False
    swtpm.stop(tpms.a)
    node = _boot(swtpm.SwtpmNode(tpms.a.directory, tpms.a.port), tpms.log)
    assert node.port == tpms.a.port or node.tcti
    object.__setattr__(tpms, "a", node)
    after = attest(svc, tpms.a, ak, "web-1", log=tpms.log)
    assert after.status_code == 200, after.json
    assert after.json["reboot"] is True and after.json["status"] == "trusted"
    shown = svc.client.get("/v1/nodes/web-1", headers=svc.admin).json
    assert shown["last_reboot_at"] is not None


def test_extra_extend_makes_the_node_untrusted_with_the_replay_reason(tpms: Tpms, svc: Svc) -> None:
    ak = enroll(svc, tpms.b, "web-1")
    assert attest(svc, tpms.b, ak, "web-1", log=tpms.log).json["status"] == "trusted"
    with Tpm(tpms.b.tcti) as tpm:
        tpm.pcr_extend(4, {HashAlg.SHA256: HashAlg.SHA256.hash(b"unknown boot app")})
    resp = attest(svc, tpms.b, ak, "web-1", log=tpms.log)
    assert resp.status_code == 200, resp.json
    assert resp.json["status"] == "untrusted" and resp.json["node_state"] == "untrusted"
    assert resp.json["reason"].startswith("pcr_replay_mismatch: PCR4")
    with svc.store.read() as db:
        assert db.scalar(select(func.count()).select_from(AuditEntry)) >= 1
