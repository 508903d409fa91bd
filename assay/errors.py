"""Assay's exception tree, split by who is at fault.

Every decoder error (struct, cbor2, cryptography, tpm2-pytss) is wrapped at the boundary into one
of these, so callers never see a library's exception and no error path can be mistaken for success.
"""

from __future__ import annotations


class AssayError(Exception):
    """Base of every error Assay raises on purpose."""


class MalformedEvidence(AssayError):
    """Untrusted input could not be parsed: the sender is at fault.

    ``where`` names the structure (e.g. ``"event 12"`` or ``"TPMS_ATTEST"``) and ``offset`` the byte
    offset in the input, when known, so the one-line message says exactly what was wrong and where.
    """

    def __init__(self, message: str, *, offset: int | None = None, where: str | None = None):
        self.reason = message
        self.offset = offset
        self.where = where
        parts = []
        if where:
            parts.append(where)
        if offset is not None:
            parts.append(f"offset {offset}")
        prefix = (", ".join(parts) + ": ") if parts else ""
        super().__init__(prefix + message)


class VerificationFailed(AssayError):
    """Well-formed evidence that does not verify (bad signature, nonce, PCR mismatch)."""

    def __init__(self, message: str, *, code: str = "verification_failed"):
        self.code = code
        super().__init__(message)


class ConfigurationError(AssayError):
    """The operator's configuration (files, flags, golden sets) is unusable."""
