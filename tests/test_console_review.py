"""Incidents and four-eyes promotion through the API, with real swtpm nodes (in-process service):
what the browser tests do not walk through — refusals, rejection, reopening, would-accept."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testkit import swtpm
from testkit.bootsim import simulate_boot
from verifier.store import repo

from .console_fleet import SB_LOG_PATH as SB_LOG
from .console_fleet import kernel_index, tampered_log
from .test_service_swtpm import Svc, Tpms, attest, enroll
from .test_service_swtpm import svc as svc_fixture

svc = svc_fixture  # the in-process service of test_service_swtpm, on this module's TPMs

pytestmark = pytest.mark.swtpm


def _reviewer(s: Svc) -> dict[str, str]:
    with s.store.write() as db:
        secret, _ = repo.create_token(db, "reviewer", expires_at=None)
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture(scope="module")
def tpms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tpms]:
    """TPM ``a`` booted from the corpus log, ``b`` from it with the tampered kernel (once: a
    swtpm restarted without an orderly shutdown counts towards its dictionary-attack lockout)."""
    base = tmp_path_factory.mktemp("swtpm-console")
    log = SB_LOG.read_bytes()
    nodes = [swtpm.provision(base / n, base / "ca", banks="sha1,sha256") for n in ("a", "b")]
    started: list[swtpm.SwtpmNode] = []
    try:
        for node, boot_log in zip(nodes, (log, tampered_log(log)), strict=True):
            tpm = swtpm.start(node, startup=False)
            started.append(tpm)
            simulate_boot(tpm.tcti, boot_log, eventlog_out=tpm.eventlog)
        vendor = base / "vendor-ca"
        swtpm.export_ca(base / "ca", vendor)
        yield Tpms(started[0], started[1], vendor, log)
    finally:
        for tpm in started:
            swtpm.stop(tpm)


@pytest.fixture
def bad(tpms: Tpms, svc: Svc) -> str:
    """Node ``web-bad`` on TPM b (the tampered kernel): its failing attestation's id."""
    ak = enroll(svc, tpms.b, "web-bad")
    resp = attest(svc, tpms.b, ak, "web-bad", log=tampered_log(tpms.log))
    assert resp.json["status"] == "untrusted", resp.json
    return str(resp.json["attestation_id"])


def _draft(s: Svc, att: str, events: list[int], golden: str = "fleet@1") -> object:
    body = {"attestation_id": att, "golden": golden, "events": events, "reason": "reviewed"}
    return s.client.post("/v1/drafts", json=body, headers=s.admin)


def test_promotable_lists_the_kernel_with_what_it_would_add(svc: Svc, bad: str, tpms: Tpms) -> None:
    resp = svc.client.get(f"/v1/attestations/{bad}/promotable", headers=_reviewer(svc))
    events = resp.json["events"]
    assert [(e["event"], e["kind"]) for e in events] == [(kernel_index(tpms.log), "boot_app")]


def test_an_event_no_failing_check_names_cannot_be_promoted(svc: Svc, bad: str) -> None:
    resp = _draft(svc, bad, [1])
    assert resp.status_code == 400 and resp.json["error"]["code"] == "event_not_failing"


def test_a_draft_needs_a_version_the_attestation_was_appraised_against(
    svc: Svc,
    bad: str,
    tpms: Tpms,
) -> None:
    resp = _draft(svc, bad, [kernel_index(tpms.log)], golden="other@9")
    assert resp.status_code == 400 and resp.json["error"]["code"] == "bad_field"


def test_a_revoked_value_is_never_promotable(svc: Svc, tpms: Tpms) -> None:
    ak = enroll(svc, tpms.a, "web-ok")
    assert attest(svc, tpms.a, ak, "web-ok", log=tpms.log).json["status"] == "trusted"
    resp = svc.client.post("/v1/golden/fleet/1/revoke", json={"reason": "CVE"}, headers=svc.admin)
    assert resp.status_code == 200
    att = svc.client.get("/v1/nodes/web-ok", headers=svc.admin).json["last_attestation_id"]
    events = svc.client.get(f"/v1/attestations/{att}/promotable", headers=svc.admin).json["events"]
    assert events and all(e["kind"] is None for e in events)  # golden_revoked everywhere
    resp = _draft(svc, att, [events[0]["event"]])
    assert resp.status_code == 400 and resp.json["error"]["code"] == "not_promotable"


def test_rejection_keeps_the_draft_and_it_cannot_be_approved_after(
    svc: Svc,
    bad: str,
    tpms: Tpms,
) -> None:
    made = _draft(svc, bad, [kernel_index(tpms.log)])
    assert made.status_code == 201 and made.json["version"] == "2", made.json
    draft = made.json["id"]
    reviewer = _reviewer(svc)
    resp = svc.client.post(
        f"/v1/drafts/{draft}/reject", json={"reason": "wrong build"}, headers=reviewer
    )
    assert resp.status_code == 200 and resp.json["state"] == "rejected"
    assert resp.json["decision_reason"] == "wrong build"
    again = svc.client.post(f"/v1/drafts/{draft}/approve", json={"reason": "x"}, headers=reviewer)
    assert again.status_code == 409 and again.json["error"]["code"] == "draft_decided"
    assert svc.client.get("/v1/golden/fleet/2", headers=svc.admin).status_code == 404
    listed = svc.client.get("/v1/drafts?state=rejected", headers=reviewer).json["drafts"]
    assert [d["id"] for d in listed] == [draft]


def test_approval_by_a_second_person_makes_the_node_trusted(
    svc: Svc,
    bad: str,
    tpms: Tpms,
) -> None:
    draft = _draft(svc, bad, [kernel_index(tpms.log)]).json["id"]
    own = svc.client.post(f"/v1/drafts/{draft}/approve", json={"reason": "mine"}, headers=svc.admin)
    assert own.status_code == 403 and own.json["error"]["code"] == "four_eyes"
    resp = svc.client.post(
        f"/v1/drafts/{draft}/approve", json={"reason": "ok"}, headers=_reviewer(svc)
    )
    assert resp.status_code == 200, resp.json
    assert [(r["node"], r["status"]) for r in resp.json["reappraised"]] == [("web-bad", "trusted")]
    node = svc.client.get("/v1/nodes/web-bad", headers=svc.admin).json
    assert node["state"] == "trusted" and node["golden"] == ["fleet@1", "fleet@2"]
    actions = [
        e["action"]
        for e in svc.client.get("/v1/audit?target=fleet@2", headers=svc.admin).json["audit"]
    ]
    assert {"golden_draft", "golden_approve", "golden_add"} <= set(actions)


def test_incidents_group_triage_and_reopen(svc: Svc, bad: str, tpms: Tpms) -> None:
    reviewer = _reviewer(svc)
    found = svc.client.get("/v1/incidents", headers=reviewer).json["incidents"]
    (incident,) = [i for i in found if i["reason"] == "boot_app_not_approved"]
    assert incident["nodes"] == 1 and incident["state"] == "new"
    body = {"state": "resolved", "assignee": "bob", "reason": "known build"}
    resp = svc.client.post(f"/v1/incidents/{incident['id']}/triage", json=body, headers=reviewer)
    assert resp.status_code == 200 and resp.json["state"] == "resolved"
    same = svc.client.post(f"/v1/incidents/{incident['id']}/triage", json=body, headers=reviewer)
    assert same.status_code == 409 and same.json["error"]["code"] == "incident_unchanged"
    note = svc.client.post(
        f"/v1/incidents/{incident['id']}/notes", json={"text": "<b>hi</b>"}, headers=reviewer
    )
    assert note.status_code == 201
    resp = svc.client.post(
        "/v1/nodes/web-bad/reappraise", json={"reason": "again"}, headers=svc.admin
    )
    assert resp.status_code == 200
    shown = svc.client.get(f"/v1/incidents/{incident['id']}", headers=reviewer).json
    assert shown["state"] == "new" and shown["members"][0]["count"] == 2
    assert [n["text"] for n in shown["notes"]] == ["<b>hi</b>"]
    actions = [h["action"] for h in shown["history"]]
    assert actions[:3] == ["incident_reopened", "incident_note", "incident_triage"]
