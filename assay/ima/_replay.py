"""Replay IMA entries into PCR values, for every bank, incrementally.

What the kernel extends (``security/integrity/ima/ima_queue.c``, ``ima_crypto.c``):

* **Per-bank template digests** (kernels ≥ 5.8, "ima: Calculate and extend PCR with digests in
  ima_template_entry"): ``ima_calc_field_array_hash`` hashes the template data once per TPM bank
  with that bank's algorithm and extends each bank with its own digest. The log still shows only
  the SHA-1 one (``binary_runtime_measurements``), so the other banks are recomputed here from the
  template data; the per-bank files of kernels ≥ 6.10 show the bank's own digest instead.
* **SHA-1 zero-padded** (kernels 4.10–5.7, and any bank whose algorithm the kernel's crypto API
  lacks): the SHA-1 template digest, padded with zeros to the bank's size, is extended into every
  bank (``tpm_pcr_extend`` with one SHA-1 digest).
* **Violations** (all-zero template hash): every bank is extended with 0xFF bytes of its size
  (``ima_init_digests``); under the padded form, 20 bytes of 0xFF then zeros.

Both candidates are kept for every non-SHA-1 bank; which one the TPM holds is for the quote to say
(``verify_ima``). The state is immutable and carries the entry count and byte offset, so a verifier
keeps it per node and boot and feeds it only the entries added since: replaying a whole log equals
replaying a prefix and then the rest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from ..algorithms import HashAlg
from ..errors import AssayError
from ._parse import ImaEntry, ImaLog

ExtendMode = Literal["per-bank", "sha1-padded"]
MODES: tuple[ExtendMode, ...] = ("per-bank", "sha1-padded")
Pcrs = Mapping[HashAlg, Mapping[int, bytes]]


def _available_banks() -> tuple[HashAlg, ...]:
    out = []
    for alg in HashAlg:
        try:
            alg.hash(b"")
        except ValueError:  # no SM3 in this OpenSSL
            continue
        out.append(alg)
    return tuple(out)


ALL_BANKS = _available_banks()
"""Every bank this Python can compute (SM3 only where OpenSSL provides it)."""


class ImaReplayError(AssayError):
    """Entries fed to a replay state out of order: a caller bug, never evidence to judge."""


def _frozen(pcrs: Mapping[HashAlg, Mapping[int, bytes]]) -> Pcrs:
    return MappingProxyType({alg: MappingProxyType(dict(v)) for alg, v in pcrs.items()})


@dataclass(frozen=True, slots=True)
class ImaReplay:
    """PCR values after ``entries`` entries (``offset`` bytes) of a boot's measurement list.

    ``pcrs`` holds the per-bank-digest values for every bank in ``banks``; ``padded`` the SHA-1
    zero-padded values for the non-SHA-1 ones. A PCR no entry named so far is absent (its value is
    the reset value, zeros). ``template_hash_alg`` is the log's, so a continuation chunk is parsed
    the same way.
    """

    entries: int
    offset: int
    violations: int
    banks: tuple[HashAlg, ...]
    template_hash_alg: HashAlg
    pcrs: Pcrs
    padded: Pcrs

    @classmethod
    def initial(
        cls, banks: Iterable[HashAlg] = ALL_BANKS, template_hash_alg: HashAlg = HashAlg.SHA1
    ) -> ImaReplay:
        """The state at boot: no entries, every PCR at its reset value."""
        chosen = tuple(sorted(set(banks)))
        empty: dict[HashAlg, dict[int, bytes]] = {alg: {} for alg in chosen}
        padded: dict[HashAlg, dict[int, bytes]] = {a: {} for a in chosen if a is not HashAlg.SHA1}
        return cls(0, 0, 0, chosen, template_hash_alg, _frozen(empty), _frozen(padded))

    def value(self, bank: HashAlg, pcr: int, mode: ExtendMode = "per-bank") -> bytes:
        """One PCR's replayed value (zeros if no entry extended it)."""
        table = self.pcrs if mode == "per-bank" or bank is HashAlg.SHA1 else self.padded
        return table[bank].get(pcr, bytes(bank.digest_size))

    def candidates(self, bank: HashAlg) -> dict[ExtendMode, Mapping[int, bytes]]:
        """The values of ``bank`` under each extend form (one for SHA-1, where they coincide)."""
        if bank is HashAlg.SHA1:
            return {"per-bank": self.pcrs[bank]}
        return {"per-bank": self.pcrs[bank], "sha1-padded": self.padded[bank]}

    def to_json(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "violations": self.violations,
            "pcrs": _pcrs_json(self.pcrs),
            "sha1_padded": {
                bank: values
                for bank, values in _pcrs_json(self.padded).items()
                if values != _pcrs_json(self.pcrs).get(bank)
            },
        }


def _pcrs_json(pcrs: Pcrs) -> dict[str, dict[str, str]]:
    return {
        alg.bank: {str(p): v.hex() for p, v in sorted(values.items())}
        for alg, values in pcrs.items()
    }


def replay_ima(log: ImaLog, banks: Iterable[HashAlg] = ALL_BANKS) -> ImaReplay:
    """Replay a whole log (or the first chunk of one) from the boot state."""
    start = ImaReplay.initial(banks, log.template_hash_alg)
    if log.start_index != 0 or log.start_offset != 0:
        raise ImaReplayError("replay_ima needs a log from its first entry; use replay_from")
    return replay_from(start, log.entries)


def replay_from(state: ImaReplay, entries: Sequence[ImaEntry] | ImaLog) -> ImaReplay:
    """The state after ``entries``, which must continue ``state`` exactly: the first entry's index
    and offset are the state's, and each next entry follows the one before it."""
    items = entries.entries if isinstance(entries, ImaLog) else entries
    if not items:
        return state
    _check_order(state, items)
    pcrs: dict[HashAlg, dict[int, bytes]] = {}
    padded: dict[HashAlg, dict[int, bytes]] = {}
    for alg in state.banks:
        pcrs[alg] = _fold(state.pcrs[alg], items, alg, _per_bank(items, alg, state))
        if alg is not HashAlg.SHA1:
            padded[alg] = _fold(state.padded[alg], items, alg, _sha1_padded(items, alg, state))
    last = items[-1]
    return ImaReplay(
        entries=last.index + 1,
        offset=last.offset + last.size,
        violations=state.violations + sum(1 for e in items if e.violation),
        banks=state.banks,
        template_hash_alg=state.template_hash_alg,
        pcrs=_frozen(pcrs),
        padded=_frozen(padded),
    )


def _check_order(state: ImaReplay, items: Sequence[ImaEntry]) -> None:
    expect_index, expect_offset = state.entries, state.offset
    for e in items:
        if e.index != expect_index or e.offset != expect_offset:
            raise ImaReplayError(
                f"entry {e.index} at offset {e.offset} does not continue the replay "
                f"(expected entry {expect_index} at offset {expect_offset})"
            )
        expect_index, expect_offset = e.index + 1, e.offset + e.size


def extend_values(
    state: ImaReplay, items: Sequence[ImaEntry], alg: HashAlg, mode: ExtendMode
) -> Iterator[bytes]:
    """What each entry extends into ``alg`` under ``mode`` (for callers that replay step by step)."""
    if mode == "per-bank" or alg is HashAlg.SHA1:
        return _per_bank(items, alg, state)
    return _sha1_padded(items, alg, state)


def _per_bank(items: Sequence[ImaEntry], alg: HashAlg, state: ImaReplay) -> Iterator[bytes]:
    ff = b"\xff" * alg.digest_size
    if alg is state.template_hash_alg:  # the logged digest (the parser checked it is the hash)
        return (ff if e.violation else e.template_hash for e in items)
    hasher = alg.hasher
    return (ff if e.violation else hasher(e.template_data).digest() for e in items)


def _sha1_padded(items: Sequence[ImaEntry], alg: HashAlg, state: ImaReplay) -> Iterator[bytes]:
    pad = bytes(alg.digest_size - 20)
    ff = b"\xff" * 20 + pad
    if state.template_hash_alg is HashAlg.SHA1:
        return (ff if e.violation else e.template_hash + pad for e in items)
    sha1 = hashlib.sha1
    return (ff if e.violation else sha1(e.template_data).digest() + pad for e in items)


def _fold(
    start: Mapping[int, bytes], items: Sequence[ImaEntry], alg: HashAlg, values: Iterable[bytes]
) -> dict[int, bytes]:
    """Extend each value into its entry's PCR: new = H(old || value). Consecutive entries of the
    same PCR (nearly always PCR 10) run in a local variable."""
    hasher: Callable[[bytes], Any] = alg.hasher
    out = dict(start)
    zero = bytes(alg.digest_size)
    pcr = -1
    cur = zero
    for e, v in zip(items, values, strict=True):
        if e.pcr != pcr:
            if pcr >= 0:
                out[pcr] = cur
            pcr = e.pcr
            cur = out.get(pcr, zero)
        cur = hasher(cur + v).digest()
    if pcr >= 0:
        out[pcr] = cur
    return out
