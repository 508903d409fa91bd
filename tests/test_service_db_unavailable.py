"""A locked or stopped database answers 503 with a stable code within a bounded time.

A real SQLite file locked by another connection (a writer's lock, and an exclusive lock that
also stops readers), and a real PostgreSQL that is stopped under the running app. Before, each
request waited SQLite's 30 s busy timeout and then answered 500.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.postgres import start_postgres, stop_postgres
from tests.test_service_api import T0, add_node
from verifier.service import ServiceConfig, create_app
from verifier.store import Store, repo, upgrade

LOCK_TIMEOUT = 1.0


def _app(url: str) -> tuple[FlaskClient, Store, str]:
    store = Store(url, lock_timeout=LOCK_TIMEOUT)
    upgrade(store)
    with store.write() as db:
        admin, _ = repo.create_token(db, "admin", expires_at=None, now=T0)
    add_node(store, "n1")
    app = create_app(ServiceConfig(database=url), store=store, clock=lambda: T0)
    return app.test_client(), store, admin


def _timed(call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    resp = call()
    return resp, time.monotonic() - started


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Iterator[tuple[FlaskClient, Store, str, Path]]:
    path = tmp_path / "locked.db"
    client, store, admin = _app(str(path))
    try:
        yield client, store, admin, path
    finally:
        store.close()


def test_a_write_on_a_locked_sqlite_file_is_a_prompt_503(
    sqlite_app: tuple[FlaskClient, Store, str, Path],
) -> None:
    client, _, admin, path = sqlite_app
    h = {"Authorization": f"Bearer {admin}"}
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        resp, took = _timed(
            lambda: client.post("/v1/nodes/n1/quarantine", headers=h, json={"reason": "x"})
        )
        assert (resp.status_code, resp.json["error"]["code"]) == (503, "database_busy")
        assert resp.headers["Retry-After"] == "1"
        assert LOCK_TIMEOUT * 0.8 <= took < LOCK_TIMEOUT + 1.0, took
        print(f"\n503 on a locked SQLite write after {took:.2f} s (lock_timeout {LOCK_TIMEOUT})")
        # Readers are not blocked by a writer in WAL mode.
        assert client.get("/v1/nodes/n1", headers=h).json["state"] == "enrolled"
    finally:
        other.execute("ROLLBACK")
        other.close()
    resp = client.post("/v1/nodes/n1/quarantine", headers=h, json={"reason": "x"})
    assert resp.status_code == 200 and resp.json["state"] == "quarantined"


def test_reads_on_an_exclusively_locked_sqlite_file_are_a_prompt_503(
    sqlite_app: tuple[FlaskClient, Store, str, Path],
) -> None:
    client, store, admin, path = sqlite_app
    store.engine.dispose()  # the app's pooled connections would keep a shared WAL index open
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA locking_mode = EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    other.execute("UPDATE nodes SET reason = 'held' WHERE name = 'n1'")
    try:
        resp, took = _timed(
            lambda: client.get("/v1/nodes/n1", headers={"Authorization": f"Bearer {admin}"})
        )
        assert resp.status_code == 503
        assert resp.json["error"]["code"] in ("database_busy", "database_unavailable")
        assert took < LOCK_TIMEOUT + 1.0, took
    finally:
        other.execute("ROLLBACK")
        other.close()


@pytest.mark.postgres
def test_a_stopped_postgres_is_a_prompt_503_and_recovers_no_500() -> None:
    base = Path(tempfile.mkdtemp(prefix="assay-pg-stop-"))
    base.chmod(0o755)
    server = start_postgres(base)
    try:
        client, store, admin = _app(server.create_database())
        h = {"Authorization": f"Bearer {admin}"}
        assert client.get("/v1/nodes/n1", headers=h).status_code == 200
        stop_postgres(server)
        for call in (
            lambda: client.get("/v1/nodes/n1", headers=h),
            lambda: client.post("/v1/nodes/n1/challenge"),
            lambda: client.post("/v1/nodes/n1/quarantine", headers=h, json={"reason": "x"}),
        ):
            resp, took = _timed(call)
            assert (resp.status_code, resp.json["error"]["code"]) == (503, "database_unavailable")
            assert took < LOCK_TIMEOUT + 2.0, took
        store.close()
    finally:
        stop_postgres(server)
        shutil.rmtree(base, ignore_errors=True)
