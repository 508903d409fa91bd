"""Bearer tokens and roles at the HTTP boundary (the token checks themselves are ``tokens``).

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
from typing import ParamSpec, TypeVar

from flask import g, request

from . import tokens
from ._http import services
from .errors import Forbidden, Unauthenticated
from .tokens import Caller

P = ParamSpec("P")
R = TypeVar("R")

READ_INVENTORY = ("admin", "reviewer", "scheduler")
REVIEW = ("admin", "reviewer")
ADMIN = ("admin",)
ENROLL = ("admin", "enroll")


def authenticate(header: str | None) -> Caller:
    """The caller named by an ``Authorization: Bearer …`` header, or Unauthenticated."""
    if not header:
        raise Unauthenticated("unauthenticated", "an Authorization: Bearer token is required")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated(
            "unauthenticated", "the Authorization header must be 'Bearer <token>'"
        )
    return tokens.authenticate(services(), secret.strip())


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
                raise Forbidden("forbidden", f"role {caller.role!r} may not call this endpoint")
            if caller.single_use and not domain_uses_token:
                tokens.use_up(services(), caller)
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
