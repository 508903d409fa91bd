"""A malformed EK certificate from a node is MalformedEvidence (a 400), whatever cryptography raises."""

from __future__ import annotations

import pytest

from assay.errors import MalformedEvidence
from assay.eventlog import parse_event_log
from verifier.service.ekcert import load_ek_certificate

from .conftest import CORPUS


def _a_real_certificate() -> bytes:
    log = parse_event_log(
        (CORPUS / "qemu-ovmf-debian12/secureboot-shim-grub-kernel.bin").read_bytes()
    )
    der: bytes = log.events[7].decode().value.certificates[0].certificate.der
    return der


@pytest.mark.parametrize("tag", [0x00, 0x03])
def test_certificate_whose_subject_fails_lazily_is_malformed(tag: int) -> None:
    der = bytearray(_a_real_certificate())
    from cryptography import x509

    subject = x509.load_der_x509_certificate(bytes(der)).subject.public_bytes()
    at = bytes(der).index(subject)
    der[at + 12] = tag
    with pytest.raises(MalformedEvidence, match=r"EK certificate: not an X\.509 certificate"):
        load_ek_certificate(bytes(der))


def test_garbage_and_truncated_certificates_are_malformed() -> None:
    good = _a_real_certificate()
    assert load_ek_certificate(good).serial_number > 0
    for bad in (b"", b"garbage", good[:100], b"-----BEGIN CERTIFICATE-----\nxx\n"):
        with pytest.raises(MalformedEvidence):
            load_ek_certificate(bad)
