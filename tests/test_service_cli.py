"""``python -m verifier`` service commands: db upgrade, token, golden, nodes; serve with TLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from testkit.service import run_server
from tests.test_service_api import golden_yaml
from verifier._cli import main
from verifier.service import ServiceConfig
from verifier.store import Store, repo


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_commands_refuse_a_database_that_is_not_upgraded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "nodes", "list", "--database", str(tmp_path / "v.db"))
    assert code == 4
    assert "db upgrade" in err and err.count("\n") == 1


def test_db_token_golden_nodes_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--database", str(tmp_path / "v.db")]
    code, out, _ = run(capsys, "db", "upgrade", *db, "--json")
    assert code == 0 and json.loads(out)["revision"] == "0010"
    code, out, _ = run(
        capsys, "token", "create", "--role", "scheduler", "--ttl", "60", *db, "--json"
    )
    token = json.loads(out)
    assert code == 0 and token["role"] == "scheduler" and token["token"].startswith("assay_")
    store = Store(str(tmp_path / "v.db"))
    with store.read() as s:
        found = repo.find_token(s, token["token"])
        assert found is not None and found.expires_at is not None
        assert found.expires_at > dt.datetime.now(dt.UTC)
    store.close()
    g = tmp_path / "fleet.yaml"
    g.write_text(golden_yaml("fleet", "7"))
    assert run(capsys, "golden", "add", str(g), *db, "--json")[0] == 0
    code, out, _ = run(capsys, "golden", "assign", "fleet", "--selector", "pool=web", *db, "--json")
    assert code == 0 and json.loads(out) == {
        "golden": "fleet",
        "selector": {"pool": "web"},
        "added": True,
    }
    code, out, _ = run(capsys, "golden", "list", *db, "--json")
    listing = json.loads(out)
    assert [x["id"] for x in listing["golden"]] == ["fleet@7"]
    code, out, _ = run(capsys, "golden", "revoke", "fleet", "7", "--reason", "CVE", *db, "--json")
    assert (
        code == 0 and json.loads(out)["status"] == "revoked" and json.loads(out)["reason"] == "CVE"
    )
    code, out, _ = run(capsys, "golden", "list", *db)  # the rich table
    assert code == 0 and "fleet@7" in out and "revoked" in out
    code, out, _ = run(capsys, "nodes", "list", *db, "--json")
    assert code == 0 and json.loads(out) == {"nodes": []}
    code, _, err = run(capsys, "nodes", "show", "ghost", *db)
    assert code == 1 and "ghost" in err


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    c, k = tmp_path / "cert.pem", tmp_path / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return c, k


def test_serve_speaks_tls_when_given_a_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "v.db")
    assert run(capsys, "db", "upgrade", "--database", db)[0] == 0
    cert, key = _self_signed(tmp_path)
    config = ServiceConfig(database=db, workers=1, tls_cert=str(cert), tls_key=str(key))
    with run_server(config) as url:
        assert url.startswith("https://")
        resp = requests.get(f"{url}/v1/nodes", verify=str(cert), timeout=10)
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthenticated"
        with pytest.raises(requests.ConnectionError):
            requests.get(url.replace("https", "http") + "/healthz", timeout=5)


def test_tokens_list_revoke_and_nodes_move_label_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_service_api import add_node

    db = ["--database", str(tmp_path / "v.db")]
    assert run(capsys, "db", "upgrade", *db)[0] == 0
    code, out, _ = run(
        capsys, "token", "create", "--role", "enroll", "--label", "pool=web", *db, "--json"
    )
    made = json.loads(out)
    assert code == 0 and made["labels"] == {"pool": "web"}
    code, out, err = run(capsys, "token", "create", "--role", "admin", "--ttl", "1e9", *db)
    assert code == 1 and "ttl may be at most" in err and err.count("\n") == 1
    code, out, _ = run(capsys, "token", "list", *db, "--json")
    [listed] = json.loads(out)["tokens"]
    assert code == 0 and listed["id"] == made["id"] and made["token"] not in out
    code, out, _ = run(capsys, "token", "revoke", made["id"], "--reason", "leaked", *db, "--json")
    assert code == 0 and json.loads(out)["revoked_at"] is not None
    code, _, err = run(capsys, "token", "revoke", made["id"], "--reason", "again", *db)
    assert code == 1 and "already revoked" in err
    store = Store(str(tmp_path / "v.db"))
    add_node(store, "old-name")
    store.close()
    code, out, _ = run(
        capsys, "nodes", "move", "old-name", "new-name", "--reason", "rename", *db, "--json"
    )
    assert code == 0 and json.loads(out)["name"] == "new-name"
    code, out, _ = run(
        capsys, "nodes", "label", "new-name", "--label", "pool=gpu", "--reason", "r", *db, "--json"
    )
    assert code == 0 and json.loads(out)["labels"] == {"pool": "gpu"}
    code, out, _ = run(capsys, "token", "list", *db)  # the rich table
    assert code == 0 and "enroll" in out


def test_nodes_list_refuses_a_state_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--database", str(tmp_path / "v.db")]
    assert run(capsys, "db", "upgrade", *db)[0] == 0
    code, _, err = run(capsys, "nodes", "list", "--state", "happy", *db)
    assert code == 1 and "state must be one of enrolled, trusted," in err
    code, out, _ = run(capsys, "nodes", "list", "--state", "stale", *db, "--json")
    assert code == 0 and json.loads(out) == {"nodes": []}


def test_nodes_show_prints_the_node_and_its_history_as_the_api_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.test_service_api import add_node

    db = ["--database", str(tmp_path / "v.db")]
    assert run(capsys, "db", "upgrade", *db)[0] == 0
    store = Store(str(tmp_path / "v.db"))
    add_node(store, "web-1", state="untrusted")
    store.close()
    code, out, _ = run(capsys, "nodes", "show", "web-1", *db, "--json")
    node = json.loads(out)
    assert code == 0 and (node["name"], node["state"], node["attestations"]) == (
        "web-1",
        "untrusted",
        [],
    )
    code, out, _ = run(capsys, "nodes", "show", "web-1", *db)  # the rich tables
    assert code == 0 and "untrusted" in out and "attestations" in out
