"""The bootstrap admin token: `db init` prints it once, it is stored only as a hash, and it is
listed and revoked like any other token (CLI and API)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from verifier._cli import main
from verifier.service import ServiceConfig, create_app
from verifier.service.tokens import BOOTSTRAP_DESCRIPTION
from verifier.store import repo


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _secret(out: str) -> str:
    [line] = [x for x in out.splitlines() if x.startswith("assay_")]
    return line


def test_db_init_prints_the_bootstrap_admin_token_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--database", str(tmp_path / "v.db")]
    code, out, err = _cli(capsys, "db", "init", *db)
    assert code == 0 and not err and "shown only now" in out
    secret = _secret(out)
    code, again, _ = _cli(capsys, "db", "init", *db)
    assert code == 0 and "assay_" not in again and "no bootstrap token" in again
    code, again, _ = _cli(capsys, "db", "init", *db, "--json")
    assert code == 0 and json.loads(again)["bootstrap_token"] is None
    code, listed, _ = _cli(capsys, "token", "list", *db, "--json")
    [token] = json.loads(listed)["tokens"]
    assert token["role"] == "admin" and token["description"] == BOOTSTRAP_DESCRIPTION
    assert secret.split("_")[1] == token["id"] and secret not in listed


def test_db_init_json_carries_the_secret_and_no_other_run_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--database", str(tmp_path / "v.db")]
    code, out, _ = _cli(capsys, "db", "init", *db, "--json")
    made = json.loads(out)["bootstrap_token"]
    assert code == 0 and made["role"] == "admin" and made["token"].startswith("assay_")
    assert _cli(capsys, "db", "upgrade", *db)[1].count("assay_") == 0


def test_db_init_makes_no_bootstrap_token_where_tokens_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--database", str(tmp_path / "v.db")]
    assert _cli(capsys, "db", "upgrade", *db)[0] == 0
    assert _cli(capsys, "token", "create", "--role", "reviewer", *db)[0] == 0
    code, out, _ = _cli(capsys, "db", "init", *db)
    assert code == 0 and "assay_" not in out


def test_tokens_are_stored_only_as_their_sha256(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "v.db"
    secret = _secret(_cli(capsys, "db", "init", "--database", str(path))[1])
    rows = sqlite3.connect(path).execute("SELECT id, secret_sha256 FROM tokens").fetchall()
    assert rows == [(secret.split("_")[1], repo.token_hash(secret))]
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("v.db"))
    assert secret.encode() not in raw and secret.split("_", 2)[2].encode() not in raw


def test_the_bootstrap_token_is_listed_and_revoked_through_the_api(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "v.db")
    secret = _secret(_cli(capsys, "db", "init", "--database", path)[1])
    client = create_app(ServiceConfig(database=path)).test_client()
    auth = {"Authorization": f"Bearer {secret}"}
    listed = client.get("/v1/tokens", headers=auth)
    [token] = listed.json["tokens"]
    assert listed.status_code == 200 and secret not in listed.text
    done = client.post(f"/v1/tokens/{token['id']}/revoke", headers=auth, json={"reason": "used"})
    assert done.status_code == 200 and done.json["revoked_at"] is not None
    refused = client.get("/v1/tokens", headers=auth)
    assert refused.status_code == 401 and refused.json["error"]["code"] == "invalid_token"


def test_verifier_version_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == "assay-verifier 0.1.0"
