"""Review-console sessions: a ``reviewer`` or ``admin`` token exchanged for a server-side session.

The browser holds only a random session secret (an HttpOnly cookie); the store keeps its SHA-256,
the token it acts as, the role, a per-session CSRF token and three times: created, last seen and
the absolute expiry. A session ends at sign-out, after ``console_idle_timeout`` without a request,
at ``console_session_lifetime`` after sign-in, and as soon as its token is revoked or expires
(checked on every request, as for a bearer token). Nothing here knows HTTP.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from verifier.store import console as store_console
from verifier.store import repo
from verifier.store.models import ConsoleSession

from . import tokens
from .context import Services
from .errors import Forbidden, Unauthenticated
from .tokens import Caller

CONSOLE_ROLES = ("admin", "reviewer")
TOUCH_EVERY = dt.timedelta(seconds=15)
"""last_seen_at is written at most this often per session (a read is then a read)."""


@dataclass(frozen=True, slots=True)
class SessionView:
    """A live session: who it acts as (the same identity the audit log gives its token)."""

    caller: Caller
    csrf: str
    expires_at: dt.datetime
    idle_expires_at: dt.datetime

    @property
    def actor(self) -> str:
        return self.caller.actor

    @property
    def role(self) -> str:
        return self.caller.role

    @property
    def is_admin(self) -> bool:
        return self.caller.role == "admin"


@dataclass(frozen=True, slots=True)
class OpenedSession:
    """A session just opened: ``secret`` goes into the cookie and is never stored."""

    secret: str
    session: SessionView


def session_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def sign_in(svc: Services, token_secret: str) -> OpenedSession:
    """Open a session for the holder of a reviewer or admin token (else Unauthenticated/Forbidden).

    A single-use token is used up by the sign-in itself: it buys exactly one session."""
    caller = tokens.authenticate(svc, token_secret.strip())
    if caller.role not in CONSOLE_ROLES:
        raise Forbidden(
            "role_not_allowed",
            f"a {caller.role!r} token cannot sign in to the console: use a reviewer or admin token",
        )
    if caller.single_use:
        tokens.use_up(svc, caller)
    now = svc.now()
    secret = secrets.token_urlsafe(32)
    cfg = svc.config
    with svc.store.write() as db:
        token = repo.get_token(db, caller.token_id)
        assert token is not None
        absolute = min(
            now + dt.timedelta(seconds=cfg.console_session_lifetime),
            tokens.expiry(token, cfg.max_token_lifetime),
        )
        row = ConsoleSession(
            id=session_hash(secret),
            token_id=caller.token_id,
            role=caller.role,
            csrf=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            expires_at=absolute,
            ended_at=None,
        )
        db.add(row)
        repo.audit(db, caller.actor, "console_sign_in", f"token:{caller.token_id}", "", now=now)
        return OpenedSession(secret, _view(row, caller, cfg.console_idle_timeout))


def _view(row: ConsoleSession, caller: Caller, idle: float) -> SessionView:
    return SessionView(
        caller, row.csrf, row.expires_at, row.last_seen_at + dt.timedelta(seconds=idle)
    )


def resume(svc: Services, secret: str | None) -> SessionView:
    """The live session of cookie ``secret``; Unauthenticated says why there is none.

    A read; ``last_seen_at`` is written at most every ``TOUCH_EVERY`` per session."""
    if not secret or len(secret) > 128:
        raise Unauthenticated("signed_out", "sign in with a reviewer or admin token")
    now, cfg, key = svc.now(), svc.config, session_hash(secret)
    with svc.store.read() as db:
        row = store_console.get_session(db, key)
        if row is None or row.ended_at is not None:
            raise Unauthenticated("signed_out", "you are signed out; sign in again")
        idle_until = row.last_seen_at + dt.timedelta(seconds=cfg.console_idle_timeout)
        if now >= row.expires_at or now >= idle_until:
            raise _expired(now >= row.expires_at)
        token = repo.get_token(db, row.token_id)
        if token is None:
            raise Unauthenticated("invalid_token", "the session's token no longer exists")
        if token.revoked_at is not None:
            raise Unauthenticated("invalid_token", "the session's token was revoked")
        if tokens.expiry(token, cfg.max_token_lifetime) <= now:
            raise Unauthenticated("token_expired", "the session's token has expired")
        caller = Caller(token_id=token.id, role=token.role, single_use=False)
        touch = now - row.last_seen_at >= TOUCH_EVERY
    if touch:
        with svc.store.write() as db:
            live = store_console.get_session(db, key)
            if live is not None and live.last_seen_at < now:
                live.last_seen_at = now
                row = live
    return _view(row, caller, cfg.console_idle_timeout)


def _expired(absolute: bool) -> Unauthenticated:
    if absolute:
        return Unauthenticated("session_expired", "the session reached its time limit; sign in")
    return Unauthenticated("session_idle", "the session expired after a while idle; sign in")


def csrf_ok(session: SessionView, presented: str | None) -> bool:
    """Whether a form's CSRF token is this session's (constant-time comparison)."""
    return bool(presented) and hmac.compare_digest(session.csrf, presented or "")


def sign_out(svc: Services, secret: str | None) -> None:
    """End the session of cookie ``secret`` (nothing to do if there is none)."""
    if not secret or len(secret) > 128:
        return
    now = svc.now()
    with svc.store.write() as db:
        row = store_console.get_session(db, session_hash(secret))
        if row is not None and row.ended_at is None:
            row.ended_at = now
            actor = f"token:{row.token_id} ({row.role})"
            repo.audit(db, actor, "console_sign_out", f"token:{row.token_id}", "", now=now)
