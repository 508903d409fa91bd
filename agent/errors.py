"""The agent's failures, one class per situation a node operator must tell apart.

Each carries the process exit code the CLI returns for it (documented in docs/agent.md), so the
CLI's single error handler maps a failure to one line and one code without inspecting messages.
"""

from __future__ import annotations

from assay.errors import AssayError

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_NO_TPM = 3
EXIT_TPM_BUSY = 4
EXIT_TPM_ERROR = 5
EXIT_VERIFIER_UNREACHABLE = 6
EXIT_VERIFIER_REFUSED = 7
EXIT_EVENTLOG_UNREADABLE = 8
EXIT_BAD_RESPONSE = 9
EXIT_UNTRUSTED = 10
EXIT_UNKNOWN = 11


class AgentError(AssayError):
    """Base of the agent's own failures."""

    exit_code = EXIT_TPM_ERROR


class NoTpmDevice(AgentError):
    """The TPM (device node, swtpm socket or tabrmd) cannot be reached at all."""

    exit_code = EXIT_NO_TPM


class TpmBusy(AgentError):
    """The TPM is held by another process or asked us to retry."""

    exit_code = EXIT_TPM_BUSY


class TpmFailure(AgentError):
    """The TPM answered with an error (or the saved AK does not belong to it)."""

    exit_code = EXIT_TPM_ERROR


class VerifierUnreachable(AgentError):
    """No HTTP answer from the verifier (DNS, connection refused, timeout, 5xx)."""

    exit_code = EXIT_VERIFIER_UNREACHABLE


class VerifierRefused(AgentError):
    """The verifier answered with a 4xx error; ``code`` is its stable error code."""

    exit_code = EXIT_VERIFIER_REFUSED

    def __init__(self, message: str, *, code: str, status: int) -> None:
        self.code = code
        self.status = status
        super().__init__(message)


class EventLogUnreadable(AgentError):
    """The measured-boot (or IMA) log file is missing, unreadable or over its size cap."""

    exit_code = EXIT_EVENTLOG_UNREADABLE


class BadVerifierResponse(AgentError):
    """The verifier answered 2xx with a body that is not what the API defines."""

    exit_code = EXIT_BAD_RESPONSE
