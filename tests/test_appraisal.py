"""Appraisal of verified boot logs against golden sets (issue 3 acceptance)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import struct
from pathlib import Path

import pytest

from assay import bootfacts
from assay.algorithms import HashAlg
from assay.bootfacts import extract
from assay.eventlog import BootLog, assume_quoted_for_review, parse_event_log
from assay.events import EventType
from assay.uefi import Guid, parse_signature_lists
from golden.capture import capture
from golden.model import BootApp, GoldenSet, digests
from golden.yamlfmt import dump_yaml
from verifier._cli import main as verifier_main
from verifier.appraisal import Verdict, appraise, compile_golden

from .conftest import CORPUS
from .logbuilder import variable_data, variable_name, variable_value

NOW = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
SB_LOG = CORPUS / "qemu-ovmf-debian12" / "secureboot-shim-grub-kernel.bin"
UKI_LOG = CORPUS / "qemu-ovmf-debian12" / "uki-systemd-stub.bin"
COS_LOG = CORPUS / "go-tpm-tools" / "cos-101-amd-sev.bin"
KERNEL = bytes.fromhex("6b1bf35c3bee9918250f593a6fff889c75c1e239cd2fe9e5bb0cd3de9dcb8e51")
NEW_KERNEL = hashlib.sha256(b"vmlinuz-6.1.0-57-amd64").digest()

# Logs that cannot appraise trusted against their own capture, and why.
NOT_SELF_TRUSTED = {
    "sb_cert_eventlog": "excerpt: only PCRs 0/4/5/7, separators missing in PCR1-3 and 6",
    "windows_gcp_shielded_vm.eventlog.bin": "only PCRs 0/4/5/7/11-14 logged: no separators in PCR1-3, 6",
    "event-uefiaction.bin": "two-event snippet",
    "event-uefiservices.bin": "two-event snippet",
    "event-uefivar.bin": "two-event snippet",
    "event.bin": "two-event snippet",
}
UNPARSEABLE = {
    "binary_bios_measurements-bogus",
    "binary_bios_measurements-empty",
    "specid-vendordata.bin",
    "short_no_action_eventlog",
}


def _logs() -> list[Path]:
    return sorted(
        p
        for p in CORPUS.glob("*/*")
        if p.suffix not in (".json", ".yaml", ".b64")
        and not p.name.endswith(".json")
        and p.name not in UNPARSEABLE
    )


def _vlog(data: bytes) -> BootLog:
    log = parse_event_log(data)
    bank = HashAlg.SHA256 if HashAlg.SHA256 in log.banks else log.banks[0]
    return assume_quoted_for_review(log, bank)


def _appraise(data: bytes, sets: list[GoldenSet]) -> Verdict:
    return appraise(_vlog(data), compile_golden(sets, now=NOW))


def _failed(verdict: Verdict) -> dict[str, list[dict[str, object]]]:
    out: dict[str, list[dict[str, object]]] = {}
    for c in verdict.checks:
        if c.status == "fail":
            out.setdefault(c.reason, []).append(c.to_json())
    return out


def _replace_digest(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) >= 1
    return data.replace(old, new)


def _set_type(data: bytes, index: int, new_type: int) -> bytes:
    log = parse_event_log(data)
    event = log.events[index]
    return data[: event.offset + 4] + struct.pack("<I", new_type) + data[event.offset + 8 :]


@pytest.mark.parametrize("path", _logs(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_captured_set_appraises_its_own_log_trusted(path: Path) -> None:
    data = path.read_bytes()
    verdict = _appraise(data, [capture(_vlog(data), name="self", version="1")])
    if path.name in NOT_SELF_TRUSTED:
        assert verdict.status == "untrusted"
        assert "separator_missing" in _failed(verdict)
    else:
        assert verdict.status == "trusted", verdict.reason
        assert all(c.status == "pass" for c in verdict.checks)


def test_set_from_another_machine_names_every_differing_component() -> None:
    other = capture(_vlog(COS_LOG.read_bytes()), name="cos", version="101")
    verdict = _appraise(SB_LOG.read_bytes(), [other])
    assert verdict.status == "untrusted"
    failed = _failed(verdict)
    assert {
        "scrtm_version_not_approved",
        "kek_not_approved",
        "boot_app_not_approved",
        "cmdline_not_approved",
        "sbat_level_not_approved",
    } <= set(failed)
    apps = failed["boot_app_not_approved"]
    assert {c["got"] for c in apps} == {
        "80a66d53a945d2286fcadd780fae1c225aa732079cd67b5225dc78aaab4e2ff8",
        "a68f6d71ebddaa19751ff8d729f67d11b0df8e4c49400c3e7e90de16119e1265",
        KERNEL.hex(),
    }
    assert all(c["pcr"] == 4 and "cos@101" in str(c["message"]) for c in apps)
    cmd = failed["cmdline_not_approved"][0]
    assert cmd["got"] == "/vmlinuz console=ttyS0,115200 panic=-1 loglevel=4"
    assert "/syslinux/vmlinuz.A" in str(cmd["expected"])


RUST_KEYLIME_LOG = CORPUS / "rust-keylime" / "uefi_log.bin"  # a 482-hash dbx, two certificates


@pytest.mark.parametrize("name", ["dbx", "db"])
def test_a_database_holds_a_required_id_only_as_one_entrys_whole_data(name: str) -> None:
    """db/dbx "must contain": the captured ids pass; an id the measured database holds only
    across two entries, inside an owner GUID, in upper case or not at all fails, named."""
    vlog = _vlog(RUST_KEYLIME_LOG.read_bytes())
    own = capture(vlog, name="own", version="1")
    sb = own.secure_boot
    field = "dbx_must_include" if name == "dbx" else "db_must_contain"
    captured = getattr(sb, field)
    assert len(captured) == (482 if name == "dbx" else 4)
    value = next(v for v in extract(vlog).variables[name])
    check = _contains_check(vlog, own, name)
    assert (check.status, check.message) == (
        "pass",
        f"{name} holds the {len(captured)} required entries",
    )
    hashes = [bytes.fromhex(i) for i in captured if bytes.fromhex(i) in value.value]
    at = value.value.index(hashes[-1] if name == "dbx" else b"\x30\x82")  # an entry's data
    fakes = [
        value.value[at + 8 : at + 40].hex(),  # across two entries (or inside a certificate)
        value.value[at - 16 : at + 16].hex(),  # an owner GUID and half an entry
        captured[0].upper(),
        hashlib.sha256(b"never measured").hexdigest(),
    ]
    for fake in fakes:
        g = dataclasses.replace(
            own, secure_boot=dataclasses.replace(sb, **{field: (*captured, fake)})
        )
        check = _contains_check(vlog, g, name)
        assert (check.status, check.reason, check.expected) == (
            "fail",
            f"{name}_missing_entries",
            fake,
        )
        assert check.got == f"{len(set(captured))} entries"


def test_a_dbx_measured_twice_holds_only_what_both_measurements_hold() -> None:
    """Two dbx measurements: a "must contain" check relies only on entries in both. A second
    measurement lacking one required hash fails, naming that hash, however whole the first is."""
    data = RUST_KEYLIME_LOG.read_bytes()
    log = parse_event_log(data)
    first = next(e for e in log.events if e.pcr == 7 and variable_name(e.data) == "dbx")
    own = capture(_vlog(data), name="own", version="1")
    value = variable_value(first.data)
    lists = parse_signature_lists(value)
    hashes = [e.data for x in lists if x.entries[0].kind == "sha256" for e in x.entries]
    certs = b"".join(
        value[_list_span(value, i)] for i, x in enumerate(lists) if x.entries[0].kind == "x509"
    )
    dropped, kept = hashes[0], hashes[1:]
    body = b"".join(bytes(16) + h for h in kept)
    sha256_list = SHA256_LIST_GUID + struct.pack("<III", 28 + len(body), 0, 48) + body
    second = certs + sha256_list
    vardata = variable_data("dbx", second, guid=first.data[:16])
    record = struct.pack("<III", 7, first.event_type, 1) + struct.pack("<H", int(HashAlg.SHA256))
    record += HashAlg.SHA256.hash(vardata) + struct.pack("<I", len(vardata)) + vardata
    after = log.events[first.index + 1].offset
    vlog = _vlog(data[:after] + record + data[after:])
    assert len(extract(vlog).variables["dbx"]) == 2
    check = _contains_check(vlog, own, "dbx")
    assert (check.status, check.reason, check.expected) == (
        "fail",
        "dbx_missing_entries",
        dropped.hex(),
    )
    assert check.got == f"{len(set(own.secure_boot.dbx_must_include)) - 1} entries"


SHA256_LIST_GUID = Guid.parse("c1c41626-504c-4092-aca9-41f936934328").raw  # EFI_CERT_SHA256


def _list_span(value: bytes, index: int) -> slice:
    """Where the ``index``-th EFI_SIGNATURE_LIST of ``value`` lies."""
    at = 0
    for _ in range(index):
        at += int.from_bytes(value[at + 16 : at + 20], "little")
    return slice(at, at + int.from_bytes(value[at + 16 : at + 20], "little"))


def _contains_check(vlog: BootLog, g: GoldenSet, name: str):  # type: ignore[no-untyped-def]
    """The check, compared by the entries' bytes (a database just checked) and by their names
    (capture named them): the two must agree."""
    policy = compile_golden([g], now=NOW)
    bootfacts.signature_database.cache_clear()
    by_bytes = appraise(vlog, policy)
    for v in extract(vlog).variables[name]:
        bootfacts.signature_ids(v.value)
    by_names = appraise(vlog, compile_golden([g], now=NOW))
    checks = [
        next(c for c in verdict.checks if c.id == f"secure_boot.{name}_contains")
        for verdict in (by_bytes, by_names)
    ]
    assert checks[0] == checks[1]
    return checks[0]


def test_secure_boot_required_but_off_is_untrusted() -> None:
    sb_set = capture(_vlog(SB_LOG.read_bytes()), name="sb", version="1")
    uki = _vlog(UKI_LOG.read_bytes())
    mixed = dataclasses.replace(
        capture(uki, name="uki", version="1"), secure_boot=sb_set.secure_boot
    )
    verdict = appraise(uki, compile_golden([mixed], now=NOW))
    assert verdict.status == "untrusted"
    check = next(c for c in verdict.checks if c.id == "secure_boot.enabled")
    assert (check.status, check.reason, check.got, check.expected) == (
        "fail",
        "secure_boot_disabled",
        "off",
        "on",
    )
    assert check.pcr == 7 and check.golden == "uki@1"


def test_one_changed_boot_app_digest_is_named() -> None:
    data = SB_LOG.read_bytes()
    golden = capture(_vlog(data), name="fleet", version="4")
    grub = bytes.fromhex("a68f6d71ebddaa19751ff8d729f67d11b0df8e4c49400c3e7e90de16119e1265")
    evil = hashlib.sha256(b"evil grub").digest()
    verdict = _appraise(_replace_digest(data, grub, evil), [golden])
    assert verdict.status == "untrusted"
    failed = _failed(verdict)
    assert list(failed) == ["boot_app_not_approved"]
    (check,) = failed["boot_app_not_approved"]
    assert check["got"] == evil.hex() and check["event"] == 29 and check["pcr"] == 4
    assert "fleet@4" in str(check["message"])


def _base_and_kernels() -> tuple[GoldenSet, GoldenSet, GoldenSet]:
    captured = capture(_vlog(SB_LOG.read_bytes()), name="base", version="1")
    base = dataclasses.replace(
        captured,
        boot_apps=tuple(a for a in captured.boot_apps if a.digests[HashAlg.SHA256] != KERNEL),
    )
    old = GoldenSet(
        name="kernel",
        version="6.1.0-56",
        boot_apps=(BootApp("kernel 6.1.0-56-amd64", "kernel", digests({HashAlg.SHA256: KERNEL})),),
    )
    new = GoldenSet(
        name="kernel",
        version="6.1.0-57",
        boot_apps=(
            BootApp("kernel 6.1.0-57-amd64", "kernel", digests({HashAlg.SHA256: NEW_KERNEL})),
        ),
    )
    return base, old, new


def test_revoking_the_set_that_approved_the_kernel_gives_the_reason() -> None:
    base, old, _ = _base_and_kernels()
    data = SB_LOG.read_bytes()
    assert _appraise(data, [base, old]).status == "trusted"
    revoked = old.with_status("revoked", "CVE-2026-4242: kernel privilege escalation")
    verdict = _appraise(data, [base, revoked])
    assert verdict.status == "untrusted"
    failed = _failed(verdict)["golden_revoked"]
    assert len(failed) == 2  # the kernel is measured twice
    assert all(
        "CVE-2026-4242" in str(c["message"]) and c["golden"] == "kernel@6.1.0-56" for c in failed
    )


def test_two_active_kernel_versions_both_trusted_until_the_old_is_retired() -> None:
    base, old, new = _base_and_kernels()
    old_log = SB_LOG.read_bytes()
    new_log = _replace_digest(old_log, KERNEL, NEW_KERNEL)
    assert _appraise(old_log, [base, old, new]).status == "trusted"
    assert _appraise(new_log, [base, old, new]).status == "trusted"
    retired = old.with_status("retired")
    assert _appraise(new_log, [base, retired, new]).status == "trusted"
    verdict = _appraise(old_log, [base, retired, new])
    assert verdict.status == "untrusted"
    assert {c["golden"] for c in _failed(verdict)["boot_app_retired"]} == {"kernel@6.1.0-56"}


def test_expired_set_approves_nothing() -> None:
    base, old, _ = _base_and_kernels()
    expired = dataclasses.replace(old, valid_until=NOW - dt.timedelta(days=1))
    verdict = _appraise(SB_LOG.read_bytes(), [base, expired])
    assert "boot_app_expired" in _failed(verdict)


@pytest.mark.parametrize("sets", [[], "retired"], ids=["no-sets", "all-retired"])
def test_empty_or_inactive_policy_is_never_trusted(sets: object) -> None:
    data = SB_LOG.read_bytes()
    golden = (
        [] if sets == [] else [capture(_vlog(data), name="x", version="1").with_status("retired")]
    )
    verdict = _appraise(data, golden)
    assert verdict.status == "untrusted"
    assert verdict.checks[0].reason == "no_golden_set_in_force"
    assert "boot_app_not_approved" in _failed(verdict) or "boot_app_retired" in _failed(verdict)


def test_separator_retyped_as_another_event_is_an_attack() -> None:
    data = SB_LOG.read_bytes()
    golden = capture(_vlog(data), name="fleet", version="1")
    log = parse_event_log(data)
    sep = next(e for e in log.events if e.pcr == 1 and e.event_type == EventType.EV_SEPARATOR)
    verdict = _appraise(_set_type(data, sep.index, EventType.EV_EFI_VARIABLE_BOOT), [golden])
    failed = _failed(verdict)
    assert verdict.status == "untrusted"
    assert failed["separator_digest_retyped"][0]["event"] == sep.index
    assert failed["separator_missing"][0]["pcr"] == 1


def test_event_type_not_allowed_in_its_pcr_fails() -> None:
    data = SB_LOG.read_bytes()
    golden = capture(_vlog(data), name="fleet", version="1")
    log = parse_event_log(data)
    action = next(e for e in log.events if e.pcr == 4 and e.event_type == EventType.EV_EFI_ACTION)
    verdict = _appraise(_set_type(data, action.index, EventType.EV_S_CRTM_VERSION), [golden])
    check = _failed(verdict)["event_type_not_allowed"][0]
    assert (check["pcr"], check["event"], check["got"]) == (4, action.index, "EV_S_CRTM_VERSION")


def test_sha1_bank_needs_a_set_that_allows_it() -> None:
    data = (CORPUS / "go-tpm-tools" / "debian-10.bin").read_bytes()
    golden = capture(_vlog(data), name="legacy", version="1")
    assert _appraise(data, [golden]).status == "trusted"
    verdict = _appraise(data, [dataclasses.replace(golden, allow_sha1=False)])
    assert "sha1_not_allowed" in _failed(verdict)


def test_verdict_json_has_the_documented_shape() -> None:
    data = SB_LOG.read_bytes()
    verdict = _appraise(data, [capture(_vlog(data), name="fleet", version="1")])
    doc = json.loads(json.dumps(verdict.to_json()))
    assert doc["status"] == "trusted"
    keys = {"id", "status", "reason", "pcr", "event", "got", "expected", "golden"}
    assert all(keys <= set(c) for c in doc["checks"])
    app = next(c for c in doc["checks"] if c["id"] == "boot.app")
    assert app["golden"] == "fleet@1" and app["pcr"] == 4


def test_eventlog_check_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    own = tmp_path / "own.yaml"
    own.write_text(dump_yaml(capture(_vlog(SB_LOG.read_bytes()), name="own", version="1")))
    other = tmp_path / "other.yaml"
    other.write_text(dump_yaml(capture(_vlog(COS_LOG.read_bytes()), name="cos", version="1")))
    assert verifier_main(["eventlog", "check", str(SB_LOG), "--golden", str(own), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "trusted"
    assert verifier_main(["eventlog", "check", str(SB_LOG), "--golden", str(other), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["status"] == "untrusted"
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 7)
    assert verifier_main(["eventlog", "check", str(junk), "--golden", str(own)]) == 2
