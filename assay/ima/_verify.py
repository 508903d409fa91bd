"""Verify IMA entries against a verified quote; compute what boot_aggregate must be.

``verify_ima(state, chunk, quote, bank)`` is the only way to a :class:`VerifiedImaLog`: the entries
whose replay (continuing ``state``, the node's stored replay of this boot) reproduces the PCR values
the quote vouches for. Runtime policy judges only those. Entries the kernel appended after the quote
(the agent reads the list after quoting) do not reproduce a quoted value; they are returned as the
unquoted tail, to be sent again with the next quote, never judged now.

``boot_aggregate`` (``ima_crypto.c``, ``ima_calc_boot_aggregate``): the first entry's digest, the
hash of PCR0–7 read from the TPM in one bank. Since Linux 5.8 the bank is the one matching
``ima_hash`` (else SHA-256, else SHA-1) and, when that bank is not SHA-1, PCR8–9 are hashed too
(kernel command line and image, "ima: extend boot_aggregate with kernel measurements"); a SHA-1
aggregate is always PCR0–7. So the rule is the entry's own algorithm: SHA-1 → PCR0–7, any other →
PCR0–9.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from ..algorithms import HashAlg
from ..errors import VerificationFailed
from ..tpm2.quote import VerifiedQuote
from ._formats import BANK_OF_NAME
from ._parse import ImaEntry, ImaLog
from ._replay import ExtendMode, ImaReplay, Pcrs, extend_values, replay_from

BOOT_AGGREGATE = b"boot_aggregate"


@dataclass(frozen=True, slots=True)
class _ImaEvidence:
    """``entries``: the entries vouched for (in a chunk: the new ones); ``state``: the replay after
    them; ``bank``/``mode``: the bank compared and the extend form that matched; ``boot_pcrs``: the
    quoted PCR values of every bank (for boot_aggregate; empty when nothing vouches for them);
    ``unquoted``: entries after the quoted prefix, not judged."""

    entries: tuple[ImaEntry, ...]
    state: ImaReplay
    bank: HashAlg
    mode: ExtendMode
    boot_pcrs: Pcrs
    unquoted: tuple[ImaEntry, ...]


@dataclass(frozen=True, slots=True)
class VerifiedImaLog(_ImaEvidence):
    """IMA entries a verified quote vouches for. Only :func:`verify_ima` makes one."""


@dataclass(frozen=True, slots=True)
class ReviewedImaLog(_ImaEvidence):
    """A file's entries taken as quoted, for offline review: proves nothing about a node. Only
    :func:`assume_quoted_for_review` makes one; the service never does."""


ImaEvidence = VerifiedImaLog | ReviewedImaLog


def _items(chunk: ImaLog | Sequence[ImaEntry]) -> tuple[ImaEntry, ...]:
    return chunk.entries if isinstance(chunk, ImaLog) else tuple(chunk)


IMA_PCR = 10
"""The PCR the kernel's IMA extends unless a policy rule names another (``pcr=``)."""


def verify_ima(
    state: ImaReplay, chunk: ImaLog | Sequence[ImaEntry], quote: VerifiedQuote, bank: HashAlg
) -> VerifiedImaLog:
    """Check ``chunk`` (continuing ``state``) against ``quote`` in ``bank``.

    Steps: 1. the bank is quoted and replayed; 2. PCR10 (IMA's own, always: an empty or cut
    list must not verify against a quote whose PCR10 says otherwise) and every other PCR the
    entries (or the state) extend is quoted; 3. the replay of all of the chunk, under either extend form, equals the quoted values —
    else 4. the shortest prefix that does (the rest is the unquoted tail); 5. the state after the
    vouched entries. Raises VerificationFailed (code ``ima_pcr_mismatch`` and the like) naming the
    PCR, the replayed candidates and the quoted value.
    """
    items = _items(chunk)
    quoted_all = quote.pcrs
    # 1. Bank.
    quoted = quoted_all.get(bank)
    if quoted is None:
        raise VerificationFailed(
            f"the quote does not cover the {bank.bank} bank", code="bank_not_quoted"
        )
    if bank not in state.banks:
        raise VerificationFailed(
            f"the IMA replay has no {bank.bank} bank", code="bank_not_replayed"
        )
    # 2. PCRs.
    touched = sorted(set(state.pcrs[bank]) | {e.pcr for e in items} | {IMA_PCR})
    missing = [p for p in touched if p not in quoted]
    if missing:
        raise VerificationFailed(
            f"IMA entries extend PCR{', PCR'.join(map(str, missing))}, which the quote does not "
            f"cover ({bank.bank})",
            code="ima_pcr_not_quoted",
        )
    # 3. The whole chunk.
    after = replay_from(state, items)
    for mode in _modes(bank):
        if all(after.value(bank, p, mode) == quoted[p] for p in touched):
            return VerifiedImaLog(items, after, bank, mode, quoted_all, ())
    # 4. A prefix: the quote was taken before the last entries were appended.
    for mode in _modes(bank):
        k = _quoted_prefix(state, items, bank, mode, quoted, touched)
        if k is not None:
            head = items[:k]
            return VerifiedImaLog(head, replay_from(state, head), bank, mode, quoted_all, items[k:])
    raise _mismatch(after, bank, quoted, touched)


def _modes(bank: HashAlg) -> tuple[ExtendMode, ...]:
    return ("per-bank",) if bank is HashAlg.SHA1 else ("per-bank", "sha1-padded")


def _quoted_prefix(
    state: ImaReplay,
    items: tuple[ImaEntry, ...],
    bank: HashAlg,
    mode: ExtendMode,
    quoted: Mapping[int, bytes],
    touched: list[int],
) -> int | None:
    """The smallest k such that entries[:k] replay to the quoted values (a hash chain never
    repeats a value, so there is at most one)."""
    current = {p: state.value(bank, p, mode) for p in touched}
    wrong = {p for p in touched if current[p] != quoted[p]}
    if not wrong:
        return 0
    hasher = bank.hasher
    for k, (e, v) in enumerate(zip(items, extend_values(state, items, bank, mode), strict=True)):
        value = current[e.pcr] = hasher(current[e.pcr] + v).digest()
        if value == quoted[e.pcr]:
            wrong.discard(e.pcr)
        else:
            wrong.add(e.pcr)
        if not wrong:
            return k + 1
    return None


def _mismatch(
    after: ImaReplay, bank: HashAlg, quoted: Mapping[int, bytes], touched: list[int]
) -> VerificationFailed:
    for p in touched:
        got = {m: after.value(bank, p, m).hex() for m in _modes(bank)}
        if quoted[p].hex() not in got.values():
            shown = ", ".join(f"{v} ({m})" for m, v in got.items())
            return VerificationFailed(
                f"PCR{p} ({bank.bank}): the IMA log replays to {shown}, the quote says "
                f"{quoted[p].hex()}",
                code="ima_pcr_mismatch",
            )
    return VerificationFailed(
        f"no prefix of the IMA entries replays to the quoted {bank.bank} PCRs "
        f"{', '.join(map(str, touched))} under one extend form",
        code="ima_pcr_mismatch",
    )


def assume_quoted_for_review(
    state: ImaReplay, chunk: ImaLog | Sequence[ImaEntry], bank: HashAlg = HashAlg.SHA256
) -> ReviewedImaLog:
    """Take a file's own replay as quoted (per-bank form), for offline review and ``capture``.
    Anyone can write a log that replays to itself: this proves nothing about a node, and it has
    no quoted PCR0–9, so boot_aggregate cannot be checked from it."""
    items = _items(chunk)
    after = replay_from(state, items)
    if bank not in after.banks:
        raise VerificationFailed(
            f"the IMA replay has no {bank.bank} bank", code="bank_not_replayed"
        )
    return ReviewedImaLog(items, after, bank, "per-bank", MappingProxyType({}), ())


@dataclass(frozen=True, slots=True)
class BootAggregate:
    """What an entry's boot_aggregate digest should be: ``expected`` None when the PCR values it
    needs are not all given (``missing`` names them)."""

    bank: HashAlg | None
    pcrs: tuple[int, ...]
    got: bytes
    expected: bytes | None
    missing: tuple[int, ...]

    @property
    def matches(self) -> bool:
        return self.expected is not None and self.expected == self.got


def boot_aggregate(entry: ImaEntry, pcrs: Pcrs) -> BootAggregate:
    """The boot_aggregate an entry should carry, from PCR values (which must come from a verified
    quote to mean anything): the entry's digest algorithm picks the bank, SHA-1 → PCR0–7,
    any other → PCR0–9 (see the module docstring)."""
    bank = BANK_OF_NAME.get(entry.digest_alg)
    if bank is None:
        return BootAggregate(None, (), entry.digest, None, ())
    indices = tuple(range(8)) if bank is HashAlg.SHA1 else tuple(range(10))
    values = pcrs.get(bank, {})
    missing = tuple(i for i in indices if i not in values)
    if missing:
        return BootAggregate(bank, indices, entry.digest, None, missing)
    expected = bank.hash(b"".join(values[i] for i in indices))
    return BootAggregate(bank, indices, entry.digest, expected, ())
