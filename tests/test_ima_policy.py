"""Runtime policies: the YAML schema (strict, errors with lines), round trips, status handling."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest

from assay.algorithms import HashAlg
from golden.model import digests
from golden.runtime import RuntimePolicy, Selinux, glob_regex
from golden.runtime_yaml import dump_runtime_yaml, load_runtime_yaml
from golden.yamlfmt import GoldenFormatError

PEM = (Path(__file__).parent / "vectors" / "ima" / "keylime-rsa2048.pub.pem").read_text()
SHA = hashlib.sha256(b"bash").hexdigest()

DOC = f"""
kind: runtime-policy
name: fleet-runtime
version: "3"
status: active
valid_from: 2026-11-01
files:
  /usr/bin/bash:
    - sha256: {SHA}
    - sha256: {hashlib.sha256(b"bash 5.2").hexdigest()}
  /opt/my app/run:
    - sha256: {SHA}
exclude: ["/var/log/*", "/tmp/*"]
buffers:
  kernel_version:
    - sha256: {hashlib.sha256(b"6.1.0-13-amd64").hexdigest()}
signatures:
  keys:
    - label: vendor
      pem: |
{"".join("        " + line + chr(10) for line in PEM.splitlines())}
  require: ["/usr/sbin/*"]
selinux:
  require_enforcing: true
  policy_hashes: ["{"ab" * 32}"]
"""


def test_policy_yaml_loads_every_section() -> None:
    p = load_runtime_yaml(DOC, "fleet.yaml")
    assert p.ref == "fleet-runtime@3" and p.status == "active"
    assert p.valid_from == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    assert p.files["/usr/bin/bash"][0][HashAlg.SHA256].hex() == SHA
    assert len(p.files["/usr/bin/bash"]) == 2
    assert "/opt/my_app/run" in p.files  # as the kernel logs it: spaces become '_'
    assert p.exclude == ("/var/log/*", "/tmp/*")
    assert p.keys[0].key.keyid_hex == "f3452d23" and p.keys[0].label == "vendor"
    assert p.require_signatures == ("/usr/sbin/*",) and not p.approve_signed
    assert p.selinux == Selinux(True, (bytes.fromhex("ab" * 32),))
    assert p.require_boot_aggregate


def test_policy_yaml_round_trips() -> None:
    p = load_runtime_yaml(DOC, "fleet.yaml")
    again = load_runtime_yaml(dump_runtime_yaml(p), "dumped.yaml")
    assert again == p


def test_policy_yaml_round_trips_names_that_are_not_utf8() -> None:
    name = "/srv/\udcff\x1bweird"
    p = RuntimePolicy("x", "1", files={name: (digests({HashAlg.SHA256: bytes(32)}),)})
    assert load_runtime_yaml(dump_runtime_yaml(p)).files == p.files


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.replace("kind: runtime-policy", "kind: golden"), "kind: runtime-policy"),
        (lambda d: d.replace("exclude:", "exclud:"), "unknown key 'exclud'"),
        (lambda d: d.replace(f"sha256: {SHA}", "sha256: 1234", 1), "expected 64 hex digits"),
        (lambda d: d.replace(f"sha256: {SHA}", f"sha1: {SHA[:40]}", 1), "allow_sha1: true"),
        (lambda d: d.replace("status: active", "status: revoked"), "needs a status_reason"),
        (lambda d: d.replace("status: active", "status: live"), "expected one of draft"),
        (lambda d: d.replace("-----BEGIN PUBLIC KEY-----", "-----BEGIN NONSENSE-----"), "not a PEM"),
        (lambda d: d.replace("/opt/my app/run:\n    - sha256", "/opt/my app/run:\n    - sha999"), "unknown key 'sha999'"),
        (lambda d: d.replace("  /opt/my app/run:", "  /opt/my_app/run:\n    - sha256: " + SHA + "\n  /opt/my app/run:"), "listed twice"),
    ],
)  # fmt: skip
def test_policy_yaml_errors_name_the_line(edit: object, message: str) -> None:
    assert callable(edit)
    with pytest.raises(GoldenFormatError, match=r"fleet\.yaml:[0-9]+") as exc:
        load_runtime_yaml(edit(DOC), "fleet.yaml")
    assert message in str(exc.value)


def test_policy_requiring_signatures_without_keys_is_refused() -> None:
    with pytest.raises(ValueError, match="needs at least one key"):
        RuntimePolicy("x", "1", require_signatures=("/usr/*",))


def test_policy_in_force_follows_status_and_window() -> None:
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    p = RuntimePolicy("x", "1", valid_until=now + dt.timedelta(days=1))
    assert p.in_force(now) and not p.in_force(now + dt.timedelta(days=2))
    assert not p.with_status("draft").in_force(now)
    assert not p.with_status("revoked", "CVE-2026-1").in_force(now)
    assert not p.with_status("retired").in_force(now)


def test_with_files_adds_each_digest_once() -> None:
    d = digests({HashAlg.SHA256: bytes(32)})
    p = RuntimePolicy("x", "1").with_files([("/a b", d), ("/a b", d)])
    assert dict(p.files) == {"/a_b": (d,)}


def test_globs_match_bytes_and_cross_slashes() -> None:
    rx = glob_regex(["/var/log/*", "/tmp/x?"])
    assert rx is not None
    assert rx.match(b"/var/log/journal/abc/system.journal")
    assert rx.match(b"/tmp/x1") and not rx.match(b"/tmp/x12") and not rx.match(b"/var/lib/x")
    assert glob_regex([]) is None
