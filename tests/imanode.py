"""A node with a software AK (testkit.quotes) and a MADE IMA list (tests/imalogbuilder.py), acting
as the agent does: it quotes PCR0–10 and 14, sends the IMA entries from the verifier's cursor on,
and falls back to the full list when the verifier answers ``ima_full_log_required``.

Scaffolding for in-process and HTTP tests of the incremental path; the IMA list is made to the
kernel's format and the PCR10 value is the one a TPM extended with those entries would hold. The
TPM path itself is tested with swtpm (tests/test_runtime_swtpm.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from assay.algorithms import HashAlg
from assay.evidence import encode_evidence, evidence_with_log
from assay.tpm2 import ClockInfo
from testkit.service import FakeAgentForLoad

from . import imalogbuilder as made

Post = Callable[[str, dict[str, Any] | None, bytes | None], tuple[int, dict[str, Any]]]
"""(path, JSON body or None, CBOR body or None) → (status, answer)."""


@dataclass
class Round:
    status: int
    answer: dict[str, Any]
    ima_bytes: int
    """IMA bytes sent in the bundle that got this answer."""
    ima_start: int
    bundle_bytes: int
    seconds: float = 0.0
    """Wall time of the evidence request alone (the verifier's work, not the made node's)."""
    cpu: float = 0.0
    """CPU time of this thread during it (in process: the verifier's work without the wait for
    a shared core)."""
    full_log_retry: bool = False


@dataclass
class MadeImaNode:
    name: str
    boot_log: bytes
    labels: dict[str, str] = field(default_factory=dict)
    entries: list[made.Made] = field(default_factory=list)
    cursor: tuple[int, int] = (0, 0)
    reset_count: int = 1
    clock: int = 1000
    lie: tuple[int, int] | None = None
    """Send this start instead of the verifier's cursor (an agent lying about its offset)."""
    tamper: Callable[[bytes], bytes] | None = None
    """Change the chunk's bytes before sending (a hostile node)."""
    hide_after_quote: int = 0
    """Entries appended after the quote (the agent reads the list after quoting)."""

    def __post_init__(self) -> None:
        self.fake = FakeAgentForLoad(
            self.name, self.boot_log, pcrs=(*range(11), 14), labels=self.labels
        )
        self.boot_pcrs = {i: self.fake.pcr_values[i] for i in range(10)}
        if not self.entries:
            self.entries = [made.boot_aggregate_entry(self.boot_pcrs)]

    def run(self, *entries: made.Made) -> None:
        """The kernel measures these (they are appended to the list and extended into PCR10)."""
        self.entries.extend(entries)

    def reboot(self) -> None:
        """A new boot: the TPM reset counter moves, the list starts again at boot_aggregate."""
        self.reset_count += 1
        self.entries = [made.boot_aggregate_entry(self.boot_pcrs)]

    def ima_list(self) -> bytes:
        return made.binary(self.entries)

    def bundle(self, nonce: bytes, start: tuple[int, int], *, send_log: bool = True) -> bytes:
        quoted = self.entries[: len(self.entries) - self.hide_after_quote]
        values = dict(self.fake.pcr_values)
        values[10] = made.expected_pcr(quoted, "sha256")
        self.clock += 1000
        attest, sig = self.fake._ak.quote(
            {HashAlg.SHA256: values},
            nonce,
            clock_info=ClockInfo(self.clock, self.reset_count, 0, True),
        )
        chunk = self.ima_list()[start[1] :]
        if self.tamper is not None:
            chunk = self.tamper(chunk)
        claimed = self.lie if self.lie is not None else start
        ev = evidence_with_log(
            node=self.name,
            agent_version="made-ima/0",
            nonce=nonce,
            attest=attest,
            signature=sig,
            pcrs={HashAlg.SHA256: values},
            event_log=self.boot_log,
            ima_log=chunk,
            ima_start=claimed[0],
            ima_offset=claimed[1],
        )
        return encode_evidence(ev if send_log else ev.without_known_log(self.fake.log_sha256))

    def attest(self, post: Post) -> Round:
        """One round as the agent does it (challenge, chunk from the cursor, full list on
        ``ima_full_log_required`` in the same round); the cursor follows the answer."""
        out = self._once(post, self.cursor)
        code = out.answer.get("error", {}).get("code") if out.status != 200 else None
        if code == "ima_full_log_required" and self.cursor != (0, 0):
            self.cursor = (0, 0)
            out = self._once(post, self.cursor)
            out.full_log_retry = True
        if out.status == 200:
            ima = out.answer.get("ima") or {"entries": 0, "offset": 0}
            self.cursor = (int(ima["entries"]), int(ima["offset"]))
        return out

    def _once(self, post: Post, start: tuple[int, int]) -> Round:
        _, ch = post(
            f"/v1/nodes/{self.name}/challenge",
            {"event_log_sha256": self.fake.log_sha256.hex()},
            None,
        )
        known = ch.get("known_event_log_sha256")
        body = self.bundle(
            bytes.fromhex(ch["nonce"]), start, send_log=known != self.fake.log_sha256.hex()
        )
        t0, c0 = time.perf_counter(), time.thread_time()
        status, answer = post(f"/v1/nodes/{self.name}/evidence", None, body)
        seconds, cpu = time.perf_counter() - t0, time.thread_time() - c0
        sent = len(self.ima_list()) - start[1]
        return Round(status, answer, sent, start[0], len(body), seconds, cpu)


def flask_post(client: Any) -> Post:
    def post(
        path: str, js: dict[str, Any] | None, cbor: bytes | None
    ) -> tuple[int, dict[str, Any]]:
        if cbor is not None:
            resp = client.post(path, data=cbor, headers={"Content-Type": "application/cbor"})
        else:
            resp = client.post(path, json=js or {})
        return resp.status_code, resp.get_json(silent=True) or {}

    return post


def http_post(session: Any, url: str) -> Post:
    def post(
        path: str, js: dict[str, Any] | None, cbor: bytes | None
    ) -> tuple[int, dict[str, Any]]:
        if cbor is not None:
            resp = session.post(
                url + path, data=cbor, headers={"Content-Type": "application/cbor"}, timeout=60
            )
        else:
            resp = session.post(url + path, json=js or {}, timeout=60)
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return resp.status_code, {"error": {"code": "not_json"}}

    return post
