"""The service's domain errors, split by who is at fault; nothing here knows HTTP.

Each carries a stable ``code`` and a one-line message. The front ends map them by type: the API
to a status code and ``{"error": {"code", "message"}}`` (``api_errors``), the CLI to one line on
stderr and an exit code (``verifier._cli``). Errors about evidence are ``assay.errors``:
``MalformedEvidence`` (the sender's bytes do not parse) and ``VerificationFailed`` (well-formed
but refused — a bad signature, a refused nonce, a wrong activation secret — with its own code).
"""

from __future__ import annotations

from assay.errors import AssayError


class ServiceError(AssayError):
    """A request the service refuses: ``code`` is stable, ``message`` says what and where."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class BadRequest(ServiceError):
    """The caller sent an invalid value (a field, a query parameter, a role, a lifetime)."""


class Unauthenticated(ServiceError):
    """No usable credential: no token, or one that is unknown, revoked, expired or used up."""


class Forbidden(ServiceError):
    """The caller is known but may not do this (its role; not the client that enrolls)."""


class NotFound(ServiceError):
    """What the request names does not exist (a node, an attestation, a golden set, a token)."""


class Conflict(ServiceError):
    """The request contradicts the current state (already revoked, a name taken, a wrong step)."""


class Expired(ServiceError):
    """What the request names existed but has expired (an enrollment challenge)."""
