"""The HTTP layer's request side: the app's ``Services``, and decoding request bodies (JSON,
base64, labels, reasons) into typed values, every failure a 400 with a code.

JSON is decoded strictly: no NaN/Infinity, no number that overflows a float, integers of at most
20 digits, at most ``MAX_JSON_DEPTH`` levels of nesting. Every text that is stored or shown
(names, labels, selectors, reasons) must be printable: no control or format characters, no lone
surrogates. Node names follow one ASCII rule (docs/api.md), so Unicode look-alikes are refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from typing import IO, Any, NoReturn

from flask import current_app, request

from .api_errors import HttpError
from .context import Services
from .errors import BadRequest, NotFound

MAX_JSON_DEPTH = 16
NODE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,251}[a-z0-9])?")
NODE_RULE = "lower-case ASCII letters, digits, '.', '-' and '_' (1..253, alphanumeric at both ends)"


def services() -> Services:
    """The running app's services (``create_app`` puts them in ``app.extensions``)."""
    svc = current_app.extensions["assay"]
    assert isinstance(svc, Services)
    return svc


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > 20:
        raise ValueError(f"integer of {len(text)} digits is out of range")
    return int(text)


def _depth_ok(value: Any) -> bool:
    """Whether ``value`` nests at most MAX_JSON_DEPTH levels (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return False
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return True


def parse_json(raw: bytes) -> Any:
    """Strict JSON (see the module docstring); BadRequest ``malformed_json`` otherwise."""
    try:
        body = json.loads(
            raw, parse_constant=_no_constant, parse_float=_finite, parse_int=_bounded_int
        )
    except RecursionError:
        raise BadRequest("malformed_json", "body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("malformed_json", f"body is not JSON: {str(exc)[:200]}") from None
    if not _depth_ok(body):
        raise BadRequest("malformed_json", f"body is nested deeper than {MAX_JSON_DEPTH}")
    return body


def printable(value: str, what: str) -> str:
    """``value`` unless it holds a control/format character or a lone surrogate (BadRequest)."""
    if not value.isprintable():
        raise BadRequest("bad_field", f"{what} contains control characters or invalid Unicode")
    return value


def node_name(value: str) -> str:
    """A node name by the one rule (docs/api.md); anything else, e.g. a look-alike, is a 400."""
    if not NODE_NAME.fullmatch(value):
        raise BadRequest("bad_field", f"node names are {NODE_RULE}")
    return value


CHUNK = 64 * 1024


def read_body(limit: int) -> bytes:
    """At most ``limit`` bytes of the body, read within ``body_timeout`` (else 408).

    Each socket read also waits at most the worker's IO timeout, so a client that trickles its
    body holds a connection for a bounded time, not forever.
    """
    return read_stream(request.stream, limit, services().config.body_timeout)


def read_stream(stream: IO[bytes], limit: int, timeout: float) -> bytes:
    """:func:`read_body` from ``stream`` (the request's, size-guarded by Werkzeug)."""
    deadline = time.monotonic() + timeout
    parts: list[bytes] = []
    size = 0
    try:
        while size < limit:
            chunk = stream.read(min(CHUNK, limit - size))
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
            if time.monotonic() > deadline:
                raise HttpError(408, "body_timeout", "the request body arrived too slowly")
    except OSError:  # socket timeout or reset while reading
        raise HttpError(408, "body_timeout", "the request body arrived too slowly") from None
    return b"".join(parts)


def json_body(*, required: bool = True) -> dict[str, Any]:
    """The request body as a JSON object (size capped, content type checked)."""
    limit = services().config.max_json
    if request.content_length is not None and request.content_length > limit:
        raise HttpError(413, "too_large", f"JSON body larger than {limit} bytes")
    raw = read_body(limit + 1)
    if len(raw) > limit:
        raise HttpError(413, "too_large", f"JSON body larger than {limit} bytes")
    if not raw.strip():
        if required:
            raise BadRequest("malformed_json", "a JSON object body is required")
        return {}
    if not request.mimetype.endswith("json"):
        raise HttpError(415, "unsupported_media_type", "send Content-Type: application/json")
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise BadRequest("malformed_json", "body must be a JSON object")
    return body


def text_field(
    body: dict[str, Any], name: str, *, required: bool = True, max_len: int = 253
) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value:
        raise BadRequest("bad_field", f"field {name!r} must be a non-empty string")
    if len(value) > max_len:
        raise BadRequest("bad_field", f"field {name!r} is longer than {max_len} characters")
    return printable(value, f"field {name!r}")


def b64_field(
    body: dict[str, Any], name: str, *, max_len: int, required: bool = True
) -> bytes | None:
    value = body.get(name)
    if value is None:
        if required:
            raise BadRequest("bad_field", f"field {name!r} is required")
        return None
    if not isinstance(value, str):
        raise BadRequest("bad_field", f"field {name!r} must be a base64 string")
    if len(value) > (max_len * 4) // 3 + 4:
        raise BadRequest("bad_field", f"field {name!r} is larger than {max_len} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("bad_base64", f"field {name!r} is not valid base64") from None
    if not data:
        raise BadRequest("bad_field", f"field {name!r} is empty")
    return data


def node_field(body: dict[str, Any], name: str = "node") -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest("bad_field", f"field {name!r} must be a non-empty string")
    return node_name(value)


def labels_field(body: dict[str, Any], name: str = "labels") -> dict[str, str]:
    value = body.get(name, {})
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 64:
        raise BadRequest("bad_field", f"field {name!r} must be an object of at most 64 labels")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(v, str) or not k or len(k) > 63 or len(v) > 253 or "=" in k or "," in k:
            raise BadRequest("bad_field", f"label {k[:63]!r} must map a short name to a string")
        out[printable(k, f"{name} key")] = printable(v, f"{name} {k!r}")
    return out


def reason_field(body: dict[str, Any], *, required: bool = True) -> str:
    value = body.get("reason")
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip() or len(value) > 1000:
        raise BadRequest("reason_required", "a 'reason' (1..1000 characters) is required")
    return printable(value.strip(), "'reason'")


def label_query(values: list[str]) -> dict[str, str]:
    """``?label=k=v&label=k2=v2`` → ``{"k": "v", "k2": "v2"}``."""
    out: dict[str, str] = {}
    for item in values:
        k, sep, v = item.partition("=")
        if not sep or not k or not item.isprintable() or len(item) > 320:
            raise BadRequest("bad_query", f"label filter {item[:80]!r} must be key=value")
        out[k] = v
    return out


def path_text(value: str, what: str, max_len: int = 253) -> str:
    """A name taken from the URL path or query, checked before it reaches a query (NotFound)."""
    if not value or len(value) > max_len or not value.isprintable():
        raise NotFound("not_found", f"no such {what}")
    return value
