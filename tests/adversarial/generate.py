"""Generated lies against a genuine quote: the adversarial suite's engine (tests and scripts/fuzz).

For a real log and its captured golden set, each *truth* is the log with one event of a relied-on
PCR replaced by an evil digest — a boot whose PCR values differ from the approved one. The truth is
extended into a real swtpm and quoted. Every *lie* is then a log a node could send with that genuine
quote: the evil event retyped to every event type, its uncovered data rewritten to what approved
events say, deleted, duplicated, moved. None may ever be ``trusted``; the only acceptable errors are
the project's own (malformed evidence, failed verification).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from agent.tpm import Tpm
from assay.algorithms import HashAlg
from assay.errors import MalformedEvidence, VerificationFailed
from assay.eventlog import Event, parse_event_log, verify_log
from assay.events import EventType
from assay.tpm2 import VerifiedQuote, parse_public, verify_quote
from testkit import swtpm
from testkit.bootsim import simulate_boot
from verifier.appraisal import CompiledPolicy, appraise

from .forge import events, insert_before, raw_event, remove, replace

ALL_PCRS = {HashAlg.SHA256: tuple(range(24))}
TYPES = (*(int(t) for t in EventType), 0x0000_1234, 0x8000_FFFF, 0xFFFF_FFFF)


@dataclass(frozen=True)
class Truth:
    """What the TPM really measured: ``data`` with event ``index`` given an evil digest."""

    index: int
    pcr: int
    data: bytes
    evil: bytes  # the event data whose hash is the evil digest (a covered variant uses it)


def _record(
    e: Event, banks: tuple[HashAlg, ...], etype: int, body: bytes, digests: dict[HashAlg, bytes]
) -> bytes:
    out = struct.pack("<III", e.pcr, etype, len(banks))
    for alg in banks:
        out += struct.pack("<H", int(alg)) + digests[alg]
    return out + struct.pack("<I", len(body)) + body


def truths(data: bytes, pcrs: frozenset[int]) -> Iterator[Truth]:
    """One evil boot per measured event of ``pcrs`` (crypto-agile logs)."""
    log = parse_event_log(data)
    for e in log.events:
        if e.pcr not in pcrs or e.event_type == EventType.EV_NO_ACTION:
            continue
        evil = b"evil measurement %d" % e.index
        digests = {alg: alg.hash(evil) for alg in e.digests}
        new = _record(e, tuple(e.digests), e.event_type, e.data, digests)
        yield Truth(e.index, e.pcr, replace(data, e.index, new), evil)


def lies(truth: Truth) -> Iterator[tuple[str, bytes]]:
    """Every lie about ``truth``'s evil event that keeps (or tries to hide) its digest."""
    data, i = truth.data, truth.index
    evs = events(data)
    e = evs[i]
    banks = tuple(e.digests)
    digests = dict(e.digests)
    for t in TYPES:
        if t != e.event_type:
            yield f"retype:{t:#x}", replace(data, i, _record(e, banks, t, e.data, digests))
    bodies = {other.data for other in evs if other.pcr == e.pcr and other.index != i}
    bodies |= {b"", truth.evil, b"kernel_cmdline: " + truth.evil, b"grub_cmd: " + truth.evil}
    bodies |= {b"MokList\x00", b"MokListRT\x00", b"Calling EFI Application from Boot Option"}
    for n, body in enumerate(sorted(bodies)):
        yield f"data:{n}", replace(data, i, _record(e, banks, e.event_type, body, digests))
    yield "delete", remove(data, i)
    yield "duplicate", insert_before(data, i, raw_event(data, i))
    if i + 1 < len(evs):  # the next event moved in front of it
        yield "swap-next", insert_before(remove(data, i + 1), i, raw_event(data, i + 1))
    if i > 1:  # it moved in front of the previous one
        yield "swap-prev", insert_before(remove(data, i), i - 1, raw_event(data, i))


def _time_wait_sockets() -> int:
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                count += sum(1 for line in fh if line.split()[3:4] == ["06"])
        except OSError:
            continue
    return count


def wait_for_ports(limit: int = 20000, timeout: float = 20.0) -> None:
    """Each swtpm boot leaves ~70 client sockets in TIME-WAIT (tpm2-tss's swtpm TCTI reconnects
    its control channel); a long run waits here so the machine's ephemeral ports never run out."""
    import time

    deadline = time.monotonic() + timeout
    while _time_wait_sockets() > limit and time.monotonic() < deadline:
        time.sleep(1.0)


def quote_truth(
    template: swtpm.SwtpmNode, workdir: os.PathLike[str], truth: bytes
) -> VerifiedQuote:
    """Boot ``truth`` into a fresh clone of ``template`` and verify a quote of all SHA-256 PCRs."""
    from pathlib import Path

    node_dir = Path(workdir)
    wait_for_ports()
    with swtpm.running(swtpm.clone(template, node_dir), startup=False) as node:
        simulate_boot(node.tcti, truth)
        nonce = os.urandom(32)
        with Tpm(node.tcti) as tpm:
            ak = tpm.create_ak("rsa", "ecc")
            q = tpm.quote(ak, nonce, ALL_PCRS)
    return verify_quote(q.attest, q.signature, parse_public(ak.public), nonce, q.pcrs)


def verdict_of(lie: bytes, quote: VerifiedQuote, policy: CompiledPolicy) -> str:
    """``trusted`` / ``untrusted`` / ``unknown``, or ``rejected: <code>`` for an evidence error."""
    try:
        vlog = verify_log(parse_event_log(lie), quote, HashAlg.SHA256)
    except (MalformedEvidence, VerificationFailed) as exc:
        return f"rejected: {type(exc).__name__}"
    return appraise(vlog, policy).status


def run(
    truth: Truth, quote: VerifiedQuote, policy: CompiledPolicy, on_trusted: Callable[[str], None]
) -> int:
    """Appraise every lie about ``truth``; call ``on_trusted`` for each one judged trusted."""
    count = 0
    for name, lie in lies(truth):
        count += 1
        if verdict_of(lie, quote, policy) == "trusted":
            on_trusted(f"event {truth.index} (PCR{truth.pcr}) {name}")
    return count
