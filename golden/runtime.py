"""Runtime policies: what a trusted node may execute and read once booted (IMA), and the SELinux
state it must run in. Versioned like golden sets (``golden.model``): a policy is one reviewed
version, with a status (draft, active, retired, revoked with a reason) and a validity window;
several are in force at once during a rollout and an entry passes when ANY policy in force
accepts it. Everything here is immutable data; judging entries lives in
``verifier.appraisal.runtime``.

Names are matched the way the kernel logs them: as bytes (a policy path is its UTF-8 encoding,
``surrogateescape`` for other bytes) with every space written as ``_`` (``ima_template_lib.c``
replaces spaces in names so the ASCII list stays splittable).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from cryptography import x509

from assay.ima import ImaKey, is_keyring_name

from .model import Digests, Lifecycle

RuntimeStatus = Literal["draft", "active", "retired", "revoked"]
RUNTIME_STATUSES: tuple[RuntimeStatus, ...] = ("draft", "active", "retired", "revoked")


def kernel_name(path: str) -> str:
    """A path as IMA logs it: spaces become underscores."""
    return path.replace(" ", "_")


def name_bytes(name: str) -> bytes:
    """A policy name as the bytes the log carries (non-UTF-8 bytes survive as surrogates)."""
    return name.encode("utf-8", "surrogateescape")


def _empty_files() -> Mapping[str, tuple[Digests, ...]]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A key trusted to sign files (``ima-sig``): the PEM text the policy holds and the key."""

    pem: str
    key: ImaKey

    @property
    def label(self) -> str:
        return self.key.label


@dataclass(frozen=True, slots=True)
class KeyringCa:
    """A CA whose direct signature a key loaded onto a trusted keyring must carry."""

    label: str
    pem: str
    cert: x509.Certificate


@dataclass(frozen=True, slots=True)
class Selinux:
    """SELinux expectations, from the ``selinux-state`` / ``selinux-policy-hash`` critical data.

    ``require_enforcing``: a ``selinux-state`` entry must be logged, and every one of them that says
    ``initialized=1`` must say ``enforcing=1`` (the log cannot show that a permissive spell ended,
    see ``assay.ima._critical``). ``policy_hashes``: the approved policy images by the hash the
    kernel logs (the ``buf`` of ``selinux-policy-hash``); when given, one must be logged and every
    one logged must be approved.
    """

    require_enforcing: bool = True
    policy_hashes: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class RuntimePolicy(Lifecycle[RuntimeStatus]):
    """One version of a runtime policy (its status and validity: :class:`~golden.model.Lifecycle`).

    * ``files``: path → the digests it may have (several: versions of a binary during a rollout);
      each a map bank → digest, matched against the entry's d-ng algorithm.
    * ``exclude``: globs (``fnmatch``, ``*`` crosses ``/``) of names this policy does not judge:
      an excluded entry passes whatever its digest, and so does a violation on it.
    * ``buffers``: ``ima-buf`` event name → approved digests of the buffer (kernel_version,
      keys loaded onto keyrings, dm tables, kexec command lines …).
    * ``keys`` / ``require_signatures`` / ``approve_signed``: files matching a
      ``require_signatures`` glob must carry a valid signature by one of ``keys``; with
      ``approve_signed``, such a signature alone approves a file that ``files`` does not list.
    * ``trusted_keyrings`` / ``keyring_cas``: keys the list itself loads onto these kernel
      keyrings (``ima-buf`` entries of ``measure func=KEY_CHECK``) count as this policy's keys
      for the entries after the load — never before it, and never from another keyring; with
      ``keyring_cas`` such a key must be a certificate one of them issued directly. A load that
      qualifies is an approved entry; one that does not fails unless ``buffers`` approves it.
    * ``selinux``: None when this policy says nothing about SELinux.
    * ``require_boot_aggregate``: the list must start with a boot_aggregate matching the quoted
      PCR0–7 (SHA-1) or PCR0–9.
    SHA-1 digests are accepted only with ``allow_sha1``.
    """

    name: str
    version: str
    description: str = ""
    status: RuntimeStatus = "active"
    status_reason: str | None = None
    valid_from: dt.datetime | None = None
    valid_until: dt.datetime | None = None
    allow_sha1: bool = False
    files: Mapping[str, tuple[Digests, ...]] = field(default_factory=_empty_files)
    exclude: tuple[str, ...] = ()
    buffers: Mapping[str, tuple[Digests, ...]] = field(default_factory=_empty_files)
    keys: tuple[SigningKey, ...] = ()
    require_signatures: tuple[str, ...] = ()
    approve_signed: bool = False
    selinux: Selinux | None = None
    require_boot_aggregate: bool = True
    trusted_keyrings: tuple[str, ...] = ()
    keyring_cas: tuple[KeyringCa, ...] = ()

    def __post_init__(self) -> None:
        if self.status == "revoked" and not self.status_reason:
            raise ValueError("a revoked runtime policy needs a status_reason")
        has_keys = bool(self.keys or self.trusted_keyrings)
        if self.approve_signed and not has_keys:
            raise ValueError("approve_signed needs at least one key or trusted keyring")
        if self.require_signatures and not has_keys:
            raise ValueError("require_signatures needs at least one key or trusted keyring")
        if self.keyring_cas and not self.trusted_keyrings:
            raise ValueError("keyring_cas needs trusted_keyrings")
        for ring in self.trusted_keyrings:
            if not is_keyring_name(name_bytes(ring)):
                raise ValueError(
                    f"trusted keyring {ring!r} is not a name only the kernel can give a keyring "
                    f"(.ima, .builtin_trusted_keys, .platform …: user space may create '_ima')"
                )

    def with_files(self, files: Iterable[tuple[str, Digests]]) -> RuntimePolicy:
        """A copy with these (path, digests) approved too (an approval already there is kept once)."""
        merged = {k: list(v) for k, v in self.files.items()}
        for path, d in files:
            have = merged.setdefault(kernel_name(path), [])
            if d not in have:
                have.append(d)
        return dataclasses.replace(self, files=freeze(merged))


def freeze(files: Mapping[str, Iterable[Digests]]) -> Mapping[str, tuple[Digests, ...]]:
    """A read-only, path-sorted map (so that equal policies compare and dump identically)."""
    return MappingProxyType({k: tuple(files[k]) for k in sorted(files)})


def glob_regex(globs: Iterable[str]) -> re.Pattern[bytes] | None:
    """One compiled matcher for a list of name globs (None for none), matching name bytes."""
    parts = [fnmatch.translate(kernel_name(g)) for g in globs]
    if not parts:
        return None
    return re.compile(name_bytes("|".join(f"(?:{p})" for p in parts)), re.DOTALL)
