"""Bearer tokens and roles.

Roles: ``admin`` (everything), ``reviewer`` (read inventory, attestations, evidence, golden sets,
audit), ``scheduler`` (read-only inventory: node list and node state), ``enroll`` (start an
enrollment). Agents need no token after enrollment: their evidence is authenticated by the AK
signature over the verifier's nonce.

Every token expires (``tokens.expiry``). A single-use token, of any role, is good for one request:
it is used up atomically as the request is admitted (any instance), except where the handler's
domain function uses it up itself once the request was checked (enrollment start, step 6).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from flask import g, request

from verifier.store import repo

from . import tokens
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
        tokens.check_usable(token, svc.config.max_token_lifetime, now)
        return Caller(token_id=token.id, role=token.role, single_use=token.single_use)


def use_up(caller: Caller) -> None:
    """Use up a single-use token for this request; 401 if another request already did."""
    svc = services()
    with svc.store.write() as db:
        if not repo.use_single_use_token(db, caller.token_id, svc.now()):
            raise ApiError(401, "token_used", "the single-use token was already used")


def require(
    *roles: str, domain_uses_token: bool = False
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a handler: only callers with one of ``roles`` get through (else 401/403).

    A single-use token is used up here, unless ``domain_uses_token`` says the domain function
    does it itself after checking the request (so a refused request does not burn the token).
    """

    def wrap(handler: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(handler)
        def inner(*args: P.args, **kwargs: P.kwargs) -> R:
            caller = authenticate(request.headers.get("Authorization"))
            if caller.role not in roles:
                raise ApiError(403, "forbidden", f"role {caller.role!r} may not call this endpoint")
            if caller.single_use and not domain_uses_token:
                use_up(caller)
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
