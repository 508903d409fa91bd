"""What a verified boot log says, pulled out once into plain values for the policy checks.

Values are read by *what the digest covers*, never by the event type or by data the digest does
not cover (an attacker with a genuine quote can rewrite both):

- Secure Boot variables (SecureBoot, PK, KEK, db, dbx) and SbatLevel are every event in PCR1/PCR7
  whose whole data is covered by its digest and parses as UEFI_VARIABLE_DATA with that name,
  whatever type it claims; a workaround that leaves the name uncovered leaves no variable;
- ExitBootServices, "UEFI Debug Mode" and "DMA Protection Disabled" are known by their digests;
- separators in PCR0–7 are events carrying a separator digest, whatever their type.

The event type still chooses which list an event is shown against (boot application, firmware
blob, command line, …) — a hint for messages; the closed-world check (``_ledger``) makes every digest
of a relied-on PCR answer to an approved or spec-fixed value regardless. Boot applications, firmware
blobs, initrds and MokLists are known only by their digest in the verified bank.
"""

from __future__ import annotations

import functools
import hashlib
import operator
from collections import Counter
from dataclasses import dataclass, field

from .algorithms import HashAlg
from .errors import MalformedEvidence
from .eventlog import AppliedWorkaround, BootLog, Event
from .eventlog._caches import DigestCounts
from .eventlog._coverage import CHECKED_TYPES, coverage_of
from .eventlog._workarounds import COVERAGE_WORKAROUNDS, Workaround
from .events import EventType as ET
from .events import event_type_name
from .pcclient import EBS_ACTIONS, PLATFORM_STATES, separator_digests, special_digests
from .uefi.sigdb import SignatureDatabase, check_signature_database
from .uefi.signatures import parse_signature_data, signature_data_id
from .uefi.structures import variable_name_value

LINUX_INITRD_TAG = 0x8F3B22EC
LINUX_LOAD_OPTIONS_TAG = 0x8F3B22ED
SB_VARIABLES = ("SecureBoot", "PK", "KEK", "db", "dbx")
# The UTF-16LE names the appraisal reads a value for, by length: a peek at a UEFI_VARIABLE_DATA's
# name (offset 32) rules out most variables (Boot####, BootOrder, …) before anything is hashed.
_VALUE_NAMES = frozenset(n.encode("utf-16-le") for n in (*SB_VARIABLES, "SbatLevel"))
_VALUE_NAME_LENGTHS = frozenset(len(n) // 2 for n in _VALUE_NAMES)
# Event types as plain ints: the extraction loop compares every event's type, and an enum
# attribute lookup costs several times the comparison.
_S_CRTM_VERSION = int(ET.EV_S_CRTM_VERSION)
_SEPARATOR = int(ET.EV_SEPARATOR)
_IPL = int(ET.EV_IPL)
_EVENT_TAG = int(ET.EV_EVENT_TAG)
_EFI_ACTION = int(ET.EV_EFI_ACTION)
_VARIABLE_DRIVER_CONFIG = int(ET.EV_EFI_VARIABLE_DRIVER_CONFIG)
_VARIABLE_AUTHORITY = int(ET.EV_EFI_VARIABLE_AUTHORITY)
_BOOT_SERVICES_APPLICATION = int(ET.EV_EFI_BOOT_SERVICES_APPLICATION)
_DRIVERS = frozenset(
    int(t)
    for t in (
        ET.EV_EFI_BOOT_SERVICES_DRIVER,
        ET.EV_EFI_RUNTIME_SERVICES_DRIVER,
        ET.EV_EFI_BOOT_SERVICES_APPLICATION,
    )
)
_FIRMWARE_CODE = frozenset(
    int(t)
    for t in (
        ET.EV_S_CRTM_CONTENTS,
        ET.EV_EFI_PLATFORM_FIRMWARE_BLOB,
        ET.EV_EFI_PLATFORM_FIRMWARE_BLOB2,
        ET.EV_POST_CODE,
        ET.EV_POST_CODE2,
        ET.EV_CPU_MICROCODE,
        ET.EV_EFI_HCRTM_EVENT,
    )
)
_CMDLINE_PREFIXES = (b"kernel_cmdline: ", b"grub_kernel_cmdline ")
_COVERAGE_TOUCHES = frozenset(
    (pcr, t) for w in COVERAGE_WORKAROUNDS for pcr in w.pcrs for t in w.event_types
)
# Extraction visits every PCR0–7 event, so it meets every use of a coverage workaround.
assert {pcr for pcr, _ in _COVERAGE_TOUCHES} <= set(range(8))


_PCR_AND_TYPE = operator.itemgetter(1, 2)
_PCR = operator.itemgetter(1)
_DIGESTS = operator.itemgetter(3)
_GET = functools.partial(
    operator.methodcaller, "get"
)  # Event is a NamedTuple: (index, pcr, event_type, …)


@dataclass(frozen=True, slots=True)
class Variable:
    """A UEFI variable whose whole UEFI_VARIABLE_DATA is covered by the event's digest."""

    event: Event
    value: bytes


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
    variables: dict[str, list[Variable]] = field(default_factory=dict)
    authorities: list[tuple[Event, bytes]] = field(default_factory=list)  # covered "db" entries
    platform_states: list[tuple[Event, bytes]] = field(default_factory=list)  # debug, DMA off
    sbat_levels: list[tuple[Event, str]] = field(default_factory=list)
    boot_apps: list[Event] = field(default_factory=list)
    drivers: list[Event] = field(default_factory=list)
    ebs_events: list[tuple[Event, bytes]] = field(default_factory=list)  # by digest
    cmdlines: list[tuple[Event, str | None]] = field(default_factory=list)
    initrds: list[Event] = field(default_factory=list)
    load_options: list[Event] = field(default_factory=list)  # PCR9, the Linux EFI stub's
    pcr14: list[Event] = field(default_factory=list)
    workarounds: list[AppliedWorkaround] = field(default_factory=list)  # coverage ones, PCR0-7

    def in_pcr(self, pcr: int) -> list[Event]:
        """Every event of ``pcr``, in log order."""
        if pcr <= 7:
            return self.by_pcr.get(pcr, [])
        return [e for e in self.events if e.pcr == pcr]

    suspicious: list[Event] = field(default_factory=list)
    odd_separators: list[Event] = field(
        default_factory=list
    )  # EV_SEPARATOR, not a separator digest
    type_pairs: frozenset[tuple[int, int]] = frozenset()
    pcrs_with_events: frozenset[int] = frozenset()

    def variable(self, name: str) -> Variable | None:
        """The one measurement of ``name`` (None when absent; several are reported by the checks)."""
        found = self.variables.get(name)
        return found[0] if found else None

    def events_not_in(self, allowed: dict[int, frozenset[int]]) -> list[Event]:
        """Events whose type is not in ``allowed`` for their PCR (checked per distinct pair),
        grouped by PCR in the order the PCRs first appear in the log."""
        bad = {(p, t) for p, t in self.type_pairs if t not in allowed.get(p, ())}
        if not bad:
            return []
        rank = {pcr: i for i, pcr in enumerate(dict.fromkeys(e.pcr for e in self.events))}
        found = [e for e in self.events if (e.pcr, e.event_type) in bad]
        return sorted(found, key=lambda e: rank[e.pcr])


def load_options_forms(cmdline: str) -> tuple[bytes, ...]:
    """The LoadOptions that carry ``cmdline`` to the Linux EFI stub, as each loader passes them (the
    stub measures them into PCR9 as they are), established from real logs in the corpus:

    - GRUB 2.12 (``kernel_cmdline: <text>`` logged in PCR8): UTF-16LE ``BOOT_IMAGE=<text>``, no NUL
      (go-tpm-tools ubuntu-2404-amd-sevsnp);
    - systemd-stub (a UKI's ``.cmdline``) and OVMF direct boot without an initrd: UTF-16LE text and
      NUL (qemu-ovmf-debian12 uki-systemd-stub);
    - OVMF direct boot (``qemu -kernel -initrd -append``): UTF-16LE text, `` initrd=initrd`` and NUL
      (qemu-ovmf-debian12 direct-kernel-boot).
    """
    return (
        ("BOOT_IMAGE=" + cmdline).encode("utf-16-le"),
        (cmdline + "\x00").encode("utf-16-le"),
        (cmdline + " initrd=initrd\x00").encode("utf-16-le"),
    )


def where(e: Event) -> str:
    """``PCR4 event 23 (EV_EFI_BOOT_SERVICES_APPLICATION)``: how every check names an event."""
    return _where(e.pcr, e.index, e.event_type)


@functools.lru_cache(maxsize=8192)
def _where(pcr: int, index: int, event_type: int) -> str:
    return f"PCR{pcr} event {index} ({event_type_name(event_type)})"


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


def grub_text(raw: bytes) -> str | None:
    """A GRUB / systemd-boot string (without its prefix): ASCII/UTF-8, or UTF-16LE when it looks
    like it."""
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
def signature_database(value: bytes) -> SignatureDatabase:
    """A signature database checked (certificates validated), its entries named on demand.

    Cached by content: PK/KEK/db/dbx are identical across a fleet's boots, and a 400-entry dbx is
    the costliest thing in an appraisal. Raises MalformedEvidence for a malformed database.
    """
    return check_signature_database(value, where="signature database")


def signature_ids(value: bytes) -> frozenset[str]:
    """Entries of a signature database as ids: SHA-256 of each certificate's DER, else the hash hex
    (named once per cached :func:`signature_database`)."""
    return signature_database(value).ids


@functools.lru_cache(maxsize=1024)
def authority_id(data: bytes) -> str | None:
    """The id of an EFI_SIGNATURE_DATA (an image's verifying authority), as :func:`signature_ids`
    names database entries; None when malformed. Cached by content like the databases."""
    try:
        entry = parse_signature_data(data)
    except MalformedEvidence:
        return None
    return hashlib.sha256(entry.data).hexdigest() if entry.kind == "x509" else entry.data.hex()


def authority_in(data: bytes, ids: frozenset[str], certificates: frozenset[str]) -> bool:
    """``authority_id(data) in ids``, where ``certificates`` are ids of certificates already
    validated (a :class:`~assay.uefi.sigdb.SignatureDatabase`'s): a certificate byte-identical to
    one of them (the same SHA-256) is not validated a second time."""
    got = signature_data_id(data)
    if got is None or got[0] not in ids:
        return False
    aid, is_certificate = got
    return not is_certificate or aid in certificates or authority_id(data) is not None


def _covered(
    vlog: BootLog, e: Event, digest: bytes | None
) -> tuple[bool | None, Workaround | None, str]:
    """(whether ``e``'s data is covered, the coverage workaround it needed, its detail) for an event
    of a checked type the verifier's coverage cache has not got (extraction looked): computed and
    kept there by content, as ``data_covered`` would."""
    if digest is None:
        return False, None, ""
    return coverage_of(e.event_type, e.data, digest, vlog.bank, vlog.caches.coverage)


def _variable(vlog: BootLog, event: Event) -> tuple[str, bytes] | None:
    """(name, value) of a fully covered, well-formed UEFI_VARIABLE_DATA, else None."""
    key = (vlog.bank, event.event_type, event.digests.get(vlog.bank, b""))
    cache = vlog.caches.variables
    var = cache.get(key, event.data)
    if var is None:
        var = variable_name_value(event.data)
        if var is None:
            return None
        cache.put(key, event.data, var)
    return var


def _pcr7(vlog: BootLog, facts: BootFacts, e: Event, full: bool, special: bytes | None) -> None:
    if special in PLATFORM_STATES:  # the digest says what happened, whatever the data claims
        facts.platform_states.append((e, special))
        return
    if full:
        _variable_fact(vlog, facts, e)


def _names_a_value(data: bytes) -> bool:
    """Whether ``data`` could be a UEFI_VARIABLE_DATA of a variable the appraisal reads."""
    if len(data) < 36:
        return False
    n = int.from_bytes(data[16:24], "little")
    return n in _VALUE_NAME_LENGTHS and data[32 : 32 + 2 * n] in _VALUE_NAMES


def _variable_fact(vlog: BootLog, facts: BootFacts, e: Event) -> None:
    """Record a fully covered variable (its digest of all the data: an EV_EFI_VARIABLE_BOOT hashed
    over its VariableData only is not, see ``coverage_of``) by its covered name: Secure Boot
    databases, SbatLevel, and
    the ``db`` entry an image was verified with (EV_EFI_VARIABLE_AUTHORITY: one EFI_SIGNATURE_DATA,
    the type choosing between that and the ``db`` database — either reading of the wrong one
    fails)."""
    if not _names_a_value(e.data):
        return
    got = _variable(vlog, e)
    if got is None:
        return
    name, value = got
    if name == "SbatLevel":
        facts.sbat_levels.append((e, value.decode("utf-8", "replace")))
    elif name == "db" and e.event_type == _VARIABLE_AUTHORITY:
        facts.authorities.append((e, value))
    elif name in SB_VARIABLES:
        facts.variables.setdefault(name, []).append(Variable(e, value))


def _os_pcrs(vlog: BootLog, facts: BootFacts, e: Event) -> None:
    """PCR8/9/12/14, by hint: which events to show as command lines and initrds. Only the text a
    digest covers is read; MokLists are every PCR14 event, known by digest (the "MokList" name in
    the data is not covered)."""
    pcr = e.pcr
    if pcr == 14:
        facts.pcr14.append(e)
    elif e.event_type == _IPL:
        data = e.data
        for prefix in _CMDLINE_PREFIXES:
            if data.startswith(prefix):
                covered = vlog.data_covered(e) is True
                facts.cmdlines.append((e, grub_text(data[len(prefix) :]) if covered else None))
                return
        if pcr in (8, 12) and data[1:2] == b"\x00":  # systemd-boot: UTF-16LE command line
            facts.cmdlines.append((e, grub_text(data) if vlog.data_covered(e) is True else None))
        elif pcr == 9 and b"initrd" in data:
            facts.initrds.append(e)
    elif e.event_type == _EVENT_TAG and pcr == 9 and len(e.data) >= 8:
        tag = int.from_bytes(e.data[:4], "little")
        if tag == LINUX_INITRD_TAG:
            facts.initrds.append(e)
        elif tag == LINUX_LOAD_OPTIONS_TAG:
            # The data is only a description; the digest is of the LoadOptions, which the log
            # does not carry: the command line is known by digest (load_options_forms).
            facts.load_options.append(e)


def extract(vlog: BootLog) -> BootFacts:
    """The log's facts, computed once per verified log (a node re-attesting within one boot keeps
    its BootLog, so re-appraisal against a changed policy does not re-decode anything).

    The facts are a pure function of the log and its bank, and BootFacts is never mutated.
    """
    return vlog.memo("appraisal.facts", _extract)


def _extract(vlog: BootLog) -> BootFacts:
    """One pass over the verified events (log order) collecting every fact the checks use.

    Coverage is checked where the appraisal reads event data: PCR0–7 (S-CRTM version, variables,
    separators) here, and the kernel command line where it is read. GRUB's other commands (most of
    a log) are looked at only by the closed-world check, by digest first."""
    events = vlog.events
    pairs = frozenset(map(_PCR_AND_TYPE, events))
    facts = BootFacts(
        events=events, type_pairs=pairs, pcrs_with_events=frozenset(map(_PCR, events))
    )
    bank = vlog.bank
    seps = separator_digests(bank)
    special = special_digests(bank)
    by_pcr = facts.by_pcr
    coverage = vlog.caches.coverage.get
    for e in events:
        _, pcr, et, digests, data, _ = e
        if pcr >= 8:
            if pcr == 8 and data.startswith(b"grub_cmd"):  # neither command line nor initrd
                continue
            _os_pcrs(vlog, facts, e)
            continue
        digest = digests.get(bank)
        group = by_pcr.get(pcr)
        if group is None:
            group = by_pcr[pcr] = []
        if et == _SEPARATOR:  # a separator digest under another type fails (``suspicious``)
            if digest in seps:
                facts.separators.setdefault(pcr, []).append(len(group))
            else:
                facts.odd_separators.append(e)
        group.append(e)
        if et not in CHECKED_TYPES and digest is not None:  # data_covered's answer: not defined
            covered, workaround, detail = None, None, ""
        else:
            hit = coverage((bank, et, digest), data) if digest is not None else None
            covered, workaround, detail = hit if hit is not None else _covered(vlog, e, digest)
        if covered is False or (et != _SEPARATOR and digest in seps):
            facts.suspicious.append(e)
        full = covered is True and not detail  # a digest of all the data (see coverage_of)
        if workaround is not None:  # the table's coverage entries touch PCR1/PCR7 events only
            facts.workarounds.append(AppliedWorkaround(workaround, pcr, e.index, detail))
        if pcr == 7:
            _pcr7(vlog, facts, e, full, special.get(digest) if digest is not None else None)
        elif pcr == 0:
            if et == _S_CRTM_VERSION:
                facts.scrtm_versions.append((e, scrtm_text(e.data) if full else None))
            elif et in _FIRMWARE_CODE:
                facts.firmware_code.append(e)
        elif pcr == 4:
            if et == _BOOT_SERVICES_APPLICATION:
                facts.boot_apps.append(e)
        elif pcr == 2:
            if et in _DRIVERS:
                facts.drivers.append(e)
        elif pcr == 5:
            action = special.get(digest) if digest is not None else None
            if action in EBS_ACTIONS:
                facts.ebs_events.append((e, action))
        elif pcr == 1 and full and len(data) > 35 and data[16] in _VALUE_NAME_LENGTHS:
            _variable_fact(vlog, facts, e)  # after a cheap peek at the name's length
    return facts


def extended_digests(
    vlog: BootLog, facts: BootFacts, pcrs: frozenset[int]
) -> dict[int, DigestCounts]:
    """For each of ``pcrs`` that has events: digest → how often it was extended there. None counts
    events without a digest in the bank (verify_log keeps no quoted PCR with one).

    Answered from the verifier's caches for PCR values seen before (the value names the multiset of
    digests extended into it, see :class:`~assay.eventlog.LogCaches`), else counted from the
    PCR's chain the replay kept (its events' digests in order), else by one pass over the log."""
    bank = vlog.bank
    known = vlog.caches.extended
    out: dict[int, DigestCounts] = {}
    missing: set[int] = set()
    for pcr in pcrs & facts.pcrs_with_events:
        value = vlog.pcrs.get(pcr)
        hit = known.get((bank, pcr, value)) if value is not None else None
        if hit is None:
            missing.add(pcr)
        else:
            out[pcr] = hit
    if missing:
        chains = vlog.chains
        fresh: dict[int, DigestCounts] = {
            p: dict(Counter(chains[p])) for p in missing if p in chains
        }
        rest: dict[int, DigestCounts] = {p: {} for p in missing if p not in fresh}
        if rest:
            # (PCR, digest) pairs counted in one C-level pass, then split by PCR.
            events = vlog.events
            pairs = Counter(
                zip(map(_PCR, events), map(_GET(bank), map(_DIGESTS, events)), strict=True)
            )
            for (pcr, d), n in pairs.items():
                counts = rest.get(pcr)
                if counts is not None:
                    counts[d] = n
            fresh.update(rest)
        keep: dict[tuple[HashAlg, int, bytes], DigestCounts] = {}
        for pcr, counts in fresh.items():
            value = vlog.pcrs.get(pcr)
            if value is not None and None not in counts:
                keep[(bank, pcr, value)] = counts
            out[pcr] = counts
        vlog.caches.keep_extended(keep)
    return out
