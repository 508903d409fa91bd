"""The console's sessions, CSRF and headers, in-process (Flask test client, SQLite, a set clock):
what the browser tests cannot wait for (idle and absolute expiry) and every refusal's page."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from verifier.service import ServiceConfig, create_app
from verifier.store import Store, repo, upgrade

T0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
IDLE, LIFETIME = 600.0, 3600.0


@dataclass
class Env:
    client: FlaskClient
    store: Store
    clock: list[dt.datetime]
    tokens: dict[str, str]

    def advance(self, seconds: float) -> None:
        self.clock[0] += dt.timedelta(seconds=seconds)

    def csrf(self, path: str = "/ui/signin") -> str:
        m = re.search(r'name="csrf_token" value="([^"]+)"', self.client.get(path).text)
        assert m, path
        return m.group(1)

    def sign_in(self, role: str) -> FlaskClient:
        resp = self.client.post(
            "/ui/signin", data={"token": self.tokens[role], "csrf_token": self.csrf()}
        )
        assert resp.status_code == 303, resp.text
        return self.client


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    db = str(tmp_path / "v.db")
    store = Store(db)
    upgrade(store)
    tokens = {}
    with store.write() as s:
        for role in ("admin", "reviewer", "scheduler", "enroll"):
            tokens[role], _ = repo.create_token(s, role, expires_at=None, now=T0)
        tokens["short"], _ = repo.create_token(
            s, "reviewer", expires_at=T0 + dt.timedelta(seconds=120), now=T0
        )
    clock = [T0]
    config = ServiceConfig(
        database=db, console_idle_timeout=IDLE, console_session_lifetime=LIFETIME
    )
    app = create_app(config, store=store, clock=lambda: clock[0])
    try:
        yield Env(app.test_client(), store, clock, tokens)
    finally:
        store.close()


def test_sign_in_sets_a_strict_httponly_cookie_and_keeps_no_token(env: Env) -> None:
    resp = env.client.post(
        "/ui/signin", data={"token": env.tokens["reviewer"], "csrf_token": env.csrf()}
    )
    cookie = next(c for c in resp.headers.getlist("Set-Cookie") if c.startswith("assay_console="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain HTTP here; set when the request came over TLS
    assert env.tokens["reviewer"] not in cookie
    assert env.client.get("/ui/").status_code == 200


def test_the_cookie_is_secure_over_tls(env: Env) -> None:
    csrf = env.csrf()
    resp = env.client.post(
        "/ui/signin",
        data={"token": env.tokens["reviewer"], "csrf_token": csrf},
        base_url="https://localhost",
    )
    cookie = next(c for c in resp.headers.getlist("Set-Cookie") if c.startswith("assay_console="))
    assert "Secure" in cookie


@pytest.mark.parametrize("role", ["scheduler", "enroll"])
def test_other_roles_are_refused_with_a_clear_page(env: Env, role: str) -> None:
    resp = env.client.post("/ui/signin", data={"token": env.tokens[role], "csrf_token": env.csrf()})
    assert resp.status_code == 403 and resp.mimetype == "text/html"
    assert "role_not_allowed" in resp.text and "reviewer or admin" in resp.text
    assert not any(c.startswith("assay_console=") for c in resp.headers.getlist("Set-Cookie"))


def test_an_unknown_token_is_a_401_page(env: Env) -> None:
    resp = env.client.post("/ui/signin", data={"token": "assay_x_y", "csrf_token": env.csrf()})
    assert resp.status_code == 401 and "invalid_token" in resp.text


def test_sign_in_without_its_csrf_token_is_refused(env: Env) -> None:
    resp = env.client.post("/ui/signin", data={"token": env.tokens["reviewer"]})
    assert resp.status_code == 403 and "csrf_failed" in resp.text


def test_every_post_needs_the_sessions_csrf_token(env: Env) -> None:
    env.sign_in("admin")
    for data in ({"reason": "x"}, {"reason": "x", "csrf_token": "wrong"}):
        resp = env.client.post("/ui/nodes/n1/quarantine", data=data)
        assert resp.status_code == 403 and "csrf_failed" in resp.text
    resp = env.client.post("/ui/signout", data={})
    assert resp.status_code == 403
    assert env.client.get("/ui/").status_code == 200  # still signed in


def test_an_idle_session_expires(env: Env) -> None:
    env.sign_in("reviewer")
    env.advance(IDLE - 60)
    assert env.client.get("/ui/").status_code == 200  # a request keeps it alive
    env.advance(IDLE - 1)
    assert env.client.get("/ui/").status_code == 200
    env.advance(IDLE + 1)
    resp = env.client.get("/ui/nodes")
    assert resp.status_code == 303 and "why=session_idle" in resp.headers["Location"]
    assert "next=/ui/nodes" in resp.headers["Location"]


def test_a_session_ends_at_its_absolute_lifetime_however_busy(env: Env) -> None:
    env.sign_in("reviewer")
    for _ in range(int(LIFETIME // 300)):
        env.advance(300)
        resp = env.client.get("/ui/")
    assert resp.status_code == 303 and "why=session_expired" in resp.headers["Location"]


def test_a_session_ends_with_its_token(env: Env) -> None:
    env.sign_in("short")
    assert env.client.get("/ui/").status_code == 200
    env.advance(121)  # the token expired; the session's own limits are far away
    assert env.client.get("/ui/").status_code == 303


def test_revoking_the_token_ends_its_sessions(env: Env) -> None:
    env.sign_in("reviewer")
    token_id = env.tokens["reviewer"].split("_")[1]
    admin = {"Authorization": f"Bearer {env.tokens['admin']}"}
    resp = env.client.post(f"/v1/tokens/{token_id}/revoke", json={"reason": "left"}, headers=admin)
    assert resp.status_code == 200
    assert env.client.get("/ui/").status_code == 303


def test_sign_out_ends_the_session_on_the_server(env: Env) -> None:
    env.sign_in("reviewer")
    cookie = env.client.get_cookie("assay_console", path="/ui")
    assert cookie is not None
    resp = env.client.post("/ui/signout", data={"csrf_token": env.csrf("/ui/")})
    assert resp.status_code == 303
    env.client.set_cookie("assay_console", cookie.value, path="/ui")  # a stolen copy
    assert env.client.get("/ui/").status_code == 303
    with env.store.read() as db:
        actions = [e.action for e in repo.list_audit(db)]
    assert "console_sign_out" in actions and "console_sign_in" in actions


def test_sign_in_redirects_only_inside_the_console(env: Env) -> None:
    for target in ("https://evil.example/", "//evil.example/ui/", "/v1/tokens"):
        env.client.delete_cookie("assay_console", path="/ui")
        resp = env.client.post(
            "/ui/signin",
            data={"token": env.tokens["reviewer"], "csrf_token": env.csrf(), "next": target},
        )
        assert resp.headers["Location"] == "/ui/"


@pytest.mark.parametrize(
    "path", ["/ui/signin", "/ui/", "/ui/nodes", "/ui/audit", "/ui/nope", "/ui/nodes/unknown"]
)
def test_every_console_response_has_the_strict_headers(env: Env, path: str) -> None:
    env.sign_in("reviewer")
    resp = env.client.get(path)
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


def test_pages_carry_no_inline_script_or_style(env: Env) -> None:
    env.sign_in("admin")
    for path in ("/ui/", "/ui/nodes", "/ui/incidents", "/ui/golden", "/ui/drafts", "/ui/audit"):
        html = env.client.get(path).text
        assert "style=" not in html and "onclick" not in html, path
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == [], path


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/ui/nodes/unknown", 404, "node_unknown"),
        ("/ui/attestations/99", 404, "attestation_unknown"),
        ("/ui/attestations/abc", 404, "attestation_unknown"),
        ("/ui/incidents/7", 404, "incident_unknown"),
        ("/ui/drafts/7", 404, "draft_unknown"),
        ("/ui/nodes?state=bogus", 400, "bad_query"),
        ("/ui/nodes?page=0", 400, "bad_query"),
        ("/ui/nodes?sort=ek", 400, "bad_query"),
        ("/ui/incidents?state=closed", 400, "bad_field"),
        ("/ui/golden/none/1", 404, "golden_unknown"),
        ("/ui/no/such/page", 404, "not_found"),
    ],
)
def test_every_refusal_is_a_page_with_its_code(env: Env, path: str, status: int, code: str) -> None:
    env.sign_in("reviewer")
    resp = env.client.get(path)
    assert resp.status_code == status and resp.mimetype == "text/html"
    assert code in resp.text


def test_a_reviewer_may_not_take_admin_actions(env: Env) -> None:
    env.sign_in("reviewer")
    resp = env.client.post(
        "/ui/nodes/n1/quarantine", data={"reason": "x", "csrf_token": env.csrf("/ui/")}
    )
    assert resp.status_code == 403 and "admin_required" in resp.text


def test_an_action_without_a_reason_is_refused(env: Env) -> None:
    env.sign_in("admin")
    resp = env.client.post("/ui/nodes/n1/quarantine", data={"csrf_token": env.csrf("/ui/")})
    assert resp.status_code == 400 and "reason_required" in resp.text
