"""The change feed's order guarantees: a follower never skips an event that commits after a
later-numbered one (PostgreSQL writers), waits a bounded time for a hole, and seq numbers are
never reused after pruning."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

from tests.postgres import either_store, postgres_server, postgres_url  # noqa: F401
from verifier.service import events
from verifier.store import Store, cluster

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def store(either_store: Store) -> Store:  # noqa: F811
    return either_store


def add(store: Store, seq: int | None, at: dt.datetime, name: str = "n") -> int:
    with store.write() as db:
        row = cluster.ClusterEvent(
            event_id=f"{name}-{seq}-{at.timestamp()}", type="node.state_changed", node=name,
            created_at=at, payload={"node": name},
        )  # fmt: skip
        if seq is not None:
            row.seq = seq
        db.add(row)
        db.flush()
        return row.seq


def page(store: Store, after: int, now: dt.datetime) -> events.FeedPage:
    return events.feed(
        store, after, wait=0, limit=100, monotonic=time.monotonic, sleep=time.sleep,
        now=lambda: now,
    )  # fmt: skip


def test_a_follower_stops_at_a_hole_until_it_is_filled(store: Store) -> None:
    add(store, 1, T0)
    add(store, 3, T0)  # seq 2 is taken by a transaction that has not committed yet
    first = page(store, 0, T0)
    assert [e["seq"] for e in first.events] == [1] and first.last_seq == 1
    add(store, 2, T0)  # it commits
    assert [e["seq"] for e in page(store, first.last_seq, T0).events] == [2, 3]


def test_a_hole_older_than_the_gap_wait_is_a_rolled_back_transaction(store: Store) -> None:
    add(store, 1, T0)
    add(store, 3, T0)
    later = T0 + dt.timedelta(seconds=cluster.GAP_WAIT + 1)
    assert [e["seq"] for e in page(store, 1, later).events] == [3]


def test_the_settled_end_of_the_feed_stops_below_a_young_hole(store: Store) -> None:
    for seq in (1, 2, 4):
        add(store, seq, T0)
    with store.read() as db:
        assert cluster.settled_seq(db, T0) == 2
        assert cluster.settled_seq(db, T0 + dt.timedelta(seconds=cluster.GAP_WAIT + 1)) == 4


def test_pruning_keeps_the_newest_event_and_seq_is_never_reused(store: Store) -> None:
    old = T0 - dt.timedelta(days=30)
    last = max(add(store, None, old, f"n{i}") for i in range(3))
    with store.write() as db:
        cluster.prune_events(db, T0, keep_after=10**9)
    with store.read() as db:
        assert cluster.last_seq(db) == last  # the end of the feed did not move back
    assert add(store, None, T0, "new") == last + 1


@pytest.mark.parametrize(
    "query",
    ["after=-1", "after=\u0661", "after=1e3", f"after={2**63}", "wait=31", "wait=0.5", "limit=0",
     "limit=1001", "after=%00", "after= 1"],
)  # fmt: skip
def test_a_bad_feed_query_is_a_400_with_a_stable_code(tmp_path: Path, query: str) -> None:
    from tests.test_service_api import make_env

    env = make_env(str(tmp_path / "v.db"))
    resp = env.client.get(f"/v1/events?{query}", headers=env.h("scheduler"))
    assert resp.status_code == 400 and resp.json["error"]["code"] == "bad_query"
    env.store.close()


def test_a_long_poll_answers_as_soon_as_an_event_commits(tmp_path: Path) -> None:
    import threading

    from tests.test_service_api import make_env

    env = make_env(str(tmp_path / "v.db"))
    got: list[float] = []

    def poll() -> None:
        start = time.monotonic()
        resp = env.client.get("/v1/events?after=0&wait=10", headers=env.h("scheduler"))
        assert resp.status_code == 200 and resp.json["events"]
        got.append(time.monotonic() - start)

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.5)
    resp = env.client.post("/v1/nodes/n1/quarantine", headers=env.h("admin"), json={"reason": "t"})
    assert resp.status_code == 200
    thread.join(timeout=15)
    assert got and 0.4 < got[0] < 2.0
    env.store.close()
