"""PostgreSQL connections that the server dropped (a restart, a failover, an administrator's
``pg_terminate_backend``): a connection that sat idle is pinged and replaced before a request
uses it; one in steady use is not pinged, so its next statement fails once (503), and that one
failure replaces every older connection of the pool — on the Session path and on the raw
connections of the hot path alike. Never a stale answer, never a second failure."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from sqlalchemy import text

from tests.postgres import PostgresServer, postgres_server, postgres_url  # noqa: F401
from verifier.store import Store, hotpath, upgrade
from verifier.store.engine import StoreUnavailable


def _terminate_others(url: str) -> int:
    """Ends every other session of this database, as a restart would; how many."""
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def _backend_pid(store: Store) -> int:
    with store.raw_read() as raw:
        cur = raw.dbapi.cursor()
        cur.execute("SELECT pg_backend_pid()")
        (pid,) = cur.fetchone()
        cur.close()
        return int(pid)


def _two_pooled(store: Store) -> None:
    """Two connections open and back in the pool."""
    with store.raw_read(), store.raw_read():
        pass


@pytest.fixture
def store_factory(postgres_url: str) -> Iterator[Callable[[float], Store]]:  # noqa: F811
    made: list[Store] = []

    def make(ping_idle_after: float) -> Store:
        store = Store(postgres_url, ping_idle_after=ping_idle_after)
        made.append(store)
        return store

    schema = Store(postgres_url)
    upgrade(schema)
    schema.close()
    yield make
    for store in made:
        store.close()


def test_an_idle_connection_the_server_dropped_is_replaced_before_use(
    store_factory: Callable[[float], Store],
    postgres_url: str,  # noqa: F811
) -> None:
    store = store_factory(0.05)
    _two_pooled(store)
    before = _backend_pid(store)
    assert _terminate_others(postgres_url) == 2
    time.sleep(0.1)  # idle past ping_idle_after
    # Both paths answer at once, on new connections: no request sees the dropped ones.
    with store.raw_read() as raw:
        assert hotpath.golden_version(raw) >= 0
    with store.read() as db:
        assert db.execute(text("SELECT 1")).scalar() == 1
    assert _backend_pid(store) != before


@pytest.mark.parametrize("path", ["raw", "session"])
def test_a_dropped_connection_in_steady_use_fails_once_and_replaces_the_whole_pool(
    store_factory: Callable[[float], Store],
    postgres_url: str,  # noqa: F811
    path: str,
) -> None:
    store = store_factory(3600.0)  # never pinged: as under steady load
    _two_pooled(store)
    assert store.engine.pool.checkedin() == 2
    assert _terminate_others(postgres_url) == 2
    with pytest.raises(StoreUnavailable, match="unreachable"):
        if path == "raw":
            with store.raw_read() as raw:
                hotpath.golden_version(raw)
        else:
            with store.read() as db:
                hotpath.golden_version(db)
    # The other pooled connection was dropped too; it is not handed out again.
    for _ in range(3):
        with store.raw_read() as raw, store.raw_read() as other:
            assert hotpath.golden_version(raw) >= 0
            assert hotpath.golden_version(other) >= 0
        with store.read() as db:
            assert db.execute(text("SELECT 1")).scalar() == 1


def test_every_wait_of_a_session_is_bounded_on_the_server_too(
    store_factory: Callable[[float], Store],
) -> None:
    """The server ends what a frozen or vanished instance leaves behind: a lock wait, a long
    statement, an open transaction, and (TCP keepalives on its end) a silent peer."""
    store = store_factory(1.0)
    with store.raw_read() as raw:
        cur = raw.dbapi.cursor()
        cur.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('lock_timeout',"
            " 'statement_timeout', 'idle_in_transaction_session_timeout',"
            " 'tcp_keepalives_idle', 'tcp_keepalives_interval', 'tcp_keepalives_count')"
        )
        settings = dict(cur.fetchall())
        cur.close()
    assert settings == {
        "lock_timeout": "3000", "statement_timeout": "10000",
        "idle_in_transaction_session_timeout": "10000", "tcp_keepalives_idle": "5",
        "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3",
    }  # fmt: skip
