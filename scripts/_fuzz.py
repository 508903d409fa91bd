"""Long-run fuzz harness: run each parser on many generated and mutated inputs, count and report.

Targets: the event log, event data, TPM structures, UEFI structures and the evidence bundle
(assay.evidence, seeded with tests/vectors/evidence).

Any exception other than the project's MalformedEvidence is a bug: it is printed with the input
(hex) and the run exits 1.
"""

from __future__ import annotations

import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from assay.errors import MalformedEvidence
from assay.eventlog import parse_event_log, replay

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "eventlogs"


def _eventlog_target(data: bytes) -> None:
    log = parse_event_log(data)
    replay(log)
    for event in log.events:
        event.decode().describe()


def _eventdata_target(data: bytes) -> None:
    """First 4 bytes pick the event type (a known one, mostly), the rest is its data."""
    from assay.eventdata import decode_event_data
    from assay.events import EventType

    if len(data) < 4:
        raise MalformedEvidence("too short for the harness")
    types = list(EventType)
    pick = int.from_bytes(data[:4], "little")
    etype = int(types[pick % len(types)]) if pick % 8 else pick
    decode_event_data(etype, data[4:]).describe()


def _evidence_target(data: bytes) -> None:
    from assay.evidence import decode_evidence, encode_evidence

    ev = decode_evidence(data)
    if decode_evidence(encode_evidence(ev)) != ev:
        raise AssertionError("a decoded bundle does not round-trip")


def _targets() -> dict[str, Callable[[bytes], object]]:
    targets: dict[str, Callable[[bytes], object]] = {
        "eventlog": _eventlog_target,
        "eventdata": _eventdata_target,
        "evidence": _evidence_target,
    }
    try:
        from assay import tpm2

        targets["tpm2.attest"] = tpm2.parse_attest
        targets["tpm2.public"] = tpm2.parse_public
        targets["tpm2.signature"] = tpm2.parse_signature
    except (ImportError, AttributeError):
        pass
    try:
        from assay import uefi

        targets["uefi.signature_lists"] = uefi.parse_signature_lists
        targets["uefi.device_path"] = uefi.device_path_to_text
        targets["uefi.variable"] = uefi.parse_variable_data
    except (ImportError, AttributeError):
        pass
    return targets


def _seeds() -> list[bytes]:
    seeds = []
    for path in sorted(CORPUS.glob("*/*")):
        if path.suffix in (".json", ".yaml", ".tsv", ".md", ".b64"):
            continue
        data = path.read_bytes()
        if data:
            seeds.append(data)
    return seeds


def _tpm_seeds() -> list[bytes]:
    """The real AK public area, quote and signature from a Windows GCE Shielded VM."""
    import base64
    import json

    doc = json.loads((CORPUS / "go-attestation/windows_gcp_shielded_vm.json").read_text())
    quote = doc.get("Quote", {})
    raw = [doc["AK"]["Public"], quote.get("Quote", ""), quote.get("Signature", "")]
    return [base64.b64decode(r) for r in raw if r]


TPM_SEEDS = _tpm_seeds()


def _event_data() -> list[bytes]:
    """The data of every event in the corpus (UEFI variables, device paths, strings, tags …)."""
    out = []
    for seed in _seeds():
        try:
            out += [e.data for e in parse_event_log(seed).events if e.data]
        except MalformedEvidence:
            continue
    return out


EVENT_DATA = _event_data()
EVIDENCE_SEEDS = [p.read_bytes() for p in sorted((ROOT / "tests/vectors/evidence").glob("*.cbor"))]


def _mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 8)):
        choice = rng.random()
        if not data:
            data += rng.randbytes(rng.randint(1, 64))
        elif choice < 0.5:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif choice < 0.7:
            del data[rng.randrange(len(data)) :]
        elif choice < 0.85:
            pos = rng.randrange(len(data))
            data[pos:pos] = rng.randbytes(rng.randint(1, 16))
        else:
            pos = rng.randrange(max(1, len(data) - 4))
            data[pos : pos + 4] = rng.choice(
                [b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\xff\xff\x00\x00"]
            )
    return bytes(data)


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    rng = random.Random(20261128)
    seeds = _seeds()
    failures = 0
    for name, target in _targets().items():
        start = time.perf_counter()
        rejected = 0
        for i in range(count):
            if i % 4 == 0:
                data = rng.randbytes(rng.randint(0, 512))
            else:
                seed = rng.choice(seeds)
                if name.startswith("tpm2"):
                    seed = rng.choice(TPM_SEEDS)
                elif name == "eventdata":
                    seed = rng.randbytes(4) + rng.choice(EVENT_DATA)
                elif name == "evidence":
                    seed = rng.choice(EVIDENCE_SEEDS)
                elif not name.startswith("eventlog"):
                    off = rng.randrange(len(seed))
                    seed = seed[off : off + rng.randint(1, 2048)]
                data = _mutate(rng, seed)
            try:
                target(data)
            except MalformedEvidence:
                rejected += 1
            except Exception:
                failures += 1
                print(f"BUG in {name}: {traceback.format_exc(limit=3)}input: {data[:256].hex()}")
        took = time.perf_counter() - start
        print(f"{name}: {count} inputs, {rejected} rejected cleanly, {took:.1f}s")
    print(f"uncaught exceptions: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
