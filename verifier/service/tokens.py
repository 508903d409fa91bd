"""Bearer tokens: create (with a bounded lifetime), list, revoke, authenticate — one set of domain
functions for the API and the CLI, every change audited.

Every token expires: a lifetime longer than ``max_token_lifetime`` is refused, none given means
the maximum, and ``authenticate`` also bounds tokens stored without an expiry (or before the limit
existed) by ``created_at`` + the maximum. The secret is returned once and never listed. Times are
shown in one format (``models.iso``: ISO 8601 UTC with ``Z``), by the API and the CLI alike.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from verifier.store import repo
from verifier.store.models import Token, iso

from .context import Services
from .errors import BadRequest, Conflict, NotFound, Unauthenticated


@dataclass(frozen=True, slots=True)
class Caller:
    """Who presented a usable token: what the audit log names and the roles are checked against."""

    token_id: str
    role: str
    single_use: bool

    @property
    def actor(self) -> str:
        return f"token:{self.token_id} ({self.role})"


@dataclass(frozen=True, slots=True)
class TokenView:
    """A token as listed: never its secret or the secret's hash."""

    id: str
    role: str
    description: str
    single_use: bool
    labels: Mapping[str, str]
    created_at: dt.datetime
    expires_at: dt.datetime
    used_at: dt.datetime | None
    revoked_at: dt.datetime | None

    @classmethod
    def of(cls, token: Token, max_lifetime: float) -> TokenView:
        return cls(
            token.id,
            token.role,
            token.description,
            token.single_use,
            dict(token.labels),
            token.created_at,
            expiry(token, max_lifetime),
            token.used_at,
            token.revoked_at,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "role": self.role,
            "description": self.description,
            "single_use": self.single_use,
            "labels": dict(self.labels),
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "used_at": iso(self.used_at),
            "revoked_at": iso(self.revoked_at),
        }


@dataclass(frozen=True, slots=True)
class NewToken:
    """A token just created, with its secret: the only time the secret is shown."""

    secret: str
    token: TokenView

    def to_json(self) -> dict[str, Any]:
        return {"token": self.secret, **self.token.to_json()}


def expiry(token: Token, max_lifetime: float) -> dt.datetime:
    """When ``token`` stops working: its own expiry, never later than the maximum lifetime."""
    bound = token.created_at + dt.timedelta(seconds=max_lifetime)
    return bound if token.expires_at is None else min(token.expires_at, bound)


def create(
    svc: Services,
    role: str,
    *,
    ttl: float | None,
    single_use: bool,
    description: str,
    labels: Mapping[str, str],
    actor: str,
) -> NewToken:
    """A new token that expires after ``ttl`` seconds (the maximum when None)."""
    limit = svc.config.max_token_lifetime
    if role not in repo.ROLES:
        raise BadRequest("bad_field", f"role must be one of {', '.join(repo.ROLES)}")
    if ttl is not None and ttl <= 0:
        raise BadRequest("bad_field", "ttl must be a positive number of seconds")
    if ttl is not None and ttl > limit:
        raise BadRequest("ttl_too_long", f"ttl may be at most {limit:g} s (max_token_lifetime)")
    if labels and role != "enroll":
        raise BadRequest("bad_field", "only enroll tokens carry labels for the nodes they enroll")
    now = svc.now()
    expires = now + dt.timedelta(seconds=limit if ttl is None else ttl)
    desc = description[:200]
    with svc.store.write() as db:
        secret, row = repo.create_token(
            db,
            role,
            expires_at=expires,
            single_use=single_use,
            description=desc,
            labels=labels,
            now=now,
        )
        details = {"role": role, **({"labels": dict(labels)} if labels else {})}
        repo.audit(db, actor, "token_create", f"token:{row.id}", desc, details, now=now)
        return NewToken(secret, TokenView.of(row, limit))


BOOTSTRAP_DESCRIPTION = "bootstrap admin token (db init)"


def bootstrap_admin(svc: Services, actor: str) -> NewToken | None:
    """The first admin token of a database that has none, else None: it is shown only here.

    A database holding any token (even a revoked one) was bootstrapped already, so running this
    again never prints a second secret; later admin tokens come from ``token create``.
    """
    now = svc.now()
    limit = svc.config.max_token_lifetime
    with svc.store.write() as db:
        if repo.list_tokens(db):
            return None
        secret, row = repo.create_token(
            db,
            "admin",
            expires_at=now + dt.timedelta(seconds=limit),
            description=BOOTSTRAP_DESCRIPTION,
            now=now,
        )
        repo.audit(
            db, actor, "token_create", f"token:{row.id}", BOOTSTRAP_DESCRIPTION,
            {"role": "admin", "bootstrap": True}, now=now,
        )  # fmt: skip
        return NewToken(secret, TokenView.of(row, limit))


def list_all(svc: Services) -> list[TokenView]:
    with svc.store.read() as db:
        return [TokenView.of(t, svc.config.max_token_lifetime) for t in repo.list_tokens(db)]


def revoke(svc: Services, token_id: str, reason: str, actor: str) -> TokenView:
    now = svc.now()
    with svc.store.write() as db:
        row = repo.get_token(db, token_id)
        if row is None:
            raise NotFound("token_unknown", f"no token {token_id!r}")
        if row.revoked_at is not None:
            raise Conflict("token_revoked", f"token {token_id!r} is already revoked")
        row.revoked_at = now
        repo.audit(
            db, actor, "token_revoke", f"token:{row.id}", reason, {"role": row.role}, now=now
        )
        return TokenView.of(row, svc.config.max_token_lifetime)


def authenticate(svc: Services, secret: str) -> Caller:
    """The caller holding ``secret``, if that token is usable now (else Unauthenticated)."""
    with svc.store.read() as db:
        token = repo.find_token(db, secret)
        if token is None:
            raise Unauthenticated("invalid_token", "unknown token")
        check_usable(token, svc.config.max_token_lifetime, svc.now())
        return Caller(token_id=token.id, role=token.role, single_use=token.single_use)


def use_up(svc: Services, caller: Caller) -> None:
    """Use up a single-use token, atomically on any instance; refused if already used."""
    with svc.store.write() as db:
        if not repo.use_single_use_token(db, caller.token_id, svc.now()):
            raise Unauthenticated("token_used", "the single-use token was already used")


def check_usable(token: Token, max_lifetime: float, now: dt.datetime) -> None:
    """Raise the Unauthenticated that says why ``token`` cannot be used now."""
    if token.revoked_at is not None:
        raise Unauthenticated("invalid_token", "the token was revoked")
    if expiry(token, max_lifetime) <= now:
        raise Unauthenticated("token_expired", "the token has expired")
    if token.single_use and token.used_at is not None:
        raise Unauthenticated("token_used", "the single-use token was already used")
