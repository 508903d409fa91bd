"""The node never chooses its policy, identity or freshness (MISSION attacks 11, 16, 18).

Real swtpm TPMs and the real service (Flask test client, SQLite), as in test_service_swtpm.py:
labels come from the enrollment token or an admin; one TPM is one node until an admin moves it;
re-appraisal never makes a node fresh; a golden version stops approving at its ``valid_until``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.tpm import Tpm
from golden.yamlfmt import dump_yaml, load_yaml
from tests import test_service_swtpm as base
from tests.test_service_api import golden_yaml
from tests.test_service_swtpm import (
    Svc,
    Tpms,
    _b64,
    activate,
    attest,
    enroll,
    next_kernel_yaml,
    start_enrollment,
)
from verifier.service import ServiceConfig, create_app
from verifier.store import Store, repo

pytestmark = pytest.mark.swtpm
tpms = base.tpms  # the fixtures: two swtpm nodes (this module's own), a service with golden "fleet"
svc = base.svc


def _token(s: Svc, labels: dict[str, str] | None = None, **extra: Any) -> str:
    resp = s.client.post(
        "/v1/tokens", headers=s.admin, json={"role": "enroll", "labels": labels or {}, **extra}
    )
    assert resp.status_code == 201, resp.json
    return str(resp.json["token"])


def _node(s: Svc, name: str) -> Any:
    resp = s.client.get(f"/v1/nodes/{name}", headers=s.admin)
    assert resp.status_code == 200, resp.json
    return resp.json


def _clock(s: Svc, at: dt.datetime) -> None:
    s.services.clock = lambda: at


# --- labels come from the operator ----------------------------------------------------------


def test_labels_sent_by_the_node_are_refused_and_nothing_is_stored(tpms: Tpms, svc: Svc) -> None:
    with Tpm(tpms.a.tcti) as tpm:
        ek = tpm.endorsement_key("rsa")
        ak = tpm.create_ak(ek.kind, "ecc")
    assert ek.cert is not None
    resp = svc.client.post(
        "/v1/enrollments",
        headers={"Authorization": f"Bearer {svc.enroll_token}"},
        json={
            "node": "web-1",
            "labels": {"pool": "gpu"},
            "ek_cert": _b64(ek.cert),
            "ek_public": _b64(ek.public),
            "ak_public": _b64(ak.public),
        },
    )
    assert (resp.status_code, resp.json["error"]["code"]) == (400, "labels_not_accepted")
    with svc.store.read() as db:
        assert repo.get_node(db, "web-1") is None
        assert repo.list_audit(db, target="web-1") == []


def test_a_node_gets_the_labels_of_its_enrollment_token(tpms: Tpms, svc: Svc) -> None:
    svc.enroll_token = _token(svc, {"pool": "web", "rack": "r7"})
    ak = enroll(svc, tpms.a, "web-1")
    assert _node(svc, "web-1")["labels"] == {"pool": "web", "rack": "r7"}
    assert attest(svc, tpms.a, ak, "web-1", log=tpms.log).json["status"] == "trusted"


def test_reenrollment_keeps_labels_and_cannot_lift_a_quarantine(tpms: Tpms, svc: Svc) -> None:
    enroll(svc, tpms.a, "web-1")
    q = svc.client.post("/v1/nodes/web-1/quarantine", headers=svc.admin, json={"reason": "ir-4"})
    assert q.status_code == 200
    svc.enroll_token = _token(svc, {"pool": "lab"})  # another token, other labels
    ak = enroll(svc, tpms.a, "web-1", state="quarantined")
    node = _node(svc, "web-1")
    assert (node["state"], node["labels"]) == ("quarantined", {"pool": "web"})
    assert node["reason"] == "quarantined: ir-4"
    assert node["ak_name"] == ak.name.hex()  # the new AK is bound, nothing else changed
    assert attest(svc, tpms.a, ak, "web-1", log=tpms.log).json["node_state"] == "quarantined"


def test_reenrollment_does_not_turn_untrusted_into_a_fresh_start(tpms: Tpms, svc: Svc) -> None:
    ak = enroll(svc, tpms.a, "web-1")
    assert attest(svc, tpms.a, ak, "web-1", log=tpms.log).json["status"] == "trusted"
    revoked = svc.client.post(
        "/v1/golden/fleet/1/revoke", headers=svc.admin, json={"reason": "CVE"}
    )
    assert revoked.json["reappraised"][0]["state"] == "untrusted"
    before = _node(svc, "web-1")
    enroll(svc, tpms.a, "web-1", state="untrusted")
    after = _node(svc, "web-1")
    assert (after["state"], after["reason"]) == ("untrusted", before["reason"])
    assert after["last_success_at"] == before["last_success_at"]
    assert after["enrolled_at"] == before["enrolled_at"]


def test_an_admin_sets_labels_audited_and_the_node_is_reappraised(tpms: Tpms, svc: Svc) -> None:
    svc.enroll_token = _token(svc, {"pool": "lab"})  # no golden set is assigned to pool=lab
    ak = enroll(svc, tpms.a, "web-1")
    lab = attest(svc, tpms.a, ak, "web-1", log=tpms.log).json
    # The poster sees only codes (issue 10 §5); the reviewer's view of the node has the message.
    assert (lab["status"], lab["reason"]) == ("untrusted", "boot_app_not_approved")
    assert _node(svc, "web-1")["reason"].endswith("in no golden set in force")
    resp = svc.client.post(
        "/v1/nodes/web-1/labels",
        headers=svc.admin,
        json={"labels": {"pool": "web"}, "reason": "moved to production"},
    )
    assert resp.status_code == 200, resp.json
    assert (resp.json["labels"], resp.json["state"]) == ({"pool": "web"}, "trusted")
    with svc.store.read() as db:
        entry = next(e for e in repo.list_audit(db, target="web-1") if e.action == "labels")
    assert entry.reason == "moved to production" and entry.actor.endswith("(admin)")
    assert entry.details == {"from": {"pool": "lab"}, "to": {"pool": "web"}}


# --- one TPM is one node --------------------------------------------------------------------


def test_an_ek_bound_to_one_name_is_refused_for_another(tpms: Tpms, svc: Svc) -> None:
    enroll(svc, tpms.a, "web-1")
    with Tpm(tpms.a.tcti) as tpm:
        resp, _ = start_enrollment(svc, tpm, "web-2")
    assert (resp.status_code, resp.json["error"]["code"]) == (409, "ek_in_use"), resp.json
    assert "'web-1'" in resp.json["error"]["message"]
    with svc.store.read() as db:
        assert repo.get_node(db, "web-2") is None
        refused = next(e for e in repo.list_audit(db, target="web-2"))
    assert (refused.action, refused.reason) == ("enroll_refused", "ek_in_use")


def test_an_ak_bound_to_one_node_is_refused_with_another_tpms_ek(tpms: Tpms, svc: Svc) -> None:
    ak_a = enroll(svc, tpms.a, "web-1")
    with Tpm(tpms.b.tcti) as tpm_b:
        resp, _ = start_enrollment(svc, tpm_b, "web-2", ak=ak_a)
    assert (resp.status_code, resp.json["error"]["code"]) == (409, "ak_in_use"), resp.json


def test_an_admin_moves_a_tpm_to_a_new_name_audited(tpms: Tpms, svc: Svc) -> None:
    ak = enroll(svc, tpms.a, "web-1")
    assert attest(svc, tpms.a, ak, "web-1", log=tpms.log).json["status"] == "trusted"
    add = svc.client.post("/v1/nodes/web-1/move", headers=svc.admin, json={"to": "web-2"})
    assert (add.status_code, add.json["error"]["code"]) == (400, "reason_required")
    resp = svc.client.post(
        "/v1/nodes/web-1/move", headers=svc.admin, json={"to": "web-2", "reason": "renamed rack"}
    )
    assert resp.status_code == 200, resp.json
    assert (resp.json["name"], resp.json["state"], resp.json["labels"]) == (
        "web-2",
        "trusted",
        {"pool": "web"},
    )
    assert svc.client.get("/v1/nodes/web-1", headers=svc.admin).status_code == 404
    ak2 = enroll(svc, tpms.a, "web-2", state="trusted")  # the TPM's name is now web-2
    assert attest(svc, tpms.a, ak2, "web-2", log=tpms.log).json["status"] == "trusted"
    with Tpm(tpms.a.tcti) as tpm:
        back, _ = start_enrollment(svc, tpm, "web-1")
    assert (back.status_code, back.json["error"]["code"]) == (409, "ek_in_use")
    with svc.store.read() as db:
        moves = [e for e in repo.list_audit(db) if e.action == "move"]
    assert {e.target for e in moves} == {"web-1", "web-2"}
    assert all(e.reason == "renamed rack" for e in moves)


def test_moving_onto_an_existing_node_is_refused(tpms: Tpms, svc: Svc) -> None:
    enroll(svc, tpms.a, "web-1")
    enroll(svc, tpms.b, "web-2")
    resp = svc.client.post(
        "/v1/nodes/web-1/move", headers=svc.admin, json={"to": "web-2", "reason": "x"}
    )
    assert (resp.status_code, resp.json["error"]["code"]) == (409, "node_exists")


# --- freshness comes only from a newly verified quote ---------------------------------------


@pytest.mark.parametrize("how", ["node", "all", "revoke-other-version"])
def test_reappraisal_never_makes_a_node_fresher_than_its_last_quote(
    tpms: Tpms, svc: Svc, how: str
) -> None:
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
    _clock(svc, t0)
    ak = enroll(svc, tpms.a, "web-1")
    assert attest(svc, tpms.a, ak, "web-1", log=tpms.log).json["status"] == "trusted"
    if how == "revoke-other-version":
        other = next_kernel_yaml("fleet", "2")
        up = svc.client.post(
            "/v1/golden", data=other, headers={**svc.admin, "Content-Type": "application/yaml"}
        )
        assert up.status_code == 201
    later = t0 + dt.timedelta(seconds=svc.services.config.freshness_window + 1)
    _clock(svc, later)
    assert _node(svc, "web-1")["state"] == "stale"
    path, body = {
        "node": ("/v1/nodes/web-1/reappraise", {"reason": "check"}),
        "all": ("/v1/admin/reappraise", {"reason": "check"}),
        "revoke-other-version": ("/v1/golden/fleet/2/revoke", {"reason": "CVE in 2"}),
    }[how]
    resp = svc.client.post(path, headers=svc.admin, json=body)
    assert resp.status_code == 200, resp.json
    [re] = resp.json["reappraised"]
    assert (re["node"], re["status"]) == ("web-1", "trusted")
    node = _node(svc, "web-1")
    assert node["state"] == "stale", node
    assert node["last_success_at"] == t0.isoformat().replace("+00:00", "Z")
    assert node["last_attested_at"] == t0.isoformat().replace("+00:00", "Z")
    # Only a new quote makes it fresh again.
    assert attest(svc, tpms.a, ak, "web-1", log=tpms.log).json["node_state"] == "trusted"
    assert _node(svc, "web-1")["state"] == "trusted"


# --- a golden version's validity window is applied at appraisal time ------------------------


def _upload_valid_until(s: Svc, until: dt.datetime) -> None:
    gs = dataclasses.replace(load_yaml(golden_yaml("short", "1")), valid_until=until)
    resp = s.client.post(
        "/v1/golden", data=dump_yaml(gs), headers={**s.admin, "Content-Type": "application/yaml"}
    )
    assert resp.status_code == 201, resp.json
    resp = s.client.post(
        "/v1/golden/assignments", headers=s.admin, json={"golden": "short", "selector": {}}
    )
    assert resp.status_code == 200


def test_a_golden_version_stops_approving_at_valid_until_despite_the_cache(
    tpms: Tpms, svc: Svc
) -> None:
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
    _clock(svc, t0)
    retire = svc.client.post("/v1/golden/fleet/1/retire", headers=svc.admin, json={"reason": "x"})
    assert retire.status_code == 200
    _upload_valid_until(svc, t0 + dt.timedelta(seconds=30))
    ak = enroll(svc, tpms.a, "web-1")
    first = attest(svc, tpms.a, ak, "web-1", log=tpms.log)
    assert (first.json["status"], _node(svc, "web-1")["golden"]) == ("trusted", ["short@1"])
    assert svc.services.config.policy_cache_ttl > 31  # the compiled policy is still cached
    _clock(svc, t0 + dt.timedelta(seconds=31))
    late = attest(svc, tpms.a, ak, "web-1", log=tpms.log)
    assert late.status_code == 200, late.json
    assert (late.json["status"], late.json["node_state"]) == ("untrusted", "untrusted")
    reviewed = _node(svc, "web-1")["reason"]  # the poster sees only the code
    assert late.json["reason"] == "boot_app_retired"
    assert reviewed.startswith("boot_app_retired: PCR4 event 23"), reviewed
    assert "fleet@1 (retired: x); short@1 (expired)" in reviewed


@pytest.fixture
def second_instance(svc: Svc, tmp_path: Path) -> Iterator[Svc]:
    """Another verifier instance on the same database (its own caches)."""
    cfg = svc.services.config
    store = Store(cfg.database)
    app = create_app(ServiceConfig(database=cfg.database, ek_ca_dir=cfg.ek_ca_dir), store=store)
    try:
        yield Svc(app.test_client(), store, app.extensions["assay"], svc.admin, svc.enroll_token)
    finally:
        store.close()


def test_a_revocation_by_another_instance_applies_to_the_next_quote_here(
    tpms: Tpms, svc: Svc, second_instance: Svc
) -> None:
    other = next_kernel_yaml("fleet", "2")  # keeps "fleet" assigned after 1 is revoked
    up = svc.client.post(
        "/v1/golden", data=other, headers={**svc.admin, "Content-Type": "application/yaml"}
    )
    assert up.status_code == 201
    ak = enroll(svc, tpms.a, "web-1")
    assert attest(svc, tpms.a, ak, "web-1", log=tpms.log).json["status"] == "trusted"
    assert len(svc.services.policies) == 1
    resp = second_instance.client.post(
        "/v1/golden/fleet/1/revoke", headers=svc.admin, json={"reason": "CVE-2026-0002"}
    )
    assert resp.status_code == 200, resp.json
    again = attest(svc, tpms.a, ak, "web-1", log=tpms.log)  # on the first instance
    assert (again.json["status"], again.json["node_state"]) == ("untrusted", "untrusted")
    assert "CVE-2026-0002" in _node(svc, "web-1")["reason"]  # the reviewer's view


# --- enrollment ids and activation belong to the enrolling client ---------------------------


def test_the_enrollment_id_is_not_readable_from_the_audit_log(tpms: Tpms, svc: Svc) -> None:
    with Tpm(tpms.a.tcti) as tpm:
        resp, _ = start_enrollment(svc, tpm, "web-1")
    assert resp.status_code == 201
    audit = svc.client.get("/v1/audit", headers=svc.admin)
    assert next(a["action"] for a in audit.json["audit"]) == "enroll_start"
    assert resp.json["enrollment_id"] not in audit.get_data(as_text=True)
    assert resp.json["activation_key"] not in audit.get_data(as_text=True)


def test_a_third_party_cannot_fail_someone_elses_enrollment(tpms: Tpms, svc: Svc) -> None:
    with Tpm(tpms.a.tcti) as tpm:
        resp, ak = start_enrollment(svc, tpm, "web-1")
        secret = tpm.activate_credential(
            ak,
            base64.b64decode(resp.json["credential_blob"]),
            base64.b64decode(resp.json["encrypted_secret"]),
        )
    url = f"/v1/enrollments/{resp.json['enrollment_id']}/activation"
    for _ in range(3):  # knows the id, not the key the client received
        wrong = svc.client.post(url, json={"secret": _b64(b"z" * 32)})
        assert (wrong.status_code, wrong.json["error"]["code"]) == (403, "activation_key_invalid")
        wrong = activate(svc, resp, b"z" * 32, key="x" * 43)
        assert (wrong.status_code, wrong.json["error"]["code"]) == (403, "activation_key_invalid")
    right_secret_wrong_key = activate(svc, resp, secret, key="guess")
    assert right_secret_wrong_key.status_code == 403
    ok = activate(svc, resp, secret)
    assert (ok.status_code, ok.json) == (200, {"node": "web-1", "state": "enrolled"})
