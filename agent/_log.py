"""What ``agent run`` logs: one line per event (an attestation, a failure, a re-enrollment), as
text or as JSON (``log_format``), on stderr — the journal under systemd.

A line carries the node, the attestation id, the verdict and its reason code, or the failure's
class and, for a verifier refusal, only its HTTP status and error code: the verifier's message
can quote the nonce, so it is not logged. Nothing else the agent holds (enrollment token,
activation key and secret, AK) is ever put in a line.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Mapping
from typing import Any

from .client import AttestationResult
from .errors import AgentError, VerifierRefused


class RunLog:
    """The text log (``assay-agent: …``), as the agent always wrote it."""

    def __init__(self, node: str) -> None:
        self.node = node

    def attested(self, result: AttestationResult) -> None:
        self._emit("attestation", f"{result.status}: {result.reason or '-'} (node "
                   f"{result.node_state or '?'}, attestation {result.attestation_id})",
                   _result_fields(result))  # fmt: skip

    def notice(self, text: str) -> None:
        self._emit("notice", text, {})

    def enrolling(self) -> None:
        self._emit("enrolling", "verifier does not know this node: enrolling", {})

    def failed(self, exc: AgentError) -> None:
        if isinstance(exc, VerifierRefused):
            text = f"verifier refused (HTTP {exc.status} {exc.code})"
            fields: dict[str, Any] = {"error": "VerifierRefused", "code": exc.code}
        else:
            text, fields = str(exc), {"error": type(exc).__name__}
        self._emit("attestation_failed", f"attestation failed ({fields['error']}): {text}", fields)

    def _emit(self, event: str, text: str, fields: Mapping[str, Any]) -> None:
        print(f"assay-agent: {text}", file=sys.stderr, flush=True)


class JsonRunLog(RunLog):
    """One JSON object per line: time, event, node and the event's fields."""

    def _emit(self, event: str, text: str, fields: Mapping[str, Any]) -> None:
        line = {
            "time": dt.datetime.now(dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "event": event,
            "node": self.node,
            **fields,
            "message": text,
        }
        print(json.dumps(line), file=sys.stderr, flush=True)


def _result_fields(result: AttestationResult) -> dict[str, Any]:
    return {
        "attestation_id": result.attestation_id,
        "status": result.status,
        "reason": result.reason,
        "node_state": result.node_state,
    }


def run_log(log_format: str, node: str) -> RunLog:
    return JsonRunLog(node) if log_format == "json" else RunLog(node)
