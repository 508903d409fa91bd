"""The evidence POST in front of Flask (``verifier.service._evidence_wsgi``) answers as the Flask
route does: the same status, headers and body for good and hostile requests, the same metrics and
event log, and every request it does not take exactly as before (Flask's own answer)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import EnvironBuilder, run_wsgi_app

from tests.test_fleet_protocol import CBOR, Fleet, _agent, _first, make_fleet
from verifier.service._evidence_wsgi import EvidenceRoute, node_of


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return make_fleet(str(tmp_path / "v.db"))


def _route(f: Fleet) -> EvidenceRoute:
    route = f.client.application.wsgi_app
    assert isinstance(route, EvidenceRoute)
    return route


def _both(f: Fleet, **request: Any) -> tuple[tuple[str, dict[str, str], bytes], ...]:
    """(status, headers, body) of one request through the fast path and through Flask."""
    route = _route(f)
    out = []
    for app in (route, route.flask_app):
        environ = EnvironBuilder(**request).get_environ()
        body, status, headers = run_wsgi_app(app, environ)
        out.append((status, dict(headers), b"".join(body)))
    return tuple(out)


def _evidence(f: Fleet, node: str = "n1", **kw: Any) -> dict[str, Any]:
    return {"method": "POST", "path": f"/v1/nodes/{node}/evidence", **kw}


HOSTILE_NODES = [
    "nobody", "é", "a" * 253, "a" * 254, "x\x00y", "\u202eevil", "tab\there", "%2e%2e",
    "n1;drop table nodes", "n1 ", "\ud800".encode("utf-8", "surrogatepass").decode("latin-1"),
]  # fmt: skip


@pytest.mark.parametrize("node", HOSTILE_NODES)
def test_refusals_are_flasks_to_the_byte(fleet: Fleet, node: str) -> None:
    agent = _agent(fleet)
    body = agent.evidence(b"\x01" * 32, send_log=True)
    fast, flask = _both(
        fleet, **_evidence(fleet, node, data=body, content_type=CBOR["Content-Type"])
    )
    assert fast == flask
    assert fast[0].split()[0] in ("400", "404", "422"), fast


@pytest.mark.parametrize(
    "request_kw",
    [
        {"data": b"\xa0", "content_type": "application/json"},  # wrong media type: 415
        {"data": b"", "content_type": "application/cbor"},  # empty
        {"data": b"\xff\xfe garbage", "content_type": "application/cbor; charset=x"},
        {"data": b"\x00" * 10, "content_type": "APPLICATION/CBOR"},
        {"data": b"x" * 10, "headers": {"Content-Length": str(10**9)}, "content_type": "application/cbor"},
        {"data": b"x", "content_type": None},
    ],
)  # fmt: skip
def test_bad_bodies_are_refused_as_flask_refuses_them(
    fleet: Fleet, request_kw: dict[str, Any]
) -> None:
    _agent(fleet)
    fast, flask = _both(fleet, **_evidence(fleet, **request_kw))
    assert fast == flask
    assert int(fast[0].split()[0]) in (400, 413, 415), fast


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nodes/n1/evidence"),
        ("PUT", "/v1/nodes/n1/evidence"),
        ("POST", "/v1/nodes//evidence"),
        ("POST", "/v1/nodes/a/b/evidence"),
        ("POST", "/v1/nodes/n1/evidence/"),
        ("POST", "/v1//nodes/n1/evidence"),
        ("POST", "//v1/nodes/n1/evidence"),
        ("POST", "/v1/nodes/n1/evidencex"),
        ("POST", "/v1/nodes/n1/challenge"),
    ],
)
def test_other_requests_are_flasks_own(fleet: Fleet, method: str, path: str) -> None:
    environ = EnvironBuilder(method=method, path=path, data=b"{}").get_environ()
    assert node_of(environ) is None
    fast, flask = _both(fleet, method=method, path=path, data=b"{}")
    assert fast == flask


def test_the_path_node_is_decoded_as_werkzeug_decodes_it() -> None:
    for node in ("n1", "é", "日本", "x y", "%41"):
        environ = EnvironBuilder(method="POST", path=f"/v1/nodes/{node}/evidence").get_environ()
        assert node_of(environ) == node.replace("%41", "A")
    slash = EnvironBuilder(method="POST", path="/v1/nodes/a%2fb/evidence").get_environ()
    assert node_of(slash) is None  # a decoded "/" is two segments for Flask's router too
    odd = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/nodes/\u2603/evidence"}
    assert node_of(odd) is None  # not latin-1 (no WSGI server sends it): never raised here


def test_an_attestation_through_each_path_gets_the_same_answer(fleet: Fleet) -> None:
    agent = _agent(fleet)
    first = _first(fleet, agent)  # through the fast path (the test client calls wsgi_app)
    route = _route(fleet)
    answers = []
    nonce = bytes.fromhex(first["next_challenge"]["nonce"])
    for app in (route, route.flask_app, route):
        fleet.clock[0] += dt.timedelta(seconds=60)
        environ = EnvironBuilder(
            **_evidence(fleet, data=agent.evidence(nonce, send_log=False), headers=CBOR)
        ).get_environ()
        body, status, headers = run_wsgi_app(app, environ)
        answer = json.loads(b"".join(body))
        assert status == "200 OK" and headers["Content-Type"] == "application/json", answer
        answers.append(answer)
        nonce = bytes.fromhex(answer["next_challenge"]["nonce"])
    assert [a["repeat"] for a in answers] == [1, 2, 3]
    for a in answers:
        a.pop("repeat")
        a.pop("next_challenge")
    assert answers[0] == answers[1] == answers[2]


def test_a_bug_is_a_500_with_the_stable_code_and_is_logged(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from verifier.service import _evidence_wsgi

    def broken(*args: Any) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr(_evidence_wsgi, "evidence_answer", broken)
    _agent(fleet)
    resp = fleet.client.post("/v1/nodes/n1/evidence", data=b"\xa0", headers=CBOR)
    assert resp.status_code == 500 and resp.json["error"]["code"] == "internal_error"
    assert "a bug" not in resp.get_data(as_text=True)
    assert any("internal error" in r.getMessage() and r.exc_info for r in caplog.records)


SPLICE_BODIES: list[dict[str, Any]] = [
    {"attestation_id": "5", "status": "trusted", "checks": [{"id": "a", "status": "pass"}]},
    {"checks": [], "zz": 1},
    {"a": 1, "ch": 2, "checkr": 3, "checks": [{"reason": 'é\u2028"\\</script>'}], "checks0": 4},
    {"next_challenge": {"nonce": "00", "pcr_selection": {"sha256": [0, 7]}}, "checks": [None]},
    {"reason": "\ud800 lone surrogate", "checks": [{"k": "\x00\x1f"}], "repeat": 2**70},
]


@pytest.mark.parametrize("sort_keys", [False, True], ids=["body_order", "sorted"])
@pytest.mark.parametrize("body", SPLICE_BODIES)
def test_the_answer_with_a_kept_checks_text_is_jsonify_to_the_byte(
    fleet: Fleet, body: dict[str, Any], sort_keys: bool
) -> None:
    import copy

    from verifier.service import _answer_json

    body = copy.deepcopy(body)  # its own checks list: the kept text is injected below
    from verifier.service._answer_json import answer_response

    app = fleet.client.application
    app.json.sort_keys = sort_keys  # type: ignore[attr-defined]
    changed = {**body, "checks": [*body["checks"], {"extra": 1}]}
    with app.app_context():
        want = app.json.response(body).get_data()
        first = answer_response(app, body)
        assert _answer_json._TEXT[id(body["checks"])][0] is body["checks"]  # the splice ran
        _answer_json._TEXT[id(body["checks"])] = (body["checks"], '["kept"]')
        again = answer_response(app, body).get_data()  # the kept text, not a new encoding
        other = answer_response(app, changed).get_data()
        want_other = app.json.response(changed).get_data()
        app.debug = True  # the indented form: the whole body is the provider's
        try:
            debug = answer_response(app, body).get_data()
            want_debug = app.json.response(body).get_data()
        finally:
            app.debug = False
    assert first.get_data() == want and first.mimetype == "application/json"
    assert json.loads(want) == json.loads(json.dumps(body))
    assert json.loads(again)["checks"] == ["kept"] and json.loads(again) == {
        **body,
        "checks": ["kept"],
    }
    assert other == want_other != want
    assert debug == want_debug and b"\n  " in debug
