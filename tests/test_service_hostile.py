"""Hostile input from unauthenticated or careless callers: every malformed body is a 4xx with a
stable code and nothing stored; no CPU burnt on CBOR tags or bignums; confusable node names
refused; the evidence poster learns the verdict's status and reason codes only.

Each case here was a 500, a 30 s stall or a leak before the hardening of issue 10 section 5.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest

from assay.cbor import CborError, loads_strict
from tests.test_service_api import GOOD_B64, T0, Env, bundle_doc, make_env
from verifier.service import ServiceConfig
from verifier.store import repo


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = make_env(str(tmp_path / "v.db"))
    try:
        yield e
    finally:
        e.store.close()


def _code(resp: Any) -> tuple[int, str]:
    return resp.status_code, resp.json["error"]["code"]


# --- CBOR: strict profile ---------------------------------------------------------------------


BIGNUM = cbor2.CBORTag(2, b"\xff" * 200_000)  # a 480,000-digit integer
CBOR_HOSTILE: list[tuple[str, bytes]] = [
    ("bignum version", cbor2.dumps(bundle_doc(v=BIGNUM))),
    ("bignum pcr index", cbor2.dumps(bundle_doc(pcrs={"sha256": {BIGNUM: bytes(32)}}))),
    ("negative bignum", cbor2.dumps(bundle_doc(v=cbor2.CBORTag(3, b"\xff" * 1000)))),
    ("regex tag 35", cbor2.dumps(bundle_doc(node=cbor2.CBORTag(35, "(a+)+$")))),
    ("mime tag 36", cbor2.dumps(bundle_doc(node=cbor2.CBORTag(36, "A: b\n\n" + "x" * 100_000)))),
    ("date tag 1", cbor2.dumps(bundle_doc(v=cbor2.CBORTag(1, 10**30)))),
    ("self-describe tag", b"\xd9\xd9\xf7" + cbor2.dumps(bundle_doc())),
    ("trailing bytes", cbor2.dumps(bundle_doc()) + b"\x00"),
    ("two items", cbor2.dumps(bundle_doc()) + cbor2.dumps(bundle_doc())),
    ("float version", cbor2.dumps(bundle_doc(v=1.0))),
    ("NaN pcr index", cbor2.dumps(bundle_doc(pcrs={"sha256": {float("nan"): bytes(32)}}))),
    ("huge array length", b"\xa1\x61v\x9b" + b"\xff" * 8),
    ("huge bytes length", b"\xa1\x61v\x5b" + b"\x7f" * 8),
    ("indefinite map", b"\xbf\x61v\x01\xff"),
    ("duplicate key", b"\xa2\x61v\x01\x61v\x01"),
    ("bytes map key", b"\xa1\x41v\x01"),
    ("undefined", cbor2.dumps(bundle_doc(v=cbor2.undefined))),
    ("deep arrays", b"\x81" * 50 + b"\x00"),
    ("bad utf-8 text", b"\xa1\x62\xff\xfe\x01"),
    ("text version", cbor2.dumps(bundle_doc(v="1" * 5000))),
]


@pytest.mark.parametrize(("case", "body"), CBOR_HOSTILE, ids=[c[0] for c in CBOR_HOSTILE])
def test_hostile_cbor_is_a_quick_400_with_a_short_message(env: Env, case: str, body: bytes) -> None:
    before = env.counts()
    started = time.perf_counter()
    resp = env.client.post(
        "/v1/nodes/n1/evidence", data=body, headers={"Content-Type": "application/cbor"}
    )
    elapsed = time.perf_counter() - started
    assert _code(resp) == (400, "malformed_evidence"), resp.json
    assert len(resp.json["error"]["message"]) < 300
    assert "\n" not in resp.json["error"]["message"]
    assert elapsed < 0.5, f"{case}: {elapsed:.2f} s"
    assert env.counts() == before


def test_strict_cbor_decodes_the_bundle_profile_exactly_like_cbor2() -> None:
    doc = bundle_doc(ima_log=None, extra=[True, False, None, -5, 2**63, 1.5, -(2**64)])
    assert loads_strict(cbor2.dumps(doc)) == cbor2.loads(cbor2.dumps(doc))


@pytest.mark.parametrize("data", [b"", b"\x1c", b"\xf9\x00", b"\xf8\x20", b"\x5f\xff"])
def test_strict_cbor_refuses_reserved_and_indefinite_heads(data: bytes) -> None:
    with pytest.raises(CborError):
        loads_strict(data)


# --- JSON and text ------------------------------------------------------------------------------

JSON_HOSTILE: list[tuple[str, str, bytes, int, str]] = [
    ("deep arrays", "/v1/tokens", b"[" * 100_000 + b"]" * 100_000, 400, "malformed_json"),
    ("deep objects", "/v1/tokens", b'{"a":' * 5000 + b"1" + b"}" * 5000, 400, "malformed_json"),
    ("moderately deep", "/v1/tokens", b'{"role": ' + b"[" * 40 + b"]" * 40 + b"}", 400, "malformed_json"),
    ("NaN ttl", "/v1/tokens", b'{"role": "scheduler", "ttl": NaN}', 400, "malformed_json"),
    ("Infinity ttl", "/v1/tokens", b'{"role": "scheduler", "ttl": Infinity}', 400, "malformed_json"),
    ("-Infinity ttl", "/v1/tokens", b'{"role": "scheduler", "ttl": -Infinity}', 400, "malformed_json"),
    ("1e400 ttl", "/v1/tokens", b'{"role": "scheduler", "ttl": 1e400}', 400, "malformed_json"),
    ("1e308 ttl", "/v1/tokens", b'{"role": "scheduler", "ttl": 1e308}', 400, "bad_field"),
    ("huge int ttl", "/v1/tokens", b'{"role": "scheduler", "ttl": ' + b"9" * 4000 + b"}", 400, "malformed_json"),
    ("surrogate description", "/v1/tokens", b'{"role": "scheduler", "description": "\\ud800"}', 400, "bad_field"),
    ("control description", "/v1/tokens", b'{"role": "scheduler", "description": "a\\u0000b"}', 400, "bad_field"),
    ("number description", "/v1/tokens", b'{"role": "scheduler", "description": 5}', 400, "bad_field"),
    ("surrogate reason", "/v1/nodes/n1/quarantine", b'{"reason": "x\\udfff"}', 400, "bad_field"),
    ("nul reason", "/v1/nodes/n1/quarantine", b'{"reason": "x\\u0000"}', 400, "bad_field"),
    ("escape reason", "/v1/nodes/n1/quarantine", b'{"reason": "x\\u001b[2J"}', 400, "bad_field"),
    ("bidi reason", "/v1/admin/reappraise", b'{"reason": "ok \\u202e"}', 400, "bad_field"),
    ("surrogate golden", "/v1/golden/assignments", b'{"golden": "\\ud800", "selector": {}}', 400, "bad_field"),
    ("surrogate selector", "/v1/golden/assignments", b'{"golden": "g", "selector": {"\\ud800": "a"}}', 400, "bad_field"),
    ("control selector", "/v1/golden/assignments", b'{"golden": "g", "selector": {"pool": "a\\u0007"}}', 400, "bad_field"),
    ("bad utf-8", "/v1/tokens", b'{"role": "\xff\xfe"}', 400, "malformed_json"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "path", "body", "status", "code"), JSON_HOSTILE, ids=[c[0] for c in JSON_HOSTILE]
)
def test_hostile_json_is_a_4xx_with_a_stable_code(
    env: Env, case: str, path: str, body: bytes, status: int, code: str
) -> None:
    before = env.counts()
    resp = env.client.post(
        path, data=body, headers={**env.h("admin"), "Content-Type": "application/json"}
    )
    assert _code(resp) == (status, code), resp.json
    assert env.counts() == before
    with env.store.read() as db:
        assert repo.list_audit(db) == []


def _enroll_body(node: Any, **over: Any) -> dict[str, Any]:
    return {"node": node, "ek_public": GOOD_B64, "ak_public": GOOD_B64, **over}


ENROLL_HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    ("cyrillic a", _enroll_body("nоde-1"), "bad_field"),  # U+043E
    ("fullwidth", _enroll_body("ｎｏｄｅ1"), "bad_field"),
    ("zero-width joiner", _enroll_body("node\u200d1"), "bad_field"),
    ("upper case", _enroll_body("Node1"), "bad_field"),
    ("trailing dot", _enroll_body("node1."), "bad_field"),
    ("space", _enroll_body("node 1"), "bad_field"),
    ("surrogate", _enroll_body("node\ud800"), "bad_field"),
    ("surrogate label", _enroll_body("n2", labels={"pool": "\ud800"}), "bad_field"),
    ("control label key", _enroll_body("n2", labels={"po\nol": "a"}), "bad_field"),
]


@pytest.mark.parametrize(
    ("case", "body", "code"), ENROLL_HOSTILE, ids=[c[0] for c in ENROLL_HOSTILE]
)
def test_confusable_or_control_names_are_refused_at_enrollment(
    env: Env, case: str, body: dict[str, Any], code: str
) -> None:
    before = env.counts()
    resp = env.client.post("/v1/enrollments", json=body, headers=env.h("enroll"))
    assert _code(resp) == (400, code), resp.json
    assert env.counts() == before


@pytest.mark.parametrize("name", ["node-1", "web.rack-2.example", "a", "x_1", "9" * 253])
def test_plain_node_names_pass_the_name_rule(env: Env, name: str) -> None:
    resp = env.client.post("/v1/enrollments", json=_enroll_body(name), headers=env.h("enroll"))
    assert _code(resp) == (400, "malformed_evidence")  # refused later, at the (garbage) EK


@pytest.mark.parametrize(
    "path", ["/v1/nodes/n%001/challenge", "/v1/nodes/%1b[2J", "/v1/enrollments/a%00/activation"]
)
def test_control_characters_in_the_path_are_a_404(env: Env, path: str) -> None:
    method = "GET" if path.count("/") == 3 else "POST"
    resp = env.client.open(path, method=method, headers=env.h("admin"), json={"secret": GOOD_B64})
    assert _code(resp) == (404, "not_found")


@pytest.mark.parametrize("query", ["?label=pool=%00", "?label=po%1bol=a"])
def test_control_characters_in_a_label_query_are_a_400(env: Env, query: str) -> None:
    resp = env.client.get(f"/v1/nodes{query}", headers=env.h("admin"))
    assert _code(resp) == (400, "bad_query")


def test_audit_target_with_control_characters_is_a_400(env: Env) -> None:
    resp = env.client.get("/v1/audit?target=a%00b", headers=env.h("admin"))
    assert _code(resp) == (400, "bad_query")


# --- YAML golden sets -----------------------------------------------------------------------------

YAML_HOSTILE: list[tuple[str, bytes]] = [
    ("bad utf-8", b"name: \xff\xfe\nversion: '1'\n"),
    ("deep flow nesting", b"name: [" + b"[" * 5000 + b"]" * 5000 + b"]\n"),
    ("deep block nesting", b"".join(b" " * i + b"a:\n" for i in range(1500))),
    ("nul byte", b"name: a\x00b\n"),
    ("lone surrogate escape", b'name: "\\ud800"\nversion: "1"\n'),
]


@pytest.mark.parametrize(("case", "body"), YAML_HOSTILE, ids=[c[0] for c in YAML_HOSTILE])
def test_hostile_yaml_golden_is_a_400(env: Env, case: str, body: bytes) -> None:
    resp = env.client.post(
        "/v1/golden", data=body, headers={**env.h("admin"), "Content-Type": "application/yaml"}
    )
    assert _code(resp) == (400, "malformed_evidence"), resp.json
    with env.store.read() as db:
        assert repo.list_golden(db) == []


def test_token_ttl_at_the_limit_still_works(env: Env) -> None:
    limit = ServiceConfig().max_token_lifetime  # 30 days by default (node-identity)
    resp = env.client.post(
        "/v1/tokens", headers=env.h("admin"), json={"role": "scheduler", "ttl": limit}
    )
    assert resp.status_code == 201
    expires = dt.datetime.fromisoformat(resp.json["expires_at"])
    assert expires == T0 + dt.timedelta(seconds=limit)
