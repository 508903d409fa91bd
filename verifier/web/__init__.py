"""The review console: server-rendered pages for security staff at ``/ui/``.

``init_app(app)`` registers the blueprint (views in ``_pages`` and ``_actions``), its HTML error
pages and its response headers. Pages read through the service's domain functions only
(``verifier.service.review``, ``inventory``, ``incidents``, ``promotion``, ``golden_ops``) and
never touch the store. Security: a server-side session per sign-in (``verifier.service.sessions``);
every POST carries the session's CSRF token (``forms``); a strict Content-Security-Policy (no
inline script or style: CSS and JS are static files); ``X-Frame-Options: DENY``; no page is cached.
Everything that came from a node is text that Jinja2 escapes (autoescape on; no ``|safe`` on it).
"""

from __future__ import annotations

from flask import Flask

from . import _actions, _pages  # noqa: F401  (their routes attach to ``bp``)
from ._blueprint import bp
from ._errors import register_page_errors
from ._headers import register_headers

__all__ = ["init_app"]

# The blueprint is set up once, at import, like the API's; each app only registers it.
register_page_errors(bp)
register_headers(bp)


def init_app(app: Flask) -> None:
    """Register the console on ``app`` (at ``/ui/``)."""
    app.register_blueprint(bp)
