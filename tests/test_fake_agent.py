"""The load generator's software node (testkit FakeAgentForLoad: a fake, load generation only)
builds its bundle from a template per PCR values: the bytes must stay ``encode_evidence``'s and
every quote a fresh one the verifier's ``verify_quote`` accepts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from assay.evidence import decode_evidence, encode_evidence
from assay.tpm2 import parse_attest, verify_quote
from testkit.service import FakeAgentForLoad

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT.parent / "shared/eventlogs/qemu-ovmf-debian12"
LOG = (LOGS / "secureboot-shim-grub-kernel.bin").read_bytes()
OTHER = (LOGS / "uki-systemd-stub.bin").read_bytes()


@pytest.mark.parametrize("send_log", [True, False])
def test_each_bundle_is_encode_evidences_bytes_with_a_fresh_verifying_quote(send_log: bool) -> None:
    agent = FakeAgentForLoad("fake-1", LOG)
    seen = set()
    for step in ("first", "again", "tampered", "tampered again", "rebooted", "other log"):
        if step == "tampered":
            agent.extra_extend = b"an unapproved module"
        elif step == "rebooted":
            agent.extra_extend = None
            agent.reboot()
        elif step == "other log":
            agent.reboot(OTHER)
        nonce = os.urandom(32)
        body = agent.evidence(nonce, send_log=send_log)
        ev = decode_evidence(body)
        assert encode_evidence(ev) == body, step
        assert (ev.event_log, ev.event_log_sha256) == (
            agent.log if send_log else None,
            agent.log_sha256,
        ), step
        values = ev.pcrs[agent.bank]
        assert (values == agent.pcr_values) == (agent.extra_extend is None), step
        verify_quote(ev.attest, ev.signature, agent.ak, nonce, ev.pcrs)  # raises if not
        clock = parse_attest(ev.attest).clock_info
        assert (clock.clock, clock.reset_count) == (agent.clock, agent.reset_count), step
        seen.add(ev.signature)
    assert len(seen) == 6  # a new signature every time
