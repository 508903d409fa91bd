"""EK certificates: chain them to the configured TPM-vendor CAs, strictly.

``cryptography.x509.verification`` only knows TLS-like profiles, and EK certificates are not
(empty subjects, SAN with TPM attributes, critical extensions of their own), so the chain is
walked here: 1. each link's signature (``verify_directly_issued_by``: issuer name and signature);
2. every certificate in the chain valid at ``now``; 3. every issuer a CA (basicConstraints
cA=TRUE, keyCertSign when keyUsage is present); 4. the chain ends at a self-signed certificate
from the configured directory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from assay.errors import ConfigurationError, MalformedEvidence, VerificationFailed

MAX_CHAIN = 6
CA_SUFFIXES = (".pem", ".crt", ".cer", ".der")


@dataclass(frozen=True, slots=True)
class CaPool:
    certs: tuple[x509.Certificate, ...]

    @classmethod
    def load(cls, directory: str | None) -> CaPool:
        if not directory:
            return cls(())
        base = Path(directory)
        if not base.is_dir():
            raise ConfigurationError(f"EK CA directory {directory} does not exist")
        certs: list[x509.Certificate] = []
        for path in sorted(base.iterdir()):
            if path.suffix.lower() not in CA_SUFFIXES or not path.is_file():
                continue
            data = path.read_bytes()
            try:
                if b"-----BEGIN CERTIFICATE-----" in data:
                    certs.extend(x509.load_pem_x509_certificates(data))
                else:
                    certs.append(x509.load_der_x509_certificate(data))
            except ValueError as exc:
                raise ConfigurationError(f"{path}: not a certificate: {exc}") from None
        return cls(tuple(certs))


def load_ek_certificate(der: bytes) -> x509.Certificate:
    """Parse an EK certificate from a node, and every part of it the chain check reads.

    cryptography decodes names, extensions and the key lazily; touching them here turns a
    malformed field into MalformedEvidence (a 400) instead of an exception deep in the chain check.
    """
    try:
        if der.lstrip().startswith(b"-----BEGIN"):
            cert = x509.load_pem_x509_certificate(der)
        else:
            cert = x509.load_der_x509_certificate(der)
        _ = (cert.version, cert.serial_number, cert.subject, cert.issuer, cert.public_key())
        _ = (cert.not_valid_before_utc, cert.not_valid_after_utc, list(cert.extensions))
    except Exception as exc:
        raise MalformedEvidence(
            f"not an X.509 certificate: {exc}", where="EK certificate"
        ) from None
    return cert


def cert_fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _valid_at(cert: x509.Certificate, now: dt.datetime, what: str) -> None:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise VerificationFailed(
            f"{what} is not valid at {now:%Y-%m-%dT%H:%M:%SZ} (valid "
            f"{cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d})",
            code="ek_cert_expired",
        )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    if not bc.ca:
        return False
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return bool(ku.key_cert_sign)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def verify_ek_chain(
    cert: x509.Certificate, pool: CaPool, now: dt.datetime
) -> tuple[x509.Certificate, ...]:
    """Return the chain leaf → root, or raise VerificationFailed(code="ek_cert_untrusted")."""
    if not pool.certs:
        raise VerificationFailed(
            "no TPM-vendor CA certificates are configured", code="ek_cert_untrusted"
        )
    _valid_at(cert, now, "the EK certificate")
    chain = [cert]
    current = cert
    for _ in range(MAX_CHAIN):
        issuer = next(
            (ca for ca in pool.certs if ca.subject == current.issuer and _issued_by(current, ca)),
            None,
        )
        if issuer is None:
            raise VerificationFailed(
                f"no configured CA issued {_describe(current)} "
                f"(issuer {current.issuer.rfc4514_string()!r})",
                code="ek_cert_untrusted",
            )
        if not _is_ca(issuer):
            raise VerificationFailed(
                f"{_describe(issuer)} is not a CA (basicConstraints/keyUsage)",
                code="ek_cert_untrusted",
            )
        _valid_at(issuer, now, _describe(issuer))
        chain.append(issuer)
        if issuer.subject == issuer.issuer and _issued_by(issuer, issuer):
            return tuple(chain)
        current = issuer
    raise VerificationFailed("EK certificate chain is too long", code="ek_cert_untrusted")


def _describe(cert: x509.Certificate) -> str:
    subject = cert.subject.rfc4514_string()
    return f"certificate {subject!r}" if subject else f"certificate serial {cert.serial_number:x}"
