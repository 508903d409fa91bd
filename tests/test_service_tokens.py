"""Tokens through the real API (Flask test client, SQLite and PostgreSQL): single use for every
role, listed without secrets, revoked, and never living longer than ``max_token_lifetime``."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from tests import test_service_api as api
from tests.postgres import postgres_server, postgres_url  # noqa: F401
from tests.test_service_api import T0, Env
from verifier._cli import main
from verifier.store import repo

env = api.env  # the fixture: the real app on SQLite and PostgreSQL, one token per role
MAX = 30 * 24 * 3600  # the default max_token_lifetime


def _create(e: Env, **body: object) -> tuple[int, dict[str, object]]:
    resp = e.client.post("/v1/tokens", headers=e.h("admin"), json=body)
    return resp.status_code, resp.json


def _bearer(secret: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.mark.parametrize(
    ("role", "method", "path"),
    [
        ("scheduler", "GET", "/v1/nodes"),
        ("reviewer", "GET", "/v1/audit"),
        ("admin", "GET", "/v1/tokens"),
        ("admin", "POST", "/v1/admin/sweep"),
    ],
)
def test_a_single_use_token_of_any_role_works_for_exactly_one_request(
    env: Env, role: str, method: str, path: str
) -> None:
    status, tok = _create(env, role=role, single_use=True)
    assert status == 201
    first = env.client.open(path, method=method, headers=_bearer(tok["token"]), json={})
    assert first.status_code == 200, first.json
    again = env.client.open(path, method=method, headers=_bearer(tok["token"]), json={})
    assert (again.status_code, again.json["error"]["code"]) == (401, "token_used")
    listed = {
        t["id"]: t for t in env.client.get("/v1/tokens", headers=env.h("admin")).json["tokens"]
    }
    assert listed[tok["id"]]["used_at"] == "2026-11-28T12:00:00Z"


def test_a_refused_role_does_not_use_up_a_single_use_token(env: Env) -> None:
    _, tok = _create(env, role="scheduler", single_use=True)
    denied = env.client.get("/v1/audit", headers=_bearer(tok["token"]))
    assert (denied.status_code, denied.json["error"]["code"]) == (403, "forbidden")
    assert env.client.get("/v1/nodes", headers=_bearer(tok["token"])).status_code == 200


def test_tokens_are_listed_without_their_secrets(env: Env) -> None:
    _, made = _create(env, role="enroll", description="rack 7", labels={"pool": "web"}, ttl=600)
    resp = env.client.get("/v1/tokens", headers=env.h("admin"))
    assert resp.status_code == 200
    [row] = [t for t in resp.json["tokens"] if t["id"] == made["id"]]
    assert row == {
        "id": made["id"],
        "role": "enroll",
        "description": "rack 7",
        "single_use": False,
        "labels": {"pool": "web"},
        "created_at": "2026-11-28T12:00:00Z",
        "expires_at": "2026-11-28T12:10:00Z",
        "used_at": None,
        "revoked_at": None,
    }
    assert made["token"] not in resp.get_data(as_text=True)
    assert len(resp.json["tokens"]) == 5  # the fixture's four and this one


def test_a_revoked_token_is_refused_and_the_revocation_audited(env: Env) -> None:
    _, made = _create(env, role="scheduler")
    assert env.client.get("/v1/nodes", headers=_bearer(made["token"])).status_code == 200
    path = f"/v1/tokens/{made['id']}/revoke"
    no_reason = env.client.post(path, headers=env.h("admin"), json={})
    assert (no_reason.status_code, no_reason.json["error"]["code"]) == (400, "reason_required")
    resp = env.client.post(path, headers=env.h("admin"), json={"reason": "laptop lost"})
    assert resp.status_code == 200 and resp.json["revoked_at"] == "2026-11-28T12:00:00Z"
    used = env.client.get("/v1/nodes", headers=_bearer(made["token"]))
    assert (used.status_code, used.json["error"]["code"]) == (401, "invalid_token")
    again = env.client.post(path, headers=env.h("admin"), json={"reason": "x"})
    assert (again.status_code, again.json["error"]["code"]) == (409, "token_revoked")
    ghost = env.client.post("/v1/tokens/nope/revoke", headers=env.h("admin"), json={"reason": "x"})
    assert (ghost.status_code, ghost.json["error"]["code"]) == (404, "token_unknown")
    audit = env.client.get(f"/v1/audit?target=token:{made['id']}", headers=env.h("admin")).json
    assert next((a["action"], a["reason"]) for a in audit["audit"]) == (
        "token_revoke",
        "laptop lost",
    )


def test_a_lifetime_over_the_maximum_is_refused_and_none_means_the_maximum(env: Env) -> None:
    status, body = _create(env, role="reviewer", ttl=MAX + 1)
    assert (status, body["error"]["code"]) == (400, "ttl_too_long")  # type: ignore[index]
    status, body = _create(env, role="reviewer")
    assert status == 201
    assert body["expires_at"] == (T0 + dt.timedelta(seconds=MAX)).isoformat().replace("+00:00", "Z")


def test_a_stored_token_without_expiry_stops_at_the_maximum_lifetime(env: Env) -> None:
    with env.store.write() as db:  # as tokens were stored before the limit existed
        secret, _ = repo.create_token(db, "scheduler", expires_at=None, now=T0)
    env.clock[0] = T0 + dt.timedelta(seconds=MAX - 1)
    assert env.client.get("/v1/nodes", headers=_bearer(secret)).status_code == 200
    env.clock[0] = T0 + dt.timedelta(seconds=MAX)
    late = env.client.get("/v1/nodes", headers=_bearer(secret))
    assert (late.status_code, late.json["error"]["code"]) == (401, "token_expired")


def test_only_enroll_tokens_carry_labels(env: Env) -> None:
    status, body = _create(env, role="scheduler", labels={"pool": "web"})
    assert (status, body["error"]["code"]) == (400, "bad_field")  # type: ignore[index]


ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")


def test_the_api_and_the_cli_show_token_times_in_one_format(
    env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One creation path (``tokens.create``) and one time format (ISO 8601 UTC, ``Z``)."""
    _, made = _create(env, role="reviewer", ttl=600)
    db = ["--database", str(tmp_path / "cli.db")]
    assert main(["db", "upgrade", *db]) == 0
    capsys.readouterr()
    assert main(["token", "create", "--role", "reviewer", "--ttl", "600", *db, "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert set(cli) == set(made)
    for out in (made, cli):
        assert ISO_Z.fullmatch(str(out["created_at"])) and ISO_Z.fullmatch(str(out["expires_at"]))
        created = dt.datetime.fromisoformat(str(out["created_at"]))
        expires = dt.datetime.fromisoformat(str(out["expires_at"]))
        assert expires - created == dt.timedelta(seconds=600)


def test_a_lifetime_that_is_not_positive_is_refused_by_the_cli_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--database", str(tmp_path / "cli.db")]
    assert main(["db", "upgrade", *db]) == 0
    capsys.readouterr()
    assert main(["token", "create", "--role", "admin", "--ttl", "-5", *db]) == 1
    assert "ttl must be a positive number of seconds" in capsys.readouterr().err
