"""Runtime (IMA) policies in the service, versioned like golden sets: upload, list, show, assign,
activate a draft, retire, revoke with a reason — each audited, each refusal a 4xx with a stable
code, never a 500."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from verifier.store import Store, repo, upgrade
from verifier.store import runtime as rstore

from .test_service_api import Env, make_env

DIGEST = hashlib.sha256(b"content 0").hexdigest()


def policy_yaml(name: str = "fleet-runtime", version: str = "1", status: str = "active") -> str:
    return (
        f'kind: runtime-policy\nname: {name}\nversion: "{version}"\nstatus: {status}\n'
        f"files:\n  /usr/bin/prog0:\n    - sha256: {DIGEST}\n"
        'exclude: ["/var/log/*"]\n'
    )


@pytest.fixture()
def env(tmp_path: Path) -> Env:
    return make_env(str(tmp_path / "v.db"))


def _post_yaml(env: Env, text: str | bytes, query: str = "") -> tuple[int, dict[str, object]]:
    resp = env.client.post(
        "/v1/runtime-policies" + query,
        data=text,
        headers={**env.h("admin"), "Content-Type": "application/yaml"},
    )
    return resp.status_code, resp.json or {}


def test_upload_with_a_selector_list_show_and_audit(env: Env) -> None:
    status, body = _post_yaml(env, policy_yaml(), "?label=pool=a")
    assert status == 201 and body["id"] == "fleet-runtime@1" and body["status"] == "active"
    listing = env.client.get("/v1/runtime-policies", headers=env.h("reviewer")).json
    assert [p["id"] for p in listing["policies"]] == ["fleet-runtime@1"]
    assert listing["assignments"] == [{"policy": "fleet-runtime", "selector": {"pool": "a"}}]
    shown = env.client.get("/v1/runtime-policies/fleet-runtime/1", headers=env.h("reviewer")).json
    assert shown["source"] == policy_yaml()
    with env.store.read() as db:
        actions = [(a.action, a.target) for a in repo.list_audit(db)]
    assert ("runtime_add", "fleet-runtime@1") in actions


def test_two_versions_active_during_a_rollout_then_retire_and_revoke_with_a_reason(
    env: Env,
) -> None:
    _post_yaml(env, policy_yaml(version="1"), "?label=pool=a")
    _post_yaml(env, policy_yaml(version="2"))
    listing = env.client.get("/v1/runtime-policies", headers=env.h("admin")).json
    assert [p["status"] for p in listing["policies"]] == ["active", "active"]
    retired = env.client.post(
        "/v1/runtime-policies/fleet-runtime/1/retire", headers=env.h("admin"), json={}
    )
    assert retired.status_code == 200 and retired.json["status"] == "retired"
    # n1 (pool=a) is selected: it was re-appraised (it has no stored evidence: nothing recorded)
    assert retired.json["reappraised"] == []
    no_reason = env.client.post(
        "/v1/runtime-policies/fleet-runtime/2/revoke", headers=env.h("admin"), json={}
    )
    assert no_reason.status_code == 400 and no_reason.json["error"]["code"] == "reason_required"
    revoked = env.client.post(
        "/v1/runtime-policies/fleet-runtime/2/revoke",
        headers=env.h("admin"),
        json={"reason": "CVE-2026-9: prog0"},
    )
    assert revoked.json["status"] == "revoked" and revoked.json["reason"] == "CVE-2026-9: prog0"
    again = env.client.post(
        "/v1/runtime-policies/fleet-runtime/2/revoke",
        headers=env.h("admin"),
        json={"reason": "twice"},
    )
    assert again.status_code == 409 and again.json["error"]["code"] == "runtime_revoked"
    with env.store.read() as db:
        actions = [a.action for a in repo.list_audit(db)]
    assert "runtime_retire" in actions and "runtime_revoke" in actions


def test_a_draft_is_activated_and_only_a_draft(env: Env) -> None:
    _post_yaml(env, policy_yaml(status="draft"))
    ok = env.client.post(
        "/v1/runtime-policies/fleet-runtime/1/activate", headers=env.h("admin"), json={}
    )
    assert ok.status_code == 200 and ok.json["status"] == "active"
    twice = env.client.post(
        "/v1/runtime-policies/fleet-runtime/1/activate", headers=env.h("admin"), json={}
    )
    assert twice.status_code == 409 and twice.json["error"]["code"] == "runtime_not_draft"


def test_assign_every_version_to_a_selector(env: Env) -> None:
    _post_yaml(env, policy_yaml())
    resp = env.client.post(
        "/v1/runtime-policies/assignments",
        headers=env.h("admin"),
        json={"policy": "fleet-runtime", "selector": {"pool": "a"}},
    )
    assert resp.json == {"policy": "fleet-runtime", "selector": {"pool": "a"}, "added": True}
    with env.store.read() as db:
        assert rstore.names_for({"pool": "a"}, rstore.list_assignments(db)) == {"fleet-runtime"}
        assert rstore.names_for({"pool": "b"}, rstore.list_assignments(db)) == set()


@pytest.mark.parametrize(
    ("body", "code", "status"),
    [
        (b"", "bad_field", 400),
        (b"kind: golden-set\nname: x\nversion: '1'\n", "malformed_evidence", 400),
        (b"\xff\xfe not yaml", "malformed_evidence", 400),
        (b"kind: runtime-policy\nname: x\nversion: '1'\nbogus: 1\n", "malformed_evidence", 400),
        (b"[" * 5000, "malformed_evidence", 400),
        (b"kind: runtime-policy\nname: \"x\\u0007\"\nversion: '1'\n", "malformed_evidence", 400),
        (b"kind: runtime-policy\nname: x\nversion: '1'\nstatus: retired\n", "bad_status", 400),
    ],
)
def test_bad_uploads_are_4xx_with_a_stable_code(
    env: Env, body: bytes, code: str, status: int
) -> None:
    got, answer = _post_yaml(env, body)
    assert (got, answer["error"]["code"]) == (status, code)  # type: ignore[index]
    with env.store.read() as db:
        assert rstore.list_policies(db) == []


def test_a_duplicate_version_unknown_names_and_hostile_paths_are_refused(env: Env) -> None:
    assert _post_yaml(env, policy_yaml())[0] == 201
    status, body = _post_yaml(env, policy_yaml())
    assert status == 409 and body["error"]["code"] == "runtime_exists"  # type: ignore[index]
    for path in (
        "/v1/runtime-policies/nope/1/retire",
        "/v1/runtime-policies/fleet-runtime/9/revoke",
    ):
        resp = env.client.post(path, headers=env.h("admin"), json={"reason": "x"})
        assert resp.status_code == 404 and resp.json["error"]["code"] == "runtime_unknown"
    resp = env.client.post(
        "/v1/runtime-policies/assignments", headers=env.h("admin"), json={"policy": "nope"}
    )
    assert resp.status_code == 404 and resp.json["error"]["code"] == "runtime_unknown"
    bad_label = env.client.post(
        "/v1/runtime-policies?label=novalue",
        data=policy_yaml(version="3"),
        headers={**env.h("admin"), "Content-Type": "application/yaml"},
    )
    assert bad_label.status_code == 400
    bad_path = env.client.get("/v1/runtime-policies/%00/1", headers=env.h("admin"))
    assert 400 <= bad_path.status_code < 500


def test_the_cli_adds_lists_and_revokes(tmp_path: Path) -> None:
    db = str(tmp_path / "cli.db")
    path = tmp_path / "p.yaml"
    path.write_text(policy_yaml())

    def cli(*args: str) -> dict[str, object]:
        out = subprocess.run(
            [sys.executable, "-m", "verifier", "runtime", *args, "--database", db, "--json"],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        data: dict[str, object] = json.loads(out.stdout)
        return data

    upgrade(Store(db))
    assert cli("add", str(path), "--selector", "pool=a")["id"] == "fleet-runtime@1"
    listing = cli("list")
    assert listing["assignments"] == [{"policy": "fleet-runtime", "selector": {"pool": "a"}}]
    revoked = cli("revoke", "fleet-runtime", "1", "--reason", "CVE")
    assert revoked["status"] == "revoked" and revoked["reason"] == "CVE"
