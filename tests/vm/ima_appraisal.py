"""Runtime appraisal of a booted runtime node: its TPM's quote, its IMA list, runtime policies.

:func:`appraise_runtime_node` is the one place the VM suite appraises an IMA list. Until the
verifier service takes IMA evidence from the agent, it runs the library path the service will run:
a fresh AK in the node's own TPM (taken over after the guest powered off), a quote of PCR0–10 in
the SHA-1 and SHA-256 banks for a random nonce, ``verify_quote`` with that AK, ``verify_ima`` of
the list the guest handed out against the verified quote, and ``appraise_runtime`` of what it
vouches for. The AK is trusted here because the host made it in that TPM a moment ago; in the
service, AK trust comes from enrollment. The service path (the agent sending the IMA list, the
verifier's runtime checks in the verdict) is exercised beside it by
``test_vm_ima.test_runtime_verdicts_through_the_agent_and_the_verifier_service``; this one stays
for what only the library exposes (the extend form per bank, the unquoted tail, check objects).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from assay.algorithms import HashAlg
from assay.ima import ImaLog, ImaReplay, VerifiedImaLog, parse_ima_log, verify_ima
from assay.tpm2 import VerifiedQuote, parse_public, verify_quote
from golden.runtime_yaml import load_runtime_file
from verifier.appraisal.runtime import appraise_runtime, compile_runtime
from verifier.appraisal.verdict import Check

from .runner import VmNode

QUOTED_BANKS = (HashAlg.SHA1, HashAlg.SHA256)
QUOTED_PCRS = tuple(range(11))  # PCR0–9 for boot_aggregate, PCR10 for IMA


@dataclass(frozen=True, slots=True)
class RuntimeAppraisal:
    """The verified quote, the node's parsed IMA list, its verification in ``bank`` and the
    runtime checks of that verified list."""

    quote: VerifiedQuote
    log: ImaLog
    verified: VerifiedImaLog
    checks: tuple[Check, ...]

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status != "pass")


def quote_node(node: VmNode, banks: Sequence[HashAlg] = QUOTED_BANKS) -> VerifiedQuote:
    """A quote of PCR0–10 in ``banks`` by a fresh AK in the node's TPM, verified with that AK."""
    nonce = os.urandom(32)
    with node.tpm() as tpm:
        ak = tpm.create_ak(tpm.resolve_ek_kind("auto"), "ecc")
        quote = tpm.quote(ak, nonce, {bank: QUOTED_PCRS for bank in banks})
    return verify_quote(quote.attest, quote.signature, parse_public(ak.public), nonce, quote.pcrs)


def appraise_runtime_node(
    node: VmNode,
    policies: Sequence[Path],
    *,
    bank: HashAlg = HashAlg.SHA256,
    quote: VerifiedQuote | None = None,
) -> RuntimeAppraisal:
    """Verify ``node``'s IMA list against a quote of its TPM and judge it against ``policies``
    (runtime policy YAML files), as the verifier will on the node's first attestation of a boot."""
    if node.result is None or node.result.ima_log is None:
        raise AssertionError(f"{node.image.variant.name} handed out no IMA list")
    vq = quote or quote_node(node)
    log = parse_ima_log(node.result.ima_log)
    verified = verify_ima(ImaReplay.initial(template_hash_alg=log.template_hash_alg), log, vq, bank)
    compiled = compile_runtime(
        [load_runtime_file(str(p)) for p in policies], dt.datetime.now(dt.UTC)
    )
    return RuntimeAppraisal(vq, log, verified, tuple(appraise_runtime(verified, compiled)))
