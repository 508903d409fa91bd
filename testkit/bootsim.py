"""Boot simulator: make a swtpm's PCRs hold what a real event log says a boot measured.

Given a log, start the TPM at the log's start locality (TPM2_Startup(CLEAR) at locality 3 gives
PCR0 = 00…03 as on platforms that log a StartupLocality event), extend every measured event's
digests into every bank the TPM and the log share (one PCR_Extend with a TPML_DIGEST_VALUES per
event, only the banks the event carries), and write the log where the agent reads it. The TPM's
PCRs then equal ``assay.eventlog.replay`` of the log.

Tampered nodes, for tests and the demo:
- ``extra_extends``: an extra measurement the log does not show (quote and log disagree);
- ``replacements``: event N's data replaced (digests = hash of the new data in each bank). By
  default the TPM is extended with the replaced event too (an honest log of a different boot);
  with ``log_only`` the TPM keeps the original measurement and only the log lies.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import struct
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agent.tpm import Tpm
from assay.algorithms import HashAlg
from assay.errors import AssayError, ConfigurationError
from assay.eventlog import Event, EventLog, measured_events, parse_event_log, start_locality

_AGILE_HEADER = struct.Struct("<III")
_SHA1_HEADER = struct.Struct("<II20sI")


@dataclass(frozen=True, slots=True)
class BootResult:
    start_locality: int
    banks: tuple[HashAlg, ...]
    extended: int
    skipped: tuple[str, ...]
    eventlog: Path | None
    log_sha256: bytes = field(default=b"")


def parse_extra_extend(text: str) -> tuple[int, bytes]:
    """``PCR:HEX`` (data whose hash is extended into each shared bank of PCR)."""
    pcr, sep, hexdata = text.partition(":")
    try:
        if not sep:
            raise ValueError("expected PCR:HEX")
        index, data = int(pcr), bytes.fromhex(hexdata)
    except ValueError as exc:
        raise ConfigurationError(f"--extra-extend {text!r}: {exc}") from None
    if not 0 <= index <= 16 and index != 23:
        raise ConfigurationError(f"--extra-extend {text!r}: PCR {index} is not extendable here")
    return index, data


def parse_replacement(text: str) -> tuple[int, bytes]:
    """``N:HEX``: event N (its index in the log) gets data HEX."""
    index, sep, hexdata = text.partition(":")
    try:
        if not sep:
            raise ValueError("expected N:HEX")
        return int(index), bytes.fromhex(hexdata)
    except ValueError as exc:
        raise ConfigurationError(f"--replace-event {text!r}: {exc}") from None


def _encode_event(log: EventLog, event: Event) -> bytes:
    if log.format == "sha1":
        digest = event.digests[HashAlg.SHA1]
        return _SHA1_HEADER.pack(event.pcr, event.event_type, digest, len(event.data)) + event.data
    out = bytearray(_AGILE_HEADER.pack(event.pcr, event.event_type, len(event.digests)))
    for alg, digest in event.digests.items():
        out += struct.pack("<H", int(alg)) + digest
    return bytes(out) + struct.pack("<I", len(event.data)) + event.data


def replace_events(data: bytes, replacements: Mapping[int, bytes]) -> tuple[bytes, EventLog]:
    """The log with each replaced event re-encoded; every other byte is kept as it was."""
    log = parse_event_log(data)
    out = bytearray()
    ends = [e.offset for e in log.events[1:]] + [len(data)]
    pos = 0
    for event, end in zip(log.events, ends, strict=True):
        if event.index not in replacements:
            continue
        if not event.is_measured:
            raise ConfigurationError(f"event {event.index} is not measured; replace another")
        new = replacements[event.index]
        changed = event._replace(data=new, digests={alg: alg.hash(new) for alg in event.digests})
        out += data[pos : event.offset] + _encode_event(log, changed)
        pos = end
    missing = set(replacements) - {e.index for e in log.events}
    if missing:
        raise ConfigurationError(f"--replace-event: the log has no event {sorted(missing)}")
    out += data[pos:]
    return bytes(out), parse_event_log(bytes(out))


def simulate_boot(
    tcti: str,
    log_bytes: bytes,
    *,
    eventlog_out: Path | None = None,
    extra_extends: Sequence[tuple[int, bytes]] = (),
    replacements: Mapping[int, bytes] | None = None,
    log_only: bool = False,
) -> BootResult:
    """Start the (not yet started) TPM at ``tcti`` and extend the log into it; see module doc."""
    original = parse_event_log(log_bytes)
    written_bytes, written = log_bytes, original
    if replacements:
        written_bytes, written = replace_events(log_bytes, replacements)
    measured = original if log_only else written
    locality = start_locality(measured)
    if locality not in (0, 3):
        raise ConfigurationError(
            f"the log starts PCR0 at locality {locality} (H-CRTM); the simulator supports 0 and 3"
        )
    skipped: list[str] = []
    count = 0
    with Tpm(tcti) as tpm:
        tpm.startup(locality)
        active, _ = tpm.active_banks()
        banks = tuple(alg for alg in measured.banks if alg in active)
        if not banks:
            raise ConfigurationError("the TPM and the log share no PCR bank")
        _check_reset_state(tpm, banks, locality)
        for event in measured_events(measured):
            digests = {alg: event.digests[alg] for alg in banks if alg in event.digests}
            if event.pcr > 16 and event.pcr != 23:
                skipped.append(f"event {event.index}: PCR {event.pcr} not extendable at locality 0")
                continue
            if digests:
                tpm.pcr_extend(event.pcr, digests)
                count += 1
        for pcr, data in extra_extends:
            tpm.pcr_extend(pcr, {alg: alg.hash(data) for alg in banks})
    if eventlog_out is not None:
        _write_atomic(eventlog_out, written_bytes)
    digest = hashlib.sha256(written_bytes).digest()
    return BootResult(locality, banks, count, tuple(skipped), eventlog_out, digest)


def _check_reset_state(tpm: Tpm, banks: tuple[HashAlg, ...], locality: int) -> None:
    """Refuse a TPM whose PCRs are not as after TPM2_Startup(CLEAR) at ``locality``.

    ESYS treats Startup on an already started TPM as success, so a swtpm started with
    ``startup-clear`` (or already booted once) would silently give PCRs the log cannot replay.
    """
    pcrs = (*range(17), 23)
    _, values = tpm.pcr_read({alg: pcrs for alg in banks})
    for alg in banks:
        for pcr in pcrs:
            want = bytes(alg.digest_size - 1) + bytes((locality if pcr == 0 else 0,))
            if values[alg][pcr] != want:
                raise ConfigurationError(
                    f"{alg.bank} PCR {pcr} is not in its reset state after TPM2_Startup at "
                    f"locality {locality}: start swtpm without startup-clear and boot it once"
                )


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as f:
        f.write(data)
    shutil.move(f.name, path)
    path.chmod(0o644)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="boot-sim", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("eventlog", type=Path, help="a binary TCG event log")
    parser.add_argument("--tcti", required=True, help="the swtpm, started without startup-clear")
    parser.add_argument("--out", type=Path, help="where to write the log for the agent")
    parser.add_argument("--extra-extend", action="append", default=[], metavar="PCR:HEX")
    parser.add_argument("--replace-event", action="append", default=[], metavar="N:HEX")
    parser.add_argument("--log-only", action="store_true", help="replacements change only the log")
    args = parser.parse_args(argv)
    try:
        result = simulate_boot(
            args.tcti,
            args.eventlog.read_bytes(),
            eventlog_out=args.out,
            extra_extends=[parse_extra_extend(x) for x in args.extra_extend],
            replacements=dict(parse_replacement(x) for x in args.replace_event),
            log_only=args.log_only,
        )
    except (AssayError, OSError) as exc:
        print(f"boot-sim: {exc}", file=sys.stderr)
        return 2
    banks = ",".join(a.bank for a in result.banks)
    print(f"extended {result.extended} events into {banks} (PCR0 locality {result.start_locality})")
    for line in result.skipped:
        print(f"skipped {line}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
