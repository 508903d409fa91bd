"""What the agent does: keep its AK, enroll, attest once, attest forever.

Enrollment is an explicit state machine (EK+AK sent → credential activated → enrolled) that
refuses out-of-order calls; attestation is challenge → quote → bundle → verdict. The TPM is
opened for each operation and closed after it, so a direct swtpm (one client at a time) or a busy
device is held only for as long as one exchange takes.
"""

from __future__ import annotations

import enum
import hashlib
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from assay.algorithms import HashAlg
from assay.evidence import DEFAULT_CAPS, Evidence

from ._log import RunLog
from .client import AttestationResult, Challenge, CredentialChallenge, VerifierClient
from .config import AgentConfig
from .errors import AgentError, VerifierRefused
from .evidence import encode_bundle, evidence_from_quote, read_ima_chunk, read_log
from .state import (
    IMA_FULL,
    AkContextFile,
    Enrollment,
    load_ak,
    load_ima_cursor,
    save_ak,
    save_enrollment,
    save_ima_cursor,
)
from .tpm import AkBlobs, EndorsementKey, Tpm

NOT_ENROLLED = "node_not_enrolled"
NONCE_REFUSALS = frozenset({"nonce_expired", "nonce_reused", "nonce_unknown", "nonce_wrong_node"})
"""Refusals of a next nonce the agent kept (it expired, or the verifier's key changed): the agent
asks for a fresh challenge at once instead of counting a failure."""
IMA_FULL_LOG_REQUIRED = "ima_full_log_required"
IMA_PCR = 10


def ensure_ak(config: AgentConfig, tpm: Tpm, *, force: bool = False) -> tuple[AkBlobs, bool]:
    """The saved AK, or a new one under the EK (saved 0600); the flag says whether it is new."""
    if not force:
        saved = load_ak(config.state_dir)
        if saved is not None:
            return saved, False
    kind = tpm.resolve_ek_kind(config.ek_type)
    ak = tpm.create_ak(kind, config.ak_alg)
    save_ak(config.state_dir, ak)
    return ak, True


class EnrollState(enum.Enum):
    NEW = "new"
    CHALLENGED = "challenged"
    ENROLLED = "enrolled"


class EnrollmentSession:
    """EK and AK sent → credential activated in the TPM → enrolled. Out-of-order calls raise."""

    def __init__(self, config: AgentConfig, client: VerifierClient) -> None:
        self.config = config
        self.client = client
        self.state = EnrollState.NEW
        self._challenge: CredentialChallenge | None = None
        self._ak: AkBlobs | None = None

    def send_keys(self, ek: EndorsementKey, ak: AkBlobs) -> CredentialChallenge:
        if self.state is not EnrollState.NEW:
            raise RuntimeError(f"cannot send keys in enrollment state {self.state.value}")
        self._challenge = self.client.enroll(
            self.config.enroll_token,
            node=self.config.node,
            labels=self.config.labels,
            ek_cert=ek.cert,
            ek_public=ek.public,
            ak_public=ak.public,
        )
        self._ak = ak
        self.state = EnrollState.CHALLENGED
        return self._challenge

    def activate(self, tpm: Tpm) -> Enrollment:
        if self.state is not EnrollState.CHALLENGED or self._challenge is None or self._ak is None:
            raise RuntimeError(
                f"cannot activate a credential in enrollment state {self.state.value}"
            )
        secret = tpm.activate_credential(
            self._ak, self._challenge.credential_blob, self._challenge.encrypted_secret
        )
        self.client.activate(self._challenge.enrollment_id, self._challenge.activation_key, secret)
        self.state = EnrollState.ENROLLED
        enrollment = Enrollment(
            node=self.config.node,
            verifier=self.client.base_url,
            enrollment_id=self._challenge.enrollment_id,
            ak_name=self._ak.name.hex(),
        )
        save_enrollment(self.config.state_dir, enrollment)
        return enrollment


TpmOpener = Callable[[], Tpm]


def _opener(config: AgentConfig, open_tpm: TpmOpener | None) -> TpmOpener:
    """How to reach the TPM: by the configured TCTI unless the caller brings its own connection."""
    return open_tpm if open_tpm is not None else lambda: Tpm(config.tcti)


def enroll(
    config: AgentConfig, client: VerifierClient, *, open_tpm: TpmOpener | None = None
) -> Enrollment:
    with _opener(config, open_tpm)() as tpm:
        ak, _ = ensure_ak(config, tpm)
        ek = tpm.endorsement_key(ak.ek_kind)
        session = EnrollmentSession(config, client)
        session.send_keys(ek, ak)
        return session.activate(tpm)


def collect_evidence(
    config: AgentConfig,
    tpm: Tpm,
    ak: AkBlobs,
    nonce: bytes,
    selection: Mapping[HashAlg, tuple[int, ...]] | None = None,
    ima_cursor: tuple[int, int] = IMA_FULL,
) -> Evidence:
    """Read the boot log first (a missing log fails before the TPM is used), then quote, then
    read the IMA list from ``ima_cursor`` on: after the quote, so that the chunk holds every
    entry the quoted PCR10 covers (entries appended meanwhile are the verifier's unquoted tail).
    With IMA the quote selects PCR10 in every bank asked for."""
    event_log = read_log(config.eventlog, DEFAULT_CAPS.event_log)
    chosen = dict(selection or config.pcr_selection)
    if config.ima_log:
        chosen = {bank: tuple(sorted({*pcrs, IMA_PCR})) for bank, pcrs in chosen.items()}
    quote = tpm.quote(ak, nonce, chosen, saved=AkContextFile(config.state_dir))
    ima = None
    if config.ima_log:
        ima = read_ima_chunk(config.ima_log, ima_cursor, DEFAULT_CAPS.ima_log)
    return evidence_from_quote(config.node, quote, event_log, ima)


def attest(
    config: AgentConfig,
    client: VerifierClient,
    *,
    open_tpm: TpmOpener | None = None,
    challenge: Challenge | None = None,
) -> AttestationResult:
    """One attestation: challenge (unless the last answer brought the next nonce), quote over the
    verifier's selection, send, return the verdict.

    With IMA, only the entries since the verifier's cursor are sent; when the verifier cannot
    continue that chunk (``ima_full_log_required``: a reboot, a lost prefix, a changed policy)
    the agent sends the full list at once, in the same round (with a fresh challenge)."""
    while True:
        if challenge is None:
            log_sha256 = hashlib.sha256(read_log(config.eventlog, DEFAULT_CAPS.event_log)).digest()
            challenge = client.challenge(config.node, log_sha256)
        cursor = load_ima_cursor(config.state_dir) if config.ima_log else IMA_FULL
        try:
            result = _send(config, client, open_tpm, challenge, cursor)
        except VerifierRefused as exc:
            if exc.code != IMA_FULL_LOG_REQUIRED or cursor == IMA_FULL:
                raise
            save_ima_cursor(config.state_dir, None)  # the next try sends the full list
            challenge = None
            continue
        if config.ima_log:
            save_ima_cursor(config.state_dir, result.ima_next)
        return result


def _send(
    config: AgentConfig,
    client: VerifierClient,
    open_tpm: TpmOpener | None,
    challenge: Challenge,
    cursor: tuple[int, int],
) -> AttestationResult:
    with _opener(config, open_tpm)() as tpm:
        ak, _ = ensure_ak(config, tpm)
        evidence = collect_evidence(
            config, tpm, ak, challenge.nonce, challenge.pcr_selection, cursor
        )
    bundle = encode_bundle(evidence, known_event_log_sha256=challenge.known_event_log_sha256)
    return client.submit(config.node, bundle)


def own_ear(
    config: AgentConfig, client: VerifierClient, *, open_tpm: TpmOpener | None = None
) -> str:
    """This node's EAR, proving it holds its enrolled AK: a nonce from the verifier, a quote
    whose qualifying data is ``ear_request_digest(nonce)`` (never usable as evidence)."""
    from assay.ak_proof import ear_request_digest

    challenge = client.challenge(config.node)
    with _opener(config, open_tpm)() as tpm:
        ak, _ = ensure_ak(config, tpm)
        bank = next(iter(challenge.pcr_selection), HashAlg.SHA256)
        quote = tpm.quote(
            ak,
            ear_request_digest(challenge.nonce),
            {bank: (0,)},
            saved=AkContextFile(config.state_dir),
        )
    return client.own_ear(config.node, challenge.nonce, quote.attest, quote.signature)


def _attest_round(
    config: AgentConfig,
    client: VerifierClient,
    open_tpm: TpmOpener | None,
    following: Challenge | None,
    stats: RunStats,
    log: RunLog,
) -> AttestationResult:
    """One round: with the nonce the last answer brought, else a challenge; a refused kept nonce
    falls back to a challenge, and ``node_not_enrolled`` to enrollment, within the round."""
    try:
        return attest(config, client, open_tpm=open_tpm, challenge=following)
    except VerifierRefused as exc:
        if following is not None and exc.code in NONCE_REFUSALS:
            return _attest_round(config, client, open_tpm, None, stats, log)
        if exc.code != NOT_ENROLLED:
            raise
    log.enrolling()
    enroll(config, client, open_tpm=open_tpm)
    stats.enrollments += 1
    return attest(config, client, open_tpm=open_tpm)


@dataclass(slots=True)
class RunStats:
    attestations: int = 0
    failures: int = 0
    enrollments: int = 0
    last: AttestationResult | None = None


def next_delay(config: AgentConfig, failures: int, rng: random.Random) -> float:
    """Interval ± jitter after a success; exponential backoff (capped) after failures."""
    if failures == 0:
        spread = config.interval * config.jitter
        return max(0.0, config.interval + rng.uniform(-spread, spread))
    base = min(config.interval, 5.0) or 1.0
    backoff: float = min(config.max_backoff, base * (2 ** (failures - 1)))
    return backoff * rng.uniform(0.5, 1.0)


def run(
    config: AgentConfig,
    client: VerifierClient,
    *,
    iterations: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    report: Callable[[AttestationResult], None] | None = None,
    open_tpm: TpmOpener | None = None,
    log: RunLog | None = None,
) -> RunStats:
    """Attest every interval until ``iterations`` rounds have run (forever when None).

    Every failure a node can meet is logged as one line and retried with backoff; the agent
    re-enrolls only when the verifier says ``node_not_enrolled``.
    """
    rng = rng or random.Random()
    log = log or RunLog(config.node)
    stats = RunStats()
    failures = 0
    rounds = 0
    following: Challenge | None = None
    while iterations is None or rounds < iterations:
        rounds += 1
        try:
            result = _attest_round(config, client, open_tpm, following, stats, log)
            following = result.next_challenge
            stats.attestations += 1
            stats.last = result
            failures = 0
            if report is not None:
                report(result)
        except AgentError as exc:
            following = None
            failures += 1
            stats.failures += 1
            log.failed(exc)
        if iterations is None or rounds < iterations:
            sleep(next_delay(config, failures, rng))
    return stats
