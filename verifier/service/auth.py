"""Bearer tokens and roles.

Roles: ``admin`` (everything), ``reviewer`` (read inventory, attestations, evidence, golden sets,
audit), ``scheduler`` (read-only inventory: node list and node state), ``enroll`` (start an
enrollment; single use or expiring). Agents need no token after enrollment: their evidence is
authenticated by the AK signature over the verifier's nonce.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from flask import g, request

from verifier.store import repo

from .context import services
from .errors import ApiError

P = ParamSpec("P")
R = TypeVar("R")

READ_INVENTORY = ("admin", "reviewer", "scheduler")
REVIEW = ("admin", "reviewer")
ADMIN = ("admin",)
ENROLL = ("admin", "enroll")


@dataclass(frozen=True, slots=True)
class Caller:
    token_id: str
    role: str
    single_use: bool

    @property
    def actor(self) -> str:
        return f"token:{self.token_id} ({self.role})"


def authenticate(header: str | None) -> Caller:
    """The caller named by an ``Authorization: Bearer …`` header, or ApiError 401."""
    if not header:
        raise ApiError(401, "unauthenticated", "an Authorization: Bearer token is required")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise ApiError(401, "unauthenticated", "the Authorization header must be 'Bearer <token>'")
    svc = services()
    now = svc.now()
    with svc.store.read() as db:
        token = repo.find_token(db, secret.strip())
        if token is None:
            raise ApiError(401, "invalid_token", "unknown token")
        if token.revoked_at is not None:
            raise ApiError(401, "invalid_token", "the token was revoked")
        if token.expires_at is not None and token.expires_at <= now:
            raise ApiError(401, "token_expired", "the token has expired")
        if token.single_use and token.used_at is not None:
            raise ApiError(401, "token_used", "the single-use token was already used")
        return Caller(token_id=token.id, role=token.role, single_use=token.single_use)


def require(*roles: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a handler: only callers with one of ``roles`` get through (else 401/403)."""

    def wrap(handler: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(handler)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            caller = authenticate(request.headers.get("Authorization"))
            if caller.role not in roles:
                raise ApiError(403, "forbidden", f"role {caller.role!r} may not call this endpoint")
            g.caller = caller
            return handler(*args, **kwargs)

        inner.required_roles = roles  # type: ignore[attr-defined]
        return inner

    return wrap


def current_caller() -> Caller:
    caller = g.get("caller")
    assert isinstance(caller, Caller)
    return caller


def actor() -> str:
    """Who is acting, for the audit log: the token, or the agent (unauthenticated endpoints)."""
    caller = g.get("caller")
    if isinstance(caller, Caller):
        return caller.actor
    agent = request.headers.get("User-Agent", "")[:80]
    return f"agent ({agent})" if agent else "agent"
