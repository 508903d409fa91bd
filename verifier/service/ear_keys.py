"""The EAR signing keys: created on first use, rotated by ``kid``, published as a JWKS.

Kept either in the database (``ear_signing_keys``; the default, shared by every worker and
instance) or in one file (``ear_key_file``, created with mode 0600 and refused if anyone else
may read it). The newest key that is not retired signs; ``rotate`` retires it and makes a new
one. A retired key stays in the JWKS until every token it signed has expired — tokens live at
most ``freshness_window`` seconds, so ``retention`` is that plus the clock skew — and is deleted
after.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey

from assay.errors import ConfigurationError
from verifier.ear.token import CLOCK_SKEW
from verifier.store import cluster
from verifier.store.models import iso

from .context import Services


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    key: ECKey
    created_at: dt.datetime
    retired_at: dt.datetime | None

    def public_jwk(self) -> dict[str, Any]:
        return {**self.key.as_dict(private=False), "kid": self.kid, "alg": "ES256", "use": "sig"}


@dataclass(frozen=True, slots=True)
class StoredKey:
    kid: str
    pem: bytes
    created_at: dt.datetime
    retired_at: dt.datetime | None

    def load(self) -> SigningKey:
        return SigningKey(self.kid, ECKey.import_key(self.pem), self.created_at, self.retired_at)


def new_key(now: dt.datetime) -> StoredKey:
    key = ECKey.generate_key("P-256")
    return StoredKey(key.thumbprint(), key.as_pem(private=True), now, None)


def retention(svc: Services) -> dt.timedelta:
    return dt.timedelta(seconds=svc.config.freshness_window + CLOCK_SKEW)


# --- storage --------------------------------------------------------------------------------


def _db_keys(svc: Services, now: dt.datetime, *, rotate: bool) -> list[StoredKey]:
    keep = now - retention(svc)
    if not rotate:  # the usual case: a read, no write lock (the JWKS is public)
        with svc.store.read() as db:
            rows = cluster.ear_keys(db)
            if any(r.retired_at is None for r in rows) and not any(
                r.retired_at is not None and r.retired_at < keep for r in rows
            ):
                return [StoredKey(r.kid, r.private_pem, r.created_at, r.retired_at) for r in rows]
    with svc.store.write() as db:
        rows = cluster.ear_keys(db)
        if rotate or not [r for r in rows if r.retired_at is None]:
            for r in rows:
                r.retired_at = r.retired_at or now
            made = new_key(now)
            row = cluster.EarSigningKey(
                kid=made.kid, private_pem=made.pem, created_at=now, retired_at=None
            )
            cluster.add_ear_key(db, row)
            rows.append(row)
        kept = []
        for r in rows:
            if r.retired_at is not None and r.retired_at < keep:
                db.delete(r)
            else:
                kept.append(StoredKey(r.kid, r.private_pem, r.created_at, r.retired_at))
        return kept


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_file(path: Path) -> list[StoredKey]:
    if not path.exists():
        return []
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigurationError(f"{path}: EAR key file must not be readable by others (chmod 600)")
    try:
        data = json.loads(path.read_text())
        return [
            StoredKey(
                k["kid"],
                k["private_pem"].encode(),
                dt.datetime.fromisoformat(k["created_at"]),
                dt.datetime.fromisoformat(k["retired_at"]) if k.get("retired_at") else None,
            )
            for k in data["keys"]
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(f"{path}: not an EAR key file: {exc}") from None


def _write_file(path: Path, keys: list[StoredKey]) -> None:
    doc = {
        "keys": [
            {
                "kid": k.kid,
                "private_pem": k.pem.decode(),
                "created_at": iso(k.created_at),
                "retired_at": iso(k.retired_at),
            }
            for k in keys
        ]
    }
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _file_keys(svc: Services, path: Path, now: dt.datetime, *, rotate: bool) -> list[StoredKey]:
    with _locked(path):
        keys = _read_file(path)
        live = [k for k in keys if k.retired_at is None]
        keep = now - retention(svc)
        changed = rotate or not live
        if changed:
            keys = [StoredKey(k.kid, k.pem, k.created_at, k.retired_at or now) for k in keys]
            keys.append(new_key(now))
        kept = [k for k in keys if k.retired_at is None or k.retired_at >= keep]
        if changed or len(kept) != len(keys):
            _write_file(path, kept)
        return kept


def stored_keys(svc: Services, *, rotate: bool = False) -> list[StoredKey]:
    """Every key still published (oldest first), making the first one if there is none."""
    now = svc.now()
    if svc.config.ear_key_file:
        return _file_keys(svc, Path(svc.config.ear_key_file), now, rotate=rotate)
    return _db_keys(svc, now, rotate=rotate)


def rotate(svc: Services) -> SigningKey:
    """Retire the signing key and make a new one; the old stays published until its tokens end."""
    keys = stored_keys(svc, rotate=True)
    svc.extensions.pop("ear_keys", None)
    return keys[-1].load()


@dataclass(frozen=True, slots=True)
class KeyRing:
    signing: SigningKey
    published: tuple[SigningKey, ...]
    loaded_at: float

    def jwks(self, keep_after: dt.datetime | None = None) -> dict[str, Any]:
        """The public keys; with ``keep_after``, without keys retired before it."""
        keys = [
            k
            for k in self.published
            if keep_after is None or k.retired_at is None or k.retired_at >= keep_after
        ]
        return {"keys": [k.public_jwk() for k in keys]}


RELOAD_AFTER = 30.0
"""Seconds a worker signs with the key it loaded before looking for a rotation."""
FRESH_AFTER = 1.0
"""A ``fresh`` read (the JWKS) is served from what this process read within this second."""


def published_jwks(svc: Services) -> dict[str, Any]:
    """The JWKS as of now: the signing key and retired keys whose tokens may still be valid."""
    return keyring(svc, fresh=True).jwks(svc.now() - retention(svc))


def keyring(svc: Services, *, fresh: bool = False) -> KeyRing:
    """The keys, read at most every ``RELOAD_AFTER`` s per process (``fresh`` reads now).

    A rotation made elsewhere is published at once (the JWKS is read ``fresh``); a worker may
    sign with the old key until it reloads, which is safe: the old key stays published.
    """
    ring = svc.extensions.get("ear_keys")
    mono = svc.monotonic()
    if isinstance(ring, KeyRing):
        age = mono - ring.loaded_at
        if age < RELOAD_AFTER and not (fresh and age >= FRESH_AFTER):
            return ring
    keys = tuple(k.load() for k in stored_keys(svc))
    live = [k for k in keys if k.retired_at is None]
    ring = KeyRing(live[-1] if live else keys[-1], keys, mono)
    svc.extensions["ear_keys"] = ring
    return ring
