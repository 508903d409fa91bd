"""What a verified boot log says, pulled out once into plain values for the policy checks.

Only data the spec makes the digest cover is read as a value (Secure Boot variables, actions,
GRUB strings); where an event's data is not covered the fact is recorded as *uncovered* and the
check that needs it cannot pass. Boot applications, firmware blobs, initrds and MokLists are known
only by their digest in the verified bank. Decoding never raises: malformed data becomes an
``undecodable`` note that the checks turn into a failure.
"""

from __future__ import annotations

import functools
import hashlib
import operator
from dataclasses import dataclass, field

from assay.algorithms import HashAlg
from assay.errors import MalformedEvidence
from assay.eventlog import Event, VerifiedBootLog
from assay.events import EventType as T
from assay.uefi.signatures import parse_signature_data, parse_signature_lists
from assay.uefi.structures import parse_variable_data

from ._cache import ContentCache

EBS_INVOCATION = b"Exit Boot Services Invocation"
EBS_RETURNS = (
    b"Exit Boot Services Returned with Success",
    b"Exit Boot Services Returned with Failure",
)
DEBUG_MODE = b"UEFI Debug Mode"
DMA_DISABLED = b"DMA Protection Disabled"
LINUX_INITRD_TAG = 0x8F3B22EC
SB_VARIABLES = ("SecureBoot", "PK", "KEK", "db", "dbx")
# Event types as plain ints: the extraction loop compares every event's type, and an enum
# attribute lookup costs several times the comparison.
_S_CRTM_VERSION = int(T.EV_S_CRTM_VERSION)
_SEPARATOR = int(T.EV_SEPARATOR)
_IPL = int(T.EV_IPL)
_EVENT_TAG = int(T.EV_EVENT_TAG)
_EFI_ACTION = int(T.EV_EFI_ACTION)
_VARIABLE_DRIVER_CONFIG = int(T.EV_EFI_VARIABLE_DRIVER_CONFIG)
_VARIABLE_AUTHORITY = int(T.EV_EFI_VARIABLE_AUTHORITY)
_BOOT_SERVICES_APPLICATION = int(T.EV_EFI_BOOT_SERVICES_APPLICATION)
_DRIVERS = frozenset(
    int(t)
    for t in (
        T.EV_EFI_BOOT_SERVICES_DRIVER,
        T.EV_EFI_RUNTIME_SERVICES_DRIVER,
        T.EV_EFI_BOOT_SERVICES_APPLICATION,
    )
)
_FIRMWARE_CODE = frozenset(
    int(t)
    for t in (
        T.EV_S_CRTM_CONTENTS,
        T.EV_EFI_PLATFORM_FIRMWARE_BLOB,
        T.EV_EFI_PLATFORM_FIRMWARE_BLOB2,
        T.EV_POST_CODE,
        T.EV_POST_CODE2,
        T.EV_CPU_MICROCODE,
        T.EV_EFI_HCRTM_EVENT,
    )
)
_EBS_ACTIONS = (EBS_INVOCATION, *EBS_RETURNS)
_SEPARATOR_VALUES = (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff")
_SEPARATOR_DIGESTS: dict[HashAlg, frozenset[bytes]] = {}
_CMDLINE_PREFIXES = (b"kernel_cmdline: ", b"grub_kernel_cmdline ")
_PCR_AND_TYPE = operator.itemgetter(1, 2)  # Event is a NamedTuple: (index, pcr, event_type, …)


@dataclass(frozen=True, slots=True)
class Variable:
    """A Secure Boot variable as measured into PCR7 (value is None when not covered/undecodable)."""

    event: Event
    value: bytes | None
    problem: str | None = None


@dataclass(slots=True)
class BootFacts:
    """Facts from one verified log, in its bank. Built by :func:`extract`; never mutated after.

    ``by_pcr`` holds the events of PCR0–7 (the separator checks read them) and ``separators``
    where the EV_SEPARATORs are among them; ``suspicious`` the
    events in PCR0–7 carrying a separator digest under another type or data their digest does
    not cover.
    """

    events: tuple[Event, ...] = ()
    by_pcr: dict[int, list[Event]] = field(default_factory=dict)
    separators: dict[int, list[int]] = field(default_factory=dict)  # positions in by_pcr[pcr]
    scrtm_versions: list[tuple[Event, str | None]] = field(default_factory=list)
    firmware_code: list[Event] = field(default_factory=list)
    variables: dict[str, Variable] = field(default_factory=dict)
    pcr7_actions: list[tuple[Event, bytes | None]] = field(default_factory=list)
    sbat_levels: list[tuple[Event, str | None]] = field(default_factory=list)
    boot_apps: list[Event] = field(default_factory=list)
    drivers: list[Event] = field(default_factory=list)
    ebs_events: list[Event] = field(default_factory=list)
    cmdlines: list[tuple[Event, str | None]] = field(default_factory=list)
    initrds: list[Event] = field(default_factory=list)
    moklists: dict[str, list[Event]] = field(default_factory=dict)
    suspicious: list[Event] = field(default_factory=list)
    type_pairs: frozenset[tuple[int, int]] = frozenset()

    def events_not_in(self, allowed: dict[int, frozenset[int]]) -> list[Event]:
        """Events whose type is not in ``allowed`` for their PCR (checked per distinct pair),
        grouped by PCR in the order the PCRs first appear in the log."""
        bad = {(p, t) for p, t in self.type_pairs if t not in allowed.get(p, ())}
        if not bad:
            return []
        rank = {pcr: i for i, pcr in enumerate(dict.fromkeys(e.pcr for e in self.events))}
        found = [e for e in self.events if (e.pcr, e.event_type) in bad]
        return sorted(found, key=lambda e: rank[e.pcr])


def scrtm_text(data: bytes) -> str:
    """An S-CRTM version as text: the UTF-16 string when it is one, else ``hex:<bytes>``."""
    if len(data) >= 2 and len(data) % 2 == 0:
        try:
            text = data.decode("utf-16-le").rstrip("\x00")
        except UnicodeDecodeError:
            text = ""
        if text and text.isprintable():
            return text
    return "hex:" + data.hex()


def _text(raw: bytes) -> str | None:
    """A GRUB / systemd-boot string: ASCII/UTF-8, or UTF-16LE when it looks like it."""
    if len(raw) >= 2 and raw[1:2] == b"\x00" and len(raw) % 2 == 0:
        try:
            return raw.decode("utf-16-le").rstrip("\x00")
        except UnicodeDecodeError:
            return None
    try:
        return raw.rstrip(b"\x00").decode("utf-8")
    except UnicodeDecodeError:
        return None


@functools.lru_cache(maxsize=1024)
def signature_ids(value: bytes) -> frozenset[str]:
    """Entries of a signature database as ids: SHA-256 of each certificate's DER, else the hash hex.

    Cached by content: PK/KEK/db/dbx are identical across a fleet's boots, and a 400-entry dbx is
    the costliest thing in an appraisal. Raises MalformedEvidence for a malformed database.
    """
    out: set[str] = set()
    for sig_list in parse_signature_lists(value, where="signature database"):
        for entry in sig_list.entries:
            out.add(
                hashlib.sha256(entry.data).hexdigest() if entry.kind == "x509" else entry.data.hex()
            )
    return frozenset(out)


def authority_id(data: bytes) -> str:
    entry = parse_signature_data(data)
    return hashlib.sha256(entry.data).hexdigest() if entry.kind == "x509" else entry.data.hex()


def separator_digests(bank: HashAlg) -> frozenset[bytes]:
    """The digests of the two separator values in ``bank``."""
    got = _SEPARATOR_DIGESTS.get(bank)
    if got is None:
        got = _SEPARATOR_DIGESTS[bank] = frozenset(bank.hash(v) for v in _SEPARATOR_VALUES)
    return got


# Decoded UEFI_VARIABLE_DATA (name, value) of well-formed events, and whether an event's data is
# covered by its digest (``VerifiedBootLog.data_covered``, a pure function of the event's type,
# digest and data), kept by content across logs.
_VARIABLES: ContentCache[tuple[str, bytes]] = ContentCache(16 * 1024 * 1024)
_COVERED: ContentCache[tuple[bool | None]] = ContentCache(16 * 1024 * 1024)


def _covered(vlog: VerifiedBootLog, e: Event, digest: bytes | None) -> bool | None:
    """``vlog.data_covered(e)``, answered from an earlier log with these exact bytes if any."""
    if digest is None:
        return vlog.data_covered(e)
    key = (vlog.bank, e.event_type, digest)
    hit = _COVERED.get(key, e.data)
    if hit is None:
        hit = (vlog.data_covered(e),)
        _COVERED.put(key, e.data, hit)
    return hit[0]


def _variable(
    vlog: VerifiedBootLog, event: Event, covered: bool | None
) -> tuple[str, Variable] | None:
    key = (vlog.bank, event.event_type, event.digests.get(vlog.bank, b""))
    var = _VARIABLES.get(key, event.data)
    if var is None:
        try:
            parsed = parse_variable_data(event.data, where=f"event {event.index}")
        except MalformedEvidence as exc:
            return None if event.pcr != 7 else ("?", Variable(event, None, f"undecodable: {exc}"))
        var = (parsed.name, parsed.data)
        _VARIABLES.put(key, event.data, var)
    if covered is not True:
        return var[0], Variable(event, None, "event data not covered by its digest")
    return var[0], Variable(event, var[1])


def _pcr7(vlog: VerifiedBootLog, facts: BootFacts, e: Event, covered: bool | None) -> None:
    et = e.event_type
    if et == _VARIABLE_DRIVER_CONFIG:
        got = _variable(vlog, e, covered)
        if got is not None and (got[0] in SB_VARIABLES or got[0] == "?"):
            facts.variables.setdefault(got[0], got[1])
    elif et == _EFI_ACTION:
        facts.pcr7_actions.append((e, e.data if covered else None))
    elif et == _VARIABLE_AUTHORITY:
        got = _variable(vlog, e, covered)
        if got is not None and got[0] == "SbatLevel":
            value = got[1].value
            facts.sbat_levels.append(
                (e, None if value is None else value.decode("utf-8", "replace"))
            )


def _os_pcrs(vlog: VerifiedBootLog, facts: BootFacts, e: Event) -> None:
    if e.event_type == _IPL:
        data = e.data
        for prefix in _CMDLINE_PREFIXES:
            if data.startswith(prefix):
                covered = vlog.data_covered(e) is True
                facts.cmdlines.append((e, _text(data[len(prefix) :]) if covered else None))
                return
        if e.pcr == 14 and data.rstrip(b"\x00") in (b"MokList", b"MokListX"):
            facts.moklists.setdefault(data.rstrip(b"\x00").decode(), []).append(e)
        elif e.pcr in (8, 12) and data[1:2] == b"\x00":  # systemd-boot: UTF-16LE command line
            facts.cmdlines.append((e, _text(data) if vlog.data_covered(e) is True else None))
        elif e.pcr == 9 and b"initrd" in data:
            facts.initrds.append(e)
    elif e.event_type == _EVENT_TAG and e.pcr == 9 and len(e.data) >= 8:
        tag = int.from_bytes(e.data[:4], "little")
        if tag == LINUX_INITRD_TAG:
            facts.initrds.append(e)
        # LINUX_LOAD_OPTIONS_TAG: the data is only a description; the digest is of the load
        # options, which the log does not carry, so there is no command-line text to check.


def extract(vlog: VerifiedBootLog) -> BootFacts:
    """The log's facts, computed once per verified log (a node re-attesting within one boot keeps
    its VerifiedBootLog, so re-appraisal against a changed policy does not re-decode anything).

    The facts are a pure function of the log and its bank, and BootFacts is never mutated.
    """
    return vlog.memo("appraisal.facts", _extract)


def _extract(vlog: VerifiedBootLog) -> BootFacts:
    """One pass over the verified events (log order) collecting every fact the checks use.

    Coverage is checked where the appraisal reads event data: PCR0–7 (S-CRTM version, variables,
    actions, separators) here, and the kernel command line where it is read. GRUB's other commands
    (most of a log), file names and MokList names in PCR8/9/14 are never read as values, so they
    are neither hashed nor looked at beyond their prefix."""
    events = vlog.events
    facts = BootFacts(events=events, type_pairs=frozenset(map(_PCR_AND_TYPE, events)))
    bank = vlog.bank
    seps = separator_digests(bank)
    by_pcr = facts.by_pcr
    for e in events:
        pcr = e.pcr
        if pcr >= 8:
            if pcr == 8 and e.data.startswith(b"grub_cmd"):  # neither command line nor initrd
                continue
            _os_pcrs(vlog, facts, e)
            continue
        et = e.event_type
        group = by_pcr.get(pcr)
        if group is None:
            group = by_pcr[pcr] = []
        if et == _SEPARATOR:
            facts.separators.setdefault(pcr, []).append(len(group))
        group.append(e)
        digest = e.digests.get(bank)
        covered = _covered(vlog, e, digest)
        if covered is False or (et != _SEPARATOR and digest in seps):
            facts.suspicious.append(e)
        if pcr == 7:
            _pcr7(vlog, facts, e, covered)
        elif pcr == 0:
            if et == _S_CRTM_VERSION:
                text = scrtm_text(e.data) if covered is True else None
                facts.scrtm_versions.append((e, text))
            elif et in _FIRMWARE_CODE:
                facts.firmware_code.append(e)
        elif pcr == 4:
            if et == _BOOT_SERVICES_APPLICATION:
                facts.boot_apps.append(e)
        elif pcr == 2:
            if et in _DRIVERS:
                facts.drivers.append(e)
        elif pcr == 5 and et == _EFI_ACTION and e.data in _EBS_ACTIONS:
            facts.ebs_events.append(e)
    return facts
