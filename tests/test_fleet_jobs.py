"""Issue 14, bounded growth and background jobs: bytes per unchanged re-attestation, leases
(one holder, resume after expiry, a late holder cannot commit), the stale sweep on a timer,
retention, blob GC, a re-appraisal job finished by another instance — SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from testkit.dbsize import db_bytes
from testkit.service import FakeAgentForLoad
from tests import test_fleet_protocol
from tests.postgres import postgres_server, postgres_url  # noqa: F401
from tests.test_fleet_protocol import Fleet, _agent, _first
from tests.test_service_api import T0
from verifier.service import background, golden_ops, incidents, inventory, reappraisal
from verifier.store import hotpath, leases, maintenance, repo
from verifier.store.models import (
    Attestation,
    AuditEntry,
    EventLogBlob,
    Nonce,
    ReappraisalJob,
    TriageState,
    VerdictBlob,
)

fleet = test_fleet_protocol.fleet  # the same fixture: SQLite and a real PostgreSQL


def _round(f: Fleet, agents: list[FakeAgentForLoad], nonces: dict[str, bytes]) -> None:
    f.clock[0] += dt.timedelta(seconds=60)
    for a in agents:
        resp = f.post(a, nonces[a.name], send_log=False)
        assert resp.status_code == 200 and resp.json["repeat"] > 0, resp.json
        nonces[a.name] = bytes.fromhex(resp.json["next_challenge"]["nonce"])


def test_an_unchanged_reattestation_costs_under_300_bytes_amortized(fleet: Fleet) -> None:
    agents = [_agent(fleet, f"g{i}") for i in range(20)]
    nonces = {a.name: bytes.fromhex(_first(fleet, a)["next_challenge"]["nonce"]) for a in agents}
    for _ in range(3):  # warm: the repeat rows exist, pages for their versions are there
        _round(fleet, agents, nonces)
    _purge(fleet)
    before = db_bytes(fleet.store)
    rounds = 10
    for _ in range(rounds):
        _round(fleet, agents, nonces)
    _purge(fleet)  # used nonces are kept until they expire, then purged by retention
    per = (db_bytes(fleet.store) - before) / (rounds * len(agents))
    assert per <= 300, f"{per:.0f} bytes per re-attestation"


def _purge(f: Fleet) -> None:
    later = f.clock[0] + dt.timedelta(seconds=400)
    with f.store.write() as db:
        maintenance.purge_nonces(db, later)


def test_a_lease_has_one_holder_and_a_late_holder_cannot_commit(fleet: Fleet) -> None:
    with fleet.store.write() as db:
        a = leases.acquire(db, "job", "a", T0, 30)
        assert a is not None and leases.extend(db, a, T0, 30, "17")
        assert leases.acquire(db, "job", "b", T0 + dt.timedelta(seconds=29), 30) is None
    with fleet.store.write() as db:  # a froze past its lease: b resumes from a's cursor
        b = leases.acquire(db, "job", "b", T0 + dt.timedelta(seconds=31), 30)
        assert b is not None and b.cursor == "17"
    with fleet.store.write() as db:
        assert not leases.extend(db, a, T0 + dt.timedelta(seconds=32), 30, "99")
    with fleet.store.read() as db:
        assert leases.holder_of(db, "job") == ("b", T0 + dt.timedelta(seconds=61))


def test_the_stale_sweep_runs_on_a_timer_without_any_read(fleet: Fleet) -> None:
    agent = _agent(fleet)
    _first(fleet, agent)
    fleet.clock[0] += dt.timedelta(seconds=181)  # past 3 x 60 s; the used nonce expired too
    assert background.run_job(fleet.svc, background.JOBS[0]) == 2
    with fleet.store.read() as db:
        node = repo.get_node(db, "n1")
        assert node is not None and node.state == "stale"
        assert node.reason == "no successful attestation since 2026-11-28T12:00:00Z"
        assert db.scalar(select(func.count()).where(AuditEntry.action == "stale")) == 1
    # Due again only after sweep_interval: the lease row is the schedule.
    assert background.run_job(fleet.svc, background.JOBS[0]) is None
    fleet.clock[0] += dt.timedelta(seconds=31)
    assert background.run_job(fleet.svc, background.JOBS[0]) == 0


def test_retention_keeps_the_last_and_open_failures_and_deletes_the_rest(fleet: Fleet) -> None:
    good, bad = _agent(fleet, "good"), _agent(fleet, "bad")
    for _ in range(3):  # three boots each: three full records
        _first(fleet, good)
        good.reboot()
    bad.extra_extend = b"implant"
    _first(fleet, bad)
    _first(fleet, bad)
    fleet.clock[0] += dt.timedelta(days=400)
    with fleet.store.write() as db:
        policy = maintenance.Retention(dt.timedelta(days=30), dt.timedelta(days=365))
        done = maintenance.retention_batch(db, policy, fleet.clock[0], 0)
    assert done.cursor is None
    with fleet.store.read() as db:
        kept = {
            (n, int(c))
            for n, c in db.execute(
                select(Attestation.node_id, func.count()).group_by(Attestation.node_id)
            )
        }
    # good: only its last (= its latest evidence); bad: both, its failure is still open.
    ids = _ids(fleet)
    assert kept == {(ids["good"], 1), (ids["bad"], 2)}


def test_retention_keeps_what_an_open_incident_names_until_it_is_resolved(fleet: Fleet) -> None:
    node = _agent(fleet, "flaky")
    node.extra_extend = b"implant"
    failing = int(_first(fleet, node)["attestation_id"])
    incidents.refresh(fleet.svc)
    node.extra_extend = None
    node.reboot()
    _first(fleet, node)  # trusted again: the node has no open failure, the incident stays open
    fleet.clock[0] += dt.timedelta(days=400)
    policy = maintenance.Retention(dt.timedelta(days=30), dt.timedelta(days=365))

    def purge_and_list() -> set[int]:
        with fleet.store.write() as db:
            assert maintenance.retention_batch(db, policy, fleet.clock[0], 0).cursor is None
        with fleet.store.read() as db:
            return set(db.scalars(select(Attestation.id)))

    assert failing in purge_and_list()
    (incident,) = incidents.list_incidents(fleet.svc)
    resolved = TriageState.RESOLVED
    incidents.triage(fleet.svc, incident.id, resolved, None, "fixed the firmware", "admin:1")
    assert failing not in purge_and_list()


def _ids(f: Fleet) -> dict[str, int]:
    with f.store.read() as db:
        return {n.name: n.id for n in repo.list_nodes(db)}


def test_blob_gc_deletes_only_what_nothing_refers_to(fleet: Fleet) -> None:
    agent = _agent(fleet)
    _first(fleet, agent)
    with fleet.store.write() as db:
        repo.put_event_log(db, "ab" * 32, b"orphan log", T0)
    fleet.clock[0] += dt.timedelta(hours=2)
    job = background.JOBS[2]
    assert background.run_job(fleet.svc, job) == 1
    with fleet.store.read() as db:
        assert db.scalar(select(func.count()).select_from(EventLogBlob)) == 1
        assert db.scalar(select(func.count()).select_from(VerdictBlob)) == 1


def test_used_nonces_are_purged_after_they_expire(fleet: Fleet) -> None:
    agent = _agent(fleet)
    _first(fleet, agent)
    assert fleet.count(Nonce) == 1
    fleet.clock[0] += dt.timedelta(hours=2)
    assert background.run_job(fleet.svc, background.JOBS[0]) == 2  # the nonce, and n1 stale
    assert fleet.count(Nonce) == 0


def test_a_reappraisal_job_left_by_a_dead_instance_is_finished_by_another(fleet: Fleet) -> None:
    agents = [_agent(fleet, f"r{i}") for i in range(5)]
    for a in agents:
        _first(fleet, a)
    with fleet.store.write() as db:  # "dead" revoked and started the job, then was killed
        row = repo.get_golden(db, "f", "1")
        assert row is not None
        row.status, row.reason = "revoked", "CVE"
        hotpath.bump_version(db)
        reappraisal.start_job(db, "f", "f@1 revoked: CVE", "admin", "dead", fleet.clock[0])
    assert background.resume_reappraisals(fleet.svc) == 0  # its lease still holds
    fleet.clock[0] += dt.timedelta(seconds=31)
    assert background.resume_reappraisals(fleet.svc) == 5
    with fleet.store.read() as db:
        assert {n.state for n in repo.list_nodes(db)} == {"untrusted"}
        [job] = db.scalars(select(ReappraisalJob))
        assert job.finished_at is not None


def test_revoking_moves_every_affected_node_through_the_batched_job(fleet: Fleet) -> None:
    agents = [_agent(fleet, f"v{i}") for i in range(reappraisal.JOB_BATCH + 3)]
    for a in agents:
        _first(fleet, a)
    change = golden_ops.set_status(fleet.svc, "f", "1", "revoked", "CVE", "admin")
    assert len(change.reappraised) == len(agents)
    assert {r.state for r in change.reappraised} == {"untrusted"}


def test_reappraising_every_node_runs_as_a_batched_job(fleet: Fleet) -> None:
    """The admin "every node" re-appraisal: a job of batches like a revoke (no transaction over
    the whole fleet), every node with stored evidence moved, a node without any left as it is."""
    agents = [_agent(fleet, f"e{i}") for i in range(reappraisal.JOB_BATCH + 3)]
    for a in agents:
        _first(fleet, a)
    quiet = _agent(fleet, "never-attested")
    done = inventory.reappraise_nodes(fleet.svc, None, "audit", "admin")
    assert sorted(r.node for r in done) == sorted(a.name for a in agents)
    assert {r.state for r in done} == {"trusted"}
    with fleet.store.read() as db:
        [job] = db.scalars(select(ReappraisalJob))
        assert job.kind == "all" and job.finished_at is not None
        assert repo.get_node(db, quiet.name).state == "enrolled"  # type: ignore[union-attr]
        reappraised = db.scalar(
            select(func.count()).select_from(Attestation).where(Attestation.source == "reappraisal")
        )
    assert reappraised == len(agents)
