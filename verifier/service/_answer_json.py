"""The evidence answer's JSON text as Flask's JSON provider writes it, with the ``checks`` list
encoded once per list.

An unchanged re-attestation answers with the same ``checks`` list object every time (the cached
reused assessment's, through ``attestation.poster_checks``), and encoding its 20–30 entries is most
of the answer's encoding. The text of such a list is kept by identity (holding the list keeps its
id from being reused) and spliced into the rest of the body at the place sorted keys put it, so
the text is exactly what ``json.dumps(body, sort_keys=True, separators=(",", ":"))`` writes.
Any provider other than Flask's default one in its compact form encodes the whole body itself.
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
    dumps = provider.dumps
    before = {k: v for k, v in body.items() if k < _KEY}
    after = {k: v for k, v in body.items() if k > _KEY}
    parts = [dumps(before, separators=(",", ":"))[1:-1]] if before else []
    parts.append(f'"{_KEY}":{_list_text(checks, provider)}')
    if after:
        parts.append(dumps(after, separators=(",", ":"))[1:-1])
    return "{" + ",".join(parts) + "}"


def _compact_default(app: Flask, provider: Any) -> bool:
    return (
        type(provider) is DefaultJSONProvider
        and provider.sort_keys
        and (provider.compact is True or (provider.compact is None and not app.debug))
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
