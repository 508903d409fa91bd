"""The console's HTTP side of sessions: the cookie, the signed-in caller, and the CSRF check.

``signed_in`` decorates a page: it resumes the session from the cookie (else a redirect to the
sign-in page for a GET, a 401 page for a POST) and, for a POST, refuses a missing or wrong CSRF
token with a 403 page before the view runs. ``admin_only`` adds the role check.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from flask import g, request, url_for

from verifier.service import sessions
from verifier.service._http import services
from verifier.service.errors import Forbidden, Unauthenticated
from verifier.service.sessions import SessionView

P = ParamSpec("P")
R = TypeVar("R")

COOKIE = "assay_console"
PRE_COOKIE = "assay_console_pre"
"""Before sign-in: a random value the sign-in form must echo (double-submit CSRF)."""


class CsrfRefused(Exception):
    """A POST without this session's CSRF token (a 403 page)."""


def current() -> SessionView | None:
    value = g.get("console_session")
    return value if isinstance(value, SessionView) else None


def session() -> SessionView:
    value = current()
    assert value is not None
    return value


def csrf_token() -> str:
    """The token forms carry: the session's, or (before sign-in) the pre-session cookie's."""
    s = current()
    if s is not None:
        return s.csrf
    token = g.get("pre_csrf")
    if not isinstance(token, str):
        token = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(24)
        g.pre_csrf = token
    return token


def check_pre_csrf() -> None:
    cookie = request.cookies.get(PRE_COOKIE, "")
    form = request.form.get("csrf_token", "")
    if not cookie or not secrets.compare_digest(cookie, form):
        raise CsrfRefused()


def signed_in(view: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(view)
    def inner(*args: P.args, **kwargs: P.kwargs) -> R:
        g.console_session = sessions.resume(services(), request.cookies.get(COOKIE))
        if request.method == "POST" and not sessions.csrf_ok(
            session(), request.form.get("csrf_token")
        ):
            raise CsrfRefused()
        return view(*args, **kwargs)

    return inner


def admin_only(view: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(view)
    def inner(*args: P.args, **kwargs: P.kwargs) -> R:
        if not session().is_admin:
            raise Forbidden("admin_required", "only an admin may do this; you are a reviewer")
        return view(*args, **kwargs)

    return inner


__all__ = ["COOKIE", "CsrfRefused", "Unauthenticated", "admin_only", "session", "signed_in"]


def next_target() -> str:
    """Where to go after sign-in: a console path only (never another site)."""
    nxt = request.values.get("next", "")
    ok = nxt.startswith("/ui/") and not nxt.startswith("//") and "\\" not in nxt
    return nxt if ok and nxt.isprintable() and len(nxt) < 500 else url_for("console.overview")
