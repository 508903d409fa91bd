"""Signed attestation results (EAR): issue through the API, verify offline; every forgery,
replay and stale standing is refused or never affirming."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import os
import stat
import threading
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey

from assay.ak_proof import ear_request_digest
from assay.errors import ConfigurationError, MalformedEvidence, VerificationFailed
from testkit.quotes import SoftwareAk
from tests.postgres import postgres_server, postgres_url  # noqa: F401
from tests.test_service_api import T0, Env, add_node, make_env
from verifier._cli import main
from verifier.ear import EarStatus, verify_ear
from verifier.ear.token import load_jwks
from verifier.service import ear_keys
from verifier.store.models import Node

WINDOW = 180  # attest interval 60 s × freshness factor 3


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = make_env(str(tmp_path / "v.db"))
    add_node(e.store, "good", state="trusted", success=T0 - dt.timedelta(seconds=30))
    add_node(e.store, "silent", state="trusted", success=T0 - dt.timedelta(seconds=WINDOW + 1))
    add_node(e.store, "bad", state="untrusted")
    with e.store.write() as db:
        node = db.query(Node).filter_by(name="bad").one()
        node.reason = "cmdline_not_approved: PCR8 event 45: nokaslr is not approved"
    try:
        yield e
    finally:
        e.store.close()


def ear_of(env: Env, node: str, query: str = "", role: str = "scheduler") -> str:
    resp = env.client.get(f"/v1/nodes/{node}/ear{query}", headers=env.h(role))
    assert resp.status_code == 200, resp.json
    assert resp.mimetype == "application/eat+jwt"
    return resp.get_data(as_text=True)


def jwks_of(env: Env) -> Any:
    resp = env.client.get("/v1/keys")
    assert resp.status_code == 200
    return load_jwks(resp.json)


def now(env: Env) -> int:
    return int(env.clock[0].timestamp())


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_a_trusted_fresh_node_gets_an_affirming_ear_that_expires_with_its_window(env: Env) -> None:
    result = verify_ear(ear_of(env, "good"), jwks_of(env), now=now(env), node="good")
    c = result.claims
    assert result.affirming and c.status == EarStatus.AFFIRMING
    assert c.exp == int((T0 - dt.timedelta(seconds=30)).timestamp()) + WINDOW
    assert c.iat == now(env)
    boot = c.submods["boot"]
    assert boot.vector.to_json() == {
        "instance-identity": 2,
        "configuration": 2,
        "executables": 3,
        "hardware": 2,
    }


def test_the_claim_set_uses_the_draft_04_names(env: Env) -> None:
    payload = jwt.decode(ear_of(env, "good"), jwks_of(env)).claims
    assert payload["eat_profile"] == "tag:ietf.org,2026:rats/ear#04"
    assert set(payload["ear_verifier_id"]) == {"build", "developer"}
    assert payload["submods"]["boot"]["ear_status"] == "affirming"
    assert payload["sub"] == "good"
    assert not any(k.startswith("ear.") for k in payload)


@pytest.mark.parametrize(
    ("node", "status", "state"),
    [
        ("silent", EarStatus.NONE, "stale"),
        ("bad", EarStatus.CONTRAINDICATED, "untrusted"),
        ("n1", EarStatus.NONE, "enrolled"),
    ],
)
def test_a_stale_untrusted_or_unattested_node_is_never_affirming(
    env: Env, node: str, status: EarStatus, state: str
) -> None:
    result = verify_ear(ear_of(env, node), jwks_of(env), now=now(env))
    assert (result.affirming, result.claims.status, result.claims.state) == (False, status, state)


def test_an_untrusted_ear_carries_the_reason_code_but_no_approved_values(env: Env) -> None:
    token = ear_of(env, "bad")
    c = verify_ear(token, jwks_of(env), now=now(env)).claims
    assert c.reason == "cmdline_not_approved"
    assert c.submods["boot"].vector.configuration == 96
    assert "nokaslr" not in base64.urlsafe_b64decode(token.split(".")[1] + "==").decode()


def test_a_quarantined_node_is_contraindicated(env: Env) -> None:
    env.client.post("/v1/nodes/good/quarantine", headers=env.h("admin"), json={"reason": "t"})
    result = verify_ear(ear_of(env, "good"), jwks_of(env), now=now(env))
    assert result.claims.status == EarStatus.CONTRAINDICATED


def test_a_node_unknown_to_assay_gets_no_ear(env: Env) -> None:
    resp = env.client.get("/v1/nodes/ghost/ear", headers=env.h("scheduler"))
    assert resp.status_code == 404 and resp.json["error"]["code"] == "node_unknown"


def test_tampered_claims_are_refused(env: Env) -> None:
    header, payload, sig = ear_of(env, "bad").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["submods"]["boot"]["ear_status"] = "affirming"
    forged = f"{header}.{b64(claims)}.{sig}"
    with pytest.raises(VerificationFailed) as err:
        verify_ear(forged, jwks_of(env), now=now(env))
    assert err.value.code == "ear_bad_signature"


def test_a_token_signed_by_another_key_with_the_same_kid_is_refused(env: Env) -> None:
    token = ear_of(env, "good")
    kid = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"]
    other = ECKey.generate_key("P-256")
    claims = jwt.decode(token, jwks_of(env)).claims
    forged = jwt.encode({"alg": "ES256", "kid": kid}, claims, other)
    with pytest.raises(VerificationFailed) as err:
        verify_ear(forged, jwks_of(env), now=now(env))
    assert err.value.code == "ear_bad_signature"


def test_a_token_whose_kid_is_not_in_the_jwks_is_refused(env: Env) -> None:
    other = ECKey.generate_key("P-256")
    claims = jwt.decode(ear_of(env, "good"), jwks_of(env)).claims
    forged = jwt.encode({"alg": "ES256", "kid": "not-ours"}, claims, other)
    with pytest.raises(VerificationFailed) as err:
        verify_ear(forged, jwks_of(env), now=now(env))
    assert err.value.code == "ear_unknown_key"


def test_alg_none_is_refused(env: Env) -> None:
    token = ear_of(env, "good")
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    payload = token.split(".")[1]
    for forged in (
        f"{b64({**header, 'alg': 'none'})}.{payload}.",
        f"{b64({**header, 'alg': 'None'})}.{payload}.",
    ):
        with pytest.raises(VerificationFailed) as err:
            verify_ear(forged, jwks_of(env), now=now(env))
        assert err.value.code == "ear_bad_alg"


def test_hs256_keyed_with_the_public_key_is_refused(env: Env) -> None:
    """The classic confusion: an HMAC "signed" with the published key."""
    token = ear_of(env, "good")
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    claims = jwt.decode(token, jwks_of(env)).claims
    secret = OctKey.import_key(json.dumps(env.client.get("/v1/keys").json["keys"][0]).encode())
    forged = jwt.encode({"alg": "HS256", "kid": header["kid"]}, claims, secret)
    with pytest.raises(VerificationFailed) as err:
        verify_ear(forged, jwks_of(env), now=now(env))
    assert err.value.code == "ear_bad_alg"


def test_an_expired_token_is_refused(env: Env) -> None:
    token = ear_of(env, "good")
    with pytest.raises(VerificationFailed) as err:
        verify_ear(token, jwks_of(env), now=now(env) + WINDOW)
    assert err.value.code == "ear_expired"


def test_the_relying_partys_nonce_binds_the_token(env: Env) -> None:
    nonce = "a1" * 16
    token = ear_of(env, "good", f"?nonce={nonce}")
    assert verify_ear(token, jwks_of(env), now=now(env), nonce=nonce).affirming
    with pytest.raises(VerificationFailed) as err:
        verify_ear(token, jwks_of(env), now=now(env), nonce="b2" * 16)
    assert err.value.code == "ear_nonce_mismatch"
    unbound = ear_of(env, "good")
    with pytest.raises(VerificationFailed):
        verify_ear(unbound, jwks_of(env), now=now(env), nonce=nonce)


@pytest.mark.parametrize("nonce", ["xyz", "ab", "a" * 17, "١٢" * 10, "a1%00" * 8])
def test_a_malformed_relying_party_nonce_is_a_400(env: Env, nonce: str) -> None:
    resp = env.client.get(f"/v1/nodes/good/ear?nonce={nonce}", headers=env.h("scheduler"))
    assert resp.status_code == 400 and resp.json["error"]["code"] == "bad_query"


def test_a_token_of_another_node_is_refused_for_this_one(env: Env) -> None:
    token = ear_of(env, "good")
    with pytest.raises(VerificationFailed) as err:
        verify_ear(token, jwks_of(env), now=now(env), node="bad")
    assert err.value.code == "ear_wrong_node"


@pytest.mark.parametrize(
    "token", ["", "a.b", "a.b.c.d", "!!!.###.$$$", b64({"alg": "ES256"}) + ".e30", "x" * 20000]
)
def test_malformed_tokens_are_malformed(env: Env, token: str) -> None:
    with pytest.raises(MalformedEvidence):
        verify_ear(token, jwks_of(env), now=now(env))


def test_the_older_dotted_claim_names_are_read(env: Env) -> None:
    ring = ear_keys.keyring(env.client.application.extensions["assay"])
    old = {
        "eat_profile": "tag:github.com,2023:veraison/ear",
        "iat": now(env),
        "exp": now(env) + 60,
        "sub": "good",
        "ear.verifier-id": {"build": "old", "developer": "old"},
        "submods": {
            "boot": {
                "ear.status": "affirming",
                "ear.trustworthiness-vector": {"executables": 2},
                "ear.appraisal-policy-id": "p",
            }
        },
    }
    token = jwt.encode({"alg": "ES256", "kid": ring.signing.kid}, old, ring.signing.key)
    result = verify_ear(token, jwks_of(env), now=now(env))
    assert result.affirming and result.claims.submods["boot"].vector.executables == 2


def test_rotation_keeps_the_old_key_published_until_its_tokens_expired(env: Env) -> None:
    svc = env.client.application.extensions["assay"]
    before = ear_of(env, "good")
    old_kid = ear_keys.keyring(svc).signing.kid
    new = ear_keys.rotate(svc)
    assert new.kid != old_kid
    kids = [k["kid"] for k in env.client.get("/v1/keys").json["keys"]]
    assert kids == [old_kid, new.kid]
    assert verify_ear(before, jwks_of(env), now=now(env)).affirming
    after = ear_of(env, "good")
    assert json.loads(base64.urlsafe_b64decode(after.split(".")[0] + "=="))["kid"] == new.kid
    env.clock[0] = T0 + dt.timedelta(seconds=WINDOW + 61)
    kids = [k["kid"] for k in env.client.get("/v1/keys").json["keys"]]
    assert kids == [new.kid]


def test_the_jwks_holds_no_private_part(env: Env) -> None:
    for key in env.client.get("/v1/keys").json["keys"]:
        assert "d" not in key and key["kty"] == "EC" and key["crv"] == "P-256"
    doc = env.client.get("/.well-known/veraison/verification").json
    assert "d" not in doc["ear-verification-key"]
    assert doc["media-types"] == ["application/eat+jwt"]


def test_a_key_file_is_created_0600_and_refused_when_others_may_read_it(tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "ear.json"
    e = make_env(str(tmp_path / "v.db"), ear_key_file=str(key_file))
    add_node(e.store, "good", state="trusted", success=T0)
    token = ear_of(e, "good")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert verify_ear(token, jwks_of(e), now=now(e)).affirming
    os.chmod(key_file, 0o644)
    svc = e.client.application.extensions["assay"]
    with pytest.raises(ConfigurationError):
        ear_keys.stored_keys(svc)


# --- the node itself, by its AK -------------------------------------------------------------


def enroll_with_ak(env: Env, name: str) -> SoftwareAk:
    ak = SoftwareAk()
    add_node(env.store, name, state="trusted", success=T0)
    with env.store.write() as db:
        node = db.query(Node).filter_by(name=name).one()
        node.ak_public = ak.public.raw
    return ak


def ak_headers(env: Env, node: str, ak: SoftwareAk, *, digest: bool = True) -> dict[str, str]:
    nonce = bytes.fromhex(env.client.post(f"/v1/nodes/{node}/challenge").json["nonce"])
    qualifying = ear_request_digest(nonce) if digest else nonce
    attest, sig = ak.quote({}, qualifying)
    return {
        "X-Assay-Nonce": nonce.hex(),
        "X-Assay-Quote": base64.b64encode(attest).decode(),
        "X-Assay-Signature": base64.b64encode(sig).decode(),
    }


def test_a_node_fetches_its_own_ear_with_an_ak_quote_over_the_nonce(env: Env) -> None:
    ak = enroll_with_ak(env, "self")
    resp = env.client.get("/v1/nodes/self/ear", headers=ak_headers(env, "self", ak))
    assert resp.status_code == 200, resp.json
    assert verify_ear(resp.get_data(as_text=True), jwks_of(env), now=now(env), node="self")


def test_an_ak_proof_is_single_use(env: Env) -> None:
    ak = enroll_with_ak(env, "self")
    headers = ak_headers(env, "self", ak)
    assert env.client.get("/v1/nodes/self/ear", headers=headers).status_code == 200
    resp = env.client.get("/v1/nodes/self/ear", headers=headers)
    assert resp.status_code == 401 and resp.json["error"]["code"] == "nonce_reused"


def test_an_evidence_quote_is_not_an_ak_proof(env: Env) -> None:
    ak = enroll_with_ak(env, "self")
    resp = env.client.get("/v1/nodes/self/ear", headers=ak_headers(env, "self", ak, digest=False))
    assert resp.status_code == 401 and resp.json["error"]["code"] == "node_auth_failed"


def test_another_nodes_ak_cannot_fetch_this_nodes_ear(env: Env) -> None:
    enroll_with_ak(env, "self")
    intruder = enroll_with_ak(env, "other")
    headers = ak_headers(env, "self", intruder)
    resp = env.client.get("/v1/nodes/self/ear", headers=headers)
    assert resp.status_code == 401 and resp.json["error"]["code"] == "node_auth_failed"


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_node_deleted_while_its_ak_proof_is_checked_is_never_a_500(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database: str
) -> None:
    """An admin deletes the node between the proof's node read and its nonce's use, from another
    connection: the proof either came first (its nonce is then deleted with the node, and the EAR
    finds no node: 404) or finds the node gone (401). Before, PostgreSQL's insert of the used nonce
    broke the foreign key: a 500."""
    from sqlalchemy import delete, func, select

    from verifier.store import repo
    from verifier.store.models import Nonce

    url = (
        str(tmp_path / "v.db") if database == "sqlite" else request.getfixturevalue("postgres_url")
    )
    e = make_env(url)
    try:
        ak = enroll_with_ak(e, "self")
        headers = ak_headers(e, "self", ak)
        consume, deleted = repo.consume_nonce, threading.Event()

        def delete_node() -> None:  # another connection: it waits for any lock the proof holds
            with e.store.write() as db:
                db.execute(delete(Node).where(Node.name == "self"))
            deleted.set()

        deleter = threading.Thread(target=delete_node)

        def consume_after_a_delete(*args: Any, **kwargs: Any) -> Any:
            deleter.start()
            deleted.wait(2.0)  # long enough for an unlocked delete to commit
            return consume(*args, **kwargs)

        monkeypatch.setattr(repo, "consume_nonce", consume_after_a_delete)
        resp = e.client.get("/v1/nodes/self/ear", headers=headers)
        deleter.join(10.0)
        assert deleted.is_set(), "the admin's delete never finished"
        assert resp.status_code in (200, 401, 404), (resp.status_code, resp.get_data(as_text=True))
        if resp.status_code != 200:
            assert resp.json["error"]["code"] in ("node_auth_failed", "node_unknown")
        with e.store.read() as db:
            assert db.scalar(select(func.count()).select_from(Node).where(Node.name == "self")) == 0
            assert db.scalar(select(func.count()).select_from(Nonce)) == 0
    finally:
        e.store.close()


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Assay-Quote": "AAAA"},
        {"X-Assay-Quote": "!!", "X-Assay-Signature": "AA", "X-Assay-Nonce": "00" * 32},
        {"X-Assay-Quote": "AAAA", "X-Assay-Signature": "AAAA", "X-Assay-Nonce": "zz" * 32},
        {"X-Assay-Quote": "AAAA", "X-Assay-Signature": "AAAA", "X-Assay-Nonce": "00" * 32},
    ],
)
def test_hostile_ak_headers_are_401(env: Env, headers: dict[str, str]) -> None:
    resp = env.client.get("/v1/nodes/n1/ear", headers=headers)
    assert resp.status_code == 401, resp.json


# --- the relying party's command ------------------------------------------------------------


def run_cli(*args: str) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["ear", "verify", *args, "--json"])
    return code, json.loads(out.getvalue())


def cli_env(env: Env, tmp_path: Path) -> Path:
    env.clock[0] = dt.datetime.now(dt.UTC)  # the command checks against the real clock
    with env.store.write() as db:
        db.query(Node).filter_by(name="good").one().last_success_at = env.clock[0]
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(env.client.get("/v1/keys").json))
    return path


def test_ear_verify_exits_0_for_an_affirming_fresh_token(env: Env, tmp_path: Path) -> None:
    jwks = cli_env(env, tmp_path)
    code, out = run_cli(ear_of(env, "good"), "--jwks", str(jwks), "--node", "good")
    assert code == 0 and out["affirming"] is True and out["status"] == "affirming"


def test_ear_verify_exits_1_for_a_valid_but_contraindicated_token(env: Env, tmp_path: Path) -> None:
    jwks = cli_env(env, tmp_path)
    code, out = run_cli(ear_of(env, "bad"), "--jwks", str(jwks))
    assert code == 1 and out["valid"] is True and out["status"] == "contraindicated"


def test_ear_verify_exits_1_for_a_refused_token(env: Env, tmp_path: Path) -> None:
    jwks = cli_env(env, tmp_path)
    code, out = run_cli(ear_of(env, "good"), "--jwks", str(jwks), "--nonce", "ab" * 8)
    assert code == 1 and out["error"]["code"] == "ear_nonce_mismatch"


def test_ear_verify_exits_2_for_a_malformed_token_or_jwks(env: Env, tmp_path: Path) -> None:
    jwks = cli_env(env, tmp_path)
    assert run_cli("not-a-token", "--jwks", str(jwks))[0] == 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"keys": []}')
    assert run_cli(ear_of(env, "good"), "--jwks", str(bad))[0] == 2


def test_ear_verify_reads_the_token_from_a_file(env: Env, tmp_path: Path) -> None:
    jwks = cli_env(env, tmp_path)
    token = tmp_path / "t.jwt"
    token.write_text(ear_of(env, "good"))
    assert run_cli(f"@{token}", "--jwks", str(jwks))[0] == 0


def test_serve_makes_the_signing_key_on_its_first_start(tmp_path: Path) -> None:
    from testkit.service import run_server
    from verifier.service.config import ServiceConfig
    from verifier.store import Store, cluster, upgrade

    db = str(tmp_path / "v.db")
    store = Store(db)
    upgrade(store)
    with store.read() as s:
        assert cluster.ear_keys(s) == []
    with run_server(ServiceConfig(database=db, workers=1)):
        with store.read() as s:
            (key,) = cluster.ear_keys(s)
        assert key.retired_at is None
    store.close()


def test_ear_verify_fetches_the_jwks_from_a_url(env: Env, tmp_path: Path) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    jwks = cli_env(env, tmp_path).read_bytes()

    class Keys(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/v1/keys" else 404)
            self.send_header("Content-Length", str(len(jwks)))
            self.end_headers()
            self.wfile.write(jwks)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Keys)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert run_cli(ear_of(env, "good"), "--jwks", f"{url}/v1/keys")[0] == 0
        assert run_cli(ear_of(env, "good"), "--jwks", f"{url}/nope")[0] == 2
    finally:
        server.shutdown()
        server.server_close()
