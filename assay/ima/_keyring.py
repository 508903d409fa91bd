"""Keys the measurement list itself loads onto kernel keyrings (``measure func=KEY_CHECK``).

IMA measures a key as it is added to a keyring (``ima_post_key_create_or_update``, an
``ima-buf`` entry): the event name is the keyring's name
(``.ima``, ``.builtin_trusted_keys``, ``.platform``, ``_ima`` …) and the buffer is the payload
given to ``add_key`` — for an X.509 asymmetric key, the DER certificate. The template hash covers
both, so after a quote they are what the kernel loaded, in order. Nothing here decides whether a
key is trusted (that is the runtime policy's ``trusted_keyrings``): :class:`KeyringLoads` only
keeps the loads of a boot's list so far, so a later chunk's appraisal knows the keys loaded
before it.

Only keyrings whose name starts with ``.`` are kept: the kernel refuses such a name from user
space (``add_key``: "a keyring with a dot-prefixed name"), so an entry named ``.ima`` is the
kernel's ``.ima``. ``_ima`` (IMA's keyring on kernels built without
``CONFIG_INTEGRITY_TRUSTED_KEYRING``) is not: any process may create a keyring of that name, and
root may add any key to the real one — trusting it would be trusting whoever is root. Caps:
:data:`MAX_KEY_LOADS` loads and :data:`MAX_KEY_LOAD_BYTES` of payload per boot (a kernel loads a
handful; IMA logs an identical buffer once).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import MalformedEvidence
from ._parse import ImaEntry
from ._replay import ImaReplayError
from ._verify import ImaEvidence

MAX_KEY_LOADS = 1024
MAX_KEY_LOAD_BYTES = 4 * 1024 * 1024


def is_keyring_name(name: bytes) -> bool:
    """Whether an ima-buf name is a keyring only the kernel can have made (``.``-prefixed)."""
    return name.startswith(b".") and len(name) > 1


@dataclass(frozen=True, slots=True)
class KeyLoad:
    """Entry ``index`` loaded ``payload`` (a DER certificate, if it is a key at all) onto
    ``keyring``."""

    index: int
    keyring: bytes
    payload: bytes


@dataclass(frozen=True, slots=True)
class KeyringLoads:
    """The key loads of a boot's list from entry 0 up to (not including) entry ``entries``."""

    loads: tuple[KeyLoad, ...] = ()
    entries: int = 0

    def extend(self, evidence: ImaEvidence) -> KeyringLoads:
        """The loads after ``evidence`` (entries a quote vouched for, so never an unverified
        chunk), which must continue these (its first entry is entry ``entries``): a caller bug
        otherwise, never evidence to judge."""
        items = evidence.entries
        if not items:
            return self
        if items[0].index != self.entries:
            raise ImaReplayError(
                f"entries from {items[0].index} do not continue the keyring loads "
                f"(through entry {self.entries})"
            )
        loads = self.loads + tuple(_loads(items))
        if len(loads) > MAX_KEY_LOADS or sum(len(k.payload) for k in loads) > MAX_KEY_LOAD_BYTES:
            raise MalformedEvidence(
                f"the IMA list loads more than {MAX_KEY_LOADS} keys or "
                f"{MAX_KEY_LOAD_BYTES} bytes of them onto kernel keyrings",
                where=f"IMA entry {items[-1].index}",
            )
        return KeyringLoads(loads, items[-1].index + 1)

    def to_json(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "loads": [[k.index, k.keyring.hex(), k.payload.hex()] for k in self.loads],
        }

    @classmethod
    def from_json(cls, value: Any) -> KeyringLoads:
        """The inverse of :meth:`to_json`; ValueError for anything else (a store's own data)."""
        try:
            entries = value["entries"]
            loads = tuple(
                KeyLoad(int(i), bytes.fromhex(ring), bytes.fromhex(payload))
                for i, ring, payload in value["loads"]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not keyring loads: {exc}") from None
        if not isinstance(entries, int) or any(not 0 <= k.index < entries for k in loads):
            raise ValueError("keyring loads: an index outside the entries counted")
        return cls(loads, entries)


def _loads(items: Iterable[ImaEntry]) -> Iterable[KeyLoad]:
    for e in items:
        if e.buf is not None and not e.violation and is_keyring_name(e.name):
            yield KeyLoad(e.index, e.name, e.buf)
