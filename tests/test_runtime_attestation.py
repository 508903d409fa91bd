"""Runtime checks through the service, in process (Flask test client, SQLite): nodes with a
software AK and MADE IMA lists (tests/imanode.py, tests/imalogbuilder.py) attest as the agent
does; the verifier keeps the verified prefix per node and boot and appraises only new entries.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from assay.algorithms import HashAlg
from assay.eventlog import assume_quoted_for_review, parse_event_log
from golden.capture import capture
from golden.yamlfmt import dump_yaml
from verifier.service import reappraisal
from verifier.store import runtime as rstore
from verifier.store.models import ReappraisalJob

from . import imalogbuilder as made
from .conftest import CORPUS
from .imanode import MadeImaNode, Round, flask_post
from .postgres import postgres_server, postgres_url  # noqa: F401 (fixtures)
from .test_service_api import Env, make_env

SB_LOG = (CORPUS / "qemu-ovmf-debian12" / "secureboot-shim-grub-kernel.bin").read_bytes()
N_FILES = 2000


def prog(i: int) -> made.Made:
    return made.file_entry(f"/usr/bin/prog{i}".encode(), b"content %d" % i)


def runtime_yaml(version: str = "1", n: int = N_FILES) -> str:
    lines = [
        "kind: runtime-policy",
        "name: fleet-runtime",
        f'version: "{version}"',
        'exclude: ["/var/log/*"]',
        "files:",
    ]
    for i in range(n):
        lines.append(f"  /usr/bin/prog{i}:")
        lines.append(f"    - sha256: {hashlib.sha256(b'content %d' % i).hexdigest()}")
    return "\n".join(lines) + "\n"


@pytest.fixture()
def env(tmp_path: Path) -> Env:
    return _env(str(tmp_path / "v.db"))


@pytest.fixture()
def pg_env(request: pytest.FixtureRequest) -> Env:
    return _env(request.getfixturevalue("postgres_url"))


def _env(url: str) -> Env:
    e = make_env(url)
    golden = capture(
        assume_quoted_for_review(parse_event_log(SB_LOG), HashAlg.SHA256), name="boot", version="1"
    )
    admin = e.h("admin")
    e.client.post("/v1/golden", data=dump_yaml(golden), headers=admin)
    e.client.post("/v1/golden/assignments", json={"golden": "boot", "selector": {}}, headers=admin)
    resp = e.client.post(
        "/v1/runtime-policies?label=ima=on",
        data=runtime_yaml(),
        headers={**admin, "Content-Type": "application/yaml"},
    )
    assert resp.status_code == 201, resp.json
    return e


def node(env: Env, name: str = "ima-1", labels: dict[str, str] | None = None) -> MadeImaNode:
    n = MadeImaNode(name, SB_LOG, labels={"ima": "on"} if labels is None else labels)
    n.fake.enroll_directly(env.store)
    return n


def attest(env: Env, n: MadeImaNode) -> Round:
    return n.attest(flask_post(env.client))


def verdict(env: Env, r: Round) -> dict[str, Any]:
    att = env.client.get(f"/v1/attestations/{r.answer['attestation_id']}", headers=env.h("admin"))
    out: dict[str, Any] = att.json["verdict"]
    return out


def failing(v: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in v["checks"] if c["status"] != "pass"]


def test_steady_state_sends_only_the_new_entries(env: Env) -> None:
    n = node(env)
    n.run(*(prog(i) for i in range(5)))
    first = attest(env, n)
    assert first.answer["status"] == "trusted", first.answer
    assert first.ima_start == 0 and first.ima_bytes == len(n.ima_list())
    full = len(n.ima_list())
    n.run(*(prog(i) for i in range(5, 8)))
    second = attest(env, n)
    assert second.answer["status"] == "trusted"
    assert second.ima_start == 6 and second.ima_bytes == len(n.ima_list()) - full
    assert second.ima_bytes == len(made.binary([prog(i) for i in range(5, 8)]))
    assert not second.full_log_retry
    v = verdict(env, second)
    assert v["runtime"]["judged"] == 3 and v["runtime"]["policies"] == ["fleet-runtime@1"]
    third = attest(env, n)  # nothing new measured: an empty chunk
    assert third.answer["status"] == "trusted" and third.ima_bytes == 0
    assert third.answer["ima"] == {"entries": 9, "offset": len(n.ima_list())}


def test_an_unknown_executed_file_is_untrusted_naming_the_path_for_the_rest_of_the_boot(
    env: Env,
) -> None:
    n = node(env)
    n.run(prog(0))
    assert attest(env, n).answer["status"] == "trusted"
    n.run(made.file_entry(b"/tmp/dropper", b"evil"))
    bad = attest(env, n)
    assert bad.answer["status"] == "untrusted"
    assert bad.answer["reason"] == "ima_file_not_approved"
    [check] = [c for c in failing(verdict(env, bad)) if c["reason"] == "ima_file_not_approved"]
    assert "/tmp/dropper" in check["message"] and check["got"].startswith("sha256:")
    assert "fleet-runtime@1" in check["message"] or check["golden"] == "fleet-runtime@1"
    n.run(prog(1))
    later = attest(env, n)
    assert later.ima_bytes == len(made.binary([prog(1)]))
    assert later.answer["status"] == "untrusted"  # still executed in this boot
    n.reboot()
    n.run(prog(0))
    clean = attest(env, n)
    assert clean.full_log_retry and clean.answer["status"] == "trusted"


def test_a_changed_digest_is_untrusted_with_got_and_expected(env: Env) -> None:
    n = node(env)
    n.run(made.file_entry(b"/usr/bin/prog3", b"patched"))
    r = attest(env, n)
    assert r.answer["reason"] == "ima_digest_mismatch"
    [check] = [c for c in failing(verdict(env, r)) if c["reason"] == "ima_digest_mismatch"]
    assert check["got"] == "sha256:" + hashlib.sha256(b"patched").hexdigest()
    assert hashlib.sha256(b"content 3").hexdigest() in check["expected"]


def test_a_reboot_makes_the_agent_send_the_full_list_in_the_same_round(env: Env) -> None:
    n = node(env)
    n.run(prog(0), prog(1))
    attest(env, n)
    n.reboot()
    n.run(prog(2))
    r = attest(env, n)
    assert r.full_log_retry and r.ima_start == 0 and r.ima_bytes == len(n.ima_list())
    assert r.answer["status"] == "trusted" and r.answer["reboot"] is True


def test_a_lost_prefix_asks_for_the_full_list(env: Env) -> None:
    n = node(env)
    n.run(prog(0))
    attest(env, n)
    with env.store.write() as db:
        rstore.drop_ima_state(db, [_node_id(env, n)])
    n.run(prog(1))
    r = attest(env, n)
    assert r.full_log_retry and r.answer["status"] == "trusted"


def _node_id(env: Env, n: MadeImaNode) -> int:
    from verifier.store import repo

    with env.store.read() as db:
        row = repo.get_node(db, n.name)
        assert row is not None
        return row.id


def test_an_agent_lying_about_its_offset_is_refused_and_never_advances_the_prefix(
    env: Env,
) -> None:
    n = node(env)
    n.run(prog(0), prog(1))
    attest(env, n)
    kept = n.cursor
    n.run(made.file_entry(b"/tmp/hidden", b"evil"), prog(2))
    # Claims to start after the evil entry: the verifier's prefix says otherwise.
    n.lie = (kept[0] + 1, kept[1] + len(made.binary([made.file_entry(b"/tmp/hidden", b"evil")])))
    r = attest(env, n)
    assert r.status == 409 and r.answer["error"]["code"] == "ima_full_log_required"
    with env.store.read() as db:
        state = rstore.get_ima_state(db, _node_id(env, n))
        assert state is not None and (state.entries, state.offset) == kept
    # Claims a full list but sends the tail only: it does not replay to the quoted PCR10.
    n.lie = (0, 0)
    r = attest(env, n)
    assert r.answer["status"] == "untrusted"
    assert r.answer["reason"].startswith("ima_")


def test_a_chunk_not_matching_the_quoted_pcr10_is_untrusted_and_the_full_list_follows(
    env: Env,
) -> None:
    n = node(env)
    n.run(prog(0))
    attest(env, n)
    evil = made.file_entry(b"/tmp/evil", b"x")
    n.run(evil, prog(1))
    n.tamper = lambda chunk: chunk[len(made.binary([evil])) :]  # hides the evil entry
    r = attest(env, n)
    assert r.answer["status"] == "untrusted" and r.answer["reason"] == "ima_pcr_mismatch"
    assert r.answer["ima"] == {"entries": 0, "offset": 0}
    n.tamper = None
    honest = attest(env, n)
    assert honest.ima_start == 0 and honest.answer["status"] == "untrusted"  # /tmp/evil ran


def test_a_tampered_chunk_is_untrusted(env: Env) -> None:
    n = node(env)
    n.run(prog(0))
    attest(env, n)
    n.run(prog(1))
    n.tamper = lambda chunk: chunk[:-2] + bytes([chunk[-2] ^ 1]) + chunk[-1:]
    r = attest(env, n)
    assert r.status == 200 and r.answer["status"] == "untrusted"
    assert r.answer["reason"] == "ima_log_malformed"


HOSTILE_NAMES = [
    b"/tmp/\x1b[31mred\x1b[0m",
    b"/tmp/new\nline",
    b"/tmp/<script>alert(1)</script>",
    b"/tmp/\xff\xfe not utf-8",
    b"/" + b"a" * 4095,
    b"/tmp/%s%n%x",
    "/tmp/\u202egnp.exe".encode(),
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_are_untrusted_escaped_never_a_500(env: Env, name: bytes) -> None:
    n = node(env)
    n.run(made.file_entry(name, b"x"))
    r = attest(env, n)
    assert r.status == 200 and r.answer["status"] == "untrusted"
    text = str(verdict(env, r))
    assert "\x1b" not in text and "\n" not in text.replace("\\n", "")


@pytest.mark.parametrize(
    "entry",
    [
        made.Made("ima-ng", [b"foo:\0" + b"\x01" * 32, b"/tmp/x\0"]),  # unknown digest algorithm
        made.Made("ima-ng", [b"sha256:\0" + b"\x01" * 5, b"/tmp/x\0"]),  # short digest
        made.Made("ima-sig", [made.d_ng("sha256", bytes(32)), b"/usr/bin/prog0\0", b"\x03\x02"]),
        made.Made("ima-buf", [made.d_ng("sha256", bytes(32)), b"selinux-state\0", b"\xff" * 64]),
        made.Made("ima-buf", [made.d_ng("sha256", bytes(32)), b"kernel_version\0", b"\x00" * 9]),
        made.Made("d-ng|n-ng|buf|sig", [made.d_ng("sha256", bytes(32)), b"/x\0", b"", b""]),
        made.Made("ima-ng\x1b[2J", [made.d_ng("sha256", bytes(32)), b"/x\0"]),
        made.violation_entry(b"/etc/shadow"),
    ],
)
def test_hostile_ima_fields_are_never_trusted_and_never_a_500(env: Env, entry: made.Made) -> None:
    n = node(env)
    n.run(entry)
    r = attest(env, n)
    assert r.status in (200, 400), r.answer
    if r.status == 200:
        assert r.answer["status"] != "trusted"
    else:
        assert r.answer["error"]["code"] == "malformed_evidence"


def test_revoking_the_runtime_policy_takes_the_node_out_of_trusted_at_once(env: Env) -> None:
    n = node(env)
    n.run(prog(0))
    assert attest(env, n).answer["status"] == "trusted"
    resp = env.client.post(
        "/v1/runtime-policies/fleet-runtime/1/revoke",
        headers=env.h("admin"),
        json={"reason": "CVE-2026-7 in prog0"},
    )
    [moved] = resp.json["reappraised"]
    assert moved["node"] == n.name and moved["state"] != "trusted"
    shown = env.client.get(f"/v1/nodes/{n.name}", headers=env.h("admin")).json
    assert shown["state"] != "trusted" and shown["reason"].startswith("ima_policy_changed")
    n.run(prog(1))
    r = attest(env, n)
    assert r.full_log_retry and r.answer["status"] == "unknown"
    assert r.answer["reason"] == "ima_policy_not_in_force"


def test_a_runtime_policy_change_reappraises_the_nodes_it_applies_to_in_batches(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A status change re-appraises as a job of batches (one transaction each, so no single
    transaction holds a fleet's rows), each batch the policy's nodes among the next ids only."""
    monkeypatch.setattr(reappraisal, "JOB_BATCH", 2)
    batches: list[list[str]] = []
    real = reappraisal.reappraise_batch

    def counted(svc: Any, db: Any, nodes: Any, *rest: Any) -> Any:
        batches.append([n.name for n in nodes])
        return real(svc, db, nodes, *rest)

    monkeypatch.setattr(reappraisal, "reappraise_batch", counted)
    ima = [node(env, f"ima-{i}") for i in range(3)]
    for n in ima:
        n.run(prog(0))
        assert attest(env, n).answer["status"] == "trusted"
    for i in range(2):  # enrolled after them, and the policy does not select them
        node(env, f"plain-{i}", labels={"ima": "off"})
    resp = env.client.post(
        "/v1/runtime-policies/fleet-runtime/1/revoke",
        headers=env.h("admin"),
        json={"reason": "CVE-2026-7 in prog0"},
    )
    assert resp.status_code == 200, resp.json
    assert [r["node"] for r in resp.json["reappraised"]] == ["ima-0", "ima-1", "ima-2"]
    assert {r["state"] for r in resp.json["reappraised"]} == {"unknown"}
    # ids in order: n1 (make_env's, no ima label), ima-0..2, plain-0..1; two per batch
    assert batches == [["ima-0"], ["ima-1", "ima-2"], []]
    with env.store.read() as db:
        [job] = db.scalars(select(ReappraisalJob))
        assert (job.kind, job.golden_name) == ("runtime", "fleet-runtime")
        assert job.finished_at is not None


def test_a_node_a_policy_selects_without_an_ima_list_is_not_trusted(env: Env) -> None:
    n = node(env)
    body_node = n.fake  # the plain software node: same AK, no IMA list
    _, ch = flask_post(env.client)(f"/v1/nodes/{n.name}/challenge", {}, None)
    status, answer = flask_post(env.client)(
        f"/v1/nodes/{n.name}/evidence", None, body_node.evidence(bytes.fromhex(ch["nonce"]))
    )
    assert status == 200 and answer["status"] == "unknown"
    assert answer["reason"] in ("ima_log_missing", "pcr_not_quoted")


def test_nodes_no_runtime_policy_selects_are_unaffected(env: Env) -> None:
    n = node(env, "plain-1", labels={"ima": "off"})
    n.run(made.file_entry(b"/tmp/anything", b"x"))
    r = attest(env, n)
    assert r.answer["status"] == "trusted"
    assert [c for c in verdict(env, r)["checks"] if c["id"].startswith("ima.")] == []
    n.run(prog(1))
    again = attest(env, n)
    assert again.ima_start > 0 and again.answer["status"] == "trusted"
    n.tamper = lambda chunk: b"garbage"
    assert attest(env, n).answer["status"] == "trusted"


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        ({"ima_start": 3}, "go together"),
        ({"ima_start": 0, "ima_offset": 5}, "both be 0"),
        ({"ima_start": -1, "ima_offset": 5}, "unsigned"),
        ({"ima_start": True, "ima_offset": True}, "unsigned"),
        ({"ima_start": 2**40, "ima_offset": 5}, "unsigned"),
    ],
)
def test_bad_ima_fields_are_400_with_a_stable_code(
    env: Env, patch: dict[str, Any], fragment: str
) -> None:
    import cbor2

    n = node(env)
    n.run(prog(0))
    _, ch = flask_post(env.client)(f"/v1/nodes/{n.name}/challenge", {}, None)
    doc = cbor2.loads(n.bundle(bytes.fromhex(ch["nonce"]), (0, 0)))
    doc.pop("ima_start", None), doc.pop("ima_offset", None)
    doc.update(patch)
    status, answer = flask_post(env.client)(f"/v1/nodes/{n.name}/evidence", None, cbor2.dumps(doc))
    assert status == 400 and answer["error"]["code"] == "malformed_evidence"
    assert fragment in answer["error"]["message"]


def test_entries_appended_after_the_quote_are_sent_again(env: Env) -> None:
    n = node(env)
    n.run(prog(0), prog(1))
    n.hide_after_quote = 1
    r = attest(env, n)
    assert r.answer["status"] == "trusted" and r.answer["ima"]["entries"] == 2
    n.hide_after_quote = 0
    again = attest(env, n)
    assert again.ima_start == 2 and again.ima_bytes == len(made.binary([prog(1)]))


def test_appraising_1000_new_entries_through_the_service(env: Env) -> None:
    """The figure docs/ima.md quotes: one evidence POST carrying 1,000 new entries (policy of
    2,000 paths), against one carrying none, in process; median of 5."""
    n = node(env)
    n.run(prog(0))
    attest(env, n)
    rounds: dict[str, list[Round]] = {"1,000 new entries": [], "none new": [], "repeat": []}
    for k in range(5):
        n.run(*(prog(1 + (i + k * 1000) % (N_FILES - 1)) for i in range(1000)))
        r = attest(env, n)
        assert r.answer["status"] == "trusted" and r.ima_start > 0
        rounds["1,000 new entries"].append(r)
        rounds["none new"].append(attest(env, n))
        rounds["repeat"].append(attest(env, n))  # the same answer again: the verdict reused
    assert rounds["repeat"][-1].answer["repeat"] > 0
    for what, rs in rounds.items():
        wall, cpu = sorted(r.seconds for r in rs)[2], sorted(r.cpu for r in rs)[2]
        print(f"\nevidence request, {what}: {wall * 1e3:.1f} ms wall, {cpu * 1e3:.1f} ms CPU")
    assert sorted(r.cpu for r in rounds["1,000 new entries"])[2] < 1.0  # the figure is printed


def _ear_submods(env: Env, name: str) -> dict[str, Any]:
    import base64
    import json

    resp = env.client.get(f"/v1/nodes/{name}/ear", headers=env.h("admin"))
    assert resp.status_code == 200, resp.data[:200]
    payload = resp.data.decode().split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    submods: dict[str, Any] = claims["submods"]
    return submods


def test_the_ear_has_a_runtime_submodule_beside_boot(env: Env) -> None:
    n = node(env)
    n.run(prog(0))
    attest(env, n)
    submods = _ear_submods(env, n.name)
    assert submods["boot"]["ear_status"] == "affirming"
    assert submods["runtime"]["ear_status"] == "affirming"
    assert submods["runtime"]["ear_appraisal_policy_id"] == "assay:runtime:fleet-runtime@1"
    n.run(made.file_entry(b"/tmp/dropper", b"evil"))
    attest(env, n)
    submods = _ear_submods(env, n.name)
    assert submods["boot"]["ear_status"] == "affirming"  # the boot itself passed
    assert submods["runtime"]["ear_status"] == "contraindicated"
    assert submods["runtime"]["ear_trustworthiness_vector"]["executables"] == 96
    plain = node(env, "plain-ear", labels={"ima": "off"})
    attest(env, plain)
    assert set(_ear_submods(env, plain.name)) == {"boot"}


def test_every_challenge_asks_for_pcr10_once_a_runtime_policy_exists(
    env: Env, tmp_path: Path
) -> None:
    post = flask_post(env.client)
    for name in ("ima-1", "nobody-at-all"):  # the same answer for any name, known or not
        _, ch = post(f"/v1/nodes/{name}/challenge", {}, None)
        assert 10 in ch["pcr_selection"]["sha256"]
    bare = make_env(str(tmp_path / "bare.db"))
    _, ch = flask_post(bare.client)("/v1/nodes/n1/challenge", {}, None)
    assert ch["pcr_selection"] == {"sha256": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14]}


def test_on_postgresql_steady_state_a_lie_and_a_revocation(pg_env: Env) -> None:
    env = pg_env
    n = node(env)
    n.run(prog(0), prog(1))
    assert attest(env, n).answer["status"] == "trusted"
    n.run(prog(2))
    r = attest(env, n)
    assert r.answer["status"] == "trusted" and r.ima_start == 3
    assert r.ima_bytes == len(made.binary([prog(2)]))
    n.lie = (1, 1)
    assert attest(env, n).status == 409
    n.lie = None
    env.client.post(
        "/v1/runtime-policies/fleet-runtime/1/revoke",
        headers=env.h("admin"),
        json={"reason": "CVE"},
    )
    shown = env.client.get(f"/v1/nodes/{n.name}", headers=env.h("admin")).json
    assert shown["state"] == "unknown"


def test_a_reused_boot_verdict_still_appraises_the_new_ima_entries(env: Env) -> None:
    n = node(env)
    n.run(prog(0))
    attest(env, n)
    attest(env, n)  # nothing new: the first empty chunk is recorded
    repeat = attest(env, n)
    assert repeat.answer["repeat"] > 0  # the stored verdict was reused (boot unchanged)
    n.run(made.file_entry(b"/usr/local/bin/miner", b"x"))
    r = attest(env, n)
    assert r.answer["repeat"] == 0 and r.answer["status"] == "untrusted"
    assert r.answer["reason"] == "ima_file_not_approved"
