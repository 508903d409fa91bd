"""The evidence answer's JSON text as Flask's JSON provider writes it, with the ``checks`` list
encoded once per list.

An unchanged re-attestation answers with the same ``checks`` list object every time (the cached
reused assessment's, through ``attestation.poster_checks``), and encoding its 20–30 entries is most
of the answer's encoding. The text of such a list is kept by identity (holding the list keeps its
id from being reused) and spliced into the rest of the body where the provider puts the key (in
the body's order, or sorted with ``sort_keys``), so the text is exactly what the provider's
compact ``dumps(body)`` writes. Any provider other than Flask's default one in its compact form
(``debug`` makes it indent) encodes the whole body itself.
"""

from __future__ import annotations

from typing import Any, cast

from flask import Flask, Response
from flask.json.provider import DefaultJSONProvider

_KEY = "checks"
_TEXT: dict[int, tuple[list[Any], str]] = {}
_MAX_KEPT = 256


def answer_response(app: Flask, body: dict[str, Any]) -> Response:
    """What ``app.json.response(body)`` makes (``jsonify``), to the byte."""
    provider = app.json
    checks = body.get(_KEY)
    if not isinstance(checks, list) or not _compact_default(app, provider):
        return cast(Response, provider.response(body))
    default = cast(DefaultJSONProvider, provider)
    return app.response_class(f"{_spliced(body, checks, default)}\n", mimetype=default.mimetype)


def _spliced(body: dict[str, Any], checks: list[Any], provider: DefaultJSONProvider) -> str:
    keys = sorted(body) if provider.sort_keys else list(body)
    at = keys.index(_KEY)
    parts = [_members({k: body[k] for k in keys[:at]}, provider)]
    parts.append(f'"{_KEY}":{_list_text(checks, provider)}')
    parts.append(_members({k: body[k] for k in keys[at + 1 :]}, provider))
    return "{" + ",".join(p for p in parts if p) + "}"


def _members(part: dict[str, Any], provider: DefaultJSONProvider) -> str:
    """The members of ``part`` as the provider writes them, without the braces ("" for none)."""
    return provider.dumps(part, separators=(",", ":"))[1:-1] if part else ""


def _compact_default(app: Flask, provider: Any) -> bool:
    return type(provider) is DefaultJSONProvider and (
        provider.compact is True or (provider.compact is None and not app.debug)
    )


def _list_text(checks: list[Any], provider: DefaultJSONProvider) -> str:
    known = _TEXT.get(id(checks))
    if known is not None and known[0] is checks:
        return known[1]
    text = provider.dumps(checks, separators=(",", ":"))
    if len(_TEXT) >= _MAX_KEPT:
        _TEXT.clear()
    _TEXT[id(checks)] = (checks, text)
    return text
