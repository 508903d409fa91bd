"""Ids and numbers in paths and queries are ASCII digits: a Unicode digit ("³", which str.isdigit
accepts and int refuses) is a 404 or a 400, never a 500 (found by the API fuzzing)."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask.testing import FlaskClient

from verifier.service import ServiceConfig, create_app
from verifier.store import Store, repo, upgrade

Client = tuple[FlaskClient, dict[str, str]]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Client:
    db = str(Path(tmp_path_factory.mktemp("digits")) / "v.db")
    store = Store(db)
    upgrade(store)
    with store.write() as s:
        secret, _ = repo.create_token(s, "admin", expires_at=None)
    app = create_app(ServiceConfig(database=db), store=store)
    return app.test_client(), {"Authorization": f"Bearer {secret}"}


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/attestations/%C2%B3", 404),
        ("/v1/attestations/%C2%B3/evidence", 404),
        ("/v1/attestations/%C2%B3/promotable", 404),
        ("/v1/drafts/%C2%B9", 404),
        ("/v1/incidents/%C2%B9", 404),
        ("/v1/nodes/n1/attestations?limit=%C2%B3", 400),
        ("/v1/audit?limit=%C2%B2", 400),
    ],
)
def test_a_unicode_digit_is_refused_not_a_server_error(
    client: Client, path: str, status: int
) -> None:
    http, auth = client
    resp = http.get(path, headers=auth)
    assert resp.status_code == status, resp.json
    assert set(resp.json) == {"error"} and resp.json["error"]["code"]


def test_replacing_labels_needs_the_labels_field(client: Client) -> None:
    http, auth = client
    resp = http.post("/v1/nodes/n1/labels", headers=auth, json={"reason": "forgot them"})
    assert resp.status_code == 400 and resp.json["error"]["code"] == "bad_field"
