"""A signature database as the appraisal compares it: entries as ids, checked like the full parse.

:func:`~assay.uefi.signatures.parse_signature_lists` builds an object per entry, for showing a
database. The appraisal only asks which ids a database holds — the SHA-256 hex of a certificate's
DER, else the hex of the entry's data — and a dbx holds hundreds of hashes, of which a golden set
requires most. :func:`check_signature_database` makes every check of the full parse, with the same
errors, validates every certificate the same way, and leaves the hash entries as bytes:
:meth:`SignatureDatabase.lacks` compares a golden set's :class:`RequiredIds` with those bytes, and
:attr:`SignatureDatabase.ids` names every entry only when asked.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import warnings
from collections.abc import Iterable
from itertools import chain

from cryptography.utils import CryptographyDeprecationWarning

from .signatures import _OWNER, _Layout, _layouts, _load_strictly


class SignatureDatabase:
    """A signature database that passed every check of the full parse, its certificates
    validated. Made only by :func:`check_signature_database`; never mutated but for naming its
    ids and collecting its entries of one size, each once (:attr:`ids`, :meth:`lacks`)."""

    __slots__ = ("_by_size", "_certificates", "_data", "_hash_lists", "_ids")

    def __init__(self, data: bytes, certificates: list[str], hash_lists: list[_Layout]) -> None:
        self._data = data
        self._certificates = frozenset(certificates)
        self._hash_lists = tuple(hash_lists)
        self._ids: frozenset[str] | None = None
        self._by_size: dict[int, frozenset[bytes]] = {}

    @property
    def certificates(self) -> frozenset[str]:
        """The ids of the X.509 entries (each validated)."""
        return self._certificates

    @property
    def ids(self) -> frozenset[str]:
        """Every entry's id (computed once)."""
        if self._ids is None:
            out = list(self._certificates)
            for layout in self._hash_lists:
                out += map(bytes.hex, _hash_entries(self._data, layout))
            self._ids = frozenset(out)
        return self._ids

    def lacks(self, required: RequiredIds) -> frozenset[str]:
        """``required.ids - self.ids``: the required ids this database does not hold, found by
        the entries' bytes without naming each entry (a dbx holds hundreds)."""
        if self._ids is not None:
            return required.ids - self._ids
        certificates = self._certificates
        missing = [i for i in required.others if i not in certificates]
        for size, raws in required.by_size.items():
            held = self._entries_of_size(size)
            if not raws <= held:
                missing += (r.hex() for r in raws - held)
        return frozenset(i for i in missing if i not in certificates)

    def _entries_of_size(self, size: int) -> frozenset[bytes]:
        """The data of every hash entry ``size`` bytes long with its owner, as a set built once
        (a golden version in a rollout compares two requirements with the same dbx)."""
        got = self._by_size.get(size)
        if got is None:
            lists = [x for x in self._hash_lists if x.sig_size == size]
            got = frozenset(chain.from_iterable(_hash_entries(self._data, x) for x in lists))
            self._by_size[size] = got
        return got


class RequiredIds:
    """Ids a signature database must hold (a golden set's ``db_must_contain``, say), also in the
    form :meth:`SignatureDatabase.lacks` compares: each lowercase-hex id as its bytes, by the size
    of the entry that would hold it. Built once per compiled policy."""

    __slots__ = ("by_size", "ids", "others")

    def __init__(self, ids: Iterable[str]) -> None:
        self.ids = frozenset(ids)
        by_size: dict[int, set[bytes]] = {}
        others: list[str] = []
        for i in self.ids:
            raw = _raw(i)
            if raw is None:  # only a certificate can hold it (its id is not an entry's hex)
                others.append(i)
            else:
                by_size.setdefault(_OWNER + len(raw), set()).add(raw)
        self.by_size = {size: frozenset(raws) for size, raws in by_size.items()}
        self.others = frozenset(others)

    def __len__(self) -> int:
        return len(self.ids)

    def __eq__(self, other: object) -> bool:  # a value: equal ids, equal requirement
        return isinstance(other, RequiredIds) and other.ids == self.ids

    def __hash__(self) -> int:
        return hash(self.ids)

    def __repr__(self) -> str:
        return f"RequiredIds({sorted(self.ids)!r})"


def _raw(wanted: str) -> bytes | None:
    """The bytes whose ``hex()`` is ``wanted``, else None (``bytes.fromhex`` would also take
    upper case and spaces, which no entry's id has)."""
    try:
        raw = bytes.fromhex(wanted)
    except ValueError:
        return None
    return raw if raw.hex() == wanted else None


def check_signature_database(
    data: bytes, *, where: str = "signature database"
) -> SignatureDatabase:
    """``data`` checked as :func:`~assay.uefi.signatures.parse_signature_lists` checks it, with
    exactly its errors (MalformedEvidence), certificates validated the same way, but no entry
    objects built and no hash entry read."""
    certificates: list[str] = []
    hash_lists: list[_Layout] = []
    with warnings.catch_warnings():  # once for every certificate (see _load_strictly)
        warnings.simplefilter("error", CryptographyDeprecationWarning)
        for layout in _layouts(data, where):
            if layout.kind == "x509":
                certificates += _certificate_ids(data, layout)
            else:
                hash_lists.append(layout)
    return SignatureDatabase(data, certificates, hash_lists)


def _certificate_ids(data: bytes, layout: _Layout) -> list[str]:
    sig_size = layout.sig_size
    ids = []
    for i, at in enumerate(range(layout.body, layout.end, sig_size)):
        der = data[at + _OWNER : at + sig_size]
        _load_strictly(der, f"{layout.here}, entry {i}")
        ids.append(hashlib.sha256(der).hexdigest())
    return ids


def _hash_entries(data: bytes, layout: _Layout) -> list[bytes]:
    """Each entry's data without its owner, unpacked ``_BLOCK`` entries at a time in C (and the
    rest in one call): a dbx holds hundreds, and a Python-level step per entry was most of its
    cost."""
    size = layout.sig_size
    view = memoryview(data)[layout.body : layout.end]
    count = len(view) // size
    whole = count - count % _BLOCK
    entries: list[bytes] = []
    if whole:
        for some in _entries_struct(size, _BLOCK).iter_unpack(view[: whole * size]):
            entries += some
    if count > whole:
        entries += _entries_struct(size, count - whole).unpack(view[whole * size :])
    return entries


_BLOCK = 64


@functools.lru_cache(maxsize=256)
def _entries_struct(sig_size: int, count: int) -> struct.Struct:
    """A struct reading ``count`` entries' data, each skipping its owner GUID. Keyed by the entry
    size and a count up to ``_BLOCK`` only (a few per firmware), never by content."""
    return struct.Struct("<" + f"{_OWNER}x{sig_size - _OWNER}s" * count)
