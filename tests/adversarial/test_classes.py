"""Issue 10's classes of false "trusted", one named test each, on the real Debian Secure Boot log.

The golden set is the log's own capture; each test makes the log tell a lie that a node with a
genuine quote could tell (every extended digest kept; types, uncovered data and the story around
an evil digest rewritten) and asserts the exact reason the closed-world appraisal gives. The log
replays to itself here (``assume_quoted_for_review``), which is what a genuine quote of the evil
boot would say; ``test_generated_swtpm`` does the same against a real swtpm quote.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import struct

import pytest

from assay.algorithms import HashAlg
from assay.eventlog import assume_quoted_for_review, parse_event_log
from assay.events import EventType as T
from golden.capture import capture
from golden.model import GoldenSet
from testkit.quotes import quote_of
from verifier.appraisal import Check, Verdict, appraise, compile_golden

from . import forge
from .forge import SB_LOG, insert_before, record, remove, replace, variable

NOW = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
GOLDEN = capture(
    assume_quoted_for_review(parse_event_log(SB_LOG), HashAlg.SHA256), name="sb", version="1"
)
PK, KEK, SEPARATOR7, GRUB, SHIM = 5, 6, 9, 29, 23
CMDLINE, INITRD_CMD = 45, 46
MOKLIST, MOKLISTX, MOKLIST_TRUSTED, SBAT = 24, 25, 27, 26
EFI_CERT_SHA256 = bytes.fromhex("2616c4c14c509240aca941f936934328")


def _verdict(data: bytes, golden: GoldenSet = GOLDEN) -> Verdict:
    vlog = assume_quoted_for_review(parse_event_log(data), HashAlg.SHA256)
    return appraise(vlog, compile_golden([golden], now=NOW))


def _fails(verdict: Verdict) -> dict[str, list[Check]]:
    out: dict[str, list[Check]] = {}
    for c in verdict.checks:
        if c.status != "pass":
            out.setdefault(c.reason, []).append(c)
    return out


def _siglist(entry: bytes) -> bytes:
    """An EFI_SIGNATURE_LIST of one SHA-256 entry (the attacker's key database)."""
    owner = b"\x11" * 16
    return EFI_CERT_SHA256 + struct.pack("<III", 28 + 48, 0, 48) + owner + entry


EVIL_DB = _siglist(b"\xee" * 32)


def test_the_unmodified_log_is_trusted() -> None:
    verdict = _verdict(SB_LOG)
    assert verdict.status == "trusted", verdict.reason
    accounted = next(c for c in verdict.checks if c.id == "events.accounted")
    assert accounted.status == "pass" and "accounted for" in accounted.message


# --- retyped events (the event type is not covered by the digest) -------------------------------


@pytest.mark.parametrize("as_type", [T.EV_IPL, T.EV_EFI_BOOT_SERVICES_DRIVER, T.EV_EFI_ACTION])
def test_unapproved_boot_loader_retyped_in_pcr4(as_type: T) -> None:
    """GRUB replaced by an unknown binary that the log calls something other than an application."""
    grub = parse_event_log(SB_LOG).events[GRUB]
    evil = record(4, as_type, grub.data, measured=b"an unapproved boot loader")
    fails = _fails(_verdict(replace(SB_LOG, GRUB, evil)))
    (check,) = fails["event_not_accounted"]
    assert (check.pcr, check.event) == (4, GRUB)
    assert check.got == HashAlg.SHA256.hash(b"an unapproved boot loader").hex()
    assert T(as_type).name in check.message


@pytest.mark.parametrize("as_type", [T.EV_NONHOST_CODE, T.EV_NONHOST_INFO, T.EV_EFI_HANDOFF_TABLES])
def test_unapproved_firmware_blob_retyped_in_pcr0(as_type: T) -> None:
    data = insert_before(SB_LOG, 3, record(0, as_type, b"\x00" * 16, measured=b"implant"))
    fails = _fails(_verdict(data))
    (check,) = fails["event_not_accounted"]
    assert (check.pcr, check.event) == (0, 3)
    assert check.got == HashAlg.SHA256.hash(b"implant").hex()


@pytest.mark.parametrize(
    ("index", "name", "reason"), [(PK, "PK", "pk_not_approved"), (KEK, "KEK", "kek_not_approved")]
)
def test_attackers_key_database_retyped_as_an_authority(index: int, name: str, reason: str) -> None:
    """A PK/KEK the log calls EV_EFI_VARIABLE_AUTHORITY is still read as the PK/KEK it covers."""
    evil = record(7, T.EV_EFI_VARIABLE_AUTHORITY, variable(name, EVIL_DB))
    fails = _fails(_verdict(replace(SB_LOG, index, evil)))
    assert fails[reason][0].got == "ee" * 32
    assert set(fails) == {reason}


def test_attackers_pk_measured_into_pcr1_is_still_the_pk() -> None:
    data = insert_before(SB_LOG, 10, record(1, T.EV_EFI_VARIABLE_BOOT, variable("PK", EVIL_DB)))
    fails = _fails(_verdict(data))
    assert fails["pk_not_approved"][0].got == "ee" * 32


@pytest.mark.parametrize(
    ("marker", "reason"),
    [
        (b"UEFI Debug Mode", "uefi_debug_mode"),
        (b"DMA Protection Disabled", "dma_protection_disabled"),
    ],
)
def test_unsafe_platform_state_retyped_as_a_variable(marker: bytes, reason: str) -> None:
    """The digest says "UEFI Debug Mode"; the log claims a harmless variable in its place."""
    lie = record(7, T.EV_EFI_VARIABLE_DRIVER_CONFIG, variable("Harmless", b"\x00"), measured=marker)
    fails = _fails(_verdict(insert_before(SB_LOG, SEPARATOR7, lie)))
    assert fails[reason][0].event == SEPARATOR7
    assert fails[reason][0].id.startswith("platform.")


def test_evil_kernel_command_line_retyped_as_an_event_tag() -> None:
    lie = record(8, T.EV_EVENT_TAG, b"kernel_cmdline: whatever", measured=b"/vmlinuz init=/bin/sh")
    fails = _fails(_verdict(insert_before(SB_LOG, INITRD_CMD, lie)))
    (check,) = fails["event_not_accounted"]
    assert (check.pcr, check.event) == (8, INITRD_CMD)


# --- relabelled data that the digest does not cover ---------------------------------------------


def test_evil_kernel_command_line_relabelled_as_a_grub_command() -> None:
    """GRUB's "kernel_cmdline: " / "grub_cmd: " prefix is not covered; the text after it is."""
    lie = record(8, T.EV_IPL, b"grub_cmd: /vmlinuz init=/bin/sh", measured=b"/vmlinuz init=/bin/sh")
    fails = _fails(_verdict(insert_before(SB_LOG, INITRD_CMD, lie)))
    (check,) = fails["event_not_accounted"]
    assert (check.pcr, check.event, check.got) == (
        8,
        INITRD_CMD,
        HashAlg.SHA256.hash(b"/vmlinuz init=/bin/sh").hex(),
    )


def test_unapproved_moklist_described_as_moklistrt() -> None:
    lie = record(14, T.EV_IPL, b"MokListRT\x00", measured=b"the attacker's MOK")
    fails = _fails(_verdict(replace(SB_LOG, MOKLIST, lie)))
    assert fails["moklist_not_approved"][0].event == MOKLIST
    assert fails["moklist_missing"][0].pcr == 14


def test_attackers_pk_under_the_data_only_workaround_named_pkx() -> None:
    """Under variable-digest-over-data-only the name is not covered: "PKX" decides nothing."""
    lie = record(7, T.EV_EFI_VARIABLE_DRIVER_CONFIG, variable("PKX", EVIL_DB), measured=EVIL_DB)
    verdict = _verdict(insert_before(SB_LOG, SEPARATOR7, lie))
    fails = _fails(verdict)
    (check,) = fails["event_not_accounted"]
    assert (check.pcr, check.event) == (7, SEPARATOR7)
    used = [c for c in verdict.checks if c.id == "workaround.variable-digest-over-data-only"]
    assert [(c.pcr, c.event, c.reason) for c in used] == [(7, SEPARATOR7, "workaround_applied")]


# --- absence taken for approval ------------------------------------------------------------------


def _without(*indices: int) -> bytes:
    data = SB_LOG
    for index in sorted(indices, reverse=True):
        data = remove(data, index)
    return data


@pytest.mark.parametrize(
    ("indices", "reasons"),
    [
        ((23, 29, 43, 44), {"boot_app_missing"}),
        ((2, 3), {"firmware_blob_missing"}),
        ((MOKLIST, MOKLISTX, MOKLIST_TRUSTED), {"moklist_missing", "moklistx_missing"}),
        ((SBAT,), {"sbat_level_missing"}),
        ((PK,), {"secure_boot_variable_missing"}),
        ((KEK,), {"secure_boot_variable_missing"}),
    ],
    ids=["no-boot-app", "no-firmware-blobs", "no-pcr14", "no-sbatlevel", "no-pk", "no-kek"],
)
def test_a_pinned_component_never_measured_is_a_failure(
    indices: tuple[int, ...], reasons: set[str]
) -> None:
    verdict = _verdict(_without(*indices))
    assert verdict.status == "untrusted"
    assert set(_fails(verdict)) == reasons


def test_a_boot_order_stage_never_measured_is_a_failure() -> None:
    """The set pins shim → loader → kernel; a log without the kernel stage is not in order."""
    golden = dataclasses.replace(GOLDEN, boot_order=("shim", "loader", "kernel"))
    roles = {SHIM: "shim", GRUB: "loader", 43: "kernel", 44: "kernel"}
    events = parse_event_log(SB_LOG).events
    apps = tuple(
        dataclasses.replace(
            a,
            role=roles[
                next(
                    i
                    for i in roles
                    if events[i].digests[HashAlg.SHA256] == a.digests[HashAlg.SHA256]
                )
            ],
        )  # type: ignore[arg-type]
        for a in golden.boot_apps
    )
    golden = dataclasses.replace(golden, boot_apps=apps)
    assert _verdict(SB_LOG, golden).status == "trusted"
    fails = _fails(_verdict(_without(43, 44), golden))
    assert fails["boot_stage_missing"][0].expected == "shim → loader → kernel"


def test_a_pcr_value_seen_without_events_never_vouches_for_another_logs_events() -> None:
    """The closed world keeps, per verified PCR value, which digests were extended (the value
    names them). A quoted PCR8 whose value came from extends outside the log names nothing: a
    later log whose own events replay to that same value is still checked event by event."""

    from assay.eventlog import replay, verify_log

    evil = insert_before(
        SB_LOG, INITRD_CMD, record(8, T.EV_IPL, b"grub_cmd: insmod evil", measured=b"insmod evil")
    )
    log = parse_event_log(evil)
    pcrs = dict(replay(log, (HashAlg.SHA256,)).pcrs[HashAlg.SHA256])

    no_pcr8 = b"".join(
        forge.raw_event(SB_LOG, e.index) if e.index else b""
        for e in parse_event_log(SB_LOG).events
        if e.pcr != 8
    )
    header = SB_LOG[: parse_event_log(SB_LOG).events[1].offset]
    without = header + no_pcr8
    first = verify_log(parse_event_log(without), quote_of({HashAlg.SHA256: pcrs}), HashAlg.SHA256)
    assert 8 in first.pcrs and not first.events_in(8)  # PCR8's value, but no PCR8 events
    appraise(first, compile_golden([GOLDEN], now=NOW))
    second = verify_log(log, quote_of({HashAlg.SHA256: pcrs}), HashAlg.SHA256)
    fails = _fails(appraise(second, compile_golden([GOLDEN], now=NOW)))
    assert [(c.pcr, c.event) for c in fails["event_not_accounted"]] == [(8, INITRD_CMD)]
