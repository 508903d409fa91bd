"""Bearer tokens: create (with a bounded lifetime), list, revoke — one set of domain functions for
the API and the CLI, every change audited.

Every token expires: a lifetime longer than ``max_token_lifetime`` is refused, none given means
the maximum, and ``auth.authenticate`` also bounds tokens stored without an expiry (or before the
limit existed) by ``created_at`` + the maximum. The secret is returned once and never listed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from verifier.store import repo
from verifier.store.models import Token

from .context import Services
from .errors import ApiError, bad_request, conflict, not_found


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def expiry(token: Token, max_lifetime: float) -> dt.datetime:
    """When ``token`` stops working: its own expiry, never later than the maximum lifetime."""
    bound = token.created_at + dt.timedelta(seconds=max_lifetime)
    return bound if token.expires_at is None else min(token.expires_at, bound)


def token_json(token: Token, max_lifetime: float) -> dict[str, Any]:
    return {
        "id": token.id,
        "role": token.role,
        "description": token.description,
        "single_use": token.single_use,
        "labels": token.labels,
        "created_at": _iso(token.created_at),
        "expires_at": _iso(expiry(token, max_lifetime)),
        "used_at": _iso(token.used_at),
        "revoked_at": _iso(token.revoked_at),
    }


def create(
    svc: Services,
    role: str,
    *,
    ttl: float | None,
    single_use: bool,
    description: str,
    labels: Mapping[str, str],
    actor: str,
) -> dict[str, Any]:
    """A new token; the only time its secret is shown."""
    limit = svc.config.max_token_lifetime
    if role not in repo.ROLES:
        raise bad_request("bad_field", f"role must be one of {', '.join(repo.ROLES)}")
    if ttl is not None and ttl > limit:
        raise bad_request("ttl_too_long", f"ttl may be at most {limit:g} s (max_token_lifetime)")
    if labels and role != "enroll":
        raise bad_request("bad_field", "only enroll tokens carry labels for the nodes they enroll")
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
        return {"token": secret, **token_json(row, limit)}


def list_all(svc: Services) -> list[dict[str, Any]]:
    with svc.store.read() as db:
        return [token_json(t, svc.config.max_token_lifetime) for t in repo.list_tokens(db)]


def revoke(svc: Services, token_id: str, reason: str, actor: str) -> dict[str, Any]:
    now = svc.now()
    with svc.store.write() as db:
        row = repo.get_token(db, token_id)
        if row is None:
            raise not_found("token_unknown", f"no token {token_id!r}")
        if row.revoked_at is not None:
            raise conflict("token_revoked", f"token {token_id!r} is already revoked")
        row.revoked_at = now
        repo.audit(
            db, actor, "token_revoke", f"token:{row.id}", reason, {"role": row.role}, now=now
        )
        return token_json(row, svc.config.max_token_lifetime)


def check_usable(token: Token, max_lifetime: float, now: dt.datetime) -> None:
    """Raise the 401 that says why ``token`` cannot be used now (revoked, expired, used)."""
    if token.revoked_at is not None:
        raise ApiError(401, "invalid_token", "the token was revoked")
    if expiry(token, max_lifetime) <= now:
        raise ApiError(401, "token_expired", "the token has expired")
    if token.single_use and token.used_at is not None:
        raise ApiError(401, "token_used", "the single-use token was already used")
