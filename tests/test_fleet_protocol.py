"""Issue 14, protocol and store: the next nonce in the evidence answer, verdict reuse within a
boot, compact re-attestations, content-addressed verdicts, golden caches by version — in
process, on SQLite and a real PostgreSQL (software AKs from testkit: FakeAgentForLoad)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from assay.algorithms import HashAlg
from assay.eventlog import assume_quoted_for_review, parse_event_log
from golden.capture import capture
from golden.yamlfmt import dump_yaml
from testkit.service import FakeAgentForLoad
from tests.postgres import postgres_server, postgres_url  # noqa: F401
from tests.test_service_api import SB_LOG, T0
from verifier.service import ServiceConfig, create_app, events, golden_ops
from verifier.service.context import Services
from verifier.store import Store, upgrade
from verifier.store.models import Attestation, AttestationRepeat, VerdictBlob

LOG = SB_LOG.read_bytes()
CBOR = {"Content-Type": "application/cbor"}


@dataclass
class Fleet:
    client: FlaskClient
    svc: Services
    store: Store
    clock: list[dt.datetime]

    def post(self, agent: FakeAgentForLoad, nonce: bytes, *, send_log: bool) -> Any:
        body = agent.evidence(nonce, send_log=send_log)
        return self.client.post(f"/v1/nodes/{agent.name}/evidence", data=body, headers=CBOR)

    def challenge(self, agent: FakeAgentForLoad) -> bytes:
        resp = self.client.post(f"/v1/nodes/{agent.name}/challenge")
        return bytes.fromhex(resp.json["nonce"])

    def count(self, model: type) -> int:
        with self.store.read() as db:
            return int(db.scalar(select(func.count()).select_from(model)) or 0)


def make_fleet(url: str, selector: dict[str, str] | None = None) -> Fleet:
    """A verifier on ``url`` with golden set ``f`` (the log's boot) assigned to ``selector``."""
    f = another_instance(url, [T0])
    gs = capture(
        assume_quoted_for_review(parse_event_log(LOG), HashAlg.SHA256), name="f", version="1"
    )
    golden_ops.upload(f.svc, "yaml", dump_yaml(gs).encode(), "test")
    golden_ops.assign(f.svc, "f", selector or {}, "test")
    return f


def another_instance(url: str, clock: list[dt.datetime]) -> Fleet:
    """A verifier instance on the database at ``url`` (upgraded), its caches its own."""
    store = Store(url)
    upgrade(store)
    cfg = ServiceConfig(database=url, client_rate=1e6, client_burst=1e6, attest_interval=60)
    app = create_app(cfg, store=store, clock=lambda: clock[0])
    return Fleet(app.test_client(), app.extensions["assay"], store, clock)


@pytest.fixture(params=["sqlite", "postgres"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fleet]:
    url = (
        str(tmp_path / "v.db")
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    f = make_fleet(url)
    try:
        yield f
    finally:
        f.store.close()


def _agent(f: Fleet, name: str = "n1") -> FakeAgentForLoad:
    agent = FakeAgentForLoad(name, LOG)
    agent.enroll_directly(f.store)
    return agent


def _first(f: Fleet, agent: FakeAgentForLoad) -> Any:
    resp = f.post(agent, f.challenge(agent), send_log=True)
    assert resp.status_code == 200, resp.json
    return resp.json


def test_the_evidence_answer_carries_a_next_nonce_that_needs_no_challenge(fleet: Fleet) -> None:
    agent = _agent(fleet)
    first = _first(fleet, agent)
    following = first["next_challenge"]
    assert following["known_event_log_sha256"] == agent.log_sha256.hex()
    assert following["pcr_selection"] == {"sha256": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14]}
    again = fleet.post(agent, bytes.fromhex(following["nonce"]), send_log=False)
    assert (again.status_code, again.json["status"]) == (200, "trusted")
    replay = fleet.post(agent, bytes.fromhex(following["nonce"]), send_log=False)
    assert (replay.status_code, replay.json["error"]["code"]) == (422, "nonce_reused")


def test_a_sent_log_is_stored_once_under_its_digest_for_every_instance(fleet: Fleet) -> None:
    """The log a first attestation carries is kept under its digest (the bytes sent, checked
    when the evidence was decoded): another instance, whose caches never saw it, appraises a
    re-attestation without the log from the stored copy, and storing it is not repeated."""
    from verifier.store import repo
    from verifier.store.models import EventLogBlob

    agent = _agent(fleet)
    first = _first(fleet, agent)
    with fleet.store.read() as db:
        assert repo.get_event_log(db, agent.log_sha256.hex()) == LOG
    other = another_instance(
        fleet.store.engine.url.render_as_string(hide_password=False), fleet.clock
    )
    try:
        nonce = bytes.fromhex(first["next_challenge"]["nonce"])
        again = other.post(agent, nonce, send_log=False)
        assert (again.status_code, again.json["status"]) == (200, "trusted"), again.json
        assert other.count(EventLogBlob) == 1
    finally:
        other.store.close()


def test_the_next_nonce_lasts_the_freshness_window_not_the_challenge_lifetime(fleet: Fleet) -> None:
    agent = _agent(fleet)
    nonce = bytes.fromhex(_first(fleet, agent)["next_challenge"]["nonce"])
    fleet.clock[0] = T0 + dt.timedelta(seconds=170)  # past nonce_lifetime 60, inside 3 x 60
    assert fleet.post(agent, nonce, send_log=False).status_code == 200
    late = bytes.fromhex(_first(fleet, agent)["next_challenge"]["nonce"])
    fleet.clock[0] += dt.timedelta(seconds=181)
    expired = fleet.post(agent, late, send_log=False)
    assert (expired.status_code, expired.json["error"]["code"]) == (422, "nonce_expired")


def test_an_unchanged_reattestation_reuses_the_verdict_and_is_counted_not_stored(
    fleet: Fleet,
) -> None:
    agent = _agent(fleet)
    first = _first(fleet, agent)
    hits, misses = fleet.svc.logs.hits, fleet.svc.logs.misses
    nonce = bytes.fromhex(first["next_challenge"]["nonce"])
    for n in (1, 2, 3):
        fleet.clock[0] += dt.timedelta(seconds=60)
        resp = fleet.post(agent, nonce, send_log=False)
        assert resp.status_code == 200, resp.json
        assert (resp.json["attestation_id"], resp.json["repeat"]) == (first["attestation_id"], n)
        assert resp.json["status"] == "trusted" and resp.json["checks"] == first["checks"]
        nonce = bytes.fromhex(resp.json["next_challenge"]["nonce"])
    # No re-appraisal: not even the verified log was looked up again.
    assert (fleet.svc.logs.hits, fleet.svc.logs.misses) == (hits, misses)
    assert fleet.count(Attestation) == 1
    admin = _admin(fleet)
    [entry] = fleet.client.get("/v1/nodes/n1/attestations", headers=admin).json["attestations"]
    assert entry["repeats"]["count"] == 3
    assert entry["repeats"]["last_at"] == "2026-11-28T12:03:00Z"
    assert entry["repeats"]["first_at"] == "2026-11-28T12:01:00Z"
    node = fleet.client.get("/v1/nodes/n1", headers=admin).json
    assert node["last_success_at"] == node["last_attested_at"] == "2026-11-28T12:03:00Z"
    detail = fleet.client.get(f"/v1/attestations/{first['attestation_id']}", headers=admin).json
    assert detail["repeats"]["count"] == 3 and len(detail["repeats"]["last_quote"]) > 100


def test_a_node_changed_between_the_read_and_the_compact_write_gets_a_full_record(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compact write (nonce, refresh, count: one transaction without a Session) re-checks
    the node; when another instance changed it after this one read it, that transaction rolls
    back whole and the attestation is recorded in full, its nonce used once."""
    from sqlalchemy import update

    from verifier.service import attestation
    from verifier.store.models import Node, Nonce

    agent = _agent(fleet)
    first = _first(fleet, agent)
    real = attestation.compact

    def compact_after_a_change(snap: Any, a: Any) -> bool:
        with fleet.store.write() as db:  # another instance re-appraised the node meanwhile
            db.execute(update(Node).where(Node.id == snap.id).values(verdict_key="0" * 64))
        return real(snap, a)

    monkeypatch.setattr(attestation, "compact", compact_after_a_change)
    fleet.clock[0] += dt.timedelta(seconds=60)
    nonce = bytes.fromhex(first["next_challenge"]["nonce"])
    resp = fleet.post(agent, nonce, send_log=False)
    assert resp.status_code == 200, resp.json
    assert resp.json["status"] == "trusted" and not resp.json.get("repeat")
    assert resp.json["attestation_id"] != first["attestation_id"]
    assert fleet.count(Attestation) == 2 and fleet.count(AttestationRepeat) == 0
    with fleet.store.read() as db:
        assert db.scalar(select(func.count()).where(Nonce.nonce == nonce)) == 1
    monkeypatch.setattr(attestation, "compact", real)
    fleet.clock[0] += dt.timedelta(seconds=60)
    again = fleet.post(agent, bytes.fromhex(resp.json["next_challenge"]["nonce"]), send_log=False)
    assert (again.json["attestation_id"], again.json["repeat"]) == (resp.json["attestation_id"], 1)


@pytest.mark.parametrize("after", ["first", "reattestation", "bad_quote"])
def test_a_node_deleted_while_its_evidence_is_verified_is_refused_cleanly(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch, after: str
) -> None:
    """The full record's write finds the node gone: 404 ``node_not_enrolled``, nothing stored,
    no nonce used (it was a foreign-key violation, a 500, before)."""
    from sqlalchemy import delete

    from assay.errors import VerificationFailed
    from verifier.service import attestation
    from verifier.store.models import Node, Nonce

    agent = _agent(fleet)
    nonce = fleet.challenge(agent)
    if after == "reattestation":
        nonce = bytes.fromhex(_first(fleet, agent)["next_challenge"]["nonce"])
        fleet.clock[0] += dt.timedelta(seconds=60)

    def delete_node() -> None:  # an admin deleted the node while it was verified
        with fleet.store.write() as db:
            db.execute(delete(Node).where(Node.name == agent.name))

    log_bytes, compact = attestation._log_bytes, attestation.compact
    if after == "first":  # while its log is verified

        def log_bytes_after_a_delete(svc: Any, log_hex: str, sent: bytes | None) -> Any:
            delete_node()
            return log_bytes(svc, log_hex, sent)

        monkeypatch.setattr(attestation, "_log_bytes", log_bytes_after_a_delete)
    elif after == "bad_quote":  # a quote that does not verify still uses its nonce, if it can

        def verify_quote_after_a_delete(*args: Any) -> Any:
            delete_node()
            raise VerificationFailed("quote signature does not verify", code="quote_signature")

        monkeypatch.setattr(attestation, "verify_quote", verify_quote_after_a_delete)
    else:  # a verdict reused: the compact write, which finds the node gone, then a full record

        def compact_after_a_delete(snap: Any, a: Any) -> bool:
            delete_node()
            return compact(snap, a)

        monkeypatch.setattr(attestation, "compact", compact_after_a_delete)
    resp = fleet.post(agent, nonce, send_log=after == "first")
    assert resp.status_code == 404, resp.json
    assert resp.json["error"]["code"] == "node_not_enrolled"
    assert fleet.count(Attestation) == 0 and fleet.count(Nonce) == 0


def _admin(f: Fleet) -> dict[str, str]:
    from verifier.store import repo

    with f.store.write() as db:
        token, _ = repo.create_token(db, "admin", expires_at=None, now=T0)
    return {"Authorization": f"Bearer {token}"}


def test_a_reboot_is_a_full_record_even_with_the_same_log(fleet: Fleet) -> None:
    agent = _agent(fleet)
    first = _first(fleet, agent)
    agent.reboot()
    resp = fleet.post(agent, bytes.fromhex(first["next_challenge"]["nonce"]), send_log=False)
    assert resp.status_code == 200, resp.json
    assert (resp.json["reboot"], resp.json["repeat"]) == (True, 0)
    assert resp.json["attestation_id"] != first["attestation_id"]
    assert fleet.count(Attestation) == 2


def test_a_quote_whose_clock_did_not_advance_is_appraised_again(fleet: Fleet) -> None:
    agent = _agent(fleet)
    first = _first(fleet, agent)
    agent.clock = 0  # the TPM clock went back within the same boot (1000 < 2000): no reuse
    misses = fleet.svc.logs.misses + fleet.svc.logs.hits
    resp = fleet.post(agent, bytes.fromhex(first["next_challenge"]["nonce"]), send_log=False)
    assert resp.status_code == 200 and resp.json["repeat"] == 0
    assert fleet.svc.logs.misses + fleet.svc.logs.hits == misses + 1
    assert fleet.count(Attestation) == 2


def test_a_changed_pcr_is_a_full_record_and_moves_the_node(fleet: Fleet) -> None:
    agent = _agent(fleet)
    first = _first(fleet, agent)
    agent.extra_extend = b"an unapproved module"
    resp = fleet.post(agent, bytes.fromhex(first["next_challenge"]["nonce"]), send_log=False)
    assert (resp.json["status"], resp.json["node_state"], resp.json["repeat"]) == (
        "untrusted",
        "untrusted",
        0,
    )
    again = fleet.post(agent, bytes.fromhex(resp.json["next_challenge"]["nonce"]), send_log=False)
    assert again.json["status"] == "untrusted" and again.json["repeat"] == 0  # every failure


def test_identical_verdicts_are_stored_once(fleet: Fleet) -> None:
    for i in range(5):
        _first(fleet, _agent(fleet, f"n{i + 2}"))
    assert fleet.count(Attestation) == 5
    assert fleet.count(VerdictBlob) == 1


def test_a_golden_change_on_another_instance_invalidates_this_ones_cache(
    fleet: Fleet, tmp_path: Path
) -> None:
    agent = _agent(fleet)
    first = _first(fleet, agent)
    other = create_app(fleet.svc.config, store=fleet.store, clock=lambda: fleet.clock[0])
    golden_ops.set_status(other.extensions["assay"], "f", "1", "revoked", "CVE", "admin")
    reloads = fleet.svc.golden.reloads
    resp = fleet.post(agent, bytes.fromhex(first["next_challenge"]["nonce"]), send_log=False)
    assert resp.json["status"] == "untrusted" and resp.json["repeat"] == 0
    assert fleet.svc.golden.reloads == reloads + 1


def test_an_unchanged_fleet_reads_no_golden_rows(fleet: Fleet) -> None:
    agents = [_agent(fleet, f"m{i}") for i in range(3)]
    for a in agents:
        _first(fleet, a)
    assert fleet.svc.golden.reloads == 1
    with fleet.store.read() as db:
        assert db.scalar(select(func.count()).select_from(AttestationRepeat)) == 0


def test_the_inventory_pages_by_name_and_has_a_names_only_form(fleet: Fleet) -> None:
    agents = [_agent(fleet, f"p{i}") for i in range(5)]
    for a in agents[:4]:
        _first(fleet, a)
    admin = _admin(fleet)
    first = fleet.client.get("/v1/nodes?state=trusted&limit=3", headers=admin).json
    assert [n["name"] for n in first["nodes"]] == ["p0", "p1", "p2"] and first["next"] == "p2"
    rest = fleet.client.get("/v1/nodes?state=trusted&limit=3&after=p2", headers=admin).json
    assert ([n["name"] for n in rest["nodes"]], rest["next"]) == (["p3"], None)
    names = fleet.client.get("/v1/nodes?state=trusted&fields=names", headers=admin).json
    assert names == {"names": ["p0", "p1", "p2", "p3"]}
    fleet.clock[0] += dt.timedelta(seconds=181)  # past the window: stale, computed in SQL
    stale = fleet.client.get("/v1/nodes?state=stale&fields=names", headers=admin).json
    assert stale["names"] == ["p0", "p1", "p2", "p3"]
    assert fleet.client.get("/v1/nodes?state=trusted", headers=admin).json["nodes"] == []
    bad = fleet.client.get("/v1/nodes?fields=all", headers=admin)
    assert (bad.status_code, bad.json["error"]["code"]) == (400, "bad_query")


def test_state_changed_is_called_for_each_change_and_never_for_a_repeat(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    from verifier.service import attestation, inventory

    seen: list[tuple[str, str, str]] = []
    through = attestation.state_changed

    def hook(db: Any, change: attestation.StateChange) -> dict[str, Any]:
        seen.append((change.node, change.old, change.new))
        return through(db, change)

    monkeypatch.setattr(attestation, "state_changed", hook)
    monkeypatch.setattr(inventory, "state_changed", hook)
    agent = _agent(fleet)
    first = _first(fleet, agent)
    nonce = bytes.fromhex(first["next_challenge"]["nonce"])
    again = fleet.post(agent, nonce, send_log=False)
    assert again.json["repeat"] == 1
    fleet.clock[0] += dt.timedelta(seconds=181)
    inventory.sweep_stale(fleet.svc)
    assert seen == [("n1", "enrolled", "trusted"), ("n1", "trusted", "stale")]
    # The feed holds each change once, with the attestation that made it (on PostgreSQL the
    # full record sets that id in SQL, in the statement that inserts the attestation).
    page = events.feed(
        fleet.svc.store,
        0,
        wait=0,
        limit=100,
        monotonic=time.monotonic,
        sleep=time.sleep,
        now=lambda: fleet.clock[0] + dt.timedelta(minutes=1),
    )
    assert [
        (e["node"], e["old_state"], e["new_state"], e["attestation_id"]) for e in page.events
    ] == [("n1", "enrolled", "trusted", first["attestation_id"]), ("n1", "trusted", "stale", None)]
