"""A JSON answer whose body the after-request hooks (metrics, the event log) read as it was
made, instead of decoding the response they are handed again (the hot evidence route's)."""

from __future__ import annotations

from typing import Any

from flask import Response, g, jsonify


def json_answer(body: dict[str, Any]) -> Response:
    resp = jsonify(body)
    g.answer = (resp, body)
    return resp


def answer_json(resp: Response) -> Any:
    """The body of ``resp`` as a JSON value (None if it is not JSON)."""
    made = g.get("answer")
    if made is not None and made[0] is resp:
        return made[1]
    return resp.get_json(silent=True) if resp.is_json else None
