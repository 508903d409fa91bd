"""Property tests: whatever the bytes, the parser either returns an EventLog or raises MalformedEvidence."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assay.errors import MalformedEvidence
from assay.eventlog import parse_event_log, replay

from .conftest import CORPUS
from .logbuilder import simple_log

SEEDS = [simple_log()] + [
    (CORPUS / name).read_bytes()
    for name in (
        "tpm2-tools/event-sd-boot-fedora37.bin",
        "go-tpm-tools/debian-10.bin",
        "tpm2-tools/event.bin",
        "python3-uefi-eventlog/p511.bin",
    )
]

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(data: bytes) -> None:
    try:
        log = parse_event_log(data)
    except MalformedEvidence as exc:
        assert str(exc)
        return
    replay(log)
    for event in log.events:
        event.decode().describe()


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_never_crash(data: bytes) -> None:
    _check(data)


@FUZZ
@given(
    seed=st.sampled_from(range(len(SEEDS))),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.integers(min_value=0)),
)
def test_mutated_real_logs_never_crash(
    seed: int, flips: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(SEEDS[seed])
    for pos, value in flips:
        data[pos % len(data)] = value
    if cut is not None:
        del data[cut % len(data) :]
    _check(bytes(data))


def test_seeds_exist() -> None:
    assert all(len(s) > 100 for s in SEEDS)
    assert Path(CORPUS).is_dir()


@pytest.mark.parametrize(
    ("tag", "raised_by_cryptography"), [(0x00, "ValueError"), (0x03, "TypeError")]
)
def test_certificate_with_corrupt_subject_is_malformed(
    tag: int, raised_by_cryptography: str
) -> None:
    """Found by scripts/fuzz: cryptography parses names lazily, so a bad subject used to surface as a
    ValueError (or, for a BIT STRING attribute, a TypeError) in describe(). It must be rejected as
    malformed when the signature list is parsed."""
    from assay.eventlog import parse_event_log
    from assay.uefi.signatures import X509Certificate

    log = parse_event_log(
        (CORPUS / "qemu-ovmf-debian12/secureboot-shim-grub-kernel.bin").read_bytes()
    )
    db = log.events[7].decode()
    cert = db.value.certificates[0].certificate
    der = bytearray(cert.der)
    subject = cert.certificate.subject.public_bytes()
    at = bytes(der).index(subject)
    # The first attribute value's PrintableString tag is replaced: the certificate still loads,
    # and only reading its subject fails (with ``raised_by_cryptography``).
    assert der[at + 12] == 0x13
    der[at + 12] = tag
    with pytest.raises(MalformedEvidence, match="not a valid certificate"):
        X509Certificate.from_der(bytes(der))
